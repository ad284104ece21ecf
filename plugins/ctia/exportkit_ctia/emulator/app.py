"""The CTIA emulator's routes: IROH token, CTIA entities, bundle/bulk, feeds, inspection.

Behaviour follows the research notes on CTIA (token endpoint, entity CRUD,
bundle import with ``external-key-prefixes``, bulk, judgement expiry, feed
views) closely enough that the sink cannot tell the difference on the paths
it uses. Every create body is validated with the same schema and cross-field
rules the sink uses (:mod:`exportkit_ctia.schema`), answering CTIA's own error
shapes: a whole-request 400 ``{"errors": ...}`` for schema violations, an
error object per entity (bundle/bulk) or a 400 (single create) for the rest.
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import unquote

from exportkit.emulation import EmulatorApp, Request, Response, json_response
from exportkit_ctia.emulator.access import can_read
from exportkit_ctia.emulator.ratelimit import OrgRateLimit
from exportkit_ctia.emulator.store import ENTITY_TYPES, PLURALS, EntityStore, ReasonTooLong
from exportkit_ctia.schema import rule_errors, schema_errors

__all__ = ["CtiaApp", "TLP_ORDER"]

TLP_ORDER = ("white", "green", "amber", "red")
_KINDS = {"judgement": "NewJudgement", "indicator": "NewIndicator", "relationship": "NewRelationship", "feed": "NewFeed"}
_SEARCH_FILTERS = ("disposition", "disposition_name", "priority", "severity", "confidence", "source", "tlp", "id")
OUT_OF_BAND_REASON = "expired by another tool"
_UNAUTHENTICATED = {"error": "not_authenticated", "message": "Only authenticated users allowed"}
_UNRESOLVED = (
    "A relationship cannot be created if a source or a target ref is still a transient ID "
    "(The source or target entity is probably not provided in the bundle)"
)


def _now() -> datetime:
    return datetime.now(timezone.utc)


_TERM = re.compile(r'\s*([\w.]+):(\((?:[^()"]|"[^"]*")*\)|"[^"]*"|\S+)\s*(?:AND\s+|$)')


def _query_terms(query: str) -> list[tuple[str, set[str]]]:
    """``field:value`` terms of a Lucene query joined by AND; each value set from a term or an OR group."""
    terms = []
    for field, value in _TERM.findall(query):
        if value.startswith("("):
            values = {v.strip().strip('"') for v in re.split(r"\s+OR\s+", value[1:-1].strip())}
        else:
            values = {value.strip('"')}
        terms.append((field, values))
    return terms


def _pattern(value: str) -> tuple[str, bool]:
    """A query value as ``(text, is_prefix)``: escapes removed, a trailing unescaped ``*`` a prefix match."""
    prefix = value.endswith("*") and not value.endswith("\\*")
    return re.sub(r"\\(.)", r"\1", value[:-1] if prefix else value), prefix


class CtiaApp(EmulatorApp):
    """CTIA + IROH token endpoint, in memory.

    :param client_id: the one API client accepted.
    :param client_secret: its password.
    :param min_tlp: lowest TLP accepted (CTIA's default is ``green``; ``amber`` for strict tests).
    :param max_entities: most entities in one bundle or bulk request.
    :param token_lifetime: seconds a token lives (IROH: 600).
    :param org_rate_limit: API requests the organisation may make per rolling
        ``rate_window`` seconds, shared by all its clients (``None``: no limit;
        Cisco: about 8000 an hour). Beyond it: 429 with an hour-long ``Retry-After``.
    :param rate_window: the rolling window of ``org_rate_limit``, in seconds.
    :param red_owner_only: CTIA's rule that TLP red entities are readable only by
        their owner and ``authorized_users``/``authorized_groups`` (see
        :mod:`~exportkit_ctia.emulator.access`); ``False`` lets the organisation read them.
    :param latency: seconds added before every answer (a WAN); :meth:`reset` keeps it.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        min_tlp: str = "green",
        max_entities: int = 2000,
        token_lifetime: float = 600,
        clock: Callable[[], datetime] = _now,
        org_rate_limit: int | None = None,
        rate_window: float = 3600,
        red_owner_only: bool = True,
        latency: float = 0.0,
    ) -> None:
        super().__init__(latency=latency)
        if min_tlp not in TLP_ORDER:
            raise ValueError(f"min_tlp must be one of {', '.join(TLP_ORDER)}")
        self.client_id = client_id
        #: API clients of the organisation: client id -> password
        self._clients = {client_id: client_secret}
        self.min_tlp = min_tlp
        self.max_entities = max_entities
        self.token_lifetime = token_lifetime
        self.clock: Callable[[], datetime] = clock  # always set here (the base class allows None)
        self.store = EntityStore(clock)
        self._tokens: dict[str, tuple[str, datetime]] = {}
        self._lock = threading.Lock()
        #: tokens handed out so far (tests check reuse)
        self.tokens_issued = 0
        #: authenticated API requests left before 429s start (None: unlimited)
        self.request_budget: int | None = None
        self.budget_retry_after = 3600
        #: seconds to wait after a bundle import or an expiry was stored, before answering (a lost answer)
        self.answer_delay = 0.0
        self.red_owner_only = red_owner_only
        self.org_limit: OrgRateLimit | None = None
        self.set_org_rate_limit(org_rate_limit, rate_window)
        self._register_routes()

    # --- knobs ------------------------------------------------------------------

    def add_client(self, client_id: str, client_secret: str) -> None:
        """Accept another API client of the same organisation (it shares the rate limit; red judgements are not its own)."""
        self._clients[client_id] = client_secret

    def set_org_rate_limit(self, limit: int | None, window: float = 3600) -> None:
        """Limit the organisation to ``limit`` API requests per rolling ``window`` seconds (``None``: no limit)."""
        self.org_limit = OrgRateLimit(limit, window, lambda: self.clock().timestamp()) if limit is not None else None

    def revoke_tokens(self) -> None:
        """Forget every issued token: the next API call gets a 401."""
        with self._lock:
            self._tokens.clear()

    def _reset_route(self, request: Request) -> Response:
        self.reset()
        return json_response({"reset": True})

    def _revoke_route(self, request: Request) -> Response:
        self.revoke_tokens()
        return json_response({"revoked": True})

    def reset(self) -> None:
        """Forget entities, tokens, faults, calls, the request budget and the requests the rate limit counted."""
        self.store.clear()
        self.revoke_tokens()
        self.faults.clear()
        self.request_budget = None
        if self.org_limit is not None:  # the limit stays, its count starts again
            self.set_org_rate_limit(self.org_limit.limit, self.org_limit.window)
        with self._calls_lock:
            self.calls.clear()

    # --- routes -----------------------------------------------------------------

    def _register_routes(self) -> None:
        r = self.route
        r("POST", "/iroh/oauth2/token", self._token)
        r("GET", "/_inspect/counts", lambda q: json_response(self.store.counts()))
        r("GET", "/_inspect/live", self._inspect_live)
        r("GET", "/_inspect/entities/{entity}", self._inspect_entities)
        r("POST", "/_inspect/reset", self._reset_route)
        r("POST", "/_inspect/revoke-tokens", self._revoke_route)
        r("GET", "/_inspect/stats", lambda q: json_response({"calls": len(self.calls)}))
        r("POST", "/_inspect/expire", self._inspect_expire)
        r("GET", "/ctia/feed/{id}/view.txt", lambda q: self._feed_view(q, text=True))
        r("GET", "/ctia/feed/{id}/view", lambda q: self._feed_view(q, text=False))
        for method, pattern, handler in (
            ("POST", "/ctia/bundle/import", self._bundle_import),
            ("POST", "/ctia/bulk", self._bulk),
            ("GET", "/ctia/bulk", self._bulk_get),
            ("GET", "/ctia/judgement/search", self._search),
            ("GET", "/ctia/judgement/search/count", self._count),
            ("POST", "/ctia/judgement/{id}/expire", self._expire),
            ("GET", "/ctia/{entity}/external_id/{xid}", self._by_external_id),
            ("POST", "/ctia/{entity}", self._create),
            ("GET", "/ctia/{entity}/{id}", self._get),
            ("PUT", "/ctia/judgement/{id}", self._put_judgement),
            ("DELETE", "/ctia/{entity}/{id}", self._delete),
        ):
            r(method, pattern, self._authenticated(handler))

    def _authenticated(self, handler: Callable[[Request, str], Response]) -> Callable[[Request], Response]:
        def wrapped(request: Request) -> Response:
            header = request.header("Authorization")
            token = header[7:].strip() if header[:7].lower() == "bearer " else ""
            with self._lock:
                entry = self._tokens.get(token)
                if entry is None or entry[1] <= self.clock():
                    return json_response(_UNAUTHENTICATED, 401)
                if self.request_budget is not None:
                    if self.request_budget <= 0:
                        return json_response({"error": "Too Many Requests"}, 429, Retry_After=str(self.budget_retry_after))
                    self.request_budget -= 1
            limit = self.org_limit
            if limit is not None:
                wait = limit.take()
                if wait is not None:
                    return json_response({"error": "Too Many Requests"}, 429, Retry_After=str(wait), X_Ratelimit_Org_Limit=str(limit.limit))
            entity = request.params.get("entity")
            if entity is not None and entity not in ENTITY_TYPES:
                return Response(404, None)
            response = handler(request, entry[0])
            if limit is not None:
                response.headers.setdefault("X-Ratelimit-Org-Limit", str(limit.limit))
            return response

        return wrapped

    def _token(self, request: Request) -> Response:
        if request.form().get("grant_type") != "client_credentials":
            return json_response({"error": "unsupported_grant_type", "error_description": "grant_type must be client_credentials"}, 400)
        header = request.header("Authorization")
        try:
            client_id, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":") if header[:6].lower() == "basic " else ("", "", "")
        except ValueError:
            client_id, password = "", ""
        known = self._clients.get(client_id)
        if known is None or not secrets.compare_digest(password, known):
            return json_response({"error": "invalid_client", "error_description": "Invalid client credentials"}, 401)
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = (client_id, self.clock() + timedelta(seconds=self.token_lifetime))
            self.tokens_issued += 1
        lifetime = int(self.token_lifetime) if float(self.token_lifetime).is_integer() else self.token_lifetime
        return json_response({"access_token": token, "token_type": "bearer", "expires_in": lifetime, "scope": "private-intel"})

    # --- validation ---------------------------------------------------------------

    def _entity_error(self, entity_type: str, entity: dict[str, Any], tempids: dict[str, str]) -> dict[str, Any] | None:
        """CTIA's per-entity checks (after the schema): rules, TLP floor, transient refs."""
        problems = rule_errors(entity)
        if problems:
            if problems == ["Mismatched disposition and dispositon_name for judgement"]:
                return {"error": problems[0], "type": "realize-entity-error"}
            return {"error": "Entity validation Error", "msg": "; ".join(problems), "type": "spec-validation-error"}
        tlp = entity.get("tlp", "green")
        if TLP_ORDER.index(tlp) < TLP_ORDER.index(self.min_tlp):
            allowed = ",".join(TLP_ORDER[TLP_ORDER.index(self.min_tlp):])
            return {"error": "Entity Access Control validation Error", "msg": f"Invalid document TLP {tlp}, allowed TLPs are: {allowed}", "type": "invalid-tlp-error"}
        if entity_type == "relationship":
            for key in ("source_ref", "target_ref"):
                ref = entity[key]
                if ref.startswith("transient:"):
                    if ref not in tempids:
                        return {"error": _UNRESOLVED, "type": "realize-entity-error"}
                    entity[key] = tempids[ref]
        return None

    def _create_checked(self, entity_type: str, entity: dict[str, Any], owner: str, tempids: dict[str, str]) -> dict[str, Any]:
        """Create one entity, or return its error object (with ``error`` set)."""
        original = entity.get("id")
        entity = dict(entity)
        if original is not None and not str(original).startswith("transient:"):
            return {"error": "Missing capability to specify entity ID", "entity": entity}
        error = self._entity_error(entity_type, entity, tempids)
        if error is not None:
            return error
        entity.pop("id", None)
        stored = self.store.create(entity_type, entity, owner)
        if original:
            tempids[original] = stored["id"]
        return stored

    def _size_error(self, body: dict[str, Any], what: str) -> Response | None:
        total = sum(len(v) for k, v in body.items() if isinstance(v, list) and not k.endswith("_refs") and k != "external_ids" and k != "external_references")
        if total > self.max_entities:
            return json_response(f"{what} {self.max_entities}", 400)
        return None

    # --- bundle and bulk ----------------------------------------------------------

    def _checked_body(self, request: Request, kind: str, size_message: str) -> Any:
        """The request's body if it parses, fits the schema ``kind`` and the size limit; else the 400 answer."""
        try:
            body = request.json()
        except ValueError:
            return json_response({"errors": "malformed JSON body"}, 400)
        errors = schema_errors(kind, body)
        if errors:
            return json_response({"errors": errors}, 400)
        too_big = self._size_error(body, size_message)
        return too_big if too_big is not None else body

    def _bundle_import(self, request: Request, owner: str) -> Response:
        body = self._checked_body(request, "NewBundle", "Bundle max nb of entities:")
        if isinstance(body, Response):
            return body
        prefixes = [p for p in request.query.get("external-key-prefixes", "").split(",") if p]
        tempids: dict[str, str] = {}
        results = []
        for plural, entity_type in PLURALS.items():  # relationships last, as CTIA does
            for entity in body.get(plural, []):
                xids = entity.get("external_ids", [])
                matching = [x for x in xids if any(x.startswith(p) for p in prefixes)] if prefixes else xids
                result: dict[str, Any] = {"original_id": entity.get("id"), "type": entity_type, "external_ids": xids}
                existing = self.store.first_with_xids(entity_type, matching, lambda e: self._readable(e, owner)) if matching else None
                if existing is not None:
                    result.update(id=existing["id"], result="exists")
                    if entity.get("id"):
                        tempids[entity["id"]] = existing["id"]
                else:
                    created = self._create_checked(entity_type, entity, owner, tempids)
                    if "error" in created:
                        result.update(result="error", error=created["error"])
                        if "msg" in created:
                            result["msg"] = created["msg"]
                    else:
                        result.update(id=created["id"], result="created")
                results.append({k: v for k, v in result.items() if v is not None})
        if self.answer_delay:
            time.sleep(self.answer_delay)
        return json_response({"results": results})

    def _bulk(self, request: Request, owner: str) -> Response:
        body = self._checked_body(request, "NewBulk", "Bulk max number of entities:")
        if isinstance(body, Response):
            return body
        tempids: dict[str, str] = {}
        out: dict[str, Any] = {}
        for plural, entity_type in PLURALS.items():
            if plural in body:
                out[plural] = []
                for entity in body[plural]:
                    created = self._create_checked(entity_type, entity, owner, tempids)
                    out[plural].append({**created, "entity": entity} if "error" in created else created["id"])
        out["tempids"] = tempids
        return json_response(out, 201)

    def _bulk_get(self, request: Request, owner: str) -> Response:
        """``GET /ctia/bulk?judgements=<id>&...``: each plural key's entities in request order, ``null`` when unknown."""
        out: dict[str, Any] = {}
        total = 0
        for plural, entity_type in PLURALS.items():
            ids = request.query_all.get(plural)
            if ids:
                total += len(ids)
                out[plural] = [self.store.get(entity_type, unquote(i).rstrip("/").rsplit("/", 1)[-1]) for i in ids]
        if total > self.max_entities:
            return json_response(f"Bulk max number of entities: {self.max_entities}", 400)
        return json_response(out)

    # --- single entities ----------------------------------------------------------

    def _create(self, request: Request, owner: str) -> Response:
        entity_type = request.params["entity"]
        try:
            body = request.json()
        except ValueError:
            return json_response({"errors": "malformed JSON body"}, 400)
        errors = schema_errors(_KINDS[entity_type], body)
        if errors:
            return json_response({"errors": errors}, 400)
        created = self._create_checked(entity_type, body, owner, {})
        if "error" in created:
            status = 403 if created["error"].startswith("Missing capability") else 400
            return json_response({**created, "entity": body}, status)
        return json_response(created, 201, Location=created["id"])

    def _readable(self, entity: dict[str, Any] | None, login: str) -> bool:
        return entity is not None and can_read(entity, login, red_owner_only=self.red_owner_only)

    def _get(self, request: Request, owner: str) -> Response:
        entity = self.store.get(request.params["entity"], unquote(request.params["id"]))
        return json_response(entity) if self._readable(entity, owner) else Response(404, None)

    def _delete(self, request: Request, owner: str) -> Response:
        if not self._readable(self.store.get(request.params["entity"], unquote(request.params["id"])), owner):
            return Response(404, None)
        deleted = self.store.delete(request.params["entity"], unquote(request.params["id"]))
        return Response(204 if deleted else 404, None)

    def _put_judgement(self, request: Request, owner: str) -> Response:
        # CTIA asks for :developer besides create-judgement, a capability no API client scope grants.
        return json_response(
            {"error": "missing_capability", "message": "Missing capability", "capabilities": ["create-judgement", "developer"], "owner": owner},
            403,
        )

    def _by_external_id(self, request: Request, owner: str) -> Response:
        found = [e for e in self.store.by_external_id(request.params["entity"], unquote(request.params["xid"])) if self._readable(e, owner)]
        return json_response(found, 200, **{"X-Total-Hits": str(len(found))})

    def _expire(self, request: Request, owner: str) -> Response:
        if not self._readable(self.store.get("judgement", unquote(request.params["id"])), owner):
            return Response(404, None)
        try:
            entity = self.store.expire(unquote(request.params["id"]), request.query.get("reason", ""))
        except ReasonTooLong as exc:
            return json_response(
                {"error": "Spec Validation Client Error", "type": "Invalid Entity Error", "message": str(exc), "class": "clojure.lang.ExceptionInfo"},
                400,
            )
        if self.answer_delay:
            time.sleep(self.answer_delay)
        return json_response(entity) if entity is not None else Response(404, None)

    def _matches(self, request: Request, login: str) -> list[dict[str, Any]]:
        found = [j for j in self.store.all("judgement") if self._readable(j, login)]
        for key in _SEARCH_FILTERS:
            if key in request.query:
                found = [j for j in found if str(j.get(key)) == request.query[key]]
        # A small part of the Lucene syntax: field:value, field:"value" and
        # field:("a" OR "b" ...) terms joined by AND; a backslash escapes the
        # next character and a trailing * matches a prefix; a list field
        # matches when any element does.
        for field, wanted in _query_terms(request.query.get("query", "")):
            patterns = [_pattern(value) for value in wanted]
            path = field.split(".")

            def pick(entity: dict[str, Any], path: list[str] = path) -> list[str]:
                value: Any = entity
                for part in path:
                    value = value.get(part, {}) if isinstance(value, dict) else {}
                return [str(v) for v in value] if isinstance(value, list) else [str(value)]

            def hit(entity: dict[str, Any], patterns: list[tuple[str, bool]] = patterns) -> bool:
                return any(v.startswith(text) if prefix else v == text for v in pick(entity) for text, prefix in patterns)

            found = [j for j in found if hit(j)]
        return found

    def _search(self, request: Request, owner: str) -> Response:
        found = self._matches(request, owner)
        offset, limit = int(request.query.get("offset", 0)), int(request.query.get("limit", 100))
        return json_response(found[offset : offset + limit], 200, **{"X-Total-Hits": str(len(found))})

    def _count(self, request: Request, owner: str) -> Response:
        return json_response(len(self._matches(request, owner)))

    # --- feeds --------------------------------------------------------------------

    def _feed_view(self, request: Request, *, text: bool) -> Response:
        feed = self.store.get("feed", unquote(request.params["id"]))
        if feed is None or ("lifetime" in feed and not self.store.is_live({"valid_time": feed["lifetime"]})):
            return json_response({"error": "feed not found"}, 404)
        if request.query.get("s") != feed["secret"]:
            return json_response({"error": "wrong secret"}, 401)
        # CTIA builds the view with the feed owner's identity.
        members = [j for j in self.store.feed_members(feed.get("indicator_id", "")) if self._readable(j, feed["owner"])]
        if feed["output"] == "judgements":
            return json_response({"judgements": members})
        observables = sorted({(j["observable"]["type"], j["observable"]["value"]) for j in members}, key=lambda o: (o[1], o[0]))
        if text:
            lines = sorted({value for _, value in observables})
            return Response(200, "\n".join(lines), {"Content-Type": "text/plain; charset=utf-8"})
        return json_response({"observables": [{"type": t, "value": v} for t, v in observables]})

    # --- inspection -----------------------------------------------------------------

    def _inspect_live(self, request: Request) -> Response:
        return json_response(self.store.live_judgements(request.query.get("type"), request.query.get("value")))

    def _inspect_expire(self, request: Request) -> Response:
        """Expire judgements behind the exporter's back: ``?id=`` (long or short) or ``?type=&value=`` (every live one)."""
        expired = self.expire_out_of_band(
            request.query.get("id"), observable_type=request.query.get("type"), value=request.query.get("value"),
            reason=request.query.get("reason", OUT_OF_BAND_REASON),
        )
        return json_response({"expired": expired})

    def expire_out_of_band(self, judgement_id: str | None = None, *, observable_type: str | None = None,
                           value: str | None = None, reason: str = "") -> int:
        """Expire one judgement by id, or every live one of an observable, as another tool would; returns how many."""
        reason = reason or OUT_OF_BAND_REASON
        if judgement_id:
            return 1 if self.store.expire(judgement_id.rstrip("/").rsplit("/", 1)[-1], reason) is not None else 0
        if observable_type is None and value is None:
            return 0
        live = self.store.live_judgements(observable_type, value)
        for entity in live:
            self.store.expire(entity["id"].rsplit("/", 1)[-1], reason)
        return len(live)

    def _inspect_entities(self, request: Request) -> Response:
        entity_type = request.params["entity"]
        if entity_type not in ENTITY_TYPES:
            return Response(404, None)
        return json_response(self.store.all(entity_type))
