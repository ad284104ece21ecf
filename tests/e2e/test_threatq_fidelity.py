"""The real ``exportkit run`` against a ThreatQ emulator that behaves like the real service.

Page cap, ``fields`` required, child-row changes that move only
``touched_at``, a clock ahead of or behind this host's, an appliance in
another time zone: each change made in ThreatQ before a run is exported by
that run, none later, none twice, and nothing is withdrawn that was not
really removed.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from exportkit.config import write_config
from exportkit.demo import demo_config
from exportkit.threatq.emulator import ThreatQEmulator
from exportkit_ctia.emulator import CtiaEmulator

pytestmark = pytest.mark.integration

COLLECTION = "CTR Export"


def make_world(folder: Path, source: dict[str, Any] | None = None, **behaviour: Any):
    behaviour.setdefault("page_cap", 100)  # the real service's behaviours, with a cap the collection exceeds twice
    tq = ThreatQEmulator(indicators=900, seed=13, realistic=True, **behaviour).start()
    ctia = CtiaEmulator(org_rate_limit=8000).start()  # CTIA as Cisco runs it too
    config = demo_config(tq, ctia, folder)
    config["export"]["sinks"] = ["ctia"]
    del config["sinks"]["stdout"]
    config["source"].update(source or {})
    write_config(folder / "inst.toml", config)
    return tq, ctia


@pytest.fixture
def world(tmp_path: Path):
    tq, ctia = make_world(tmp_path)
    try:
        yield tq, ctia
    finally:
        tq.stop()
        ctia.stop()


def run(cli, *extra: str) -> tuple[int, dict[str, Any]]:
    result = cli("run", "-n", "inst", "-c", ".", *extra)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads((cli.folder / "inst.report.json").read_text())


def live(ctia: CtiaEmulator) -> dict[int, list[dict]]:
    """Live judgements by the ThreatQ indicator id they came from."""
    out: dict[int, list[dict]] = collections.defaultdict(list)
    for judgement in ctia.live_judgements():
        out[int(urlsplit(judgement["source_uri"]).path.split("/")[2])].append(judgement)
    return out


def exported_ids(tq: ThreatQEmulator, ctia: CtiaEmulator) -> list[int]:
    """Indicators of the collection with a live judgement, in collection order."""
    held = live(ctia)
    return [i for i in tq.collection_ids(COLLECTION) if i in held]


def test_a_capped_server_is_read_to_the_end_and_reconcile_withdraws_nothing(world, cli):
    tq, ctia = world
    assert len(tq.collection_ids(COLLECTION)) > 2 * tq.behaviour.page_cap  # more than two capped pages
    code, report = run(cli)
    assert code in (0, 3), report
    assert report["pulled"] + report["bad"] == len(tq.collection_ids(COLLECTION))
    before = live(ctia)
    assert len(before) == report["sinks"]["ctia"]["accepted"] > tq.behaviour.page_cap
    code, report = run(cli, "--reconcile")
    assert report["reconcile"]["ran"] and report["reconcile"]["removed"] == 0
    assert report["reconcile"]["in_collection"] == len(tq.collection_ids(COLLECTION))
    assert {k: [j["id"] for j in v] for k, v in live(ctia).items()} == {k: [j["id"] for j in v] for k, v in before.items()}


def test_a_reconcile_that_reads_short_refuses_to_withdraw(world, cli):
    tq, ctia = world
    run(cli)
    before = {k: [j["id"] for j in v] for k, v in live(ctia).items()}
    total = len(tq.collection_ids(COLLECTION))
    # Call 1 is the (empty) incremental pull, 2 the reconcile's first page; the next requests (its second
    # page and the two pages asked ahead with it, in whatever order they arrive) come back empty.
    tq.fail_on_call(3, status=200, body={"data": [], "total": total, "limit": 100, "offset": 100}, count=3)
    code, report = run(cli, "--reconcile")
    assert code == 3
    assert report["reconcile"]["ran"] is False
    assert report["reconcile"]["refused"] == f"read 100 ids of the {total} that ThreatQ says Data Collection {COLLECTION!r} holds"
    assert {k: [j["id"] for j in v] for k, v in live(ctia).items()} == before  # nothing withdrawn
    tq.app.faults.clear()
    code, report = run(cli, "--reconcile")  # the server behaves again: a normal reconcile
    assert code in (0, 3) and report["reconcile"]["removed"] == 0


def test_a_source_turning_red_is_exported_and_touches_cost_little(world, cli):
    tq, ctia = world
    run(cli)
    held = live(ctia)
    candidates = [i for i in exported_ids(tq, ctia)
                  if held[i][0]["tlp"] == "amber" and tq.indicator(i)["sources"] and 14 not in tq.indicator(i)["sources"]]
    target, *others = candidates
    source_id = tq.indicator(target)["sources"][0]
    # Child-row changes that change nothing a sink sends (the same TLP again): only touched_at moves.
    touched = others[:80]
    assert len(touched) >= 50
    for ident in touched:
        for src in tq.indicator(ident)["sources"]:
            tq.update_indicator(ident, source_tlp={src: (tq.indicator(ident).get("source_tlp") or {}).get(src, _tlp_of(src))})
    time.sleep(1.1)  # a new second, so the change is after every earlier stamp
    tq.set_source_tlp(target, source_id, "red")
    assert tq.indicator(target)["updated_at"] < tq.indicator(target)["touched_at"]  # only touched_at moved
    tq_calls, ctia_calls = len(tq.app.calls), len(ctia.calls)
    code, report = run(cli)
    sink = report["sinks"]["ctia"]
    assert sink["accepted"] == 1, sink  # only the real change is sent
    # The touches were read (one more ThreatQ page or so) and cost nothing in CTIA: not sent again.
    assert report["pulled"] >= len(touched) + 1 and sink["unchanged"] >= len(touched)
    pages = [c for c in tq.app.calls[tq_calls:] if c[1] == "/api/indicators/query"]
    assert len(pages) <= 2, pages
    ctia_requests = [c for c in ctia.calls[ctia_calls:] if not c[1].startswith("/iroh/")]
    assert len(ctia_requests) <= 3, ctia_requests  # one bundle (the red judgement), one expiry of the old one
    (now,) = live(ctia)[target]
    assert now["tlp"] == "red" and now["id"] != held[target][0]["id"]
    code, report = run(cli)
    assert report["sinks"]["ctia"]["accepted"] == 0


def _tlp_of(source_id: int) -> str | None:
    from exportkit.threatq.emulator.data import SOURCES

    name = next(s[4] for s in SOURCES if s[0] == source_id)
    return None if name is None else ("white" if name == "CLEAR" else name.lower())


def test_changes_are_exported_by_the_next_run_whatever_threatq_clock_says(world, cli):
    tq, ctia = world
    run(cli)
    order = [i for i in exported_ids(tq, ctia) if live(ctia)[i][0]["disposition_name"] == "Malicious"]

    def change_and_run(ident: int, offset_s: int) -> dict[str, Any]:
        tq.configure(clock_offset=offset_s)
        old = live(ctia)[ident][0]["id"]
        tq.update_indicator(ident, description=f"changed with the clock at {offset_s:+d}s")
        code, report = run(cli)
        assert code in (0, 3), report
        assert report["sinks"]["ctia"]["accepted"] == 1, f"the change at {offset_s:+d}s was not exported by this run"
        (now,) = live(ctia)[ident]
        assert now["id"] != old
        assert abs(report["window"]["source_clock_offset_s"] - offset_s) <= 2
        again_code, again = run(cli)
        assert again["sinks"]["ctia"]["accepted"] == 0, "exported twice"
        return report

    change_and_run(order[0], 120)  # ThreatQ two minutes ahead
    change_and_run(order[1], -180)  # then set back three minutes (the 5-minute overlap covers it)
    change_and_run(order[2], 0)
    assert all(len(js) == 1 for js in live(ctia).values()), "one live judgement per indicator"


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/Chicago"])
def test_an_appliance_in_another_time_zone(tmp_path, cli, zone: str):
    # East of UTC, times read as UTC would lie hours in the future and a change would wait hours.
    tq, ctia = make_world(tmp_path, source={"timezone": zone}, timezone=zone)
    try:
        code, report = run(cli)
        assert code in (0, 3) and report["sinks"]["ctia"]["accepted"] > 100
        target = exported_ids(tq, ctia)[0]
        time.sleep(1.1)
        tq.update_indicator(target, manual_score=10)
        code, report = run(cli)
        assert report["sinks"]["ctia"]["accepted"] == 1
        assert abs(report["window"]["source_clock_offset_s"]) <= 2  # the Date header is zone-free
    finally:
        tq.stop()
        ctia.stop()
