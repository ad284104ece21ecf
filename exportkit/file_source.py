"""The ``file`` source: JSONL of canonical records, exactly what the stdout sink's jsonl writes.

For tests, replays and air-gapped transfers. Configure it with::

    [source]
    type = "file"
    path = "records.jsonl"      # relative paths start at the config folder

Each non-blank line is one :meth:`Indicator.to_dict` object. A line that is
not JSON or not a valid record becomes a :class:`~exportkit.sources.BadRecord`
naming the line number, and the run goes on. When one id appears on several
lines the last one wins, as it would in a log of changes.

Memory stays small for large files: the first pass keeps only (position,
byte offset) per record, sorts those, and the second pass reads records in
order by seeking.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import attrs

from exportkit.errors import SourceError
from exportkit.records import Indicator, parse_time
from exportkit.settings import setting
from exportkit.sources import BadRecord, PullItem, SourceType
from exportkit.jsontext import loads_json

__all__ = ["FileSettings", "FileSource", "SOURCE_TYPE"]


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

    def __init__(self, settings: FileSettings, *, config_dir: Path, logger: logging.Logger | logging.LoggerAdapter | None = None) -> None:
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
        index: dict[str, tuple[tuple, int, int]] = {}
        bad: list[tuple[int, int]] = []
        for number, offset, line in self._scan():
            item = self._parse(number, line)
            if isinstance(item, BadRecord):
                if _in_window(item.raw, since, until):
                    bad.append((number, offset))
                continue
            index[item.source_id] = (item.position, number, offset)  # last line wins
        # Filter after deduplication: an older version inside the window must not
        # stand in for the current one outside it.
        index = {
            sid: entry
            for sid, entry in index.items()
            if (since is None or entry[0][0] >= since) and (until is None or entry[0][0] < until)
        }
        self.total = len(index) + len(bad)
        with open(self.path, "rb") as fh:
            for number, offset in bad:
                fh.seek(offset)
                yield self._parse(number, fh.readline())
            for _position, number, offset in sorted(index.values(), key=lambda entry: entry[0]):
                fh.seek(offset)
                item = self._parse(number, fh.readline())
                if isinstance(item, Indicator) and self.name != "file":
                    item = attrs.evolve(item, source=self.name)
                yield item

    def current_ids(self) -> Iterator[str]:
        seen: set[str] = set()
        for number, _offset, line in self._scan():
            item = self._parse(number, line)
            if isinstance(item, Indicator) and item.source_id not in seen:
                seen.add(item.source_id)
                yield item.source_id


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


SOURCE_TYPE = SourceType("file", FileSettings, _factory)
