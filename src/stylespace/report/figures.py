"""The report's figures, drawn from plain arrays with Matplotlib's object API on the Agg canvas.

Every function returns a ``matplotlib.figure.Figure`` with a title and labelled axes; pyplot's global
state is never touched, so figures can be drawn from any thread and never open a window.
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from stylespace.report.analysis import CentroidLine, ConfusionOverlapReading
from stylespace.utils import StylespaceError

SIMILAR_COLOUR, DISSIMILAR_COLOUR = "#2ca02c", "#d62728"  # green / red, as in 003's figure 8


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def to_png(figure: Figure, dpi: int = 110) -> bytes:
    """Render a figure to PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, facecolor="white", bbox_inches="tight", pad_inches=0.15)
    return buffer.getvalue()


def class_colours(classes: Sequence[str]) -> dict[str, tuple]:
    """A stable colour per class: tab10 for up to 10 classes, tab20 beyond."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    return {c: cmap(i % cmap.N) for i, c in enumerate(classes)}


# --- 2-D maps -------------------------------------------------------------------------------------


def scatter_map(points: np.ndarray, labels: Sequence[str], classes: Sequence[str], title: str,
                axis_name: str) -> Figure:
    """Items at their 2-D positions, coloured by class, with a legend (class and item count)."""
    points = np.asarray(points)
    labels = np.asarray(labels, dtype=object)
    figure = new_figure(8.5, 6.0)
    ax = figure.add_subplot()
    colours = class_colours(classes)
    size = float(np.clip(3000 / max(len(points), 1), 4, 30))
    for c in classes:
        mask = labels == c
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=size, color=colours[c], alpha=0.7, linewidths=0,
                       label=f"{c} ({int(mask.sum())})")
    ax.set_title(title)
    ax.set_xlabel(f"{axis_name} 1")
    ax.set_ylabel(f"{axis_name} 2")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, markerscale=max(1.0, 30 / size) ** 0.5,
              title="class (items)", frameon=False)
    return figure


def thumbnail_map(points: np.ndarray, images: np.ndarray, title: str, axis_name: str,
                  canvas_px: int = 2400, thumb_height: int = 48) -> Figure:
    """Each item's image pasted at its 2-D position (003's figure 9).

    Args:
        points: (N, 2) map coordinates.
        images: (N, H, W, 3) uint8 item images, in the same order.
        canvas_px: width and height of the pasted canvas in pixels.
        thumb_height: height of each pasted thumbnail in canvas pixels (the aspect ratio is kept).
    """
    from PIL import Image

    points = np.asarray(points, dtype=np.float64)
    if len(points) != len(images):
        raise StylespaceError(f"{len(points)} points but {len(images)} images")
    h, w = images.shape[1:3]
    thumb_width = max(1, round(thumb_height * w / h))
    margin = max(thumb_height, thumb_width)
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    usable = canvas_px - 2 * margin
    canvas = Image.new("RGB", (canvas_px, canvas_px), (255, 255, 255))
    for (x, y), image in zip(points, images):
        cx = margin + (x - lo[0]) / span[0] * usable
        cy = margin + (1 - (y - lo[1]) / span[1]) * usable  # image rows grow downwards, map y upwards
        thumb = Image.fromarray(np.asarray(image)).resize((thumb_width, thumb_height), Image.Resampling.LANCZOS)
        canvas.paste(thumb, (int(cx - thumb_width / 2), int(cy - thumb_height / 2)))
    # The canvas extent, in map coordinates, so that the axes show real map positions.
    scale = span / usable
    extent = (lo[0] - margin * scale[0], hi[0] + margin * scale[0], lo[1] - margin * scale[1], hi[1] + margin * scale[1])
    figure = new_figure(12.0, 12.0)
    ax = figure.add_subplot()
    ax.imshow(np.asarray(canvas), extent=extent, interpolation="lanczos", aspect="auto")
    ax.set_title(title)
    ax.set_xlabel(f"{axis_name} 1")
    ax.set_ylabel(f"{axis_name} 2")
    return figure


# --- confusion --------------------------------------------------------------------------------------


def confusion_figure(confusion: np.ndarray, classes: Sequence[str], title: str) -> Figure:
    """Rows = true class, columns = predicted class; colour = row-normalised rate, text = counts."""
    confusion = np.asarray(confusion)
    totals = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(confusion, totals, out=np.zeros(confusion.shape, dtype=float), where=totals > 0)
    c = len(classes)
    figure = new_figure(max(6.0, 0.62 * c + 3), max(5.0, 0.55 * c + 2.5))
    ax = figure.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(c):
        for j in range(c):
            if confusion[i, j]:
                ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if rates[i, j] > 0.55 else "black")
    ax.set_xticks(range(c), [f"{n}" for n in classes], rotation=45, ha="right")
    ax.set_yticks(range(c), [f"{n} ({int(t)})" for n, t in zip(classes, totals[:, 0])])
    ax.set_xlabel("predicted class (1-NN in the support set)")
    ax.set_ylabel("true class (test items)")
    ax.set_title(title)
    figure.colorbar(image, ax=ax, label="fraction of the true class's test items", shrink=0.8)
    return figure


def confusion_overlap_figure(reading: ConfusionOverlapReading, confusion_rates: np.ndarray,
                             overlaps: dict[str, np.ndarray], title: str) -> Figure:
    """One point per class pair: overlap on each 2-D map (x) against confusion rate (y)."""
    from stylespace.report.maps import symmetric_pair_scores

    c = len(reading.classes)
    iu = np.triu_indices(c, k=1)
    figure = new_figure(5.2 * len(overlaps), 4.6)
    axes = figure.subplots(1, len(overlaps), squeeze=False)[0]
    confusion_values = confusion_rates[iu]
    top = {(p.class_a, p.class_b) for p in reading.top_pairs}
    for ax, (name, overlap) in zip(axes, overlaps.items()):
        values = np.nan_to_num(symmetric_pair_scores(overlap)[iu], nan=0.0)
        ax.scatter(values, confusion_values, s=22, color="#1f77b4", alpha=0.75)
        for p, (i, j) in enumerate(zip(*iu)):
            if (reading.classes[i], reading.classes[j]) in top:
                ax.annotate(f"{reading.classes[i]} / {reading.classes[j]}", (values[p], confusion_values[p]),
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
        rho = reading.spearman[name]
        ax.set_title(f"{name}: Spearman ρ = {'n/a' if np.isnan(rho) else f'{rho:+.2f}'}")
        ax.set_xlabel(f"pair overlap on the {name} map (k-NN neighbour fraction)")
        ax.set_ylabel("pair confusion rate (1-NN)")
    figure.suptitle(title)
    return figure


# --- the line between two centroids -----------------------------------------------------------------


def centroid_figure(lines: dict[str, CentroidLine], images: dict[str, np.ndarray], labels: dict[str, Sequence[str]],
                    ids: dict[str, Sequence[str]], title: str) -> Figure:
    """For each split, the item nearest each of the two centroids.

    ``lines``, ``images``, ``labels``, ``ids``: split name -> the centroid line and the split's pixels
    (N, H, W, 3), labels and ids that its indices point into.
    """
    splits = list(lines)
    figure = new_figure(2.3 * 2 * len(splits) + 0.5, 3.9)
    axes = figure.subplots(1, 2 * len(splits), squeeze=False)[0]
    k = 0
    for split in splits:
        line = lines[split]
        for cls, index, distance in ((line.class_a, line.nearest_a, line.nearest_a_distance),
                                     (line.class_b, line.nearest_b, line.nearest_b_distance)):
            ax = axes[k]
            k += 1
            ax.imshow(images[split][index])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{cls} centroid\n({split}, {line.n_a if cls == line.class_a else line.n_b} items)",
                         fontsize=9)
            ax.set_xlabel(f"item {ids[split][index]}: {labels[split][index]}\ndistance {distance:.3f}", fontsize=8)
    axes[0].set_ylabel("nearest item")
    figure.suptitle(title)
    return figure


def interpolation_figure(lines: dict[str, CentroidLine], images: dict[str, np.ndarray],
                         labels: dict[str, Sequence[str]], title: str) -> Figure:
    """One strip per split: the items nearest evenly spaced points from centroid a (t = 0) to b (t = 1)."""
    splits = list(lines)
    steps = len(next(iter(lines.values())).steps)
    first = next(iter(lines.values()))
    colours = {first.class_a: "#1f77b4", first.class_b: "#ff7f0e"}
    figure = new_figure(max(8.0, 1.25 * steps + 1.0), 2.5 * len(splits) + 0.9)
    axes = figure.subplots(len(splits), steps, squeeze=False)
    for row, split in enumerate(splits):
        line = lines[split]
        for col, (t, index, distance) in enumerate(zip(line.steps, line.strip, line.strip_distance)):
            ax = axes[row, col]
            ax.imshow(images[split][index])
            ax.set_xticks([])
            ax.set_yticks([])
            label = labels[split][index]
            ax.set_title(label, fontsize=8, color=colours.get(label, "black"))
            ax.set_xlabel(f"t={t:.2f}\nd={distance:.2f}", fontsize=7)
        axes[row, 0].set_ylabel(split, fontsize=10)
    figure.suptitle(f"{title}\n(t: position from the {first.class_a} centroid, t = 0, to the {first.class_b} "
                    f"centroid, t = 1; d: distance from the item to that point)", fontsize=10)
    return figure


def line_position_figure(lines: dict[str, CentroidLine], title: str) -> Figure:
    """Where each item of the two classes projects onto the centroid line, per split (overlapping histograms)."""
    splits = list(lines)
    figure = new_figure(5.0 * len(splits), 3.8)
    axes = figure.subplots(1, len(splits), squeeze=False)[0]
    for ax, split in zip(axes, splits):
        line = lines[split]
        labels = np.asarray(line.position_labels, dtype=object)
        bins = np.linspace(min(line.positions.min(), 0) - 0.05, max(line.positions.max(), 1) + 0.05, 40)
        for cls, colour in ((line.class_a, "#1f77b4"), (line.class_b, "#ff7f0e")):
            values = line.positions[labels == cls]
            ax.hist(values, bins=bins, density=True, alpha=0.55, color=colour, label=f"{cls} ({len(values)})")
        ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_title(split)
        ax.set_xlabel(f"position t on the line ({line.class_a} centroid = 0, {line.class_b} centroid = 1)")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    figure.suptitle(title)
    return figure


# --- summary curves -----------------------------------------------------------------------------------


def level_accuracy_figure(rows: Sequence[dict], title: str) -> Figure:
    """Grouped bars: accuracy and balanced accuracy per label level; ``rows`` = [{level, accuracy,
    balanced_accuracy, classes}], values in [0, 1]."""
    figure = new_figure(7.0, 4.2)
    ax = figure.add_subplot()
    x = np.arange(len(rows))
    width = 0.38
    for offset, key, colour, name in ((-width / 2, "accuracy", "#1f77b4", "accuracy"),
                                      (width / 2, "balanced_accuracy", "#ff7f0e", "balanced accuracy")):
        values = [100 * r[key] for r in rows]
        bars = ax.bar(x + offset, values, width, color=colour, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(x, [f"{r['level']}\n({r['classes']} classes)" for r in rows])
    ax.set_ylim(0, 118)  # headroom for the legend above the bars
    ax.set_ylabel("score on the test items (%)")
    ax.set_xlabel("label level")
    ax.set_title(title)
    ax.legend(loc="upper center", ncol=2, fontsize=9)
    return figure


def roc_figure(fpr: np.ndarray, tpr: np.ndarray, auc: float, title: str,
               cutoff: tuple[float, float, float] | None = None) -> Figure:
    """ROC curve of pair verification; ``cutoff`` = (fpr, tpr, distance) of the chosen threshold."""
    figure = new_figure(5.6, 5.0)
    ax = figure.add_subplot()
    ax.plot(fpr, tpr, color="#1f77b4", linewidth=1.6, label=f"ROC (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    if cutoff is not None:
        f, t, d = cutoff
        ax.plot(f, t, "o", color="#d62728", markersize=7,
                label=f"chosen cutoff d = {d:.3f}\n(FPR {100 * f:.1f}%, TPR {100 * t:.1f}%)")
    ax.set_xlabel("false positive rate (dissimilar pairs called similar)")
    ax.set_ylabel("true positive rate (similar pairs called similar)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    return figure


def learning_curves_figure(history: dict[str, np.ndarray], x_name: str, title: str) -> Figure:
    """Training curves from a run's history: losses in the left panel, every other metric on the right.

    ``history``: column -> (E,) values (NaN where a column was not logged), with ``x_name`` the x-axis column.
    """
    x = history[x_name]
    series = {k: v for k, v in history.items() if k != x_name and np.isfinite(v).any()}
    losses = {k: v for k, v in series.items() if "loss" in k.lower()}
    metrics = {k: v for k, v in series.items() if k not in losses and not _is_bookkeeping(k)}
    panels = [(name, group) for name, group in (("loss", losses), ("metric", metrics)) if group]
    if not panels:
        raise StylespaceError("the run history has no loss or metric columns to plot")
    figure = new_figure(5.4 * len(panels), 4.2)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, group) in zip(axes, panels):
        for column, values in _merge_equal_columns(group).items():
            keep = np.isfinite(values)
            ax.plot(x[keep], values[keep], marker="o" if keep.sum() < 30 else None, markersize=3, label=column)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(x_name)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(title)
    return figure


def _merge_equal_columns(group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One curve per distinct series; a column equal to another (val_metric = val_accuracy) joins its label,
    so that no curve hides under another."""
    merged: dict[str, np.ndarray] = {}
    for column, values in group.items():
        same = next((k for k, v in merged.items() if np.array_equal(v, values, equal_nan=True)), None)
        if same is None:
            merged[column] = values
        else:
            merged[f"{same} = {column}"] = merged.pop(same)
    return merged


def _is_bookkeeping(column: str) -> bool:
    return column.lower() in {"epoch", "step", "steps", "seconds", "time", "wall_seconds", "elapsed", "lr",
                              "learning_rate", "images_per_second"}


def distance_histogram_figure(panels: Sequence[tuple[str, np.ndarray, np.ndarray, float | None]], title: str,
                              distance_name: str = "cosine distance (1 - cos)") -> Figure:
    """003's figure 8: densities of pair distances for similar (green) and dissimilar (red) pairs.

    ``panels``: (panel title, similar distances (P1,), dissimilar distances (P2,), cutoff or None). Each
    panel has its own distance axis: an untrained network's distances can span a hundredth of a trained one's.
    The axis runs from the smallest distance to the 99.5th percentile; the few beyond count in the last bin.
    """
    figure = new_figure(5.0 * len(panels), 4.0)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, similar, dissimilar, cutoff) in zip(axes, panels):
        both = np.concatenate([similar, dissimilar])
        lo, hi = float(both.min()), float(np.percentile(both, 99.5))
        hi = hi if hi > lo else lo + 1e-6
        bins = np.linspace(lo, hi, 50)
        ax.hist(np.clip(similar, lo, hi), bins=bins, density=True, alpha=0.55, color=SIMILAR_COLOUR,
                label=f"similar ({len(similar):,})")
        ax.hist(np.clip(dissimilar, lo, hi), bins=bins, density=True, alpha=0.55, color=DISSIMILAR_COLOUR,
                label=f"dissimilar ({len(dissimilar):,})")
        if cutoff is not None:
            ax.axvline(cutoff, color="black", linestyle="--", linewidth=1, label=f"cutoff {cutoff:.3f}")
        ax.set_title(name)
        ax.set_xlabel(distance_name)
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    figure.suptitle(title)
    return figure
