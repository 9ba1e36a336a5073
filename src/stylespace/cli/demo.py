"""`stylespace demo`: the main job on the real catalog, end to end, for a newcomer.

Each step is the same `stylespace` command a user would type (printed before it runs), so the demo doubles
as a worked example: catalog -> image cache -> split -> model -> evaluate -> index -> calibrate -> report ->
serve. Steps whose output is already in the work folder and up to date are not redone.
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path

import typer

from stylespace.cli._output import console, out
from stylespace.utils import StylespaceError

SHIPPED_MODEL = Path(__file__).resolve().parents[3] / "models" / "default"
SHIPPED_COMPAT = Path(__file__).resolve().parents[3] / "models" / "compat"


def register(app: typer.Typer) -> None:
    app.command("demo", help="Run the main job on a catalog: split, model, evaluate, index, calibrate, report, serve.")(demo_cmd)


def demo_cmd(
    catalog: Path = typer.Option(Path("../shared/datasets/fashion-product-images-small.zip"), help="The catalog to use."),
    workdir: Path = typer.Option(Path("demo"), help="Folder for the split, evaluation, index and report."),
    model: Path = typer.Option(None, help="Model folder to use (default: the shipped models/default; without one the "
                                          "cpu preset is trained, about 5 minutes on 2 cores)."),
    compat: Path = typer.Option(None, help="Compatibility model for the compare view (default: the shipped models/compat)."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="End by serving the index at http://127.0.0.1:8000."),
    port: int = typer.Option(8000, help="Port for the web page and REST API."),
    redo: bool = typer.Option(False, "--redo", help="Redo every step even when its output is already there."),
) -> None:
    from stylespace.data import load_catalog, load_image_array
    from stylespace.index import CatalogIndex
    from stylespace.recommend import load_calibration
    from stylespace.models import load_model, model_id

    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    step = _Steps()

    step.begin("catalog", f"stylespace catalog {catalog}")
    cat = load_catalog(catalog)
    step.done(cat.summary_line())

    step.begin("image cache", "(built once, memory-mapped, reused by every later step)")
    array = load_image_array(cat)
    step.done(f"{len(array):,} images at {array.size[0]}x{array.size[1]} px "
              f"({'built in %.0f s' % array.build_seconds if array.build_seconds else 'from the cache'})")

    split = workdir / "split.csv"
    step.run("split: 004's protocol (39 main / 30 new article types)",
             ["split", str(catalog), "-o", str(split)], skip=split.exists() and not redo)

    model_dir = model or (SHIPPED_MODEL if (SHIPPED_MODEL / "model.json").exists() else workdir / "model")
    if model is None and model_dir == workdir / "model" and (redo or not (model_dir / "model.json").exists()):
        console.print("no shipped model in models/default: training the cpu preset (about 5 minutes on 2 cores)")
        step.run("train", ["train", str(catalog), "--split", str(split), "--preset", "cpu", "-o", str(model_dir)])
    elif not (model_dir / "model.json").exists():
        raise StylespaceError(f"model folder {model_dir} has no model.json; give a `stylespace train` run folder")
    else:
        step.begin("model", f"{model_dir}")
        step.done(f"model {model_id(load_model(model_dir))} (trained by `stylespace train`, see its model card)")

    evaluation = workdir / "evaluation.json"
    step.run("evaluate: task 1, scenarios 1-4, open set, retrieval, hierarchy, pairs",
             ["evaluate", str(model_dir), "--split", str(split), "--catalog", str(catalog), "-o", str(evaluation)],
             skip=_fresh(evaluation, model_dir) and not redo)

    index_dir = workdir / "index"
    current = model_id(load_model(model_dir))
    stale = (not (index_dir / "index.json").exists() or CatalogIndex.open(index_dir).config.model_id != current
             or CatalogIndex.open(index_dir).view_outdated)
    step.run("index the whole catalog", ["index", "build", str(model_dir), str(catalog), "-o", str(index_dir),
                                         "--overwrite"], skip=not stale and not redo)
    step.run("calibrate the recommendation threshold (scenario 4 queries, 5 % error)",
             ["calibrate-threshold", str(index_dir), "--queries", str(split), "--catalog", str(catalog),
              "--plot", str(workdir / "risk_coverage.png")],
             skip=not stale and not redo and load_calibration(CatalogIndex.open(index_dir)) is not None)

    report_dir = workdir / "report"
    step.run("report", ["report", str(model_dir), "--split", str(split), "--catalog", str(catalog),
                        "-o", str(report_dir)], skip=_fresh(report_dir / "report.html", model_dir) and not redo)

    compat_dir = compat or (SHIPPED_COMPAT if (SHIPPED_COMPAT / "compat.json").exists() else None)
    console.print(f"[bold]demo ready[/bold] in {time.perf_counter() - started:.0f} s: evaluation {evaluation}, "
                  f"report {report_dir / 'report.html'}, index {index_dir}")
    if serve:
        command = ["serve", str(index_dir), "--model", str(model_dir), "--port", str(port)]
        if compat_dir is not None:
            command += ["--compat", str(compat_dir)]
        step.run("serve (Ctrl-C to stop)", command)


def _fresh(output: Path, model_dir: Path) -> bool:
    """``output`` exists and is newer than the model's weights."""
    weights = model_dir / "model.safetensors"
    return output.exists() and (not weights.exists() or output.stat().st_mtime >= weights.stat().st_mtime)


class _Steps:
    """Numbered demo steps; each command runs in this process through the CLI itself."""

    def __init__(self) -> None:
        self.number = 0
        self.started = 0.0

    def begin(self, title: str, detail: str = "") -> None:
        self.number += 1
        self.started = time.perf_counter()
        out.print(f"\n[bold]{self.number}. {title}[/bold] {detail}")

    def done(self, message: str) -> None:
        out.print(f"   {message} ({time.perf_counter() - self.started:.1f} s)")

    def run(self, title: str, args: list[str], skip: bool = False) -> None:
        from stylespace.cli import app

        self.begin(title, "$ stylespace " + shlex.join(args))
        if skip:
            out.print("   already done (use --redo to do it again)")
            return
        app(args, prog_name="stylespace", standalone_mode=False)
        out.print(f"   ({time.perf_counter() - self.started:.0f} s)")
