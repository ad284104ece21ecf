"""Judgements this sink expired while a holding still names them, so each is expired once.

CTIA appends the reason on every expiry, also of a judgement that has
expired already, and refuses a reason past 1024 characters: a judgement must
not be expired twice. Most expiries are followed by a state change that
forgets the judgement (a superseded one is replaced in the holding, a
withdrawn one's holding is dropped). The exception is a held record that can
no longer be sent (its value turned invalid, ...): it is skipped, so its
holding still names the judgement that was just expired. Such a judgement is
marked in the sink's store until the holding moves on (the record is sent
again and supersedes it, or it is withdrawn), and nothing expires it again
meanwhile.
"""

from __future__ import annotations

from exportkit.context import KeyValueStore

__all__ = ["mark", "is_marked", "unmark"]


def _key(judgement_id: str) -> str:
    return f"expired:{judgement_id}"


def mark(store: KeyValueStore, judgement_id: str) -> None:
    """Remember that ``judgement_id`` is expired (or queued to be) while still held."""
    store.set(_key(judgement_id), True)


def is_marked(store: KeyValueStore, judgement_id: str) -> bool:
    """Whether ``judgement_id`` was expired while still held."""
    return bool(store.get(_key(judgement_id), False))


def unmark(store: KeyValueStore, judgement_id: str) -> None:
    """Forget the mark: no holding names the judgement any more."""
    store.delete(_key(judgement_id))
