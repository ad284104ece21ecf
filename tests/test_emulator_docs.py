"""Every curl example in docs/emulators.md, run against emulators started as the doc says."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from exportkit.threatq.emulator import ThreatQEmulator
from exportkit.threatq.emulator.data import STATUSES
from exportkit_ctia.emulator import CtiaEmulator

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[1] / "docs" / "emulators.md"


def curl_blocks(text: str) -> list[str]:
    return [block for block in re.findall(r"```sh\n(.*?)```", text, re.S) if "curl " in block]


def run_block(block: str, ports: dict[str, str], token: str) -> subprocess.CompletedProcess[str]:
    # Each block runs in a shell where T is set, as the reader's is after the first block.
    script = f"T='X-Emulator-Token: {token}'\n" + re.sub(r"^T='X-Emulator-Token: [^']*'.*$", "", block, flags=re.M)
    for documented, real in ports.items():
        script = script.replace(documented, real)
    script = script.replace("curl -s ", "curl -sf ")  # an HTTP error fails the block
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60)


def test_every_curl_example_works_as_written():
    blocks = curl_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 3
    # As documented: `exportkit emulate threatq --indicators 5000 --seed 7` (realistic by default).
    with ThreatQEmulator(indicators=5000, seed=7, realistic=True) as tq, CtiaEmulator() as ctia:
        assert 1023 in tq.collection_ids("CTR Export"), "the docs' example indicator is in the collection"
        for block in blocks:
            emulator = tq if "8443" in block else ctia
            ports = {"localhost:8443": tq.url.split("//", 1)[1], "localhost:9443": ctia.url.split("//", 1)[1]}
            result = run_block(block, ports, emulator.control_token)
            assert result.returncode == 0, f"{block}\n{result.stderr}{result.stdout}"
        changed = tq.indicator(1023)
        assert {row["id"]: row["name"] for row in STATUSES}[changed["status_id"]] == "Whitelisted"
        assert tq.behaviour.clock_offset == 120
