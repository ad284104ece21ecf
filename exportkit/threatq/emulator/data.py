"""The emulator's catalogues and its seeded, realistic data set.

Catalogue ids are deliberately NOT ThreatQ's usual ones (types start at
101, statuses at 201), so a client that hard-codes ids fails against the
emulator just as it would against another ThreatQ installation.

:func:`generate` makes ``n`` indicators from a seed: every type and status,
several sources with different TLPs (by id, by name, CLEAR, none), manual
scores on some, attributes, tags, HTML descriptions, tricky values
(surrounding white space, upper-case hashes, IDN domains, non-canonical IPv6,
overlong, empty, invalid for their type), ``expires_at`` in the past and the
future, and bulk imports where hundreds of indicators share one timestamp.
The same seed and base time always give the same data.
"""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = ["TYPES", "STATUSES", "SOURCES", "TAGS", "COLLECTIONS", "generate", "fmt", "TYPE_CLASS"]

_TYPE_NAMES = [
    "ASN", "Binary String", "CIDR Block", "CVE", "Email Address", "Email Attachment", "Email Subject",
    "File Mapping", "File Path", "Filename", "FQDN", "Fuzzy Hash", "GOST Hash", "Hash ION", "IP Address",
    "IPv6 Address", "MAC Address", "MD5", "Mutex", "Password", "Registry Key", "Service Name", "SHA-1",
    "SHA-256", "SHA-384", "SHA-512", "String", "x509 Serial", "x509 Subject", "URL", "URL Path",
    "User-agent", "Username", "X-Mailer",
]
_NETWORK = {"ASN", "CIDR Block", "Email Address", "Email Subject", "FQDN", "IP Address", "IPv6 Address",
            "MAC Address", "URL", "URL Path", "User-agent", "X-Mailer", "Username", "Password"}
#: type name -> ThreatQ class
TYPE_CLASS = {name: ("network" if name in _NETWORK else "host") for name in _TYPE_NAMES}
#: the type catalogue, ids from 101
TYPES: list[dict[str, Any]] = [
    {"id": 101 + i, "name": name, "class": TYPE_CLASS[name], "score": None, "wildcard_matching": "Y",
     "created_at": "2019-01-01 00:00:00", "updated_at": "2019-01-01 00:00:00"}
    for i, name in enumerate(_TYPE_NAMES)
]
_STATUS_ROWS = [
    ("Active", "Poses a threat and is being exported to detection tools.", "Y"),
    ("Expired", "No longer poses a serious threat.", "N"),
    ("Indirect", "Associated to an active indicator or event (i.e. pDNS).", "N"),
    ("Review", "Requires further analysis.", "N"),
    ("Whitelisted", "Poses NO risk and should never be deployed.", "N"),
]
#: the status catalogue, ids from 201
STATUSES: list[dict[str, Any]] = [
    {"id": 201 + i, "name": name, "description": desc, "user_editable": "N", "visible": "Y",
     "include_in_export": export, "protected": "Y", "created_at": "2019-01-01 00:00:00", "updated_at": "2019-01-01 00:00:00"}
    for i, (name, desc, export) in enumerate(_STATUS_ROWS)
]
#: sources: (id, name, source_type, tlp_id, tlp_name); TLP given by id, by name only, as CLEAR, or not at all
SOURCES: list[tuple[int, str, str, int | None, str | None]] = [
    (11, "Emerging Threats", "connectors", 3, "GREEN"),
    (12, "AlienVault OTX", "connectors", 4, "WHITE"),
    (13, "Internal SOC", "users", 2, "AMBER"),
    (14, "Partner Sharing", "connectors", 1, "RED"),
    (15, "CrowdFeed", "connectors", None, None),
    (16, "CISA AIS", "connectors", None, "CLEAR"),
]
TAGS = ["apt28", "phishing", "ransomware", "botnet", "c2", "tor-exit", "malware", "credential-theft", "scanner", "loader"]
_ATTRS = [("Confidence", ["High", "Medium", "Low"]), ("Malware Family", ["Emotet", "QakBot", "IcedID", "Cobalt Strike"]),
          ("Country", ["RU", "CN", "KP", "IR", "US"]), ("Port", ["443", "80", "8080", "4444"])]
_DESCRIPTIONS = [
    None,
    "",
    "Seen in a phishing wave.",
    "<p>Observed as <b>C2</b> for <i>QakBot</i> &amp; friends.</p>",
    "<div>Reported by partner<br/>Block at the perimeter.</div>\n<ul><li>first</li><li>second</li></ul>",
    "<p>Contains &lt;script&gt; in logs &mdash; benign test?</p>",
]
_WORDS = ["alpha", "bravo", "delta", "echo", "kilo", "lima", "oscar", "sierra", "tango", "zulu", "nova", "orbit"]

#: collections every emulator starts with: name -> api_query
COLLECTIONS: dict[str, dict[str, Any]] = {
    "CTR Export": {
        "criteria": {},
        "filters": {"+and": [
            {"+or": [{"status_name": s} for s in ("Active", "Review", "Whitelisted", "Expired")]},
            {"+or": [{"type_name": t} for t in ("IP Address", "IPv6 Address", "FQDN", "URL", "Email Address",
                                                 "MD5", "SHA-1", "SHA-256", "SHA-512", "Filename", "CIDR Block")]},
        ]},
    },
    "High Score": {"criteria": {}, "filters": {"score": {"+gte": 7}}},
    "All Indicators": {"criteria": {}, "filters": {}},
    "Active IPs": {"criteria": {"status_name": "Active"}, "filters": {"+or": [{"type_name": "IP Address"}, {"type_name": "IPv6 Address"}]}},
}


def fmt(value: datetime) -> str:
    """ThreatQ's timestamp format, UTC."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _hex(rng: random.Random, chars: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(chars))


def _value(rng: random.Random, type_name: str, i: int) -> str:
    """A plausible value for ``type_name``; ``i`` keeps values unique."""
    w = rng.choice(_WORDS)
    if type_name == "IP Address":
        return f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{(i >> 8) & 255}.{i & 255}"
    if type_name == "IPv6 Address":
        return f"2001:db8:{i:x}::{rng.randint(1, 0xffff):x}"
    if type_name == "CIDR Block":
        return f"10.{(i >> 8) & 255}.{i & 255}.0/24"
    if type_name == "FQDN":
        return f"{w}{i}.{rng.choice(['com', 'net', 'org', 'info', 'example'])}"
    if type_name == "URL":
        return f"http://{w}{i}.example/{rng.choice(['login', 'gate.php', 'download/x.exe'])}"
    if type_name == "URL Path":
        return f"/{w}/{i}/index.php"
    if type_name == "Email Address":
        return f"{w}.{i}@{rng.choice(_WORDS)}.example"
    if type_name in ("MD5", "SHA-1", "SHA-256", "SHA-384", "SHA-512", "GOST Hash", "Hash ION"):
        size = {"MD5": 32, "SHA-1": 40, "SHA-256": 64, "SHA-384": 96, "SHA-512": 128}.get(type_name, 64)
        return hashlib.sha512(f"{i}-{rng.random()}".encode()).hexdigest()[:size].ljust(size, "0")
    if type_name == "ASN":
        return f"AS{1000 + i}"
    if type_name == "CVE":
        return f"CVE-{rng.randint(2014, 2025)}-{10000 + i}"
    if type_name == "MAC Address":
        return ":".join(f"{b:02x}" for b in (0, 0x1b, (i >> 16) & 255, (i >> 8) & 255, i & 255, rng.randint(0, 255)))
    if type_name == "Filename":
        return f"{w}_{i}.{rng.choice(['exe', 'dll', 'doc', 'js'])}"
    if type_name == "File Path":
        return f"C:\\Users\\Public\\{w}_{i}.exe"
    if type_name == "Registry Key":
        return f"HKLM\\Software\\{w.title()}\\Run{i}"
    if type_name == "Fuzzy Hash":
        return f"96:{_hex(rng, 20)}:{_hex(rng, 12)}{i}"
    if type_name == "User-agent":
        return f"Mozilla/5.0 ({w}; {i})"
    if type_name == "x509 Serial":
        return f"{i:08x}{_hex(rng, 8)}"
    return f"{type_name.lower().replace(' ', '-')}-{w}-{i}"


def _tricky(rng: random.Random, type_name: str, value: str, i: int) -> str:
    """Sometimes replace a value by one that tests the client's and sinks' care."""
    roll = rng.random()
    if roll < 0.02:
        return f"  {value} \t"  # surrounding white space
    if roll < 0.025:
        return "" if rng.random() < 0.5 else "   "  # empty
    if roll < 0.03:
        return value + "/" + "a" * 3000  # overlong
    if type_name in ("MD5", "SHA-1", "SHA-256", "SHA-512") and roll < 0.1:
        return value.upper()
    if type_name == "FQDN" and roll < 0.08:
        return rng.choice([f"bücher{i}.example", f"münchen-{i}.example", f"WWW.Example{i}.COM"])
    if type_name == "IPv6 Address" and roll < 0.1:
        return rng.choice([f"2001:DB8:{i:X}:0::1", f"2001:0db8:{i % 0xffff:04x}:0000:0000:0000:0000:0001"])
    if type_name == "IP Address" and roll < 0.07:
        return rng.choice([f"999.1.{(i >> 8) & 255}.{i & 255}", f"10.{i & 255}.0.256", f"1.2.{i & 255}"])
    return value


def generate(n: int, seed: int, *, base: datetime, start_id: int = 1000) -> list[dict[str, Any]]:
    """``n`` indicators in the emulator's internal shape, the newest ``updated_at`` at or before ``base``.

    Internal shape: the served fields plus ``generated_score``, ``manual_score``,
    ``plain_score`` (served as a number even with ``with=score``), and lists of
    attributes (name, value), source ids and tag names.
    """
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    batch_left = 0
    batch_time: datetime | None = None
    for k in range(n):
        ident = start_id + k
        # Every type and status occurs even in small sets: the first ones cycle through them.
        type_row = TYPES[k % len(TYPES)] if k < len(TYPES) else rng.choice(TYPES)
        status_row = STATUSES[k % len(STATUSES)] if k < len(STATUSES) else rng.choices(STATUSES, weights=(45, 10, 5, 30, 10))[0]
        created = base - timedelta(seconds=rng.randint(3600, 365 * 86400))
        if batch_left == 0 and rng.random() < 0.004:
            # A feed import: hundreds of indicators updated in the same second.
            batch_left = rng.randint(50, 700)
            batch_time = base - timedelta(seconds=rng.randint(60, 200 * 86400))
        if batch_left > 0 and batch_time is not None:
            updated = batch_time
            created = min(created, updated)
            batch_left -= 1
        else:
            updated = created + timedelta(seconds=rng.randint(0, int((base - created).total_seconds())))
        touched = min(base, updated + timedelta(seconds=rng.randint(0, 86400)))
        name = type_row["name"]
        value = _tricky(rng, name, _value(rng, name, ident), ident)
        expires = None
        roll = rng.random()
        if roll < 0.1:
            expires = fmt(base - timedelta(days=rng.randint(1, 90)))
        elif roll < 0.2:
            expires = fmt(base + timedelta(days=rng.randint(1, 365)))
        sources = rng.sample([s[0] for s in SOURCES], k=rng.choice((0, 1, 1, 1, 2, 3)))
        attrs_ = [(a, rng.choice(vals)) for a, vals in rng.sample(_ATTRS, k=rng.randint(0, 3))]
        manual = rng.randint(0, 10) if rng.random() < 0.15 else None
        out.append({
            "id": ident,
            "value": value,
            "class": type_row["class"],
            "hash": hashlib.md5(value.encode("utf-8")).hexdigest(),
            "type_id": type_row["id"],
            "status_id": status_row["id"],
            "generated_score": round(rng.uniform(0, 10), 1),
            "manual_score": manual,
            "plain_score": rng.random() < 0.05,
            "description": rng.choice(_DESCRIPTIONS),
            "created_at": fmt(created),
            "updated_at": fmt(updated),
            "published_at": fmt(created),
            "touched_at": fmt(touched),
            "expires_at": expires,
            "expired_at": fmt(updated) if status_row["name"] == "Expired" else None,
            "expires_calculated_at": fmt(updated),
            "attributes": attrs_,
            "sources": sources,
            "tags": rng.sample(TAGS, k=rng.randint(0, 3)),
        })
    return out
