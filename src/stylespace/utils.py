"""Small shared pieces: the user-facing error type, atomic writes, device choice, dataclass I/O."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import typing
from pathlib import Path
from typing import Any, Iterator, TypeVar

T = TypeVar("T")


class StylespaceError(Exception):
    """An error caused by the user's input; its message says what is wrong and what to do.

    The CLI prints the message alone (no traceback) and exits with status 2.
    """


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
    """Build ``cls`` from a dict, converting lists back to tuples where the field is a tuple."""
    if not isinstance(data, dict):
        raise StylespaceError(f"{source}: expected a JSON object for {cls.__name__}")
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
