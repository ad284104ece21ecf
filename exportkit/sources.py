"""Sources: where records come from, and the registry of source types.

A source yields :class:`~exportkit.records.Indicator` records sorted by
``(updated_at, id)`` (:attr:`~exportkit.records.Indicator.position`), or
:class:`BadRecord` for an item it could not normalise; the engine
dead-letters those and goes on.

Source types are plugins, found like sinks: an entry point of the
``exportkit`` group whose object implements ``exportkit_source_types``. The
core registers its two that way: ``threatq`` (the main source,
:mod:`exportkit.threatq.source`) and ``file`` (JSONL of canonical records,
:mod:`exportkit.file_source`).
"""

from __future__ import annotations

import functools
import os
from datetime import datetime
from typing import Any, Callable, Iterator, Mapping, Protocol

import attrs

from exportkit.errors import SourceError
from exportkit.records import Indicator

__all__ = ["BadRecord", "IncompleteRead", "Source", "SourceType", "source_types", "PullItem"]


class IncompleteRead(SourceError):
    """:meth:`Source.current_ids` could not read every id the source holds.

    Raised after the ids that were read; the engine then withdraws nothing
    (an id it did not read is not an id that was removed) and reports it.

    :param read: how many distinct ids were read.
    :param total: how many the source says it holds.
    """

    def __init__(self, message: str, *, read: int, total: int) -> None:
        super().__init__(message)
        self.read = read
        self.total = total


@attrs.frozen
class BadRecord:
    """An item the source could not turn into a record.

    :param source_id: its id in the source, when it could be read.
    :param reason: what is wrong, for the dead-letter queue.
    :param raw: the item as received (JSON-serialisable, secrets never included).
    """

    source_id: str | None
    reason: str
    raw: Any = None


PullItem = Indicator | BadRecord


class Source(Protocol):
    """What the engine needs from a source.

    :ivar name: the source's display name (also :attr:`Indicator.source`).
    :ivar total: how many items the current pull will yield, once known (for progress), else ``None``.

    A source whose times come from a server's clock may also offer
    ``now() -> datetime | None``: that clock (never earlier than it). The engine
    then ends the pull window there instead of at this host's time.
    """

    name: str
    total: int | None

    def open(self) -> None:
        """Connect and check credentials; raise :class:`~exportkit.errors.SourceError` subclasses."""

    def pull(self, since: datetime | None, until: datetime | None) -> Iterator[PullItem]:
        """Yield items with ``since <= updated_at < until`` (``None``: unbounded), sorted by position.

        An item changed while the pull runs must be yielded by this pull or
        be visible to the next pull that starts at the same ``since``.
        """

    def current_ids(self) -> Iterator[str]:
        """Yield the id of every item in the source now (for reconcile passes).

        :raises IncompleteRead: (after the ids read) fewer ids could be read than the source holds.
        """

    def check(self) -> list[str]:
        """Check reachability and credentials for ``exportkit check``; return lines describing what was found."""

    def close(self) -> None:
        """Release connections."""


@attrs.frozen
class SourceType:
    """A kind of source.

    :param name: the value of ``source.type``.
    :param settings_class: settings class for the ``[source]`` table (it declares ``type`` too).
    :param factory: ``factory(settings, *, config_dir, logger) -> Source``.
    """

    name: str
    settings_class: type
    factory: Callable[..., Source]


def source_types() -> dict[str, SourceType]:
    """The source types every installed plugin provides, by name.

    Discovers plugins once per process and ``EXPORTKIT_DISABLE_PLUGINS``
    value; prefer :attr:`exportkit.plugins.PluginRegistry.source_types` when a
    registry is at hand.
    """
    return dict(_discovered(os.environ.get("EXPORTKIT_DISABLE_PLUGINS", "")))


@functools.lru_cache(maxsize=4)
def _discovered(disabled: str) -> Mapping[str, SourceType]:
    from exportkit.plugins import discover

    return discover(disabled=[n.strip() for n in disabled.split(",") if n.strip()]).source_types
