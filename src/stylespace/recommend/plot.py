"""The error-rate vs coverage plot of seed 004 task 3: x = error rate (%), y = coverage (%)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from stylespace.utils import atomic_write

if TYPE_CHECKING:
    from stylespace.recommend.selective import Calibration


def plot_risk_coverage(calibration: "Calibration", path: str | Path, top: int = 4) -> Path:
    """Draw the ``top`` scores with the lowest AURC (the chosen one bold, its operating point marked)
    and write a PNG (or any format matplotlib knows from the suffix) to ``path``, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    rows = calibration.table()[:top]
    figure, axes = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for row in rows:
        curve = calibration.curves[row["score"]]
        chosen = row["score"] == calibration.chosen
        axes.plot(100 * curve.error, 100 * curve.coverage, linewidth=2.2 if chosen else 1.1,
                  label=f"{row['score']} (AURC {curve.aurc:.4f})", zorder=3 if chosen else 2)
    point = calibration.point
    if point.threshold is not None:
        axes.scatter([100 * point.error], [100 * point.coverage], color="black", zorder=4,
                     label=f"threshold {point.threshold:.4g}: {100 * point.coverage:.1f} % shown, "
                           f"{100 * point.error:.1f} % wrong")
    if "error" in point.target:
        axes.axvline(100 * point.target["error"], color="grey", linestyle=":", linewidth=1)
    else:
        axes.axhline(100 * point.target["coverage"], color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("error rate (%)")
    axes.set_ylabel("coverage (%)")
    axes.set_ylim(0, 100)
    axes.set_xlim(left=0)
    axes.set_title(f"Top-{calibration.n_items} recommendations on {calibration.n_queries:,} queries")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    fmt = path.suffix.lstrip(".") or "png"
    with atomic_write(path) as handle:
        figure.savefig(handle, format=fmt)
    plt.close(figure)
    return path
