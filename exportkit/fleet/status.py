"""``exportkit fleet status``: every instance of a config folder, its schedule, last run, next run, and who runs it now.

Read from where each instance keeps its state: the run history (with the
host of each run) and the advisory locks held right now in PostgreSQL; for
an instance still on SQLite, the history in its file (and no "running now":
that lock is a local ``flock``). One connection per PostgreSQL database.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from exportkit.config import list_instances
from exportkit.errors import ConfigError, ExportkitError
from exportkit.fleet.scheduled import instance_schedule
from exportkit.records import format_time
from exportkit.secrets import redact

__all__ = ["fleet_rows", "render_rows"]


def fleet_rows(config_dir: Path, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """One dict per instance: ``name, schedule, next_run, state, last_run, running`` (and ``problem`` when one)."""
    from exportkit.statelocation import describe_location, state_url

    now = now or datetime.now(timezone.utc)
    rows: list[dict[str, Any]] = []
    by_url: dict[str, list[dict[str, Any]]] = {}
    for name in list_instances(config_dir):
        row: dict[str, Any] = {"name": name, "schedule": None, "next_run": None, "state": None, "last_run": None, "running": None}
        rows.append(row)
        try:
            schedule = instance_schedule(config_dir, name)
            if schedule is not None:
                row["schedule"] = schedule.text
                row["next_run"] = format_time(schedule.next_after(now))
            url = state_url(config_dir, name)
            row["state"] = describe_location(config_dir, name, url)
        except (ConfigError, ExportkitError) as exc:
            row["problem"] = redact(str(exc).splitlines()[0])
            continue
        if url:
            by_url.setdefault(url, []).append(row)
        else:
            _sqlite_last_run(config_dir, row)
    for url, group in by_url.items():
        _postgres_rows(url, group)
    return rows


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    summary = run.get("summary") or {}
    sinks = summary.get("sinks") or {}
    return {
        "run_id": run.get("run_id"), "host": run.get("host"), "started": run.get("started"), "finished": run.get("finished"),
        "exit_code": run.get("exit_code"), "pulled": summary.get("pulled"),
        "accepted": sum((s.get("accepted") or 0) for s in sinks.values()) if sinks else None,
        "deferred": summary.get("deferred"), "dead_lettered": summary.get("dead_lettered"),
    }


def _sqlite_last_run(config_dir: Path, row: dict[str, Any]) -> None:
    from exportkit.state import State, state_path

    path = state_path(config_dir, row["name"])
    if not path.exists():
        return
    with State.open(path) as st:
        runs = st.runs(limit=1)
    if runs:
        row["last_run"] = _summary(runs[0])


def _postgres_rows(url: str, rows: list[dict[str, Any]]) -> None:
    from exportkit.postgres.connect import connect
    from exportkit.postgres.lock import lock_holders
    from exportkit.postgres.schema import schema_version

    try:
        conn = connect(url, purpose="fleet status")
    except ExportkitError as exc:
        for row in rows:
            row["problem"] = str(exc)
        return
    try:
        if schema_version(conn) == 0:
            return  # nothing has run there yet
        holders = lock_holders(conn)
        names = [row["name"] for row in rows]
        last = conn.execute(
            "SELECT DISTINCT ON (instance) instance, run_id, started, finished, exit_code, summary, host FROM exportkit.runs "
            "WHERE instance = ANY(%s) ORDER BY instance, started DESC, seq DESC",
            (names,),
        ).fetchall()
        runs = {r[0]: {"run_id": r[1], "started": r[2], "finished": r[3], "exit_code": r[4],
                       "summary": json.loads(r[5]) if r[5] else None, "host": r[6]} for r in last}
        for row in rows:
            if row["name"] in runs:
                row["last_run"] = _summary(runs[row["name"]])
            holder = holders.get(row["name"])
            if holder is not None:
                row["running"] = {"host": holder["host"], "pid": holder["pid"], "since": holder["since"]}
    finally:
        conn.close()


def render_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The lines ``exportkit fleet status`` prints, one block per instance."""
    if not rows:
        return ["no instances in this config folder"]
    lines = []
    for row in rows:
        head = f"{row['name']}: {row['schedule'] or 'not scheduled'}"
        if row["next_run"]:
            head += f", next run {row['next_run']}"
        lines.append(head)
        if row.get("problem"):
            lines.append(f"    PROBLEM: {row['problem']}")
        if row["state"]:
            lines.append(f"    state: {row['state']}")
        run = row["last_run"]
        if run is None:
            lines.append("    last run: never")
        else:
            code = run["exit_code"]
            ended = "still running or interrupted" if code is None else f"exit {code}"
            counts = ", ".join(f"{k} {run[k]}" for k in ("pulled", "accepted", "deferred", "dead_lettered") if run.get(k) is not None)
            lines.append(f"    last run: {run['started']} on {run.get('host') or 'this host'}, {ended}" + (f" ({counts})" if counts else ""))
        if row["running"]:
            running = row["running"]
            pid = f" pid {running['pid']}" if running.get("pid") else ""
            lines.append(f"    running now on {running['host']}{pid} since {running.get('since') or '?'}")
    return lines
