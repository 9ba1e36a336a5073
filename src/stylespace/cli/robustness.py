"""`stylespace robustness`: is the right product found from a customer's kind of photo?"""
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
                                   "and article-type P@1 per distortion.")(robustness_cmd)


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
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Also write the report as JSON here."),
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.data import load_catalog
    from stylespace.index import CatalogIndex
    from stylespace.index.build import build_index
    from stylespace.index.robustness import measure_robustness
    from stylespace.models import load_model

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
            report = measure_robustness(model, catalog, index, config, log=log)
        finally:
            index.close()
    result = {"model": str(model_path), "catalog": str(catalog_path), "index": str(index_dir or "(temporary)"),
              **report.to_dict()}
    if output is not None:
        write_json(output, result)

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
