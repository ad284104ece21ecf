"""Each sink's private key-value store in the instance state, and when its writes commit.

* :meth:`SinkStore.set` and :meth:`SinkStore.delete` are kept pending and
  committed with the batch they belong to: the engine writes them in the
  same transaction as that batch's holdings and checkpoint (writes made in
  ``exportkit_open`` go with the first batch, writes made in
  ``exportkit_close`` at the end of the run). A crash before that commit
  loses them exactly as it loses the batch's holdings, so the two always agree.
* :meth:`SinkStore.set_durable` commits before it returns, on its own. Use
  it for an *intent* that must survive a crash after a request went out but
  before the batch commits; write the intent, then send.

Reads see the sink's own pending writes. A run that fails drops the pending
writes of the batch it could not commit. In a dry run, :class:`DryRunStore`
keeps every write in memory for that run only.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Iterable

from exportkit import storedjson

if TYPE_CHECKING:
    from exportkit.state import State

__all__ = ["SinkStore", "DryRunStore"]


class SinkStore:
    """One sink's private key-value store; implements :class:`exportkit.context.KeyValueStore`."""

    def __init__(self, state: State, sink: str) -> None:
        self._state = state
        self.sink = sink
        self._pending: dict[str, str | None] = {}  # key -> JSON text, None for a delete
        self._lock = threading.Lock()

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            if key in self._pending:
                text = self._pending[key]
                return default if text is None else storedjson.loads(text)
        stored = self._state.read_kv(self.sink, key)
        return default if stored is None else storedjson.loads(stored)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Values of several keys in one read (absent keys are left out); pending writes win."""
        wanted = list(keys)
        with self._lock:
            pending = {k: self._pending[k] for k in wanted if k in self._pending}
        texts = self._state.read_kv_many(self.sink, [k for k in wanted if k not in pending])
        texts.update((k, v) for k, v in pending.items() if v is not None)
        return {k: storedjson.loads(v) for k, v in texts.items()}

    def set(self, key: str, value: Any) -> None:
        text = storedjson.dumps(value)  # a value the state cannot hold fails here, in the sink's call
        with self._lock:
            self._pending[key] = text

    def delete(self, key: str) -> None:
        with self._lock:
            self._pending[key] = None

    def set_durable(self, key: str, value: Any) -> None:
        """Store ``value`` and commit it now, in a transaction of its own (waits while a batch commits)."""
        text = storedjson.dumps(value)
        with self._state.transaction():
            self._state.write_kv(self.sink, {key: text})
        with self._lock:
            self._pending.pop(key, None)

    def flush(self) -> None:
        """Write the pending writes; the caller's transaction commits them."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if pending:
            self._state.write_kv(self.sink, pending)

    def discard(self) -> None:
        """Forget the pending writes (their batch did not commit)."""
        with self._lock:
            self._pending.clear()


class DryRunStore:
    """A sink store for dry runs: reads the real store, keeps writes in memory only."""

    def __init__(self, real: SinkStore) -> None:
        self._real = real
        self._local: dict[str, Any] = {}
        self._deleted: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._local:
            return self._local[key]
        if key in self._deleted:
            return default
        return self._real.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._local[key] = value
        self._deleted.discard(key)

    def set_durable(self, key: str, value: Any) -> None:
        self.set(key, value)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        wanted = list(keys)
        out = self._real.get_many(k for k in wanted if k not in self._local and k not in self._deleted)
        out.update((k, self._local[k]) for k in wanted if k in self._local)
        return out

    def delete(self, key: str) -> None:
        self._local.pop(key, None)
        self._deleted.add(key)
