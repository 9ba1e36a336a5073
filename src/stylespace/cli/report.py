"""`stylespace report`: the analysis report of a trained model on a split (one self-contained HTML file)."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer

from stylespace.cli._options import JSON_OPTION, default_of, given, setting
from stylespace.cli._output import console, emit, out
from stylespace.report.config import ReportConfig
from stylespace.utils import METRICS


def register(app: typer.Typer) -> None:
    app.command("report", short_help="Write the analysis report (maps, confusion, centroids, curves) as one HTML file + PNGs.", help="Write the analysis report of a model on a split: 2-D maps, confusion, centroids, "
                               "coarse labels, curves, distance histograms (one HTML file + PNGs).")(report_cmd)


def report_cmd(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Model folder (model.safetensors + model.json)."),
    split: Path = typer.Option(..., "--split", help="Split manifest CSV written by `stylespace split`."),
    catalog: Optional[Path] = typer.Option(None, help="The catalog the split was made from (default: the one the "
                                                      "split's config names)."),
    output: Path = typer.Option(Path("report"), "-o", "--output", help="Folder for report.html, the PNGs and report.json."),
    run: Optional[Path] = typer.Option(None, help="Training run folder (with history.csv); default: the model folder "
                                                  "or its parent when one holds history.csv."),
    pair: Optional[str] = setting(ReportConfig, "pair", help="The two classes whose centroid line is drawn, A,B.",
                                  shown=",".join(default_of(ReportConfig, "pair"))),
    pairs: Optional[Path] = typer.Option(None, help="A labelled pairs CSV (image_a,image_b,label) for the ROC and "
                                                    "histograms instead of pairs from the split's labels."),
    map_classes: Optional[int] = setting(ReportConfig, "map_classes", help="How many of the first main classes the "
                                         "maps and confusion show."),
    map_sample: Optional[int] = setting(ReportConfig, "map_sample", help="At most this many items per split on each "
                                        "2-D map."),
    thumbnails: Optional[int] = setting(ReportConfig, "thumbnail_sample", "--thumbnails",
                                        help="Items on the thumbnail map."),
    centroid_sample: Optional[int] = setting(ReportConfig, "centroid_sample", help="At most this many train items "
                                             "per class for the train centroids."),
    max_pairs: Optional[int] = setting(ReportConfig, "max_pairs", help="Labelled item pairs for the ROC and the "
                                       "distance histograms."),
    metric: Optional[str] = setting(ReportConfig, "metric", help=f"Distance: {' or '.join(METRICS)}."),
    perplexity: Optional[float] = setting(ReportConfig, "perplexity", help="t-SNE perplexity."),
    umap_epochs: Optional[int] = setting(ReportConfig, "umap_epochs", shown="umap-learn's", help="UMAP epochs."),
    seed: Optional[int] = setting(ReportConfig, "seed", help="Seed for samples, maps and the untrained model."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(256, help="Images per embedding batch."),
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.report.build import write_report
    from stylespace.report.inputs import load_report_inputs
    from stylespace.utils import StylespaceError

    names = None
    if pair is not None:
        names = tuple(p.strip() for p in pair.split(","))
        if len(names) != 2 or not all(names):
            raise StylespaceError(f"--pair expects two class names separated by a comma, e.g. Shirts,Tshirts; got "
                                  f"{pair!r}")
    config = ReportConfig(**given(map_classes=map_classes, map_sample=map_sample, thumbnail_sample=thumbnails,
                                  centroid_sample=centroid_sample, pair=names, max_pairs=max_pairs, metric=metric,
                                  perplexity=perplexity, umap_epochs=umap_epochs, seed=seed))
    inputs = load_report_inputs(model_path, split, catalog=catalog, run=run, pairs=pairs, device=device,
                                batch_size=batch_size, seed=config.seed, progress=not as_json)
    with console.status("building the report") if not as_json else contextlib.nullcontext():
        result = write_report(inputs, output, config, progress=lambda message: console.log(message))
    summary = {"html": str(result.html), "folder": str(result.folder), "seconds": round(result.seconds, 1),
               "figures": result.numbers["figures"], "missing": result.missing, "findings": result.numbers["findings"],
               "timings": result.numbers["timings"],
               "results": result.numbers["results"]}

    def render(r: dict) -> None:
        out.print(f"[bold]{r['html']}[/bold]: {len(r['figures'])} figures in {r['seconds']:.1f} s")
        for figure in r["figures"]:
            out.print(f"  {figure['file']}: {figure['title']}")
        for title, lines in r["findings"].items():
            out.print(f"[bold]{title}[/bold]")
            for line in lines:
                out.print(f"  {line}")
        for note in r["missing"]:
            out.print(f"  [yellow]not shown:[/yellow] {note}")

    emit(summary, as_json, render)

