"""`stylespace catalog` and `stylespace split`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from stylespace.cli._options import JSON_OPTION
from stylespace.cli._output import console, emit, out
from stylespace.data import (column_split, load_catalog, load_image_array, parse_column_map, parse_merge, protocol_split,
                             stratified_split)
from stylespace.utils import StylespaceError


def register(app: typer.Typer) -> None:
    app.command("catalog", help="Load any catalog and summarise it: items, classes, skipped rows and files.")(catalog_cmd)
    app.command("split", help="Write a split manifest: 004's 39 main / 30 new protocol, a stratified split, "
                                    "or train / test by a catalog column (--by).")(split_cmd)


def catalog_cmd(
    path: Path = typer.Argument(..., help="Kaggle folder or zip, image-folder tree, CSV manifest, pairs CSV or IDX folder."),
    kind: str = typer.Option("auto", help="auto, kaggle, folder, manifest, idx or pairs."),
    label_column: Optional[str] = typer.Option(None, help="Column holding the class (default articleType / label)."),
    verify: bool = typer.Option(True, help="Decode every image (through the image cache) and report those that fail "
                                           "and those that are blank or nearly uniform."),
    size: str = typer.Option("80x60", help="Cache image size HxW used when verifying."),
    top: int = typer.Option(20, help="Classes to list in the table (all with --json)."),
    as_json: bool = JSON_OPTION,
) -> None:
    started = time.perf_counter()
    catalog = load_catalog(path, kind=kind, label_column=label_column)
    load_seconds = time.perf_counter() - started
    cache_seconds, blank = None, None
    if verify and len(catalog):
        array = load_image_array(catalog, size=parse_size(size), progress=not as_json)
        catalog = catalog.without(array.failed)
        cache_seconds = array.build_seconds
        blank = list(array.blank)
    result = catalog.summary()
    result["load_seconds"] = round(load_seconds, 3)
    result["cache_build_seconds"] = cache_seconds
    # kept in the catalog (they decode), but nothing in them to recognise: indexes leave them out
    result["blank"] = blank

    def render(r: dict) -> None:
        out.print(f"[bold]{r['path']}[/bold] ({r['kind']}): {r['summary']}")
        out.print(f"loaded in {r['load_seconds']:.2f} s" + (
            f"; image cache built in {cache_seconds:.1f} s" if cache_seconds else "; images verified from the cache" if verify else ""))
        out.print(f"metadata columns: {', '.join(r['metadata_columns']) or '(none)'}; label column: {r['label_column']}")
        table = Table(title=f"{r['classes']} classes (top {min(top, r['classes'])})")
        table.add_column("class")
        table.add_column("items", justify="right")
        for name, count in list(r["class_counts"].items())[:top]:
            table.add_row(name, f"{count:,}")
        out.print(table)
        if r["skipped"]:
            skipped = Table(title=f"{len(r['skipped'])} skipped")
            skipped.add_column("where")
            skipped.add_column("reason")
            for s in r["skipped"][:50]:
                skipped.add_row(s["where"], s["reason"])
            out.print(skipped)
            if len(r["skipped"]) > 50:
                out.print(f"... and {len(r['skipped']) - 50} more (all of them with --json)")
        if r["blank"]:
            out.print(f"{len(r['blank']):,} blank or nearly uniform image(s), left out of indexes unless "
                      f"--include-blank: {', '.join(r['blank'][:10])}" + (" ..." if len(r["blank"]) > 10 else ""))

    emit(result, as_json, render)


def split_cmd(
    catalog_path: Path = typer.Argument(..., metavar="CATALOG", help="The catalog to split."),
    output: Path = typer.Option(Path("split.csv"), "-o", "--output", help="Manifest CSV to write (+ .json config)."),
    stratified: Optional[str] = typer.Option(
        None, help="A plain stratified split instead of the protocol, e.g. train=0.8,val=0.1,test=0.1."),
    by: Optional[str] = typer.Option(
        None, "--by", help="Train / test from a column the catalog has (e.g. subset: Fashion-MNIST's official split, "
                           "or year with --map), a stratified val part carved from train."),
    column_map: Optional[str] = typer.Option(
        None, "--map", help="--by: column value -> train, val, test or skip, e.g. 2017=test,*=train (* = the rest); "
                          "even / odd name whole numbers of that parity: --by year --map even=train,odd=test,*=skip "
                          "is the published year split."),
    val_fraction: float = typer.Option(0.1, help="--by: share of each class's train items kept for validation."),
    drop_unshared: bool = typer.Option(False, "--drop-unshared", help="--by: leave out classes found on one side only."),
    hold_out: Optional[int] = typer.Option(None, "--hold-out", help="Hold this many classes out of training as "
                                           "'new' (support / test halves); the others split by --stratified "
                                           "(default train=0.7,val=0.1,test=0.2). For catalogs with fewer classes "
                                           "than the protocol's 39 + 30."),
    n_main: int = typer.Option(39, help="Protocol: most frequent classes kept as 'main'."),
    n_new: int = typer.Option(30, help="Protocol: next most frequent classes kept as 'new'."),
    main_fractions: str = typer.Option("0.9,0.05,0.05", help="Protocol: main train,support,test fractions."),
    new_fractions: str = typer.Option("0.5,0.5", help="Protocol: new support,test fractions."),
    merge: Optional[str] = typer.Option(None, help="Merge classes first: OLD=NEW,... or a CSV file of old,new rows."),
    min_count: int = typer.Option(2, help="Stratified: leave out classes with fewer items."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same manifest."),
    label_column: Optional[str] = typer.Option(None, help="Column holding the class."),
    verify: bool = typer.Option(True, help="Leave out items whose image fails to decode (uses the image cache)."),
    as_json: bool = JSON_OPTION,
) -> None:
    catalog = load_catalog(catalog_path, label_column=label_column)
    if verify:
        catalog = catalog.without(load_image_array(catalog, progress=not as_json).failed)
    merge_map = parse_merge(merge)
    if sum([bool(by), bool(stratified) and hold_out is None, hold_out is not None]) > 1:
        raise StylespaceError("--by, --stratified and --hold-out are different ways to split: choose one "
                              "(--stratified may give the fractions of --hold-out's known classes)")
    if by:
        manifest = column_split(catalog, by, val_fraction=val_fraction, seed=seed, mapping=parse_column_map(column_map),
                                merge=merge_map, drop_unshared=drop_unshared)
    elif hold_out is not None:
        from stylespace.data import held_out_split

        manifest = held_out_split(catalog, hold_out, _fractions(stratified) if stratified else None, seed=seed,
                                  merge=merge_map)
    elif stratified:
        manifest = stratified_split(catalog, _fractions(stratified), seed=seed, merge=merge_map, min_count=min_count)
    else:
        manifest = protocol_split(catalog, n_main, n_new, parse_floats(main_fractions, "--main-fractions"),
                                  parse_floats(new_fractions, "--new-fractions"), seed=seed, merge=merge_map)
    manifest.save(output)
    result = {"manifest": str(output), "config": str(output) + ".json", "sha256": manifest.sha256,
              "catalog": catalog.summary_line(), "totals": manifest.totals(), "per_class": manifest.counts()}

    def render(r: dict) -> None:
        order = ["train", "val", "support", "test"]
        columns = sorted(r["totals"], key=lambda c: (c.split("/")[0], order.index(c.split("/")[1]) if c.split("/")[1] in order else 9))
        table = Table(title=f"{output}: {len(manifest):,} items, {len(r['per_class'])} classes")
        table.add_column("class")
        for c in columns:
            table.add_column(c, justify="right")
        for label, counts in sorted(r["per_class"].items(), key=lambda kv: -sum(kv[1].values())):
            table.add_row(label, *[f"{counts.get(c, 0):,}" if counts.get(c) else "" for c in columns])
        table.add_section()
        table.add_row("total", *[f"{r['totals'][c]:,}" for c in columns])
        out.print(table)
        out.print(f"catalog: {r['catalog']}; manifest sha256 {r['sha256'][:12]}")

    emit(result, as_json, render)


def _fractions(text: str) -> dict[str, float]:
    fractions = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            fractions[name.strip()] = float(value)
        except ValueError:
            raise StylespaceError(f"--stratified entry {part!r}: expected NAME=FRACTION, e.g. train=0.8") from None
    return fractions


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        return h, w
    except ValueError:
        raise StylespaceError(f"size {text!r}: expected HxW in pixels, e.g. 80x60") from None


def parse_floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise StylespaceError(f"{name} {text!r}: expected comma-separated numbers, e.g. 0.9,0.05,0.05") from None
