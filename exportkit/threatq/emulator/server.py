""":class:`ThreatQEmulator`: a fake ThreatQ on 127.0.0.1 with a seeded data set and control methods.

Example::

    with ThreatQEmulator(indicators=5000, seed=7) as tq:
        creds = tq.credentials          # username, password, client_id, client_secret
        client = ThreatQClient(tq.url, client_id=creds.client_id, ...)
        tq.update_indicator(1003, status_name="Active")   # bumps updated_at
        tq.fail_on_call(3)              # the 3rd indicators query from now answers 500
        tq.expire_tokens()              # the next call gets a 401
        tq.configure(page_cap=300, clock_offset=120)   # behave like a capped appliance 2 min ahead

``ThreatQEmulator(..., realistic=True)`` turns on the behaviours of the real
service (:data:`~.behaviour.REALISTIC`): a silent page-size cap,
``attributes``/``sources`` only through ``fields``, and child-row changes
that move ``touched_at`` only.

Every control method also exists over HTTP under ``/_control/`` (see :mod:`.app`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

import attrs

from exportkit.emulation import EmulatorServer, ServedEmulator
from exportkit.threatq.emulator.app import ThreatQApp
from exportkit.threatq.emulator.behaviour import REALISTIC, Behaviour
from exportkit.threatq.emulator.data import COLLECTIONS, fmt, generate
from exportkit.threatq.emulator.store import IndicatorStore, utcnow
from exportkit.threatq.emulator.tokens import Credentials, TokenAuthority

__all__ = ["ThreatQEmulator", "Credentials", "Behaviour", "REALISTIC"]


class ThreatQEmulator(ServedEmulator):
    """A ThreatQ emulator with its own data, tokens and faults.

    :param indicators: how many indicators to generate.
    :param seed: the data set's seed (same seed and base time, same data).
    :param credentials: the accepted user and OAuth client (defaults: :class:`Credentials`).
    :param token_lifetime: seconds an access token lives.
    :param port: the port to listen on (0: a free one).
    :param tls: ``(certificate file, key file)`` to serve HTTPS, as appliances do.
    :param base_time: the newest generated ``updated_at`` (default: one hour ago, whole minute).
    :param collection_json: serve a collection's ``json`` as ``"string"``, ``"object"`` or ``"mixed"`` (by id).
    :param now: this host's clock (aware UTC); the appliance's clock is it plus
        :attr:`Behaviour.clock_offset`, and stamps changes and the ``Date`` header.
    :param realistic: start with :data:`REALISTIC` behaviours on.
    :param behaviour: further :class:`Behaviour` fields (override ``realistic``).
    :param latency: seconds added before every answer (a WAN); clearing faults comes back to it.
    """

    def __init__(
        self,
        indicators: int = 2000,
        seed: int = 1,
        *,
        credentials: Credentials | None = None,
        token_lifetime: float = 3600.0,
        port: int = 0,
        tls: tuple[str, str] | None = None,
        base_time: datetime | None = None,
        collection_json: str = "mixed",
        now: Callable[[], datetime] = utcnow,
        latency: float = 0.0,
        realistic: bool = False,
        **behaviour: Any,
    ) -> None:
        if collection_json not in ("string", "object", "mixed"):
            raise ValueError("collection_json must be string, object or mixed")
        self.behaviour = Behaviour()
        self.behaviour.configure({**(REALISTIC if realistic else {}), **behaviour})
        self._host_now = now
        base = base_time or (now() - timedelta(hours=1)).replace(second=0, microsecond=0)
        self.base_time = base
        self.credentials = credentials or Credentials()
        self.tokens = TokenAuthority(self.credentials, token_lifetime)
        self.store = IndicatorStore(generate(indicators, seed, base=base), now=self.now, behaviour=self.behaviour)
        self.collection_json = collection_json
        self.empty_pages = 0
        self._collections: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        for name, query in COLLECTIONS.items():
            self.add_collection(name, query)
        self.app = ThreatQApp(self, latency=latency)
        self.faults = self.app.faults
        self.server = EmulatorServer(self.app, port=port, tls=tls)

    def now(self) -> datetime:
        """The appliance's clock: this host's plus :attr:`Behaviour.clock_offset`."""
        return self._host_now() + timedelta(seconds=self.behaviour.clock_offset)

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Switch behaviours at run time (:class:`Behaviour` fields); returns them all.

        :raises KeyError: an unknown behaviour. :raises ValueError: a bad value.
        """
        return self.behaviour.configure(changes)

    # -- collections -------------------------------------------------------------------

    def add_collection(self, name: str, api_query: Mapping[str, Any]) -> dict[str, Any]:
        """Add a Data Collection (saved search) and return its entry as served."""
        with self._lock:
            ident = 7 + len(self._collections)
            entry = {
                "id": ident, "name": name, "hash": hashlib.md5(f"collection-{ident}-{name}".encode()).hexdigest(),
                "api_query": {"criteria": dict(api_query.get("criteria") or {}), "filters": dict(api_query.get("filters") or {})},
                "created_at": fmt(self.base_time), "updated_at": fmt(self.base_time),
            }
            self._collections.append(entry)
        return self._served(entry)

    def _served(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        doc = {"ui_query": {"name": entry["name"]}, "api_query": entry["api_query"]}
        as_string = self.collection_json == "string" or (self.collection_json == "mixed" and entry["id"] % 2 == 0)
        out = {k: v for k, v in entry.items() if k != "api_query"}
        out["json"] = json.dumps(doc) if as_string else doc
        return out

    def search_entries(self) -> list[dict[str, Any]]:
        """The saved searches as ``GET /api/search/query`` serves them."""
        with self._lock:
            return [self._served(e) for e in self._collections]

    def collection_by_hash(self, key: str) -> dict[str, Any] | None:
        """A collection by its ``hash`` or numeric ``id`` (the hash endpoint accepts both)."""
        with self._lock:
            return next((e for e in self._collections if key in (e["hash"], str(e["id"]))), None)

    def collection_ids(self, name: str, *, since: str | None = None, until: str | None = None, by: str = "touched_at") -> list[int]:
        """Ids in collection ``name`` now, in ``(by, id)`` order, optionally within ``since <= by < until``.

        ``by`` is ``touched_at`` (the exporter's window) or ``updated_at``;
        ``since`` and ``until`` are UTC.
        """
        with self._lock:
            entry = next(e for e in self._collections if e["name"] == name)
        q = entry["api_query"]
        window: dict[str, str] = {}
        if since:
            window["+gte"] = since + "+00:00"  # UTC, whatever the appliance's zone
        if until:
            window["+lt"] = until + "+00:00"
        members: list[Any] = [q["criteria"], q["filters"]] + ([{by: window}] if window else [])
        keys, win = self.store.matching_keys({"+and": members}, by)
        start, stop = self.store.window_slice(keys, win)
        return [i for _, i in keys[start:stop]]

    # -- indicators --------------------------------------------------------------------

    def add_indicator(self, value: str, type_name: str, status_name: str = "Active", **fields: Any) -> dict[str, Any]:
        """Add an indicator (``updated_at`` now unless given); returns its internal record."""
        return self.store.add(value, type_name, status_name, **fields)

    def update_indicator(self, ident: int, *, updated_at: str | None = None, **changes: Any) -> dict[str, Any]:
        """Change an indicator; ``updated_at`` moves to now (or to ``updated_at``).

        :raises ValueError: a field that cannot change (the message lists those that can).
        """
        return self.store.update(ident, changes, updated_at=updated_at)

    def touch(self, ids: list[int], at: str | None = None) -> None:
        """Give many indicators the same ``updated_at`` and ``touched_at`` (now or ``at``), like a feed import does."""
        stamp = at or fmt(self.now())
        for ident in ids:
            self.store.update(ident, {}, updated_at=stamp)

    def remove_indicator(self, ident: int) -> None:
        """Delete an indicator (KeyError when there is none)."""
        self.store.remove(ident)

    def set_source_tlp(self, ident: int, source_id: int, tlp: str | None) -> dict[str, Any]:
        """Give one indicator's link to a source its own TLP (``red``..``white``, ``None``: none).

        A change to a child row: with :attr:`Behaviour.touch_only_children` only
        ``touched_at`` moves.
        """
        return self.store.update(ident, {"source_tlp": {source_id: tlp}})

    def indicator(self, ident: int) -> dict[str, Any] | None:
        """The internal record of one indicator, or ``None``."""
        return self.store.get(ident)

    # -- tokens and faults -------------------------------------------------------------

    def expire_tokens(self) -> None:
        """Every access token issued so far is expired from now on (the next API call gets 401)."""
        self.tokens.expire_all()

    def revoke_tokens(self) -> None:
        """Forget every access and refresh token."""
        self.tokens.revoke_all()

    def set_token_lifetime(self, seconds: float) -> None:
        """Lifetime of tokens issued from now on (``expires_in``)."""
        self.tokens.lifetime = seconds

    def fail_on_call(self, n: int, *, status: int = 500, count: int = 1, path_prefix: str = "/api/indicators/query",
                     body: Any = None) -> None:
        """Answer the ``n``-th matching call from now (and ``count - 1`` after it) with ``status`` (and ``body``)."""
        self.app.fail_on_call(n, status=status, count=count, path_prefix=path_prefix, body=body)

    def errors_next(self, message: str = "Query failed: SQLSTATE[HY000]", *, count: int = 1,
                    path_prefix: str = "/api/indicators/query") -> None:
        """Answer the next matching calls with HTTP 200 and an ``errors`` body."""
        self.faults.fail_next(200, count, body={"errors": [message], "data": []}, path_prefix=path_prefix)

    def set_latency(self, seconds: float) -> None:
        """Wait this long before every answer."""
        self.faults.latency = seconds

    def stats(self) -> dict[str, Any]:
        """Counts for tests and demos: indicators, tokens issued by grant, calls served."""
        return {"indicators": len(self.store), "tokens_issued": dict(self.tokens.issued), "calls": len(self.app.calls),
                "behaviour": attrs.asdict(self.behaviour)}


