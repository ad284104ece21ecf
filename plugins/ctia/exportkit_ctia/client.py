"""A small CTIA API client: the calls the sink makes, with errors sorted by what to do.

Every call goes through one session (TLS settings, and ``context.proxies``
for token and API traffic alike when the run uses ``-ep``), the bearer auth
of :mod:`exportkit_ctia.auth`, and the shared retry policy (jittered backoff
on 5xx, timeouts and dropped connections; ``Retry-After`` honoured up to
``max_retry_after``). What comes out:

* a parsed answer;
* :class:`Deferred` (a :class:`~exportkit.errors.TransientError`) when the
  retries are spent or CTIA asks to wait longer than the cap: the caller
  defers the records concerned;
* :class:`~exportkit.errors.SinkError` for a redirect: the session follows
  none (a redirect to another host would take the bundle and the bearer
  token with it), and the message says to set ``api_url`` to the final
  address;
* :class:`~exportkit_ctia.budget.BudgetSpent` (also transient) once the
  run's request budget is spent or CTIA rate-limited the run for longer than
  it waits: from then on no request leaves (see :mod:`exportkit_ctia.budget`);
* :class:`RequestRejected` for a whole-request 400: the caller
  dead-letters the records of that request;
* :class:`~exportkit.errors.SinkAuthError` / :class:`~exportkit.errors.SinkError`
  when the sink cannot go on (credentials refused, capability missing, API gone).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import quote

import orjson
import requests

from exportkit.errors import SinkAuthError, SinkError, TransientError
from exportkit.http import RetriesExhausted, RetryPolicy, make_session
from exportkit_ctia.auth import BearerAuth, TokenSource
from exportkit_ctia.budget import BudgetSpent, RequestBudget
from exportkit_ctia.reasons import EXPIRY_REASON_MAX
from exportkit_ctia.xids import lookup_prefixes
from exportkit_ctia.settings import CtiaSettings

__all__ = ["CtiaClient", "Deferred", "RequestRejected", "BudgetSpent", "short_id", "redirect_refusal", "BULK_READ_IDS"]

USER_AGENT = "exportkit-ctia/0.1"
#: ids per bulk read: keeps the request line near 6 KB, under common proxy and server limits
BULK_READ_IDS = 100
#: XIDs per search query (about 4 KB of query string), and judgements per search page
SEARCH_XIDS = 40
SEARCH_PAGE = 1000


class Deferred(TransientError):
    """CTIA is unavailable or rate-limits us beyond the cap; try again next run.

    :param retry_after: the wait CTIA asked for, when that was the reason.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestRejected(Exception):
    """CTIA refused a whole request (HTTP 400); ``str(exc)`` holds its error text.

    :param max_entities: set when the refusal was the size limit, to the limit CTIA named.
    """

    def __init__(self, message: str, max_entities: int | None = None) -> None:
        super().__init__(message)
        self.max_entities = max_entities


def redirect_refusal(who: str, what: str, response: requests.Response, setting: str) -> str:
    """The message for a redirect the sink does not follow (a redirect could carry the token elsewhere)."""
    location = response.headers.get("Location", "?")[:200]
    return (
        f"{who} redirected {what} (HTTP {response.status_code}) to {location}; redirects are not followed, "
        f"so credentials never go to another address: set {setting} to the final address"
    )


def short_id(long_id: str) -> str:
    """The short id (last path segment) of a CTIA long id."""
    return long_id.rstrip("/").rsplit("/", 1)[-1]


def _text(response: requests.Response, limit: int = 500) -> str:
    text = response.text.strip()
    return text if len(text) <= limit else text[:limit] + "..."


class CtiaClient:
    """The CTIA calls of the sink.

    :param settings: the sink settings (URLs, credentials, timeouts, TLS).
    :param proxies: ``context.proxies`` (``None``: no proxy, environment ignored).
    :param policy: retry policy; by default 5 attempts capped at ``settings.max_retry_after``.
    """

    def __init__(
        self,
        settings: CtiaSettings,
        *,
        proxies: Mapping[str, str] | None = None,
        policy: RetryPolicy | None = None,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self.settings = settings
        self.logger = logger or logging.getLogger("exportkit_ctia")
        self.policy = policy or RetryPolicy(max_retry_after=settings.max_retry_after)
        self.timeout = (min(10.0, settings.timeout), settings.timeout)
        self.session = make_session(
            verify=settings.verify, proxies=proxies, user_agent=USER_AGENT, max_response_bytes=settings.max_response_mb * 1024 * 1024
        )
        self.tokens = TokenSource(
            self.session,
            settings.oauth_url,
            settings.client_id,
            settings.client_password,
            policy=self.policy,
            timeout=self.timeout,
            logger=self.logger,
        )
        self._auth = BearerAuth(self.tokens)
        #: this run's requests, counted against ``request_budget``
        self.budget = RequestBudget(settings.request_budget)

    def close(self) -> None:
        self.session.close()

    # --- plumbing -------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"{self.settings.base_url}{path}"

    def request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200,),
        done_already: Callable[[], requests.Response | None] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one API call with retries; return the answer if its status is in ``ok`` or 404.

        :param done_already: for a call that must not happen twice, asked before
            each retry: an answer here (the earlier attempt took effect though its
            answer was lost) is returned instead of sending again.

        :raises Deferred: retries spent, or Retry-After beyond the cap.
        :raises BudgetSpent: the run's request budget is spent, or CTIA's rate limit stopped the run.
        :raises RequestRejected: HTTP 400.
        :raises SinkAuthError: HTTP 401 even with a fresh token.
        :raises SinkError: any other unexpected status.
        """
        what = f"{method} {path.split('?', 1)[0]}"
        url = self.url(path)
        headers = {"Accept": "application/json", **kwargs.pop("headers", {})}

        attempts = 0

        def send() -> requests.Response:
            nonlocal attempts
            attempts += 1
            if attempts > 1 and done_already is not None:
                earlier = done_already()
                if earlier is not None:
                    return earlier
            self.budget.spend()  # every attempt is a request CTIA counts
            return self.session.request(method, url, auth=self._auth, timeout=self.timeout, headers=headers, **kwargs)

        try:
            response = self.policy.call(send, what=what, logger=self.logger)
        except RetriesExhausted as exc:
            if exc.lasting:  # TLS or an unknown host: the next run would fail the same way
                raise SinkError(f"cannot reach CTIA at {self.settings.base_url}: {exc}") from None
            if exc.retry_after is not None:
                # The organisation's hourly limit is spent: asking again in this run
                # only adds refused requests. Wait for the next run instead.
                self.budget.stop(f"CTIA's rate limit is reached (it asks to retry after {exc.retry_after:.0f}s)")
            raise Deferred(f"CTIA {exc}", retry_after=exc.retry_after) from None
        except requests.RequestException as exc:  # an answer over the size cap, an unusable URL
            raise SinkError(f"CTIA {what}: {exc}") from None
        if 300 <= response.status_code < 400:
            raise SinkError(redirect_refusal(f"CTIA at {self.settings.base_url}", what, response, "api_url"))
        if response.status_code in ok or response.status_code == 404:
            return response
        if response.status_code == 400:
            text = _text(response)
            limit = None
            if "max nb of entities" in text or "max number of entities" in text:
                try:
                    limit = int(text.strip('"').rsplit(":", 1)[1])
                except (IndexError, ValueError):
                    limit = None
            raise RequestRejected(f"CTIA refused the request ({what}): HTTP 400 {text}", max_entities=limit)
        if response.status_code == 401:
            raise SinkAuthError(f"CTIA refuses the tokens of client id {self.settings.client_id!r} ({what}: HTTP 401)")
        if response.status_code == 403:
            raise SinkError(
                f"CTIA denied {what} to client id {self.settings.client_id!r} (HTTP 403 {_text(response, 200)}); "
                "the API client needs the private-intel read and write scopes"
            )
        raise SinkError(f"unexpected answer from CTIA to {what}: HTTP {response.status_code} {_text(response, 200)}")

    # --- calls -------------------------------------------------------------------------

    def authenticate(self) -> float:
        """Get a token now (fail fast on bad credentials); returns its lifetime in seconds."""
        self.tokens.token()
        return float(self.tokens.lifetime or 0)

    def import_bundle(self, bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``POST /ctia/bundle/import`` looking up version XIDs only (:func:`~exportkit_ctia.xids.lookup_prefixes`); returns the ``results``."""
        prefixes = quote(",".join(lookup_prefixes(self.settings)), safe=",")
        # orjson: 1 ms instead of 30 ms for a bundle of 2,000 judgements (it refuses NaN as json= would).
        body = orjson.dumps(bundle)
        response = self.request("POST", f"/ctia/bundle/import?external-key-prefixes={prefixes}", data=body,
                                headers={"Content-Type": "application/json"})
        if response.status_code == 404:
            raise SinkError(f"CTIA has no bundle import at {self.url('/ctia/bundle/import')} (HTTP 404); check api_url")
        try:
            return list(response.json()["results"])
        except (ValueError, KeyError, TypeError):
            raise Deferred("CTIA answered the bundle import without results") from None

    def expire_judgement(self, long_id: str, reason: str) -> bool:
        """``POST /ctia/judgement/<short id>/expire``; ``False`` when CTIA does not know the id (done too).

        CTIA appends the reason on every expiry, so a retry (after a timeout
        or a 5xx, whose request may have been carried out) first reads the
        judgement and does not expire it again when its reason already ends
        with this one.
        """
        reason = reason[:EXPIRY_REASON_MAX]
        path = f"/ctia/judgement/{quote(short_id(long_id), safe='')}"

        def done_already() -> requests.Response | None:
            response = self.request("GET", path)
            if response.status_code == 200 and str(response.json().get("reason", "")).endswith(reason):
                return response
            return None

        response = self.request("POST", f"{path}/expire", params={"reason": reason}, done_already=done_already)
        return response.status_code != 404

    def bulk_get(self, plural: str, long_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """``GET /ctia/bulk?<plural>=<id>&...``, :data:`BULK_READ_IDS` ids per request.

        :returns: each asked id -> the entity CTIA holds, or ``None`` when CTIA
            does not know it (or does not show it to this client).
        """
        out: dict[str, dict[str, Any] | None] = {}
        unique = list(dict.fromkeys(long_ids))
        for start in range(0, len(unique), BULK_READ_IDS):
            chunk = unique[start : start + BULK_READ_IDS]
            response = self.request("GET", "/ctia/bulk", params=[(plural, short_id(i)) for i in chunk])
            if response.status_code == 404:
                raise SinkError(f"CTIA has no bulk read at {self.url('/ctia/bulk')} (HTTP 404); check api_url")
            try:
                found = response.json().get(plural) or []
            except (ValueError, AttributeError):
                raise Deferred("CTIA answered the bulk read without entities") from None
            for asked, entity in zip(chunk, list(found) + [None] * (len(chunk) - len(found))):
                out[asked] = entity if isinstance(entity, dict) else None
        return out

    def judgements_with_xids(self, xids: Sequence[str]) -> list[dict[str, Any]]:
        """Every judgement carrying one of ``xids`` (live or not), by search, :data:`SEARCH_XIDS` XIDs per query."""
        out: list[dict[str, Any]] = []
        for start in range(0, len(xids), SEARCH_XIDS):
            group = " OR ".join(f'"{x}"' for x in xids[start : start + SEARCH_XIDS])
            offset = 0
            while True:
                response = self.request("GET", "/ctia/judgement/search", params={"query": f"external_ids:({group})", "limit": SEARCH_PAGE, "offset": offset})
                try:
                    page = list(response.json()) if response.status_code != 404 else []
                except (ValueError, TypeError):
                    raise Deferred("CTIA answered the judgement search without a list") from None
                out += [j for j in page if isinstance(j, dict)]
                if len(page) < SEARCH_PAGE:
                    break
                offset += len(page)
        return out

    def has_external_id(self, entity: str, xid: str) -> bool:
        """True when CTIA holds at least one ``entity`` carrying ``xid`` (one small read)."""
        response = self.request("GET", f"/ctia/{entity}/external_id/{quote(xid, safe='')}", params={"limit": 1})
        return response.status_code != 404 and bool(response.json())

    def by_external_id(self, entity: str, xid: str) -> list[dict[str, Any]]:
        """``GET /ctia/<entity>/external_id/<xid>`` (empty when none)."""
        response = self.request("GET", f"/ctia/{entity}/external_id/{quote(xid, safe='')}")
        if response.status_code == 404:
            return []
        return list(response.json())

    def search_judgements(self, query: str, *, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        """``GET /ctia/judgement/search`` with a Lucene ``query``: one page of judgements."""
        response = self.request("GET", "/ctia/judgement/search", params={"query": query, "limit": limit, "offset": offset})
        return [] if response.status_code == 404 else list(response.json())

    def get(self, entity: str, long_id: str) -> dict[str, Any] | None:
        """``GET /ctia/<entity>/<short id>``, ``None`` on 404."""
        response = self.request("GET", f"/ctia/{entity}/{quote(short_id(long_id), safe='')}")
        return None if response.status_code == 404 else response.json()

    def create_feed(self, body: Mapping[str, Any], xid: str) -> dict[str, Any]:
        """Return the feed carrying ``xid``, creating it (``POST /ctia/feed``) when there is none.

        Feeds cannot go through a bundle, so the lookup by external id is what
        keeps a second run (or one after lost state) from creating another.
        """
        found = self.by_external_id("feed", xid)
        if found:
            return found[0]
        response = self.request("POST", "/ctia/feed", ok=(200, 201), json=body)
        if response.status_code == 404:
            raise SinkError(f"CTIA has no feed endpoint at {self.url('/ctia/feed')} (HTTP 404); check api_url")
        created: dict[str, Any] = response.json()
        return created

    def probe(self) -> None:
        """A cheap authenticated read, to show the API answers."""
        self.by_external_id("judgement", f"{self.settings.xid_prefix}-check")
