"""Which catalog items a command works on: a whole catalog, or rows of a split manifest.

Commands that index, calibrate or evaluate take either a catalog or a split manifest CSV. A manifest names
its rows (``--part GROUP/SPLIT``, or one side of a 004 scenario) and the catalog it was made from, whose
images the rows refer to.

>>> selection = select_items("runs/split.csv", scenario=4, side="query")
>>> selection.catalog, len(selection.ids), selection.description
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

from stylespace.data.catalog import Catalog
from stylespace.data.readers import load_catalog
from stylespace.data.splits import SplitManifest
from stylespace.utils import StylespaceError, one_of, validate

# The scenario whose rows a manifest gives when none is named: 004's scenario 4 (main + new classes).
DEFAULT_SCENARIO = 4
SIDES = ("support", "query")


@dataclasses.dataclass
class Selection:
    """Items of one catalog.

    Attributes:
        catalog: the catalog the items come from.
        ids: the selected ids, or None for every item of the catalog.
        labels: {id: label} from the manifest, or None (the catalog's own labels apply).
        description: where the items came from, for the record (``split.csv (scenario 4 query)``).
    """

    catalog: Catalog
    ids: list[str] | None
    labels: dict[str, str] | None
    description: str


def is_manifest(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a split manifest (a CSV whose header has id, label, group and split)."""
    path = Path(path)
    if not (path.is_file() and path.suffix.lower() == ".csv"):
        return False
    with path.open(encoding="utf-8", errors="replace") as handle:
        header = {h.strip() for h in handle.readline().strip().split(",")}
    return {"id", "label", "group", "split"} <= header


def select_items(path: str | os.PathLike, scenario: int | None = None, parts: Sequence[str] | None = None,
                 side: str = "support", catalog: str | os.PathLike | None = None) -> Selection:
    """The items named by a catalog or a split manifest.

    Args:
        path: a catalog (anything :func:`load_catalog` reads) or a split manifest CSV.
        scenario: with a manifest, the 004 scenario whose ``side`` to take (default 4).
        parts: with a manifest, ``GROUP/SPLIT`` rows to take instead (``main/support``).
        side: ``support`` or ``query``: which side of the scenario.
        catalog: with a manifest, the catalog its ids refer to (default: the one it records).
    """
    validate([one_of("side", side, SIDES)])
    path = Path(path)
    if not is_manifest(path):
        if scenario is not None or parts:
            raise StylespaceError(f"{path}: --scenario and --part select rows of a split manifest, not of a catalog")
        return Selection(load_catalog(path), None, None, str(path))
    manifest = SplitManifest.load(path)
    if parts:
        wanted = set()
        for part in parts:
            group, sep, split = part.partition("/")
            if not sep:
                raise StylespaceError(f"--part {part!r}: expected GROUP/SPLIT, e.g. main/support")
            wanted.add((group, split))
        rows = [r for r in manifest.rows if (r["group"], r["split"]) in wanted]
        description = f"{path} ({', '.join(sorted(parts))})"
    else:
        number = scenario or DEFAULT_SCENARIO
        support, query = manifest.scenario(number)
        rows = (support if side == "support" else query).rows
        description = f"{path} (scenario {number} {side})"
    if not rows:
        raise StylespaceError(f"{path}: the selection {list(parts) if parts else description} has no rows")
    source = catalog or manifest.config.catalog or None
    if source is None:
        raise StylespaceError(f"{path}: the manifest does not say which catalog it splits; pass --catalog")
    return Selection(load_catalog(source), [r["id"] for r in rows], {r["id"]: r["label"] for r in rows},
                     description)
