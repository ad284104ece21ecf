"""A real HTTP receiver on 127.0.0.1 for the webhook tests (exportkit.emulation underneath).

The receiver keeps every request (path, headers, exact body bytes) and, per
path, the records it holds: a 2xx body with ``records`` stores them by
source id, one with ``withdrawn`` removes them. A batch holding a record
whose value is :attr:`Receiver.REFUSED_VALUE` is answered 422, as a validating
receiver would. Faults (500, 429, dropped connections) come from
``receiver.faults``.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Iterator

import attrs
import pytest

from exportkit.emulation import EmulatorApp, EmulatorServer, Request, Response, json_response
from exportkit.http import RetryPolicy

@attrs.frozen
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver(EmulatorApp):
    #: a record with this value makes the receiver answer 422 for its whole batch
    REFUSED_VALUE = "refused.invalid"

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.live: dict[str, dict[str, dict[str, Any]]] = {}
        #: path -> status to answer (instead of 200), for 4xx tests
        self.answer: dict[str, int] = {}
        self.route("POST", "/hook/{name}", self.hook)
        self.route("HEAD", "/hook/{name}", lambda request: Response(405))

    def hook(self, request: Request) -> Response:
        with self.lock:
            self.received.append(Received(request.path, dict(request.headers), request.body))
            status = self.answer.get(request.path)
            if status is not None:
                return json_response({"error": f"answer {status} as told", "detail": "x" * 1000}, status)
            try:
                data = json.loads(request.body)
            except ValueError:
                return Response(200, b"ok (not JSON)", {"Content-Type": "text/plain"})
            if not isinstance(data, dict):
                return Response(200, b"ok", {"Content-Type": "text/plain"})
            records = data.get("records") or []
            if any(r.get("value") == self.REFUSED_VALUE for r in records if isinstance(r, dict)):
                return json_response({"error": "invalid record", "value": self.REFUSED_VALUE}, 422)
            live = self.live.setdefault(request.path, {})
            for record in records:
                live[str(record["source_id"])] = record
            for item in data.get("withdrawn") or []:
                live.pop(str(item["source_id"]), None)
            return json_response({"received": len(records)})

    def bodies(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]


@pytest.fixture(scope="session")
def receiver_server() -> Iterator[EmulatorServer]:
    with EmulatorServer(Receiver()) as server:
        yield server


@pytest.fixture
def receiver(receiver_server: EmulatorServer) -> Iterator[Receiver]:
    app = receiver_server.app
    assert isinstance(app, Receiver)
    app.faults.clear()
    app.answer.clear()
    yield app
    app.faults.clear()


@pytest.fixture
def receiver_class() -> type[Receiver]:
    """The receiver app class, for a second server (a proxy stand-in)."""
    return Receiver


@pytest.fixture
def fast_policy() -> RetryPolicy:
    """Three tries, no real waiting (the sleeps are recorded)."""
    sleeps: list[float] = []
    return RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.01, max_retry_after=5, sleep=sleeps.append)
