"""HTTP routes of the ThreatQ emulator (the reference's emulator spec) and its control API.

API routes (all but ``/api/token`` need a live bearer token, else 401):

* ``POST /api/token``; ``GET``/``POST /api/search/query``;
* ``POST /api/indicators/query?limit&offset&sort&with`` (body ``criteria``, ``filters``, ``fields``);
* ``GET /api/indicators/query/hash/{hash}?limit&cursorMark`` (cursor paging; the last page is ``[]`` or ``{}``);
* ``GET /api/indicators/{id}``, ``GET /api/indicators?value&id&type_id&with&limit&offset``;
* ``GET /api/indicator/types[/{id}]``, ``GET /api/indicator/statuses[/{id}]``, ``GET /api/objects``.

Control routes under ``/_control/`` (with the ``X-Emulator-Token`` header, see
:mod:`exportkit.emulation`) mirror the Python control
methods of :class:`~exportkit.threatq.emulator.server.ThreatQEmulator`, for
tests and demos that run the emulator in another process.

Every answer's ``Date`` header comes from the appliance's clock (which may
run ahead of or behind this host's, see :class:`~.behaviour.Behaviour`).
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import unquote

from exportkit.emulation import EmulatorApp, Request, Response, json_response
from exportkit.threatq.emulator.data import STATUSES, TYPES
from exportkit.threatq.emulator.store import FilterError

if TYPE_CHECKING:
    from exportkit.threatq.emulator.server import ThreatQEmulator

__all__ = ["ThreatQApp"]

_MAX_LIMIT = 10_000


def _int(value: Any, default: int, *, name: str) -> int:
    if value in (None, ""):
        return default
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise FilterError(f"{name} must be a whole number") from None
    if out < 0:
        raise FilterError(f"{name} must not be negative")
    return out


def _bad(message: str, status: int = 400) -> Response:
    return json_response({"errors": [message]}, status)


class ThreatQApp(EmulatorApp):
    """The routes; all state lives in the :class:`ThreatQEmulator` given."""

    def __init__(self, emulator: ThreatQEmulator, *, latency: float = 0.0) -> None:
        super().__init__(latency=latency)
        self.emu = emulator
        self.clock = emulator.now  # the Date header tells the appliance's time
        self._armed: list[dict[str, Any]] = []  # "fail on the Nth call" plans
        api = self._api
        self.route("POST", "/api/token", lambda r: emulator.tokens.token_endpoint(r))
        self.route("GET", "/api/search/query", api(self.list_searches))
        self.route("POST", "/api/search/query", api(self.create_search))
        self.route("POST", "/api/indicators/query", api(self.query_indicators))
        self.route("GET", "/api/indicators/query/hash/{hash}", api(self.query_hash))
        self.route("GET", "/api/indicators", api(self.list_indicators))
        self.route("GET", "/api/indicators/{id}", api(self.get_indicator))
        self.route("GET", "/api/indicator/types", api(lambda r: self._catalogue(TYPES, r)))
        self.route("GET", "/api/indicator/types/{id}", api(lambda r: self._catalogue_item(TYPES, r)))
        self.route("GET", "/api/indicator/statuses", api(lambda r: self._catalogue(STATUSES, r)))
        self.route("GET", "/api/indicator/statuses/{id}", api(lambda r: self._catalogue_item(STATUSES, r)))
        self.route("GET", "/api/objects", api(self.objects))
        for method, pattern, handler in _control_routes(emulator):
            self.route(method, pattern, handler)

    # -- plumbing ----------------------------------------------------------------------

    def _api(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def guarded(request: Request) -> Response:
            if not self.emu.tokens.valid(request):
                return json_response({"error": "Unauthenticated.", "errors": ["Unauthenticated."]}, 401)
            try:
                return handler(request)
            except FilterError as exc:
                return _bad(str(exc))

        return guarded

    def fail_on_call(self, n: int, *, status: int = 500, count: int = 1, path_prefix: str = "/api/indicators/query",
                     body: Any = None) -> None:
        """Answer the ``n``-th call (from now) under ``path_prefix`` with ``status``, ``count`` times."""
        if n < 1:
            raise ValueError("n counts from 1")
        with self._calls_lock:
            self._armed.append({"left": n, "status": status, "count": count, "prefix": path_prefix, "body": body})

    def record_call(self, method: str, path: str) -> None:
        # Called before faults are taken, so arming here makes exactly this call fail.
        super().record_call(method, path)
        with self._calls_lock:
            for plan in list(self._armed):
                if path.startswith(plan["prefix"]):
                    plan["left"] -= 1
                    if plan["left"] == 0:
                        self._armed.remove(plan)
                        self.faults.fail_next(plan["status"], plan["count"], body=plan["body"], path_prefix=plan["prefix"])

    # -- searches (Data Collections) ---------------------------------------------------

    def list_searches(self, request: Request) -> Response:
        items = self.emu.search_entries()
        if not self.emu.behaviour.search_paging:
            return json_response({"data": items})  # limit and offset ignored, no total
        limit = _int(request.query.get("limit"), len(items) or 1, name="limit")
        offset = _int(request.query.get("offset"), 0, name="offset")
        return json_response({"total": len(items), "data": items[offset: offset + limit], "limit": limit, "offset": offset})

    def create_search(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict) or not body.get("name"):
            return _bad("name is required")
        raw = body.get("json") or {}
        if isinstance(raw, str):
            raw = json.loads(raw)
        entry = self.emu.add_collection(body["name"], raw.get("api_query", {}))
        return json_response({"data": entry}, 201)

    # -- indicators --------------------------------------------------------------------

    def _shape(self, request: Request, body: Any = None) -> tuple[set[str], list[str] | None]:
        with_ = {w.strip().split(".")[-1] for w in request.query.get("with", "").split(",") if w.strip()}
        fields = body.get("fields") if isinstance(body, dict) else None
        if fields is None and request.query.get("fields"):
            fields = [f.strip() for f in request.query["fields"].split(",") if f.strip()]
        if fields is not None and (not isinstance(fields, list) or not all(isinstance(f, str) for f in fields)):
            raise FilterError("fields must be a list of field names")
        return with_, fields

    def query_indicators(self, request: Request) -> Response:
        try:
            body = request.json() or {}
        except ValueError:
            return _bad("The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _bad("The request body must be an object.")
        unknown = set(body) - {"criteria", "filters", "fields"}
        if unknown:
            return _bad(f"unsupported body keys: {', '.join(sorted(unknown))}")
        expr = {"+and": [body.get("criteria") or {}, body.get("filters") or {}]}
        limit = min(_int(request.query.get("limit"), 500, name="limit"), _MAX_LIMIT, self.emu.behaviour.page_cap or _MAX_LIMIT)
        offset = _int(request.query.get("offset"), 0, name="offset")
        with_, fields = self._shape(request, body)
        store = self.emu.store
        total, page = store.query(expr, sort=request.query.get("sort", "id"), limit=limit, offset=offset)
        data = [store.render(rec, with_=with_, fields=fields) for rec in page]
        return json_response({"total": total, "data": data, "limit": limit, "offset": offset})

    def query_hash(self, request: Request) -> Response:
        key = unquote(request.params["hash"])
        collection = self.emu.collection_by_hash(key)
        if collection is None:
            return _bad(f"no data collection {key!r}", 404)
        limit = min(_int(request.query.get("limit"), 100, name="limit"), _MAX_LIMIT)
        mark = request.query.get("cursorMark", "*")
        cursor = None
        if mark != "*":
            try:
                ts, _, ident = base64.urlsafe_b64decode(mark.encode()).decode().partition("|")
                cursor = (ts, int(ident))
            except ValueError:
                return _bad("invalid cursorMark")
        api_query = collection["api_query"]
        expr = {"+and": [api_query.get("criteria") or {}, api_query.get("filters") or {}]}
        total, page = self.emu.store.after_cursor(expr, cursor, limit)
        with_, fields = self._shape(request)
        if not page:
            # ThreatQ's last page is sometimes an empty object: alternate to keep clients honest.
            self.emu.empty_pages += 1
            return json_response({"total": total, "data": {} if self.emu.empty_pages % 2 else [], "nextCursorMark": mark, "limit": limit})
        last = page[-1]
        next_mark = base64.urlsafe_b64encode(f"{last['updated_at']}|{last['id']}".encode()).decode()
        data = [self.emu.store.render(rec, with_=with_ or {"type", "status", "score", "sources", "attributes"}, fields=fields)
                for rec in page]
        return json_response({"total": total, "data": data, "nextCursorMark": next_mark, "limit": limit})

    def list_indicators(self, request: Request) -> Response:
        q = request.query
        ident = _int(q.get("id"), -1, name="id")
        type_id = _int(q.get("type_id"), -1, name="type_id")
        found = self.emu.store.find(value=q.get("value"), ident=None if ident < 0 else ident, type_id=None if type_id < 0 else type_id)
        limit = min(_int(q.get("limit"), 500, name="limit"), _MAX_LIMIT)
        offset = _int(q.get("offset"), 0, name="offset")
        with_, _ = self._shape(request)
        data = [self.emu.store.render(r, with_=with_) for r in found[offset: offset + limit]]
        return json_response({"total": len(found), "data": data, "limit": limit, "offset": offset})

    def get_indicator(self, request: Request) -> Response:
        try:
            rec = self.emu.store.get(int(request.params["id"]))
        except ValueError:
            rec = None
        if rec is None:
            return _bad("Indicator not found.", 404)
        with_, _ = self._shape(request)
        return json_response({"data": self.emu.store.render(rec, with_=with_)})

    # -- catalogues --------------------------------------------------------------------

    def _catalogue(self, rows: list[dict[str, Any]], request: Request) -> Response:
        name = request.query.get("name")
        data = [r for r in rows if name is None or r["name"] == name]
        return json_response({"total": len(data), "data": data})

    def _catalogue_item(self, rows: list[dict[str, Any]], request: Request) -> Response:
        row = next((r for r in rows if str(r["id"]) == request.params["id"]), None)
        return json_response({"data": row}) if row else _bad("Not found.", 404)

    def objects(self, request: Request) -> Response:
        return json_response({"data": [{
            "collection": "indicators", "name": "indicator", "display_name": "Indicator",
            "display_name_plural": "Indicators", "types": [{"id": t["id"], "name": t["name"]} for t in TYPES],
            "statuses": [{"id": s["id"], "name": s["name"]} for s in STATUSES],
        }]})


def _control_routes(emu: ThreatQEmulator) -> list[tuple[str, str, Callable[[Request], Response]]]:
    """``/_control/...``: the Python control methods over HTTP (JSON in, JSON out)."""

    def body(request: Request) -> dict[str, Any]:
        data = request.json() if request.body else {}
        return data if isinstance(data, dict) else {}

    def guard(fn: Callable[[Request], Any]) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            try:
                return json_response({"data": fn(request)})
            except (KeyError, ValueError, TypeError) as exc:
                return _bad(f"control: {exc}")

        return handler

    def add(r: Request) -> Any:
        b = body(r)
        return emu.add_indicator(b.pop("value"), b.pop("type_name"), b.pop("status_name", "Active"), **b)

    def update(r: Request) -> Any:
        b = body(r)
        at = b.pop("updated_at", None)
        return emu.update_indicator(int(r.params["id"]), updated_at=at, **b)

    def faults(r: Request) -> Any:
        b = body(r)
        prefix = b.get("path_prefix", "/api/")
        if "latency" in b:
            emu.set_latency(float(b["latency"]))
        if "errors" in b:
            emu.errors_next(str(b["errors"]), count=int(b.get("count", 1)), path_prefix=prefix)
        elif "after" in b:
            emu.fail_on_call(int(b["after"]), status=int(b.get("status", 500)), count=int(b.get("count", 1)), path_prefix=prefix)
        elif "status" in b:
            emu.faults.fail_next(int(b["status"]), int(b.get("count", 1)), path_prefix=prefix)
        return {"ok": True}

    return [
        ("POST", "/_control/indicators", guard(add)),
        ("POST", "/_control/indicators/{id}", guard(update)),
        ("DELETE", "/_control/indicators/{id}", guard(lambda r: emu.remove_indicator(int(r.params["id"])))),
        ("POST", "/_control/tokens/expire", guard(lambda r: emu.expire_tokens())),
        ("POST", "/_control/tokens/revoke", guard(lambda r: emu.revoke_tokens())),
        ("POST", "/_control/tokens/lifetime", guard(lambda r: emu.set_token_lifetime(float(body(r)["seconds"])))),
        ("POST", "/_control/faults", guard(faults)),
        ("DELETE", "/_control/faults", guard(lambda r: emu.faults.clear())),
        ("POST", "/_control/collections", guard(lambda r: emu.add_collection(body(r)["name"], body(r).get("api_query", {})))),
        ("GET", "/_control/collections/{name}/ids", guard(lambda r: emu.collection_ids(unquote(r.params["name"])))),
        ("GET", "/_control/stats", guard(lambda r: emu.stats())),
        ("GET", "/_control/behaviour", guard(lambda r: emu.configure())),
        ("POST", "/_control/behaviour", guard(lambda r: emu.configure(**body(r)))),
    ]
