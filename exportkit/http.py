"""HTTP plumbing shared by the ThreatQ client and sinks: sessions, timeouts, retries.

Public API for sink authors (stable; ``docs/writing-a-sink.md`` shows its use):
the names in ``__all__``.

:func:`make_session` builds a :class:`~exportkit.transport.GuardedSession`
with TLS and proxy settings applied in one place: no redirect to another
origin, a total deadline per request, a cap on the answer size, safe JSON
parsing, and requests that stop when the run is asked to stop (see
:mod:`exportkit.transport`). :class:`RetryPolicy` retries one call on
connection errors, timeouts, 5xx and 429 with jittered exponential backoff,
honouring ``Retry-After`` up to a cap. It does not retry other 4xx answers:
those are the caller's to interpret. Nor does it retry failures that the
same request would meet again (a TLS problem, an unknown host name): those
end at once, marked ``lasting``. :func:`describe_failure` says what went
wrong in words an operator can act on.
"""

from __future__ import annotations

import email.utils
import logging
import random
from datetime import datetime, timezone
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import attrs
import requests

from exportkit.transport import DEFAULT_MAX_RESPONSE_BYTES, DeadlineExceeded, GuardedSession, RequestAborted, ResponseTooLarge, abortable_sleep, is_probing

__all__ = [
    "make_session",
    "RetryPolicy",
    "RetriesExhausted",
    "retry_after_seconds",
    "describe_failure",
    "is_lasting_failure",
    "DEFAULT_TIMEOUT",
]

#: (connect, read) seconds for every call unless a client says otherwise
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 60.0)
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


def make_session(
    *,
    verify: bool | str = True,
    proxies: Mapping[str, str] | None = None,
    user_agent: str = "exportkit",
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    follow_redirects: str = "none",
) -> GuardedSession:
    """A guarded session with TLS verification, optional proxies and a User-Agent.

    :param verify: ``True`` (system CAs), ``False`` (insecure; avoid), or a CA bundle path.
        With ``False`` urllib3's ``InsecureRequestWarning`` is silenced for this
        session only (the caller warns once per run in its log instead).
    :param proxies: ``{"http": url, "https": url}`` or ``None``. With ``None`` the
        session ignores proxy environment variables too, so traffic that must not
        use a proxy never does.
    :param max_response_bytes: the largest answer accepted (:class:`~exportkit.transport.ResponseTooLarge`).
    :param follow_redirects: ``"none"`` (default) or ``"same-origin"``, only where the API documents a redirect.
    """
    session = GuardedSession(max_response_bytes=max_response_bytes, follow_redirects=follow_redirects)
    session.verify = verify
    session.headers["User-Agent"] = user_agent
    if proxies:
        session.proxies.update(proxies)
    else:
        session.trust_env = False
    return session


class RetriesExhausted(Exception):
    """Raised by :meth:`RetryPolicy.call` when every attempt failed.

    :param last_error: the last exception, or ``None`` when the last answer was a retryable status.
    :param response: the last retryable response, if there was one.
    :param retry_after: the wait the server asked for that exceeded the cap, if that ended the retries.
    :param lasting: the failure is one that retrying cannot mend (TLS, unknown host): the caller
        should treat it as a configuration problem, not defer the work as a passing one.
    """

    def __init__(
        self,
        message: str,
        *,
        last_error: BaseException | None = None,
        response: requests.Response | None = None,
        retry_after: float | None = None,
        lasting: bool = False,
    ) -> None:
        super().__init__(message)
        self.last_error = last_error
        self.response = response
        self.retry_after = retry_after
        self.lasting = lasting


_NOT_TLS = ("wrong version number", "wrong_version_number", "record layer failure", "unknown protocol", "http request")
_UNKNOWN_HOST = ("name or service not known", "nodename nor servname", "no address associated", "getaddrinfo failed")


def _host_of(exc: BaseException) -> str | None:
    request = getattr(exc, "request", None)
    url = getattr(request, "url", None)
    if not url:
        return None
    return urlsplit(str(url)).hostname


def _port_of(exc: BaseException) -> str:
    request = getattr(exc, "request", None)
    parts = urlsplit(getattr(request, "url", "") or "")
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}" if parts.hostname else "the server"


def is_lasting_failure(exc: BaseException) -> bool:
    """True for a transport failure that the same request would meet again at once (TLS, DNS name)."""
    text = str(exc).lower()
    if isinstance(exc, requests.exceptions.SSLError):
        return True
    return isinstance(exc, requests.ConnectionError) and any(marker in text for marker in _UNKNOWN_HOST)


def describe_failure(exc: BaseException, *, timeout: float | tuple[float, float] | None = None) -> str:
    """What a transport failure means, for an operator (no URL query, no secrets).

    :param timeout: the timeout the request had, ``seconds`` or ``(connect, read)``, to name it.
    """
    text = str(exc)
    lowered = text.lower()
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    if isinstance(exc, ResponseTooLarge):
        return f"{exc} (raise max_response_mb if the answer is genuine)"
    if isinstance(exc, RequestAborted):
        return f"stopped: {exc}"
    if isinstance(exc, DeadlineExceeded):
        return f"no complete answer within {exc.seconds:g}s (the whole request, however slowly the server answers)"
    if isinstance(exc, requests.exceptions.SSLError):
        if any(marker in lowered for marker in _NOT_TLS):
            return "the server does not speak TLS on this port (is the URL http:// rather than https://, or the port wrong?)"
        detail = text.rsplit("certificate verify failed:", 1)[-1].split("(_ssl", 1)[0].strip(" :')\"") if "certificate verify failed" in lowered else ""
        if detail or "certificate" in lowered:
            return (f"TLS certificate check failed{': ' + detail if detail else ''} "
                    "(set ca_bundle to the CA that signed it, or verify_tls = false for a lab system)")
        return "TLS handshake failed (the server and this client share no protocol or cipher)"
    if isinstance(exc, requests.ConnectTimeout):
        return f"could not connect within {connect:g}s (a firewall dropping packets, or a wrong address)" if connect else "could not connect in time"
    if isinstance(exc, requests.Timeout):
        return f"no answer within {read:g}s" if read else "no answer in time"
    if isinstance(exc, requests.ConnectionError):
        if any(marker in lowered for marker in _UNKNOWN_HOST):
            host = _host_of(exc)
            return f"unknown host name {host!r} (check the spelling, or the DNS of this machine)" if host else "unknown host name"
        if "connection refused" in lowered:
            return f"connection refused by {_port_of(exc)} (nothing listens there: wrong port, or the service is down)"
        if "connection reset" in lowered or "remotedisconnected" in lowered or "connection aborted" in lowered:
            return "the server closed the connection without an answer"
        return "connection failed"
    return type(exc).__name__


def retry_after_seconds(response: requests.Response) -> float | None:
    """The wait a ``Retry-After`` header asks for (seconds or an HTTP date), or ``None``."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


@attrs.frozen
class RetryPolicy:
    """How one call is retried.

    :param attempts: total tries, the first included.
    :param base_delay: first backoff in seconds; doubles each try, with full jitter.
    :param max_delay: the longest single backoff.
    :param max_retry_after: the longest ``Retry-After`` honoured; a longer one ends the retries
        (the caller defers the work to the next run instead of sleeping for an hour).
    :param sleep: the sleep function (tests pass a fake); the default ends early when the run is asked to stop.
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0
    sleep: Callable[[float], None] = abortable_sleep

    def backoff(self, attempt: int) -> float:
        """The jittered delay before try ``attempt + 1`` (``attempt`` counts from 1)."""
        return random.uniform(0, min(self.max_delay, self.base_delay * (2 ** (attempt - 1))))

    def call(
        self,
        send: Callable[[], requests.Response],
        *,
        what: str,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> requests.Response:
        """Call ``send`` until it returns a non-retryable response.

        :param send: makes the request; must be safe to repeat.
        :param what: a short description for log lines and errors ("POST /ctia/bundle/import").
        :returns: the first response whose status is not retryable (may be a 4xx).
        :raises RetriesExhausted: all attempts failed, or ``Retry-After`` exceeded the cap.
        """
        log = logger or logging.getLogger("exportkit.http")
        last_error: BaseException | None = None
        response: requests.Response | None = None
        attempts = 1 if is_probing() else self.attempts  # a check reports at once, it does not wait
        for attempt in range(1, attempts + 1):
            try:
                response = send()
            except RequestAborted as exc:
                # The run is stopping: do not wait and try again.
                raise RetriesExhausted(f"{what}: {describe_failure(exc)}", last_error=exc) from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                last_error, response = exc, None
                problem = describe_failure(exc)
                if is_lasting_failure(exc):  # the same request would fail the same way
                    raise RetriesExhausted(f"{what}: {problem}", last_error=exc, lasting=True) from None
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    return response
                last_error = None
                problem = f"HTTP {response.status_code}"
            if attempt == attempts:
                break
            delay = self.backoff(attempt)
            if response is not None:
                asked = retry_after_seconds(response)
                if asked is not None:
                    if asked > self.max_retry_after:
                        raise RetriesExhausted(
                            f"{what}: server asked to wait {asked:.0f}s (more than {self.max_retry_after:.0f}s)",
                            response=response,
                            retry_after=asked,
                        )
                    delay = asked
            log.info("%s: %s, retry %d/%d in %.1fs", what, problem, attempt, self.attempts - 1, delay)
            self.sleep(delay)
        raise RetriesExhausted(
            f"{what}: failed after {attempts} attempt{'s' if attempts != 1 else ''} ({problem})", last_error=last_error, response=response
        )
