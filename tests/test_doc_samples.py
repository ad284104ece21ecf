"""The `exportkit plugins` samples in the docs are what the command prints.

Every console block line ``$ ... exportkit plugins`` in the docs starts a
sample; its output runs to the next ``$`` line or the end of the block, and
``...`` stands for plugins left out. Each plugin block of a sample (its
first line and the indented lines under it) must appear as is in the real
listing: the installed plugins' from discovery, ``acme``'s from a registry
that holds it as failed or disabled, as the docs describe.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exportkit.plugins import DisabledPlugin, FailedPlugin, PluginRegistry, discover, listing

ROOT = Path(__file__).resolve().parents[1]
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md", *sorted((ROOT / "examples").glob("*/README.md"))]
# The guide's mysink sample is checked with the guide's own code (tests/test_writing_a_sink.py).
GUIDE = ROOT / "docs" / "writing-a-sink.md"


def plugins_samples(path: Path) -> list[tuple[str, list[str]]]:
    """``(command line, output lines)`` of every ``exportkit plugins`` sample in a Markdown file."""
    samples: list[tuple[str, list[str]]] = []
    for block in re.findall(r"^```console\n(.*?)^```", path.read_text(encoding="utf-8"), re.S | re.M):
        current: list[str] | None = None
        for line in block.splitlines():
            if line.startswith("$ "):
                current = [] if re.search(r"\bexportkit plugins\s*$", line) else None
                if current is not None:
                    samples.append((line, current))
            elif current is not None:
                current.append(line)
    return samples


def plugin_blocks(lines: list[str]) -> dict[str, list[str]]:
    """Plugin name -> its lines (the unindented head and the indented lines under it)."""
    blocks: dict[str, list[str]] = {}
    name = None
    for line in lines:
        if line.strip() in ("...", ""):
            name = None
            continue
        if not line.startswith(" "):
            name = line.split()[0]
            blocks[name] = [line]
        elif name is not None:
            blocks[name].append(line)
    return blocks


def acme_registry(disabled: bool) -> PluginRegistry:
    registry = PluginRegistry()
    if disabled:
        registry.disabled.append(DisabledPlugin("acme", "exportkit-acme", "1.2.0"))
    else:
        registry.failed.append(FailedPlugin("acme", "exportkit-acme", "1.2.0", "ModuleNotFoundError: No module named 'acme_sdk'"))
    return registry


def _all_samples() -> list[tuple[str, str, list[str]]]:
    return [(path.relative_to(ROOT).as_posix(), command, lines) for path in DOCS if path != GUIDE for command, lines in plugins_samples(path)]


def test_the_docs_have_plugins_samples() -> None:
    where = {doc for doc, _, _ in _all_samples()}
    assert {"docs/install.md", "docs/operations.md", "examples/webhook/README.md"} <= where


@pytest.mark.parametrize(("doc", "command", "lines"), _all_samples(), ids=lambda v: v if isinstance(v, str) and v.endswith(".md") else "")
def test_plugins_sample_matches_the_listing(doc: str, command: str, lines: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXPORTKIT_DISABLE_PLUGINS", raising=False)
    real = plugin_blocks(listing(discover()))
    sample = plugin_blocks(lines)
    assert sample, f"{doc}: empty sample after {command!r}"
    for name, block in sample.items():
        if name == "acme":
            expected = plugin_blocks(listing(acme_registry(disabled="EXPORTKIT_DISABLE_PLUGINS=acme" in command)))[name]
        else:
            assert name in real, f"{doc}: the sample shows plugin {name!r}, which is not installed here"
            expected = real[name]
        assert block == expected, f"{doc}: sample of {name!r} differs from `exportkit plugins`"


@pytest.mark.parametrize("disabled", [False, True], ids=["failed", "disabled"])
def test_operations_config_problem_samples_match_the_reasons(disabled: bool) -> None:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    prefix = "  - /etc/exportkit/prod.toml: export.sinks: sink type 'acme' "
    samples = [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]
    why = acme_registry(disabled).unavailable["acme"]
    assert why in samples, f"operations.md should show: {prefix}{why}"
