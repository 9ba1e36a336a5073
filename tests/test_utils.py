"""Atomic writes: the result appears whole or not at all, with the modes of an ordinary file."""
from __future__ import annotations

import os
import stat

import pytest

from stylespace.utils import atomic_dir, atomic_write


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_atomic_write_gives_ordinary_modes_and_keeps_the_old_file_on_failure(tmp_path, umask_022):
    target = tmp_path / "index.json"
    with atomic_write(target, "w") as handle:
        handle.write("good")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as handle:
            handle.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]


def test_atomic_dir_gives_ordinary_modes(tmp_path, umask_022):
    with atomic_dir(tmp_path / "model") as folder:
        (folder / "weights").write_bytes(b"x")
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
    assert (tmp_path / "model" / "weights").read_bytes() == b"x"
