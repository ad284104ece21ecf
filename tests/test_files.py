"""exportkit's own files: no link followed, 0600/0700 whatever the umask, no folder others can write."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from exportkit.errors import ExportkitError
from exportkit.files import check_folder_not_shared, open_private, private_folder, write_atomic
from exportkit.logs import PrivateRotatingFileHandler


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def open_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def test_open_private_refuses_a_link_and_creates_0600(tmp_path, open_umask):
    target = tmp_path / "target"
    target.write_text("keep")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(ExportkitError, match="symbolic link"):
        open_private(tmp_path / "link", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    assert target.read_text() == "keep"
    os.close(open_private(tmp_path / "new", os.O_WRONLY | os.O_CREAT))
    assert mode(tmp_path / "new") == 0o600


def test_open_private_narrows_an_own_file_open_to_others(tmp_path):
    path = tmp_path / "wide"
    path.write_text("x")
    os.chmod(path, 0o666)
    os.close(open_private(path, os.O_RDONLY))
    assert mode(path) == 0o600


def test_private_folder_makes_every_missing_level_0700(tmp_path, open_umask):
    private_folder(tmp_path / "a" / "b" / "c")
    for folder in ("a", "a/b", "a/b/c"):
        assert mode(tmp_path / folder) == 0o700


def test_a_folder_others_can_write_is_refused_with_the_fix(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(ExportkitError, match=r"chmod o-w"):
        check_folder_not_shared(shared, "log folder")


def test_write_atomic_never_opens_a_planted_temporary(tmp_path, open_umask):
    path = tmp_path / "report.json"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two" and mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_rotated_logs_stay_0600(tmp_path, open_umask):
    handler = PrivateRotatingFileHandler(tmp_path / "x.log", maxBytes=200, backupCount=2, encoding="utf-8")
    logger = logging.getLogger("test_files.rotation")
    logger.addHandler(handler)
    try:
        for i in range(40):
            logger.warning("line %d of a log that rotates", i)
    finally:
        logger.removeHandler(handler)
        handler.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["x.log", "x.log.1", "x.log.2"]
    assert all(mode(tmp_path / n) == 0o600 for n in names)


def test_a_new_file_gets_exactly_the_mode_asked_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "metrics.prom", b"x 1\n", mode=0o644)
        os.close(open_private(tmp_path / "out.csv", os.O_WRONLY | os.O_CREAT, mode=0o640))
    finally:
        os.umask(old)
    assert mode(tmp_path / "metrics.prom") == 0o644
    assert mode(tmp_path / "out.csv") == 0o640
