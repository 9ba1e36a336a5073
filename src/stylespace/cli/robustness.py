"""`stylespace robustness`: is the right product found from a customer's kind of photo?

Synthetic distortions of catalog packshots by default; with ``--photos PHOTOS.csv`` a shop's own photos of known
products instead (``index.robustness.measure_photos``)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from stylespace.cli._options import JSON_OPTION, QUERY_VIEWS_OPTION, given, setting
from stylespace.cli._output import console, emit, out
from stylespace.index.robustness import RobustnessConfig
from stylespace.utils import StylespaceError, write_json


def register(app: typer.Typer) -> None:
    app.command("robustness", help="Search distorted photos of catalog items (padded, mirrored, cropped, darker, "
                                   "sideways with EXIF ...) against the whole index: exact-product R@1 / R@10 "
                                   "and article-type P@1 per distortion; or, with --photos, of your own photos "
                                   "of known products.")(robustness_cmd)


def robustness_cmd(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Model folder."),
    catalog_path: Path = typer.Argument(..., metavar="CATALOG", help="The catalog the index holds."),
    index_dir: Optional[Path] = typer.Option(None, "--index", help="An index of CATALOG built with MODEL "
                                                                     "(default: one is built in a temporary folder)."),
    items: Optional[int] = setting(RobustnessConfig, "items", help="Catalog items sampled (seeded)."),
    seed: Optional[int] = setting(RobustnessConfig, "seed", help="Seed of the sample and of the distortions' random "
                                  "choices."),
    distortions: Optional[str] = setting(RobustnessConfig, "distortions", shown="all",
                                         help="Comma-separated distortion names."),
    query_views: Optional[str] = QUERY_VIEWS_OPTION,
    photos: Optional[Path] = typer.Option(None, "--photos", metavar="PHOTOS.csv",
                                          help="Measure your own photos instead of synthetic distortions: a CSV with "
                                               "columns path and item_id (the product the photo shows), paths "
                                               "relative to the CSV's folder. Not with --items, --seed, "
                                               "--distortions."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Also write the report as JSON here."),
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.data import load_catalog
    from stylespace.index import CatalogIndex
    from stylespace.index.build import build_index
    from stylespace.index.robustness import measure_photos, measure_robustness, read_photo_list
    from stylespace.models import load_model

    photo_list = None
    if photos is not None:
        synthetic = given(**{"--items": items, "--seed": seed, "--distortions": distortions})
        if synthetic:
            raise StylespaceError(f"{', '.join(synthetic)}: choose the synthetic distortions, which --photos does not "
                                  "run (it measures the photos of the list); leave them out, or run without --photos")
        photo_list = read_photo_list(photos)  # refused before a model is loaded
    names = tuple(n.strip() for n in distortions.split(",") if n.strip()) if distortions else None
    config = RobustnessConfig(**given(items=items, seed=seed, distortions=names, query_views=query_views))
    model = load_model(model_path)
    catalog = load_catalog(catalog_path)
    log = (lambda line: None) if as_json else (lambda line: console.print(line))
    with tempfile.TemporaryDirectory(prefix="stylespace-robustness-") as scratch:
        if index_dir is None:
            log(f"indexing {catalog_path} with {model_path} (whitened, as `stylespace index build`)")
            index, _ = build_index(model, catalog, Path(scratch) / "index", model_path=model_path, progress=not as_json)
        else:
            index = CatalogIndex.open(index_dir)
        try:
            if photo_list is not None:
                report = measure_photos(model, catalog, index, photo_list, config, log=log)
            else:
                report = measure_robustness(model, catalog, index, config, log=log)
        finally:
            index.close()
    result = {"model": str(model_path), "catalog": str(catalog_path), "index": str(index_dir or "(temporary)"),
              **({"photo_list": str(photos)} if photos is not None else {}), **report.to_dict()}
    if output is not None:
        write_json(output, result)
    if photos is not None:
        emit(result, as_json, render_photos)
        return

    def render(r: dict) -> None:
        views = "+".join(["canonical", *r["config"]["query_views"]["views"]])
        table = Table(title=f"{r['model']}: {r['config']['items']} items searched against {r['index_items']:,} "
                            f"(query views: {views})")
        columns = ["distortion", "R@1", "R@1 (own id)", f"R@{r['config']['k']}", "type P@1", "target R@1"]
        with_views = views != "canonical"
        for column in columns + (["views / query"] if with_views else []):
            table.add_column(column, justify="left" if column == "distortion" else "right")
        for row in r["rows"]:
            target = "" if row["target"] is None else f"{100 * row['target']:.0f} %"
            mark = "" if row["meets_target"] is None else (" [green]ok[/green]" if row["meets_target"] else " [red]below[/red]")
            table.add_row(row["name"], f"{100 * row['r1']:.1f} %", f"{100 * row['r1_id']:.1f} %", f"{100 * row['r10']:.1f} %",
                          f"{100 * row['type_p1']:.1f} %", target + mark,
                          *([f"{row['views_per_query']:.2f}"] if with_views else []))
        out.print(table)
        out.print("R@1 and R@10 count a pixel-identical copy of the item under another id as the product; "
                  f"R@1 (own id) does not. {r['seconds']:.0f} s")

    emit(result, as_json, render)


def render_photos(r: dict) -> None:
    """A person's view of a photo list's figures (``PhotosReport.to_dict`` and the command's paths)."""
    views = "+".join(["canonical", *r["config"]["query_views"]["views"]])
    k = r["config"]["k"]
    table = Table(title=f"{r['model']}: {r['measured']} of {r['photos']} photos in {r['photo_list']} searched against "
                        f"{r['index_items']:,} items (query views: {views})")
    for column in ("photos measured", "R@1", "R@1 (own id)", f"R@{k}", "type P@1"):
        table.add_column(column, justify="right")
    type_p1 = "-" if r["type_p1"] is None else f"{100 * r['type_p1']:.1f} %"
    table.add_row(str(r["measured"]), f"{100 * r['r1']:.1f} %", f"{100 * r['r1_id']:.1f} %", f"{100 * r['r10']:.1f} %",
                  type_p1)
    out.print(table)
    out.print("R@1 and R@10 count a pixel-identical copy of the item under another id as the product; "
              f"R@1 (own id) does not. {r['seconds']:.0f} s")
    shown = 10
    for title, count, rows in (
            (f"not in the first {k}", r["missed"], [f"{m['path']} ({m['item_id']}): found {m['found']} first"
                                                    for m in r["misses"]]),
            ("failed", r["failed"], [f"{f['path']} ({f['item_id']}): {f['reason']}" for f in r["failures"]])):
        if count:
            out.print(f"{count} photo(s) {title}:")
            for line in rows[:shown]:
                out.print(f"  {line}", markup=False, highlight=False)
            if count > shown:
                out.print(f"  ... and {count - shown} more (all of them, up to {r['listed_at_most']}, with --json / -o)")
    if r["unknown_photos"]:
        items = ", ".join(r["unknown_items"][:shown])
        more = " ..." if len(r["unknown_items"]) > shown else ""
        out.print(f"{r['unknown_photos']} photo(s) of items not in the index, left out: {items}{more}",
                  markup=False, highlight=False)
