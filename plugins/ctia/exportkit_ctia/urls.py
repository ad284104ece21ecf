"""URL observables: make a URL as ThreatQ holds it into one CTIA can take (RFC 3986).

ThreatQ holds many URLs as phishing feeds report them: with spaces, unicode
paths, ``|`` or ``^`` in queries, brackets, a second ``#``. Each of those can
still be written as a valid URL, so :func:`normalise_url` percent-encodes
every character RFC 3986 does not allow where it stands (as UTF-8, upper-case
hex) and leaves valid escapes (``%20``) as they are. Only what cannot be
made a URL is refused with :class:`UrlError` (the mapping skips the record
with that reason): no scheme, no host, white space in the host, a port that
is not a number up to 65535, an unbalanced or invalid IPv6 literal.

Scheme and host are case-insensitive and lower-cased; a non-ASCII host name
becomes its IDNA (punycode) form, label by label, or is percent-encoded
when a label has no IDNA form. User info, path, query and fragment keep
their case.
"""

from __future__ import annotations

import ipaddress
import re

import idna

__all__ = ["UrlError", "normalise_url"]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_SUB_DELIMS = "!$&'()*+,;="
#: characters allowed as they are in each part (RFC 3986 section 3); "%" only as a valid escape
_ALLOWED = {
    "userinfo": frozenset(_UNRESERVED + _SUB_DELIMS + ":"),
    "host": frozenset(_UNRESERVED + _SUB_DELIMS),
    "path": frozenset(_UNRESERVED + _SUB_DELIMS + ":@/"),
    "query": frozenset(_UNRESERVED + _SUB_DELIMS + ":@/?"),
    "fragment": frozenset(_UNRESERVED + _SUB_DELIMS + ":@/?"),
}
_HEX = frozenset("0123456789abcdefABCDEF")


class UrlError(ValueError):
    """The value cannot be made a URL; the message says why."""


def _encode(text: str, part: str) -> str:
    """``text`` with every character not allowed in ``part`` percent-encoded (valid escapes kept)."""
    allowed = _ALLOWED[part]
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "%" and i + 2 < len(text) and text[i + 1] in _HEX and text[i + 2] in _HEX:
            out.append("%" + text[i + 1 : i + 3].upper())
            i += 3
            continue
        if ch in allowed:
            out.append(ch)
        else:
            out.extend(f"%{byte:02X}" for byte in ch.encode("utf-8"))
        i += 1
    return "".join(out)


def _host(host: str, value: str) -> str:
    if host.startswith("["):
        literal = host[1:-1]
        try:
            return f"[{ipaddress.IPv6Address(literal.split('%', 1)[0]).compressed}]"
        except ValueError:
            raise UrlError(f"url {value!r} has an invalid IPv6 host {host!r}") from None
    labels = []
    for label in host.rstrip(".").lower().split("."):
        if not label.isascii():
            try:
                label = idna.encode(label, uts46=True).decode("ascii")
            except idna.IDNAError:
                label = _encode(label, "host")  # no IDNA form: RFC 3986 allows it percent-encoded
        else:
            label = _encode(label, "host")
        labels.append(label)
    return ".".join(labels)


def normalise_url(value: str) -> str:
    """The URL observable for ``value``: RFC 3986 percent-encoding where needed, scheme and host lower-cased.

    :raises UrlError: no scheme, no host, white space in the host, a bad port or IPv6 literal.
    """
    text = value.strip()
    if not text:
        raise UrlError("url is empty")
    scheme_match = _SCHEME.match(text)
    if not scheme_match or text[scheme_match.end() : scheme_match.end() + 3] != "://":
        raise UrlError(f"url {value!r} needs a scheme and a host (scheme://host/...)")
    scheme = scheme_match.group(0).lower()
    rest = text[scheme_match.end() + 3 :]
    end = len(rest)
    for mark in "/?#":
        at = rest.find(mark)
        if at != -1:
            end = min(end, at)
    authority, tail = rest[:end], rest[end:]
    userinfo, at_sign, hostport = authority.rpartition("@")
    if any(ch.isspace() for ch in hostport):
        raise UrlError(f"url {value!r} holds white space in its host")
    host, port = hostport, ""
    if hostport.startswith("["):
        close = hostport.find("]")
        if close == -1:
            raise UrlError(f"url {value!r} has an unclosed IPv6 host")
        host, after = hostport[: close + 1], hostport[close + 1 :]
        if after and not after.startswith(":"):
            raise UrlError(f"url {value!r} has text after its IPv6 host")
        port = after[1:] if after else ""
        has_port = bool(after)
    else:
        host, colon, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
        has_port = bool(colon)
    if has_port and port and (not port.isdigit() or int(port) > 65535):
        raise UrlError(f"url {value!r} does not parse: port {port!r} is not a number up to 65535")
    if not host:
        raise UrlError(f"url {value!r} needs a scheme and a host (scheme://host/...)")
    fragment = query = ""
    path = tail
    if "#" in path:
        path, fragment = path.split("#", 1)
        fragment = "#" + _encode(fragment, "fragment")
    if "?" in path:
        path, query = path.split("?", 1)
        query = "?" + _encode(query, "query")
    netloc = (_encode(userinfo, "userinfo") + "@" if at_sign else "") + _host(host, value) + (f":{port}" if port else "")
    return f"{scheme}://{netloc}{_encode(path, 'path')}{query}{fragment}"
