"""The webhook sink against the standard sink contract (exportkit.testing.SinkContract)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from exportkit.emulation import EmulatorServer
from exportkit.testing import SinkContract, SinkHarness
from exportkit_webhook import exportkit_sink_types

pytestmark = pytest.mark.integration


class TestWebhookContract(SinkContract):
    # The receiver (conftest.py) answers 422 to a batch holding this value
    # (Receiver.REFUSED_VALUE); the sink splits the batch and rejects only that record.
    rejects_record = {"type_name": "FQDN", "value": "refused.invalid"}
    # a number for a URL, a timeout below the minimum, a batch size of 0, a header without a colon
    bad_settings = {"url": 5, "timeout": -1, "batch_size": 0, "headers": ["no colon here"]}
    bad_settings_problems = 4

    @pytest.fixture(autouse=True)
    def _receiver(self, receiver: Any, receiver_server: EmulatorServer) -> None:
        self.receiver = receiver
        self.server = receiver_server

    def sink_setup(self, tmp_path: Path):
        (sink_type,) = exportkit_sink_types()
        # One receiver path per test folder: the same tmp_path gives the same target.
        url = f"{self.server.url}{self._path(tmp_path)}"
        return sink_type, {"url": url, "secret": "contract-test-secret", "send_withdrawals": True, "batch_size": 2}

    @staticmethod
    def _path(tmp_path: Path) -> str:
        return f"/hook/{tmp_path.parent.name}-{tmp_path.name}"

    def target_state(self, tmp_path: Path):
        # The target is the receiver: what it holds, and every body it was sent
        # (a dry run must not POST at all, not even something it would ignore).
        return sorted(self.read_back(self.harness(tmp_path))), [r.body for r in self.receiver.bodies(self._path(tmp_path))]

    def read_back(self, harness: SinkHarness) -> list[str]:
        path = urlsplit(harness.settings.url).path
        return list(self.receiver.live.get(path, {}))
