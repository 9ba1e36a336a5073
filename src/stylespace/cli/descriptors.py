"""`stylespace compare-extractors`: hand-made descriptors, pre-trained CNNs, trained models and ensembles
through one evaluation, written as one table."""
from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from stylespace.cli._options import JSON_OPTION, default_of, given, setting
from stylespace.cli._output import console, emit, out
from stylespace.cli.data import parse_size
from stylespace.descriptors.plan import CompareConfig
from stylespace.utils import StylespaceError, atomic_write, write_json


def register(app: typer.Typer) -> None:
    app.command("compare-extractors", short_help="Compare descriptors, CNNs and ensembles with the same evaluation; write one table.", help="Score hand-made descriptors (colour histogram, Gabor jets, HOG), "
                "pre-trained CNNs (--weights), trained models (--models) and ensembles on one split with the same "
                "evaluation (004's four scenarios with 1-NN, retrieval, pair AUC) and write one table.")(compare_cmd)


def compare_cmd(
    catalog_path: Path = typer.Option(..., "--catalog", help="The catalog the split was made from (Kaggle zip/folder...)."),
    split: Path = typer.Option(..., "--split", help="Split manifest CSV from `stylespace split`."),
    models: Optional[List[Path]] = typer.Option(None, "--models", help="A trained run folder (repeat for several)."),
    weights: Optional[List[str]] = typer.Option(None, "--weights", help="ARCH=PATH: a torchvision CNN and its local "
                                                "weights file, e.g. resnet50=resnet50-0676ba61.pth, or "
                                                "efficientnet-lite0=imagenet (weights from its pip package; repeat)."),
    extractors: Optional[str] = setting(CompareConfig, "extractors", help="Hand-made descriptors to run: colour, "
                                        "gabor, hog (comma-separated; '' for none).",
                                        shown=",".join(default_of(CompareConfig, "extractors"))),
    concatenate: Optional[List[str]] = typer.Option(None, "--concatenate", help="A+B+...: an equal-weight "
                                                    "concatenation row (default: every hand-made descriptor)."),
    ensemble: Optional[List[str]] = typer.Option(None, "--ensemble", help="A+B+...: a fitted ensemble row (SelectKBest "
                                                 "+ weights); default: the hand-made descriptors, and with CNNs, the first "
                                                 "CNN with them (the weight grid grows 3x per member). 'none' for no ensemble."),
    pretrained_size: Optional[str] = setting(CompareConfig, "pretrained_input_size", "--pretrained-size",
                                             help="HxW the pre-trained CNNs see (images are resized).",
                                             shown="x".join(map(str, default_of(CompareConfig,
                                                                                "pretrained_input_size")))),
    batch_size: Optional[int] = setting(CompareConfig, "batch_size", help="Images per forward pass for CNNs."),
    device: Optional[str] = setting(CompareConfig, "device", help="auto, cpu or cuda, for CNNs."),
    vectors_dir: Optional[Path] = typer.Option(None, "--vectors", help="Also save each row's vectors here as an "
                                               "embeddings .npz (for `stylespace evaluate` / `index`)."),
    output: Path = typer.Option(Path("docs/benchmarks-extractors.md"), "-o", "--output",
                                help="Markdown table to write (the full results go to <output>.json beside it)."),
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.descriptors.compare import comparison_markdown
    from stylespace.descriptors.plan import compare_on_split

    progress = not as_json
    if ensemble and [e.strip().lower() for e in ensemble] == ["none"]:
        ensemble = []
    config = CompareConfig(str(catalog_path), str(split),
                           weights={k: str(v) for k, v in parse_weights(weights or []).items()}, models=tuple(str(m) for m in models or []),
                           concatenations=tuple(concatenate) if concatenate else None,
                           ensembles=tuple(ensemble) if ensemble is not None else None,
                           **given(extractors=None if extractors is None else tuple(parse_names(extractors)),
                                   pretrained_input_size=None if pretrained_size is None
                                   else parse_size(pretrained_size),
                                   batch_size=batch_size, device=device))
    log = (lambda line: console.print(f"[dim]{line}[/dim]")) if progress else None
    comparison, config = compare_on_split(config, vectors_dir, progress=progress, log=log)
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
