"""Where a run is, for a progress line (the CLI draws it; a library caller may ignore it)."""

from __future__ import annotations

import attrs

__all__ = ["Progress"]


@attrs.define
class Progress:
    """Where a run is: in stage ``pull``, records pulled so far and, when the source knows, in total;
    in stage ``reconcile``, ids of the collection read so far."""

    stage: str
    done: int
    total: int | None
