"""A run with changes in flight, ended hard at every step boundary, then recovered by a clean run.

ThreatQ emulator -> the real ``exportkit run`` -> CTIA emulator. Each case
exports a collection, changes indicators in ThreatQ (new scores, Whitelisted,
Expired), runs with ``EXPORTKIT_CRASH_AT`` so the process exits hard right
after one step, changes some of the same indicators again (so a judgement
created but not recorded would no longer match the record's new version),
and then runs cleanly once. The result must equal what a fresh instance
exports to an empty CTIA from the same ThreatQ: exactly one live judgement
per live indicator, with the latest content, none for withdrawn ones,
nothing rejected, and the same feed.
"""

from __future__ import annotations

import collections
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from exportkit.config import write_config
from exportkit.crashpoints import CRASH_EXIT_CODE, ENV
from exportkit.demo import DEMO_COLLECTION, demo_config
from exportkit.threatq.emulator import ThreatQEmulator
from exportkit_ctia.emulator import CtiaEmulator

pytestmark = pytest.mark.integration

BATCH = 20


def instance_config(tq: ThreatQEmulator, ctia: CtiaEmulator, folder: Path) -> dict[str, Any]:
    config = demo_config(tq, ctia, folder)
    config["export"] = {"sinks": ["ctia"], "batch_size": BATCH, "reconcile_every": "0"}
    del config["sinks"]["stdout"]
    return config


def run(cli, name: str, *extra: str, crash_at: str | None = None) -> tuple[int, dict[str, Any] | None, str]:
    env = {ENV: crash_at} if crash_at else {ENV: ""}
    result = cli("run", "-n", name, "-c", ".", *extra, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    if crash_at:
        return result.returncode, None, result.stderr
    report = json.loads((cli.folder / f"{name}.report.json").read_text())
    return result.returncode, report, result.stderr


def live_view(ctia: CtiaEmulator) -> dict[str, list[tuple[str, str, str]]]:
    """Live judgements by ThreatQ link: (observable value, disposition, reason) of each."""
    out: dict[str, list[tuple[str, str, str]]] = collections.defaultdict(list)
    for j in ctia.live_judgements():
        out[j["source_uri"]].append((j["observable"]["value"], j["disposition_name"], j["reason"]))
    return dict(out)


def indicator_id(source_uri: str) -> int:
    return int(source_uri.rstrip("/").split("/")[-2])


def exported_ids(ctia: CtiaEmulator) -> list[int]:
    return sorted({indicator_id(j["source_uri"]) for j in ctia.live_judgements() if j["disposition_name"] != "Clean"})


@pytest.fixture
def world(tmp_path: Path):
    with ThreatQEmulator(indicators=400, seed=16) as tq, CtiaEmulator() as ctia:
        write_config(tmp_path / "inst.toml", instance_config(tq, ctia, tmp_path))
        yield tq, ctia, tmp_path


def assert_matches_a_fresh_export(cli, tq: ThreatQEmulator, ctia: CtiaEmulator, folder: Path) -> None:
    got = live_view(ctia)
    twins = {uri: js for uri, js in got.items() if len(js) > 1}
    assert not twins, f"{len(twins)} indicator(s) with more than one live judgement: {sorted(twins.items())[:3]}"
    name = f"fresh{len(list(folder.glob('fresh*.toml')))}"
    with CtiaEmulator() as fresh:
        write_config(folder / f"{name}.toml", instance_config(tq, fresh, folder))
        code, report, stderr = run(cli, name)
        assert code in (0, 3) and report["sinks"]["ctia"]["rejected"] == 0, stderr  # 3: malformed ThreatQ data
        expected = live_view(fresh)
        assert expected, stderr
        assert got == expected, (
            f"missing: {sorted(set(expected) - set(got))[:5]}, extra: {sorted(set(got) - set(expected))[:5]}, "
            f"different: {[(u, got[u], expected[u]) for u in set(got) & set(expected) if got[u] != expected[u]][:3]}"
        )
        assert ctia.feed_view() == fresh.feed_view(), "the feed shows exactly the live set"


def change_round(tq: ThreatQEmulator, ids: list[int], score: float) -> None:
    for ident in ids:
        tq.update_indicator(ident, manual_score=score)


CASES = [
    "intent-recorded",
    "bundle-answered",
    "judgement-expired",
    "judgement-expired:4",  # in the middle of the first batch's expiries
    "judgement-expired:35",  # in the middle of the withdrawals (after 33 superseded)
    "holdings-written",
    "checkpoint-written",
]


@pytest.mark.parametrize("crash_at", CASES)
def test_a_run_ended_at_a_step_boundary_is_repaired_by_the_next_run(world, cli, crash_at):
    tq, ctia, folder = world
    code, report, stderr = run(cli, "inst")
    assert code in (0, 3) and report["sinks"]["ctia"]["rejected"] == 0, stderr  # 3: malformed ThreatQ data
    exported = exported_ids(ctia)
    assert len(exported) > 60

    # Round 1: scores change, some turn Whitelisted (a change), some Expired (a withdrawal).
    changed, whitelisted, expired = exported[:30], exported[30:33], exported[33:36]
    change_round(tq, changed, 9.5)
    for ident in whitelisted:
        tq.update_indicator(ident, status_name="Whitelisted")
    for ident in expired:
        tq.update_indicator(ident, status_name="Expired")
    code, _, stderr = run(cli, "inst", crash_at=crash_at)
    assert code == CRASH_EXIT_CODE, f"the crash point was not reached: {stderr}"
    assert f"crash point {crash_at if ':' in crash_at else crash_at + ':1'} reached" in stderr

    # Round 2, before the recovery: half of them change again, two of them expire.
    change_round(tq, changed[::2], 3.0)
    for ident in changed[1:4:2]:
        tq.update_indicator(ident, status_name="Expired")

    code, report, stderr = run(cli, "inst")
    assert code == 0, stderr
    assert report is not None
    sink = report["sinks"]["ctia"]
    assert sink["rejected"] == 0 and sink["error"] is None and sink["deferred"] == 0, sink
    assert report["dead_lettered_new"] == 0
    assert_matches_a_fresh_export(cli, tq, ctia, folder)

    # Nothing is left for a reconcile to repair.
    before = live_view(ctia)
    code, report, stderr = run(cli, "inst", "--reconcile")
    assert code == 0, stderr
    assert report["sinks"]["ctia"]["notes"]["strays_expired"] == 0
    assert live_view(ctia) == before


def test_a_crash_during_the_recovery_is_recovered_by_the_run_after(world, cli):
    tq, ctia, folder = world
    code, report, stderr = run(cli, "inst")
    changed = exported_ids(ctia)[:25]
    change_round(tq, changed, 9.5)
    code, _, stderr = run(cli, "inst", crash_at="bundle-answered")
    assert code == CRASH_EXIT_CODE, stderr
    change_round(tq, changed[::2], 3.0)
    # The next run dies while it finishes what the first left: after the re-sent bundle's
    # answer and one expiry of the superseded judgements.
    code, _, stderr = run(cli, "inst", crash_at="judgement-expired:2")
    assert code == CRASH_EXIT_CODE, stderr
    assert "left unfinished" in (folder / "inst.log").read_text(), "it died in the recovery"
    code, report, stderr = run(cli, "inst")
    assert code == 0, stderr
    assert report["sinks"]["ctia"]["rejected"] == 0 and report["sinks"]["ctia"]["deferred"] == 0
    assert_matches_a_fresh_export(cli, tq, ctia, folder)


def test_reconcile_expires_second_judgements_a_crash_left_without_an_intent_log(world, cli):
    """What an older release left behind (no intent log): --reconcile finds and expires it."""
    tq, ctia, folder = world
    code, report, stderr = run(cli, "inst")
    changed = exported_ids(ctia)[:12]
    change_round(tq, changed, 9.5)
    code, _, stderr = run(cli, "inst", crash_at="bundle-answered")
    assert code == CRASH_EXIT_CODE, stderr
    with sqlite3.connect(folder / "inst.state.sqlite") as db:  # as if the log had never been written
        db.execute("DELETE FROM sink_kv WHERE key = 'intents'")
    change_round(tq, changed, 3.0)
    code, report, stderr = run(cli, "inst")
    twins = [uri for uri, js in live_view(ctia).items() if len(js) > 1]
    assert len(twins) == len(changed), "without the log, the crash leaves a second live judgement"

    code, report, stderr = run(cli, "inst", "--reconcile")
    assert code == 0, stderr
    assert report["sinks"]["ctia"]["notes"]["strays_expired"] == len(changed)
    assert_matches_a_fresh_export(cli, tq, ctia, folder)
