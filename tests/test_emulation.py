"""The emulators' shared server: Host checked, control routes behind a token, bad lengths refused."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys

import pytest
import requests

from exportkit.threatq.emulator import ThreatQEmulator
from exportkit_ctia.emulator import CtiaEmulator

pytestmark = pytest.mark.integration


@pytest.fixture(params=["threatq", "ctia"])
def emulator(request):
    made = ThreatQEmulator(indicators=5, seed=1) if request.param == "threatq" else CtiaEmulator()
    with made:
        yield made


def control_path(emulator) -> str:
    return "/_control/stats" if isinstance(emulator, ThreatQEmulator) else "/_inspect/counts"


def raw_request(port: int, data: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(data)
        return conn.recv(4096)


def test_control_routes_need_the_token(emulator):
    url = emulator.url + control_path(emulator)
    assert requests.get(url, timeout=5).status_code == 403
    assert requests.get(url, headers={"X-Emulator-Token": "guess"}, timeout=5).status_code == 403
    assert requests.get(url, headers=emulator.control_headers, timeout=5).status_code == 200


def test_a_cross_origin_text_plain_post_cannot_drive_the_control_api(emulator):
    path = "/_control/tokens/revoke" if isinstance(emulator, ThreatQEmulator) else "/_inspect/reset"
    answer = requests.post(emulator.url + path, data="{}", headers={"Content-Type": "text/plain", "Origin": "http://evil.example"}, timeout=5)
    assert answer.status_code == 403


def test_a_foreign_host_header_is_refused(emulator):
    answer = requests.get(emulator.url + control_path(emulator), headers={**emulator.control_headers, "Host": "evil.example"}, timeout=5)
    assert answer.status_code == 421
    assert requests.get(emulator.url + control_path(emulator), headers=emulator.control_headers, timeout=5).status_code == 200


@pytest.mark.parametrize("length", ["abc", "-1", "1e3"])
def test_a_bad_content_length_is_a_400_not_a_traceback_or_a_hang(emulator, length):
    request = f"POST /anything HTTP/1.1\r\nHost: 127.0.0.1:{emulator.port}\r\nContent-Length: {length}\r\n\r\n".encode()
    head = raw_request(emulator.port, request)
    assert head.startswith(b"HTTP/1.1 400"), head[:80]


def test_emulate_prints_the_control_token_at_start():
    code = ("from exportkit.threatq.commands import emulate_threatq; "
            "emulate_threatq(['--indicators', '5'], standalone_mode=True)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        banner = proc.stderr.readline()
        token = banner.split("X-Emulator-Token: ", 1)[1].split("'", 1)[0]
        assert requests.get(f"{url}/_control/stats", headers={"X-Emulator-Token": token}, timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_demo_prints_a_control_command_that_works(tmp_path):
    from exportkit.demo import run_demo

    assert shutil.which("curl"), "the demo prints a curl command"
    lines: list[str] = []
    results: list[subprocess.CompletedProcess[str]] = []

    def wait() -> None:
        command = next(line for line in lines if "curl" in line).strip()
        results.append(subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30))

    code = run_demo(indicators=60, seed=3, folder=tmp_path, keep=True, echo=lines.append, wait=wait)
    assert code == 0
    (done,) = results
    assert done.returncode == 0 and done.stdout.startswith('{"data": {"id"'), done.stdout + done.stderr
