"""The configuration reference in docs/configuration.md matches the settings classes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from exportkit import docgen
from exportkit.settings import describe, setting

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_configuration_md_matches_the_code() -> None:
    found = docgen.extract_block(DOC.read_text(encoding="utf-8"))
    assert found is not None, f"{DOC.name} lacks the {docgen.BEGIN} / {docgen.END} markers"
    expected = docgen.render_reference()
    assert found.strip() == expected.strip(), (
        "docs/configuration.md is out of date with the settings classes (or the installed sinks differ: "
        "the reference covers every installed sink type). Run: python -m exportkit.docgen --write docs/configuration.md"
    )


def test_reference_covers_sources_export_and_every_installed_sink() -> None:
    from exportkit.plugins import discover

    text = docgen.render_reference()
    assert '`[source]` with `type = "threatq"`' in text and '`[source]` with `type = "file"`' in text
    assert "### `[export]`" in text
    for name in discover().sink_types:
        assert f"### `[sinks.{name}]`" in text
    assert "| `collection` | string | **required** |" in text
    assert '| `reconcile_every` | duration (optional) | `"24h"` |' in text


@attrs.frozen
class _Sample:
    name: str = setting(help="A name with <angle> | pipe.", example="x")
    mode: str = setting("fast", help="Mode.", choices=("fast", "slow"))
    count: int = setting(3, help="How many.", minimum=1, maximum=9)
    on: bool = setting(True, help="Switch.")


def test_render_table_rows() -> None:
    table = docgen.render_table(describe(_Sample), docgen._infos(_Sample))
    lines = table.splitlines()
    assert lines[0] == "| Key | Type | Default | Description |"
    assert lines[2] == "| `name` | string | **required** | A name with \\<angle\\> \\| pipe. Example: `x`. |"
    assert lines[3] == '| `mode` | string | `"fast"` | Mode. One of: `fast`, `slow`. |'
    assert lines[4] == "| `count` | integer | `3` | How many. Range: 1 to 9. |"
    assert lines[5] == "| `on` | true/false | `true` | Switch. |"


def test_ranges_show_integers_as_integers() -> None:
    @attrs.frozen
    class Limits:
        limit: int = setting(10, help="Most records.", minimum=1, maximum=1_000_000)
        wait: float = setting(1.0, help="Seconds.", minimum=0.5)

    table = docgen.render_table(describe(Limits), docgen._infos(Limits))
    assert "Range: 1 to 1000000." in table and "e+" not in table
    assert "At least 0.5." in table


def test_replace_and_extract_block() -> None:
    text = f"intro\n{docgen.BEGIN}\nold\n{docgen.END}\noutro\n"
    updated = docgen.replace_block(text, "new table\n")
    assert updated == f"intro\n{docgen.BEGIN}\n\nnew table\n\n{docgen.END}\noutro\n"
    assert docgen.extract_block(updated) == "new table\n"
    with pytest.raises(ValueError):
        docgen.replace_block("no markers", "x")


def test_check_exits_1_when_out_of_date_and_write_fixes_it(tmp_path: Path) -> None:
    doc = tmp_path / "configuration.md"
    doc.write_text(f"# Config\n\n{docgen.BEGIN}\nstale\n{docgen.END}\n", encoding="utf-8")
    assert docgen.main(["--check", str(doc)]) == 1
    assert docgen.main(["--write", str(doc)]) == 0
    assert docgen.main(["--check", str(doc)]) == 0
    assert doc.read_text(encoding="utf-8").startswith("# Config\n\n" + docgen.BEGIN)


@pytest.mark.integration
def test_module_runs_as_a_command(tmp_path: Path) -> None:
    doc = tmp_path / "c.md"
    doc.write_text(f"{docgen.BEGIN}\n{docgen.END}\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "exportkit.docgen", "--check", str(doc)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "out of date" in done.stderr
