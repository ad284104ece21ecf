"""A scriptable hostile HTTP server on 127.0.0.1: redirects elsewhere, drips bytes, answers too much or too deep.

Each test gives it a ``behave(handler)`` function; every request is recorded
(method, path, headers) before ``behave`` answers it.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

Behaviour = Callable[[BaseHTTPRequestHandler], None]


class HostileServer:
    def __init__(self, behave: Behaviour | None = None) -> None:
        self.behave: Behaviour = behave or (lambda h: answer(h, 200, b"{}"))
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                server.seen.append((self.command, self.path, dict(self.headers.items())))
                try:
                    server.behave(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HostileServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def answer(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str = "application/json", **headers: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for key, value in headers.items():
        handler.send_header(key.replace("_", "-"), value)
    handler.end_headers()
    handler.wfile.write(body)


def redirect_to(target: str, status: int = 307) -> Behaviour:
    """Answer every request with a redirect to the same path on ``target``."""

    def behave(handler: BaseHTTPRequestHandler) -> None:
        answer(handler, status, b"", Location=f"{target}{handler.path}")

    return behave


def drip(seconds: float = 600, every: float = 1.0) -> Behaviour:
    """Send a valid-looking answer one byte every ``every`` seconds, for up to ``seconds``."""

    def behave(handler: BaseHTTPRequestHandler) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        end = time.monotonic() + seconds
        data = head + b"[" + b" " * 100000
        for byte in data:
            if time.monotonic() > end:
                return
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(every)

    return behave


def deep_json(depth: int = 100_000) -> bytes:
    return b'{"data":' + b"[" * depth + b"]" * depth + b"}"
