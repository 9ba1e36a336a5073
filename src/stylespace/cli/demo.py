"""`stylespace demo`: the main job on a catalog, end to end, for a newcomer: ours or any of your own.

Each step is the same `stylespace` command a user would type (printed before it runs), so the demo doubles
as a worked example: catalog -> image cache -> split -> model -> evaluate -> index -> calibrate -> report ->
serve. Steps whose output is already in the work folder and up to date are not redone.

The demo adapts to the catalog (the choices are the library's: `split_for_catalog`, `choose_model`):
- the split: seed 004's protocol when the catalog has its 39 + 30 classes, else some classes held out as new
  when there are enough of them, else a plain stratified split;
- the model: the shipped one when it was trained on this very catalog; else it is fine-tuned on the catalog
  (`stylespace train --init default`) and whichever of the two measures better on the split's validation
  items is used;
- a catalog without labels gets the index, search, the page and the audit, with a note on what needs labels.
"""
from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import typer

from stylespace.cli._output import console, out
from stylespace.utils import StylespaceError


# What the long steps cost per item on a 2-core CPU (README, docs/benchmarks.md): a step that will take a
# minute or more says so before it starts (and shows a progress line at least every 10 s while it runs).
SECONDS_PER_ITEM = {
    "image cache": 98 / 44_441,         # decoding + canonical view, 2 processes
    "evaluate": 71 / 44_441,            # every scenario, --dedupe
    "index": 27 / 44_441,               # embedding the catalog (image cache warm)
    "fine-tune epoch": 1_287 / 8 / 34_146,  # compact model, whole network (8 epochs of 34,146 items: 1,287 s)
    "head epoch": 17 / 34_146,  # lite0 model, its head on cached features (the backbone's pass not counted)
}
# The same steps with a pre-trained network (the shipped EfficientNet-Lite0 at 160 x 120, `make demo` on a fresh
# clone): evaluate embeds the catalog (about 260 images/s) and keeps its vectors, which the index then reads.
SECONDS_PER_ITEM_PRETRAINED = {"evaluate": 278 / 44_441, "index": 32 / 44_441}


def estimate(step: str, items: int, times: int = 1, pretrained: bool = False) -> float:
    """Seconds ``step`` takes for ``items`` items (``times`` over: epochs) on a 2-core CPU, from the measured
    rates in :data:`SECONDS_PER_ITEM` (:data:`SECONDS_PER_ITEM_PRETRAINED` for a pre-trained network)."""
    rates = {**SECONDS_PER_ITEM, **SECONDS_PER_ITEM_PRETRAINED} if pretrained else SECONDS_PER_ITEM
    return rates[step] * items * times


def _pretrained(model_dir: Path) -> bool:
    """Whether the model works at a larger network size than its input (a pre-trained backbone)."""
    from stylespace.utils import read_json

    try:
        return bool(read_json(Path(model_dir) / "model.json", "ModelConfig JSON").get("network_size"))
    except StylespaceError:
        return False


def register(app: typer.Typer) -> None:
    app.command("demo", help="Run the main job on a catalog (ours, or yours): split, model, evaluate, index, "
                             "calibrate, report, serve.")(demo_cmd)


def demo_cmd(
    catalog: Path = typer.Option(Path("../shared/datasets/fashion-product-images-small.zip"),
                                 help="The catalog to use: any layout `stylespace catalog` reads (a folder per "
                                      "class of your own photos works)."),
    workdir: Path = typer.Option(Path("demo"), help="Folder for the split, models, evaluation, index and report."),
    model: Path = typer.Option(None, help="Use this model folder as it is (default: the shipped model, fine-tuned "
                                          "on the catalog unless it was trained on it)."),
    compat: Path = typer.Option(None, help="Compatibility model for the compare view (default: the shipped one)."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="End by serving the index at http://127.0.0.1:8000."),
    port: int = typer.Option(8000, help="Port for the web page and REST API."),
    redo: bool = typer.Option(False, "--redo", help="Redo every step even when its output is already there."),
) -> None:
    from stylespace.data import SplitManifest, load_catalog, load_image_array, split_for_catalog
    from stylespace.models import shipped_dir

    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    step = _Steps()

    step.begin("catalog", f"$ stylespace catalog {shlex.quote(str(catalog))}")
    cat = load_catalog(catalog)
    labelled = sum(1 for label in cat.labels if label is not None)
    classes = len({label for label in cat.labels if label is not None})
    step.done(f"{cat.summary_line()}; {labelled:,} labelled, {classes} classes")

    step.begin("image cache", "(built once, memory-mapped, reused by every later step)")
    from stylespace.data.cache import cache_exists

    if not cache_exists(cat):
        step.warn_long(estimate("image cache", len(cat)), "to decode every image once")
    array = load_image_array(cat)
    failed = f"; {len(array.failed)} undecodable, left out" if array.failed else ""
    step.done(f"{len(array):,} images at {array.size[0]}x{array.size[1]} px "
              f"({'built in %.0f s' % array.build_seconds if array.build_seconds else 'from the cache'}){failed}")

    shipped = shipped_dir("default")
    if labelled < 2 or classes < 2:
        _unlabelled(step, catalog, workdir, model or shipped, compat, serve, port, redo, started)
        return

    split = workdir / "split.csv"
    if split.exists() and not redo:
        step.run("split (the work folder's own)", ["split", str(catalog), "-o", str(split)], skip=True)
    else:
        choice = split_for_catalog(cat.without(array.failed))
        step.run(f"split: {choice.reason}", ["split", str(catalog), "-o", str(split), *_split_args(choice)])
    manifest = SplitManifest.load(split)

    model_dir = _model_step(step, catalog, cat, manifest, split, workdir, model, shipped, redo)

    evaluation = workdir / "evaluation.json"
    step.run("evaluate: every scenario the split has, open set, retrieval, coarser labels, pairs",
             ["evaluate", str(model_dir), "--split", str(split), "--catalog", str(catalog), "-o", str(evaluation)],
             skip=_fresh(evaluation, model_dir) and not redo, seconds=estimate("evaluate", len(manifest.rows), pretrained=_pretrained(model_dir)))
    _print_headline(evaluation)

    index_dir = workdir / "index"
    stale = _index_stale(index_dir, model_dir)
    step.run("index the whole catalog", ["index", "build", str(model_dir), str(catalog), "-o", str(index_dir),
                                         "--overwrite"], skip=not stale and not redo,
             seconds=estimate("index", len(array), pretrained=_pretrained(model_dir)))
    parts, described = _calibration_parts(manifest)
    step.run(f"calibrate the recommendation threshold on {described} (5 % error)",
             ["calibrate-threshold", str(index_dir), "--queries", str(split), "--catalog", str(catalog),
              *[a for p in parts for a in ("--part", p)], "--plot", str(workdir / "risk_coverage.png")],
             skip=not stale and not redo and _calibrated(index_dir))

    report_dir = workdir / "report"
    step.run("report", ["report", str(model_dir), "--split", str(split), "--catalog", str(catalog),
                        "-o", str(report_dir)], skip=_fresh(report_dir / "report.html", model_dir) and not redo)

    console.print(f"[bold]demo ready[/bold] in {time.perf_counter() - started:.0f} s: evaluation {evaluation}, "
                  f"report {report_dir / 'report.html'}, index {index_dir}")
    _serve(step, index_dir, model_dir, compat, serve, port)


def _split_args(choice) -> list[str]:
    fractions = ",".join(f"{name}={value:g}" for name, value in choice.fractions)
    if choice.method == "held_out":
        return ["--hold-out", str(choice.n_new), "--stratified", fractions]
    if choice.method == "stratified":
        return ["--stratified", fractions]
    return []


def _model_step(step: "_Steps", catalog: Path, cat, manifest, split: Path, workdir: Path, model: Path | None,
                shipped: Path | None, redo: bool) -> Path:
    """The model the rest of the demo uses: ``--model`` as it is; the shipped model when it was trained on this
    catalog; else the better (on validation) of the shipped model and the one fine-tuned from it."""
    from stylespace.evaluation.choice import choose_model
    from stylespace.models import load_model, model_id

    if model is not None:
        step.begin("model", str(model))
        step.done(f"model {model_id(load_model(model))} (given with --model, used as it is)")
        return model
    if shipped is None:  # a bare checkout without models/: the 5-minute recipe
        trained = workdir / "model"
        console.print("no shipped model in this installation: training the cpu preset (about 5 minutes on 2 cores)")
        step.run("train", ["train", str(catalog), "--split", str(split), "--preset", "cpu", "-o", str(trained)],
                 skip=(trained / "run.json").exists() and not redo)
        return trained
    record = _run_record(shipped)
    # the content fingerprint, or the path one that records made before it hold (on the machine that made them)
    if cat.matches_fingerprint(record.get("catalog_fingerprint"), record.get("catalog_path_fingerprint")):
        step.begin("model", str(shipped))
        step.done(f"the shipped model {record.get('model_id', '')}, trained on this catalog (see its model card)")
        return shipped
    finetuned = workdir / "finetuned"
    if redo and finetuned.exists():
        import shutil

        shutil.rmtree(finetuned)
    from stylespace.training.presets import finetune_preset, preset

    recipe = finetune_preset("default")
    epochs = preset(recipe)[1].epochs
    training = sum(1 for r in manifest.rows if r["split"] == "train")
    frozen = recipe == "finetune-frozen"
    step.run("fine-tune the shipped model on this catalog's training items",
             ["train", str(catalog), "--split", str(split), "--init", "default", "-o", str(finetuned)],
             skip=(finetuned / "run.json").exists(),
             seconds=estimate("head epoch" if frozen else "fine-tune epoch", training, epochs),
             why=f"({epochs} epochs at most, of {training:,} items" + (
                 ", plus one pass of the backbone over them first" if frozen else "") + ")")
    step.begin("choose the model", "(1-NN on the split's validation items, never its test items)")
    choice = choose_model([("the shipped model as it is", shipped), ("the fine-tuned model", finetuned)],
                          cat, manifest)
    step.done(f"using {choice.chosen.name} ({choice.chosen.folder}): {choice.reason}")
    (workdir / "model_choice.json").write_text(json.dumps(
        {"chosen": choice.chosen.folder, "reason": choice.reason, "queries": choice.queries,
         "candidates": [vars(c) for c in choice.candidates]}, indent=1))
    return Path(choice.chosen.folder)


def _unlabelled(step: "_Steps", catalog: Path, workdir: Path, model_dir: Path | None, compat: Path | None,
                serve: bool, port: int, redo: bool, started: float) -> None:
    """Index, a search, the audit and the page for a catalog without labels (nothing to split or score)."""
    from stylespace.data import load_catalog

    if model_dir is None:
        raise StylespaceError(f"{catalog} has no labels and this installation has no shipped model: with neither, "
                              "there is nothing to embed it with; give --model MODEL_DIR")
    console.print("[yellow]note:[/yellow] this catalog has no labels (or one class), so the split, fine-tuning, "
                  "evaluation, the calibrated recommendation threshold and the report are skipped: they need a class "
                  "per item. Put the photos in one folder per class, or use a CSV manifest with a label column, "
                  "and run the demo again. Search, the page and the audit work without labels.")
    index_dir = workdir / "index"
    step.run("index the whole catalog", ["index", "build", str(model_dir), str(catalog), "-o", str(index_dir),
                                         "--overwrite"], skip=not _index_stale(index_dir, model_dir) and not redo)
    first = load_catalog(catalog).ids[0]
    step.run("search: the items most like the first one", ["search", str(index_dir), first, "--id", "-k", "5",
                                                          "--exclude-self"])
    audit_dir = workdir / "audit"
    step.run("audit: copies, blank / tiny / outlier images", ["audit", str(catalog), "-o", str(audit_dir), "--model",
                                                              str(model_dir)],
             skip=(audit_dir / "audit.json").exists() and not redo)
    console.print(f"[bold]demo ready[/bold] in {time.perf_counter() - started:.0f} s: index {index_dir}, audit "
                  f"{audit_dir / 'audit.html'}")
    _serve(step, index_dir, model_dir, compat, serve, port)


def _serve(step: "_Steps", index_dir: Path, model_dir: Path, compat: Path | None, serve: bool, port: int) -> None:
    from stylespace.models import shipped_dir

    compat_dir = compat or shipped_dir("compat")
    command = ["serve", str(index_dir), "--model", str(model_dir), "--port", str(port)]
    if compat_dir is not None:
        command += ["--compat", str(compat_dir)]
    if serve:
        step.run("serve (Ctrl-C to stop)", command)
    else:
        out.print(f"\nto serve it: $ stylespace {shlex.join(command)}")


def _run_record(model_dir: Path) -> dict:
    path = model_dir / "run.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def _calibration_parts(manifest) -> tuple[list[str], str]:
    """The ``--part`` rows calibration reads: scenario 4's queries in 004's protocol (as the docs measure it),
    else every row held out of training (val, test, and all of the new classes)."""
    if any(r["group"] == "main" and r["split"] == "support" for r in manifest.rows):
        return [], "scenario 4's queries (main + new test)"
    parts = sorted({f"{r['group']}/{r['split']}" for r in manifest.rows if r["split"] != "train"})
    return parts, "the items held out of training (" + ", ".join(parts) + ")"


def _print_headline(evaluation: Path) -> None:
    """The few figures a newcomer looks for, from the evaluation just written."""
    try:
        data = json.loads(evaluation.read_text())
    except (OSError, json.JSONDecodeError):
        return
    for scenario in data.get("scenarios", []):
        figures = scenario["results"].get("kNN k=1") or next(iter(scenario["results"].values()))
        out.print(f"   scenario {scenario['number']} ({scenario['description']}): 1-NN accuracy "
                  f"{100 * figures['accuracy']:.1f} % on {scenario['n_query']:,} queries")
    for name, retrieval in data.get("retrieval", {}).items():
        out.print(f"   retrieval {name}: MAP@R {100 * retrieval['map_at_r']:.1f} %")


def _index_stale(index_dir: Path, model_dir: Path) -> bool:
    from stylespace.index import CatalogIndex
    from stylespace.models import load_model, model_id

    if not (index_dir / "index.json").exists():
        return True
    index = CatalogIndex.open(index_dir)
    return index.config.model_id != model_id(load_model(model_dir)) or index.view_outdated


def _calibrated(index_dir: Path) -> bool:
    from stylespace.index import CatalogIndex

    from stylespace.recommend import load_calibration

    return (index_dir / "index.json").exists() and load_calibration(CatalogIndex.open(index_dir)) is not None


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
        out.print(f"\n[bold]{self.number}. {title}[/bold] {detail}", soft_wrap=True)

    def done(self, message: str) -> None:
        out.print(f"   {message} ({time.perf_counter() - self.started:.1f} s)", soft_wrap=True)

    def warn_long(self, seconds: float, why: str = "") -> None:
        """Say before a step that takes a minute or more how long it will take (no word for shorter ones)."""
        if seconds >= 60:
            minutes = max(1, round(seconds / 60))
            out.print(f"   this takes about {minutes} minute{'s' if minutes > 1 else ''} on a 2-core CPU (less with more "
                      f"cores or a GPU){' ' + why if why else ''}; a progress line at least every 10 s",
                      soft_wrap=True)

    def run(self, title: str, args: list[str], skip: bool = False, seconds: float = 0.0, why: str = "") -> None:
        from stylespace.cli import app

        self.begin(title, "$ stylespace " + shlex.join(args))
        if skip:
            out.print("   already done (use --redo to do it again)")
            return
        self.warn_long(seconds, why)
        app(args, prog_name="stylespace", standalone_mode=False)
        out.print(f"   ({time.perf_counter() - self.started:.0f} s)")
