"""Small shared pieces: the user-facing error type, value checks, atomic writes, device choice, dataclass I/O."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
import os
import shutil
import tempfile
import typing
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")

# The distance metrics every floor speaks of (an index's, an evaluation's, a report's), named once here:
# ``cosine`` (on L2-normalised vectors) and ``euclidean`` (on the vectors as given).
METRICS = ("cosine", "euclidean")


class StylespaceError(Exception):
    """An error caused by the user's input; its message says what is wrong and what to do.

    The CLI prints the message alone (no traceback) and exits with status 2.
    """


# --- value checks ------------------------------------------------------------------------------------
# One way to check settings: a config's ``__post_init__`` (or a function, for its arguments) lists its
# checks as a table of ``(ok, message)`` rows and hands it to ``validate``, which raises the first failure.
# The builders below make the common rows with one wording ("NAME must be an integer >= 1, got 0"); a check
# they do not cover is a plain ``(condition, message)`` row of the same table. Builders never raise on a
# value of the wrong type: they report it.

Check = tuple[bool, str]


def validate(checks: Iterable[Check], owner: str = "") -> None:
    """Raise StylespaceError with the message of the first failing check, prefixed by ``owner`` (e.g.
    ``"augmentation"``: which settings it is about). ``checks`` may be a generator, so that a row can rely
    on the rows before it having passed."""
    for ok, message in checks:
        if not ok:
            raise StylespaceError(f"{owner} {message}" if owner else message)


def is_number(value: Any, integer: bool = False) -> bool:
    """A finite real number (an integer when ``integer``; numpy's count); booleans are neither."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return isinstance(value, numbers.Integral) if integer else math.isfinite(value)


def at_least(name: str, value: Any, low: float, *, integer: bool = True, none_ok: bool = False,
             note: str = "") -> Check:
    """``value >= low``: "NAME must be an integer >= LOW, got VALUE" ("a number" with ``integer=False``)."""
    return _bounded(name, value, low, None, "[]", integer, none_ok, note)


def above(name: str, value: Any, low: float, *, integer: bool = False, none_ok: bool = False,
          note: str = "") -> Check:
    """``value > low``: "NAME must be a number > LOW, got VALUE"."""
    return _bounded(name, value, low, None, "()", integer, none_ok, note)


def in_range(name: str, value: Any, low: float, high: float, interval: str = "[]", *, integer: bool = False,
             none_ok: bool = False, note: str = "") -> Check:
    """``low <= value <= high``, an end open where ``interval`` says so (``"[)"``: ``low <= value < high``):
    "NAME must be a number in [LOW, HIGH), got VALUE"."""
    return _bounded(name, value, low, high, interval, integer, none_ok, note)


def each(name: str, values: Any, low: float, high: float | None = None, interval: str = "[]", *,
         count: int | None = None, integer: bool = True, empty_ok: bool = False, note: str = "") -> Check:
    """Every item of a sequence in range (``low``, ``high``, ``interval`` as in :func:`in_range`; ``high``
    None: no upper bound), exactly ``count`` items or, without ``count``, one or more (or none, with
    ``empty_ok``): "NAME must be 2 integers >= 1 (rows, columns), got (8,)"."""
    items = _items(values)
    ok = items is not None and (len(items) == count if count is not None else bool(items) or empty_ok)
    ok = ok and all(_within(v, low, high, interval, integer) for v in items)
    how_many = str(count) if count is not None else ("zero or more" if empty_ok else "one or more")
    kind = "integers" if integer else "numbers"
    return ok, f"{name} must be {how_many} {kind} {_range_text(low, high, interval)}{_note(note)}, got {_show(values)}"


def one_of(name: str, value: Any, choices: Iterable) -> Check:
    """``value in choices``: "NAME must be one of a, b, c; got 'x'"."""
    choices = tuple(choices)
    return _member(value, choices), f"{name} must be one of {_listed(choices)}; got {_show(value)}"


def some_of(name: str, values: Any, choices: Iterable, *, empty_ok: bool = False) -> Check:
    """Distinct items of ``choices``, one or more (or none, with ``empty_ok``):
    "NAME must be one or more of a, b, c, each once; got unknown 'x'"."""
    choices = tuple(choices)
    items = _items(values)
    if items is None:
        problem = _show(values)
    else:
        unknown = [v for v in items if not _member(v, choices)]
        twice = list(dict.fromkeys(str(v) for v in items if items.count(v) > 1))
        problem = (f"unknown {', '.join(map(_show, unknown))}" if unknown else f"{', '.join(twice)} twice" if twice
                   else "none" if not items and not empty_ok else "")
    how_many = "zero or more" if empty_ok else "one or more"
    return not problem, f"{name} must be {how_many} of {_listed(choices)}, each once; got {problem}"


def _bounded(name, value, low, high, interval, integer, none_ok, note) -> Check:
    ok = (value is None and none_ok) or _within(value, low, high, interval, integer)
    kind = "an integer" if integer else "a number"
    return ok, (f"{name} must be {kind} {_range_text(low, high, interval)}{' or None' if none_ok else ''}"
                f"{_note(note)}, got {_show(value)}")


def _within(value, low, high, interval: str, integer: bool) -> bool:
    if interval not in ("[]", "[)", "(]", "()"):
        raise ValueError(f"interval must be one of [], [), (], (); got {interval!r}")  # a programming error
    if not is_number(value, integer):
        return False
    above_low = value >= low if interval[0] == "[" else value > low
    below_high = high is None or (value <= high if interval[1] == "]" else value < high)
    return bool(above_low and below_high)


def _range_text(low, high, interval: str) -> str:
    if high is None:
        return f"{'>=' if interval[0] == '[' else '>'} {low}"
    return f"in {interval[0]}{low}, {high}{interval[1]}"


def _items(values: Any) -> list | None:
    """The items of a list, tuple, set, other non-string sequence or 1-D array, else None."""
    if isinstance(values, (Sequence, set, frozenset)) and not isinstance(values, str):
        return list(values)
    return values.tolist() if getattr(values, "ndim", None) == 1 else None


def _member(value, choices: tuple) -> bool:
    try:
        return value in choices
    except (TypeError, ValueError):  # an unhashable value, or an array, is not among them
        return False


def _listed(choices: tuple) -> str:
    return ", ".join(str(c) for c in choices)


def _note(note: str) -> str:
    return f" ({note})" if note else ""


def _show(value: Any) -> str:
    """A value as a message shows it: strings quoted, numpy scalars as plain numbers."""
    if isinstance(value, str):
        return repr(value)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return str(value.item())
    return str(value)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Write ``path`` through a temporary file in the same folder, renamed into place on success.

    A crash or an exception mid-write leaves any previous ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); the result should get the modes of any file the user writes.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``path`` and swap it in on success.

    The previous folder (if any) stays usable until the new one is complete; it is then replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private (0700)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path, "w") as handle:
        json.dump(obj, handle, indent=2, sort_keys=False, default=_json_default)
        handle.write("\n")


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_jsonable(obj: Any) -> Any:
    """Round-trip ``obj`` through JSON so numpy scalars, paths and dataclasses become plain types."""
    return json.loads(json.dumps(obj, default=_json_default))


def save_dataclass(obj: Any, path: str | os.PathLike) -> None:
    """Save a config dataclass as JSON (atomically) so an artifact says how it was made."""
    write_json(path, dataclasses.asdict(obj))


def read_json(path: str | os.PathLike, what: str = "JSON") -> Any:
    """The JSON document in ``path``; a clear error naming the file and ``what`` it should hold when it is
    missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StylespaceError(f"{path}: file not found (expected a {what} file)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StylespaceError(f"{path}: not valid JSON ({exc}); expected a {what} file") from None


def load_dataclass(cls: type[T], path: str | os.PathLike) -> T:
    """Load a dataclass saved by :func:`save_dataclass`; unknown keys are an error, missing ones default."""
    return dataclass_from_dict(cls, read_json(path, f"{cls.__name__} JSON"), source=str(path))


def dataclass_from_dict(cls: type[T], data: dict, source: str = "config") -> T:
    """Build ``cls`` from a dict, converting lists back to tuples where the field is a tuple.

    A field renamed since a file was written is read under its new name when ``cls`` lists it in a
    ``RENAMED`` class attribute (``{"old_name": "new_name"}``), so old files stay readable."""
    if not isinstance(data, dict):
        raise StylespaceError(f"{source}: expected a JSON object for {cls.__name__}")
    renamed = getattr(cls, "RENAMED", {})
    data = {renamed.get(key, key): value for key, value in data.items() if not (key in renamed and renamed[key] in data)}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise StylespaceError(f"{source}: unknown field(s) {unknown} for {cls.__name__}; expected some of {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints.get(key)
        origin = typing.get_origin(hint)
        if isinstance(value, list) and (origin is tuple or hint is tuple):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def override(config: T, **changes: Any) -> T:
    """A copy of a config dataclass with the non-None ``changes`` applied: how a command's options (None
    when not given) override a config, whose own defaults stay the one source of defaults."""
    return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})


def lazy_exports(package: str, exports: dict[str, list[str]]):
    """``(__getattr__, __dir__)`` for a package whose ``__init__`` names what it offers without importing it:
    ``exports`` maps each submodule to the names it gives, and a name is imported from its submodule when
    first asked for (PEP 562). ``from stylespace.compat import CompatibilityJudge`` works as before, while
    importing ``stylespace.compat.model`` alone (the CLI, for its defaults) no longer loads every module."""
    import importlib

    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__


def pick_device(name: str = "auto"):
    """The torch device to run on: CUDA when there is one (``auto``), else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise StylespaceError(f"device {name!r} asked for, but no CUDA GPU is available; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise StylespaceError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from None


def cache_root() -> Path:
    """Where derived data (decoded image caches) lives: $STYLESPACE_CACHE or ~/.cache/stylespace."""
    root = os.environ.get("STYLESPACE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "stylespace"
    )
    return Path(root)
