"""Measuring processes from outside: wall time, CPU seconds, peak RSS; emulators as separate processes.

Every side of the benchmark (the exporter, the pass-through client, the naive
client) runs as its own process, so its CPU seconds and peak RSS are its own
(``os.wait4``). Each emulator runs as its own process too, so the CPU it
spends serving one side is the difference of its ``/proc/<pid>/stat``
counters before and after, and its request count is the difference of its
own counters.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Measured", "run_measured", "Emulator"]

_TICK = os.sysconf("SC_CLK_TCK")
# Runs the command as a child of a small process and reports its own usage. Linux seeds a
# process's peak RSS with the memory of the process it was forked from, so the benchmark
# (which holds the judgements it posts) must not be the measured process's parent.
_LAUNCH = (
    "import json, os, subprocess, sys\n"
    "proc = subprocess.Popen(sys.argv[1:])\n"
    "_, status, usage = os.wait4(proc.pid, 0)\n"
    "print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime, usage.ru_maxrss]), file=sys.stderr)\n"
)


@dataclass
class Measured:
    """One process run: exit code, wall seconds, CPU seconds (user + system), peak RSS in MiB, its stdout."""

    code: int
    wall: float
    cpu: float
    rss_mib: float
    stdout: str = ""
    emulators: dict[str, dict[str, float]] = field(default_factory=dict)


def run_measured(cmd: list[str], *, cwd: Path | None = None, emulators: tuple[Emulator, ...] = ()) -> Measured:
    """Run ``cmd`` to its end; its own resource use, and each emulator's CPU and requests meanwhile."""
    before = {e.name: e.sample() for e in emulators}
    started = time.perf_counter()
    # The measured command's own stderr is dropped (it is the exporter's summary); the launcher's
    # last line on stderr is the measurement.
    launched = subprocess.run([sys.executable, "-c", _LAUNCH, *cmd], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    code, cpu, maxrss = json.loads(launched.stderr.decode().strip().splitlines()[-1])
    after = {e.name: e.sample() for e in emulators}
    spent = {name: {k: after[name][k] - before[name][k] for k in before[name]} for name in before}
    for name in spent:
        spent[name]["requests"] -= 1  # the sample taken after the run is itself a request
    return Measured(code, wall, cpu, maxrss / 1024, launched.stdout.decode(), spent)


class Emulator:
    """An emulator served by ``exportkit emulate KIND`` in its own process (stopped by :meth:`stop`)."""

    def __init__(self, kind: str, *options: str) -> None:
        self.name = kind
        self.proc = subprocess.Popen([sys.executable, "-m", "exportkit", "emulate", kind, *options],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = (self.proc.stdout.readline() if self.proc.stdout else "").strip()  # type: ignore[union-attr]
        if not self.url.startswith("http"):
            self.stop()
            raise RuntimeError(f"the {kind} emulator did not start")
        # The control routes need the token it prints on stderr at start.
        self.token = ""
        for line in self.proc.stderr:  # type: ignore[union-attr]
            found = re.search(r"X-Emulator-Token: ([^'\s]+)", line)
            if found:
                self.token = found.group(1)
                break
        threading.Thread(target=lambda: self.proc.stderr.read(), daemon=True).start()  # type: ignore[union-attr]

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One control call; a connection the loaded server reset is tried again (control calls are idempotent here)."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(5):
            request = urllib.request.Request(self.url + path, data=data, method=method,
                                             headers={"Content-Type": "application/json", "X-Emulator-Token": self.token})
            try:
                with urllib.request.urlopen(request, timeout=600) as answer:
                    return json.loads(answer.read() or b"null")
            except ConnectionError:
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))

    def requests_served(self) -> int:
        if self.name == "threatq":
            return int(self.call("GET", "/_control/stats")["data"]["calls"])
        return int(self.call("GET", "/_inspect/stats")["calls"])

    def sample(self) -> dict[str, float]:
        return {"cpu": self.cpu_seconds(), "requests": self.requests_served()}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
