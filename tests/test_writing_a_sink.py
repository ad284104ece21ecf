"""Every code block of docs/writing-a-sink.md is run, so the guide cannot drift from the kit.

The guide's blocks become a real distribution in a temporary folder:

* ``python`` blocks start with ``# <path>`` and are written there; the
  guide's own tests (the contract suite among them) then run under pytest;
* ``toml`` blocks start with ``# <path>`` too: the pyproject gives the entry
  point, the instance config is used by the commands below;
* ``sh`` lines that call ``exportkit`` or ``python -m pytest`` are run; the
  install and publish lines (pip, build, twine) are not, because they need a
  package index: a ``.dist-info`` folder on ``PYTHONPATH`` stands in for
  ``pip install -e``, which is all discovery looks at;
* the ``console`` sample of ``exportkit plugins`` is compared with the output;
* ``text`` blocks quote the hook specs and must equal their docstrings; the
  untagged tree must list every file the python blocks create;
* the list of canonical types must be ``exportkit.CANONICAL_TYPES``.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

import exportkit
import exportkit.hookspecs as hookspecs
from exportkit.emulation import EmulatorServer
from exportkit.testing import make_indicators

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "writing-a-sink.md"
# Lines of sh blocks that install or publish; they need a package index, so they are not run.
NOT_RUN = re.compile(r"^(pip |python -m pip |python -m build |/opt/exportkit/venv/bin/pip |twine )")


def blocks(text: str | None = None) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block, in order."""
    text = GUIDE.read_text(encoding="utf-8") if text is None else text
    return [(lang, body) for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)]


def path_of(body: str) -> str:
    first = body.splitlines()[0]
    assert first.startswith("# "), f"a python or toml block must start with '# <path>': {first!r}"
    return first[2:].split()[0]


def sh_lines(kind: str) -> list[str]:
    """Commands of the sh blocks: ``run`` (exportkit, pytest) or ``not-run`` (install, publish)."""
    lines = [ln.split("  #")[0].strip() for lang, body in blocks() if lang == "sh" for ln in body.splitlines() if ln.strip()]
    return [ln for ln in lines if bool(NOT_RUN.match(ln)) == (kind == "not-run")]


def hook_quote(name: str) -> str:
    func = getattr(hookspecs, name)
    return f"{name}{str(inspect.signature(func)).replace(chr(39), '')}\n\n{inspect.cleandoc(func.__doc__ or '')}"


# --- the guide's text -------------------------------------------------------------------------


def test_every_block_has_a_known_kind_and_every_sh_line_is_run_or_an_install() -> None:
    kinds = {lang for lang, _ in blocks()}
    assert kinds <= {"text", "toml", "python", "sh", "console"}, kinds
    for line in sh_lines("run"):
        assert line.startswith(("exportkit ", "python -m pytest")), f"an sh line this test does not run: {line!r}"


def test_the_hook_quotes_are_the_hook_specs() -> None:
    quotes = [body.rstrip("\n") for lang, body in blocks() if lang == "text" and not body.startswith("exportkit-mysink/")]
    names = [q.split("(")[0] for q in quotes]
    assert names == ["exportkit_sink_types", "exportkit_open", "exportkit_check", "exportkit_write", "exportkit_withdraw", "exportkit_verify", "exportkit_close"]
    for name, quoted in zip(names, quotes):
        assert quoted == hook_quote(name), f"the guide's quote of {name} differs from its docstring; it should read:\n{hook_quote(name)}"


def test_the_tree_lists_every_file_the_guide_writes() -> None:
    (tree,) = [body for lang, body in blocks() if lang == "text" and body.startswith("exportkit-mysink/")]
    names = {ln.split("#")[0].strip().rstrip("/") for ln in tree.splitlines()}
    for lang, body in blocks():
        if lang == "python" or (lang == "toml" and path_of(body).startswith("exportkit-mysink/")):
            assert Path(path_of(body)).name in names, f"{path_of(body)} is not in the guide's folder tree"


def test_the_type_list_is_the_public_constant() -> None:
    (line,) = [ln for ln in GUIDE.read_text(encoding="utf-8").splitlines() if re.fullmatch(r"(`[a-z0-9_]+`, )+`[a-z0-9_]+`\.", ln)]
    assert set(re.findall(r"`([a-z0-9_]+)`", line)) == set(exportkit.CANONICAL_TYPES)


def test_the_settings_section_covers_config_paths_and_choices() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    for needle in ("`exportkit.ConfigPath`", "relative path starts at the config folder", "`choices=`", "`context.store`",
                   "**`record` is `None`**", "**pytest**", "config_dir="):
        assert needle in text, needle


# --- the guide's code, as a distribution ------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The guide's blocks written out: <root>/exportkit-mysink, <root>/try, and a dist-info in <root>/site."""
    root = tmp_path_factory.mktemp("guide")
    package = root / "exportkit-mysink"
    for lang, body in blocks():
        if lang == "python":
            target = package / path_of(body)
        elif lang == "toml":
            target = root / path_of(body)
        else:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
    # `pip install -e` would write this (plus a path entry): the name, the version, the entry points.
    meta = tomllib.loads((package / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    dist_info = root / "site" / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n", encoding="utf-8")
    entry_points = "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in meta["entry-points"].items())
    (dist_info / "entry_points.txt").write_text(entry_points, encoding="utf-8")
    return root


def environment(project: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "EXPORTKIT_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(project / "site"), str(project / "exportkit-mysink")])
    env.update(extra)
    return env


def exportkit_command(line: str) -> list[str]:
    args = line.split()
    assert args[0] == "exportkit"
    return [sys.executable, "-m", "exportkit", *args[1:]]


@pytest.mark.integration
def test_the_guides_own_tests_pass_the_contract_suite(project: Path) -> None:
    (line,) = [ln for ln in sh_lines("run") if ln.startswith("python -m pytest")]
    command = [sys.executable, *line.split()[1:], "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(command, cwd=project / "exportkit-mysink", env=environment(project), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    contract_tests = len([n for n in dir(exportkit.testing.SinkContract) if n.startswith("test_")])
    passed = int(re.search(r"(\d+) passed", done.stdout).group(1))
    assert passed >= contract_tests + 4, done.stdout[-2000:]


@pytest.mark.integration
def test_the_plugins_sample_is_what_the_command_prints(project: Path) -> None:
    (console,) = [body for lang, body in blocks() if lang == "console"]
    command, *sample = console.rstrip("\n").splitlines()
    assert command == "$ exportkit plugins"
    done = subprocess.run(exportkit_command(command[2:]), env=environment(project), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    start = lines.index(sample[0])
    assert lines[start : start + len(sample)] == sample


@pytest.fixture
def mysystem(project: Path) -> Iterator[Any]:
    """The guide's MySystem stand-in (from its conftest.py), served on 127.0.0.1."""
    spec = importlib.util.spec_from_file_location("guide_conftest", project / "exportkit-mysink" / "tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.MySystem()
    with EmulatorServer(app) as server:
        app.url = server.url
        yield app


@pytest.mark.integration
def test_the_try_instance_checks_dry_runs_and_runs(project: Path, mysystem: Any) -> None:
    folder = project / "try"
    config = folder / "try.toml"
    # The one change to the guide's file: MySystem's address is the stand-in's.
    config.write_text(config.read_text(encoding="utf-8").replace("https://mysystem.example.com/api", mysystem.url), encoding="utf-8")
    with open(folder / "records.jsonl", "w", encoding="utf-8") as fh:
        for record in make_indicators(5):
            fh.write(json.dumps(record.to_dict()) + "\n")
    env = environment(project, MYSYSTEM_KEY=mysystem.api_key)
    check, dry_run, run = [ln for ln in sh_lines("run") if ln.startswith("exportkit ") and " -n try " in ln]
    assert (check.split()[1], "--dry-run" in dry_run, run.split()[1]) == ("check", True, "run")

    done = subprocess.run(exportkit_command(check), cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   sink mysink: MySystem reached" in done.stdout
    done = subprocess.run(exportkit_command(dry_run), cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert mysystem.lists == {}, "the dry run created something in MySystem"
    done = subprocess.run(exportkit_command(run), cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(mysystem.source_ids("exportkit-try")) == ["1", "2", "3", "4", "5"]
