"""The recommendation's calibration, saved beside the index it was calibrated on.

``calibrate-threshold`` chooses a confidence score and its threshold for one index; they are written to
``INDEX_DIR/recommendation.json`` (:class:`SavedCalibration`), with the arrays a fitted score learnt in
``calibration-HASH.npz``. The index does not know about them: the file records the index's
:class:`~stylespace.index.IndexMarker` at calibration time, and :meth:`SavedCalibration.outdated` compares
it with the index's marker now (a rebuild that moved similarities bumps its ``space_version``).

``recommendation.json`` is the commit point: the arrays file is written first, under a name of its own
(its hash), and the previous one is removed after, so a crash leaves the previous calibration in force.
Indexes made before the calibration moved here kept it in ``index.json``; it is read from there until
the next calibration.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from stylespace.index import CatalogIndex
from stylespace.utils import StylespaceError, dataclass_from_dict, write_json

CALIBRATION_FILE = "recommendation.json"


@dataclasses.dataclass
class SavedCalibration:
    """A chosen confidence score and threshold for one index.

    Attributes:
        confidence: the score's name; confidence_params: what a fitted score needs to be rebuilt (the
            combined score's weights); threshold: show a recommendation when its confidence >= this.
        calibration: the figures of the calibration that chose them (``Calibration.to_dict``).
        arrays_file: the arrays a fitted score learnt (calibration queries' vectors and whether each was
            right, for a local score), beside this file; empty when it needs none.
        index_marker: the index's marker (generation, revision, space_version) when it was calibrated, with its
            item count (``items``) and the items it had changed over its life (``changed_items``).
        saved: when (UTC, ISO 8601).
    """

    confidence: str
    threshold: float | None
    confidence_params: dict = dataclasses.field(default_factory=dict)
    calibration: dict = dataclasses.field(default_factory=dict)
    arrays_file: str = ""
    index_marker: dict = dataclasses.field(default_factory=dict)
    saved: str = ""
    version: int = 1

    def outdated(self, index: CatalogIndex) -> bool:
        """The index was rebuilt since in a way that moves similarities (the threshold was set on the old ones)."""
        if self.calibration.get("outdated"):  # recorded so by an index of the format before
            return True
        return int(self.index_marker.get("space_version", 0)) != index.marker.space_version

    def changed_items(self, index: CatalogIndex) -> bool:
        """Items were added or removed since the calibration (it still holds; its figures may drift)."""
        return (int(self.index_marker.get("generation", -1)), int(self.index_marker.get("revision", -1))) != (
            index.marker.generation, index.marker.revision)

    def changed_share(self, index: CatalogIndex) -> float | None:
        """Items added, replaced or removed since the calibration, as a share of the items it was made on
        (0 when none changed; None when not known: a calibration saved before the index counted its
        changes, or a backend that does not count them, with items changed since)."""
        if not self.changed_items(index):
            return 0.0
        then, now = self.index_marker.get("changed_items"), index.changed_items
        if then is None or now is None:
            return None
        return (int(now) - int(then)) / max(1, int(self.index_marker.get("items", 0)))

    def arrays(self, folder: Path) -> dict[str, np.ndarray]:
        """The arrays the calibrated score learnt (empty when it learnt none)."""
        if not self.arrays_file:
            return {}
        path = Path(folder) / self.arrays_file
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except FileNotFoundError:
            raise StylespaceError(f"{path}: the calibration's file is missing (calibrated again meanwhile? open the "
                                  "index again; otherwise run `stylespace calibrate-threshold` again)") from None
        except (OSError, ValueError) as exc:
            raise StylespaceError(f"{path}: not a readable calibration file ({exc}); run "
                                  "`stylespace calibrate-threshold` again") from None


def save_calibration(index: CatalogIndex, confidence: str, threshold: float | None, calibration: Mapping[str, Any],
                     confidence_params: Mapping[str, Any] | None = None,
                     arrays: Mapping[str, np.ndarray] | None = None) -> SavedCalibration:
    """Save a chosen score (its fitted parameters, the ``arrays`` it learnt) and threshold beside ``index``."""
    if threshold is not None and not math.isfinite(threshold):
        raise StylespaceError(f"threshold must be a finite number, got {threshold}")
    folder = index.folder
    with index.writer_lock():
        index.refresh()
        arrays_file = ""
        if arrays:
            buffer = io.BytesIO()
            np.savez(buffer, **{name: np.asarray(value) for name, value in arrays.items()})
            data = buffer.getvalue()
            arrays_file = f"calibration-{hashlib.sha256(data).hexdigest()[:12]}.npz"
            from stylespace.utils import atomic_write

            with atomic_write(folder / arrays_file) as handle:
                handle.write(data)
        saved = SavedCalibration(confidence=confidence, threshold=None if threshold is None else float(threshold),
                                 confidence_params=json.loads(json.dumps(dict(confidence_params or {}))),
                                 calibration=json.loads(json.dumps(dict(calibration))), arrays_file=arrays_file,
                                 index_marker={**index.marker.to_dict(), "items": len(index),
                                               "changed_items": index.changed_items},
                                 saved=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        write_json(folder / CALIBRATION_FILE, dataclasses.asdict(saved))
        for old in folder.glob("calibration-*.npz"):
            if old.name != arrays_file:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()
    return saved


def load_calibration(index: CatalogIndex) -> SavedCalibration | None:
    """The calibration saved beside ``index`` (or, for an index of the format before, in its index.json);
    None when it was never calibrated."""
    path = index.folder / CALIBRATION_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise StylespaceError(f"{path}: not valid JSON ({exc}); run `stylespace calibrate-threshold` again") from None
        return dataclass_from_dict(SavedCalibration, data, source=str(path))
    legacy = index.config.legacy_calibration
    if not legacy:
        return None
    return SavedCalibration(str(legacy.get("confidence") or ""), legacy.get("threshold"),
                            dict(legacy.get("confidence_params") or {}), dict(legacy.get("calibration") or {}),
                            str(legacy.get("calibration_file") or ""),
                            {"generation": 0, "revision": 0, "space_version": 0})


def calibration_stamp(folder: str | Path) -> tuple | None:
    """Changes whenever a calibration is saved beside the index in ``folder`` (None when none is)."""
    path = Path(folder) / CALIBRATION_FILE
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def calibration_summary(index: CatalogIndex) -> dict:
    """The calibration saved beside ``index`` as plain JSON-ready values (``stylespace index info``): the
    score, threshold and figures, whether a rebuild since made it out of date, and whether items changed."""
    saved = load_calibration(index)
    if saved is None:
        return {"confidence": "", "threshold": None, "calibration": {}, "calibration_outdated": False,
                "calibration_items_changed": False}
    return {"confidence": saved.confidence, "threshold": saved.threshold, "calibration": saved.calibration,
            "calibration_outdated": saved.outdated(index), "calibration_items_changed": saved.changed_items(index)}
