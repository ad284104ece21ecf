"""External ids of the judgements an instance writes, and whose a held one is.

Every judgement carries three (see the mapping doc):

* its *version* id, ``<xid_prefix>-judgement-<namespace tag>-<hash>``
  (:func:`xid_from_parts`; :func:`exportkit_ctia.mapping.judgement_xid` takes
  the parts from a record), the one bundle imports look up
  (:func:`lookup_prefixes`);
* its *record*'s id (:func:`record_xid`), the same on every version of one
  indicator's judgement;
* its *instance*'s id (:func:`instance_xid`), the same on all of them.

The namespace tag (:func:`namespace_tag`) comes from the instance namespace
(``context.namespace``: instance name, ThreatQ address and collection), so two
instances never share an id. :func:`owner_key` and :func:`xid_owner` tell
which instance (and prefix) a judgement id belongs to.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Any, Mapping

from exportkit.jsontext import compact_json
from exportkit_ctia.settings import CtiaSettings

__all__ = [
    "LEGACY_OWNER", "seed_hash", "namespace_tag", "owner_key", "xid_owner", "record_xid", "instance_xid",
    "lookup_prefixes", "xid_from_parts",
]


def seed_hash(parts: list[Any]) -> str:
    """SHA-256 (hex) of the parts as compact JSON: the hash in every external id."""
    # The seed's bytes never change (the XIDs already in CTIA depend on them); its parts are
    # strings and integers, which compact_json writes as json.dumps always did.
    return hashlib.sha256(compact_json(parts)).hexdigest()


#: what :func:`xid_owner` answers for a judgement XID written before XIDs were namespaced
LEGACY_OWNER = "legacy"
_JUDGEMENT_XID = re.compile(r"^(.+-judgement-)(?:([0-9a-f]{16})-)?[0-9a-f]{64}$")


@functools.lru_cache(maxsize=64)  # three XIDs of every judgement carry it
def namespace_tag(namespace: str) -> str:
    """The short tag of an instance namespace (:attr:`~exportkit.context.SinkContext.namespace`) in its XIDs."""
    return hashlib.sha256(("exportkit-namespace\n" + namespace).encode("utf-8")).hexdigest()[:16]


def owner_key(settings: CtiaSettings, namespace: str) -> str:
    """What every judgement XID of this prefix and namespace starts with: ``<xid_prefix>-judgement-<tag>``."""
    return f"{settings.xid_prefix}-judgement-{namespace_tag(namespace)}"


def xid_owner(xid: str) -> str | None:
    """Whose judgement XID this is: its :func:`owner_key`, :data:`LEGACY_OWNER` (no namespace tag), or ``None`` (not one of ours)."""
    match = _JUDGEMENT_XID.match(xid)
    if match is None:
        return None
    return f"{match.group(1)}{match.group(2)}" if match.group(2) else LEGACY_OWNER


def record_xid(settings: CtiaSettings, namespace: str, source_id: str) -> str:
    """The XID every judgement of one record carries, whatever its version: finds them all after a state reset."""
    return f"{settings.xid_prefix}-record-{namespace_tag(namespace)}-{seed_hash(['record', namespace, source_id])}"


def instance_xid(settings: CtiaSettings, namespace: str) -> str:
    """The XID every judgement of this instance carries: tells a state reset from a first run in one request."""
    return f"{settings.xid_prefix}-instance-{namespace_tag(namespace)}"


def lookup_prefixes(settings: CtiaSettings) -> list[str]:
    """The ``external-key-prefixes`` of a bundle import: version XIDs only, never :func:`record_xid` or :func:`instance_xid`
    (those are shared by many judgements, so matching on them would answer ``exists`` for another version)."""
    return [f"{settings.xid_prefix}-{kind}-" for kind in ("judgement", "relationship", "indicator")]


def xid_from_parts(
    settings: CtiaSettings, namespace: str, source_id: str, content_hash: str, disposition: str, tlp: str,
    observable: Mapping[str, str], generation: int,
) -> str:
    """The judgement XID from its parts (what :func:`judgement_xid` takes from a record)."""
    seed = [
        "judgement", namespace, settings.source, source_id, content_hash, disposition, settings.confidence,
        settings.severity, settings.priority, settings.expiration, tlp, observable["type"], observable["value"], generation,
    ]
    return f"{owner_key(settings, namespace)}-{seed_hash(seed)}"
