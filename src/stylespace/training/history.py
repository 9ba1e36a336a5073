"""Per-epoch history: a CSV and the learning-curve figure (train vs validation loss and accuracy)."""
from __future__ import annotations

import csv
import io
import math
import os

from stylespace.utils import atomic_write

COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_metric", "lr", "seconds"]


def write_history_csv(rows: list[dict], path: str | os.PathLike) -> None:
    """One row per epoch (see ``COLUMNS``; accuracies in [0, 1], blank when not measured), atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None or (isinstance(row.get(k), float) and math.isnan(row[k]))
                         else row[k] for k in COLUMNS})
    with atomic_write(path, "w") as handle:
        handle.write(buffer.getvalue())


def plot_learning_curves(rows: list[dict], path: str | os.PathLike, title: str = "") -> None:
    """Two panels, loss and accuracy against the epoch, train and validation curves; PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]

    def series(key: str) -> list[float]:
        return [float("nan") if r.get(key) is None else r[key] for r in rows]

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, series("train_loss"), "o-", label="train")
    ax_loss.plot(epochs, series("val_loss"), "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(epochs, [100 * v for v in series("train_accuracy")], "o-", label="train")
    ax_acc.plot(epochs, [100 * v for v in series("val_accuracy")], "s-", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
