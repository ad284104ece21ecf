"""The webhook sink against a real HTTP receiver on 127.0.0.1: signing, bodies, retries, refusals, proxies."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from exportkit.config import write_config
from exportkit.emulation import EmulatorServer
from exportkit.errors import SinkAuthError, SinkError, TransientError
from exportkit.http import RetryPolicy
from exportkit.testing import SinkHarness, make_indicator, make_indicators
from exportkit_webhook import WebhookSink, exportkit_sink_types
from exportkit_webhook.body import verify_signature

pytestmark = pytest.mark.integration

SECRET = "s3cret-for-the-webhook-tests"
TOKEN = "bearer-token-for-the-webhook-tests"
NOW = 1_700_000_000


def sink_type():
    (st,) = exportkit_sink_types()
    return st


def harness(url: str, *, policy: RetryPolicy | None = None, proxies: Any = None, dry_run: bool = False, **raw: Any) -> SinkHarness:
    settings = SinkHarness.parse(sink_type(), {"url": url, **raw}, environ={"WEBHOOK_SECRET": SECRET, "WEBHOOK_TOKEN": TOKEN})
    sink = WebhookSink(settings, policy=policy, clock=lambda: NOW)
    return SinkHarness(sink, name="webhook", settings=settings, proxies=proxies, dry_run=dry_run)


def url_for(server: EmulatorServer, request: pytest.FixtureRequest) -> tuple[str, str]:
    path = f"/hook/{request.node.name.replace('[', '-').replace(']', '')}"
    return server.url + path, path


# --- signing and the default body ----------------------------------------------------


def test_bodies_are_signed_over_timestamp_and_exact_bytes(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest) -> None:
    url, path = url_for(receiver_server, request)
    h = harness(url, secret="env:WEBHOOK_SECRET", token="env:WEBHOOK_TOKEN", headers=["X-Team: intel", "X-Env: test"])
    records = make_indicators(2)
    outcomes = h.send(records)
    assert [o.status for o in outcomes] == ["accepted", "accepted"]

    (got,) = receiver.bodies(path)
    timestamp = got.header("X-Exportkit-Timestamp")
    assert timestamp == str(NOW)
    # The receiver's side, computed here independently of the sink's code.
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + got.body, hashlib.sha256).hexdigest()
    assert got.header("X-Exportkit-Signature") == f"sha256={expected}"
    assert verify_signature(SECRET, timestamp, got.body, got.header("X-Exportkit-Signature"), now=NOW + 10)
    # A replay later, or a changed body, does not verify.
    assert not verify_signature(SECRET, timestamp, got.body, got.header("X-Exportkit-Signature"), now=NOW + 3600)
    assert not verify_signature(SECRET, timestamp, got.body + b" ", got.header("X-Exportkit-Signature"), now=NOW)

    assert got.header("Content-Type") == "application/json"
    assert got.header("Authorization") == f"Bearer {TOKEN}"
    assert got.header("X-Team") == "intel" and got.header("X-Env") == "test"
    assert got.header("X-Exportkit-Delivery") == hashlib.sha256(got.body).hexdigest()[:32]
    assert all(SECRET not in v for v in got.headers.values())

    body = got.json()
    assert body == {"instance": "test", "run_id": "test-run", "sink": "webhook", "records": [r.to_dict() for r in records]}
    assert h.held("1").remote == {"delivery": got.header("X-Exportkit-Delivery"), "type": "ip", "value": records[0].value}


def test_without_a_secret_nothing_is_signed(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest) -> None:
    url, path = url_for(receiver_server, request)
    harness(url).send(make_indicators(1))
    (got,) = receiver.bodies(path)
    assert got.header("X-Exportkit-Signature") is None
    assert got.header("Authorization") is None


def test_custom_signature_header(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest) -> None:
    url, path = url_for(receiver_server, request)
    harness(url, secret=SECRET, signature_header="X-Hub-Signature-256", timestamp_header="X-Hub-Time").send(make_indicators(1))
    (got,) = receiver.bodies(path)
    mac = hmac.new(SECRET.encode(), f"{NOW}.".encode() + got.body, hashlib.sha256).hexdigest()
    assert got.header("X-Hub-Signature-256") == f"sha256={mac}" and got.header("X-Hub-Time") == str(NOW)


# --- templates ------------------------------------------------------------------------

TEMPLATE = """{"source": "exportkit", "instance": {{ instance|json }}, "count": {{ records|length }},
"items": [{% for r in records %}{"id": {{ r.source_id|json }}, "ioc": {{ r.value|json }}, "tags": {{ r.tags|json }}}{% if not loop.last %}, {% endif %}{% endfor %}]}
"""


def test_template_renders_the_whole_body(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url, path = url_for(receiver_server, request)
    template = tmp_path / "body.j2"
    template.write_text(TEMPLATE, encoding="utf-8")
    records = [make_indicator(source_id="1", value="203.0.113.1"), make_indicator(source_id="2", type_name="FQDN", value="bad.example", tags=("a", "ü"))]
    outcomes = harness(url, template=str(template), secret=SECRET).send(records)
    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    (got,) = receiver.bodies(path)
    assert got.json() == {
        "source": "exportkit", "instance": "test", "count": 2,
        "items": [{"id": "1", "ioc": "203.0.113.1", "tags": ["test"]}, {"id": "2", "ioc": "bad.example", "tags": ["a", "ü"]}],
    }
    mac = hmac.new(SECRET.encode(), f"{NOW}.".encode() + got.body, hashlib.sha256).hexdigest()
    assert got.header("X-Exportkit-Signature") == f"sha256={mac}"


def test_template_mistakes_fail_validation(tmp_path: Path) -> None:
    misspelt = tmp_path / "misspelt.j2"
    misspelt.write_text('{"n": {{ recrods|length }}}', encoding="utf-8")
    broken = tmp_path / "broken.j2"
    broken.write_text('{"n": {{ records|length }', encoding="utf-8")
    for path, words in ((misspelt, "recrods"), (broken, "syntax error")):
        with pytest.raises(Exception) as info:
            SinkHarness.parse(sink_type(), {"url": "http://127.0.0.1:9/hook/x", "template": str(path)})
        assert words in str(info.value)
        assert "sinks.webhook.template" in str(info.value)


# --- retries, deferral, refusals ----------------------------------------------------------


def test_retries_then_success(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest) -> None:
    url, path = url_for(receiver_server, request)
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.01, max_retry_after=5, sleep=sleeps.append)
    receiver.faults.fail_next(500, path_prefix=path)
    receiver.faults.fail_next(429, headers={"Retry-After": "2"}, path_prefix=path)
    receiver.faults.drop_next(1, path_prefix=path)
    outcomes = harness(url, secret=SECRET, policy=policy).send(make_indicators(3))
    assert [o.status for o in outcomes] == ["accepted"] * 3
    assert 2.0 in sleeps  # Retry-After honoured
    assert len(sleeps) == 3
    (got,) = receiver.bodies(path)  # the faults answered before the app saw the body
    assert [p for _m, p in receiver.calls].count(path) == 4


def test_spent_retries_defer_and_stop_the_sink_for_the_run(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest, fast_policy: RetryPolicy) -> None:
    url, path = url_for(receiver_server, request)
    receiver.faults.fail_next(503, count=100, path_prefix=path)
    h = harness(url, policy=fast_policy, batch_size=2)
    with h.session():
        outcomes = h.write(make_indicators(4))
        assert [o.status for o in outcomes] == ["deferred"] * 4
        assert "HTTP 503" in outcomes[0].reason and "3 attempts" in outcomes[0].reason
        calls = len(receiver.calls)
        # The next batch of the same run does not spend the retries again.
        with pytest.raises(TransientError):
            h.write(make_indicators(2, start=10))
        assert len(receiver.calls) == calls
    assert [p for _m, p in receiver.calls].count(path) == 3  # one POST of 2 records, 3 tries; the rest deferred unsent
    assert h.holdings.data == {} and h.dead_letters == {}


def test_long_retry_after_defers_at_once(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest, fast_policy: RetryPolicy) -> None:
    url, path = url_for(receiver_server, request)
    receiver.faults.fail_next(429, headers={"Retry-After": "3600"}, path_prefix=path)
    outcomes = harness(url, policy=fast_policy).send(make_indicators(1))
    assert outcomes[0].status == "deferred" and "3600" in outcomes[0].reason


def test_4xx_rejects_the_batch_with_status_and_excerpt(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest) -> None:
    url, path = url_for(receiver_server, request)
    receiver.answer[path] = 409
    h = harness(url, secret="env:WEBHOOK_SECRET", token="env:WEBHOOK_TOKEN")
    outcomes = h.send(make_indicators(3))
    assert [o.status for o in outcomes] == ["rejected"] * 3
    reason = outcomes[0].reason
    assert "HTTP 409" in reason and "answer 409 as told" in reason
    assert len(reason) < 320  # a short excerpt, not the whole answer
    assert SECRET not in reason and TOKEN not in reason
    assert set(h.dead_letters) == {"1", "2", "3"}
    assert len(receiver.bodies(path)) == 1  # 409 is not split


def test_a_refused_record_is_isolated_by_splitting(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest) -> None:
    url, path = url_for(receiver_server, request)
    records = make_indicators(4)
    records[2] = make_indicator(source_id="3", type_name="FQDN", value=receiver.REFUSED_VALUE)
    outcomes = harness(url).send(records)
    assert {o.source_id: o.status for o in outcomes} == {"1": "accepted", "2": "accepted", "3": "rejected", "4": "accepted"}
    assert "HTTP 422" in outcomes[2].reason
    assert sorted(receiver.live[path]) == ["1", "2", "4"]


def test_without_splitting_the_whole_batch_is_rejected(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest) -> None:
    url, path = url_for(receiver_server, request)
    records = [make_indicator(source_id="1"), make_indicator(source_id="2", type_name="FQDN", value=receiver.REFUSED_VALUE)]
    outcomes = harness(url, split_rejected=False).send(records)
    assert [o.status for o in outcomes] == ["rejected", "rejected"]
    assert len(receiver.bodies(path)) == 1


@pytest.mark.parametrize("status, error", [(401, SinkAuthError), (403, SinkAuthError), (404, SinkError)])
def test_credentials_or_url_wrong_stops_the_sink(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest, status: int, error: type) -> None:
    url, path = url_for(receiver_server, request)
    receiver.answer[path] = status
    h = harness(url + "?key=" + TOKEN, secret=SECRET)
    with pytest.raises(error) as info:
        h.send(make_indicators(2))
    message = str(info.value)
    assert f"HTTP {status}" in message and path in message
    assert SECRET not in message and TOKEN not in message  # the query is left out of messages
    assert h.holdings.data == {} and h.dead_letters == {}


def test_an_answer_over_max_response_mb_stops_the_sink(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest) -> None:
    url, path = url_for(receiver_server, request)
    receiver.faults.fail_next(200, body={"ack": "x" * (2 * 1024 * 1024)}, path_prefix=path)
    h = harness(url, max_response_mb=1)
    with pytest.raises(SinkError, match="max_response_mb"):
        h.send(make_indicators(1))
    assert h.holdings.data == {}


# --- batches, withdrawals, dry runs -----------------------------------------------------------


def test_batch_size_caps_each_post(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest) -> None:
    url, path = url_for(receiver_server, request)
    outcomes = harness(url, batch_size=2).send(make_indicators(5))
    assert [o.status for o in outcomes] == ["accepted"] * 5
    assert [len(b.json()["records"]) for b in receiver.bodies(path)] == [2, 2, 1]


def test_withdrawals_are_posted_when_asked(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest) -> None:
    url, path = url_for(receiver_server, request)
    h = harness(url, send_withdrawals=True, secret=SECRET)
    with h.session():
        h.write(make_indicators(3))
        outcomes = h.withdraw([make_indicator(source_id="1", status="Expired"), "2"])
    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    last = receiver.bodies(path)[-1]
    # A record gone from the collection comes without a record: type and value come
    # from what the sink kept in `remote`, so a receiver can drop it from a blocklist.
    assert last.json()["withdrawn"] == [
        {"source_id": "1", "reason": "expired", "type": "ip", "value": "10.0.0.1"},
        {"source_id": "2", "reason": "removed", "type": "ip", "value": "10.0.0.2"},
    ]
    mac = hmac.new(SECRET.encode(), f"{NOW}.".encode() + last.body, hashlib.sha256).hexdigest()
    assert last.header("X-Exportkit-Signature") == f"sha256={mac}"
    assert sorted(receiver.live[path]) == ["3"]


def test_withdrawals_are_only_forgotten_by_default(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest) -> None:
    url, path = url_for(receiver_server, request)
    h = harness(url)
    with h.session():
        h.write(make_indicators(2))
        outcomes = h.withdraw(["1"])
    assert outcomes[0].status == "accepted" and h.held("1") is None
    assert len(receiver.bodies(path)) == 1


def test_unchanged_records_are_not_posted_again(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest) -> None:
    url, path = url_for(receiver_server, request)
    h = harness(url)
    records = make_indicators(2)
    with h.session():
        h.write(records)
        again = h.write(records)
    assert [o.status for o in again] == ["skipped", "skipped"]
    assert len(receiver.bodies(path)) == 1


def test_dry_run_renders_but_sends_nothing(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url, path = url_for(receiver_server, request)
    template = tmp_path / "t.j2"
    template.write_text("{{ records[0].no_such_field }}", encoding="utf-8")
    # The sample batch has no such field either, so validation catches it first.
    with pytest.raises(Exception, match="no_such_field"):
        harness(url, template=str(template))
    outcomes = harness(url, dry_run=True).send(make_indicators(2))
    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    assert receiver.bodies(path) == []


# --- proxies (-ep) -----------------------------------------------------------------------------


def test_proxies_from_the_context_carry_the_traffic(receiver: Any, receiver_class: type, receiver_server: EmulatorServer, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    url, path = url_for(receiver_server, request)
    proxy_app = receiver_class()
    with EmulatorServer(proxy_app) as proxy:
        outcomes = harness(url, secret=SECRET, proxies={"http": proxy.url, "https": proxy.url}).send(make_indicators(1))
        assert outcomes[0].status == "accepted"
        # An HTTP proxy gets the absolute URL; the emulator keeps its path.
        (got,) = proxy_app.bodies(path)
        assert got.json()["records"][0]["source_id"] == "1"
        assert receiver.bodies(path) == []


def test_without_ep_proxy_variables_are_ignored(receiver: Any, receiver_class: type, receiver_server: EmulatorServer, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    url, path = url_for(receiver_server, request)
    proxy_app = receiver_class()
    with EmulatorServer(proxy_app) as proxy:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
            monkeypatch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        harness(url).send(make_indicators(1))
        assert proxy_app.received == []
        assert len(receiver.bodies(path)) == 1


# --- through the engine ------------------------------------------------------------------------------


def _instance(tmp_path: Path, url: str, **sink: Any) -> Path:
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in make_indicators(5)), encoding="utf-8")
    write_config(tmp_path / "hook.toml", {
        "source": {"type": "file", "path": "records.jsonl"},
        "export": {"sinks": ["webhook"], "batch_size": 10},
        "sinks": {"webhook": {"url": url, **sink}},
    })
    return tmp_path


def test_a_run_through_the_cli(receiver: Any, receiver_server: EmulatorServer, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from exportkit.cli import cli

    url, path = url_for(receiver_server, request)
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    folder = _instance(tmp_path, url, secret="env:WEBHOOK_SECRET", attempts=1, batch_size=2)
    runner = CliRunner()
    receiver.faults.fail_next(503, count=1, path_prefix=path)
    first = runner.invoke(cli, ["run", "-n", "hook", "-c", str(folder), "-ll", str(tmp_path / "logs")])
    assert first.exit_code == 3, first.output  # partial: deferred, the checkpoint held
    assert "deferred" in first.output
    second = runner.invoke(cli, ["run", "-n", "hook", "-c", str(folder), "-ll", str(tmp_path / "logs")])
    assert second.exit_code == 0, second.output
    assert sorted(receiver.live[path], key=int) == ["1", "2", "3", "4", "5"]
    assert SECRET not in (tmp_path / "logs" / "hook.log").read_text() + first.output + second.output
    report = json.loads((tmp_path / "logs" / "hook.report.json").read_text())
    assert report["sinks"]["webhook"]["accepted"] == 5
