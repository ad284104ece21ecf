"""Plugins written as a third-party team would, installed as a distribution, driven through the real CLI.

The distribution ``acme-exportkit`` is laid out on disk as an installed
package (its module plus a ``.dist-info`` folder with ``entry_points.txt``)
and put on ``PYTHONPATH`` of the ``exportkit`` subprocess; nothing is
installed into the shared environment. It offers:

* ``acmedb``: a sink that opens a ``sqlite3`` connection in ``exportkit_open``
  and writes through it (thread-bound);
* ``acmetypo``: a sink whose write hook is misspelt ``exportkit_wirte``;
* ``acme-hooks`` (an extra plugin): a ``wrapper=True`` ``exportkit_run_started``
  and a transform that raises on one record.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest

from exportkit.config import write_config

from .conftest import CLI, make_records, write_jsonl

pytestmark = pytest.mark.integration

PLUGIN = '''
import sqlite3
from pathlib import Path

import attrs
from exportkit import SinkType, hookimpl, setting


@attrs.frozen
class DbSettings:
    path: str = setting(help="SQLite file for the records.")


class DbSink:
    def __init__(self, settings):
        self.path = settings.path
        self.db = None

    @hookimpl
    def exportkit_open(self, context):
        self.db = sqlite3.connect(self.path)
        self.db.execute("CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, value TEXT)")

    @hookimpl
    def exportkit_write(self, records, context):
        self.db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?)", [(r.source_id, r.value) for r in records])
        self.db.commit()

    @hookimpl
    def exportkit_close(self, context, error):
        self.db.close()


@attrs.frozen
class NoSettings:
    pass


class TypoSink:
    def __init__(self, settings):
        pass

    @hookimpl
    def exportkit_wirte(self, records, context):
        pass


@hookimpl
def exportkit_sink_types():
    return [
        SinkType("acmedb", DbSettings, DbSink, "Records into SQLite."),
        SinkType("acmetypo", NoSettings, TypoSink, "A sink with a misspelt hook."),
    ]
'''

HOOKS = '''
from pathlib import Path

from exportkit import hookimpl

MARKER = Path(__file__).with_name("events.txt")


@hookimpl(wrapper=True)
def exportkit_run_started(run):
    with open(MARKER, "a") as fh:
        fh.write(f"wrapped start {run.instance}\\n")
    return (yield)


@hookimpl
def exportkit_transform_record(record, run):
    if record.source_id == "5":
        raise RuntimeError("acme cannot classify record 5")
    return None
'''


def install_distribution(site: Path) -> Path:
    """Lay out acme-exportkit as pip would install it; returns the site folder."""
    (site / "acme_exportkit").mkdir(parents=True)
    (site / "acme_exportkit" / "__init__.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    (site / "acme_exportkit" / "hooks.py").write_text(textwrap.dedent(HOOKS), encoding="utf-8")
    info = site / "acme_exportkit-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-exportkit\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(
        "[exportkit]\nacme = acme_exportkit\nacme-hooks = acme_exportkit.hooks\n", encoding="utf-8"
    )
    return site


@pytest.fixture
def acme(tmp_path: Path) -> dict[str, str]:
    site = install_distribution(tmp_path / "site")
    return {"PYTHONPATH": str(site)}


def write_instance(folder: Path, sinks: list[str]) -> None:
    write_jsonl(folder / "records.jsonl", make_records(30))
    tables = {
        "acmedb": {"path": str(folder / "target.sqlite")},
        "acmetypo": {},
        "stdout": {"path": str(folder / "out.jsonl")},
    }
    write_config(folder / "acme.toml", {
        "source": {"type": "file", "path": "records.jsonl"},
        "export": {"sinks": sinks, "plugins": ["acme-hooks"], "batch_size": 10},
        "sinks": {name: tables[name] for name in sinks},
    })


def test_third_party_plugins_through_the_cli(cli: CLI, tmp_path: Path, acme: dict[str, str]) -> None:
    write_instance(tmp_path, ["acmedb", "acmetypo", "stdout"])
    done = cli("run", "-n", "acme", "-c", str(tmp_path), env=acme)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 3, done.stderr
    expected = [str(i) for i in range(1, 31) if i != 5]
    # The thread-bound sink and the stdout sink got everything but the record the transform failed on.
    with sqlite3.connect(tmp_path / "target.sqlite") as db:
        assert sorted((r[0] for r in db.execute("SELECT id FROM records")), key=int) == expected
    printed = [json.loads(line)["source_id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(printed, key=int) == expected
    report = json.loads((tmp_path / "acme.report.json").read_text())
    assert report["report_version"] == 1 and report["exit_code"] == 3
    assert report["sinks"]["acmedb"]["error"] is None and report["sinks"]["acmedb"]["accepted"] == 29
    typo = report["sinks"]["acmetypo"]["error"]
    assert "plugin acme (acme-exportkit)" in typo and "exportkit_wirte" in typo
    assert report["plugin_errors"] == [
        {"hook": "exportkit_transform_record", "plugin": "acme-hooks", "error": "RuntimeError: acme cannot classify record 5"}
    ]
    assert (tmp_path / "site" / "acme_exportkit" / "events.txt").read_text() == "wrapped start acme\n"
    letters = cli("dlq", "show", "-n", "acme", "-c", str(tmp_path), env=acme)
    assert "acme-hooks" in letters.stdout and "acme cannot classify record 5" in letters.stdout, letters.stdout + letters.stderr


def test_plugins_and_check_name_the_invalid_sink(cli: CLI, tmp_path: Path, acme: dict[str, str]) -> None:
    listed = cli("plugins", env=acme)
    assert listed.returncode == 1
    assert "INVALID" in listed.stdout and "exportkit_wirte" in listed.stdout
    write_instance(tmp_path, ["acmedb", "acmetypo"])
    checked = cli("check", "-n", "acme", "-c", str(tmp_path), env=acme)
    output = checked.stdout + checked.stderr
    assert checked.returncode == 1 and "Traceback" not in output
    assert "ok   sink acmedb" in output
    assert any(line.startswith("FAIL sink acmetypo") and "exportkit_wirte" in line for line in output.splitlines()), output
