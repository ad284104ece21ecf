"""The optional indicator feed: one CTIA indicator plus one feed, created once and remembered.

Judgements join the feed through ``element-of`` relationships to the
indicator (sent in the same bundle as the judgements, see
:mod:`exportkit_ctia.delivery`); CTIA's feed view lists the observables of
those judgements that are valid now. The indicator and the feed carry
deterministic external ids, so when the sink's state is lost they are found
again instead of created twice.
"""

from __future__ import annotations

from typing import Any

from exportkit.context import SinkContext
from exportkit.errors import SinkError
from exportkit_ctia.client import CtiaClient, RequestRejected
from exportkit_ctia.mapping import bundle, feed_body, feed_indicator, feed_xid
from exportkit_ctia.settings import CtiaSettings

__all__ = ["ensure_feed", "find_feed", "STORE_KEY"]

#: key of the remembered feed in the sink's store
STORE_KEY = "feed"


def _identity(settings: CtiaSettings) -> dict[str, str]:
    assert settings.feed is not None
    return {"base_url": settings.base_url, "source": settings.source, "title": settings.feed}


def find_feed(client: CtiaClient, settings: CtiaSettings) -> dict[str, Any] | None:
    """The feed of these settings as CTIA has it, or ``None`` (read only, for ``exportkit check``)."""
    found = client.by_external_id("feed", feed_xid(settings, "feed"))
    return found[0] if found else None


def _indicator_id(client: CtiaClient, settings: CtiaSettings) -> str:
    found = client.by_external_id("indicator", feed_xid(settings, "indicator"))
    if found:
        return str(found[0]["id"])
    # A one-entity bundle: CTIA answers "exists" instead of creating a twin if
    # an earlier attempt got through without us seeing the answer.
    try:
        results = client.import_bundle(bundle(settings, indicators=[feed_indicator(settings)]))
    except RequestRejected as exc:
        raise SinkError(f"CTIA refused the feed indicator: {exc}") from None
    result = results[0] if results else {}
    if result.get("result") not in ("created", "exists") or not result.get("id"):
        raise SinkError(f"CTIA refused the feed indicator: {result.get('error')} {result.get('msg', '')}".strip())
    return str(result["id"])


def ensure_feed(client: CtiaClient, settings: CtiaSettings, context: SinkContext) -> dict[str, Any]:
    """Make sure the feed exists; returns ``{"indicator_id", "feed_id", "feed_view_url", ...}``.

    Uses what the store remembers when it was made for the same API, source
    and title; otherwise finds or creates the indicator and the feed and
    remembers them.

    :raises SinkError: CTIA refused the indicator or the feed.
    :raises exportkit.errors.TransientError: CTIA is unreachable for now.
    """
    identity = _identity(settings)
    saved = context.store.get(STORE_KEY)
    if isinstance(saved, dict) and all(saved.get(k) == v for k, v in identity.items()) and saved.get("feed_id"):
        return saved
    indicator_id = _indicator_id(client, settings)
    try:
        feed = client.create_feed(feed_body(settings, indicator_id), feed_xid(settings, "feed"))
    except RequestRejected as exc:
        raise SinkError(f"CTIA refused the feed: {exc}") from None
    if feed.get("indicator_id") != indicator_id:
        # The view matches relationships by exact target id: a feed over another
        # indicator would stay empty, so say so rather than publish it.
        raise SinkError(
            f"the CTIA feed {feed.get('id')} found by external id lists indicator {feed.get('indicator_id')}, "
            f"not {indicator_id}; delete that feed or change xid_prefix"
        )
    info = {**identity, "indicator_id": indicator_id, "feed_id": feed["id"], "feed_view_url": feed.get("feed_view_url")}
    context.store.set(STORE_KEY, info)
    context.logger.info("CTIA feed %r ready: %s", settings.feed, feed["id"])
    return info
