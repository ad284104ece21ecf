"""The entry point and the sink's hooks: discovery, open, check, dry run, proxies, the emulate command."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import click
import pytest
import requests

from exportkit.errors import SinkAuthError, TransientError
from exportkit.settings import parse_settings
from exportkit_ctia import plugin
from exportkit_ctia.settings import CtiaSettings


def test_entry_point_names_the_plugin_module():
    (ep,) = [e for e in entry_points(group="exportkit") if e.name == "ctia"]
    assert ep.load() is plugin


def test_sink_type_parses_settings_and_builds_a_sink():
    (sink_type,) = plugin.exportkit_sink_types()
    assert sink_type.name == "ctia" and sink_type.settings_class is CtiaSettings
    settings, problems = parse_settings(CtiaSettings, {"client_id": "c", "client_password": "pw-123456"}, file="f", section="sinks.ctia")
    assert not problems
    sink = sink_type.factory(settings)
    assert "pw-123456" not in repr(sink) and "pw-123456" not in repr(settings)


def test_add_commands_uses_the_emulate_group_or_makes_one():
    cli = click.Group("exportkit")
    plugin.exportkit_add_commands(cli)
    assert "ctia" in cli.commands["emulate"].commands
    existing = click.Group("emulate")
    cli = click.Group("exportkit", commands=[existing])
    plugin.exportkit_add_commands(cli)
    assert cli.commands["emulate"] is existing and "ctia" in existing.commands


@pytest.mark.integration
def test_emulate_command_prints_its_url_first():
    script = (
        "import click; from exportkit_ctia.plugin import exportkit_add_commands\n"
        "cli = click.Group('exportkit'); exportkit_add_commands(cli)\n"
        "cli(['emulate', 'ctia', '--port', '0', '--client-id', 'cid', '--client-secret', 'csecret', '--min-tlp', 'amber', '--max-entities', '10'])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        token = requests.post(f"{url}/iroh/oauth2/token", auth=("cid", "csecret"), data={"grant_type": "client_credentials"}, timeout=5)
        assert token.status_code == 200 and token.json()["expires_in"] == 600
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.integration
def test_bad_credentials(ctia, harness):
    h = harness(client_password="wrong-password-123")
    with pytest.raises(SinkAuthError) as info:
        h.sink.exportkit_open(h.context())
    assert ctia.client_id in str(info.value) and "wrong-password-123" not in str(info.value)


@pytest.mark.integration
def test_unreachable_is_transient(harness):
    h = harness(api_url="http://127.0.0.1:9", token_url="http://127.0.0.1:9/iroh/oauth2/token", attempts=2)
    with pytest.raises(TransientError):
        h.sink.exportkit_open(h.context())


@pytest.mark.integration
def test_dry_run_open_touches_no_network(ctia, harness, record):
    h = harness(feed="F")
    h.run([record("192.0.2.1")], dry_run=True)
    assert ctia.calls == [] and h.store.data == {} and h.holdings == {}


@pytest.mark.integration
def test_check_reports_token_api_and_feed(ctia, harness, record):
    h = harness(feed="My Feed")
    lines = h.sink.exportkit_check(h.context(dry_run=True))
    assert lines[0].startswith("token obtained for client id") and "CTIA API reachable" in lines[1]
    assert "does not exist yet" in lines[2]
    assert ctia.counts()["feed"] == 0  # check writes nothing
    h.run([record("192.0.2.1")])
    lines = h.sink.exportkit_check(h.context(dry_run=True))
    assert ctia.feeds()[0]["feed_view_url"] in lines[2]


@pytest.mark.integration
def test_all_traffic_goes_through_the_proxy_when_set(ctia, harness, record):
    # CTIA's address does not resolve; only the proxy (the emulator, which takes
    # absolute-form request lines) can deliver the calls.
    h = harness(
        api_url="http://ctia.invalid",
        token_url="http://ctia.invalid/iroh/oauth2/token",
        proxies={"http": ctia.url, "https": ctia.url},
    )
    out = h.run([record("192.0.2.44")])
    assert [o.status for o in out["write"]] == ["accepted"]
    assert ("POST", "/iroh/oauth2/token") in ctia.calls and ("POST", "/ctia/bundle/import") in ctia.calls
