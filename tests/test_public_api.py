"""Modules talk through public names: no module reaches into another's underscored attributes."""

from __future__ import annotations

import ast
from pathlib import Path

import exportkit

ROOTS = [Path(exportkit.__file__).parent, *(Path(__file__).parents[1] / "plugins").glob("*/exportkit_*")]


def private_reaches(path: Path) -> list[str]:
    """``obj._name`` uses in ``path`` where ``_name`` is not defined in that same module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            defined.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        if node.attr in defined or (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            continue
        found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    return found


def test_no_module_calls_another_modules_private_names():
    problems = [p for root in ROOTS for path in sorted(root.rglob("*.py")) for p in private_reaches(path)]
    # Standard-library API despite the underscore: namedtuple methods, sys._getframe, os._exit.
    allowed = {"._replace", "._asdict", "._fields", "._getframe", "._exit"}
    assert [p for p in problems if not any(p.endswith(a) for a in allowed)] == []


def test_setting_info_reads_what_setting_declared():
    import attrs

    from exportkit import setting, setting_info

    @attrs.frozen
    class Settings:
        mode: str = setting("a", help="How.", choices=["a", "b"])
        plain: int = attrs.field(default=1, kw_only=True)

    fields = attrs.fields(Settings)
    assert setting_info(fields.mode).choices == ("a", "b") and setting_info(fields.mode).help == "How."
    assert setting_info(fields.plain) is None


def test_only_the_settings_module_knows_the_metadata_key():
    users = [
        f"{path.name}" for root in ROOTS for path in root.rglob("*.py")
        if path.name != "settings.py" or path.parent.name != "exportkit"
        if '"exportkit.setting"' in path.read_text(encoding="utf-8")
    ]
    assert users == []


def test_the_http_helpers_sinks_use_are_public():
    import exportkit
    import exportkit.http as http

    assert {"make_session", "RetryPolicy", "RetriesExhausted", "retry_after_seconds"} <= set(http.__all__)
    assert "exportkit.http" in exportkit.__doc__
