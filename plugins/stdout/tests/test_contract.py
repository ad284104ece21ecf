"""The stdout sink against the standard sink contract (exportkit.testing.SinkContract)."""

from __future__ import annotations

import json
from pathlib import Path

from exportkit.testing import SinkContract, SinkHarness
from exportkit_stdout import exportkit_sink_types


class TestStdoutContract(SinkContract):
    # The stdout sink prints whatever it gets; it has no record to refuse.
    rejects_record = None
    # a bad choice, a wrong type, a wrong type
    bad_settings = {"format": "xml", "show_withdrawals": "yes", "path": 7}
    bad_settings_problems = 3

    def sink_setup(self, tmp_path: Path):
        (sink_type,) = exportkit_sink_types()
        return sink_type, {"format": "jsonl", "path": str(tmp_path / "out.jsonl"), "show_withdrawals": True}

    def read_back(self, harness: SinkHarness) -> list[str]:
        """Replay the output log: a printed record is live until a withdrawal line names it."""
        path = Path(harness.settings.path)
        live: dict[str, None] = {}
        if not path.exists():
            return []
        for line in path.read_text(encoding="utf-8").splitlines():
            data = json.loads(line)
            if "withdrawn" in data:
                live.pop(data["withdrawn"], None)
            else:
                live[data["source_id"]] = None
        return list(live)
