"""TLS against an emulator serving HTTPS with a self-signed certificate, as appliances often do."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from exportkit.errors import SourceError
from exportkit.settings import parse_settings
from exportkit.threatq.emulator import ThreatQEmulator
from exportkit.threatq.source import ThreatQSettings, ThreatQSource

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    assert shutil.which("openssl"), "the openssl command makes the test certificate"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key), "-out", str(cert),
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return str(cert), str(key)


def source_for(tq: ThreatQEmulator, tmp_path: Path, **extra) -> ThreatQSource:
    creds = tq.credentials
    raw = {"host": tq.url, "client_id": creds.client_id, "username": creds.username, "password": creds.password, "collection": "CTR Export", **extra}
    settings, problems = parse_settings(ThreatQSettings, raw, file="t", section="source")
    assert not problems, problems
    return ThreatQSource(settings, config_dir=tmp_path)


def test_self_signed_certificate_is_refused_by_default_with_a_hint(certificate, tmp_path):
    with ThreatQEmulator(indicators=20, seed=3, tls=certificate) as tq:
        assert tq.url.startswith("https://")
        source = source_for(tq, tmp_path)
        with pytest.raises(SourceError) as caught:
            source.open()
        source.close()
    assert "certificate" in str(caught.value) and "ca_bundle" in str(caught.value)


def test_ca_bundle_makes_it_trusted(certificate, tmp_path):
    with ThreatQEmulator(indicators=20, seed=3, tls=certificate) as tq:
        source = source_for(tq, tmp_path, ca_bundle=certificate[0])
        source.open()
        items = list(source.pull(None, None))
        source.close()
    assert items and all(getattr(i, "source", None) == "ThreatQ" for i in items if not hasattr(i, "reason"))


def test_verify_tls_false_accepts_it(certificate, tmp_path):
    with ThreatQEmulator(indicators=20, seed=3, tls=certificate) as tq:
        source = source_for(tq, tmp_path, verify_tls=False)
        source.open()
        assert source.check()
        source.close()


def test_verify_tls_false_silences_urllib3_for_its_own_session_only(certificate, tmp_path):
    import warnings

    import requests
    from urllib3.exceptions import InsecureRequestWarning

    with ThreatQEmulator(indicators=5, seed=3, tls=certificate) as tq:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            source = source_for(tq, tmp_path, verify_tls=False)
            source.open()
            source.close()
            ours = [w for w in caught if issubclass(w.category, InsecureRequestWarning)]
            requests.get(f"{tq.url}/api/token", verify=False, timeout=10)  # someone else's session in the process
            others = [w for w in caught if issubclass(w.category, InsecureRequestWarning)][len(ours):]
    assert ours == [], "the session that asked for no verification does not warn per request"
    assert others, "other sessions in the process still get urllib3's warning"
