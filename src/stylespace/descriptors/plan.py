"""What `stylespace compare-extractors` compares, and how: the extractors made from their names, weights files
and model folders, each with the images it reads, and the default concatenation and ensemble rows.

>>> config = CompareConfig("catalog.zip", "split.csv", extractors=("colour", "hog"), models=("models/default",))
>>> comparison, ids = compare_on_split(config)
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Sequence

from stylespace.data import SplitManifest, load_catalog, load_image_array
from stylespace.descriptors.compare import Candidate, Comparison, compare_extractors
from stylespace.utils import StylespaceError, at_least, each, validate

HAND_MADE = ("colour", "gabor", "hog")
# The size hand-made descriptors read (the catalog's own 80 x 60 thumbnails).
HAND_MADE_SIZE = (80, 60)


@dataclasses.dataclass
class CompareConfig:
    """How a comparison was made; saved in ``<output>.json`` beside the table.

    ``concatenations`` / ``ensembles``: ``A+B`` rows; None for the defaults (:func:`default_rows`).
    """

    catalog: str
    split: str
    extractors: tuple[str, ...] = HAND_MADE
    weights: dict[str, str] = dataclasses.field(default_factory=dict)
    models: tuple[str, ...] = ()
    concatenations: tuple[str, ...] | None = None
    ensembles: tuple[str, ...] | None = None
    image_size: tuple[int, int] = HAND_MADE_SIZE
    pretrained_input_size: tuple[int, int] = (224, 168)
    batch_size: int = 64
    device: str = "auto"

    def __post_init__(self) -> None:
        unknown = [n for n in self.extractors if n not in HAND_MADE]
        validate([
            (not unknown, f"--extractors: unknown descriptor(s) {unknown}; expected some of {', '.join(HAND_MADE)}"),
            each("image_size", self.image_size, 8, count=2, note="H, W in pixels"),
            each("pretrained_input_size", self.pretrained_input_size, 32, count=2, note="H, W in pixels"),
            at_least("batch_size", self.batch_size, 1),
        ])


def default_rows(hand_made: Sequence[str], deep: Sequence[str]) -> tuple[list[list[str]], list[list[str]]]:
    """(concatenations, ensembles) when none are asked for: the hand-made descriptors concatenated and fitted as
    an ensemble, and with CNNs the first CNN fitted with them."""
    hand_made, deep = list(hand_made), list(deep)
    concatenations = [hand_made] if len(hand_made) >= 2 else []
    # The weight search is a grid over every member but the first (3 ** (members - 1) fits), so the default
    # fitted ensemble takes the first CNN only: 7 members would be 729 fits, half an hour on 2 cores.
    ensembles = ([hand_made] if len(hand_made) >= 2 else []) + ([deep[:1] + hand_made] if deep and hand_made else [])
    return concatenations, ensembles


def members(row: str) -> list[str]:
    """``"colour+hog"`` -> ``["colour", "hog"]``."""
    return [n.strip() for n in row.split("+") if n.strip()]


def build_candidates(config: CompareConfig, pixels, ids: Sequence[str], catalog, progress: bool = True) -> list[Candidate]:
    """The extractors to compare, each with the images it reads (a trained model reads its own input size)."""
    from stylespace.descriptors import (ColourHistogram, GaborJets, HogDescriptor, ModelFeatures, PretrainedConfig,
                                        PretrainedFeatures)

    makers = {"colour": ColourHistogram, "gabor": GaborJets, "hog": lambda: HogDescriptor(image_size=pixels.shape[1:3])}
    candidates = [Candidate(makers[n](), "hand-made", pixels) for n in config.extractors]
    size = tuple(config.pretrained_input_size)
    for architecture, path in config.weights.items():
        extractor = PretrainedFeatures(PretrainedConfig(architecture, str(path), size, config.batch_size, config.device))
        candidates.append(Candidate(extractor, "pre-trained", pixels, f"{Path(path).name}, {size[0]}x{size[1]}"))
    for folder in config.models:
        extractor = ModelFeatures(folder, batch_size=max(config.batch_size, 256), device=config.device)
        own_size = tuple(extractor.input_size)
        own = pixels if own_size == tuple(pixels.shape[1:3]) else load_image_array(
            catalog, size=own_size, progress=progress).take(list(ids))
        candidates.append(Candidate(extractor, "trained", own, extractor.objective or extractor.model.config.backbone))
    if not candidates:
        raise StylespaceError("nothing to compare: name hand-made --extractors, --weights or --models")
    return candidates


def vector_saver(folder: str | os.PathLike, ids: list[str], manifest: SplitManifest, catalog) -> Callable:
    """Saves each row's vectors (rows = ``ids``) as ``<folder>/<name>.npz``, and a fitted ensemble beside them."""
    from stylespace.embeddings import Embeddings

    folder = Path(folder)
    label_of = dict(zip(manifest.ids, manifest.labels))
    fingerprint = catalog.fingerprint()

    def save(result, vectors) -> None:
        meta = {"extractor": result.name, "kind": result.kind, "detail": result.detail,
                "seconds_per_1000": result.seconds_per_1000, "catalog": str(catalog.source_path),
                "catalog_fingerprint": fingerprint}
        Embeddings(ids, vectors, [label_of[i] for i in ids], result.model_id or result.name,
                   meta).save(folder / f"{result.name}.npz")
        if result.ensemble is not None:
            result.ensemble.save(folder / f"{result.name}.ensemble.json")

    return save


def compare_on_split(config: CompareConfig, vectors_dir: str | os.PathLike | None = None, progress: bool = True,
                     log: Callable[[str], None] | None = None) -> tuple[Comparison, CompareConfig]:
    """Run the comparison ``config`` describes. Returns (the comparison, the config with its default rows
    filled in, as it is recorded)."""
    manifest = SplitManifest.load(config.split)
    catalog = load_catalog(config.catalog, label_column=manifest.config.label_column or None)
    array = load_image_array(catalog, size=tuple(config.image_size), progress=progress)
    ids = [i for i in manifest.ids if i not in array.failed and i in catalog]
    if not ids:
        raise StylespaceError(f"{config.split}: none of its items has an image in {config.catalog}; was the split "
                              "made from this catalog?")
    candidates = build_candidates(config, array.take(ids), ids, catalog, progress)
    hand_made = [c.extractor.name for c in candidates if c.kind == "hand-made"]
    deep = [c.extractor.name for c in candidates if c.kind != "hand-made"]
    concatenations, ensembles = default_rows(hand_made, deep)
    if config.concatenations is not None:
        concatenations = [members(m) for m in config.concatenations]
    if config.ensembles is not None:
        ensembles = [members(m) for m in config.ensembles]
    recorded = dataclasses.replace(config, extractors=tuple(hand_made),
                                   concatenations=tuple("+".join(c) for c in concatenations),
                                   ensembles=tuple("+".join(e) for e in ensembles))
    on_vectors = vector_saver(vectors_dir, ids, manifest, catalog) if vectors_dir is not None else None
    comparison = compare_extractors(candidates, ids, manifest, concatenations=concatenations, ensembles=ensembles,
                                    split_path=str(config.split), progress=progress, log=log, on_vectors=on_vectors)
    return comparison, recorded
