"""The instance lock: one run per instance across processes, released when the holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from exportkit.errors import LockedError
from exportkit.lock import InstanceLock, lock_path

HOLDER = textwrap.dedent(
    """
    import sys
    from exportkit.lock import InstanceLock
    lock = InstanceLock(sys.argv[1], "inst")
    lock.acquire()
    print("locked", flush=True)
    sys.stdin.readline()   # hold until told to go
    """
)


def start_holder(path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout):
        if stream:
            stream.close()


def test_lock_path(tmp_path):
    assert lock_path(tmp_path, "prod") == tmp_path / "prod.lock"


def test_acquire_release_and_reacquire(tmp_path):
    path = lock_path(tmp_path, "inst")
    with InstanceLock(path, "inst"):
        assert path.read_text().strip() == str(os.getpid())
    with InstanceLock(path, "inst"):  # released: can be taken again
        pass
    assert path.exists()  # never deleted


def test_second_lock_on_the_same_file_is_refused_in_process(tmp_path):
    path = lock_path(tmp_path, "inst")
    with InstanceLock(path, "inst"):
        with pytest.raises(LockedError) as info:
            InstanceLock(path, "inst").acquire()
    assert info.value.pid == os.getpid() and info.value.exit_code == 4


def test_instances_lock_independently(tmp_path):
    with InstanceLock(lock_path(tmp_path, "a"), "a"), InstanceLock(lock_path(tmp_path, "b"), "b"):
        pass


@pytest.mark.integration
def test_lock_held_by_another_process_names_its_pid(tmp_path):
    path = lock_path(tmp_path, "inst")
    proc = start_holder(path)
    try:
        with pytest.raises(LockedError) as info:
            InstanceLock(path, "inst").acquire()
        assert info.value.pid == proc.pid
        assert f"process {proc.pid}" in str(info.value) and "'inst'" in str(info.value)
        # another instance in the same folder is not affected
        with InstanceLock(lock_path(tmp_path, "other"), "other"):
            pass
    finally:
        stop(proc)


@pytest.mark.integration
def test_lock_is_released_when_the_holder_dies(tmp_path):
    path = lock_path(tmp_path, "inst")
    proc = start_holder(path)
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup code runs
    stop(proc)
    with InstanceLock(path, "inst"):
        assert path.read_text().strip() == str(os.getpid())
