"""Atomic writes: the result appears whole or not at all, with the modes of an ordinary file; the value checks."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from stylespace.utils import (StylespaceError, above, at_least, atomic_dir, atomic_write, each, in_range,
                             is_number, one_of, some_of, validate)


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


def test_validate_raises_the_first_failing_check_with_its_owner():
    validate([(True, "fine"), at_least("epochs", 3, 1)])
    with pytest.raises(StylespaceError, match=r"^augmentation scale must be a number in \[0, 1\), got 1.5$"):
        validate([at_least("views", 1, 1), in_range("scale", 1.5, 0, 1, "[)"), (False, "not reached")], "augmentation")

    def rows():  # a generator: the second row only runs once the first has passed
        yield (False, "items must be a list")
        raise AssertionError("evaluated after a failure")
    with pytest.raises(StylespaceError, match="^items must be a list$"):
        validate(rows())


@pytest.mark.parametrize("value, integer, expected", [
    (3, True, True), (np.int64(3), True, True), (3.0, True, False), (True, True, False), (np.bool_(True), True, False),
    (2.5, False, True), (np.float32(2.5), False, True), (float("nan"), False, False), (float("inf"), False, False),
    ("3", False, False), (None, False, False), ([3], False, False),
])
def test_is_number(value, integer, expected):
    assert is_number(value, integer) is expected


def test_bounds_say_what_was_expected_and_what_came():
    assert at_least("epochs", 1, 1) == (True, "epochs must be an integer >= 1, got 1")
    assert at_least("epochs", 0, 1) == (False, "epochs must be an integer >= 1, got 0")
    assert not at_least("epochs", True, 1)[0] and not at_least("epochs", 2.0, 1)[0]
    assert at_least("epochs", "ten", 1) == (False, "epochs must be an integer >= 1, got 'ten'")
    assert at_least("weight_decay", 0.0, 0, integer=False) == (True, "weight_decay must be a number >= 0, got 0.0")
    assert above("lr", 0, 0) == (False, "lr must be a number > 0, got 0")
    assert above("lr", 1e-3, 0)[0]
    assert in_range("momentum", 1, 0, 1, "[)") == (False, "momentum must be a number in [0, 1), got 1")
    assert in_range("p", 1, 0, 1)[0] and in_range("p", 0, 0, 1)[0] and not in_range("p", 0, 0, 1, "(]")[0]
    assert at_least("umap_epochs", None, 1, none_ok=True, note="None: the default") == (
        True, "umap_epochs must be an integer >= 1 or None (None: the default), got None")
    assert not at_least("umap_epochs", None, 1)[0]
    assert at_least("k", np.float64(2.0), 1, integer=False)[1].endswith("got 2.0")  # numpy scalars print plainly
    with pytest.raises(ValueError):
        in_range("p", 0.5, 0, 1, "[[")


def test_each_checks_the_count_and_every_item():
    assert each("grid", (4, 3), 1, count=2, note="rows, columns")[0]
    assert each("grid", (4,), 1, count=2, note="rows, columns") == (
        False, "grid must be 2 integers >= 1 (rows, columns), got (4,)")
    assert each("grid", (4, 0), 1, count=2)[0] is False and each("grid", "43", 1)[0] is False
    assert each("ks", [], 1) == (False, "ks must be one or more integers >= 1, got []")
    assert each("hidden_dims", (), 1, empty_ok=True)[0] and each("ks", np.array([1, 5]), 1)[0]
    assert each("frequencies", (0.1, 0.5), 0, 0.5, "()", integer=False) == (
        False, "frequencies must be one or more numbers in (0, 0.5), got (0.1, 0.5)")


def test_choices():
    assert one_of("metric", "cosine", ("cosine", "euclidean"))[0]
    assert one_of("metric", "l1", ("cosine", "euclidean")) == (False, "metric must be one of cosine, euclidean; got 'l1'")
    assert not one_of("metric", ["cosine"], ("cosine",))[0]  # unhashable: not among them, no TypeError
    assert some_of("sets", ("test", "all"), ("test", "all"))[0]
    assert some_of("sets", ("test", "x"), ("test", "all")) == (
        False, "sets must be one or more of test, all, each once; got unknown 'x'")
    assert some_of("sets", ("test", "test"), ("test", "all"))[1].endswith("got test twice")
    assert some_of("sets", (), ("test",))[1].endswith("got none") and some_of("sets", (), ("test",), empty_ok=True)[0]
