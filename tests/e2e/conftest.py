"""End-to-end helpers: run the real ``exportkit`` CLI in a subprocess against files and SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

import pytest

from exportkit.config import write_config
from exportkit.records import Indicator

BASE_TIME = datetime(2024, 3, 1, tzinfo=timezone.utc)


def make_records(count: int, *, start: int = 1, status: str = "Active", minutes: int = 0) -> list[Indicator]:
    """``count`` distinct IP records with increasing updated_at (one second apart)."""
    out = []
    for i in range(start, start + count):
        out.append(
            Indicator.create(
                source="ThreatQ",
                source_id=i,
                value=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                type="ip",
                type_name="IP Address",
                status=status,
                score=i % 10,
                tlp="amber",
                tags=["e2e"],
                updated_at=BASE_TIME + timedelta(minutes=minutes, seconds=i),
            )
        )
    return out


def write_jsonl(path: Path, records: Iterable[Indicator], extra_lines: Iterable[str] = ()) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record.to_dict()) + "\n")
        for line in extra_lines:
            fh.write(line + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class CLI:
    """Runs ``python -m exportkit`` in a folder; returns CompletedProcess."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {})}
        full_env.pop("EXPORTKIT_CONFIG", None)
        return subprocess.run(
            [sys.executable, "-m", "exportkit", *args],
            cwd=self.folder,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path)


def file_instance(folder: Path, name: str, sinks: dict[str, dict[str, Any]], *, source_path: str = "records.jsonl", export: dict[str, Any] | None = None) -> Path:
    """Write an instance config using the file source and the given sink tables."""
    data = {
        "source": {"type": "file", "path": source_path},
        "export": {"sinks": list(sinks), "batch_size": 500, **(export or {})},
        "sinks": sinks,
    }
    return write_config(folder / f"{name}.toml", data)
