"""`stylespace text-train`: a text encoder for an image model, so that words search its indexes."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from stylespace.cli._options import JSON_OPTION
from stylespace.cli._output import console, emit, out


def register(app: typer.Typer) -> None:
    app.command("text-train", help="Train a text encoder against an image model's embeddings (LiT: the image model "
                                   "is locked), so that words search its indexes.")(text_train_cmd)


def text_train_cmd(
    model_dir: str = typer.Argument(..., metavar="MODEL", help="The image model (a folder, or a shipped name: default)."),
    catalog_path: Path = typer.Argument(..., metavar="CATALOG", help="The catalog with names and/or attributes."),
    split: Optional[Path] = typer.Option(None, "--split", help="Split manifest (`stylespace split`): learn from its "
                                                               "train rows only (default: every item)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Text model folder (default: MODEL/text, where "
                                                                     "search and serve look for it)."),
    encoder: Optional[str] = typer.Option(None, help="bag (the mean of word-piece, n-gram and word-pair embeddings; "
                                                     "the default) or transformer (adds transformer layers)."),
    epochs: Optional[int] = typer.Option(None, help="Passes over the training items."),
    batch_size: Optional[int] = typer.Option(None, help="Items per batch (each batch's texts are scored against "
                                                        "all its images)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
    token_dim: Optional[int] = typer.Option(None, help="Width of the feature embeddings."),
    vocab_size: Optional[int] = typer.Option(None, help="Word pieces the tokenizer learns."),
    name_share: Optional[float] = typer.Option(None, help="Share of training texts that are product names (the rest "
                                                          "are attribute phrases)."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (0 = default)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda (for embedding the catalog's images)."),
    as_json: bool = JSON_OPTION,
) -> None:
    import dataclasses

    from stylespace.models.shipped import resolve_model_dir
    from stylespace.text import TextConfig
    from stylespace.text.train import train_text_run

    given = dict(encoder=encoder, epochs=epochs, batch_size=batch_size, lr=lr, token_dim=token_dim,
                 vocab_size=vocab_size, name_share=name_share, seed=seed, threads=threads)
    config = dataclasses.replace(TextConfig(), **{k: v for k, v in given.items() if v is not None})
    out_dir = out_dir or resolve_model_dir(model_dir) / "text"
    started = time.perf_counter()
    model = train_text_run(model_dir, catalog_path, out_dir, split, config, device=device, progress=not as_json,
                           log=None if as_json else console.print)
    result = {**model.summary(), "seconds": round(time.perf_counter() - started, 1), "history": model.info.history}

    def render(r: dict) -> None:
        table = Table(title=f"{out_dir}: text model for image model {r['image_model_id']}", title_justify="left")
        for column in ("measure", "value"):
            table.add_column(column)
        rows = [("training items (held out)", f"{r['items']:,} ({r['holdout']:,})"),
                ("similarity floor", f"{r['floor']:.3f} ({r['floor_note']})")]
        rows += [(name, f"{100 * value:.1f} %") for name, value in r["metrics"].items()]
        rows.append(("time", f"{r['seconds']:.0f} s"))
        for row in rows:
            table.add_row(*row)
        out.print(table)
        out.print(f"next: stylespace search INDEX --text \"women red tops\" --text-model {out_dir}")

    emit(result, as_json, render)
