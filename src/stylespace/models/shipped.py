"""The models that ship with stylespace, by name: ``default`` (the embedding model every command starts
from: EfficientNet-Lite0 from ImageNet with a head trained on the catalog), ``fast`` (the fast tier: the
compact network distilled from ``default``, for a CPU service that needs its throughput) and ``compat`` (the
compatibility model of the compare view); ``compact`` (the from-scratch default before it) and ``packshot`` (the one before
that) too in a source checkout.

Wherever a command takes a model or compatibility folder it also takes one of these names. An installed
package carries them as package data under ``stylespace/shipped/NAME`` (setup.py copies them from the
repository's ``models/`` folder when the wheel is built); a source checkout or an editable install finds them
in the repository's ``models/`` folder itself, so the repository keeps one copy. A folder of that name in the
working directory wins: a path the user gives always means that path.
"""
from __future__ import annotations

import os
from pathlib import Path

from stylespace.utils import StylespaceError

SHIPPED = ("default", "fast", "compat", "compact", "packshot")
# what the wheel carries (compact and packshot, the earlier defaults, are kept for comparison in the repository only)
PACKAGED = ("default", "fast", "compat")
_PACKAGE_DIR = Path(__file__).resolve().parents[1] / "shipped"  # stylespace/shipped in an installed package
_CHECKOUT_DIR = Path(__file__).resolve().parents[3] / "models"  # <repository>/models beside src/


def shipped_dir(name: str) -> Path | None:
    """The folder of the shipped model ``name``, or None when this installation does not have it."""
    if name not in SHIPPED:
        return None
    for base in (_PACKAGE_DIR, _CHECKOUT_DIR):
        folder = base / name
        if (folder / "model.json").is_file() or (folder / "compat.json").is_file():
            return folder
    return None


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """``path`` itself when it exists, else the shipped model it names (``default``, ``compat``...).

    A name that is neither an existing path nor a shipped model is returned unchanged, so the loader's own
    "not a model folder" error names it.
    """
    path = Path(path)
    if path.exists() or len(path.parts) != 1:
        return path
    return shipped_dir(str(path)) or path


def require_shipped(name: str) -> Path:
    """The folder of the shipped model ``name``; a clear error when this installation lacks it."""
    folder = shipped_dir(name)
    if folder is None:
        raise StylespaceError(f"the shipped model {name!r} is not in this installation (looked in {_PACKAGE_DIR} and "
                              f"{_CHECKOUT_DIR}); reinstall stylespace, or give a model folder")
    return folder


def shipped_names() -> list[str]:
    """The shipped model names this installation has."""
    return [name for name in SHIPPED if shipped_dir(name) is not None]
