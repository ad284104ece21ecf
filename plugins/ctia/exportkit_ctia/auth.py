"""OAuth2 client credentials for CTIA (IROH tokens), as a requests auth object.

* :class:`TokenSource` asks the token endpoint for a token (HTTP Basic with
  the client id and password, form body ``grant_type=client_credentials``,
  ``Accept: application/json``) and reuses it until shortly before it
  expires (IROH tokens live 600 s). Transport faults are retried with the
  shared :class:`~exportkit.http.RetryPolicy`; rejected credentials raise
  :class:`~exportkit.errors.SinkAuthError`, naming the client id only.
* :class:`BearerAuth` puts the token on every request and, on a 401, renews
  the token once and repeats the request (IROH has no refresh token).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import requests
from requests.auth import AuthBase, HTTPBasicAuth

from exportkit.errors import SinkAuthError, SinkError, TransientError
from exportkit.http import DEFAULT_TIMEOUT, RetriesExhausted, RetryPolicy
from exportkit.secrets import Secret

__all__ = ["TokenSource", "BearerAuth"]

#: renew this long before expiry at most (and never later than 4/5 of a short lifetime)
RENEW_MARGIN = 60.0


class TokenSource:
    """Gets and caches access tokens.

    :param session: the session to send token requests with (its proxies and TLS settings apply).
    :param token_url: the IROH token endpoint.
    :param client_id: the API client id.
    :param client_password: its password (sent only in the Basic auth header).
    :param policy: how transport faults are retried.
    :param timeout: requests timeout.
    :param clock: monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        session: requests.Session,
        token_url: str,
        client_id: str,
        client_password: Secret,
        *,
        policy: RetryPolicy | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self.session = session
        self.token_url = token_url
        self.client_id = client_id
        self._password = client_password
        self.policy = policy or RetryPolicy()
        self.timeout = timeout
        self.clock = clock
        self.logger = logger or logging.getLogger("exportkit_ctia.auth")
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        #: seconds the last token was granted for
        self.lifetime: float | None = None
        #: tokens fetched so far
        self.fetched = 0

    def token(self) -> str:
        """A token valid for a while yet, fetched when there is none or it is about to expire."""
        with self._lock:
            if self._token is None or self.clock() >= self._renew_at:
                self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        """Forget the cached token (the server refused it)."""
        with self._lock:
            self._token = None

    def _fetch(self) -> None:
        what = f"POST {self.token_url}"

        def send() -> requests.Response:
            return self.session.post(
                self.token_url,
                data={"grant_type": "client_credentials"},
                headers={"Accept": "application/json"},
                auth=HTTPBasicAuth(self.client_id, self._password.reveal()),
                timeout=self.timeout,
            )

        started = self.clock()
        try:
            response = self.policy.call(send, what=what, logger=self.logger)
        except RetriesExhausted as exc:
            if exc.lasting:  # TLS or an unknown host: the next run would fail the same way
                raise SinkError(f"cannot get a CTIA token from {self.token_url}: {exc}") from None
            raise TransientError(f"cannot get a CTIA token from {self.token_url}: {exc}") from None
        except requests.RequestException as exc:  # an answer over the size cap, an unusable URL
            raise SinkError(f"cannot get a CTIA token from {self.token_url}: {exc}") from None
        if 300 <= response.status_code < 400:
            location = response.headers.get("Location", "?")[:200]
            raise SinkError(
                f"the token endpoint {self.token_url} redirected (HTTP {response.status_code}) to {location}; redirects are not "
                "followed, so the client password never goes to another address: set token_url to the final address"
            )
        if response.status_code in (400, 401, 403):
            raise SinkAuthError(
                f"the token endpoint {self.token_url} refused client id {self.client_id!r} "
                f"(HTTP {response.status_code}{_error_code(response)}); check client_id and client_password"
            )
        if response.status_code != 200:
            raise SinkError(f"unexpected answer from the token endpoint {self.token_url}: HTTP {response.status_code}")
        try:
            data = response.json()
            token = str(data["access_token"])
            lifetime = float(data.get("expires_in", 600))
        except (ValueError, KeyError, TypeError):
            raise SinkError(f"the token endpoint {self.token_url} answered without an access token") from None
        self._token = token
        self.lifetime = lifetime
        self.fetched += 1
        self._renew_at = started + lifetime - min(RENEW_MARGIN, lifetime / 5)
        self.logger.debug("CTIA token obtained for client id %s, valid %.0fs", self.client_id, lifetime)


def _error_code(response: requests.Response) -> str:
    """The OAuth error code of an answer (never its description, which might echo input)."""
    try:
        code = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    return f", {code}" if isinstance(code, str) and len(code) < 64 else ""


class BearerAuth(AuthBase):
    """``Authorization: Bearer <token>``, renewing the token once on a 401."""

    def __init__(self, tokens: TokenSource) -> None:
        self.tokens = tokens

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.tokens.token()}"
        request.register_hook("response", self._renew_on_401)  # type: ignore[no-untyped-call]  # untyped in requests' stubs
        return request

    def _renew_on_401(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        if response.status_code != 401:
            return response
        # Read and release the refused answer so its connection can be reused.
        response.content  # noqa: B018
        response.close()
        self.tokens.invalidate()
        retry = response.request.copy()
        retry.headers["Authorization"] = f"Bearer {self.tokens.token()}"
        # The adapter does not run response hooks, so this retry cannot loop.
        second = response.connection.send(retry, **kwargs)
        second.history.append(response)
        second.request = retry
        return second

    def __repr__(self) -> str:
        return f"BearerAuth(client_id={self.tokens.client_id!r})"
