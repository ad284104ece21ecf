"""The ``ctia`` sink: the entry point the engine loads (group ``exportkit``, name ``ctia``).

Module-level hooks describe the sink type and add ``exportkit emulate ctia``;
:class:`CtiaSink` implements the data-path hooks for one run.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Sequence

import click

from exportkit import BatchResult, SinkType, hookimpl
from exportkit.context import SinkContext
from exportkit.errors import SinkAuthError
from exportkit.http import RetryPolicy
from exportkit.records import Indicator
from exportkit.results import Withdrawal
from exportkit_ctia.client import CtiaClient
from exportkit_ctia.delivery import Delivery
from exportkit_ctia.feed import ensure_feed, find_feed
from exportkit_ctia.intents import IntentLog, finish_pending
from exportkit_ctia.strays import expire_strays
from exportkit_ctia.ownership import RECOVER_KEY, detect_lost_state, is_own, remember_owner
from exportkit_ctia.settings import CtiaSettings
from exportkit_ctia.shape import remember_shape, supersede_warning

__all__ = ["CtiaSink", "exportkit_sink_types", "exportkit_add_commands"]


@hookimpl
def exportkit_sink_types() -> list[SinkType]:
    return [
        SinkType(
            "ctia",
            CtiaSettings,
            CtiaSink,
            "Cisco Threat Response (CTIA): one judgement per indicator, an optional feed, withdrawal by expiry.",
        )
    ]


@hookimpl
def exportkit_add_commands(cli: click.Group) -> None:
    from exportkit_ctia.emulator.cli import emulate_ctia

    group = cli.commands.get("emulate")
    if group is None:

        @click.group("emulate")
        def emulate() -> None:
            """Run loopback emulators of the systems exportkit talks to."""

        cli.add_command(emulate)
        group = emulate
    if isinstance(group, click.Group):
        group.add_command(emulate_ctia)


class CtiaSink:
    """One run of the CTIA sink.

    :param settings: parsed :class:`~exportkit_ctia.settings.CtiaSettings`.
    :param policy: retry policy override (tests use short backoffs).
    """

    def __init__(self, settings: CtiaSettings, *, policy: RetryPolicy | None = None) -> None:
        self.settings = settings
        self.policy = policy
        self.client: CtiaClient | None = None
        self.delivery = Delivery(settings, None)

    def __repr__(self) -> str:
        return f"CtiaSink(client_id={self.settings.client_id!r}, api={self.settings.base_url!r})"

    def _client(self, context: SinkContext) -> CtiaClient:
        return CtiaClient(self.settings, proxies=context.proxies, policy=self.policy, logger=context.logger)

    @hookimpl
    def exportkit_open(self, context: SinkContext) -> None:
        """Get a token (bad credentials fail fast), make sure the feed exists, finish what an
        earlier run left unfinished (:mod:`exportkit_ctia.intents`), retry queued expiries.
        On a run that reconciles, also expire second live judgements of records this sink
        holds (:mod:`exportkit_ctia.strays`).

        Queued expiries may take at most half of the run's request budget, so
        a long queue drains over several runs while new records still go out.
        A dry run touches no network: it only maps and validates.
        """
        self.delivery = Delivery(self.settings, None)
        warning = supersede_warning(context, self.settings)
        if warning:  # in a dry run this is the plan's warning; in a real run, what is about to happen
            context.logger.warning("judgement settings changed since the last run: %s", warning)
            context.note("settings_change", warning)
        if context.dry_run:
            return
        self.client = self._client(context)
        self.client.authenticate()
        if detect_lost_state(self.client, self.settings, context) is None:
            self.delivery.look_up_unheld = True  # undecided: safe for this run, asked again next run
        else:
            remember_owner(self.settings, context)
        self.delivery.client = self.client
        if self.settings.feed:
            info = ensure_feed(self.client, self.settings, context)
            self.delivery.indicator_id = info["indicator_id"]
            if info.get("feed_view_url"):
                # The view URL carries the feed's secret: in the report, not in cron mail.
                context.note("feed_url", info["feed_view_url"], summary=False)
        finish_pending(
            self.client, self.settings, context, self.delivery.stats, lambda remote: is_own(self.settings, remote, context),
            unheld_looked_up=self.delivery.look_up_unheld or bool(context.store.get(RECOVER_KEY)),
        )
        self.delivery.flush_pending(context, limit=self.client.budget.remaining // 2)
        if context.run.reconcile:
            context.note("strays_expired", expire_strays(self.client, self.settings, context, datetime.now(timezone.utc), self.delivery.stats))

    @hookimpl
    def exportkit_check(self, context: SinkContext) -> list[str]:
        """Token, API and feed, read only."""
        client = self._client(context)
        try:
            lifetime = client.authenticate()
            lines = [f"token obtained for client id {self.settings.client_id} from {self.settings.oauth_url} (valid {lifetime:.0f}s)"]
            client.probe()
            lines.append(f"CTIA API reachable at {self.settings.base_url}")
            warning = supersede_warning(context, self.settings)
            if warning:
                lines.append(f"WARNING judgement settings changed since the last run: {warning}")
            if self.settings.feed:
                feed = find_feed(client, self.settings)
                if feed and feed.get("feed_view_url"):
                    context.note("feed_url", feed["feed_view_url"])
                    lines.append(f"feed {self.settings.feed!r}: {feed['feed_view_url']}")
                else:
                    lines.append(f"feed {self.settings.feed!r} does not exist yet; the first run creates it")
            return lines
        finally:
            client.close()

    @hookimpl
    def exportkit_write(self, records: Sequence[Indicator], context: SinkContext) -> BatchResult:
        return self.delivery.write(records, context)

    @hookimpl
    def exportkit_withdraw(self, withdrawals: Sequence[Withdrawal], context: SinkContext) -> BatchResult:
        return self.delivery.withdraw(withdrawals, context)

    @hookimpl
    def exportkit_verify(self, source_ids: Sequence[str], context: SinkContext) -> BatchResult:
        """Reconcile: verify held judgements in bulk, re-create those no longer live."""
        return self.delivery.verify(source_ids, context)

    @hookimpl
    def exportkit_close(self, context: SinkContext, error: BaseException | None) -> None:
        """Retry queued expiries (unless the credentials failed), report counts, close the session.

        Intents the run could not settle (records deferred after their
        request may have reached CTIA) stay in the log for the next open; the
        report counts them as ``unfinished_intents``.
        """
        try:
            if self.client is not None and not context.dry_run:
                try:
                    unfinished = IntentLog(context).settle()
                except Exception as exc:  # closing must not fail the run; the next open settles them
                    context.logger.warning("intent log not settled: %s", exc)
                    unfinished = 0
                if unfinished:
                    context.note("unfinished_intents", unfinished)
            if self.client is not None and not context.dry_run and not isinstance(error, SinkAuthError):
                try:
                    left = self.delivery.flush_pending(context)
                except Exception as exc:  # closing must not fail the run; the queue stays for next time
                    context.logger.warning("queued CTIA expiries not retried: %s", exc)
                    left = len(context.store.get("pending_expiries", []) or [])
                if left:
                    context.note("pending_expiries", left)
                if error is None:
                    remember_shape(context, self.settings)
            stats: dict[str, Any] = dict(sorted(self.delivery.stats.items()))
            if stats:
                context.note("judgements", stats)
            if self.client is not None:
                budget = self.client.budget
                context.note("requests", budget.summary())
                if budget.stopped:
                    context.logger.warning("CTIA requests stopped for this run: %s; the rest waits for the next run", budget.stopped)
        finally:
            self.delivery.close()
            if self.client is not None:
                self.client.close()
                self.client = None
