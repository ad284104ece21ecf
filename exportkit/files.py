"""exportkit's own files and folders, created safely whatever the umask and whoever else is on the host.

Every file exportkit writes for itself (lock, log, report, state, config,
the stdout sink's output) is opened through :func:`open_private`, and every
folder it creates through :func:`private_folder`:

* the last path component is never followed when it is a symbolic link
  (``O_NOFOLLOW``): a link planted at ``<name>.lock`` or ``<name>.log`` is
  refused, its target never truncated or written;
* temporary files are created with ``O_EXCL`` (:func:`write_atomic`), so a
  file or link planted under that name is never opened;
* files are created 0600 and folders 0700, whatever the umask (a file's mode
  may be set otherwise where a setting asks for it);
* a folder that other users can write to is refused
  (:func:`check_folder_not_shared`), with the command that fixes it: in such
  a folder anyone could swap the files exportkit relies on.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Callable

from exportkit.errors import ExportkitError

__all__ = ["open_private", "private_folder", "check_folder_not_shared", "write_atomic", "link_atomic", "FILE_MODE", "FOLDER_MODE"]

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def _refuse_link(path: Path, what: str) -> ExportkitError:
    return ExportkitError(
        f"{what} {path} is a symbolic link; exportkit does not follow links for its own files. "
        f"Remove it ('rm {path}') or choose another folder"
    )


def open_private(path: Path | str, flags: int, *, what: str = "the file", mode: int = FILE_MODE) -> int:
    """``os.open`` with ``O_NOFOLLOW`` and ``O_CLOEXEC``; a new file gets exactly ``mode`` (0600)
    regardless of the umask.

    An existing file that this user owns and that is open to others beyond
    ``mode`` is narrowed to ``mode``; one with fewer bits keeps them.

    :param flags: the usual ``os.O_*`` flags (``O_CREAT``, ``O_APPEND``, ...).
    :param what: how messages name the file ("the log file").
    :returns: the file descriptor.
    :raises ExportkitError: the path is a symbolic link.
    :raises OSError: any other failure to open.
    """
    path = Path(path)
    new = bool(flags & os.O_EXCL) or not os.path.lexists(path)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.EEXIST and path.is_symlink()):
            raise _refuse_link(path, what) from None
        raise
    try:
        info = os.fstat(fd)
        current = stat.S_IMODE(info.st_mode)
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid():
            if new and current != mode:
                os.fchmod(fd, mode)  # the umask may have taken bits a setting asked for (0644 metrics)
            elif current & ~mode:
                os.fchmod(fd, mode)
    except OSError:
        os.close(fd)
        raise
    return fd


def check_folder_not_shared(path: Path | str, what: str = "folder") -> None:
    """Refuse a folder that users other than its owner may write to (no sticky bit makes that safe here).

    :raises ExportkitError: naming the folder, its mode and the ``chmod`` that fixes it.
    """
    path = Path(path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    if mode & stat.S_IWOTH:
        raise ExportkitError(
            f"the {what} {path} is writable by other users (mode {mode:o}), who could replace exportkit's files there; "
            f"run 'chmod o-w {path}' (or 'chmod 700 {path}') or choose another folder"
        )


def private_folder(path: Path | str, what: str = "folder") -> Path:
    """Create ``path`` and missing parents with mode 0700 (umask ignored); refuse it if others may write to it.

    :returns: the path.
    :raises ExportkitError: the folder is writable by others, or cannot be created.
    """
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, FOLDER_MODE)
        except FileExistsError:
            continue
        except OSError as exc:
            raise ExportkitError(f"cannot create the {what} {folder}: {exc.strerror or exc}") from None
        os.chmod(folder, FOLDER_MODE)  # mkdir applied the umask; 0700 is the point
    check_folder_not_shared(path, what)
    return path


def write_atomic(path: Path | str, data: bytes, *, what: str = "the file", mode: int = FILE_MODE) -> Path:
    """Write ``data`` to ``path`` all at once: a fresh temporary file (``O_EXCL``, ``mode``) renamed over it.

    A reader sees the old or the new content, never half of it; a link planted
    at ``path`` is replaced, not followed.
    """
    path = Path(path)
    tmp = _temporary_name(path)
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, what=what, mode=mode)

    def fill() -> None:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    return _rename_over(tmp, path, before=fill)


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def _rename_over(tmp: Path, path: Path, *, before: Callable[[], None] = lambda: None) -> Path:
    """Run ``before`` (which finishes ``tmp``), then rename ``tmp`` over ``path``; on any failure remove ``tmp``."""
    try:
        before()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def link_atomic(target: Path | str, path: Path | str) -> Path:
    """Make ``path`` a hard link to ``target`` (same folder), replacing whatever is there at once.

    A reader of ``path`` sees the old file or the new one, never none; a link
    planted at ``path`` is replaced, not followed. Where the file system has no
    hard links, ``path`` gets a copy of ``target``.
    """
    target, path = Path(target), Path(path)
    tmp = _temporary_name(path)
    try:
        os.link(target, tmp, follow_symlinks=False)
    except OSError:
        return write_atomic(path, target.read_bytes(), what="the file")
    return _rename_over(tmp, path)
