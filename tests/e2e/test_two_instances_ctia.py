"""Two instances (east, west) on one ThreatQ and one CTIA, through the real CLI: no verdict is lost.

East exports collection A (IP addresses and FQDNs), west collection B (FQDNs
and URLs): they overlap on FQDNs. After every run, every indicator either
instance still exports (what its state holds) has exactly one live judgement
of that instance in CTIA.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any

import pytest

from exportkit.config import write_config
from exportkit.state import State, state_path
from exportkit.threatq.emulator import ThreatQEmulator
from exportkit_ctia.emulator import CtiaEmulator
from exportkit_ctia.mapping import xid_owner

pytestmark = pytest.mark.integration

LINK_HOST = "tq.e2e.example"
STATUSES = {"+or": [{"status_name": s} for s in ("Active", "Review", "Whitelisted", "Expired")]}


def collection(*types: str) -> dict[str, Any]:
    return {"criteria": {}, "filters": {"+and": [STATUSES, {"+or": [{"type_name": t} for t in types]}]}}


def instance(folder: Path, name: str, tq: ThreatQEmulator, ctia: CtiaEmulator, collection_name: str, **export: Any) -> None:
    creds = tq.credentials
    write_config(folder / f"{name}.toml", {
        "source": {"type": "threatq", "host": tq.url, "client_id": creds.client_id, "username": creds.username,
                   "password": creds.password, "collection": collection_name, "link_host": LINK_HOST},
        "export": {"sinks": ["ctia"], "batch_size": 100, "reconcile_every": "0", **export},
        "sinks": {"ctia": {**ctia.sink_settings(), "link_host": LINK_HOST}},
    })


@pytest.fixture
def world(tmp_path: Path):
    with ThreatQEmulator(indicators=700, seed=23) as tq, CtiaEmulator() as ctia:
        tq.add_collection("A", collection("IP Address", "FQDN"))
        tq.add_collection("B", collection("FQDN", "URL"))
        tq.add_collection("B only URLs", collection("URL"))
        instance(tmp_path, "east", tq, ctia, "A")
        instance(tmp_path, "west", tq, ctia, "B")
        yield tq, ctia, tmp_path


def run(cli, name: str, *extra: str) -> tuple[int, dict[str, Any]]:
    result = cli("run", "-n", name, "-c", ".", *extra)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads((cli.folder / f"{name}.report.json").read_text())


def held(folder: Path, name: str) -> dict[str, Any]:
    with State.open(state_path(folder, name)) as st:
        return st.holdings("ctia").get_many(st.held_ids("ctia"))


def uri(source_id: str) -> str:
    return f"https://{LINK_HOST}/indicators/{source_id}/details"


def check_every_held_verdict_is_live(ctia: CtiaEmulator, folder: Path) -> dict[str, dict[str, Any]]:
    """Every record east or west holds has exactly one live judgement of that instance: the one it holds."""
    live = ctia.live_judgements()
    per_owner = collections.Counter((xid_owner(j["external_ids"][0]), j["source_uri"]) for j in live)
    live_ids = {j["id"] for j in live}
    holdings = {}
    for name in ("east", "west"):
        holdings[name] = held(folder, name)
        dead = sorted(sid for sid, h in holdings[name].items() if h.remote["judgement_id"] not in live_ids)
        assert not dead, f"{name} holds {len(dead)} verdicts that are not live, e.g. {dead[:3]}"
        for sid, holding in holdings[name].items():
            assert per_owner[(xid_owner(holding.remote["xid"]), uri(sid))] == 1, f"{name}: not exactly one live judgement for {sid}"
    return holdings


def test_two_instances_rescoped_reconciled_and_repaired_never_lose_a_verdict(world, cli):
    tq, ctia, folder = world
    for name in ("east", "west"):
        code, report = run(cli, name)
        assert code == 0, report
    holdings = check_every_held_verdict_is_live(ctia, folder)
    shared = set(holdings["east"]) & set(holdings["west"])
    assert len(shared) > 20, "the collections overlap"
    assert all(holdings["east"][s].remote["judgement_id"] != holdings["west"][s].remote["judgement_id"] for s in shared)

    # West is re-scoped to URLs only and reconciled: it withdraws its FQDN verdicts, never east's.
    instance(folder, "west", tq, ctia, "B only URLs")
    code, report = run(cli, "west", "--reconcile")
    assert code == 0, report
    assert report["reconcile"]["removed"] == len(shared)
    holdings = check_every_held_verdict_is_live(ctia, folder)
    assert not set(holdings["west"]) & shared and shared <= set(holdings["east"])

    # East reconciles: nothing of its own was lost, so nothing needs repair.
    code, report = run(cli, "east", "--reconcile")
    assert code == 0, report
    assert report["reconcile"]["repaired"] == {"ctia": 0}
    assert report["reconcile"]["verified"] == {"ctia": len(holdings["east"])}

    # Another tool expires some of east's verdicts behind its back; east's next reconcile repairs them.
    victims = sorted(shared)[:7]
    for sid in victims:
        assert ctia.expire_out_of_band(holdings["east"][sid].remote["judgement_id"]) == 1
    code, report = run(cli, "east")
    assert code == 0 and report["sinks"]["ctia"]["accepted"] == 0  # an ordinary run cannot see it
    code, report = run(cli, "east", "--reconcile")
    assert code == 0, report
    assert report["reconcile"]["repaired"] == {"ctia": 7}
    assert report["sinks"]["ctia"]["notes"]["judgements"]["repaired"] == 7
    check_every_held_verdict_is_live(ctia, folder)


def test_state_reset_and_returns_end_with_one_live_judgement_and_never_exit_0_while_not_live(world, cli):
    tq, ctia, folder = world
    assert run(cli, "east")[0] == 0
    holdings = check_every_held_verdict_is_live(ctia, folder)
    ident, other = sorted(holdings["east"], key=int)[:2]

    # Expired -> (its judgement expired) -> state reset -> Active again.
    tq.update_indicator(int(ident), status_name="Expired")
    code, report = run(cli, "east")
    assert code == 0 and report["sinks"]["ctia"]["withdrawn"] == 1
    reset = cli("state", "reset", "-n", "east", "-c", ".", "--sink", "ctia", "--yes")
    assert reset.returncode == 0, reset.stderr
    tq.update_indicator(int(ident), status_name="Active")
    # A -> B -> A for another indicator, across the same reset.
    tq.update_indicator(int(other), manual_score=1)
    # While CTIA cannot say whether the judgements it answers "exists" for are live, the run is not a success.
    ctia.faults.fail_next(503, count=1000, path_prefix="/ctia/bulk")
    code, report = run(cli, "east")
    assert code == 3, "a verdict that could not be made live must not exit 0"
    assert report["sinks"]["ctia"]["deferred"] > 0
    ctia.faults.clear()
    code, report = run(cli, "east")
    assert code == 0, report
    assert report["sinks"]["ctia"]["notes"]["judgements"]["recovered"] >= 1
    tq.update_indicator(int(other), manual_score=9)
    assert run(cli, "east")[0] == 0
    holdings = check_every_held_verdict_is_live(ctia, folder)
    assert ident in holdings["east"] and other in holdings["east"]


def test_a_dead_ctia_is_given_up_on_after_three_batches_for_the_run(world, cli):
    tq, ctia, folder = world
    instance(folder, "east", tq, ctia, "A", batch_size=4)
    assert run(cli, "east")[0] == 0
    for ident in tq.collection_ids("A"):
        tq.update_indicator(ident, manual_score=3)
    ctia.faults.fail_next(503, count=100_000, path_prefix="/ctia/")
    ctia.app.calls.clear()
    started = time.monotonic()
    code, report = run(cli, "east")
    elapsed = time.monotonic() - started
    assert code == 3 and report["sinks"]["ctia"]["error_kind"] == "transient"
    assert "3 batches in a row" in report["sinks"]["ctia"]["error"]
    assert report["checkpoint_after"] == report["checkpoint_before"]
    imports = [c for c in ctia.calls if c == ("POST", "/ctia/bundle/import")]
    assert 3 <= len(imports) <= 3 * 5, f"{len(imports)} bundle requests for a dead CTIA"
    assert report["sinks"]["ctia"]["deferred"] >= 35
    ctia.faults.clear()
    code, report = run(cli, "east")
    assert code == 0 and report["sinks"]["ctia"]["deferred"] == 0
    check_every_held_verdict_is_live(ctia, folder)
    assert elapsed < 120
