"""The instance lock: one run per instance at a time, others side by side.

An exclusive ``flock`` on ``<config dir>/<instance>.lock``. The kernel drops
it when the process dies, so a crashed run never leaves a stale lock behind.
The file holds the owner's pid so the refused run can name it. The file is
never deleted: deleting it would let two runs lock two different files.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from exportkit.errors import LockedError
from exportkit.files import open_private, private_folder

__all__ = ["InstanceLock", "lock_path"]


def lock_path(config_dir: Path, name: str) -> Path:
    """The lock file of instance ``name``."""
    return Path(config_dir) / f"{name}.lock"


class InstanceLock:
    """Hold the lock of one instance; use as a context manager.

    :param path: the lock file.
    :param instance: the instance name, for the error message.
    :raises LockedError: (on enter) another process holds the lock; names its pid.
    """

    def __init__(self, path: Path, instance: str) -> None:
        self.path = Path(path)
        self.instance = instance
        self._fd: int | None = None

    def acquire(self) -> None:
        private_folder(self.path.parent, "config folder")
        fd = open_private(self.path, os.O_RDWR | os.O_CREAT, what="the lock file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            holder = f"process {pid}" if pid else "another process"
            raise LockedError(
                f"instance {self.instance!r} is already running ({holder} holds {self.path})", pid=pid
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
