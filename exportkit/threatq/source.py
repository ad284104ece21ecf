"""The ``threatq`` source: settings for the ``[source]`` table and the :class:`~exportkit.sources.Source`.

:data:`SOURCE_TYPE` is what :func:`exportkit.sources.source_types` loads for
``source.type = "threatq"``. The source signs in on :meth:`ThreatQSource.open`
(so bad credentials or a wrong collection name end the run before any sink
is touched), then :meth:`ThreatQSource.pull` runs the collection's saved
query over an ``updated_at`` window with keyset paging
(:func:`exportkit.threatq.collections.iter_indicators`) and normalises each
indicator (:func:`exportkit.threatq.normalize.indicator_from_threatq`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

import attrs

from exportkit.errors import SourceError
from exportkit.pull import read_ahead
from exportkit.secrets import Secret
from exportkit.settings import ConfigPath, setting
from exportkit.sources import BadRecord, PullItem, SourceType
from exportkit.threatq.client import ThreatQClient, base_url, host_name
from exportkit.threatq.collections import Collection, find_collection, iter_indicators, load_catalogues
from exportkit.threatq.normalize import indicator_from_threatq

__all__ = ["ThreatQSettings", "ThreatQSource", "SOURCE_TYPE", "make_client"]

#: pages fetched ahead of the one being normalised (each about 0.8 MB of JSON at 500 indicators)
PAGES_AHEAD = 2


def _check_host(value: str) -> str | None:
    try:
        base_url(value)
    except ValueError as exc:
        return str(exc)
    return None


@attrs.frozen
class ThreatQSettings:
    """The ``[source]`` table for ThreatQ."""

    type: str = setting("threatq", help="The source type.", choices=("threatq",))
    host: str = setting(help="ThreatQ host name (https:// assumed), or a URL with scheme and port.",
                        example="tq.example.com", check=_check_host)
    client_id: str = setting(help="OAuth Client ID (ThreatQ: Settings > OAuth Management).", example="a1b2c3...")
    username: str | None = setting(None, help="The ThreatQ user's e-mail, for the password grant.", example="analyst@example.com")
    password: Secret | None = setting(None, help='The user\'s password: a literal, "env:NAME" or "file:PATH".', example="env:TQ_PASSWORD")
    client_secret: Secret | None = setting(
        None, help="OAuth client secret for the client_credentials grant; setting it without a password selects that grant.",
        example="env:TQ_CLIENT_SECRET",
    )
    auth: str = setting("password", help="How to sign in.", choices=("password", "client_credentials"))
    collection: str = setting(help="The name of the Data Collection to export, exactly as in ThreatQ.", example="CTR Export")
    status: str = setting("Review", help="Default status asked for by the first-run setup (informational).")
    verify_tls: bool = setting(True, help="Check ThreatQ's TLS certificate; turn off only for a lab appliance.")
    ca_bundle: ConfigPath | None = setting(None, help="A CA bundle (PEM) to check ThreatQ's certificate against.", example="/etc/ssl/tq-ca.pem")
    page_size: int = setting(500, help="Indicators per request.", minimum=1, maximum=5000)
    timeout: float = setting(60.0, help="Seconds to wait for each ThreatQ answer.", minimum=1, maximum=3600)
    link_host: str | None = setting(None, help="Host name for links back to ThreatQ (default: the host's name).")
    source_name: str = setting("ThreatQ", help="The source name records carry.")

    @property
    def grant(self) -> str:
        """The grant in effect: ``client_credentials`` when chosen, or when only a client secret is given."""
        if self.auth == "client_credentials" or (self.client_secret is not None and self.password is None and not self.username):
            return "client_credentials"
        return "password"

    def check(self) -> Iterable[tuple[str, str]]:
        """Cross-field rules: each grant needs its own credentials."""
        if self.grant == "password":
            if not self.username:
                yield "username", "is required for the password grant (or set client_secret and auth = \"client_credentials\")"
            if self.password is None or not self.password:
                yield "password", "is required for the password grant"
        elif self.client_secret is None or not self.client_secret:
            yield "client_secret", "is required for auth = \"client_credentials\""


def make_client(settings: ThreatQSettings, *, config_dir: Path | None = None, logger: Any = None) -> ThreatQClient:
    """A :class:`ThreatQClient` for ``settings`` (a relative ``ca_bundle`` starts at ``config_dir``)."""
    ca = settings.ca_bundle
    if ca and config_dir is not None and not Path(ca).expanduser().is_absolute():
        ca = str(Path(config_dir) / ca)
    return ThreatQClient(
        settings.host,
        client_id=settings.client_id,
        username=settings.username,
        password=settings.password,
        client_secret=settings.client_secret,
        auth=settings.grant,
        verify_tls=settings.verify_tls,
        ca_bundle=str(Path(ca).expanduser()) if ca else None,
        timeout=settings.timeout,
        logger=logger,
    )


class ThreatQSource:
    """Indicators of one ThreatQ Data Collection.

    :param settings: the parsed ``[source]`` table.
    :param config_dir: the instance's config folder (relative paths start there).
    :param logger: where to log (never secrets).
    """

    def __init__(self, settings: ThreatQSettings, *, config_dir: Path | None = None, logger: Any = None) -> None:
        self.settings = settings
        self.config_dir = config_dir
        self.log = logger or logging.getLogger("exportkit.threatq")
        self.name = settings.source_name
        #: the number of items the current pull will yield, once the first page said so
        self.total: int | None = None
        self.link_host = settings.link_host or host_name(settings.host)
        self.client: ThreatQClient | None = None
        self.collection: Collection | None = None
        self.types: dict[int, str] = {}
        self.statuses: dict[int, str] = {}

    def __repr__(self) -> str:
        return f"ThreatQSource(host={self.settings.host!r}, collection={self.settings.collection!r})"

    def open(self) -> None:
        """Sign in, find the collection and load the type and status catalogues.

        :raises SourceAuthError: credentials rejected. :raises SourceError: anything else.
        """
        if self.client is None:
            self.client = make_client(self.settings, config_dir=self.config_dir, logger=self.log)
        self.client.authenticate()
        self.collection = find_collection(self.client, self.settings.collection)
        self.types, self.statuses = load_catalogues(self.client)
        self.log.info("ThreatQ at %s: Data Collection %r (id %s)", self.client.base_url, self.collection.name, self.collection.id)

    def _ready(self) -> tuple[ThreatQClient, Collection]:
        if self.client is None or self.collection is None:
            self.open()
        assert self.client is not None and self.collection is not None
        return self.client, self.collection

    def pull(self, since: datetime | None, until: datetime | None) -> Iterator[PullItem]:
        """Yield records with ``since <= updated_at < until`` by ``(updated_at, id)``, bad ones as :class:`BadRecord`.

        An indicator changed while this runs is yielded later in this pull
        (when its new ``updated_at`` is before ``until``) or by the next pull
        from the same ``since``; none is lost (keyset paging).
        """
        client, collection = self._ready()
        self.total = None

        def set_total(total: int) -> None:
            self.total = total

        pages = iter_indicators(client, collection.api_query, since=since, until=until,
                                page_size=self.settings.page_size, on_total=set_total)
        # The next pages are fetched while this one is normalised: over a WAN the
        # round trips hide behind the CPU work instead of adding to it.
        for page in read_ahead(pages, self.settings.page_size, PAGES_AHEAD, name="exportkit-threatq-pages"):
            for raw in page:
                item = indicator_from_threatq(raw, types=self.types, statuses=self.statuses,
                                              link_host=self.link_host, source_name=self.name)
                if isinstance(item, BadRecord):
                    self.log.debug("ThreatQ indicator %s not usable: %s", item.source_id, item.reason)
                yield item

    def current_ids(self) -> Iterator[str]:
        """Yield the id of every indicator in the collection now (each once), asking only for id and updated_at."""
        client, collection = self._ready()
        seen: set[str] = set()
        size = max(self.settings.page_size, 1000)
        pages = iter_indicators(client, collection.api_query, page_size=size, with_=None, fields=["id", "updated_at"])
        for raw in (raw for page in read_ahead(pages, size, PAGES_AHEAD, name="exportkit-threatq-ids") for raw in page):
            ident = raw.get("id")
            if ident in (None, ""):
                continue
            text = str(ident)
            if text not in seen:  # an item changed during the pass comes round again
                seen.add(text)
                yield text

    def check(self) -> list[str]:
        """Sign in and describe what was found, for ``exportkit check``."""
        client, collection = self._ready()
        body = client.post("/api/indicators/query", params={"limit": 1, "offset": 0}, json=dict(collection.api_query))
        total = body.get("total") if isinstance(body, dict) else None
        who = self.settings.username if self.settings.grant == "password" else f"OAuth client {self.settings.client_id}"
        return [
            f"ThreatQ at {client.base_url}: signed in as {who} ({self.settings.grant} grant)",
            f"Data Collection {collection.name!r} (id {collection.id}): {total if total is not None else 'unknown number of'} indicators",
            f"catalogues: {len(self.types)} indicator types, {len(self.statuses)} statuses",
        ]

    def close(self) -> None:
        """Close the HTTP session."""
        if self.client is not None:
            self.client.close()
            self.client = None


def _factory(settings: ThreatQSettings, *, config_dir: Path | None = None, logger: Any = None) -> ThreatQSource:
    if not isinstance(settings, ThreatQSettings):
        raise SourceError("the threatq source needs ThreatQSettings")
    return ThreatQSource(settings, config_dir=config_dir, logger=logger)


#: the ``threatq`` source type, loaded by :func:`exportkit.sources.source_types`
SOURCE_TYPE = SourceType("threatq", ThreatQSettings, _factory)
