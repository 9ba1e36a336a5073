"""`stylespace compare-extractors`: hand-made descriptors, pre-trained CNNs, trained models and ensembles
through one evaluation, written as one table."""
from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from stylespace.cli._output import console, emit, out
from stylespace.cli.data import parse_size
from stylespace.utils import StylespaceError, atomic_write, write_json

HAND_MADE = ("colour", "gabor", "hog")


def register(app: typer.Typer) -> None:
    app.command("compare-extractors", short_help="Compare descriptors, CNNs and ensembles with the same evaluation; write one table.", help="Score hand-made descriptors (colour histogram, Gabor jets, HOG), "
                "pre-trained CNNs (--weights), trained models (--models) and ensembles on one split with the same "
                "evaluation (004's four scenarios with 1-NN, retrieval, pair AUC) and write one table.")(compare_cmd)


@dataclasses.dataclass
class CompareConfig:
    """How a comparison was made; saved in ``<output>.json`` beside the table."""

    catalog: str
    split: str
    extractors: tuple[str, ...]
    weights: dict[str, str]
    models: tuple[str, ...]
    concatenations: tuple[str, ...]
    ensembles: tuple[str, ...]
    image_size: tuple[int, int] = (80, 60)
    pretrained_input_size: tuple[int, int] = (224, 168)
    batch_size: int = 64
    device: str = "auto"


def compare_cmd(
    catalog_path: Path = typer.Option(..., "--catalog", help="The catalog the split was made from (Kaggle zip/folder...)."),
    split: Path = typer.Option(..., "--split", help="Split manifest CSV from `stylespace split`."),
    models: Optional[List[Path]] = typer.Option(None, "--models", help="A trained run folder (repeat for several)."),
    weights: Optional[List[str]] = typer.Option(None, "--weights", help="ARCH=PATH: a torchvision CNN and its local "
                                                "weights file, e.g. resnet50=resnet50-0676ba61.pth (repeat)."),
    extractors: str = typer.Option(",".join(HAND_MADE), help="Hand-made descriptors to run: colour, gabor, hog "
                                   "(comma-separated; '' for none)."),
    concatenate: Optional[List[str]] = typer.Option(None, "--concatenate", help="A+B+...: an equal-weight "
                                                    "concatenation row (default: every hand-made descriptor)."),
    ensemble: Optional[List[str]] = typer.Option(None, "--ensemble", help="A+B+...: a fitted ensemble row (SelectKBest "
                                                 "+ weights); default: the hand-made descriptors, and with CNNs, the first "
                                                 "CNN with them (the weight grid grows 3x per member). 'none' for no ensemble."),
    pretrained_size: str = typer.Option("224x168", help="HxW the pre-trained CNNs see (images are resized)."),
    batch_size: int = typer.Option(64, help="Images per forward pass for CNNs."),
    device: str = typer.Option("auto", help="auto, cpu or cuda, for CNNs."),
    vectors_dir: Optional[Path] = typer.Option(None, "--vectors", help="Also save each row's vectors here as an "
                                               "embeddings .npz (for `stylespace evaluate` / `index`)."),
    output: Path = typer.Option(Path("docs/benchmarks-extractors.md"), "-o", "--output",
                                help="Markdown table to write (the full results go to <output>.json beside it)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    from stylespace.data import SplitManifest, load_catalog, load_image_array
    from stylespace.descriptors.compare import compare_extractors, comparison_markdown

    progress = not as_json
    manifest = SplitManifest.load(split)
    catalog = load_catalog(catalog_path, label_column=manifest.config.label_column or None)
    array = load_image_array(catalog, size=(80, 60), progress=progress)
    ids = [i for i in manifest.ids if i not in array.failed and i in catalog]
    if not ids:
        raise StylespaceError(f"{split}: none of its items has an image in {catalog_path}; was the split made "
                              "from this catalog?")
    pixels = array.take(ids)
    weight_files = parse_weights(weights or [])
    candidates = build_candidates(parse_names(extractors), weight_files, models or [], pixels, ids, catalog,
                                  parse_size(pretrained_size), batch_size, device, progress)
    hand_made = [c.extractor.name for c in candidates if c.kind == "hand-made"]
    deep = [c.extractor.name for c in candidates if c.kind != "hand-made"]
    concatenations = [parse_members(m) for m in concatenate] if concatenate else (
        [hand_made] if len(hand_made) >= 2 else [])
    if ensemble and [e.strip().lower() for e in ensemble] == ["none"]:
        ensembles = []
    elif ensemble:
        ensembles = [parse_members(m) for m in ensemble]
    else:
        # The weight search is a grid over every member but the first (3 ** (members - 1) fits), so the default
        # fitted ensemble takes the first CNN only: 7 members would be 729 fits, half an hour on 2 cores.
        ensembles = ([hand_made] if len(hand_made) >= 2 else []) + ([deep[:1] + hand_made] if deep and hand_made else [])
    config = CompareConfig(str(catalog_path), str(split), tuple(hand_made), {k: str(v) for k, v in weight_files.items()},
                           tuple(str(m) for m in models or []), tuple("+".join(c) for c in concatenations),
                           tuple("+".join(e) for e in ensembles), (80, 60), parse_size(pretrained_size), batch_size,
                           device)

    on_vectors = None
    if vectors_dir is not None:
        on_vectors = _vector_saver(vectors_dir, ids, manifest, catalog)
    log = (lambda line: console.print(f"[dim]{line}[/dim]")) if progress else None
    comparison = compare_extractors(candidates, ids, manifest, concatenations=concatenations, ensembles=ensembles,
                                    split_path=str(split), progress=progress, log=log, on_vectors=on_vectors)
    command = "stylespace " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    markdown = comparison_markdown(comparison, command=command, catalog=Path(catalog_path).name)
    with atomic_write(output, "w") as handle:
        handle.write(markdown)
    result = {"output": str(output), "config": dataclasses.asdict(config), **comparison.to_dict()}
    write_json(output.with_name(output.name + ".json"), result)

    def render(_: dict) -> None:
        out.print(markdown, markup=False, highlight=False, soft_wrap=True)
        console.print(f"table written to {output}; everything (reports, ensembles, config) to {output}.json")

    # stdout gets the headline figures; the full per-class reports are in the JSON file.
    brief = {**result, "extractors": [{k: v for k, v in e.items() if k != "report"} for e in result["extractors"]]}
    emit(brief, as_json, render)


def build_candidates(hand_made: list[str], weight_files: dict[str, Path], model_dirs: list[Path], pixels, ids,
                     catalog, pretrained_size: tuple[int, int], batch_size: int, device: str, progress: bool):
    """The extractors to compare, each with the images it reads (a trained model reads its input size)."""
    from stylespace.data import load_image_array
    from stylespace.descriptors import (ColourHistogram, GaborJets, HogDescriptor, ModelFeatures, PretrainedConfig,
                                        PretrainedFeatures)
    from stylespace.descriptors.compare import Candidate

    makers = {"colour": ColourHistogram, "gabor": GaborJets, "hog": lambda: HogDescriptor(image_size=pixels.shape[1:3])}
    unknown = [n for n in hand_made if n not in makers]
    if unknown:
        raise StylespaceError(f"--extractors: unknown descriptor(s) {unknown}; expected some of {', '.join(makers)}")
    candidates = [Candidate(makers[n](), "hand-made", pixels) for n in hand_made]
    for architecture, path in weight_files.items():
        extractor = PretrainedFeatures(PretrainedConfig(architecture, str(path), pretrained_size, batch_size, device))
        candidates.append(Candidate(extractor, "pre-trained", pixels, f"{path.name}, {pretrained_size[0]}x{pretrained_size[1]}"))
    for folder in model_dirs:
        extractor = ModelFeatures(folder, batch_size=max(batch_size, 256), device=device)
        size = tuple(extractor.input_size)
        own = pixels if size == tuple(pixels.shape[1:3]) else load_image_array(catalog, size=size, progress=progress).take(ids)
        detail = extractor.objective or extractor.model.config.backbone
        candidates.append(Candidate(extractor, "trained", own, detail))
    if not candidates:
        raise StylespaceError("nothing to compare: name hand-made --extractors, --weights or --models")
    return candidates


def _vector_saver(folder: Path, ids: list[str], manifest, catalog):
    """Saves each row's vectors (rows = ``ids``) as ``<folder>/<name>.npz``, and a fitted ensemble beside them."""
    from stylespace.embeddings import Embeddings

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


def parse_weights(entries: list[str]) -> dict[str, Path]:
    weights = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise StylespaceError(f"--weights {entry!r}: expected ARCH=PATH, e.g. resnet50=weights/resnet50.pth")
        if name.strip() in weights:
            raise StylespaceError(f"--weights: {name.strip()} given twice")
        weights[name.strip()] = Path(path.strip())
    return weights


def parse_names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def parse_members(text: str) -> list[str]:
    return [n.strip() for n in text.split("+") if n.strip()]


