"""`stylespace audit`: copies, label conflicts, blank / tiny / outlier images and leaks between split parts."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Optional

import typer

from stylespace.audit.config import NEAR_DISTANCE, AuditSettings
from stylespace.cli._options import JSON_OPTION, given, setting
from stylespace.cli._output import console, emit, out
from stylespace.utils import StylespaceError


def register(app: typer.Typer) -> None:
    app.command("audit", short_help="Audit a catalog: copies, label conflicts, blank / tiny / outlier images, split leaks.",
                help="Audit a catalog: pixel-identical and near copies grouped into clusters, clusters whose members "
                     "carry different labels, blank / nearly uniform / tiny images and outliers; with --split, copies "
                     "across its parts. Writes audit.json, config.json and audit.html (thumbnails of every finding) "
                     "into the output folder, and with --fix a cleaned split manifest (the catalog is never touched).")(audit_cmd)


def audit_cmd(
    catalog_path: Path = typer.Argument(..., metavar="CATALOG", help="The catalog to audit (any layout `stylespace "
                                        "catalog` reads)."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for audit.json, config.json, audit.html "
                                "(and split.clean.csv with --fix)."),
    split: Optional[Path] = typer.Option(None, "--split", help="A split manifest of the catalog: copies across its "
                                         "parts, leaks per scenario."),
    model_path: Optional[Path] = typer.Option(None, "--model", help="A model folder: near copies and outliers by its "
                                              "embeddings, views at its input size (default: coarse pixel vectors, 80x60)."),
    embeddings: Optional[Path] = typer.Option(None, "--embeddings", help="The model's embeddings of the catalog "
                                              "(`stylespace embed`), to skip embedding again."),
    fix: Optional[bool] = setting(AuditSettings, "fix", "--fix", help="Write a cleaned split manifest (one item per "
                                  "cluster, blank images out) to OUTPUT/split.clean.csv."),
    near_distance: Optional[str] = setting(
        AuditSettings, "near_distance", help="Embedding gate of a near copy (cosine distance), or 'auto' to measure "
        "it on copies made of sampled items.", shown=f"measured for the shipped model, {NEAR_DISTANCE['model']}; "
                                                     f"{NEAR_DISTANCE['pixels']} for pixel vectors"),
    near_pixels: Optional[float] = setting(AuditSettings, "near_pixels", help="Pixel test of a near copy: mean "
                                           "absolute difference (0-255) of the product pixels of the pooled views; 0 "
                                           "finds pixel-identical copies only."),
    near_shift: Optional[float] = setting(AuditSettings, "near_shift", help="Pixel test of a near copy: largest "
                                          "colour shift (per-channel mean signed difference, 0-255) between the two "
                                          "views."),
    neighbours: Optional[int] = setting(AuditSettings, "neighbours", help="Nearest items searched per item for near "
                                        "copies."),
    tiny_side: Optional[int] = setting(AuditSettings, "tiny_side", help="An original image under this many pixels "
                                       "on a side is tiny."),
    outlier_k: Optional[int] = setting(AuditSettings, "outlier_k", help="Outliers: distance to the k-th nearest "
                                       "item."),
    outlier_percentile: Optional[float] = setting(AuditSettings, "outlier_percentile", help="Outliers: above this "
                                                  "percentile of all items' distance..."),
    outlier_spread: Optional[float] = setting(AuditSettings, "outlier_spread", help="...and above the median plus "
                                              "this many robust standard deviations."),
    batch_size: int = typer.Option(256, help="Images per forward pass when embedding with a model."),
    device: str = typer.Option("auto", help="auto, cpu or cuda (for a model)."),
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.audit import AuditConfig, run_audit
    from stylespace.data import SplitManifest, load_catalog, load_image_array
    from stylespace.report.audit_page import AUDIT_HTML, write_audit_page

    started = time.perf_counter()
    calibrate, gate = _near_distance(near_distance)
    manifest = SplitManifest.load(split) if split is not None else None
    label_column = manifest.config.label_column or None if manifest is not None else None
    catalog = load_catalog(catalog_path, label_column=label_column)
    if manifest is not None:
        unknown = [i for i in manifest.ids if i not in catalog]
        if unknown:
            raise StylespaceError(f"{split}: {len(unknown):,} of its ids are not in {catalog_path} (e.g. "
                                  f"{unknown[:3]}); is the split made from this catalog?")
    model = None
    if model_path is not None:
        from stylespace.models import load_model

        model = load_model(model_path)
    vectors = None
    if embeddings is not None:
        from stylespace.embeddings import Embeddings

        vectors = Embeddings.load(embeddings)
    config = AuditConfig(catalog=str(catalog_path), split=str(split or ""), model=str(model_path or ""),
                         **given(near_distance=gate, near_pixels=near_pixels, near_shift=near_shift,
                                 neighbours=neighbours, tiny_side=tiny_side, outlier_k=outlier_k,
                                 outlier_percentile=outlier_percentile, outlier_spread=outlier_spread, fix=fix))
    log = (lambda message: console.print(f"[dim]{message}[/dim]")) if not as_json else None
    with console.status("auditing") if not as_json else contextlib.nullcontext():
        result = run_audit(catalog, config, model=model, manifest=manifest, embeddings=vectors, calibrate=calibrate,
                           batch_size=batch_size, device=device, progress=False, log=log, output=output)
        array = load_image_array(catalog, size=result.config.size, progress=False)
        began = time.perf_counter()
        html = write_audit_page(result, array, output / AUDIT_HTML, catalog)
        result.seconds["page"] = round(time.perf_counter() - began, 2)
        result.seconds["total"] = round(time.perf_counter() - started, 2)
        audit_json = result.save(output)
    total = result.seconds["total"]
    summary = {"folder": str(output), "audit": str(audit_json), "html": str(html),
               "clean_split": result.split.clean_split if result.split is not None else "",
               "counts": result.counts(), "notes": result.notes, "seconds": dict(result.seconds)}

    def render(r: dict) -> None:
        from rich.table import Table

        table = Table(title=f"audit of {catalog_path}")
        table.add_column("finding")
        table.add_column("count", justify="right")
        for name, value in r["counts"].items():
            if ": exact copy" in name or ": any copy" in name:
                continue
            table.add_row(name, f"{value:,}")
        out.print(table)
        if result.split is not None:
            leaks = Table(title="queries with a copy in their support set")
            leaks.add_column("scenario")
            leaks.add_column("pixel-identical", justify="right")
            leaks.add_column("any copy", justify="right")
            for name, v in result.split.scenario_leaks.items():
                leaks.add_row(name, f"{v['exact']:,}", f"{v['any']:,}")
            out.print(leaks)
        for note in r["notes"]:
            console.print(f"note: {note}")
        console.print(f"done in {total:.1f} s; {r['html']}, {r['audit']}"
                      + (f", cleaned split {r['clean_split']}" if r["clean_split"] else ""))

    emit(summary, as_json, render)


def _near_distance(text: str | None) -> tuple[bool, float | None]:
    """(calibrate, gate) from --near-distance: None (the default), 'auto', or a positive number."""
    if text is None:
        return False, None
    if text.strip().lower() == "auto":
        return True, None
    try:
        value = float(text)
    except ValueError:
        raise StylespaceError(f"--near-distance expects a cosine distance such as 0.03, or auto; got {text!r}") from None
    if not 0 < value <= 2:
        raise StylespaceError(f"--near-distance must be in (0, 2] (a cosine distance), got {value}")
    return False, value
