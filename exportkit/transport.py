"""The guarded HTTP transport every session of exportkit uses (see :func:`exportkit.http.make_session`).

A hostile or hijacked endpoint must not be able to take the exporter
elsewhere, keep it busy for ever or make it eat all memory. So every
request sent through a :class:`GuardedSession`:

* **stays on its origin.** Redirects are not followed at all unless the
  session was built with ``follow_redirects="same-origin"`` (only where the
  API documents a redirect), and then never to another scheme, host or
  port. The 3xx answer goes back to the caller, which says what to fix; no
  credential is ever sent to another origin.
* **ends within a total deadline**, not only a socket timeout: a server that
  drips one byte a second is cut off when connect + read timeout (the
  ``timeout`` the caller passes) have passed since the request started
  (:class:`DeadlineExceeded`, a :class:`requests.Timeout`).
* **has a bounded answer**: a body larger than ``max_response_bytes``
  (after decompression) is refused with :class:`ResponseTooLarge` before it
  is all read.
* **parses JSON safely**: ``response.json()`` turns nesting too deep for the
  parser into a ``ValueError`` (:class:`~exportkit.jsontext.JSONTooDeep`),
  never a ``RecursionError``.
* **can be aborted**: :func:`abort_requests` (SIGTERM, the run deadline)
  cuts every request in flight in this process and refuses new ones with
  :class:`RequestAborted` until :func:`reset_abort`. This is process-wide on
  purpose: a run is one process (the engine resets it when a run starts).

The deadline works by shutting the request's socket down from a timer:
:class:`_GuardedAdapter` puts its pools on connection classes that register
their socket with the request in flight on the current thread.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import ssl
import threading
from typing import Any, Iterator
from urllib.parse import urlsplit

import orjson
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from exportkit.jsontext import JSONTooDeep

__all__ = [
    "GuardedSession",
    "DeadlineExceeded",
    "ResponseTooLarge",
    "RequestAborted",
    "abort_requests",
    "reset_abort",
    "abort_reason",
    "abortable_sleep",
    "probing",
    "is_probing",
    "same_origin",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_DEADLINE",
]

#: the answer size cap when a client sets none (64 MiB)
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: the total deadline of a request sent without a timeout
DEFAULT_DEADLINE = 120.0
_CHUNK = 64 * 1024


class DeadlineExceeded(requests.Timeout):
    """The whole request (connect, send, answer) took longer than its total deadline of ``seconds``."""

    def __init__(self, *args: Any, seconds: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seconds = seconds


class ResponseTooLarge(requests.RequestException):
    """The answer is larger than the session's ``max_response_bytes``."""


class RequestAborted(requests.ConnectionError):
    """The process asked every request to stop (:func:`abort_requests`); not worth retrying."""


def same_origin(a: str, b: str) -> bool:
    """True when URLs ``a`` and ``b`` have the same scheme, host and port (default ports filled in)."""
    pa, pb = urlsplit(a), urlsplit(b)
    default = {"http": 80, "https": 443}

    def port(p: Any) -> int | None:
        try:
            return p.port or default.get(p.scheme)
        except ValueError:
            return None

    return (pa.scheme.lower(), (pa.hostname or "").lower(), port(pa)) == (pb.scheme.lower(), (pb.hostname or "").lower(), port(pb))


# --- abort and deadlines -------------------------------------------------------------------


class _Watch:
    """One request in flight: its deadline timer and the socket to cut when it fires."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.aborted = False
        self._sock: socket.socket | None = None
        self._done = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        """The request is over: from now on nothing is cut (its connection may serve another request)."""
        self._timer.cancel()
        with self._lock:
            self._done = True
            self._sock = None

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.expired or self.aborted:
                self._cut()

    def _expire(self) -> None:
        with self._lock:
            if not self._done:
                self.expired = True
                self._cut()

    def abort(self) -> None:
        with self._lock:
            if not self._done:
                self.aborted = True
                self._cut()

    def _cut(self) -> None:  # with self._lock held
        if self._sock is None:
            return
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


_local = threading.local()
_registry_lock = threading.Lock()
_in_flight: set[_Watch] = set()
_abort_reason: str | None = None
_aborted = threading.Event()


def abort_requests(reason: str) -> None:
    """Cut every request in flight in this process and refuse new ones until :func:`reset_abort`.

    Also wakes :func:`abortable_sleep` (a retry backoff ends at once).
    """
    global _abort_reason
    with _registry_lock:
        _abort_reason = reason
        watches = list(_in_flight)
    _aborted.set()
    for watch in watches:
        watch.abort()


def reset_abort() -> None:
    """Allow requests again (a new run starts)."""
    global _abort_reason
    with _registry_lock:
        _abort_reason = None
    _aborted.clear()


def abortable_sleep(seconds: float) -> None:
    """``time.sleep`` that returns early when :func:`abort_requests` is called."""
    _aborted.wait(max(0.0, seconds))


def abort_reason() -> str | None:
    """Why requests were aborted, or ``None`` when they are not."""
    return _abort_reason


def _attach_current(sock: socket.socket | None) -> None:
    watch = getattr(_local, "watch", None)
    if watch is not None:
        watch.attach(sock)


class _WatchedConnection:
    """Mixed into a urllib3 connection class: registers its socket with the request in flight."""

    sock: Any

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _attach_current(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:  # a reused connection: no connect() this time
            _attach_current(self.sock)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _QuietWhenAsked:
    """Mixed into an HTTPS pool: no per-request InsecureRequestWarning when this pool was
    built not to verify (the session's owner asked for that and warns once per run in its
    log), instead of silencing the warning for the whole process."""

    cert_reqs: Any

    def _validate_conn(self, conn: Any) -> None:
        if str(self.cert_reqs) in ("CERT_NONE", str(ssl.CERT_NONE)):
            HTTPConnectionPool._validate_conn(self, conn)  # type: ignore[arg-type]
            if conn.is_closed:
                conn.connect()
            return
        super()._validate_conn(conn)  # type: ignore[misc]


@functools.lru_cache(maxsize=None)
def _watched(pool_class: type[HTTPConnectionPool]) -> type[HTTPConnectionPool]:
    """``pool_class`` (plain, TLS or SOCKS) with watched connections, so proxies keep their own pools."""
    if issubclass(pool_class.ConnectionCls, _WatchedConnection):  # a cached proxy manager, seen before
        return pool_class
    connection = type(f"Watched{pool_class.ConnectionCls.__name__}", (_WatchedConnection, pool_class.ConnectionCls), {})
    mixins: tuple[type, ...] = (_QuietWhenAsked,) if issubclass(pool_class, HTTPSConnectionPool) else ()
    return type(f"Watched{pool_class.__name__}", (*mixins, pool_class), {"ConnectionCls": connection})


def _watch_pools(manager: Any) -> None:
    manager.pool_classes_by_scheme = {scheme: _watched(pool) for scheme, pool in manager.pool_classes_by_scheme.items()}


#: (connect, read) caps while probing (see :func:`probing`); ``None`` outside
_probe_caps: tuple[float, float] | None = None


@contextlib.contextmanager
def probing(connect: float = 2.0, read: float = 5.0) -> Iterator[None]:
    """Within this block every request of the process is a quick probe: its timeouts are
    capped at ``connect``/``read`` seconds and :class:`~exportkit.http.RetryPolicy` makes one
    attempt. ``exportkit check`` runs inside it, so it answers within seconds when nothing
    answers, instead of waiting out a run's retries. Process-wide, like :func:`abort_requests`.
    """
    global _probe_caps
    previous, _probe_caps = _probe_caps, (connect, read)
    try:
        yield
    finally:
        _probe_caps = previous


def is_probing() -> bool:
    """True inside :func:`probing`."""
    return _probe_caps is not None


def _capped(timeout: Any) -> Any:
    caps = _probe_caps
    if caps is None:
        return timeout
    if timeout is None:
        return caps
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    return (min(connect or caps[0], caps[0]), min(read or caps[1], caps[1]))


def _deadline_for(timeout: Any) -> float:
    if timeout is None:
        return DEFAULT_DEADLINE
    if isinstance(timeout, tuple):
        return float(sum(t for t in timeout if t is not None)) or DEFAULT_DEADLINE
    if isinstance(timeout, urllib3.Timeout):
        parts = [t for t in (timeout.connect_timeout, timeout.read_timeout) if isinstance(t, (int, float))]
        return float(sum(parts)) or DEFAULT_DEADLINE
    return 2 * float(timeout)


class _GuardedResponse(requests.Response):
    def json(self, **kwargs: Any) -> Any:
        if not kwargs and (self.encoding or "utf-8").lower() in ("utf-8", "utf8"):
            # orjson reads UTF-8 JSON (what APIs send) several times faster, and without
            # recursing; anything else is read as requests reads it, errors included.
            try:
                return orjson.loads(self.content)
            except orjson.JSONDecodeError:
                pass
        try:
            return super().json(**kwargs)
        except RecursionError:
            raise JSONTooDeep("JSON nested too deeply to read", "", 0) from None


class _GuardedAdapter(HTTPAdapter):
    """Deadline, size cap and safe JSON for every exchange (redirect legs and auth retries included)."""

    def __init__(self, max_response_bytes: int) -> None:
        self.max_response_bytes = max_response_bytes
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        _watch_pools(manager)  # a SOCKS manager keeps its SOCKS pools, watched
        return manager

    def build_response(self, req: Any, resp: Any) -> requests.Response:
        response = super().build_response(req, resp)
        response.__class__ = _GuardedResponse
        return response

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        reason = _abort_reason
        if reason is not None:
            raise RequestAborted(f"request not sent: {reason}", request=request)
        timeout = _capped(timeout)
        watch = _Watch(_deadline_for(timeout))
        with _registry_lock:
            _in_flight.add(watch)
        _local.watch = watch
        watch.start()
        try:
            try:
                response = super().send(request, stream=True, timeout=timeout, **kwargs)
                if not stream:
                    self._read_capped(response)
            except (requests.ConnectionError, requests.Timeout) as exc:
                self._raise_if_cut(watch, request)
                raise exc
            # A cut socket reads as an end of file, which http.client may take for the end of
            # the headers or of a body without a length: never hand such an answer on as whole.
            self._raise_if_cut(watch, request)
            return response
        finally:
            watch.stop()
            _local.watch = None
            with _registry_lock:
                _in_flight.discard(watch)

    @staticmethod
    def _raise_if_cut(watch: _Watch, request: requests.PreparedRequest) -> None:
        if watch.aborted:
            raise RequestAborted(f"request cut: {_abort_reason or 'aborted'}", request=request) from None
        if watch.expired:
            raise DeadlineExceeded(f"no complete answer within {watch.seconds:g}s", request=request, seconds=watch.seconds) from None

    def _read_capped(self, response: requests.Response) -> None:
        cap = self.max_response_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            response.close()
            raise ResponseTooLarge(f"the answer is {int(declared)} bytes, more than the cap of {cap}", response=response)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(_CHUNK):
                size += len(chunk)
                if size > cap:
                    response.close()
                    raise ResponseTooLarge(f"the answer is larger than the cap of {cap} bytes", response=response)
                chunks.append(chunk)
        except requests.exceptions.ChunkedEncodingError as exc:
            raise requests.ConnectionError(str(exc), request=response.request) from None
        response._content = b"".join(chunks)  # what requests itself does when it reads a body
        response._content_consumed = True  # type: ignore[attr-defined]


class GuardedSession(requests.Session):
    """A :class:`requests.Session` with the guards of this module.

    :param max_response_bytes: the largest answer body accepted.
    :param follow_redirects: ``"none"`` (the default: a 3xx is returned as it is) or
        ``"same-origin"`` (follow only to the same scheme, host and port).
    """

    def __init__(self, *, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, follow_redirects: str = "none") -> None:
        if follow_redirects not in ("none", "same-origin"):
            raise ValueError(f"follow_redirects must be 'none' or 'same-origin' (got {follow_redirects!r})")
        super().__init__()
        self.follow_redirects = follow_redirects
        self.max_response_bytes = max_response_bytes
        adapter = _GuardedAdapter(max_response_bytes)
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        try:
            return super().request(method, url, *args, **kwargs)
        except UnicodeEncodeError:
            # The text of this error quotes the offending character of a header, which may be a
            # credential's: say what is wrong without it.
            raise requests.exceptions.InvalidHeader(
                "a credential, header or text body of the request holds a character that cannot be sent as Latin-1"
            ) from None

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        """Where requests would follow ``resp`` to; ``None`` (do not follow) unless allowed and same-origin."""
        target = super().get_redirect_target(resp)
        if target is None or self.follow_redirects == "none":
            return None
        absolute = requests.compat.urljoin(resp.url, target)
        return target if same_origin(resp.url, absolute) else None
