"""Embeddings files: the vectors of a catalog's items under one model, with their ids (and labels).

>>> emb = embed_catalog(load_model("runs/default"), load_catalog("catalog.zip"))
>>> emb.save("catalog.npz"); Embeddings.load("catalog.npz").vectors.shape
(44419, 128)
"""
from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from stylespace.progress import steps
from stylespace.utils import StylespaceError, at_least, atomic_write, pick_device, to_jsonable, validate

FORMAT_VERSION = 1


@dataclasses.dataclass
class Embeddings:
    """Vectors of items under one model.

    Attributes:
        ids: N item ids (strings), row i of ``vectors`` belongs to ``ids[i]``.
        vectors: (N, D) float32, L2-normalised when made by :func:`embed_images`.
        labels: N class names (None where an item has none), or None for an unlabelled catalog.
        model_id: :func:`stylespace.models.model_id` of the model that made them.
        meta: free-form provenance (catalog path and fingerprint, input size, ...), JSON-serialisable.
    """

    ids: list[str]
    vectors: np.ndarray
    labels: list[str | None] | None = None
    model_id: str = ""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ids = [str(i) for i in self.ids]
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2:
            raise StylespaceError(f"embedding vectors must be (N, D), got shape {self.vectors.shape}")
        if len(self.ids) != len(self.vectors):
            raise StylespaceError(f"{len(self.ids)} ids but {len(self.vectors)} vectors; expected one vector per id")
        if len(set(self.ids)) != len(self.ids):
            raise StylespaceError("embedding ids must be unique")
        if self.labels is not None:
            self.labels = [None if label is None else str(label) for label in self.labels]
            if len(self.labels) != len(self.ids):
                raise StylespaceError(f"{len(self.ids)} ids but {len(self.labels)} labels; expected one label per id")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def subset(self, ids: list[str]) -> "Embeddings":
        """The rows of ``ids``, in that order."""
        index = {item_id: i for i, item_id in enumerate(self.ids)}
        missing = [i for i in ids if i not in index]
        if missing:
            raise StylespaceError(f"{len(missing)} ids have no embedding (e.g. {missing[:3]})")
        rows = [index[i] for i in ids]
        labels = None if self.labels is None else [self.labels[r] for r in rows]
        return Embeddings(list(ids), self.vectors[rows], labels, self.model_id, dict(self.meta))

    def save(self, path: str | os.PathLike) -> Path:
        """Write a ``.npz`` file (numpy arrays only, no pickles), atomically."""
        path = Path(path)
        arrays = {
            "format_version": np.array(FORMAT_VERSION),
            "ids": np.array(self.ids, dtype=np.str_),
            "vectors": self.vectors,
            "model_id": np.array(self.model_id),
            "meta": np.array(json.dumps(to_jsonable(self.meta))),
        }
        if self.labels is not None:
            arrays["labels"] = np.array(["" if label is None else label for label in self.labels], dtype=np.str_)
            arrays["has_label"] = np.array([label is not None for label in self.labels])
        with atomic_write(path) as handle:
            np.savez(handle, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Embeddings":
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise StylespaceError(f"{path}: embeddings file not found; make one with `stylespace embed MODEL CATALOG -o {path}`")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in ("ids", "vectors", "model_id", "meta") if k not in data.files]
                if missing:
                    raise StylespaceError(f"{path}: not a stylespace embeddings file (missing {', '.join(missing)}); "
                                          "expected a .npz written by `stylespace embed`")
                version = int(data["format_version"]) if "format_version" in data.files else 1
                if version > FORMAT_VERSION:
                    raise StylespaceError(f"{path}: embeddings format {version} is newer than this stylespace "
                                          f"reads ({FORMAT_VERSION}); upgrade stylespace")
                labels = None
                if "labels" in data.files:
                    has = data["has_label"] if "has_label" in data.files else np.ones(len(data["labels"]), bool)
                    labels = [str(label) if keep else None for label, keep in zip(data["labels"], has)]
                return cls(ids=[str(i) for i in data["ids"]], vectors=data["vectors"], labels=labels,
                           model_id=str(data["model_id"]), meta=json.loads(str(data["meta"])))
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, json.JSONDecodeError) as exc:
            raise StylespaceError(f"{path}: not a readable embeddings file ({type(exc).__name__}: {exc}); "
                                  "expected a .npz written by `stylespace embed`") from None


def vectors_and_model(vectors, model_id: str | None = None) -> tuple[np.ndarray, str | None]:
    """(vectors, model id) of an :class:`Embeddings` (its own model id unless ``model_id`` is given) or of a
    plain (N, D) array (``model_id`` as given): what every consumer that takes either one unwraps."""
    if isinstance(vectors, Embeddings):
        return vectors.vectors, model_id if model_id is not None else vectors.model_id
    return vectors, model_id


def embed_images(model, pixels: np.ndarray, batch_size: int = 512, device: str | torch.device = "auto",
                 progress: bool = False, engine: str | None = None, precision: str | None = None) -> np.ndarray:
    """L2-normalised embeddings of images.

    Args:
        model: an :class:`~stylespace.models.EmbeddingModel` (moved to ``device`` and put in eval mode), or
            an :class:`~stylespace.inference.Embedder` made once by the caller.
        pixels: (N, H, W, 3) uint8 at the model's ``input_size`` (a memory map is read batch by batch).
        batch_size: images per forward pass.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or a torch.device.
        progress: show a progress bar on stderr.
        engine: ``auto`` (ONNX Runtime on a CPU when installed and worth its export, else PyTorch),
            ``torch`` or ``onnx``; None: the one the command chose (:func:`stylespace.inference.engine_choice`).
        precision: ``fp32`` or ``int8`` (the model quantised, on ONNX Runtime; made on first use, calibrated on
            a seeded sample of ``pixels``); None: the one the command chose
            (:func:`stylespace.inference.precision_choice`).

    Returns:
        (N, D) float32, unit-length rows.
    """
    from stylespace.inference import check_pixels, make_embedder

    validate([at_least("batch_size", batch_size, 1)])
    embedder = model if callable(model) and hasattr(model, "engine") else None
    size = tuple(getattr(embedder, "input_size", None) or
                 getattr(getattr(model, "config", None), "input_size", pixels.shape[1:3]))
    check_pixels(pixels, size)
    if embedder is None:
        embedder = make_embedder(model, engine, device, images=len(pixels), batch_size=batch_size,
                                 precision=precision, calibration=pixels)
    out = np.empty((len(pixels), embedder.output_dim), dtype=np.float32)
    with steps(progress, len(pixels), f"embedding {len(pixels):,} images") as advance:
        for start in range(0, len(pixels), batch_size):
            batch = pixels[start:start + batch_size]
            out[start:start + len(batch)] = embedder(batch)
            advance(len(batch))
    return out


def predict_classes(model, pixels: np.ndarray, batch_size: int = 512,
                    device: str | torch.device = "auto") -> np.ndarray:
    """Class indices from the model's classifier head (task 1): (N, H, W, 3) uint8 -> (N,) int64."""
    scores = class_scores(model, pixels, batch_size, device)
    return scores.argmax(axis=1).astype(np.int64) if len(scores) else np.zeros(0, dtype=np.int64)


def class_scores(model, pixels: np.ndarray, batch_size: int = 512,
                 device: str | torch.device = "auto") -> np.ndarray:
    """The classifier head's scores (logits), (N, H, W, 3) uint8 -> (N, len(model.classes)) float32: what
    top-k accuracies rank."""
    import torch  # here, not at the top: reading and unwrapping embeddings (the index) needs no torch

    from stylespace.models.inputs import as_model_input

    if model.classifier is None:
        raise StylespaceError("this model has no classifier head (it was trained without class labels)")
    target = device if isinstance(device, torch.device) else pick_device(device)
    model = model.to(target).eval()
    with torch.no_grad():
        out = [model.logits(as_model_input(torch.from_numpy(np.ascontiguousarray(pixels[start:start + batch_size]))
                                           .to(target))).float().cpu().numpy()
               for start in range(0, len(pixels), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, len(model.classes)), dtype=np.float32)


# Arrays at least this large keep their vectors in the cache: a pre-trained network takes minutes to embed a
# 44k catalog, and the demo's evaluate, index and report steps each embed it.
VECTOR_CACHE_MIN = 2048


def _vector_cache_path(model, array, precision: str | None = None) -> Path | None:
    """Where the vectors of every row of a decoded image ``array`` under ``model`` are kept: named by the model id
    (its weights), the precision that ran it when not fp32 (``<id>-int8-...``: int8 vectors are close to fp32's,
    not equal, and never stand in for them) and the image cache's own folder (the catalog's content, the view
    size and version)."""
    from stylespace.inference import check_precision, chosen_precision
    from stylespace.models import model_id
    from stylespace.utils import cache_root

    if getattr(array, "folder", None) is None or not hasattr(model, "config") or len(array) < VECTOR_CACHE_MIN:
        return None
    precision = check_precision(precision or chosen_precision())
    tag = "" if precision == "fp32" else f"-{precision}"
    return cache_root() / "vectors" / f"{model_id(model)}{tag}-{Path(array.folder).name}.npy"


def cached_array_vectors(model, array, precision: str | None = None) -> np.ndarray | None:
    """(len(array), output_dim) vectors of ``array``'s rows from the cache, or None when they were not kept;
    ``precision`` as in :func:`embed_images`."""
    path = _vector_cache_path(model, array, precision)
    if path is None or not path.is_file():
        return None
    try:
        vectors = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None  # a damaged file is made again
    return vectors if vectors.shape == (len(array), model.output_dim) else None


def array_vectors(model, array, batch_size: int = 512, device: str | torch.device = "auto",
                  progress: bool = True, precision: str | None = None) -> np.ndarray:
    """(len(array), output_dim) embeddings of every row of a decoded image array (``data.ImageArray``), read from
    the cache when this model embedded the same array at this precision before, else embedded and kept there
    (atomically); ``precision`` as in :func:`embed_images`."""
    cached = cached_array_vectors(model, array, precision)
    if cached is not None:
        return np.asarray(cached)
    vectors = embed_images(model, array.pixels, batch_size=batch_size, device=device, progress=progress,
                           precision=precision)
    path = _vector_cache_path(model, array, precision)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as handle:
            np.save(handle, vectors)
    return vectors


def embed_catalog(model, catalog, cache_dir: str | os.PathLike | None = None, batch_size: int = 512,
                  device: str | torch.device = "auto", progress: bool = True) -> Embeddings:
    """Embeddings of every decodable item of ``catalog`` (through the decoded image cache at the model's
    input size); items whose image fails to decode are listed in ``meta["failed"]``, and those whose image is
    blank or nearly uniform (embedded all the same) in ``meta["blank"]``."""
    from stylespace.data import load_image_array

    array = load_image_array(catalog, size=tuple(model.config.input_size), cache_dir=cache_dir, progress=progress)
    vectors = array_vectors(model, array, batch_size=batch_size, device=device, progress=progress)
    return catalog_embeddings(model, catalog, array.ids, vectors, array.failed, array.blank)


def catalog_embeddings(model, catalog, ids: list[str], vectors: np.ndarray, failed: dict[str, str],
                       blank: list[str]) -> Embeddings:
    """The :class:`Embeddings` of a catalog's decodable items ``ids`` (catalog order), however they were made
    (here, or on a Ray cluster by :mod:`stylespace.ray_embedding`): labels and provenance as ``embed_catalog`` writes."""
    from stylespace.inference import chosen_precision
    from stylespace.models import model_id

    labels = [catalog[i].label for i in ids]
    meta = {
        "catalog": str(catalog.source_path),
        "catalog_fingerprint": catalog.fingerprint(),
        "input_size": list(model.config.input_size),
        "backbone": model.config.backbone,
        "failed": dict(failed),
        "blank": list(blank),
    }
    if chosen_precision() != "fp32":
        meta["precision"] = chosen_precision()
    return Embeddings(ids, vectors, labels if any(label is not None for label in labels) else None,
                      model_id(model), meta)
