"""A record's canonical type and value -> the CTIM observable CTIA keys its judgements on.

* The type: the record's canonical type when CTIM has an observable type of
  the same name (:data:`OBSERVABLE_TYPES`); any other type is skipped, never sent.
* The value, normalised for its type so lookups by observable find it: IP
  addresses compressed (the family decides ``ip`` or ``ipv6``), hashes
  lower-case and checked for length, domains lower-cased and IDNA-encoded
  (UTS 46), URLs percent-encoded per RFC 3986 (:mod:`exportkit_ctia.urls`),
  e-mail addresses with their domain normalised; other types stripped.

A value that is not valid for its type raises :class:`Unmappable`, whose text
is the reason the record is skipped.
"""

from __future__ import annotations

import ipaddress
import re

import idna

from exportkit_ctia.urls import UrlError, normalise_url

__all__ = ["OBSERVABLE_TYPES", "Unmappable", "normalise_observable", "unsupported_type"]

#: canonical record types CTIA accepts as observables, with the same name in CTIM
OBSERVABLE_TYPES: frozenset[str] = frozenset(
    {
        "ip", "ipv6", "domain", "url", "email", "md5", "sha1", "sha256", "file_name", "file_path",
        "mac_address", "mutex", "registry_key", "user_agent", "user", "email_subject",
    }
)

_HASH_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64}
_HEX = re.compile(r"^[0-9a-f]+$")
# An ASCII label: letters, digits, hyphens; underscores too, since real
# malicious hostnames (and _dmarc-style names) carry them.
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


class Unmappable(Exception):
    """The record cannot become a judgement; ``str(exc)`` is the reason for the report."""



def _normalise_domain(value: str) -> str:
    text = value.strip().rstrip(".").lower()
    if not text or "." not in text:
        raise Unmappable(f"domain {value!r} is not a fully qualified name")
    labels = []
    for label in text.split("."):
        if not label.isascii():
            try:
                label = idna.encode(label, uts46=True).decode("ascii")
            except idna.IDNAError as exc:
                raise Unmappable(f"domain {value!r} cannot be IDNA-encoded: {exc}") from None
        if not _LABEL.fullmatch(label):
            raise Unmappable(f"domain {value!r} has an invalid label {label!r}")
        labels.append(label)
    if labels[-1].isdigit():
        raise Unmappable(f"domain {value!r} ends in a numeric label (an IP address is not a domain)")
    result = ".".join(labels)
    if len(result) > 253:
        raise Unmappable(f"domain {value!r} is longer than 253 characters")
    return result


def _normalise_ip(kind: str, value: str) -> tuple[str, str]:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        raise Unmappable(f"{value!r} is not a valid IP address") from None
    # The address family decides the CTIM type, so lookups by observable find it.
    return ("ip" if address.version == 4 else "ipv6"), address.compressed


def _normalise_url(value: str) -> str:
    # RFC 3986: percent-encode what a URL may not hold (spaces, unicode, |, ^, ...); skip only non-URLs.
    try:
        return normalise_url(value)
    except UrlError as exc:
        raise Unmappable(str(exc)) from None


def _normalise_email(value: str) -> str:
    text = value.strip()
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or any(ch.isspace() for ch in text):
        raise Unmappable(f"email {value!r} is not local@domain")
    try:
        return f"{local}@{_normalise_domain(domain)}"
    except Unmappable as exc:
        raise Unmappable(f"email {value!r}: {exc}") from None


def unsupported_type(kind: str) -> str:
    """Why a record of canonical type ``kind`` is skipped when CTIM has no observable type for it."""
    return f"type {kind} is not an observable type CTIA accepts"


def normalise_observable(kind: str, value: str) -> tuple[str, str]:
    """The CTIM observable ``(type, value)`` for a record's canonical type and value.

    :raises Unmappable: CTIA has no such observable type, or the value is not
        valid for its type.
    """
    if kind not in OBSERVABLE_TYPES:
        raise Unmappable(unsupported_type(kind))
    if kind in ("ip", "ipv6"):
        return _normalise_ip(kind, value)
    if kind in _HASH_LENGTHS:
        text = value.strip().lower()
        if len(text) != _HASH_LENGTHS[kind] or not _HEX.fullmatch(text):
            raise Unmappable(f"{kind} {value!r} is not {_HASH_LENGTHS[kind]} hexadecimal digits")
        return kind, text
    if kind == "domain":
        return kind, _normalise_domain(value)
    if kind == "url":
        return kind, _normalise_url(value)
    if kind == "email":
        return kind, _normalise_email(value)
    text = value.strip()
    if not text:
        raise Unmappable(f"{kind} value is empty")
    return kind, text
