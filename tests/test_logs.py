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
