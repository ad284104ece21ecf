"""A hostile or hijacked endpoint, met through the real ``exportkit run``: redirects, drips, floods, deep JSON."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exportkit.config import write_config
from exportkit.threatq.emulator import ThreatQEmulator
from exportkit_ctia.emulator import CtiaEmulator

from .conftest import file_instance, make_records, write_jsonl
from .hostile import HostileServer, answer, deep_json, drip, redirect_to

pytestmark = pytest.mark.integration


def report_of(folder: Path, name: str = "inst") -> dict:
    return json.loads((folder / f"{name}.report.json").read_text())


def test_ctia_redirect_to_another_origin_is_not_followed_and_the_token_stays_home(tmp_path, cli):
    """A 307 from the CTIA API to another host: nothing is sent there, least of all the bearer token."""
    with CtiaEmulator() as ctia, HostileServer(lambda h: answer(h, 401, b"{}")) as elsewhere, HostileServer(redirect_to("")) as front:
        front.behave = redirect_to(elsewhere.url)
        write_jsonl(tmp_path / "records.jsonl", make_records(3))
        file_instance(tmp_path, "inst", {"ctia": ctia.sink_settings(api_url=front.url)})
        result = cli("run", "-n", "inst", "-c", ".")
        assert "Traceback" not in result.stderr, result.stderr
        assert elsewhere.seen == [], "the sink followed a redirect to another origin"
        assert front.seen, "the sink did talk to its configured API"
        assert result.returncode in (1, 3)
        sink = report_of(tmp_path)["sinks"]["ctia"]
        assert sink["accepted"] == 0
        assert "redirect" in (sink["error"] or "").lower()


def test_threatq_redirect_to_another_origin_is_not_followed(tmp_path, cli):
    with ThreatQEmulator(indicators=5, seed=3) as tq, HostileServer() as elsewhere, HostileServer(redirect_to("")) as front:
        front.behave = redirect_to(elsewhere.url)
        creds = tq.credentials
        write_config(
            tmp_path / "inst.toml",
            {
                "source": {"host": front.url, "client_id": creds.client_id, "username": creds.username, "password": "env:TQ_PW", "collection": "CTR Export"},
                "export": {"sinks": ["stdout"]},
                "sinks": {"stdout": {"path": "out.jsonl"}},
            },
        )
        result = cli("run", "-n", "inst", "-c", ".", env={"TQ_PW": creds.password})
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 1
        assert elsewhere.seen == []


def _tq_instance(folder: Path, host: str, **source: object) -> None:
    write_config(
        folder / "inst.toml",
        {
            "source": {"host": host, "client_id": "c", "username": "u@example.com", "password": "env:TQ_PW", "collection": "CTR Export", **source},
            "export": {"sinks": ["stdout"]},
            "sinks": {"stdout": {"path": "out.jsonl"}},
        },
    )


def test_a_server_dripping_one_byte_a_second_is_cut_off_by_the_request_deadline(tmp_path, cli):
    with HostileServer(drip()) as tq:
        _tq_instance(tmp_path, tq.url, timeout=2)
        started = time.monotonic()
        result = cli("run", "-n", "inst", "-c", ".", env={"TQ_PW": "pw-drip-test"}, timeout=120)
        took = time.monotonic() - started
    assert "Traceback" not in result.stderr, result.stderr
    # 5 attempts with a 4 s total deadline each (2 s connect + 2 s read) would be
    # 20 s plus backoff; the socket timeout alone never fires against a drip.
    assert took < 80, f"the run took {took:.0f}s"
    assert result.returncode == 3, "ThreatQ not answering in time is a passing failure: partial, try again next run"
    assert "ThreatQ" in report_of(tmp_path)["error"] and "no complete answer within 4s" in report_of(tmp_path)["error"]


def test_sigterm_during_a_slow_request_ends_the_run_cleanly(tmp_path):
    with HostileServer(drip()) as tq:
        _tq_instance(tmp_path, tq.url, timeout=600)
        process = subprocess.Popen(
            [sys.executable, "-m", "exportkit", "run", "-n", "inst", "-c", "."],
            cwd=tmp_path, env={**__import__("os").environ, "TQ_PW": "pw-sigterm"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        time.sleep(3)  # inside the dripping token request by now
        process.send_signal(signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("the run ignored SIGTERM during a slow request")
    assert "Traceback" not in err, err
    assert process.returncode == 3, err
    report = report_of(tmp_path)
    assert "stop" in report["error"]


def test_the_whole_run_deadline_ends_the_run_cleanly_and_releases_the_lock(tmp_path, cli):
    with HostileServer(drip()) as tq:
        _tq_instance(tmp_path, tq.url, timeout=600)
        config = (tmp_path / "inst.toml").read_text().replace("[export]\n", '[export]\nrun_deadline = "4s"\n')
        (tmp_path / "inst.toml").write_text(config)
        started = time.monotonic()
        result = cli("run", "-n", "inst", "-c", ".", env={"TQ_PW": "pw-deadline"}, timeout=60)
        took = time.monotonic() - started
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 3, result.stderr
        assert took < 30
        report = report_of(tmp_path)
        assert "deadline" in report["error"]
        # The lock is free: a second run starts (and meets the same deadline).
        again = cli("run", "-n", "inst", "-c", ".", env={"TQ_PW": "pw-deadline"}, timeout=60)
        assert again.returncode == 3


def test_an_answer_over_the_size_cap_is_refused_without_reading_it_all(tmp_path, cli):
    big = b'{"access_token": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    with HostileServer(lambda h: answer(h, 200, big)) as tq:
        _tq_instance(tmp_path, tq.url, max_response_mb=1)
        result = cli("run", "-n", "inst", "-c", ".", env={"TQ_PW": "pw-size"})
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    assert "cap" in report_of(tmp_path)["error"]


def test_json_nested_100000_deep_is_a_clear_error_with_the_report_written(tmp_path, cli):
    with ThreatQEmulator(indicators=5, seed=3) as real:
        token = real.credentials

        def behave(handler):
            if handler.path.startswith("/api/token"):
                answer(handler, 200, b'{"access_token": "t", "expires_in": 3600}')
            else:
                answer(handler, 200, deep_json())

        with HostileServer(behave) as tq:
            _tq_instance(tmp_path, tq.url)
            result = cli("run", "-n", "inst", "-c", ".", env={"TQ_PW": token.password})
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr, result.stderr
    assert result.returncode == 1
    assert "nested" in report_of(tmp_path)["error"]


def test_a_saved_query_nested_100000_deep_is_a_clear_error(tmp_path, cli):
    deep_query = '{"api_query": {"criteria": ' + "[" * 100_000 + "]" * 100_000 + "}}"

    def behave(handler):
        if handler.path.startswith("/api/token"):
            answer(handler, 200, b'{"access_token": "t", "expires_in": 3600}')
        elif handler.path.startswith("/api/search/query"):
            body = {"data": [{"id": 1, "name": "CTR Export", "json": deep_query}], "total": 1}
            answer(handler, 200, json.dumps(body).encode())
        else:
            answer(handler, 200, b'{"data": [], "total": 0}')

    with HostileServer(behave) as tq:
        _tq_instance(tmp_path, tq.url)
        result = cli("run", "-n", "inst", "-c", ".", env={"TQ_PW": "pw-deep-query"})
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr, result.stderr
    assert result.returncode == 1
    assert "nested" in report_of(tmp_path)["error"]
