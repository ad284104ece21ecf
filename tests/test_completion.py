"""Shell completion as docs/install.md documents it (click's own mechanism)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXPORTKIT = Path(sys.executable).parent / "exportkit"


def complete(words: str) -> list[str]:
    env = {**os.environ, "_EXPORTKIT_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    result = subprocess.run([str(EXPORTKIT)], env=env, capture_output=True, text=True, timeout=60)
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if "," in line]


@pytest.mark.integration
def test_the_documented_completion_script_is_produced_and_completes_commands():
    script = subprocess.run([str(EXPORTKIT)], env={**os.environ, "_EXPORTKIT_COMPLETE": "bash_source"}, capture_output=True, text=True, timeout=60)
    assert "complete " in script.stdout and "_EXPORTKIT_COMPLETE" in script.stdout
    assert {"run", "check", "state", "dlq"} <= set(complete("exportkit "))
    assert "--dry-run" in complete("exportkit run --")
    assert "_EXPORTKIT_COMPLETE" in (Path(__file__).resolve().parents[1] / "docs" / "install.md").read_text()
