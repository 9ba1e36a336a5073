"""`stylespace demo`: the main job on the real catalog, end to end, for a newcomer."""
from __future__ import annotations

import time
from pathlib import Path

import typer

from stylespace.cli._output import console, out


def register(app: typer.Typer) -> None:
    app.command("demo", help="Run the main job on a catalog: load, verify, split, and show what comes next.")(demo_cmd)


def demo_cmd(
    catalog: Path = typer.Option(Path("../shared/datasets/fashion-product-images-small.zip"), help="The catalog to use."),
    workdir: Path = typer.Option(Path("demo"), help="Folder for the split, embeddings, index and report."),
) -> None:
    from stylespace.cli.data import split_cmd
    from stylespace.data import load_catalog, load_image_array

    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cat = load_catalog(catalog)
    out.print(f"[bold]1. catalog[/bold] {catalog}: {cat.summary_line()} ({time.perf_counter() - started:.1f} s)")
    started = time.perf_counter()
    array = load_image_array(cat)
    out.print(f"[bold]2. image cache[/bold] {len(array):,} images at {array.size[0]}x{array.size[1]} px "
              f"({'built in %.0f s' % array.build_seconds if array.build_seconds else 'from cache'}), "
              f"{len(array.failed)} failed to decode")
    out.print("[bold]3. split[/bold] 004's protocol (39 main / 30 new article types)")
    split_cmd(catalog, workdir / "split.csv", None, 39, 30, "0.9,0.05,0.05", "0.5,0.5", None, 2, 0, None, True, False)
    console.print(f"demo done in {time.perf_counter() - started:.0f} s")
