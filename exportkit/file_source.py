"""The ``file`` source: JSONL of canonical records, exactly what the stdout sink's jsonl writes.

For tests, replays and air-gapped transfers. Configure it with::

    [source]
    type = "file"
    path = "records.jsonl"      # relative paths start at the config folder

Each non-blank line is one :meth:`Indicator.to_dict` object. A line that is
not JSON or not a valid record becomes a :class:`~exportkit.sources.BadRecord`
naming the line number, and the run goes on. When one id appears on several
lines the last one wins, as it would in a log of changes.

Memory stays flat however large the file: the first pass writes only
(position, line number, byte offset) per record into a temporary SQLite
index on disk (private to the pull, deleted after it), which sorts them and
keeps the last line per id; the second pass reads records in that order by
seeking. Peak memory is the same at a million records as at a hundred
thousand (``make bench`` checks it).
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Generator, Iterator

import attrs

from exportkit.errors import SourceError
from exportkit.hookspecs import hookimpl
from exportkit.records import Indicator, parse_time
from exportkit.settings import setting
from exportkit.sources import BadRecord, PullItem, SourceType
from exportkit.jsontext import loads_json

__all__ = ["FileSettings", "FileSource", "SOURCE_TYPE", "exportkit_source_types"]


@attrs.frozen
class FileSettings:
    """The ``[source]`` table for ``type = "file"``."""

    type: str = setting("file", help='The source type: "file" reads JSONL records.', choices=("file",))
    path: str = setting(help="The JSONL file to read; relative to the config folder.", example="records.jsonl")
    name: str | None = setting(None, help="Source name to report; default: each record's own source field.")

    @property
    def scope(self) -> str:
        """What this source reads, as a stable string (the path as configured); see :attr:`exportkit.context.SinkContext.namespace`."""
        return f"file {self.path}"


class FileSource:
    """Reads a JSONL file of canonical records; see the module docstring."""

    def __init__(self, settings: FileSettings, *, config_dir: Path, logger: logging.Logger | logging.LoggerAdapter[Any] | None = None) -> None:
        path = Path(settings.path).expanduser()
        self.path = path if path.is_absolute() else Path(config_dir) / path
        self.name = settings.name or "file"
        self.total: int | None = None
        self._log = logger or logging.getLogger("exportkit.source")

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"source file {self.path} does not exist")

    def close(self) -> None:
        pass

    def check(self) -> list[str]:
        self.open()
        ids = sum(1 for _ in self.current_ids())
        return [f"file {self.path}: {ids} records"]

    def _scan(self) -> Iterator[tuple[int, int, bytes]]:
        """Yield (line number, byte offset, line) for each non-blank line."""
        try:
            fh = open(self.path, "rb")
        except OSError as exc:
            raise SourceError(f"cannot read source file {self.path}: {exc.strerror}") from None
        with fh:
            offset = 0
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    yield number, offset, line
                offset += len(line)

    def _parse(self, number: int, line: bytes) -> PullItem:
        try:
            data: Any = loads_json(line)  # nesting too deep is a ValueError here, not a RecursionError
        except ValueError as exc:
            return BadRecord(None, f"line {number}: not JSON: {exc}", line.decode("utf-8", "replace")[:2000])
        if not isinstance(data, dict):
            return BadRecord(None, f"line {number}: not a JSON object", data)
        source_id = str(data["source_id"]) if data.get("source_id") not in (None, "") else None
        try:
            return Indicator.from_dict(data)
        except (ValueError, TypeError, KeyError) as exc:
            return BadRecord(source_id, f"line {number}: invalid record: {exc}", data)

    def pull(self, since: datetime | None, until: datetime | None) -> Iterator[PullItem]:
        """Yield records with ``since <= updated_at < until`` sorted by position; bad lines as BadRecord."""
        bad: list[tuple[int, int]] = []
        with tempfile.TemporaryDirectory(prefix="exportkit-index-") as folder:
            index = _Index(Path(folder) / "index.sqlite")
            try:
                for number, offset, line in self._scan():
                    item = self._parse(number, line)
                    if isinstance(item, BadRecord):
                        if _in_window(item.raw, since, until):
                            bad.append((number, offset))
                        continue
                    index.add(item, number, offset)  # last line wins
                # Filter after deduplication: an older version inside the window must not
                # stand in for the current one outside it.
                self.total = index.count(since, until) + len(bad)
                with open(self.path, "rb") as fh:
                    for number, offset in bad:
                        fh.seek(offset)
                        yield self._parse(number, fh.readline())
                    rows = index.ordered(since, until)
                    try:
                        for number, offset in rows:
                            fh.seek(offset)
                            item = self._parse(number, fh.readline())
                            if isinstance(item, Indicator) and self.name != "file":
                                item = attrs.evolve(item, source=self.name)
                            yield item
                    finally:
                        rows.close()  # its cursor, while the index is still open (a pull left early)
            finally:
                index.close()

    def current_ids(self) -> Iterator[str]:
        seen: set[str] = set()
        for number, _offset, line in self._scan():
            item = self._parse(number, line)
            if isinstance(item, Indicator) and item.source_id not in seen:
                seen.add(item.source_id)
                yield item.source_id


def _sortable_time(value: datetime) -> str:
    """UTC, fixed width: sorts as text in time order (years 1000-9999)."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")


class _Index:
    """(id -> position, line, offset) on disk: the last line per id wins; read back in position order.

    Positions sort as :attr:`Indicator.position` does: ``updated_at``, then
    numeric ids by value before other ids as text.
    """

    def __init__(self, path: Path) -> None:
        # Used by one thread at a time, but a pull left early may be finalised by another.
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=OFF")
        self._conn.execute("PRAGMA synchronous=OFF")
        self._conn.execute(
            "CREATE TABLE idx (source_id TEXT PRIMARY KEY, ts TEXT NOT NULL, kind INTEGER NOT NULL, digits INTEGER NOT NULL, "
            "id TEXT NOT NULL, number INTEGER NOT NULL, offset INTEGER NOT NULL) WITHOUT ROWID"
        )
        self._pending: list[tuple[Any, ...]] = []
        self._conn.execute("BEGIN")

    def add(self, record: Indicator, number: int, offset: int) -> None:
        sid = record.source_id
        if sid.isdigit():  # numbers by value: fewer digits first, then digit by digit
            digits = sid.lstrip("0") or "0"
            row = (sid, _sortable_time(record.updated_at), 0, len(digits), digits, number, offset)
        else:
            row = (sid, _sortable_time(record.updated_at), 1, 0, sid, number, offset)
        self._pending.append(row)
        if len(self._pending) >= 10_000:
            self._flush()

    def _flush(self) -> None:
        self._conn.executemany("INSERT OR REPLACE INTO idx VALUES (?, ?, ?, ?, ?, ?, ?)", self._pending)
        self._pending = []

    @staticmethod
    def _window(since: datetime | None, until: datetime | None) -> tuple[str, list[str]]:
        clauses, params = [], []
        if since is not None:
            clauses.append("ts >= ?")
            params.append(_sortable_time(since))
        if until is not None:
            clauses.append("ts < ?")
            params.append(_sortable_time(until))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def count(self, since: datetime | None, until: datetime | None) -> int:
        self._flush()
        where, params = self._window(since, until)
        return int(self._conn.execute(f"SELECT COUNT(*) FROM idx{where}", params).fetchone()[0])

    def ordered(self, since: datetime | None, until: datetime | None) -> Generator[tuple[int, int], None, None]:
        """(line number, byte offset) of each record in the window, in position order."""
        self._flush()
        where, params = self._window(since, until)
        yield from self._conn.execute(f"SELECT number, offset FROM idx{where} ORDER BY ts, kind, digits, id, number", params)

    def close(self) -> None:
        self._conn.close()


def _in_window(raw: Any, since: datetime | None, until: datetime | None) -> bool:
    """Whether a bad line belongs to this pull: yes unless its own updated_at says otherwise."""
    if not isinstance(raw, dict):
        return True
    try:
        updated = parse_time(raw.get("updated_at"))
    except ValueError:
        return True
    if updated is None:
        return True
    return (since is None or updated >= since) and (until is None or updated < until)


def _factory(settings: FileSettings, *, config_dir: Path, logger: Any = None) -> FileSource:
    return FileSource(settings, config_dir=config_dir, logger=logger)


#: the ``file`` source type, registered through the ``file`` entry point
SOURCE_TYPE = SourceType("file", FileSettings, _factory)


@hookimpl
def exportkit_source_types() -> list[SourceType]:
    """This module is the ``file`` entry point: it provides the ``file`` source."""
    return [SOURCE_TYPE]
