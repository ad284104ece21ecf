"""OAuth for the emulator: the three request shapes, three grants, server-side expiry.

``POST /api/token`` takes its parameters from the query string, a JSON body
or a form body (ThreatQ clients in the wild use all three), merged in that
order. Grants: ``password`` (``email``, ``password``, ``client_id``),
``client_credentials`` (HTTP Basic ``id:secret``, or ``client_id`` and
``client_secret`` parameters) and ``refresh_token``. Bad credentials give a
400 with an ``errors`` list, as ThreatQ does.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from typing import Any

import attrs

from exportkit.emulation import Request, Response, json_response

__all__ = ["Credentials", "TokenAuthority"]


@attrs.frozen
class Credentials:
    """The one user and OAuth client the emulator accepts (test values, not secrets of any real system)."""

    username: str = "analyst@example.com"
    password: str = "emulator-password"
    client_id: str = "exportkit-emulator"
    client_secret: str = "emulator-client-secret"


class TokenAuthority:
    """Issues, checks, expires and revokes tokens.

    :param credentials: what the token endpoint accepts.
    :param lifetime: seconds an access token lives (``expires_in``).
    """

    def __init__(self, credentials: Credentials, lifetime: float = 3600.0) -> None:
        self.credentials = credentials
        self.lifetime = lifetime
        self._lock = threading.Lock()
        self._access: dict[str, float] = {}  # token -> monotonic deadline
        self._refresh: set[str] = set()
        #: grants issued, by grant type (tests count renewals with it)
        self.issued: dict[str, int] = {"password": 0, "client_credentials": 0, "refresh_token": 0}

    def valid(self, request: Request) -> bool:
        """True when the request carries a live bearer token."""
        header = request.header("Authorization")
        if not header.lower().startswith("bearer "):
            return False
        token = header[7:].strip()
        with self._lock:
            deadline = self._access.get(token)
            return deadline is not None and time.monotonic() < deadline

    def expire_all(self) -> None:
        """Make every access token expired now (refresh tokens stay usable)."""
        with self._lock:
            self._access = {t: 0.0 for t in self._access}

    def revoke_all(self) -> None:
        """Forget every access and refresh token."""
        with self._lock:
            self._access.clear()
            self._refresh.clear()

    def _issue(self, grant: str) -> Response:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        with self._lock:
            self._access[access] = time.monotonic() + self.lifetime
            self._refresh.add(refresh)
            self.issued[grant] += 1
        return json_response({"access_token": access, "token_type": "Bearer",
                              "expires_in": int(self.lifetime) if self.lifetime >= 1 else self.lifetime,
                              "refresh_token": refresh})

    def token_endpoint(self, request: Request) -> Response:
        """``POST /api/token``."""
        params: dict[str, Any] = dict(request.query)
        content_type = request.header("Content-Type").lower()
        if request.body:
            if "json" in content_type:
                try:
                    body = request.json()
                except ValueError:
                    return json_response({"errors": ["The request body is not valid JSON."]}, 400)
                if isinstance(body, dict):
                    params.update(body)
            else:
                params.update(request.form())
        basic_id = basic_secret = None
        header = request.header("Authorization")
        if header.lower().startswith("basic "):
            try:
                basic_id, _, basic_secret = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
            except ValueError:
                return json_response({"errors": ["Malformed Basic authorization header."]}, 400)
        grant = str(params.get("grant_type") or ("password" if "email" in params else "client_credentials" if basic_id else ""))
        creds = self.credentials
        if grant == "password":
            ok = (params.get("email") == creds.username and params.get("password") == creds.password
                  and params.get("client_id") == creds.client_id)
            return self._issue(grant) if ok else _invalid("The user credentials were incorrect.")
        if grant == "client_credentials":
            cid = basic_id if basic_id is not None else params.get("client_id")
            secret = basic_secret if basic_id is not None else params.get("client_secret")
            ok = cid == creds.client_id and secret == creds.client_secret
            return self._issue(grant) if ok else _invalid("Client authentication failed.")
        if grant == "refresh_token":
            token = str(params.get("refresh_token") or "")
            with self._lock:
                ok = token in self._refresh
                self._refresh.discard(token)  # a refresh token is good once
            return self._issue(grant) if ok else _invalid("The refresh token is invalid.")
        return json_response({"error": "unsupported_grant_type", "errors": [f"Unsupported grant type {grant!r}."]}, 400)


def _invalid(message: str) -> Response:
    return json_response({"error": "invalid_grant", "errors": [message]}, 400)
