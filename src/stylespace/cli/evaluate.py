"""`stylespace evaluate`: every figure of seeds 003 and 004 for a model or an embeddings file on a split."""
from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import List, Optional

import typer

from stylespace.cli._options import JSON_OPTION, default_of, given, setting, with_engine
from stylespace.cli._output import console, emit, out
from stylespace.evaluation.config import EvaluationConfig
from stylespace.utils import METRICS, StylespaceError, write_json


def register(app: typer.Typer) -> None:
    app.command("evaluate", short_help="Score a model or embeddings on a split: task 1, scenarios 1-4, open set, retrieval, hierarchy, pairs.", help="Score a model run folder or an embeddings .npz on a split: 004's four support-set "
                "scenarios (kNN and prototypes), open set, retrieval (P@1, R@k, MAP@R), coarser labels and pair "
                "verification (ROC, AUC, cutoffs); --compare puts several side by side.")(evaluate_cmd)


@with_engine
def evaluate_cmd(
    source: Path = typer.Argument(..., metavar="MODEL_OR_EMBEDDINGS",
                                  help="A model folder (model.safetensors + model.json) or an embeddings .npz."),
    split: Path = typer.Option(..., "--split", help="Split manifest CSV written by `stylespace split`."),
    catalog_path: Optional[Path] = typer.Option(None, "--catalog", help="The split's catalog (default: the one the "
                                                "split's config names); used to embed images and to read --pairs."),
    pairs_path: Optional[Path] = typer.Option(None, "--pairs", help="Pairs CSV (image_a,image_b,label with catalog ids). "
                                              "Default: same vs different article type pairs of the test items."),
    compare: Optional[List[Path]] = typer.Option(None, "--compare", help="Another model folder, embeddings .npz or "
                                                 "saved result .json to show side by side (repeat the option)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the result JSON here."),
    metric: Optional[str] = setting(EvaluationConfig, "metric", help=f"{' or '.join(METRICS)}, for every search, "
                                    "vote, prototype and pair."),
    knn: Optional[str] = setting(EvaluationConfig, "knn_k", "--knn", help="The k of each kNN classifier, "
                                 "comma-separated.", shown=",".join(map(str, default_of(EvaluationConfig, "knn_k")))),
    prototypes: Optional[bool] = setting(EvaluationConfig, "prototypes", "--prototypes/--no-prototypes",
                                         help="Also classify by nearest class prototype (mean embedding)."),
    retrieval: Optional[str] = setting(EvaluationConfig, "retrieval_sets", "--retrieval", help="Retrieval sets: "
                                       "'test' (main + new test items) and/or 'all' (every split item against every "
                                       "other); '' for none.",
                                       shown=",".join(default_of(EvaluationConfig, "retrieval_sets"))),
    max_r: Optional[int] = setting(EvaluationConfig, "max_r", shown="no cap", help="Cap R for R-precision / MAP@R."),
    open_set_coverage: Optional[float] = setting(EvaluationConfig, "open_set_coverage", help="Open set: the reject "
                                                 "distance answers this share of main support items "
                                                 "(leave-one-out); 0 skips the open-set check."),
    max_pairs: Optional[int] = setting(EvaluationConfig, "max_pairs", help="Default pair set: all test pairs up to "
                                       "this many, else a sample."),
    batch_size: int = typer.Option(256, help="Images per forward pass when embedding with a model."),
    device: str = typer.Option("auto", help="auto, cpu or cuda (for a model)."),
    dedupe: bool = typer.Option(False, "--dedupe", help="Also measure every figure without the query items that have "
                                "a copy on the reference side (pixel-identical images, or near copies by the first "
                                "source's embeddings, as `stylespace audit` finds them): both are reported."),
    audit: Optional[Path] = typer.Option(None, "--audit", help="Take the copies from this `stylespace audit` folder "
                                         "(or its audit.json) instead of finding them; implies --dedupe."),
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.audit import EvaluationCopies
    from stylespace.data import SplitManifest
    from stylespace.evaluation.sources import SplitEvaluator

    started = time.perf_counter()
    manifest = SplitManifest.load(split)
    config = EvaluationConfig(**given(
        metric=metric, knn_k=None if knn is None else _ints(knn, "--knn"), prototypes=prototypes,
        retrieval_sets=None if retrieval is None else tuple(p.strip() for p in retrieval.split(",") if p.strip()),
        max_r=max_r, open_set_coverage=open_set_coverage, max_pairs=max_pairs))
    copies = EvaluationCopies(audit, progress=not as_json) if dedupe or audit is not None else None
    evaluator = SplitEvaluator(manifest, split, config, catalog_path=catalog_path, pairs_path=pairs_path, copies=copies,
                               batch_size=batch_size, device=device, progress=not as_json)
    reports = [evaluator.evaluate(source)]
    compared = [(reports[0].name, reports[0].headline())]
    for other in compare or []:
        if other.suffix == ".json":
            from stylespace.evaluation import load_headlines

            compared.extend(load_headlines(other))
        else:
            reports.append(evaluator.evaluate(other))
            compared.append((reports[-1].name, reports[-1].headline()))
    for report in reports:
        report.seconds["total"] = round(time.perf_counter() - started, 3)
        report.peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result = reports[0].to_dict() if len(compared) == 1 else {
        "reports": [r.to_dict() for r in reports],
        "comparison": {"names": [n for n, _ in compared], "figures": _comparison_rows(compared)},
    }
    if output is not None:
        write_json(output, result)

    def render(_: dict) -> None:
        from stylespace.evaluation import compare_markdown

        for report in reports:
            out.print(report.to_markdown(), markup=False, highlight=False, soft_wrap=True)
            out.print()
        if len(compared) > 1:
            out.print("## Side by side\n\n" + compare_markdown(compared), markup=False, highlight=False, soft_wrap=True)
        seconds = reports[0].seconds
        console.print(f"done in {seconds['total']:.1f} s, peak memory {reports[0].peak_rss_mb:,.0f} MB"
                      + (f"; result written to {output}" if output else ""))

    emit(result, as_json, render)


def _comparison_rows(compared: list[tuple[str, dict[str, float]]]) -> dict[str, list[float | None]]:
    keys = list(dict.fromkeys(k for _, headline in compared for k in headline))
    return {k: [headline.get(k) for _, headline in compared] for k in keys}


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise StylespaceError(f"{option} expects comma-separated integers such as 1,5; got {text!r}") from None
    return values  # EvaluationConfig checks each k
