"""`stylespace report`: the analysis report of a trained model on a split (one self-contained HTML file)."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer

from stylespace.cli._output import console, emit, out


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
    pair: str = typer.Option("Shirts,Tshirts", help="The two classes whose centroid line is drawn, A,B."),
    pairs: Optional[Path] = typer.Option(None, help="A labelled pairs CSV (image_a,image_b,label) for the ROC and "
                                                    "histograms instead of pairs from the split's labels."),
    map_classes: int = typer.Option(10, help="How many of the first main classes the maps and confusion show."),
    map_sample: int = typer.Option(2000, help="At most this many items per split on each 2-D map."),
    thumbnails: int = typer.Option(1000, help="Items on the thumbnail map."),
    centroid_sample: int = typer.Option(2000, help="At most this many train items per class for the train centroids."),
    max_pairs: int = typer.Option(200_000, help="Labelled item pairs for the ROC and the distance histograms."),
    metric: str = typer.Option("cosine", help="Distance: cosine or euclidean."),
    perplexity: float = typer.Option(30.0, help="t-SNE perplexity."),
    umap_epochs: Optional[int] = typer.Option(None, help="UMAP epochs (default: umap-learn's)."),
    seed: int = typer.Option(0, help="Seed for samples, maps and the untrained model."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(256, help="Images per embedding batch."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    from stylespace.report.build import ReportConfig, write_report
    from stylespace.report.inputs import load_report_inputs
    from stylespace.utils import StylespaceError

    names = tuple(p.strip() for p in pair.split(","))
    if len(names) != 2 or not all(names):
        raise StylespaceError(f"--pair expects two class names separated by a comma, e.g. Shirts,Tshirts; got {pair!r}")
    config = ReportConfig(map_classes=map_classes, map_sample=map_sample, thumbnail_sample=thumbnails,
                          centroid_sample=centroid_sample, pair=names, max_pairs=max_pairs, metric=metric,
                          perplexity=perplexity, umap_epochs=umap_epochs, seed=seed)
    inputs = load_report_inputs(model_path, split, catalog=catalog, run=run, pairs=pairs, device=device,
                                batch_size=batch_size, seed=seed, progress=not as_json)
    with console.status("building the report") if not as_json else contextlib.nullcontext():
        result = write_report(inputs, output, config, progress=lambda message: console.print(f"   {message}", markup=False, highlight=False))
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

