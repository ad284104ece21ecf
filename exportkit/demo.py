"""``exportkit demo``: the whole job on loopback, from a fresh clone, in well under a minute.

Starts the ThreatQ emulator (seeded with a realistic collection) and the CTIA
emulator on free 127.0.0.1 ports, writes a throw-away config folder with an
instance ``demo`` (ThreatQ -> ctia with a feed, and stdout into a file),
runs it, shows what arrived in CTIA, and runs it again to show that nothing
is sent twice. With ``keep=True`` the emulators stay up and the exact
``exportkit run`` command to try by hand is printed.

The demo is a showcase of the distributions shipped together (core, ctia,
stdout); the engine itself knows no sink. It imports the CTIA plugin lazily
and says how to install it when it is missing.
"""

from __future__ import annotations

import collections
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from exportkit.config import load_instance, write_config
from exportkit.engine import Progress, RunOptions, run_instance
from exportkit.errors import ExportkitError
from exportkit.plugins import discover

__all__ = ["run_demo", "DEMO_COLLECTION", "DEMO_FEED"]

DEMO_COLLECTION = "CTR Export"
DEMO_FEED = "ThreatQ Demo Feed"
DEMO_INSTANCE = "demo"


#: requests per rolling hour Cisco allows an organisation; the demo's CTIA emulator enforces it
CISCO_ORG_RATE_LIMIT = 8000


def _ctia_emulator() -> Any:
    try:
        from exportkit_ctia.emulator import CtiaEmulator
    except ImportError:
        raise ExportkitError("the demo needs the CTIA plugin: pip install ./plugins/ctia from the source tree (make demo does this)") from None
    return CtiaEmulator


def demo_config(tq: Any, ctia: Any, folder: Path) -> dict[str, Any]:
    """The ``demo`` instance: ThreatQ emulator -> ctia (with feed) + stdout into a file."""
    creds = tq.credentials
    return {
        "source": {
            "type": "threatq",
            "host": tq.url,
            "client_id": creds.client_id,
            "username": creds.username,
            # A literal is fine here: the file is 0600 and the value is the emulator's test password.
            "password": creds.password,
            "collection": DEMO_COLLECTION,
            "link_host": "threatq.demo.example",
        },
        "export": {"sinks": ["ctia", "stdout"], "batch_size": 500},
        "sinks": {
            "ctia": {**ctia.sink_settings(), "feed": DEMO_FEED, "link_host": "threatq.demo.example"},
            "stdout": {"format": "jsonl", "path": str(folder / "records.jsonl")},
        },
    }


def run_demo(
    *,
    indicators: int = 3000,
    seed: int = 7,
    folder: Path | None = None,
    keep: bool = False,
    echo: Callable[[str], None] = print,
    progress: Callable[[Progress], None] | None = None,
    wait: Callable[[], None] | None = None,
) -> int:
    """Run the demo; returns the exit code (0 when both runs behaved as they should)."""
    from exportkit.threatq.emulator import ThreatQEmulator

    folder = Path(folder or tempfile.mkdtemp(prefix="exportkit-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    echo(f"Starting the ThreatQ emulator ({indicators} indicators) and the CTIA emulator on 127.0.0.1 ...")
    # Both emulators behave like the real services: ThreatQ with a silent page cap, fields required and
    # touched_at-only child changes; CTIA with the organisation's rate limit.
    with ThreatQEmulator(indicators=indicators, seed=seed, realistic=True) as tq, \
            _ctia_emulator()(org_rate_limit=CISCO_ORG_RATE_LIMIT) as ctia:
        echo(f"  ThreatQ: {tq.url}    CTIA: {ctia.url}")
        config_file = write_config(folder / f"{DEMO_INSTANCE}.toml", demo_config(tq, ctia, folder))
        echo(f"  config:  {config_file}")
        registry = discover()
        config = load_instance(folder, DEMO_INSTANCE, registry.sink_types, unavailable_sinks=registry.unavailable)

        echo(f"\nFirst run: exporting the '{DEMO_COLLECTION}' collection to CTIA and to {folder / 'records.jsonl'}")
        first = run_instance(config, registry, RunOptions(progress=progress), report_dir=folder)
        echo(first.summary_text())
        if first.exit_code == 3 and first.bad:
            echo(
                f"  (PARTIAL is expected here: the seeded collection holds {first.bad} malformed indicators on"
                f" purpose; they are dead-lettered with their reasons, see"
                f" `exportkit dlq show -n {DEMO_INSTANCE} -c {shlex.quote(str(folder))}`)"
            )
        _show_ctia(ctia, first.as_dict(), echo)

        echo("\nSecond run: nothing changed in ThreatQ, so nothing is sent again")
        second = run_instance(config, registry, RunOptions(), report_dir=folder)
        echo(second.summary_text())
        ok = first.exit_code in (0, 3) and second.exit_code in (0, 3) and second.sinks["ctia"]["accepted"] == 0
        echo(f"\nDone in {time.monotonic() - started:.1f}s. Config, state, log and reports are in {folder}")
        if keep:
            command = f"exportkit run -n {DEMO_INSTANCE} -c {shlex.quote(str(folder))} -ll {shlex.quote(str(folder))} -v 2"
            echo("\nThe emulators keep running; try by hand in another terminal:")
            echo(f"  {command}")
            echo(f"  exportkit check -n {DEMO_INSTANCE} -c {shlex.quote(str(folder))}")
            echo(f"  exportkit state show -n {DEMO_INSTANCE} -c {shlex.quote(str(folder))}")
            first_id = tq.collection_ids(DEMO_COLLECTION)[0]
            echo("Change an indicator in ThreatQ (then run again; docs/emulators.md lists the other controls):")
            echo(
                f"  curl -s -X POST -H 'X-Emulator-Token: {tq.control_token}' {tq.url}/_control/indicators/{first_id} "
                f"-d '{{\"status_name\": \"Whitelisted\"}}'"
            )
            echo("Press Ctrl-C to stop them.")
            (wait or _wait_forever)()
    return 0 if ok else 1


def _show_ctia(ctia: Any, report: dict[str, Any], echo: Callable[[str], None]) -> None:
    live = ctia.live_judgements()
    by_type = collections.Counter(j["observable"]["type"] for j in live)
    by_disposition = collections.Counter(j["disposition_name"] for j in live)
    echo(f"\nIn CTIA now: {len(live)} live judgements")
    echo("  by observable type: " + ", ".join(f"{t} {n}" for t, n in by_type.most_common()))
    echo("  by disposition:     " + ", ".join(f"{d} {n}" for d, n in by_disposition.most_common()))
    reasons = report["sinks"]["ctia"].get("reasons") or {}
    if reasons:
        echo("  skipped, and why:")
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
            echo(f"    {count:5d}  {reason}")
    feeds = ctia.feeds()
    if feeds:
        view = ctia.feed_view()
        echo(f"  feed '{DEMO_FEED}': {len(view)} observables; first lines of its view:")
        for line in view[:5]:
            echo(f"    {line}")
        notes = report["sinks"]["ctia"].get("notes") or {}
        if notes.get("feed_url"):
            echo(f"  feed URL: {notes['feed_url']}")


def _wait_forever() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
