"""Settings of the CTIA sink (the ``[sinks.ctia]`` table).

Parsed by the core with :func:`exportkit.settings.parse_settings`, which
lists every problem at once. Choices are matched case-insensitively and
stored in CTIM's spelling (``malicious`` -> ``Malicious``), so the mapping
can put them in bodies as they are. Rules that span several keys live in
:meth:`CtiaSettings.check`.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterator

import attrs
import jinja2

from exportkit.secrets import Secret, latin1_problem
from exportkit.settings import ConfigPath, http_url, normalise_choice, setting, setting_info
from exportkit.templates import sandboxed_environment

__all__ = [
    "CtiaSettings",
    "REGIONS",
    "DISPOSITIONS",
    "CONFIDENCES",
    "SEVERITIES",
    "EXPIRATIONS",
    "DEFAULT_REASON",
]

#: region -> (private intel API base, IROH token URL)
REGIONS: dict[str, tuple[str, str]] = {
    "us": ("https://private.intel.amp.cisco.com", "https://visibility.amp.cisco.com/iroh/oauth2/token"),
    "eu": ("https://private.intel.eu.amp.cisco.com", "https://visibility.eu.amp.cisco.com/iroh/oauth2/token"),
    "apjc": ("https://private.intel.apjc.amp.cisco.com", "https://visibility.apjc.amp.cisco.com/iroh/oauth2/token"),
}
DISPOSITIONS = ("Clean", "Malicious", "Suspicious", "Common", "Unknown")
CONFIDENCES = ("Info", "Low", "Medium", "High", "None", "Unknown")
SEVERITIES = CONFIDENCES + ("Critical",)
EXPIRATIONS = ("2 Weeks", "1 Month", "6 Months", "1 Year", "5 Years", "Never")
DEFAULT_REASON = (
    "ThreatQ score {{ score }}, status {{ status }}{% if tags %}, tags: {{ tags|join(', ') }}{% endif %}"
)
# Letters, digits and a few separators: the prefix goes into the comma-separated
# external-key-prefixes query parameter and into every XID.
_XID_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")

#: the variables a reason template may use, with sample values for the settings check
REASON_SAMPLE: dict[str, Any] = {
    "score": 7,
    "status": "Active",
    "tags": ["sample"],
    "type": "ip",
    "type_name": "IP Address",
    "value": "192.0.2.1",
    "source_id": "1",
    "source": "ThreatQ",
    "sources": ["sample feed"],
    "tlp": "amber",
    "description": "",
    "attributes": {"sample": ["value"]},
    "expires_at": None,
    "link": None,
}


def reason_environment() -> jinja2.Environment:
    """The jinja2 environment for reason templates: exportkit's sandbox (strict, no HTML escaping,
    nothing in reach but the variables of :data:`REASON_SAMPLE`)."""
    return sandboxed_environment()



def _check_template(value: str) -> str | None:
    try:
        reason_environment().from_string(value).render(**REASON_SAMPLE)
    except jinja2.TemplateError as exc:
        return f"is not a usable template: {exc}"
    return None


def _check_xid_prefix(value: str) -> str | None:
    if not _XID_PREFIX.fullmatch(value):
        return "must start with a letter or digit and hold only letters, digits, '_', '.', ':' or '-' (64 at most)"
    return None


def _check_nonblank(value: str) -> str | None:
    return "must not be empty" if not value.strip() else None


def _check_file(value: str) -> str | None:
    return None if os.path.isfile(os.path.expanduser(value)) else "file not found"


def _normalise_choices(cls: type, fields: list[attrs.Attribute[Any]]) -> list[attrs.Attribute[Any]]:
    """attrs field transformer: store declared choices in their declared spelling.

    ``setting()`` has no converter argument, so the class adds one here for
    every string field with choices.
    """
    out = []
    for field in fields:
        info = setting_info(field)
        if info is not None and info.choices and field.converter is None:
            choices = tuple(str(c) for c in info.choices)

            def convert(value: Any, _choices: tuple[str, ...] = choices) -> Any:
                if isinstance(value, list):
                    return [normalise_choice(v, _choices) if isinstance(v, str) else v for v in value]
                return normalise_choice(value, _choices) if isinstance(value, str) else value

            field = field.evolve(converter=convert)
        out.append(field)
    return out


_CHECK_URL = http_url("https://private.intel.amp.cisco.com")


@attrs.frozen(field_transformer=_normalise_choices)
class CtiaSettings:
    """``[sinks.ctia]``: where and how judgements are sent to CTIA."""

    client_id: str = setting(help="API client id (Cisco XDR / Threat Response API client).", example="client-0123...")
    client_password: Secret = setting(help="API client password: a literal, env:NAME or file:PATH.", example="env:CTR_CLIENT_SECRET")
    region: str = setting(
        "us", help="Cisco cloud region; ignored when api_url and token_url are set.", choices=tuple(REGIONS), prompt=True
    )
    api_url: str | None = setting(
        None, help="Explicit CTIA base URL (routes /ctia/... go under it); needs token_url.", check=_CHECK_URL, prompt=True
    )
    token_url: str | None = setting(None, help="Explicit OAuth2 token URL; needs api_url.", check=_CHECK_URL, prompt=True)
    feed: str | None = setting(None, help="Title of an indicator feed to publish the judgements in (none: no feed).")
    feed_dispositions: list[str] = setting(
        ["Malicious", "Suspicious"],
        help="Dispositions whose judgements join the feed; the feed is a blocklist, so Clean (Whitelisted) stays out by default.",
        choices=DISPOSITIONS,
    )
    disposition: str = setting("Malicious", help="Disposition of every judgement (Whitelisted indicators are always Clean).", choices=DISPOSITIONS)
    confidence: str = setting("High", help="Judgement confidence.", choices=CONFIDENCES)
    severity: str = setting("High", help="Judgement severity.", choices=SEVERITIES)
    priority: int = setting(85, help="Judgement priority (automated feeds stay at 90 or below).", minimum=0, maximum=100)
    expiration: str = setting("1 Month", help="How long a judgement is valid when the indicator has no expiry of its own.", choices=EXPIRATIONS)
    authorized_users: list[str] = setting(
        [], help="CTIA user ids put in authorized_users of every judgement: besides the owner, they may read the TLP red ones."
    )
    authorized_groups: list[str] = setting(
        [], help="CTIA organisation (group) ids put in authorized_groups of every judgement; your own organisation's id lets its analysts read the TLP red ones."
    )
    link_host: str | None = setting(None, help="ThreatQ host for links back to indicators (none: the record's own link).", example="tq.example.com")
    source: str = setting("ThreatQ", help="The judgement source shown in Threat Response.", check=_check_nonblank)
    max_entities: int = setting(2000, help="Most entities (judgements plus relationships) in one bundle request.", minimum=1)
    in_flight: int = setting(
        3, help="Bundle requests sent at once when a batch needs several bundles (1: one at a time).", minimum=1, maximum=16
    )
    reason: str = setting(DEFAULT_REASON, help="jinja2 template of the judgement reason (score, status, tags, type, value, ...).", check=_check_template)
    timeout: float = setting(60.0, help="Seconds to wait for an answer from CTIA; a whole request (connecting included) gets at most this plus 10 seconds.", minimum=1)
    max_response_mb: int = setting(64, help="Largest CTIA answer accepted, in MiB; a larger one stops the sink for the run.", minimum=1, maximum=4096)
    max_retry_after: float = setting(
        60.0, help="Longest Retry-After (seconds) waited for; longer waits defer records to the next run.", minimum=0, maximum=600
    )
    request_budget: int = setting(
        1000,
        help="Most CTIA requests one run sends, retries included (the organisation's limit, about 8000 an hour, is shared "
        "by all its API clients); the rest of the work, expiries included, waits for the next runs.",
        minimum=1,
    )
    max_failed_batches: int = setting(
        3, help="Consecutive batches CTIA may fail (unreachable, 5xx, rate-limited) before the sink stops trying for the run "
        "and defers everything left at once.", minimum=1,
    )
    verify_tls: bool = setting(True, help="Verify CTIA's TLS certificate.")
    ca_bundle: ConfigPath | None = setting(None, help="CA bundle file to verify CTIA's certificate with.", check=_check_file)
    xid_prefix: str = setting("exportkit", help="Prefix of every external id this sink writes (and looks up).", check=_check_xid_prefix)

    def check(self) -> Iterator[tuple[str, str]]:
        """Rules spanning several keys, as ``(key, message)``."""
        problem = latin1_problem(self.client_password)
        if problem:
            yield "client_password", problem
        if (self.api_url is None) != (self.token_url is None):
            missing = "token_url" if self.token_url is None else "api_url"
            yield missing, "api_url and token_url go together: set both or neither"
        if self.ca_bundle and not self.verify_tls:
            yield "verify_tls", "is false while ca_bundle is set; drop one of them"
        if self.feed is not None:
            if not self.feed.strip():
                yield "feed", "must not be empty (leave it out for no feed)"
            elif len(self.feed) > 1024:
                yield "feed", "is longer than 1024 characters"
            if not self.feed_dispositions:
                yield "feed_dispositions", "must name at least one disposition when a feed is set"
            if self.max_entities < 2:
                yield "max_entities", "must be at least 2 with a feed (each judgement travels with its relationship)"
        for key in ("authorized_users", "authorized_groups"):
            if any(not item.strip() for item in getattr(self, key)):
                yield key, "must not hold empty names"
        if len(self.source) > 1024:
            yield "source", "is longer than 1024 characters"

    @property
    def base_url(self) -> str:
        """The CTIA base URL, without a trailing slash."""
        return (self.api_url or REGIONS[self.region][0]).rstrip("/")

    @property
    def oauth_url(self) -> str:
        """The OAuth2 token URL."""
        return self.token_url or REGIONS[self.region][1]

    @property
    def verify(self) -> bool | str:
        """The ``verify`` argument for requests."""
        if self.ca_bundle:
            return os.path.expanduser(self.ca_bundle)
        return self.verify_tls
