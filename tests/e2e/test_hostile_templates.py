"""Templates from a config file run in a sandbox: no command, no environment, in ``check`` or ``run``."""

from __future__ import annotations

import pytest

from .conftest import file_instance, make_records, write_jsonl

pytestmark = pytest.mark.integration

ESCAPES = [
    "{{ cycler.__init__.__globals__.os.popen('touch pwned').read() }}",
    "{{ lipsum.__globals__['os'].popen('touch pwned').read() }}",
    "{{ joiner.__init__.__globals__.os.system('touch pwned') }}",
    "{{ namespace.__init__.__globals__ }}{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ record.__class__.__init__.__globals__['os'].system('touch pwned') }}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_a_stdout_template_cannot_run_commands_in_check_or_run(tmp_path, cli, template):
    write_jsonl(tmp_path / "records.jsonl", make_records(2))
    (tmp_path / "evil.j2").write_text(template + " {{ value }}\n")
    file_instance(tmp_path, "inst", {"stdout": {"template": "evil.j2", "path": "out.txt"}})
    checked = cli("check", "-n", "inst", "-c", ".")
    ran = cli("run", "-n", "inst", "-c", ".")
    assert not (tmp_path / "pwned").exists(), "the template ran a command"
    assert "Traceback" not in checked.stderr + ran.stderr
    assert checked.returncode == 1 or ran.returncode != 0


def test_a_ctia_reason_cannot_read_the_environment(tmp_path, cli):
    from exportkit_ctia.emulator import CtiaEmulator

    with CtiaEmulator() as ctia:
        write_jsonl(tmp_path / "records.jsonl", make_records(2))
        reason = "{{ lipsum.__globals__['os'].environ['SECRET_IN_ENV'] }}"
        file_instance(tmp_path, "inst", {"ctia": ctia.sink_settings(reason=reason)})
        env = {"SECRET_IN_ENV": "very-secret-value-42"}
        checked = cli("check", "-n", "inst", "-c", ".", env=env)
        ran = cli("run", "-n", "inst", "-c", ".", env=env)
        held = [j.get("reason", "") for j in ctia.live_judgements()]
    assert checked.returncode == 1 and "reason" in checked.stderr
    assert ran.returncode == 1
    assert not any("very-secret-value-42" in r for r in held)


def test_the_documented_template_variables_still_work(tmp_path, cli):
    write_jsonl(tmp_path / "records.jsonl", make_records(2))
    (tmp_path / "ok.j2").write_text("{{ type }} {{ value }} {{ tags|join(',') }} {% for i in range(2) %}{{ i }}{% endfor %} {{ record.source_id }}\n")
    file_instance(tmp_path, "inst", {"stdout": {"template": "ok.j2", "path": "out.txt"}})
    assert cli("check", "-n", "inst", "-c", ".").returncode == 0
    result = cli("run", "-n", "inst", "-c", ".")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.txt").read_text().splitlines()[0] == "ip 10.0.0.1 e2e 01 1"
