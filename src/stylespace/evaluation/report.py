"""The result of one evaluation: a dataclass that writes itself as JSON and as Markdown tables.

The JSON carries the model's id and the split's sha256, so a number can always be traced to the weights
and the exact items it was measured on; ``headline`` is a flat name -> value view used to put several
results side by side (``--compare``).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

from stylespace.evaluation.classification import ClassificationMetrics
from stylespace.evaluation.hierarchy import HierarchyResult
from stylespace.evaluation.pairs import PairVerification
from stylespace.evaluation.retrieval import RetrievalMetrics
from stylespace.evaluation.config import RETRIEVAL_SETS, EvaluationConfig  # noqa: F401  (RETRIEVAL_SETS: re-exported)
from stylespace.evaluation.scenarios import OpenSetResult, ScenarioResult
from stylespace.utils import StylespaceError, to_jsonable, write_json

REPORT_VERSION = 1


@dataclasses.dataclass
class DedupeSummary:
    """The figures measured again without the query items that have a copy on the reference side.

    source: where the copy groups came from (an audit, or found by ``stylespace evaluate --dedupe``).
    n_groups, n_items: copy groups (2+ items) and the items in them, catalog-wide.
    dropped: what each part of the evaluation left out (see :mod:`stylespace.evaluation.dedupe`).
    report: the figures without them.
    """

    source: str
    n_groups: int
    n_items: int
    dropped: dict[str, int]
    report: "EvaluationReport"


@dataclasses.dataclass
class EvaluationReport:
    """Every figure of one evaluation (see :func:`stylespace.evaluation.evaluate`)."""

    name: str
    source: str
    model_id: str
    split: str
    split_sha256: str
    config: EvaluationConfig
    n_vectors: int
    dim: int
    head: ClassificationMetrics | None
    scenarios: list[ScenarioResult]
    open_set: list[OpenSetResult]
    retrieval: dict[str, RetrievalMetrics]
    hierarchy: list[HierarchyResult]
    pairs: PairVerification | None
    pairs_source: str
    seconds: dict[str, float]
    notes: list[str] = dataclasses.field(default_factory=list)
    peak_rss_mb: float | None = None  # the process's peak resident memory, when the caller measured it
    dedupe: DedupeSummary | None = None  # the same figures without leaked copies (evaluate(copies=...))

    def headline(self) -> dict[str, float]:
        """Flat ``"scenario 3 / prototype / accuracy" -> value``: the numbers a comparison table shows."""
        out: dict[str, float] = {}
        if self.head is not None:
            out["task 1 head / accuracy"] = self.head.accuracy
            out["task 1 head / balanced accuracy"] = self.head.balanced_accuracy
        for scenario in self.scenarios:
            for name, metrics in scenario.results.items():
                out[f"scenario {scenario.number} / {name} / accuracy"] = metrics.accuracy
                out[f"scenario {scenario.number} / {name} / balanced accuracy"] = metrics.balanced_accuracy
        for result in self.open_set:
            out[f"open set / {result.classifier} / accepted accuracy"] = result.metrics.accepted_accuracy
            out[f"open set / {result.classifier} / new classes refused"] = result.metrics.unknown_rejection_rate
        for name, retrieval in self.retrieval.items():
            out[f"retrieval {name} / precision@1"] = retrieval.precision_at_1
            for k, value in retrieval.recall_at_k.items():
                out[f"retrieval {name} / recall@{k}"] = value
            out[f"retrieval {name} / R-precision"] = retrieval.r_precision
            out[f"retrieval {name} / MAP@R"] = retrieval.map_at_r
        for level in self.hierarchy:
            for name, metrics in level.results.items():
                out[f"{level.level} / {name} / accuracy"] = metrics.accuracy
                out[f"{level.level} / {name} / balanced accuracy"] = metrics.balanced_accuracy
        if self.pairs is not None:
            out["pairs / AUC"] = self.pairs.auc
            for row in self.pairs.cutoffs:
                out[f"pairs / TPR at FPR {row.fpr_target:.0%}"] = row.tpr
        return out

    def to_dict(self) -> dict:
        data = to_jsonable(dataclasses.asdict(self))
        data["version"] = REPORT_VERSION
        data["headline"] = to_jsonable(self.headline())
        if self.dedupe is not None:
            data["dedupe"]["report"] = self.dedupe.report.to_dict()
        return data

    def save(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON, atomically."""
        path = Path(path)
        write_json(path, self.to_dict())
        return path

    def to_markdown(self) -> str:
        return "\n\n".join(section for section in (
            f"## {self.name}\n\nmodel `{self.model_id}` · split `{Path(self.split).name}` "
            f"(sha256 `{self.split_sha256[:12]}`) · {self.n_vectors:,} vectors of {self.dim} dims · "
            f"metric {self.config.metric}",
            self._head_markdown(), self._scenario_markdown(), self._open_set_markdown(),
            self._retrieval_markdown(), self._hierarchy_markdown(), self._pairs_markdown(),
            "\n".join(f"- note: {note}" for note in self.notes), self._dedupe_markdown(),
        ) if section)

    def _dedupe_markdown(self) -> str:
        if self.dedupe is None:
            return ""
        d = self.dedupe
        dropped = ", ".join(f"{name} {count:,}" for name, count in d.dropped.items())
        notes = "".join(f"\n- note: {note}" for note in d.report.notes)
        return (f"### Without leaked copies\n\n{d.n_groups:,} copy groups ({d.n_items:,} items; {d.source}). Left out: "
                f"{dropped}.\n\n" + compare_markdown([("all items", self.headline()),
                                                       ("without copies", d.report.headline())]) + notes)

    def _head_markdown(self) -> str:
        if self.head is None:
            return ""
        return (f"Task 1, classifier head on main test ({self.head.n:,} items): accuracy {_pct(self.head.accuracy)}, "
                f"balanced accuracy {_pct(self.head.balanced_accuracy)}")

    def _scenario_markdown(self) -> str:
        if not self.scenarios:
            return ""
        names = list(self.scenarios[0].results)
        header = ["scenario", "support", "query"] + [f"{n} {m}" for n in names for m in ("acc", "bal acc")]
        rows = [[f"{s.number}: {s.description}", f"{s.n_support:,}", f"{s.n_query:,}"]
                + [_pct(getattr(s.results[n], m)) for n in names for m in ("accuracy", "balanced_accuracy")]
                for s in self.scenarios]
        return "Support-set classification\n\n" + markdown_table(header, rows)

    def _open_set_markdown(self) -> str:
        if not self.open_set:
            return ""
        header = ["classifier", "reject distance", "coverage", "accepted acc", "new refused", "main refused",
                  "open-set acc"]
        rows = [[r.classifier, _num(r.threshold.distance), _pct(r.metrics.coverage),
                 _pct(r.metrics.accepted_accuracy), _pct(r.metrics.unknown_rejection_rate),
                 _pct(r.metrics.known_rejection_rate), _pct(r.metrics.open_set_accuracy)] for r in self.open_set]
        first = self.open_set[0]
        return (f"Open set: main support ({first.n_support:,}) -> main + new test ({first.n_query:,}); reject distance "
                f"answers {first.threshold.target.split('=')[1]} of main support (leave-one-out)\n\n"
                + markdown_table(header, rows))

    def _retrieval_markdown(self) -> str:
        if not self.retrieval:
            return ""
        ks = sorted({k for r in self.retrieval.values() for k in r.recall_at_k})
        header = ["set", "queries", "largest R", "P@1"] + [f"R@{k}" for k in ks] + ["R-precision", "MAP@R"]
        rows = [[name, f"{r.n_scored:,}", f"{r.largest_r:,}" + (f" (cap {r.max_r})" if r.max_r else ""),
                 _pct(r.precision_at_1)] + [_pct(r.recall_at_k.get(k, float("nan"))) for k in ks]
                + [_pct(r.r_precision), _pct(r.map_at_r)] for name, r in self.retrieval.items()]
        return "Retrieval (each query against the others)\n\n" + markdown_table(header, rows)

    def _hierarchy_markdown(self) -> str:
        if not self.hierarchy:
            return ""
        names = list(self.hierarchy[0].results)
        header = ["level", "classes"] + [f"{n} {m}" for n in names for m in ("acc", "bal acc", "via fine acc")]
        rows = [[h.level, f"{h.n_fine_classes} -> {h.n_coarse_classes}"]
                + [v for n in names for v in (_pct(h.results[n].accuracy), _pct(h.results[n].balanced_accuracy),
                                              _pct(h.via_fine[n]["accuracy"]))] for h in self.hierarchy]
        return "Coarser labels (scenario 2 sets, no retraining)\n\n" + markdown_table(header, rows)

    def _pairs_markdown(self) -> str:
        if self.pairs is None:
            return ""
        p = self.pairs
        rows = [[_pct(r.fpr_target), _num(r.cutoff), _pct(r.tpr), _pct(r.fpr)] for r in p.cutoffs]
        rows.append(["max TPR - FPR", _num(p.best_cutoff), _pct(p.best_tpr), _pct(p.best_fpr)])
        return (f"Pair verification ({self.pairs_source}): {p.n_pairs:,} pairs, {p.n_positive:,} positive, "
                f"AUC {p.auc:.3f}\n\n" + markdown_table(["FPR target", "cutoff (distance)", "TPR", "FPR"], rows))


def _num(value: float) -> str:
    """A distance with 4 significant digits (an untrained model's distances can all be below 0.001)."""
    return f"{value:.4g}"


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}%"  # NaN != NaN


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def compare_markdown(headlines: Sequence[tuple[str, dict[str, float]]]) -> str:
    """One table, one column per (name, headline): the figures side by side, in first-seen row order."""
    if not headlines:
        raise StylespaceError("nothing to compare")
    keys = list(dict.fromkeys(key for _, headline in headlines for key in headline))
    rows = [[key] + [_pct(h[key]) if key in h and not key.endswith("AUC") else
                     (f"{h[key]:.3f}" if key in h else "-") for _, h in headlines] for key in keys]
    return markdown_table(["figure"] + [name for name, _ in headlines], rows)


def load_headlines(path: str | os.PathLike) -> list[tuple[str, dict[str, float]]]:
    """[(name, headline)] of a saved result JSON (one report, or several from ``--compare``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        reports = data["reports"] if "reports" in data else [data]
        return [(str(r["name"]), {str(k): float(v) for k, v in r["headline"].items()}) for r in reports]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StylespaceError(f"{path}: not an evaluation result JSON ({type(exc).__name__}: {exc}); "
                              "expected a file written by `stylespace evaluate -o`") from None
