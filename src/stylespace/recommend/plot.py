"""The error-rate vs coverage plot of seed 004 task 3: x = error rate (%), y = coverage (%)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from stylespace.recommend.risk import OperatingPoint, RiskCoverage
from stylespace.utils import atomic_write


def plot_risk_coverage(curves: Mapping[str, RiskCoverage], chosen: str, point: OperatingPoint, path: str | Path,
                       title: str, top: int = 4) -> Path:
    """Draw the ``top`` scores of ``curves`` with the lowest AURC (``chosen`` bold, its operating ``point``
    marked) and write a PNG (or any format matplotlib knows from the suffix) to ``path``, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    best = sorted(curves.items(), key=lambda kv: kv[1].aurc)[:top]
    figure, axes = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for name, curve in best:
        bold = name == chosen
        axes.plot(100 * curve.error, 100 * curve.coverage, linewidth=2.2 if bold else 1.1,
                  label=f"{name} (AURC {curve.aurc:.4f})", zorder=3 if bold else 2)
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
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    fmt = path.suffix.lstrip(".") or "png"
    with atomic_write(path) as handle:
        figure.savefig(handle, format=fmt)
    plt.close(figure)
    return path
