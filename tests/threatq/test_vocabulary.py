"""ThreatQ's type vocabulary (owned by the ThreatQ source) and its mapping to canonical types."""

from __future__ import annotations

import pytest

from exportkit.records import CANONICAL_TYPES
from exportkit.testing import make_indicator
from exportkit.threatq.vocabulary import THREATQ_TYPES, canonical_type

# The indicator types ThreatQ ships (its /api/objects catalogue), as the API reference lists them.
REFERENCE_TYPES = (
    "ASN, Binary String, CIDR Block, CVE, Email Address, Email Attachment, Email Subject, File Mapping, File Path, "
    "Filename, FQDN, Fuzzy Hash, GOST Hash, Hash ION, IP Address, IPv6 Address, MAC Address, MD5, Mutex, Password, "
    "Registry Key, Service Name, SHA-1, SHA-256, SHA-384, SHA-512, String, x509 Serial, x509 Subject, URL, URL Path, "
    "User-agent, Username, X-Mailer"
).split(", ")


@pytest.mark.parametrize("name", REFERENCE_TYPES)
def test_every_threatq_type_maps_to_a_canonical_type(name):
    canon = canonical_type(name)
    assert canon != "other" and canon in CANONICAL_TYPES
    assert canonical_type(name.upper()) == canon == canonical_type(f"  {name.lower()} ")


def test_reference_list_and_table_agree():
    assert sorted(REFERENCE_TYPES) == sorted(THREATQ_TYPES)


def test_known_type_mappings():
    assert canonical_type("IP Address") == "ip"
    assert canonical_type("FQDN") == "domain"
    assert canonical_type("SHA-256") == "sha256"
    assert canonical_type("Email Address") == "email"


def test_unknown_type_is_other():
    assert canonical_type("Bitcoin Address") == "other"
    assert canonical_type("") == "other"
    assert make_indicator(type_name="Bitcoin Address").type == "other"


def test_every_mapped_type_is_canonical():
    assert set(THREATQ_TYPES.values()) <= CANONICAL_TYPES
    assert CANONICAL_TYPES - set(THREATQ_TYPES.values()) == {"other"}


def test_the_core_record_module_holds_no_threatq_type_names():
    import exportkit.records as records

    assert not hasattr(records, "THREATQ_TYPES") and not hasattr(records, "canonical_type")
