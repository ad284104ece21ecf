"""exportkit sink that POSTs JSON batches of records to a webhook URL, signed with HMAC-SHA256.

A complete third-party sink, distributed on its own (``exportkit-webhook``)
and found through its entry point (group ``exportkit``, name ``webhook``),
exactly as any other team's sink would be. Configuration::

    [export]
    sinks = ["webhook"]

    [sinks.webhook]
    url = "https://hooks.example.com/exportkit"
    secret = "env:WEBHOOK_SECRET"          # optional: sign each body
    batch_size = 100
    send_withdrawals = true

What each answer of the receiver does:

* 2xx: every record of the POST is accepted;
* connection errors, timeouts, 429 and 5xx: retried with jittered backoff,
  honouring ``Retry-After`` (:class:`exportkit.http.RetryPolicy`); when the
  tries are spent the records are deferred (the engine holds the checkpoint
  and offers them again next run) and the sink stops for this run;
* 408 and other 5xx: deferred the same way, without retries;
* 401/403: the sink stops (:class:`~exportkit.errors.SinkAuthError`), records deferred;
* an answer larger than ``max_response_mb``: the sink stops, records deferred;
* 404/405/410 and redirects: the sink stops (:class:`~exportkit.errors.SinkError`), records deferred;
* any other 4xx: the records are rejected (dead-lettered) with the status and
  a short excerpt of the answer; for 400/413/422 a batch of several records
  is first split in halves, so one bad record does not take the others along.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import jinja2
import requests

from exportkit import BatchResult, Indicator, SinkContext, SinkType, Withdrawal, hookimpl
from exportkit.errors import SinkAuthError, SinkError, TransientError
from exportkit.http import RetriesExhausted, RetryPolicy, make_session
from exportkit.transport import ResponseTooLarge
from exportkit.secrets import redact
from exportkit_webhook.body import delivered_remote, delivery_id, records_body, sign, withdrawals_body
from exportkit_webhook.settings import WebhookSettings, load_template

__version__ = "0.1.0"
__all__ = ["WebhookSettings", "WebhookSink", "exportkit_sink_types", "DELIVERY_HEADER"]

USER_AGENT = f"exportkit-webhook/{__version__}"
#: header with a stable id of the body, so a receiver can drop a repeated delivery
DELIVERY_HEADER = "X-Exportkit-Delivery"
#: answers that refuse the content of a batch: split it to find the records at fault
_SPLIT_STATUS = frozenset({400, 413, 422})
_EXCERPT = 200


def _display_url(url: str) -> str:
    """The URL for messages: scheme, host and path only (a query or user part may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def _excerpt(response: requests.Response) -> str:
    text = " ".join((response.text or "").split())
    if len(text) > _EXCERPT:
        text = text[:_EXCERPT] + "..."
    return redact(text)


class WebhookSink:
    """One run of the webhook sink.

    :param settings: parsed :class:`WebhookSettings`.
    :param policy: retry policy override (tests pass short backoffs).
    :param clock: the time source for signature timestamps (tests pass a fixed one).
    """

    def __init__(self, settings: WebhookSettings, *, policy: RetryPolicy | None = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.policy = policy or RetryPolicy(attempts=settings.attempts, max_retry_after=settings.max_retry_after)
        self.clock = clock
        self.template: jinja2.Template | None = load_template(settings.template) if settings.template else None
        self.url = _display_url(settings.url)
        self.session: requests.Session | None = None
        #: why the receiver is considered unavailable for the rest of this run
        self.unavailable: str | None = None
        self.posts = 0
        self.splits = 0

    def __repr__(self) -> str:
        return f"WebhookSink(url={self.url!r})"

    # --- hooks ----------------------------------------------------------------------

    @hookimpl
    def exportkit_open(self, context: SinkContext) -> None:
        """Open the HTTP session (with ``context.proxies`` when the run has ``-ep``)."""
        self.unavailable = None
        self.posts = self.splits = 0
        self.session = make_session(
            verify=self.settings.verify, proxies=context.proxies, user_agent=USER_AGENT, max_response_bytes=self.settings.max_response_mb * 1024 * 1024
        )

    @hookimpl
    def exportkit_check(self, context: SinkContext) -> list[str]:
        """Reach the receiver with a HEAD request; any HTTP answer shows it is there."""
        session = self.session or make_session(
            verify=self.settings.verify, proxies=context.proxies, user_agent=USER_AGENT, max_response_bytes=self.settings.max_response_mb * 1024 * 1024
        )
        try:
            response = session.head(self.settings.url, timeout=self._timeout(), allow_redirects=False)
        except requests.exceptions.SSLError as exc:
            raise SinkError(self._tls_message(exc), sink=context.sink) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            via = " through the proxy" if context.proxies else ""
            raise SinkError(f"cannot reach {self.url}{via}: {type(exc).__name__}", sink=context.sink) from None
        lines = [f"receiver reachable at {self.url} (HEAD answered HTTP {response.status_code})"]
        lines.append("bodies are signed (" + self.settings.signature_header + ")" if self.settings.secret else "bodies are not signed (no secret set)")
        if context.proxies:
            lines.append("traffic goes through the proxy (-ep)")
        return lines

    @hookimpl
    def exportkit_write(self, records: Sequence[Indicator], context: SinkContext) -> BatchResult:
        result = BatchResult()
        pending = []
        for record in records:
            holding = context.held(record)
            if holding is not None and holding.content_hash == record.content_hash:
                result.skip(record, "unchanged since its last delivery")
            else:
                pending.append(record)

        def body(items: Sequence[Indicator]) -> bytes:
            try:
                return records_body(items, instance=context.run.instance, run_id=context.run.run_id, sink=context.sink,
                                    now=context.now, template=self.template)
            except jinja2.TemplateError as exc:
                raise SinkError(f"the body template failed: {exc}", sink=context.sink) from None

        self._send_all(pending, body, result, context, "records")
        return result

    @hookimpl
    def exportkit_withdraw(self, withdrawals: Sequence[Withdrawal], context: SinkContext) -> BatchResult | None:
        if not self.settings.send_withdrawals:
            return None  # nothing to tell the receiver: the holdings are simply forgotten

        # A withdrawal may come without its record (gone from the collection): what the
        # receiver must be told comes from the remote kept when the record was accepted.
        delivered = {w.source_id: dict(h.remote or {}) for w in withdrawals if (h := context.held(w.source_id)) is not None}

        def body(items: Sequence[Withdrawal]) -> bytes:
            return withdrawals_body(items, instance=context.run.instance, run_id=context.run.run_id, sink=context.sink, delivered=delivered)

        result = BatchResult()
        self._send_all(list(withdrawals), body, result, context, "withdrawals")
        return result

    @hookimpl
    def exportkit_close(self, context: SinkContext, error: BaseException | None) -> None:
        if self.posts:
            context.note("posts", self.posts)
        if self.splits:
            context.note("split_batches", self.splits)
        if self.session is not None:
            self.session.close()
            self.session = None

    # --- delivery -------------------------------------------------------------------

    def _timeout(self) -> tuple[float, float]:
        return (min(10.0, self.settings.timeout), self.settings.timeout)

    def _send_all(self, items: Sequence[Any], body: Callable[[Sequence[Any]], bytes], result: BatchResult, context: SinkContext, kind: str) -> None:
        if not items:
            return
        if self.unavailable and not context.dry_run:
            # An earlier POST of this run spent its retries: do not spend them again per batch.
            raise TransientError(self.unavailable)
        size = self.settings.batch_size
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            data = body(chunk)  # built in a dry run too: a failing template shows there
            if context.dry_run:
                continue
            if self.unavailable:
                for item in chunk:
                    result.defer(item, self.unavailable)
                continue
            self._deliver(chunk, data, body, result, context, kind)

    def _deliver(self, items: Sequence[Any], data: bytes, body: Callable[[Sequence[Any]], bytes], result: BatchResult, context: SinkContext, kind: str) -> None:
        what = f"POST {self.url} ({len(items)} {kind})"
        try:
            response = self._post(data, what, context)
        except RetriesExhausted as exc:
            self.unavailable = f"webhook {exc}"
            context.logger.warning("%s; deferring to the next run", self.unavailable)
            for item in items:
                result.defer(item, self.unavailable)
            return
        status = response.status_code
        if 200 <= status < 300:
            for item in items:
                if isinstance(item, Indicator):
                    result.accept(item, remote=delivered_remote(item, data))
                else:
                    result.accept(item)
            return
        if status == 408 or status >= 500:
            self.unavailable = f"webhook {what}: HTTP {status} {_excerpt(response)}".rstrip()
            for item in items:
                result.defer(item, self.unavailable)
            return
        if status in (401, 403):
            raise SinkAuthError(
                f"the receiver at {self.url} refused the request (HTTP {status} {_excerpt(response)}); "
                "check secret, token and headers of this sink", sink=context.sink)
        if status in (404, 405, 410):
            raise SinkError(f"the receiver at {self.url} answered HTTP {status}; check the url of this sink", sink=context.sink)
        if 300 <= status < 400:
            location = _display_url(response.headers.get("Location", "")) if response.headers.get("Location") else "elsewhere"
            raise SinkError(f"the receiver at {self.url} redirects (HTTP {status}) to {location}; set url to the final address", sink=context.sink)
        if status in _SPLIT_STATUS and len(items) > 1 and self.settings.split_rejected:
            self.splits += 1
            half = len(items) // 2
            for part in (items[:half], items[half:]):
                if self.unavailable:
                    for item in part:
                        result.defer(item, self.unavailable)
                    continue
                self._deliver(part, body(part), body, result, context, kind)
            return
        reason = f"the receiver refused the {kind}: HTTP {status} {_excerpt(response)}".rstrip()
        for item in items:
            result.reject(item, reason)

    def _post(self, data: bytes, what: str, context: SinkContext) -> requests.Response:
        """POST ``data`` with retries; each try is signed with a fresh timestamp."""
        settings = self.settings
        assert self.session is not None, "exportkit_open was not called"
        session = self.session
        headers = {**settings.static_headers(), "Content-Type": settings.content_type, DELIVERY_HEADER: delivery_id(data)}
        if settings.token is not None:
            headers["Authorization"] = f"Bearer {settings.token.reveal()}"

        def send() -> requests.Response:
            attempt = dict(headers)
            timestamp = int(self.clock())
            attempt[settings.timestamp_header] = str(timestamp)
            if settings.secret is not None:
                attempt[settings.signature_header] = sign(settings.secret.reveal(), timestamp, data)
            self.posts += 1
            try:
                return session.post(settings.url, data=data, headers=attempt, timeout=self._timeout(), allow_redirects=False)
            except requests.exceptions.SSLError as exc:
                # A certificate problem does not pass by itself: stop, do not retry.
                raise SinkError(self._tls_message(exc), sink=context.sink) from None
            except ResponseTooLarge as exc:
                raise SinkError(f"the receiver at {self.url} answered too much: {exc} (max_response_mb)", sink=context.sink) from None

        return self.policy.call(send, what=what, logger=context.logger)

    def _tls_message(self, exc: BaseException) -> str:
        detail = str(exc)
        for marker in ("CERTIFICATE_VERIFY_FAILED", "WRONG_VERSION_NUMBER", "hostname mismatch", "self-signed", "self signed"):
            if marker in detail:
                detail = marker
                break
        else:
            detail = detail[:200]
        hint = "set ca_bundle to the CA that signed the receiver's certificate" if self.settings.verify_tls else "check the receiver's TLS setup"
        return f"TLS connection to {self.url} failed ({detail}); {hint}"


@hookimpl
def exportkit_sink_types() -> list[SinkType]:
    return [SinkType("webhook", WebhookSettings, WebhookSink, "POSTs signed JSON batches of records (and withdrawals) to a URL.")]


logging.getLogger(__name__).addHandler(logging.NullHandler())
