"""ThreatQ emulator -> the real ``exportkit run`` -> CTIA emulator, end to end."""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from exportkit.config import write_config
from exportkit.demo import demo_config
from exportkit.threatq.emulator import ThreatQEmulator
from exportkit_ctia.emulator import CtiaEmulator

from .proxy import RecordingProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path: Path):
    # ThreatQ and CTIA as the real services behave (page cap, fields, touched_at; the organisation's rate limit).
    with ThreatQEmulator(indicators=1200, seed=11, realistic=True) as tq, CtiaEmulator(org_rate_limit=8000) as ctia:
        config = demo_config(tq, ctia, tmp_path)
        config["export"]["sinks"] = ["ctia"]
        del config["sinks"]["stdout"]
        write_config(tmp_path / "inst.toml", config)
        yield tq, ctia, tmp_path


def run(cli, *extra: str) -> tuple[int, dict[str, Any]]:
    result = cli("run", "-n", "inst", "-c", ".", *extra)
    assert "Traceback" not in result.stderr, result.stderr
    report = json.loads((cli.folder / "inst.report.json").read_text())
    return result.returncode, report


def live_by_indicator(ctia: CtiaEmulator) -> dict[str, list[dict]]:
    """Live judgements grouped by the ThreatQ indicator they came from (their source_uri)."""
    out: dict[str, list[dict]] = collections.defaultdict(list)
    for judgement in ctia.live_judgements():
        out[judgement["source_uri"]].append(judgement)
    return out


def indicator_id(source_uri: str) -> int:
    return int(urlsplit(source_uri).path.split("/")[2])


def blocklist(live: dict[str, list[dict]]) -> list[str]:
    """What the feed must list: the observables of the live judgements that are not Clean."""
    return sorted({j["observable"]["value"] for js in live.values() for j in js if j["disposition_name"] != "Clean"})


def test_export_once_then_nothing_and_feed_matches(world, cli):
    tq, ctia, folder = world
    code, report = run(cli)
    assert code in (0, 3), report
    sink = report["sinks"]["ctia"]
    assert sink["rejected"] == 0 and sink["deferred"] == 0 and sink["error"] is None
    live = live_by_indicator(ctia)
    assert len(live) == sink["accepted"] > 100
    assert all(len(js) == 1 for js in live.values()), "one live judgement per indicator"
    in_collection = set(tq.collection_ids("CTR Export"))
    assert {indicator_id(uri) for uri in live} <= in_collection
    for uri, (judgement,) in live.items():
        raw = tq.indicator(indicator_id(uri))
        assert raw["status"]["name"] != "Expired" if isinstance(raw.get("status"), dict) else True
        if judgement["disposition_name"] == "Clean":
            assert judgement["disposition"] == 1
    assert any(js[0]["disposition_name"] == "Clean" for js in live.values()), "the data set has Whitelisted indicators"
    assert ctia.feed_view() == blocklist(live), "the feed is a blocklist: no Clean observable in it"

    before = ctia.counts()
    code, report = run(cli)
    assert report["sinks"]["ctia"]["accepted"] == 0
    assert ctia.counts()["judgement"] == before["judgement"], "a second run creates nothing"


def _live_indicator(ctia: CtiaEmulator) -> tuple[str, dict]:
    live = live_by_indicator(ctia)
    uri = sorted(uri for uri, js in live.items() if js[0]["disposition_name"] == "Malicious")[0]
    return uri, live[uri][0]


def test_changed_indicator_leaves_exactly_one_live_judgement(world, cli):
    tq, ctia, _ = world
    run(cli)
    uri, old = _live_indicator(ctia)
    tq.update_indicator(indicator_id(uri), status_name="Whitelisted")
    code, report = run(cli)
    assert report["sinks"]["ctia"]["accepted"] >= 1
    (now,) = live_by_indicator(ctia)[uri]
    assert now["id"] != old["id"]
    assert now["disposition_name"] == "Clean" and now["disposition"] == 1
    assert now["observable"] == old["observable"]
    assert old["observable"]["value"] not in ctia.feed_view(), "a record turned Whitelisted leaves the feed"


def test_removed_and_expired_indicators_leave_no_live_judgement(world, cli):
    tq, ctia, _ = world
    run(cli)
    live = sorted(live_by_indicator(ctia))
    removed, expired = live[0], live[1]
    tq.remove_indicator(indicator_id(removed))
    tq.update_indicator(indicator_id(expired), status_name="Expired")
    code, report = run(cli, "--reconcile")
    assert report["reconcile"]["removed"] == 1
    now = live_by_indicator(ctia)
    assert removed not in now and expired not in now
    assert len(now) == len(live) - 2
    assert ctia.feed_view() == blocklist(now)


def test_rate_limits_and_outages_lose_and_duplicate_nothing(world, cli, tmp_path):
    tq, ctia, _ = world
    # A clean run against a second CTIA gives the expected result.
    with CtiaEmulator() as clean:
        config = demo_config(tq, clean, tmp_path)
        config["export"]["sinks"] = ["ctia"]
        del config["sinks"]["stdout"]
        write_config(tmp_path / "clean.toml", config)
        assert cli("run", "-n", "clean", "-c", ".").returncode in (0, 3)
        expected = {(j["source_uri"], j["observable"]["value"]) for j in clean.live_judgements()}

    ctia.faults.fail_next(503, count=4, path_prefix="/ctia/bundle")
    ctia.faults.fail_next(429, count=2, headers={"Retry-After": "1"}, path_prefix="/ctia/bundle")
    ctia.faults.drop_next(2, path_prefix="/ctia/bundle")
    for _ in range(4):  # a storm may defer work to the next runs; it must converge
        code, report = run(cli)
        sink = report["sinks"]["ctia"]
        if sink["error"] is None and sink["deferred"] == 0 and code in (0, 3):
            break
    got = [(j["source_uri"], j["observable"]["value"]) for j in ctia.live_judgements()]
    assert len(got) == len(set(got)), "no duplicates"
    assert set(got) == expected, "nothing lost"


def test_long_retry_after_defers_and_holds_the_checkpoint(world, cli):
    tq, ctia, _ = world
    ctia.faults.fail_next(429, count=50, headers={"Retry-After": "3600"}, path_prefix="/ctia/bundle")
    code, report = run(cli)
    assert code == 3, "a rate limit is partial, not fatal"
    assert report["sinks"]["ctia"]["error_kind"] == "transient"
    assert "3600" in report["sinks"]["ctia"]["error"]
    assert report["checkpoint_after"] is None
    ctia.faults.clear()
    code, report = run(cli)
    assert report["sinks"]["ctia"]["deferred"] == 0
    assert len(live_by_indicator(ctia)) == report["sinks"]["ctia"]["accepted"]


def test_external_proxy_carries_sink_traffic_only(world, cli):
    tq, ctia, folder = world
    with RecordingProxy() as proxy:
        config = demo_config(tq, ctia, folder)
        config["export"] = {"sinks": ["ctia"], "proxy": proxy.url}
        del config["sinks"]["stdout"]
        write_config(folder / "inst.toml", config)
        code, _ = run(cli)  # without -ep the proxy is not used at all
        assert proxy.seen == []
        tq.update_indicator(tq.collection_ids("CTR Export")[0], manual_score=9)
        code, report = run(cli, "-ep")
    hosts = {host for _, host, _ in proxy.seen}
    ctia_host, tq_host = urlsplit(ctia.url).netloc, urlsplit(tq.url).netloc
    assert ctia_host in hosts, "CTIA traffic goes through the proxy with -ep"
    assert tq_host not in hosts, "ThreatQ traffic never does"
    assert any(path.startswith("/iroh/oauth2/token") for _, _, path in proxy.seen)


def test_the_organisation_rate_limit_defers_the_run_without_waiting_an_hour(world, cli):
    tq, ctia, _ = world
    # Another client of the organisation spent nearly all of this hour's requests: the few
    # left run out early in the run (opening the feed or the first bundle, depending on
    # how many requests opening takes) and CTIA answers 429 with an hour-long Retry-After.
    ctia.set_org_rate_limit(4)
    started = time.monotonic()
    code, report = run(cli)
    assert time.monotonic() - started < 60, "a 429 with an hour-long Retry-After does not make the run sleep"
    sink = report["sinks"]["ctia"]
    assert code == 3 and report["checkpoint_after"] is None, sink
    said = json.dumps(sink)
    assert "rate limit" in said or "asked to wait 3" in said, said[:2000]
    assert sink["accepted"] < 50, "nothing much was sent after the 429"
    ctia.set_org_rate_limit(8000)  # the next hour
    code, report = run(cli)
    assert code in (0, 3) and report["sinks"]["ctia"]["deferred"] == 0
    live = live_by_indicator(ctia)
    assert len(live) == report["sinks"]["ctia"]["accepted"] + sink["accepted"] > 100
    assert all(len(js) == 1 for js in live.values())


def test_check_and_the_dry_run_warn_before_a_settings_change_supersedes_the_held_judgements(world, cli):
    tq, ctia, folder = world
    code, report = run(cli)
    held = report["sinks"]["ctia"]["accepted"]
    assert cli("check", "-n", "inst", "-c", ".").stdout.count("WARNING") == 0, "no change, no warning"
    config = demo_config(tq, ctia, folder)
    config["export"]["sinks"] = ["ctia"]
    del config["sinks"]["stdout"]
    config["sinks"]["ctia"]["confidence"] = "Medium"
    write_config(folder / "inst.toml", config)

    checked = cli("check", "-n", "inst", "-c", ".")
    assert "confidence High -> Medium" in checked.stdout, checked.stdout
    assert f"each of the {held} held judgements will be superseded" in checked.stdout
    dry = cli("run", "-n", "inst", "-c", ".", "--dry-run")
    assert "confidence High -> Medium" in dry.stderr and f"each of the {held} held judgements" in dry.stderr
    assert ctia.counts()["judgement"] == held, "neither sent anything"

    code, report = run(cli)  # the change is made: the next check is quiet again
    assert "confidence High -> Medium" in report["sinks"]["ctia"]["notes"]["settings_change"]
    assert "WARNING" not in cli("check", "-n", "inst", "-c", ".").stdout


def test_feed_secret_stays_out_of_the_run_summary(world, cli):
    """The feed URL's ``?s=`` secret is in the 0600 report, never on stderr (cron mail)."""
    _tq, _ctia, _folder = world
    result = cli("run", "-n", "inst", "-c", ".")
    report = json.loads((cli.folder / "inst.report.json").read_text())
    feed_url = report["sinks"]["ctia"]["notes"]["feed_url"]
    secret = feed_url.split("s=", 1)[1]
    assert len(secret) >= 16
    assert secret not in result.stderr and secret not in result.stdout
    assert "judgements: created" in result.stderr


def test_red_judgements_are_readable_by_the_organisation_only_when_authorized(world, cli):
    tq, ctia, folder = world
    ctia.add_client("analyst", "analyst-password")  # the organisation's analysts, through another API client

    def analyst_sees() -> set[str]:
        token = requests.post(ctia.token_url, auth=("analyst", "analyst-password"), data={"grant_type": "client_credentials"}, timeout=5)
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        found = requests.get(f"{ctia.url}/ctia/judgement/search", params={"limit": 10000}, headers=headers, timeout=30)
        return {j["id"] for j in found.json()}

    run(cli)
    live = ctia.live_judgements()
    red = {j["id"] for j in live if j["tlp"] == "red"}
    assert red, "the data set has TLP red indicators"
    assert analyst_sees() == {j["id"] for j in live} - red, "red judgements are the owner's only"

    config = demo_config(tq, ctia, folder)
    config["export"]["sinks"] = ["ctia"]
    del config["sinks"]["stdout"]
    config["sinks"]["ctia"]["authorized_groups"] = [ctia.org_id]
    write_config(folder / "inst.toml", config)
    red_uri = next(j["source_uri"] for j in live if j["tlp"] == "red")
    tq.update_indicator(indicator_id(red_uri), manual_score=9)  # a new judgement, made with the setting
    run(cli)
    (now,) = live_by_indicator(ctia)[red_uri]
    assert now["tlp"] == "red" and now["authorized_groups"] == [ctia.org_id]
    assert now["id"] in analyst_sees()


def test_threatq_answering_503_is_a_passing_fault_exit_3_and_the_checkpoint_holds(world, cli):
    """scheduling.md: exit 1 means the next run fails the same way; a 503 is not that."""
    tq, _ctia, _folder = world
    tq.faults.fail_next(503, 100, path_prefix="/api/indicators/query")
    code, report = run(cli)
    assert code == 3, report
    assert "HTTP 503" in (report["error"] or "")
    assert report["checkpoint_after"] == report["checkpoint_before"] is None
    tq.faults.clear()
    code, report = run(cli)
    assert code in (0, 3) and report["sinks"]["ctia"]["accepted"] > 100
