"""A loopback CTIA (plus its IROH token endpoint) for tests, demos and ``exportkit emulate ctia``.

Example::

    from exportkit_ctia.emulator import CtiaEmulator

    with CtiaEmulator() as ctia:                # a free port on 127.0.0.1
        settings = ctia.sink_settings()         # api_url, token_url, client_id, client_password
        ...                                     # run the sink against it
        ctia.live_judgements()                  # what is valid now
        ctia.faults.fail_next(429, headers={"Retry-After": "1"})

Inspection (in process): :meth:`~CtiaEmulator.judgements`,
:meth:`~CtiaEmulator.live_judgements`, :meth:`~CtiaEmulator.live_by_observable`,
:meth:`~CtiaEmulator.entities`, :meth:`~CtiaEmulator.feeds`,
:meth:`~CtiaEmulator.feed_view`, :meth:`~CtiaEmulator.counts`. Over HTTP:
``GET /_inspect/counts``, ``GET /_inspect/live[?type=&value=]``,
``GET /_inspect/entities/<type>``, ``POST /_inspect/reset``,
``POST /_inspect/revoke-tokens``, ``POST /_inspect/expire?id=`` or
``?type=&value=`` (expire judgements behind the exporter's back, as another
tool would), each with the ``X-Emulator-Token`` header
(:attr:`~exportkit.emulation.ServedEmulator.control_headers`).

Besides the routes the sink uses, it answers ``GET /ctia/bulk`` (read many
entities at once) and refuses ``PUT /ctia/judgement/<id>`` with 403
``missing_capability``, as CTIA does for every API client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from exportkit.emulation import EmulatorServer, Faults, ServedEmulator
from exportkit_ctia.emulator.access import ORG_ID
from exportkit_ctia.emulator.app import CtiaApp

__all__ = ["CtiaEmulator", "CtiaApp", "DEFAULT_CLIENT_ID", "DEFAULT_CLIENT_SECRET"]

DEFAULT_CLIENT_ID = "client-emulator"
# A fixed test credential of a loopback emulator, not a secret.
DEFAULT_CLIENT_SECRET = "emulator-password"


class CtiaEmulator(ServedEmulator):
    """The CTIA emulator on 127.0.0.1, as a context manager (or :meth:`start`/:meth:`stop`).

    :param port: 0 picks a free port.
    :param client_id: the API client id accepted by the token endpoint.
    :param client_secret: its password.
    :param min_tlp: lowest TLP accepted (``green`` like CTIA's default, ``amber`` for strict tests).
    :param max_entities: most entities per bundle or bulk request.
    :param token_lifetime: seconds each token lives (600 like IROH; shorter to test renewal).
    :param clock: the emulator's "now" (aware UTC); tests whose export time is fixed pass one.
    :param org_rate_limit: API requests per rolling ``rate_window`` seconds for the whole
        organisation (every client); ``None`` (the default) for no limit, about 8000 like Cisco's.
    :param rate_window: seconds of that rolling window (3600 like Cisco's).
    :param red_owner_only: only the owner (and ``authorized_users``/``authorized_groups``)
        may read TLP red entities, as in CTIA; ``False`` lets the whole organisation read them.
    :param latency: seconds added before every answer (a WAN); :meth:`reset` keeps it.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        min_tlp: str = "green",
        max_entities: int = 2000,
        token_lifetime: float = 600,
        clock: Callable[[], datetime] | None = None,
        org_rate_limit: int | None = None,
        rate_window: float = 3600,
        red_owner_only: bool = True,
        latency: float = 0.0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        extra = {"clock": clock} if clock is not None else {}
        self.app = CtiaApp(
            client_id,
            client_secret,
            min_tlp=min_tlp,
            max_entities=max_entities,
            token_lifetime=token_lifetime,
            org_rate_limit=org_rate_limit,
            rate_window=rate_window,
            red_owner_only=red_owner_only,
            latency=latency,
            **extra,
        )
        self.server = EmulatorServer(self.app, port=port)
        self.app.store.base_url = self.server.url

    # --- lifecycle (start, stop, url, context manager: ServedEmulator) -----------

    #: the organisation (CTIA group) every client of the emulator belongs to, for ``authorized_groups``
    org_id = ORG_ID

    @property
    def token_url(self) -> str:
        """The sink's ``token_url``."""
        return f"{self.url}/iroh/oauth2/token"

    def sink_settings(self, **overrides: Any) -> dict[str, Any]:
        """A ``[sinks.ctia]`` table pointing at this emulator (raw, as TOML would give it)."""
        raw: dict[str, Any] = {
            "client_id": self.client_id,
            "client_password": self.client_secret,
            "api_url": self.url,
            "token_url": self.token_url,
        }
        raw.update(overrides)
        return raw

    # --- knobs ---------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """Planned 429/503/dropped connections and latency (:class:`exportkit.emulation.Faults`)."""
        return self.app.faults

    @property
    def calls(self) -> list[tuple[str, str]]:
        """Every request seen, as ``(method, path)``."""
        return self.app.calls

    def set_token_lifetime(self, seconds: float) -> None:
        self.app.token_lifetime = seconds

    def revoke_tokens(self) -> None:
        """Invalidate every issued token (the next API call gets a 401)."""
        self.app.revoke_tokens()

    def set_request_budget(self, requests: int | None, retry_after: int = 3600) -> None:
        """After ``requests`` more API calls, answer 429 with ``Retry-After: retry_after`` (``None``: no limit)."""
        self.app.request_budget = requests
        self.app.budget_retry_after = retry_after

    def expire_out_of_band(self, judgement_id: str | None = None, *, observable: tuple[str, str] | None = None,
                           reason: str = "") -> int:
        """Expire a judgement (by long or short id) or every live one of ``observable`` = ``(type, value)``
        the way another tool would, behind the exporter's back; returns how many were expired."""
        obs_type, value = observable if observable is not None else (None, None)
        return self.app.expire_out_of_band(judgement_id, observable_type=obs_type, value=value, reason=reason)

    def add_client(self, client_id: str, client_secret: str) -> None:
        """Accept another API client of the same organisation: it shares the rate limit, and reads as another identity."""
        self.app.add_client(client_id, client_secret)

    def set_org_rate_limit(self, limit: int | None, window: float = 3600) -> None:
        """The organisation may make ``limit`` API requests per rolling ``window`` seconds, then 429 (``None``: no limit)."""
        self.app.set_org_rate_limit(limit, window)

    def reset(self) -> None:
        """Forget every entity, token, fault and call."""
        self.app.reset()

    # --- inspection ----------------------------------------------------------------

    @property
    def tokens_issued(self) -> int:
        return self.app.tokens_issued

    def entities(self, entity_type: str) -> list[dict[str, Any]]:
        """Every stored entity of a type (``judgement``, ``indicator``, ``relationship``, ``feed``)."""
        return self.app.store.all(entity_type)

    def judgements(self) -> list[dict[str, Any]]:
        """Every stored judgement, live or expired."""
        return self.entities("judgement")

    def live_judgements(self, observable_type: str | None = None, value: str | None = None) -> list[dict[str, Any]]:
        """Judgements valid now, optionally for one observable."""
        return self.app.store.live_judgements(observable_type, value)

    def live_by_observable(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Live judgements grouped by ``(type, value)``."""
        out: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for judgement in self.live_judgements():
            key = (judgement["observable"]["type"], judgement["observable"]["value"])
            out.setdefault(key, []).append(judgement)
        return out

    def feeds(self) -> list[dict[str, Any]]:
        return self.entities("feed")

    def feed_view(self, feed_id: str | None = None) -> list[str]:
        """The sorted distinct observable values a feed shows now (the only feed when ``feed_id`` is None)."""
        feeds = self.feeds()
        feed = next(f for f in feeds if feed_id is None or f["id"] == feed_id or f["id"].endswith("/" + feed_id))
        return sorted({j["observable"]["value"] for j in self.app.store.feed_members(feed.get("indicator_id", ""))})

    def counts(self) -> dict[str, int]:
        """Entity counts by type, plus ``live_judgements``."""
        return self.app.store.counts()
