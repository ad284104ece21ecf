"""ThreatQ's indicator type vocabulary and how it maps to exportkit's canonical types.

This belongs to the ThreatQ source: the core record only knows the
canonical types (:data:`exportkit.records.CANONICAL_TYPES`).
"""

from __future__ import annotations

from typing import Mapping



__all__ = ["THREATQ_TYPES", "canonical_type"]

#: ThreatQ indicator type name -> canonical type. Where CTIM has a name for
#: the observable we use it, so sinks that speak CTIM map one to one.
THREATQ_TYPES: Mapping[str, str] = {
    "ASN": "asn",
    "Binary String": "binary_string",
    "CIDR Block": "cidr",
    "CVE": "cve",
    "Email Address": "email",
    "Email Attachment": "email_attachment",
    "Email Subject": "email_subject",
    "File Mapping": "file_mapping",
    "File Path": "file_path",
    "Filename": "file_name",
    "FQDN": "domain",
    "Fuzzy Hash": "fuzzy_hash",
    "GOST Hash": "gost_hash",
    "Hash ION": "hash_ion",
    "IP Address": "ip",
    "IPv6 Address": "ipv6",
    "MAC Address": "mac_address",
    "MD5": "md5",
    "Mutex": "mutex",
    "Password": "password",
    "Registry Key": "registry_key",
    "Service Name": "service_name",
    "SHA-1": "sha1",
    "SHA-256": "sha256",
    "SHA-384": "sha384",
    "SHA-512": "sha512",
    "String": "string",
    "x509 Serial": "x509_serial",
    "x509 Subject": "x509_subject",
    "URL": "url",
    "URL Path": "url_path",
    "User-agent": "user_agent",
    "Username": "user",
    "X-Mailer": "x_mailer",
}


_TYPES_BY_FOLDED_NAME = {name.casefold(): canon for name, canon in THREATQ_TYPES.items()}


def canonical_type(type_name: str) -> str:
    """Return the canonical type for a ThreatQ type name, ``other`` when unknown.

    Matching ignores case and surrounding white space, since type names are
    typed by people on some ThreatQ installations.
    """
    return _TYPES_BY_FOLDED_NAME.get(type_name.strip().casefold(), "other")
