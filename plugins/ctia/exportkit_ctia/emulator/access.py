"""Who may read an entity: CTIA's access control for private intel, as the emulator models it.

Every API client of the emulator belongs to one organisation
(:data:`ORG_ID`); the client id is its login. In private intel, white,
green and amber entities are readable by the whole organisation (CTIA's
``max-record-visibility`` is ``group`` there), but **red** ones only by
their owner and by the logins in ``authorized_users`` or the organisations
in ``authorized_groups``. An entity someone may not read is, for them, not
there: a read or an expiry by id answers 404, and searches and external-id
lookups leave it out.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ORG_ID", "can_read"]

#: the organisation (CTIA group) of every emulator client
ORG_ID = "emulator-org"


def can_read(entity: dict[str, Any], login: str, *, red_owner_only: bool = True, groups: tuple[str, ...] = (ORG_ID,)) -> bool:
    """Whether the client ``login`` (member of ``groups``) may read ``entity``.

    :param red_owner_only: CTIA's rule; ``False`` lets the organisation read red too.
    """
    if login in entity.get("authorized_users", ()) or any(g in entity.get("authorized_groups", ()) for g in groups):
        return True
    same_org = any(g in entity.get("groups", ()) for g in groups)
    if entity.get("tlp") == "red" and red_owner_only:
        return same_org and entity.get("owner") == login
    return same_org
