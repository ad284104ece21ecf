"""The core's standard sink contract (exportkit.testing.SinkContract), run against the emulator."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from exportkit.testing import FIXED_TIME, SinkContract, SinkHarness
from exportkit_ctia.emulator import CtiaEmulator
from exportkit_ctia.plugin import exportkit_sink_types

pytestmark = pytest.mark.integration
_LINK = re.compile(r"/indicators/([^/]+)/details$")


class TestCtiaContract(SinkContract):
    # Invalid values are skipped, not rejected; CTIA rejects by server rules only
    # (TLP floor, ...), never one record of a batch for its content alone.
    rejects_record = None
    bad_settings = {"client_id": "c", "client_password": "p", "priority": 500, "disposition": "evil"}
    bad_settings_problems = 2

    @pytest.fixture(autouse=True)
    def _emulators(self):
        self.emulators: dict[str, CtiaEmulator] = {}
        yield
        for emulator in self.emulators.values():
            emulator.stop()

    def sink_setup(self, tmp_path: Any):
        key = str(tmp_path)
        if key not in self.emulators:
            # The contract's export time is fixed in the past: give the emulator a
            # clock an hour after it, so the judgements are live "now".
            self.emulators[key] = CtiaEmulator(clock=lambda: FIXED_TIME + timedelta(hours=1)).start()
        (sink_type,) = exportkit_sink_types()
        return sink_type, self.emulators[key].sink_settings()

    def read_back(self, harness: SinkHarness):
        (emulator,) = self.emulators.values() if len(self.emulators) == 1 else [None]
        return [_LINK.search(j["source_uri"]).group(1) for j in emulator.live_judgements()]
