"""The emulator's entity store: what CTIA would hold, plus the inspection tests read.

Thread-safe (the HTTP server answers on several threads). Entities are kept
as CTIA returns them: long ``id``, ``type``, server-set ``schema_version``,
``owner``/``groups``/``created``/``modified``, and the defaults CTIA fills in
(``tlp``, ``timestamp``, ``valid_time``, disposition pairs).
"""

from __future__ import annotations

import copy
import secrets
import threading
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from exportkit.records import format_time
from exportkit_ctia.emulator.access import ORG_ID
from exportkit_ctia.schema import DISPOSITION_NUMBERS, parse_ctim_time

__all__ = ["EntityStore", "ENTITY_TYPES", "PLURALS", "ReasonTooLong"]

ENTITY_TYPES = ("judgement", "indicator", "relationship", "feed")
#: bundle/bulk key -> entity type, in the order CTIA creates them (relationships last)
PLURALS = {"judgements": "judgement", "indicators": "indicator", "relationships": "relationship"}
_NAMES_BY_NUMBER = {n: name for name, n in DISPOSITION_NUMBERS.items()}
SCHEMA_VERSION = "1.3.30"
NEVER = "2525-01-01T00:00:00.000Z"
#: CTIM's ShortString: the longest judgement reason
REASON_MAX = 1024


class ReasonTooLong(ValueError):
    """An expiry would make the judgement's reason longer than CTIM allows."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


class EntityStore:
    """Entities by type and short id, with an index by external id.

    :param clock: returns the current time (aware UTC); tests may pass a fake.
    """

    def __init__(self, clock: Callable[[], datetime] = _now) -> None:
        self.clock = clock
        self._lock = threading.RLock()
        self._entities: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in ENTITY_TYPES}
        # (type, xid) -> short ids in creation order, so bundle imports stay fast at scale
        self._by_xid: dict[tuple[str, str], list[str]] = {}
        self.base_url = "http://127.0.0.1"

    # --- writing ------------------------------------------------------------

    def long_id(self, entity_type: str, short_id: str) -> str:
        return f"{self.base_url}/ctia/{entity_type}/{short_id}"

    def create(self, entity_type: str, body: dict[str, Any], owner: str) -> dict[str, Any]:
        """Store a validated create body as CTIA would realise it; returns the stored entity."""
        now = format_time(self.clock())
        entity = copy.deepcopy(body)
        short_id = f"{entity_type}-{uuid.uuid4()}"
        entity.update(
            id=self.long_id(entity_type, short_id),
            type=entity_type,
            schema_version=SCHEMA_VERSION,
            owner=owner,
            groups=[ORG_ID],
            created=now,
            modified=now,
        )
        entity.setdefault("tlp", "green")
        entity.setdefault("timestamp", now)
        if entity_type in ("judgement", "indicator"):
            span = entity.setdefault("valid_time", {})
            span.setdefault("start_time", now)
            span.setdefault("end_time", NEVER)
        if entity_type == "judgement":
            if "disposition" not in entity and "disposition_name" not in entity:
                entity["disposition"], entity["disposition_name"] = 5, "Unknown"
            elif "disposition" not in entity:
                entity["disposition"] = DISPOSITION_NUMBERS[entity["disposition_name"]]
            elif "disposition_name" not in entity:
                entity["disposition_name"] = _NAMES_BY_NUMBER[entity["disposition"]]
        if entity_type == "feed":
            entity["secret"] = secrets.token_hex(16)
            suffix = "view.txt" if entity["output"] == "observables" else "view"
            entity["feed_view_url"] = f"{entity['id']}/{suffix}?s={entity['secret']}"
        with self._lock:
            self._entities[entity_type][short_id] = entity
            for xid in entity.get("external_ids", ()):
                self._by_xid.setdefault((entity_type, xid), []).append(short_id)
        return copy.deepcopy(entity)

    def expire(self, short_id: str, reason: str) -> dict[str, Any] | None:
        """End a judgement's validity now and append ``reason``, as CTIA does; ``None`` when unknown.

        CTIA appends to the stored reason on every expiry (also of an expired
        judgement) and validates the result: a reason past 1024 characters is
        refused (:class:`ReasonTooLong`) and nothing changes.
        """
        with self._lock:
            entity = self._entities["judgement"].get(short_id)
            if entity is None:
                return None
            longer = f"{entity.get('reason', '')} {reason}".strip()
            if len(longer) > REASON_MAX:
                raise ReasonTooLong(f"reason: {len(longer)} characters, at most {REASON_MAX}")
            now = format_time(self.clock())
            entity["valid_time"]["end_time"] = now
            if parse_ctim_time(entity["valid_time"]["start_time"]) > self.clock():  # type: ignore[operator]
                entity["valid_time"]["start_time"] = now
            entity["reason"] = longer
            entity["modified"] = now
            return copy.deepcopy(entity)

    def delete(self, entity_type: str, short_id: str) -> bool:
        with self._lock:
            entity = self._entities[entity_type].pop(short_id, None)
            for xid in (entity or {}).get("external_ids", ()):
                self._by_xid.get((entity_type, xid), []).remove(short_id)
            return entity is not None

    def clear(self) -> None:
        with self._lock:
            for entities in self._entities.values():
                entities.clear()
            self._by_xid.clear()

    # --- reading ------------------------------------------------------------

    def get(self, entity_type: str, short_id: str) -> dict[str, Any] | None:
        with self._lock:
            entity = self._entities[entity_type].get(short_id)
            return copy.deepcopy(entity) if entity is not None else None

    def get_long(self, long_id: str) -> dict[str, Any] | None:
        """The entity behind a long id of this emulator, or ``None``."""
        parts = long_id.rsplit("/", 2)
        if len(parts) != 3 or parts[1] not in ENTITY_TYPES or long_id != self.long_id(parts[1], parts[2]):
            return None
        return self.get(parts[1], parts[2])

    def all(self, entity_type: str) -> list[dict[str, Any]]:
        """Every stored entity of a type, oldest first."""
        with self._lock:
            return [copy.deepcopy(e) for e in self._entities[entity_type].values()]

    def by_external_id(self, entity_type: str, xid: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(self._entities[entity_type][i]) for i in self._by_xid.get((entity_type, xid), ())]

    def first_with_xids(
        self, entity_type: str, xids: Iterable[str], visible: Callable[[dict[str, Any]], bool] = lambda e: True
    ) -> dict[str, Any] | None:
        """The first stored entity carrying one of ``xids`` that is ``visible`` (CTIA takes the first, too)."""
        with self._lock:
            for xid in xids:
                for short_id in self._by_xid.get((entity_type, xid), ()):
                    entity = self._entities[entity_type][short_id]
                    if visible(entity):
                        return copy.deepcopy(entity)
        return None

    def is_live(self, entity: dict[str, Any], at: datetime | None = None) -> bool:
        """True when the entity's ``valid_time`` holds ``at`` (default: now)."""
        at = at or self.clock()
        span = entity.get("valid_time", {})
        start = parse_ctim_time(span.get("start_time", "1970-01-01T00:00:00Z"))
        end = parse_ctim_time(span.get("end_time", NEVER))
        return bool(start and end and start <= at < end)

    def live_judgements(self, observable_type: str | None = None, value: str | None = None) -> list[dict[str, Any]]:
        """Judgements valid now, optionally for one observable."""
        out = []
        for entity in self.all("judgement"):
            obs = entity["observable"]
            if observable_type is not None and obs["type"] != observable_type:
                continue
            if value is not None and obs["value"] != value:
                continue
            if self.is_live(entity):
                out.append(entity)
        return out

    def feed_members(self, indicator_id: str) -> list[dict[str, Any]]:
        """Live judgements linked ``element-of`` to ``indicator_id`` (what a feed view shows)."""
        refs = {
            r["source_ref"]
            for r in self.all("relationship")
            if r.get("relationship_type") == "element-of" and r.get("target_ref") == indicator_id
        }
        return [j for j in self.all("judgement") if j["id"] in refs and self.is_live(j)]

    def counts(self) -> dict[str, int]:
        """Entity counts by type, plus ``live_judgements``."""
        with self._lock:
            out = {t: len(e) for t, e in self._entities.items()}
        out["live_judgements"] = len(self.live_judgements())
        return out
