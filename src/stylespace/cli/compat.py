"""`stylespace compat-pairs`, `compat-train` and `compat`: do these two items go well together? (seed 003)"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from stylespace.cli._options import JSON_OPTION, default_of, given, setting
from stylespace.cli._output import console, emit, out
from stylespace.compat.model import CompatibilityConfig
from stylespace.compat.pairs import ProxyPairConfig
from stylespace.utils import StylespaceError, write_json


def register(app: typer.Typer) -> None:
    app.command("compat-pairs", help="Build the metadata-proxy compatibility pair set (image_a,image_b,label) "
                                     "from a Kaggle-style catalog.")(compat_pairs_cmd)
    app.command("compat-train", help="Train a compatibility model (frozen backbone + 128-d head, contrastive "
                                     "loss, weight-decay sweep) on a pairs CSV.")(compat_train_cmd)
    app.command("compat", help="Do two items go well together? Prints their style distance, the cutoff "
                               "and the verdict.")(compat_cmd)


def compat_pairs_cmd(
    catalog_path: Path = typer.Argument(..., metavar="CATALOG", help="Kaggle-style catalog (gender, subCategory, usage, season)."),
    output: Path = typer.Option(Path("pairs.csv"), "-o", "--output", help="Pairs CSV to write (+ <output>.json report)."),
    n_pairs: Optional[int] = setting(ProxyPairConfig, "n_pairs", help="Pairs to draw in all (train + val + test)."),
    positive_fraction: Optional[float] = setting(ProxyPairConfig, "positive_fraction", help="Share of positive pairs "
                                                 "(003's data: about 6 %)."),
    seed: Optional[int] = setting(ProxyPairConfig, "seed", help="Which pairs are drawn; the same seed gives the "
                                  "same file."),
    split_seed: Optional[int] = setting(ProxyPairConfig, "split_seed", help="Which split (train/val/test) each item "
                                        "falls in; pass the same to compat-train."),
    verify: bool = typer.Option(True, help="Leave out items whose image fails to decode (uses the image cache)."),
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.compat.pairs import build_proxy_pairs
    from stylespace.data import load_catalog, load_image_array

    catalog = load_catalog(catalog_path)
    failed = set(load_image_array(catalog, progress=not as_json).failed) if verify else set()
    config = ProxyPairConfig(**given(n_pairs=n_pairs, positive_fraction=positive_fraction, seed=seed,
                                     split_seed=split_seed))
    pairs, report = build_proxy_pairs(catalog, config, exclude=failed)
    pairs.save_csv(output)
    report = {"pairs_csv": str(output), "report": str(output) + ".json", "catalog": str(catalog_path), **report}
    write_json(str(output) + ".json", report)

    def render(r: dict) -> None:
        out.print(f"[bold]{output}[/bold]: {r['pairs']:,} pairs, {r['positives']:,} positive "
                  f"({100 * r['positive_fraction']:.1f} %), {r['items']:,} items; metadata proxy, not co-purchase data")
        table = Table(title="pairs per split (items split by id, pairs drawn inside one split)")
        for column in ("split", "eligible items", "pairs", "positives"):
            table.add_column(column, justify="right" if column != "split" else "left")
        for name, counts in r["splits"].items():
            table.add_row(name, f"{counts['eligible_items']:,}", f"{counts['pairs']:,}", f"{counts['positives']:,}")
        out.print(table)

    emit(report, as_json, render)


def compat_train_cmd(
    catalog_path: Path = typer.Argument(..., metavar="CATALOG", help="The catalog the pair ids belong to."),
    pairs: Path = typer.Option(..., "--pairs", help="Pairs CSV: image_a,image_b,label (or pic1,pic2,score) with catalog ids."),
    backbone: Optional[str] = setting(CompatibilityConfig, "backbone", help="Frozen backbone: a model run folder, "
                                      "or a backbone name (compact = the untrained compact CNN; resnet50, vgg16, ...)."),
    backbone_weights: str = typer.Option("", help="With a backbone name: a local torchvision weights file."),
    input_size: Optional[str] = setting(CompatibilityConfig, "input_size", help="With a backbone name: image size HxW "
                                        "(a run folder has its own).",
                                        shown="x".join(map(str, default_of(CompatibilityConfig, "input_size")))),
    output: Path = typer.Option(Path("compat"), "-o", "--output", help="Folder to write the model into (atomically)."),
    weight_decays: Optional[str] = setting(CompatibilityConfig, "weight_decays", help="L2 weight decays to sweep, "
                                           "comma-separated; the best validation AUC wins.",
                                           shown=",".join(f"{v:g}" for v in default_of(CompatibilityConfig,
                                                                                       "weight_decays"))),
    margin: Optional[float] = setting(CompatibilityConfig, "margin", help="Contrastive negative margin m."),
    hidden: Optional[str] = setting(CompatibilityConfig, "hidden_dims", help="Head hidden layer widths, "
                                    "comma-separated ('' = one linear layer as 003).",
                                    shown=",".join(map(str, default_of(CompatibilityConfig, "hidden_dims")))),
    output_dim: Optional[int] = setting(CompatibilityConfig, "output_dim", help="Style space size."),
    lr: Optional[float] = setting(CompatibilityConfig, "lr", "--lr", "--learning-rate", help="RMSProp learning rate."),
    batch_size: Optional[int] = setting(CompatibilityConfig, "batch_size", help="Pairs per mini-batch."),
    epochs: Optional[int] = setting(CompatibilityConfig, "epochs", "--epochs", "--max-epochs",
                                    help="Epochs at most per weight decay."),
    patience: Optional[int] = setting(CompatibilityConfig, "patience", help="Stop after this many epochs without a "
                                      "better validation AUC."),
    positive_fraction: Optional[float] = setting(CompatibilityConfig, "positive_fraction", shown="the data's own "
                                                 "ratio", help="Positives per batch."),
    category_column: Optional[str] = setting(CompatibilityConfig, "category_column", help="Item column that must "
                                             "differ within a training pair ('' = none)."),
    split_by: Optional[str] = setting(CompatibilityConfig, "split_by", help="'item' (no item in two splits) or "
                                      "'pair' (stratified pair split)."),
    split_seed: Optional[int] = setting(CompatibilityConfig, "split_seed", help="Item split seed (the one "
                                        "compat-pairs used)."),
    seed: Optional[int] = setting(CompatibilityConfig, "seed", help="Head initialisation and batch order."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.cli.data import parse_floats, parse_size
    from stylespace.compat.pipeline import train_from_catalog

    try:
        hidden_dims = None if hidden is None else tuple(int(v) for v in hidden.split(",") if v.strip())
    except ValueError:
        raise StylespaceError(f"--hidden {hidden!r}: expected comma-separated widths, e.g. 256 or 512,256") from None
    config = CompatibilityConfig(**given(
        hidden_dims=hidden_dims, output_dim=output_dim, margin=margin,
        weight_decays=None if weight_decays is None else parse_floats(weight_decays, "--weight-decays"), lr=lr,
        batch_size=batch_size, epochs=epochs, patience=patience, positive_fraction=positive_fraction,
        category_column=category_column, split_by=split_by, split_seed=split_seed, seed=seed,
        input_size=None if input_size is None else parse_size(input_size)))
    result, evaluation = train_from_catalog(catalog_path, pairs, backbone or config.backbone, output, config, device,
                                            backbone_weights,
                                            progress=not as_json, log=lambda line: console.print(line))
    summary = {"output": str(output), **evaluation}
    for entry in summary["sweep"]:
        entry.pop("history")

    def render(r: dict) -> None:
        render_evaluation(r, title=f"{output}: compatibility on {r['split']['test']['pairs']:,} held-out pairs")

    emit(summary, as_json, render)


def render_evaluation(r: dict, title: str) -> None:
    """The AUC table (untrained vs each weight decay) and the cutoff table, as 003's Tables 6 and 7."""
    table = Table(title=title)
    for column in ("model", "weight decay", "best epoch", "val AUC", "test AUC"):
        table.add_column(column, justify="left" if column == "model" else "right")
    table.add_row("untrained head", "", "", f"{r['untrained']['val']:.3f}", f"{r['untrained']['test']:.3f}")
    chosen = r["config"]["weight_decay"]
    for entry in r["sweep"]:
        mark = " (chosen)" if entry["weight_decay"] == chosen else ""
        table.add_row(f"trained{mark}", f"{entry['weight_decay']:g}", str(entry["best_epoch"]),
                      f"{entry['val_auc']:.3f}", f"{entry['test_auc']:.3f}")
    out.print(table)
    out.print(f"baselines (test AUC): backbone features alone {r['baselines']['backbone_features']:.3f}, "
              f"category combination alone {r['baselines']['category_combination']:.3f}")
    cutoffs = Table(title="test cutoff table (compatible when distance <= cutoff)")
    for column in ("FPR target", "FPR", "TPR", "cutoff"):
        cutoffs.add_column(column, justify="right")
    for row in r["test"]["cutoffs"]:
        cutoffs.add_row(f"{100 * row['fpr_target']:.0f} %", f"{100 * row['fpr']:.1f} %", f"{100 * row['tpr']:.1f} %",
                        f"{row['cutoff']:.3f}")
    out.print(cutoffs)
    c = r["cutoff"]
    out.print(f"saved cutoff {c['value']:.3f} ({c['method']}: TPR {100 * c['tpr']:.1f} %, FPR {100 * c['fpr']:.1f} %)")


def compat_cmd(
    folder: Path = typer.Argument(..., metavar="COMPAT_DIR", help="A folder written by compat-train."),
    image_a: str = typer.Argument(..., help="First image: a file, or a catalog id with --catalog."),
    image_b: str = typer.Argument(..., help="Second image: a file, or a catalog id with --catalog."),
    catalog_path: Optional[Path] = typer.Option(None, "--catalog", help="Catalog whose ids IMAGE_A / IMAGE_B may be."),
    cutoff: Optional[float] = typer.Option(None, help="Use this distance cutoff instead of the saved one."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.compat.judge import CompatibilityJudge, Verdict

    judge = CompatibilityJudge.load(folder, device)
    catalog = None
    if catalog_path is not None:
        from stylespace.data import load_catalog

        catalog = load_catalog(catalog_path)
    images = [_image(ref, catalog) for ref in (image_a, image_b)]
    distance = judge.distance(*images)
    verdict = Verdict.from_distance(distance, judge.cutoff.value if cutoff is None else cutoff)
    result = {"image_a": image_a, "image_b": image_b, **dataclasses.asdict(verdict),
              "cutoff_method": judge.cutoff.method if cutoff is None else "given on the command line"}

    def render(r: dict) -> None:
        colour = "green" if r["compatible"] else "red"
        out.print(f"[bold {colour}]{r['message']}[/bold {colour}]")
        out.print(f"style distance {r['distance']:.3f} {'<=' if r['compatible'] else '>'} cutoff {r['cutoff']:.3f} "
                  f"({r['cutoff_method']})")

    emit(result, as_json, render)


def _image(ref: str, catalog):
    """A catalog item's decoded image when ``ref`` is one of its ids, else the path of an image file."""
    if catalog is not None and ref in catalog:
        return catalog.read_image(ref)
    path = Path(ref)
    if not path.is_file():
        hint = f"nor an id of {catalog.source_path}" if catalog is not None else "(pass --catalog to use catalog ids)"
        raise StylespaceError(f"{ref}: not an image file {hint}")
    return path
