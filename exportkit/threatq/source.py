"""The ``threatq`` source: settings for the ``[source]`` table and the :class:`~exportkit.sources.Source`.

:data:`SOURCE_TYPE` is what :func:`exportkit.sources.source_types` loads for
``source.type = "threatq"``. The source signs in on :meth:`ThreatQSource.open`
(so bad credentials or a wrong collection name end the run before any sink
is touched), then :meth:`ThreatQSource.pull` runs the collection's saved
query over a ``touched_at`` window with keyset paging
(:func:`exportkit.threatq.paging.iter_indicators`) and normalises each
indicator (:func:`exportkit.threatq.normalize.indicator_from_threatq`).

:meth:`ThreatQSource.now` is ThreatQ's own clock (from the ``Date`` header
of its last answer), so the engine ends the pull window at ThreatQ's time,
not this host's. :meth:`ThreatQSource.current_ids` raises
:class:`~exportkit.sources.IncompleteRead` when it read fewer ids than the
collection holds, so a reconcile never withdraws what it did not read.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import urlsplit

import attrs

from exportkit.errors import SourceError
from exportkit.pull import read_ahead
from exportkit.hookspecs import hookimpl
from exportkit.records import TLPS
from exportkit.secrets import Secret, latin1_problem
from exportkit.settings import ConfigPath, setting
from exportkit.sources import BadRecord, IncompleteRead, PullItem, SourceType
from exportkit.threatq.client import ThreatQClient, base_url, host_name
from exportkit.threatq.collections import Collection, find_collection, load_catalogues
from exportkit.threatq.normalize import indicator_from_threatq
from exportkit.threatq.paging import DEFAULT_FIELDS, TIME_FIELDS, iter_indicators
from exportkit.threatq.times import zone

__all__ = ["ThreatQSettings", "ThreatQSource", "SOURCE_TYPE", "make_client", "exportkit_source_types"]

#: pages fetched ahead of the one being normalised (each about 0.8 MB of JSON at 500 indicators)
PAGES_AHEAD = 2


def _check_host(value: str) -> str | None:
    try:
        base_url(value)
    except ValueError as exc:
        return str(exc)
    return None


def _check_zone(value: str) -> str | None:
    try:
        zone(value)
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
    pages_in_flight: int = setting(
        3, minimum=1, maximum=8,
        help="Page requests sent at once: each page with the pages after it, so a WAN's round trips overlap (1: one at a time).",
    )
    timeout: float = setting(60.0, help="Seconds to wait for each ThreatQ answer; a whole request (connecting included) gets at most this plus 10 seconds.", minimum=1, maximum=3600)
    max_response_mb: int = setting(64, help="Largest ThreatQ answer accepted, in MiB; a larger one ends the run with an error.", minimum=1, maximum=4096)
    link_host: str | None = setting(None, help="Host name for links back to ThreatQ (default: the host's name).")
    source_name: str = setting("ThreatQ", help="The source name records carry.")
    timezone: str = setting(
        "UTC", check=_check_zone, example="Europe/Berlin",
        help="The appliance's time zone (an IANA name): ThreatQ's times carry none, so they and the window bounds are read in it.",
    )
    window_field: str = setting(
        "touched_at", choices=TIME_FIELDS,
        help="The time the pull window and sort use: touched_at also moves when an indicator's sources, their TLP "
             "or its attributes change; updated_at does not.",
    )
    unknown_tlp: str = setting(
        "amber", choices=(*TLPS, "none"),
        help='The TLP of an indicator whose sources give none ("none": leave it unknown to the sinks).',
    )
    with_blocks: str | None = setting(
        None, example="attributes,sources,score,type,status,tags",
        help="with= blocks for the indicators query, only for a ThreatQ that serves attributes and sources "
             "through with= instead of the fields list.",
    )

    @property
    def grant(self) -> str:
        """The grant in effect: ``client_credentials`` when chosen, or when only a client secret is given."""
        if self.auth == "client_credentials" or (self.client_secret is not None and self.password is None and not self.username):
            return "client_credentials"
        return "password"

    @property
    def scope(self) -> str:
        """What this source reads, as a stable string: ThreatQ's address and the collection's name.

        The host is taken however it is written (``tq.example.com``,
        ``https://TQ.example.com/api``: the same scope). Sinks namespace what
        they create with it (:attr:`exportkit.context.SinkContext.namespace`).
        """
        try:
            parts = urlsplit(base_url(self.host))
            where = f"{parts.netloc.lower()}{parts.path}"
        except ValueError:
            where = self.host.strip().lower()
        return f"threatq {where} {self.collection}"

    def check(self) -> Iterable[tuple[str, str]]:
        """Cross-field rules: each grant needs its own credentials."""
        if self.grant == "password":
            if not self.username:
                yield "username", "is required for the password grant (or set client_secret and auth = \"client_credentials\")"
            if self.password is None or not self.password:
                yield "password", "is required for the password grant"
        elif self.client_secret is None or not self.client_secret:
            yield "client_secret", "is required for auth = \"client_credentials\""
        else:
            problem = latin1_problem(self.client_secret)  # sent in a Basic Authorization header
            if problem:
                yield "client_secret", problem


def make_client(settings: ThreatQSettings, *, config_dir: Path | None = None, logger: Any = None) -> ThreatQClient:
    """A :class:`ThreatQClient` for ``settings`` (a relative ``ca_bundle`` starts at ``config_dir``)."""
    ca: str | None = settings.ca_bundle
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
        max_response_bytes=settings.max_response_mb * 1024 * 1024,
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
        self.tz = zone(settings.timezone)

    def __repr__(self) -> str:
        return f"ThreatQSource(host={self.settings.host!r}, collection={self.settings.collection!r})"

    def open(self) -> None:
        """Sign in, find the collection and load the type and status catalogues.

        :raises SourceAuthError: credentials rejected. :raises SourceError: anything else.
        """
        if self.client is None:
            self.client = make_client(self.settings, config_dir=self.config_dir, logger=self.log)
        self.client.authenticate()
        user = self.settings.username if self.settings.grant == "password" else f"OAuth client {self.settings.client_id}"
        self.collection = find_collection(self.client, self.settings.collection, user=user)
        self.types, self.statuses = load_catalogues(self.client)
        self.log.info("ThreatQ at %s: Data Collection %r (id %s)", self.client.base_url, self.collection.name, self.collection.id)

    def _ready(self) -> tuple[ThreatQClient, Collection]:
        if self.client is None or self.collection is None:
            self.open()
        assert self.client is not None and self.collection is not None
        return self.client, self.collection

    def now(self) -> datetime | None:
        """ThreatQ's clock now (never earlier than it), from its last answer's ``Date`` header; ``None`` before any.

        The engine ends the pull window here: this host's clock may be minutes
        away from ThreatQ's, and a window ending at it would delay or lose changes.
        """
        return self.client.server_now() if self.client is not None else None

    def pull(self, since: datetime | None, until: datetime | None) -> Iterator[PullItem]:
        """Yield records with ``since <= touched_at < until`` by ``(touched_at, id)``, bad ones as :class:`BadRecord`.

        (``window_field`` may choose ``updated_at`` instead.) A record's
        ``updated_at`` is that time. An indicator changed while this runs is
        yielded later in this pull (when its new time is before ``until``) or by
        the next pull from the same ``since``; none is lost (keyset paging).

        :raises SourceError: besides the client's errors, a page came without
            any ``sources`` although the query asked for them (TLP unknowable).
        """
        client, collection = self._ready()
        self.total = None

        def set_total(total: int) -> None:
            self.total = total

        pages = iter_indicators(client, collection.api_query, since=since, until=until,
                                page_size=self.settings.page_size, on_total=set_total,
                                fields=DEFAULT_FIELDS, with_=self.settings.with_blocks, require=("sources",),
                                time_field=self.settings.window_field, tz=self.tz,
                                pages_in_flight=self.settings.pages_in_flight)
        unknown_tlp = None if self.settings.unknown_tlp == "none" else self.settings.unknown_tlp
        # The next pages are fetched while this one is normalised: over a WAN the
        # round trips hide behind the CPU work instead of adding to it.
        for page in read_ahead(pages, self.settings.page_size, PAGES_AHEAD, name="exportkit-threatq-pages"):
            for raw in page:
                item = indicator_from_threatq(raw, types=self.types, statuses=self.statuses,
                                              link_host=self.link_host, source_name=self.name, tz=self.tz,
                                              time_field=self.settings.window_field, unknown_tlp=unknown_tlp)
                if isinstance(item, BadRecord):
                    self.log.debug("ThreatQ indicator %s not usable: %s", item.source_id, item.reason)
                yield item

    def current_ids(self) -> Iterator[str]:
        """Yield the id of every indicator in the collection now (each once), asking only for ids and times.

        :raises IncompleteRead: after the last id, when fewer distinct ids were
            read than the collection holds (its ``total`` at the start and, asked
            again, at the end: an indicator removed during the pass is no loss).
        """
        client, collection = self._ready()
        seen: set[str] = set()
        totals: list[int] = []
        field = self.settings.window_field
        size = max(self.settings.page_size, 1000)
        pages = iter_indicators(client, collection.api_query, page_size=size,
                                fields=["id", field], time_field=field, tz=self.tz, on_total=totals.append,
                                pages_in_flight=self.settings.pages_in_flight)
        for raw in (raw for page in read_ahead(pages, size, PAGES_AHEAD, name="exportkit-threatq-ids") for raw in page):
            ident = raw.get("id")
            if ident in (None, ""):
                continue
            text = str(ident)
            if text not in seen:  # an item changed during the pass comes round again
                seen.add(text)
                yield text
        if totals and len(seen) < totals[0]:
            now_total = self._collection_total(client, collection)
            expected = min(totals[0], now_total if now_total is not None else totals[0])
            if len(seen) < expected:
                raise IncompleteRead(
                    f"read {len(seen)} ids of the {expected} that ThreatQ says Data Collection {collection.name!r} holds",
                    read=len(seen), total=expected,
                )

    def _collection_total(self, client: ThreatQClient, collection: Collection) -> int | None:
        body = client.post("/api/indicators/query", params={"limit": 1, "offset": 0}, json={**collection.api_query, "fields": ["id"]})
        total = body.get("total") if isinstance(body, dict) else None
        return total if isinstance(total, int) and not isinstance(total, bool) else None

    def check(self) -> list[str]:
        """Sign in and describe what was found, for ``exportkit check``."""
        client, collection = self._ready()
        total = self._collection_total(client, collection)
        clock = client.server_now()
        skew = ""
        if clock is not None:
            # The Date header has whole seconds; server_now() is its upper bound.
            ahead = (clock - timedelta(seconds=1) - datetime.now(timezone.utc)).total_seconds()
            skew = f"; its clock is {abs(ahead):.0f}s {'ahead of' if ahead >= 0 else 'behind'} this host's" if abs(ahead) >= 2 else ""
        who = self.settings.username if self.settings.grant == "password" else f"OAuth client {self.settings.client_id}"
        return [
            f"ThreatQ at {client.base_url}: signed in as {who} ({self.settings.grant} grant)",
            f"Data Collection {collection.name!r} (id {collection.id}): {total if total is not None else 'unknown number of'} indicators",
            f"catalogues: {len(self.types)} indicator types, {len(self.statuses)} statuses",
            f"times read in {self.settings.timezone}; window on {self.settings.window_field}{skew}",
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


#: the ``threatq`` source type, registered through the ``threatq`` entry point
SOURCE_TYPE = SourceType("threatq", ThreatQSettings, _factory)


@hookimpl
def exportkit_source_types() -> list[SourceType]:
    """This module is the ``threatq`` entry point: it provides the ``threatq`` source."""
    return [SOURCE_TYPE]
