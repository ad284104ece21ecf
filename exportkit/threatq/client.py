"""A small ThreatQ REST client: one session, OAuth tokens, retries, clear errors.

:class:`ThreatQClient` speaks to ``<base>/api/...`` on one
:class:`requests.Session` built by :func:`exportkit.http.make_session` with
``proxies=None``: ThreatQ sits inside the network, so its traffic never goes
through the instance proxy (that one is for sink traffic only), and proxy
environment variables are ignored too.

Contracts:

* Every call has a timeout (``(connect, read)``; ``timeout`` is the read part).
* The bearer token is reused until shortly before ``expires_in`` runs out
  (30 minutes when the server does not say), renewed once on a 401 and the
  call repeated.
* Reads (every GET, and the POST of ``/api/indicators/query``, which only
  reads) are retried with jittered backoff on connection errors, timeouts and
  5xx/429 through :class:`exportkit.http.RetryPolicy`.
* Failures raise :class:`~exportkit.errors.SourceAuthError` (credentials
  rejected; the message names the user, never the password) or
  :class:`~exportkit.errors.SourceError` (anything else, with ThreatQ's own
  error text when it sent one, including an ``errors`` body inside a 200).
  A 403 on an API call is a :class:`~exportkit.errors.SourceError`: ThreatQ
  documents it as usually a bad request, not a credentials failure.
  No message, log line or repr carries a password, secret or token.
* :meth:`ThreatQClient.server_now` is ThreatQ's clock, read from the ``Date``
  header of the last answer (every HTTP server sends one, so this costs no
  request and no permission).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from collections.abc import Mapping
from typing import Any, Callable
from urllib.parse import urlsplit

import orjson
import requests

from exportkit.errors import SourceAuthError, SourceError, SourceUnavailable
from exportkit.http import RetriesExhausted, RetryPolicy, describe_failure, make_session
from exportkit.jsontext import JSONTooDeep
from exportkit.secrets import Secret, redact
from exportkit.transport import DEFAULT_MAX_RESPONSE_BYTES

__all__ = ["ThreatQClient", "base_url", "host_name", "error_text", "DEFAULT_TOKEN_LIFETIME"]

#: seconds a token is assumed to live when the token answer has no ``expires_in`` (the SDK's value)
DEFAULT_TOKEN_LIFETIME = 30 * 60
#: renew this many seconds before expiry at most (less for very short lifetimes)
_RENEW_MARGIN = 60.0
_CONNECT_TIMEOUT = 10.0


def base_url(host: str) -> str:
    """The base URL for a configured host: ``https://`` is assumed when no scheme is given.

    ``tq.example.com`` -> ``https://tq.example.com``;
    ``http://127.0.0.1:8080/`` -> ``http://127.0.0.1:8080``. A trailing ``/api``
    is dropped, since every path this client sends starts with it.

    :raises ValueError: the host is empty or its scheme is neither http nor https.
    """
    text = host.strip()
    if not text:
        raise ValueError("the ThreatQ host is empty")
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a ThreatQ host or URL: {host!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/api"):
        path = path[: -len("/api")]
    return f"{parts.scheme}://{parts.netloc}{path}"


def host_name(host: str) -> str:
    """The bare host name of a configured host or URL (no scheme, port or path), for UI links."""
    try:
        return urlsplit(base_url(host)).hostname or host.strip()
    except ValueError:
        return host.strip()


def error_text(body: Any) -> str:
    """Flatten the error shapes ThreatQ uses into one line.

    Handles ``{"errors": [...]}`` (nested lists too), ``{"data": {"errors": {field: [msgs]}}}``,
    ``{"errors": {field: [msgs]}}``, ``{"message": ...}`` and ``{"error": ...}``.
    """
    if isinstance(body, Mapping):
        errors = body.get("errors")
        if errors is None and isinstance(body.get("data"), Mapping):
            errors = body["data"].get("errors")
        if isinstance(errors, Mapping):  # {field: [messages]}
            return "; ".join(f"{field}: {error_text(msgs)}" for field, msgs in errors.items())
        if errors is not None:
            return error_text(errors)
        for key in ("message", "error", "error_description", "name"):
            if body.get(key):
                return str(body[key])
        return ""
    if isinstance(body, (list, tuple)):
        return "; ".join(t for t in (error_text(item) for item in body) if t)
    if body is None:
        return ""
    return str(body)


def _is_read(method: str, path: str) -> bool:
    # The indicators query is a POST but only reads, so repeating it is safe.
    return method == "GET" or (method == "POST" and path.rstrip("/").endswith("/query") and path.startswith("/api/indicators"))


class ThreatQClient:
    """One ThreatQ API endpoint with its credentials.

    :param host: a host name (``https://`` assumed) or a URL with scheme and port.
    :param client_id: the OAuth client id (Settings > OAuth Management).
    :param username: the user's e-mail, for the ``password`` grant.
    :param password: the user's password, for the ``password`` grant.
    :param client_secret: the client secret, for the ``client_credentials`` grant.
    :param auth: ``"password"`` or ``"client_credentials"``.
    :param verify_tls: check the server certificate (turn off only for lab appliances).
    :param ca_bundle: a CA bundle path; implies verification against it.
    :param timeout: read timeout in seconds for every call.
    :param retry: the retry policy for reads and token requests.
    :param clock: monotonic seconds, for token lifetimes (tests pass a fake).
    :param max_response_bytes: the largest answer accepted (a larger one is a :class:`SourceError`).
    """

    def __init__(
        self,
        host: str,
        *,
        client_id: str,
        username: str | None = None,
        password: Secret | None = None,
        client_secret: Secret | None = None,
        auth: str = "password",
        verify_tls: bool = True,
        ca_bundle: str | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if auth not in ("password", "client_credentials"):
            raise ValueError(f"auth must be 'password' or 'client_credentials' (got {auth!r})")
        self.base_url = base_url(host)
        self.client_id = client_id
        self.username = username
        self.auth = auth
        self._password = password
        self._client_secret = client_secret
        self.timeout = (min(_CONNECT_TIMEOUT, timeout), float(timeout))
        self.retry = retry or RetryPolicy()
        self.log = logger or logging.getLogger("exportkit.threatq")
        verify: bool | str = ca_bundle if ca_bundle else verify_tls
        if verify is False:
            self.log.warning("TLS certificate verification is off for ThreatQ at %s (verify_tls = false)", self.base_url)
        self.session = make_session(verify=verify, proxies=None, max_response_bytes=max_response_bytes)
        self._token: str | None = None
        self.clock = clock
        self._token_deadline = 0.0  # clock() value after which the token is renewed
        self._token_lock = threading.Lock()
        #: how many tokens this client obtained (tests and the run report read it)
        self.token_count = 0
        self._server_clock: tuple[datetime, float] | None = None  # (Date header, time.monotonic() when read)

    def __repr__(self) -> str:
        who = self.username if self.auth == "password" else f"client {self.client_id}"
        return f"ThreatQClient({self.base_url!r}, auth={self.auth!r}, user={who!r})"

    # -- tokens -------------------------------------------------------------------------

    @property
    def _who(self) -> str:
        if self.auth == "password":
            return f"user {self.username!r} (client id {self.client_id!r})"
        return f"OAuth client {self.client_id!r}"

    def authenticate(self) -> None:
        """Get a fresh token now; :class:`SourceAuthError` when the credentials are rejected."""
        with self._token_lock:
            self._fetch_token()

    def invalidate_token(self) -> None:
        """Forget the current token, so the next call gets a new one."""
        with self._token_lock:
            self._token = None

    def _bearer(self) -> str:
        with self._token_lock:
            if self._token is None or self.clock() >= self._token_deadline:
                self._fetch_token()
            assert self._token is not None
            return self._token

    def _fetch_token(self) -> None:
        url = self.base_url + "/api/token"
        if self.auth == "password":
            if not self.username or self._password is None:
                raise SourceAuthError("ThreatQ password login needs a username and a password")
            password = self._password

            def send() -> requests.Response:
                # The SDK's shape: grant and client id in the query, credentials as JSON.
                return self.session.post(
                    url,
                    params={"grant_type": "password", "client_id": self.client_id},
                    json={"email": self.username, "password": password.reveal()},
                    timeout=self.timeout,
                    allow_redirects=False,
                )

        else:
            if self._client_secret is None:
                raise SourceAuthError(f"ThreatQ client_credentials login for {self._who} needs a client secret")
            secret = self._client_secret

            def send() -> requests.Response:
                return self.session.post(
                    url,
                    params={"grant_type": "client_credentials"},
                    auth=(self.client_id, secret.reveal()),
                    timeout=self.timeout,
                    allow_redirects=False,
                )

        response = self._send_with_retries(send, what="POST /api/token")
        self._note_clock(response)
        if response.status_code in (400, 401, 403):
            detail = error_text(_json_or_none(response))
            raise SourceAuthError(
                redact(f"ThreatQ at {self.base_url} rejected the credentials of {self._who}" + (f": {detail}" if detail else ""))
            )
        if 300 <= response.status_code < 400:
            raise SourceError(
                f"ThreatQ at {self.base_url} redirected the token request (HTTP {response.status_code}); "
                "check the host and scheme (https://)"
            )
        if response.status_code >= 400:
            raise SourceError(f"ThreatQ at {self.base_url}: token request failed with HTTP {response.status_code}")
        body = _json_or_none(response)
        token = body.get("access_token") if isinstance(body, Mapping) else None
        if not token:
            raise SourceAuthError(f"ThreatQ at {self.base_url} gave no access token for {self._who}")
        try:
            lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (TypeError, ValueError):
            lifetime = float(DEFAULT_TOKEN_LIFETIME)
        # Renew a little early so a call never starts with a token about to die.
        margin = min(_RENEW_MARGIN, lifetime * 0.1)
        self._token = str(token)
        self._token_deadline = self.clock() + max(0.0, lifetime - margin)
        self.token_count += 1
        self.log.debug("ThreatQ token obtained for %s, valid %ds", self._who, int(lifetime))

    # -- calls --------------------------------------------------------------------------

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        """GET ``path`` (``/api/...``) and return the decoded JSON body."""
        return self.request("GET", path, params=params)

    def post(self, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None, retry: bool = True) -> Any:
        """POST ``json`` to ``path`` and return the decoded JSON body (``retry``: as for :meth:`request`)."""
        return self.request("POST", path, params=params, json=json, retry=retry)

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None, retry: bool = True) -> Any:
        """Send one API call with a valid token and return the decoded JSON body.

        Reads are retried with backoff unless ``retry`` is False (a page asked
        ahead, which the pull asks again when it is missing, is tried once).

        :raises SourceAuthError: the token was refused even after renewing it.
        :raises SourceError: unreachable, retries spent, an HTTP error or an ``errors`` body.
        """
        method = method.upper()
        url = self.base_url + path
        what = f"{method} {path}"
        retry_reads = retry and _is_read(method, path)
        for attempt in (1, 2):
            token = self._bearer()

            def send() -> requests.Response:
                return self.session.request(
                    method, url, params=params, json=json, timeout=self.timeout,
                    headers={"Authorization": f"Bearer {token}"}, allow_redirects=False,
                )

            if retry_reads:
                response = self._send_with_retries(send, what=what)
            else:
                response = self._send_once(send, what=what)
            self._note_clock(response)
            if response.status_code == 401 and attempt == 1:
                # Expired or revoked server-side before our deadline: renew once and repeat.
                self.log.info("%s: token refused (HTTP 401), renewing it", what)
                with self._token_lock:
                    if self._token == token:
                        self._token = None
                continue
            break
        return self._decode(response, what)

    def _decode(self, response: requests.Response, what: str) -> Any:
        status = response.status_code
        body = _json_or_none(response)
        if status == 401:
            raise SourceAuthError(f"ThreatQ at {self.base_url} refused the token of {self._who} twice ({what})")
        if status == 403:
            # ThreatQ documents 403 as usually a bad request: the query or a parameter, not the login.
            detail = error_text(body)
            raise SourceError(redact(
                f"ThreatQ {what} answered HTTP 403 (Forbidden) to {self._who}"
                + (f": {detail}" if detail else "")
                + ". ThreatQ documents 403 as usually a bad request (a query, field or parameter it refuses), "
                "not a credentials failure; check the Data Collection's saved query and the settings sent with it"
            ))
        if status >= 300:
            detail = error_text(body)
            raise SourceError(redact(f"ThreatQ {what} failed with HTTP {status}" + (f": {detail}" if detail else "")))
        if body is None and response.content and _too_deep(response):
            raise SourceError(f"ThreatQ {what} answered with JSON nested too deeply to read")
        if body is None and response.content:
            kind = response.headers.get("Content-Type", "unknown content")
            raise SourceError(f"ThreatQ {what} answered HTTP {status} with something that is not JSON ({kind})")
        if isinstance(body, Mapping) and body.get("errors"):
            # The SDK treats an errors key in a 2xx answer as a failure; so do we.
            raise SourceError(redact(f"ThreatQ {what} reported an error: {error_text(body) or 'unspecified error'}"))
        return body

    def _send_with_retries(self, send: Any, *, what: str) -> requests.Response:
        try:
            return self.retry.call(send, what=what, logger=self.log)
        except RetriesExhausted as exc:
            if exc.last_error is not None:
                # TLS and unknown host names do not mend by themselves; timeouts and refusals may.
                kind = SourceError if exc.lasting else SourceUnavailable
                raise kind(self._unreachable(what, exc.last_error)) from None
            status = exc.response.status_code if exc.response is not None else "?"
            detail = error_text(_json_or_none(exc.response)) if exc.response is not None else ""
            raise SourceUnavailable(
                redact(f"ThreatQ {what} kept failing (HTTP {status}) after {self.retry.attempts} attempts" + (f": {detail}" if detail else ""))
            ) from None
        except requests.RequestException as exc:  # invalid URL, TLS setup, ...: not worth retrying
            raise SourceError(self._unreachable(what, exc)) from None

    def _send_once(self, send: Any, *, what: str) -> requests.Response:
        try:
            response: requests.Response = send()
        except requests.RequestException as exc:
            raise SourceError(self._unreachable(what, exc)) from None
        return response

    def _unreachable(self, what: str, exc: BaseException) -> str:
        reason = describe_failure(exc, timeout=self.timeout)
        return redact(f"cannot reach ThreatQ at {self.base_url} ({what}): {reason}")

    # -- ThreatQ's clock ----------------------------------------------------------------

    def _note_clock(self, response: requests.Response) -> None:
        value = response.headers.get("Date") if response is not None else None
        if not value:
            return
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        self._server_clock = (moment.astimezone(timezone.utc), time.monotonic())

    def server_now(self) -> datetime | None:
        """ThreatQ's clock now, from the ``Date`` header of the last answer; ``None`` before any answer had one.

        The header has whole seconds, so this is an upper bound: ThreatQ's
        time when it answered was below the header's second plus one, and the
        time elapsed here since then is added. Every change ThreatQ stamped
        before this call is stamped earlier than the value returned.
        """
        if self._server_clock is None:
            return None
        moment, seen = self._server_clock
        return moment + timedelta(seconds=1 + (time.monotonic() - seen))

    def close(self) -> None:
        """Close the session's connections; the client can no longer be used."""
        self.session.close()

    def __enter__(self) -> ThreatQClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _too_deep(response: requests.Response) -> bool:
    try:
        response.json()
    except JSONTooDeep:
        return True
    except ValueError:
        return False
    return False


def _json_or_none(response: requests.Response | None) -> Any:
    """The body as JSON, or ``None`` when there is none or it is not JSON.

    Pages of indicators are large (about 0.8 MB per 500 with their blocks):
    orjson decodes them about 3x faster than the standard library, which was
    the largest cost of a pull. What orjson refuses but JSON readers commonly
    accept (NaN, integers past 64 bits, a non-UTF-8 charset) falls back to
    the standard decoder, so nothing that decoded before fails now. Integers
    are exact up to 64 bits (ThreatQ's ids and counts are 64-bit); orjson
    would read a longer one as a float, and a guard that scanned every page
    for such digit runs cost more than the decoding itself.
    """
    if response is None or not response.content:
        return None
    try:
        return orjson.loads(response.content)
    except ValueError:
        pass
    try:
        return response.json()
    except ValueError:
        return None
