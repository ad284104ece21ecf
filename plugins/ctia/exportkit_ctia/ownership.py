"""Which judgements this instance may expire: only those it created.

Judgement XIDs carry an owner key, ``<xid_prefix>-judgement-<namespace tag>``
(:func:`~exportkit_ctia.mapping.owner_key`), from the instance namespace
(``context.namespace``: instance name, ThreatQ address and collection). The
sink keeps every owner key it has written under in its store
(:data:`OWNERS_KEY`), so a renamed collection or a new ``xid_prefix`` does
not orphan what it created before. A held judgement is this instance's when
its XID is under one of those keys, or when it was written before XIDs
carried a namespace (every such holding was imported by this instance under
its own prefix). Anything else, such as a holding copied from another
instance's state, belongs to someone else and is never expired here.
"""

from __future__ import annotations

from typing import Any

from exportkit.context import SinkContext
from exportkit.errors import TransientError
from exportkit_ctia.client import CtiaClient
from exportkit_ctia.xids import LEGACY_OWNER, instance_xid, owner_key, xid_owner
from exportkit_ctia.settings import CtiaSettings

__all__ = ["OWNERS_KEY", "RECOVER_KEY", "remember_owner", "is_own", "detect_lost_state"]

#: store key: the owner keys this instance has written judgement XIDs under
OWNERS_KEY = "xid_owners"
#: store key: True when this instance lost its state once, so unheld records are looked up before they are sent
RECOVER_KEY = "recover_lost_state"


def detect_lost_state(client: CtiaClient, settings: CtiaSettings, context: SinkContext) -> bool | None:
    """On a fresh store, ask CTIA once whether this instance exported before (its state was reset or lost).

    A first run finds nothing and costs this one read. After a reset, the
    delivery looks up the judgements of each record it does not hold before
    sending it (:meth:`~exportkit_ctia.delivery.Delivery.write`), so nothing
    held before the reset stays live beside the new verdict.

    :returns: whether to look records up (the stored answer), or ``None`` when
        CTIA could not answer now: the caller then looks records up in this
        run to be safe, and the question is asked again next run.
    """
    if context.store.get(OWNERS_KEY) or context.store.get(RECOVER_KEY) is not None:
        return bool(context.store.get(RECOVER_KEY))
    try:
        found = client.has_external_id("judgement", instance_xid(settings, context.namespace))
    except TransientError as exc:
        context.logger.warning("could not ask CTIA whether this instance exported before (%s): records it does not hold "
                               "are looked up before they are sent in this run", exc)
        return None
    context.store.set(RECOVER_KEY, found)
    if found:
        context.logger.warning("this instance exported to CTIA before but holds nothing: judgements are looked up before records are sent")
    return found


def remember_owner(settings: CtiaSettings, context: SinkContext) -> None:
    """Add this run's owner key to the store (once)."""
    key = owner_key(settings, context.namespace)
    owners = list(context.store.get(OWNERS_KEY, []) or [])
    if key not in owners:
        context.store.set(OWNERS_KEY, owners + [key])


def is_own(settings: CtiaSettings, remote: Any, context: SinkContext) -> bool:
    """True when the held judgement (``remote`` of a holding) is one this instance created."""
    xid = (remote or {}).get("xid")
    if not xid:
        return True  # holdings from before XIDs were recorded
    owner = xid_owner(str(xid))
    if owner == LEGACY_OWNER:
        return True
    owners = set(context.store.get(OWNERS_KEY, []) or []) | {owner_key(settings, context.namespace)}
    return owner in owners
