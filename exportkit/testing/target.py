"""What the contract suite compares to see whether a sink changed its target."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

__all__ = ["folder_state"]


def folder_state(folder: Any) -> tuple[tuple[str, str, str], ...]:
    """Every folder, file and link under ``folder``: ``(relative path, kind, detail)``, sorted.

    ``detail`` is a file's size and SHA-256, a link's target, or ``""`` for a
    folder, so two states are equal exactly when nothing was created, removed,
    renamed or rewritten. A folder that does not exist gives ``()``. Symbolic
    links are listed, never followed.
    """
    root = Path(folder)
    if not root.is_dir():
        return ()
    found: list[tuple[str, str, str]] = []
    for current, dirs, files in os.walk(root, followlinks=False):
        base = Path(current)
        for name in dirs:
            path = base / name
            kind = "link" if path.is_symlink() else "folder"
            found.append((path.relative_to(root).as_posix(), kind, os.readlink(path) if kind == "link" else ""))
        for name in files:
            path = base / name
            if path.is_symlink():
                found.append((path.relative_to(root).as_posix(), "link", os.readlink(path)))
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found.append((path.relative_to(root).as_posix(), "file", f"{path.stat().st_size}:{digest}"))
    return tuple(sorted(found))
