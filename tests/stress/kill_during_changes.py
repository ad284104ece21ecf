"""Random-kill stress: many SIGKILLs while changed indicators are delivered, then two clean runs.

Run on demand (it takes a few minutes, so it is not part of ``make test``)::

    make stress                                   # or:
    .venv/bin/python tests/stress/kill_during_changes.py --rounds 10 --seed 1

What it does, through the real CLI against the ThreatQ and CTIA emulators:

1. an instance with ``batch_size = 50``; CTIA answers each bundle import
   0.25 s after storing it and each expiry after 0.05 s, so kills land
   between "created" and "recorded" often;
2. ``--first-kills`` runs of the first export, each killed (SIGKILL) at a
   random moment 0.25-1.8 s after it started talking to CTIA;
3. ``--rounds`` rounds: ``--changes`` indicators get a new score in ThreatQ,
   then a run that is killed the same way;
4. two clean runs: neither may reject, defer or fail in the CTIA sink, and
   the second must exit 0 (the first may exit 3 when it is the first to
   dead-letter a malformed ThreatQ indicator);
5. the checks: exactly one live judgement per live indicator, and the live
   set (indicator, observable, disposition, reason) and the feed equal to
   what a fresh instance exports from the same ThreatQ to an empty CTIA.

Prints one JSON line with the figures and exits 0 when every check holds.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from exportkit.config import write_config
from exportkit.demo import demo_config
from exportkit.emulation import Request, Response
from exportkit.threatq.emulator import ThreatQEmulator
from exportkit_ctia.emulator import CtiaEmulator


def instance_config(tq: ThreatQEmulator, ctia: CtiaEmulator, folder: Path) -> dict[str, Any]:
    config = demo_config(tq, ctia, folder)
    config["export"] = {"sinks": ["ctia"], "batch_size": 50}
    del config["sinks"]["stdout"]
    return config


def slow_ctia(ctia: CtiaEmulator, bundle_delay: float, expire_delay: float) -> None:
    """Answer bundle imports ``bundle_delay`` s after storing them, expiries after ``expire_delay`` s."""
    ctia.app.answer_delay = bundle_delay
    dispatch = ctia.app.dispatch

    def slowed(request: Request) -> Response:
        if request.method == "POST" and request.path.endswith("/expire"):
            time.sleep(expire_delay)
        return dispatch(request)

    ctia.app.dispatch = slowed  # type: ignore[method-assign]


def command(name: str) -> list[str]:
    return [sys.executable, "-m", "exportkit", "run", "-n", name, "-c", "."]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("EXPORTKIT_CONFIG", None)
    env.pop("EXPORTKIT_CRASH_AT", None)
    return env


def killed_run(folder: Path, ctia: CtiaEmulator, rng: random.Random) -> float | None:
    """Start a run and SIGKILL it 0.25-1.8 s after it first talks to CTIA.

    Counted from its first CTIA request rather than from the process start,
    so a slow interpreter start on a loaded machine does not eat the window.
    Returns the delay, or None when the run ended before it.
    """
    seen = len(ctia.calls)
    proc = subprocess.Popen(command("inst"), cwd=folder, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    while len(ctia.calls) == seen and proc.poll() is None:
        time.sleep(0.01)
    delay = rng.uniform(0.25, 1.8)
    try:
        proc.wait(timeout=delay)
        return None
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return delay


def clean_run(folder: Path, name: str = "inst") -> tuple[int, dict[str, Any]]:
    result = subprocess.run(command(name), cwd=folder, env=environment(), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    return result.returncode, json.loads((folder / f"{name}.report.json").read_text())


def live_view(ctia: CtiaEmulator) -> dict[str, list[tuple[str, str, str]]]:
    out: dict[str, list[tuple[str, str, str]]] = collections.defaultdict(list)
    for j in ctia.live_judgements():
        out[j["source_uri"]].append((j["observable"]["value"], j["disposition_name"], j["reason"]))
    return dict(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--indicators", type=int, default=3000, help="indicators in the ThreatQ emulator")
    parser.add_argument("--first-kills", type=int, default=10, help="kills during the first export")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of changes, each with one killed run")
    parser.add_argument("--changes", type=int, default=40, help="indicators changed per round")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="exportkit-stress-") as tmp, ThreatQEmulator(indicators=args.indicators, seed=args.seed) as tq, CtiaEmulator() as ctia:
        folder = Path(tmp)
        slow_ctia(ctia, 0.25, 0.05)
        write_config(folder / "inst.toml", instance_config(tq, ctia, folder))
        kills = 0
        for _ in range(args.first_kills):
            kills += killed_run(folder, ctia, rng) is not None
        candidates = tq.collection_ids("CTR Export")
        for _ in range(args.rounds):
            for ident in rng.sample(candidates, min(args.changes, len(candidates))):
                tq.update_indicator(ident, manual_score=round(rng.uniform(0, 10), 1))
            kills += killed_run(folder, ctia, rng) is not None
        clean = [clean_run(folder), clean_run(folder)]
        got = live_view(ctia)
        twins = {uri: js for uri, js in got.items() if len(js) > 1}
        with CtiaEmulator() as fresh:
            write_config(folder / "fresh.toml", instance_config(tq, fresh, folder))
            fresh_code, _ = clean_run(folder, "fresh")
            expected = live_view(fresh)
            feeds_equal = ctia.feed_view() == fresh.feed_view()
        result = {
            "kills": kills,
            "clean_exit_codes": [code for code, _ in clean],
            "fresh_exit_code": fresh_code,
            "live_indicators": len(got),
            "indicators_with_two_or_more_live_judgements": len(twins),
            "missing": len(set(expected) - set(got)),
            "extra": len(set(got) - set(expected)),
            "different": sum(1 for uri in set(got) & set(expected) if got[uri] != expected[uri]),
            "feed_equal": feeds_equal,
            "judgements_total": ctia.counts()["judgement"],
            "recovery_notes": clean[0][1]["sinks"]["ctia"].get("notes", {}).get("judgements", {}),
            "seconds": round(time.monotonic() - started, 1),
        }
    print(json.dumps(result))
    sinks = [report["sinks"]["ctia"] for _, report in clean]
    ok = (
        result["clean_exit_codes"][1] == 0
        and all(s["rejected"] == 0 and s["deferred"] == 0 and s["error"] is None for s in sinks)
        and not twins
        and result["missing"] == result["extra"] == result["different"] == 0
        and feeds_equal
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
