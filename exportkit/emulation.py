"""Shared machinery for the loopback emulators (ThreatQ, CTIA): a real HTTP server with faults.

An emulator subclasses :class:`EmulatorApp`, declares routes with
:meth:`EmulatorApp.route`, and runs in :class:`EmulatorServer`, a threaded
``http.server`` bound to 127.0.0.1 (never another address). Faults are
injected through :class:`Faults`, shared by both emulators:

* ``fail_next(status, count=1, body=None, headers=None, path_prefix="")`` answer the next
  matching calls with ``status`` (a 500, a 429 with ``Retry-After``, ...);
* ``drop_next(count, path_prefix="")`` close the connection without answering;
* ``latency`` seconds added before every answer (a WAN); the latency an
  emulator was started with (``--latency``) is its floor, kept by :meth:`Faults.clear`.

Even on loopback, a web page in a browser on the same host can reach the
emulator (DNS rebinding, cross-origin ``text/plain`` POSTs), so every server:

* answers 421 to a ``Host`` header other than its own ``127.0.0.1:<port>`` or
  ``localhost:<port>`` (requests in proxy form, ``GET http://host/path``, are
  served as before: the proxy tests use the emulator as the proxy);
* requires the header ``X-Emulator-Token: <token>`` on the control routes
  (paths under :data:`CONTROL_PREFIXES`), a random token per server that
  ``exportkit emulate`` prints at start (:attr:`ServedEmulator.control_token`);
  a browser cannot add that header to a cross-origin request without asking;
* answers 400 to a ``Content-Length`` that is not a decimal number.

Example::

    with EmulatorServer(MyApp()) as server:
        requests.get(server.url + "/ping")
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import ssl
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, TypeVar
from urllib.parse import parse_qs, urlsplit

import attrs

__all__ = [
    "Request", "Response", "EmulatorApp", "EmulatorServer", "ServedEmulator", "Faults", "json_response",
    "CONTROL_PREFIXES", "TOKEN_HEADER",
]

#: paths that change or reveal the emulator's state: they need the control token
CONTROL_PREFIXES = ("/_control/", "/_inspect/")
#: the header that carries the control token
TOKEN_HEADER = "X-Emulator-Token"


@attrs.frozen
class Request:
    """One HTTP request as a route sees it.

    :param params: path parameters captured by the route pattern.
    :param query: query string, each key to its last value.
    :param query_all: query string, each key to every value.
    """

    method: str
    path: str
    query: Mapping[str, str]
    query_all: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    params: Mapping[str, str] = attrs.field(factory=dict)

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` when it is not)."""
        return json.loads(self.body.decode("utf-8") or "null")

    def form(self) -> dict[str, str]:
        """The body parsed as ``application/x-www-form-urlencoded``."""
        return {k: v[-1] for k, v in parse_qs(self.body.decode("utf-8"), keep_blank_values=True).items()}

    def header(self, name: str, default: str = "") -> str:
        """A request header, matched case-insensitively."""
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return default


@attrs.define
class Response:
    """An answer: status, body (bytes, str, or anything JSON-serialisable) and headers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = attrs.field(factory=dict)

    def encode(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if self.body is None:
            return b"", headers
        if isinstance(self.body, bytes):
            return self.body, headers
        if isinstance(self.body, str) and "Content-Type" in headers:
            return self.body.encode("utf-8"), headers
        headers.setdefault("Content-Type", "application/json")
        return json.dumps(self.body).encode("utf-8"), headers


def json_response(body: Any, status: int = 200, **headers: str) -> Response:
    """A JSON answer."""
    return Response(status, body, {k.replace("_", "-"): v for k, v in headers.items()})


@attrs.define
class _Planned:
    kind: str  # "status" or "drop"
    remaining: int
    path_prefix: str
    status: int = 500
    body: Any = None
    headers: dict[str, str] = attrs.field(factory=dict)


class Faults:
    """Planned faults, consumed by matching requests in arrival order (thread-safe)."""

    def __init__(self, latency: float = 0.0) -> None:
        if latency < 0:
            raise ValueError("latency must not be negative")
        self._lock = threading.Lock()
        self._planned: list[_Planned] = []
        #: the latency the emulator was started with; :meth:`clear` comes back to it
        self.base_latency = latency
        #: seconds to wait before answering any request
        self.latency: float = latency

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        path_prefix: str = "",
    ) -> None:
        """Answer the next ``count`` requests under ``path_prefix`` with ``status``."""
        with self._lock:
            self._planned.append(_Planned("status", count, path_prefix, status, body, dict(headers or {})))

    def drop_next(self, count: int = 1, *, path_prefix: str = "") -> None:
        """Close the connection of the next ``count`` requests under ``path_prefix`` without answering."""
        with self._lock:
            self._planned.append(_Planned("drop", count, path_prefix))

    def clear(self) -> None:
        """Forget every planned fault; latency goes back to the one the emulator was started with."""
        with self._lock:
            self._planned.clear()
            self.latency = self.base_latency

    def take(self, path: str) -> _Planned | None:
        """Consume the first planned fault matching ``path``, if any."""
        with self._lock:
            for planned in self._planned:
                if path.startswith(planned.path_prefix) and planned.remaining > 0:
                    planned.remaining -= 1
                    if planned.remaining == 0:
                        self._planned.remove(planned)
                    return planned
        return None


Handler = Callable[[Request], Response]


class EmulatorApp:
    """Routes plus faults; subclasses register routes in ``__init__`` with :meth:`route`."""

    def __init__(self, *, latency: float = 0.0) -> None:
        self.faults = Faults(latency)
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        #: every request seen, as (method, path) pairs, for tests that count calls
        self.calls: list[tuple[str, str]] = []
        #: the emulated server's clock for the ``Date`` header (``None``: this host's)
        self.clock: Callable[[], datetime] | None = None
        self._calls_lock = threading.Lock()
        #: the token the control routes require in the X-Emulator-Token header
        self.control_token = secrets.token_urlsafe(16)

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Register ``handler`` for ``method`` and a path pattern like ``/api/indicators/{id}``."""
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$"
        self._routes.append((method.upper(), re.compile(regex), handler))

    def dispatch(self, request: Request) -> Response:
        """Find the route for ``request`` and call it; 404/405 when there is none."""
        allowed = False
        for method, regex, handler in self._routes:
            match = regex.match(request.path)
            if match:
                allowed = True
                if method == request.method:
                    return handler(attrs.evolve(request, params=match.groupdict()))
        return json_response({"error": "method not allowed" if allowed else "not found"}, 405 if allowed else 404)

    def record_call(self, method: str, path: str) -> None:
        with self._calls_lock:
            self.calls.append((method, path))


def _make_handler(app: EmulatorApp) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "exportkit-emulator"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read state, not logs
            pass

        def date_time_string(self, timestamp: float | None = None) -> str:
            # An emulated server may keep its own time; its Date header must tell it.
            if timestamp is None and app.clock is not None:
                timestamp = app.clock().timestamp()
            return super().date_time_string(timestamp)

        def setup(self) -> None:
            super().setup()
            if isinstance(self.connection, ssl.SSLSocket):
                # The handshake runs here, in the request's thread, so a client that
                # stalls or rejects the certificate never blocks the accept loop.
                self.connection.do_handshake()
            # Headers and body go out in two writes; without NODELAY, Nagle's algorithm
            # and the client's delayed ACK make every answer wait about 40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _refuse(self, status: int, message: str) -> None:
            payload = json.dumps({"error": message}).encode()
            self.close_connection = True
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            declared = (self.headers.get("Content-Length") or "0").strip()
            if not declared.isdigit():
                return self._refuse(400, "Content-Length must be a decimal number of bytes")
            address: Any = self.server.server_address  # an (address, port) pair for these TCP servers
            port = int(address[1])
            # A request line in proxy form (the emulator standing in for a proxy in the -ep
            # tests) is never what a browser page sends to a site, so only origin-form
            # requests must name this server in Host.
            proxy_form = self.path.startswith(("http://", "https://"))
            if not proxy_form and (self.headers.get("Host") or "").lower() not in (f"127.0.0.1:{port}", f"localhost:{port}"):
                return self._refuse(421, f"this server answers only to Host 127.0.0.1:{port} or localhost:{port}")
            length = int(declared)
            body = self.rfile.read(length) if length else b""
            if parts.path.startswith(CONTROL_PREFIXES) and not secrets.compare_digest(
                self.headers.get(TOKEN_HEADER, ""), app.control_token
            ):
                return self._refuse(403, f"the control routes need the {TOKEN_HEADER} header printed when the emulator started")
            app.record_call(self.command, parts.path)
            if app.faults.latency:
                time.sleep(app.faults.latency)
            planned = app.faults.take(parts.path)
            if planned is not None and planned.kind == "drop":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if planned is not None:
                response = Response(planned.status, planned.body if planned.body is not None else {"error": "injected fault"}, dict(planned.headers))
            else:
                query_all = parse_qs(parts.query, keep_blank_values=True)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query={k: v[-1] for k, v in query_all.items()},
                    query_all=query_all,
                    headers=dict(self.headers.items()),
                    body=body,
                )
                try:
                    response = app.dispatch(request)
                except Exception as exc:  # an emulator bug answers 500 like a real server would
                    response = json_response({"type": "unknown-exception", "class": type(exc).__name__, "message": str(exc)}, 500)
            payload, headers = response.encode()
            self.send_response(response.status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

    return _Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out or hung up (as the fault tests make them do) is
        # not an emulator error; anything else is printed as usual.
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError)):
            return
        super().handle_error(request, client_address)


class EmulatorServer:
    """Runs an :class:`EmulatorApp` on 127.0.0.1 in a background thread.

    :param app: the emulator.
    :param port: the port; 0 picks a free one.
    :param tls: ``(certificate file, key file)`` to serve HTTPS instead of HTTP.
    """

    def __init__(self, app: EmulatorApp, port: int = 0, *, tls: tuple[str, str] | None = None) -> None:
        self.app = app
        self._httpd = _QuietServer(("127.0.0.1", port), _make_handler(app))
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True, do_handshake_on_connect=False)
            self.scheme = "https"
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:40123``."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> EmulatorServer:
        """Start serving in a daemon thread; returns self."""
        # A short poll interval: tests start and stop many servers, and stop() waits for one poll.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="emulator", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (for ``exportkit emulate``)."""
        try:
            self._httpd.serve_forever()
        finally:
            self._httpd.server_close()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServedEmulator:
    """Lifecycle shared by the emulators' public classes: they set ``self.server`` to an :class:`EmulatorServer`.

    Use as a context manager (a background thread, on a free port by default),
    or call :meth:`serve_forever` to serve in the calling thread (``exportkit emulate``).
    """

    server: EmulatorServer

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:40123``."""
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def control_token(self) -> str:
        """The token the control routes (``/_control/``, ``/_inspect/``) require in ``X-Emulator-Token``."""
        return self.server.app.control_token

    @property
    def control_headers(self) -> dict[str, str]:
        """``{"X-Emulator-Token": token}``, for requests to the control routes."""
        return {TOKEN_HEADER: self.control_token}

    def start(self: _S) -> _S:
        """Serve in a background thread; returns self."""
        self.server.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted."""
        self.server.serve_forever()

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_S = TypeVar("_S", bound=ServedEmulator)
