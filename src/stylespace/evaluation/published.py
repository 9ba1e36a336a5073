"""Published figures to compare with, each with its source, and the table a benchmark run prints them in.

Each benchmark of `stylespace bench` (:mod:`stylespace.evaluation.benchmarks`) runs one published protocol;
:data:`BENCHMARKS` says what the protocol is, which metrics it reports and what others published on it.
A :class:`BenchResult` holds this run's rows beside the published ones, so every figure shows where it
comes from.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from stylespace.utils import StylespaceError

THIS_RUN = "this run"


@dataclasses.dataclass(frozen=True)
class Metric:
    """A column of a benchmark's table: ``key`` in the rows' values, ``label`` in the table's header."""

    key: str
    label: str


@dataclasses.dataclass(frozen=True)
class Published:
    """A figure someone published on the protocol: ``values`` (metric key -> fraction) and where it is."""

    method: str
    values: dict[str, float]
    source: str
    url: str
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A published protocol: its ``name`` (the `stylespace bench` argument), what it measures and the
    figures published on it."""

    name: str
    title: str
    protocol: str
    metrics: tuple[Metric, ...]
    published: tuple[Published, ...]


_XIAO = ("Xiao, Rasul & Vollgraf 2017, Fashion-MNIST paper, scikit-learn benchmark (best setting)",
         "https://arxiv.org/abs/1708.07747")
_FM_TABLE = ("zalandoresearch/fashion-mnist README, benchmark table (submitted, not re-run by the maintainers)",
             "https://github.com/zalandoresearch/fashion-mnist#benchmark")
_UDIT = ("uditarora/fashion-product-classification RESULTS.md, top-20 classes, average (micro)",
         "https://github.com/uditarora/fashion-product-classification/blob/master/RESULTS.md")
_MATTI = ("gitmatti/few-shot-learning README, few-shot results, Fashion Small, 80 epochs",
          "https://github.com/gitmatti/few-shot-learning")
_ACCURACY = (Metric("accuracy", "test accuracy"),)

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark(
        "fashion-mnist", "Fashion-MNIST, official split",
        "the official 60,000 train / 10,000 test images; 5 % of each class of the training images is the "
        "validation part (best epoch), the test images are scored once; 1-NN searches the 60,000 training "
        "images (cosine)",
        _ACCURACY,
        (
            Published("LogisticRegression on pixels", {"accuracy": 0.842}, *_XIAO),
            Published("SVC (RBF) on pixels", {"accuracy": 0.897}, *_XIAO),
            Published("2 conv layers, < 100K parameters", {"accuracy": 0.925}, *_FM_TABLE),
            Published("ResNet18, augmentation", {"accuracy": 0.949}, *_FM_TABLE),
            Published("MobileNet, horizontal flips", {"accuracy": 0.950}, *_FM_TABLE),
            Published("WRN-28-10, crops and flips", {"accuracy": 0.959}, *_FM_TABLE),
        )),
    Benchmark(
        "year-split", "Fashion Product Images, year split",
        "the 20 most frequent article types; items of even years train, of odd years test (a class with no "
        "even-year item counts as errors, as published); choices on 20 % of the even-year items only",
        (Metric("top1", "top-1"), Metric("top5", "top-5")),
        (
            Published("ResNet-50 (ImageNet) fine-tuned, small images (80 x 60)", {"top1": 0.8680, "top5": 0.9574},
                      *_UDIT, note="a later revision of the file gives 87.01 / 95.76 %"),
            Published("ResNet-50 (ImageNet) fine-tuned, full-size images", {"top1": 0.8805, "top5": 0.9578}, *_UDIT),
        )),
    Benchmark(
        "episodes", "Few-shot episodes on new article types",
        "N-way K-shot episodes over article types the model never trained on (the 30 'new' types of the 004 "
        "split), 1 query per class, 1,000 episodes from a fixed seed, mean and 95 % interval; prototype = mean "
        "support embedding, nearest by cosine",
        (Metric("5w1s", "5-way 1-shot"), Metric("5w5s", "5-way 5-shot"), Metric("15w5s", "15-way 5-shot")),
        (
            Published("Prototypical Network, 4-conv, from scratch on the 80 x 60 images",
                      {"5w1s": 0.765, "5w5s": 0.887, "15w5s": 0.764}, *_MATTI,
                      note="its own split of background / evaluation article types, squared euclidean distance"),
        )),
)}


def benchmark(name: str) -> Benchmark:
    """The benchmark ``name``; a clear error naming the known ones otherwise."""
    if name not in BENCHMARKS:
        raise StylespaceError(f"benchmark {name!r} is unknown; expected one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


@dataclasses.dataclass
class BenchRow:
    """One row of a benchmark table: a method's ``values`` (metric key -> fraction, None where it has none),
    their 95 % interval half-widths where measured, and where the figure comes from."""

    method: str
    values: dict[str, float | None]
    source: str = THIS_RUN
    url: str = ""
    note: str = ""
    interval: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def ours(self) -> bool:
        return self.source == THIS_RUN

    @classmethod
    def published(cls, figure: Published) -> "BenchRow":
        return cls(figure.method, dict(figure.values), figure.source, figure.url, figure.note)


@dataclasses.dataclass
class BenchResult:
    """What a `stylespace bench` run measured, beside what was published.

    Attributes:
        benchmark: the protocol run.
        rows: this run's rows first, then the published ones.
        model: what was measured (model folder and id, or the training run).
        details: everything else the run recorded (counts, training time, choices made on validation).
        caveats: what makes this run's figures differ from the protocol's (said beside the table).
        seconds: wall time of the whole run.
    """

    benchmark: Benchmark
    rows: list[BenchRow]
    model: dict[str, Any]
    details: dict[str, Any]
    caveats: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @classmethod
    def with_published(cls, benchmark: Benchmark, ours: list[BenchRow], **fields) -> "BenchResult":
        return cls(benchmark, [*ours, *(BenchRow.published(p) for p in benchmark.published)], **fields)

    def to_dict(self) -> dict:
        return {
            "benchmark": self.benchmark.name,
            "title": self.benchmark.title,
            "protocol": self.benchmark.protocol,
            "metrics": {m.key: m.label for m in self.benchmark.metrics},
            "rows": [{**dataclasses.asdict(r), "ours": r.ours} for r in self.rows],
            "model": self.model,
            "details": self.details,
            "caveats": self.caveats,
            "seconds": round(self.seconds, 1),
        }

    def to_markdown(self) -> str:
        """The table as docs/benchmarks.md shows it: one row per method, its figures, its source."""
        return markdown_table(self.benchmark, self.rows)


def markdown_table(benchmark: Benchmark, rows: list[BenchRow]) -> str:
    header = ["method", *(m.label for m in benchmark.metrics), "source"]
    lines = ["| " + " | ".join(header) + " |", "| --- | " + " | ".join("---:" for _ in benchmark.metrics) + " | --- |"]
    for row in rows:
        cells = [f"**{row.method}**" if row.ours else row.method]
        cells += [percent(row.values.get(m.key), row.interval.get(m.key)) for m in benchmark.metrics]
        source = f"[{row.source}]({row.url})" if row.url else row.source
        cells.append(source + (f"; {row.note}" if row.note else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def percent(value: float | None, interval: float | None = None) -> str:
    """``0.9412`` -> ``94.12 %``; with an interval ``76.50 +- 1.20 %``; None -> empty."""
    if value is None:
        return ""
    return f"{100 * value:.2f}" + (f" +- {100 * interval:.2f}" if interval is not None else "") + " %"
