"""Logging: tags on every line, rotation target, secrets blanked."""

from __future__ import annotations

import logging
import stat

from exportkit.logs import configure_logging, run_logger
from exportkit.secrets import Secret


def test_lines_carry_instance_sink_and_run_and_hide_secrets(tmp_path):
    handler = configure_logging("prod", str(tmp_path), 3)
    try:
        secret = Secret("s3cr3t-value-123")
        log = run_logger("sink.ctia", instance="prod", run_id="abc123", sink="ctia")
        log.info("token request with %s failed", secret.reveal())
        logging.getLogger("exportkit.plugins").warning("outside a run")
        handler.flush()
    finally:
        configure_logging("prod", None, 1)
    text = (tmp_path / "prod.log").read_text()
    assert "[prod/ctia run=abc123] exportkit.sink.ctia: token request with *** failed" in text
    assert "[prod/- run=-] exportkit.plugins: outside a run" in text
    assert "s3cr3t-value-123" not in text
    assert stat.S_IMODE((tmp_path / "prod.log").stat().st_mode) == 0o600


def test_verbosity_levels(tmp_path):
    handler = configure_logging("v", str(tmp_path), 1)
    try:
        run_logger("engine", instance="v", run_id="r").info("hidden at level 1")
        run_logger("engine", instance="v", run_id="r").warning("shown at level 1")
        handler.flush()
    finally:
        configure_logging("v", None, 1)
    text = (tmp_path / "v.log").read_text()
    assert "shown at level 1" in text and "hidden at level 1" not in text


def test_messages_and_tracebacks_are_escaped_to_single_lines(tmp_path):
    import logging

    from exportkit.logs import configure_logging, run_logger

    handler = configure_logging("esc", str(tmp_path), 2)
    try:
        log = run_logger("test", instance="esc", run_id="r1")
        log.warning("server said: %s", "bad\n2024-01-01 00:00:00,000 ERROR forged\x1b[2J")
        try:
            raise ValueError("boom\x1b]0;title\x07")
        except ValueError:
            log.exception("failed")
    finally:
        logging.getLogger("exportkit").removeHandler(handler)
        handler.close()
    text = (tmp_path / "esc.log").read_text(encoding="utf-8")
    assert "\x1b" not in text and "\x07" not in text
    assert not any(line.startswith("2024-01-01") for line in text.splitlines())
    assert "bad\\n2024-01-01" in text and "boom\\x1b]0;title\\x07" in text


def test_json_lines_stay_one_line_and_carry_the_tags(tmp_path):
    import json

    handler = configure_logging("prod", str(tmp_path), 2, log_format="json")
    try:
        run_logger("engine", instance="prod", run_id="abc", sink="ctia").warning("bad value %s", "x\ny\x1b[31m")
    finally:
        logging.getLogger("exportkit").removeHandler(handler)
        handler.close()
    (line,) = (tmp_path / "prod.log").read_text().splitlines()
    entry = json.loads(line)
    assert (entry["level"], entry["instance"], entry["sink"], entry["run_id"]) == ("WARNING", "prod", "ctia", "abc")
    assert "\n" not in entry["message"] and "\x1b" not in entry["message"] and entry["message"].startswith("bad value x")
