"""`stylespace recommend` (top-3 with a confidence, shown above the calibrated threshold) and
`stylespace calibrate-threshold` (choose the score and threshold on labelled queries)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from stylespace.cli._options import (BATCH_OPTION, DEVICE_OPTION, JSON_OPTION, MODEL_OPTION, QUERY_VIEWS_OPTION,
                                     WHERE_OPTION_HELP, hit_record, hits_table, parse_where)
from stylespace.cli._options import with_engine
from stylespace.cli._output import console, emit, out


def register(app: typer.Typer) -> None:
    app.command("recommend", help="Top-3 recommendations with a label-free confidence; shown only above the "
                                  "index's calibrated threshold.")(recommend_cmd)
    app.command("calibrate-threshold", help="Compare confidence scores on labelled queries (error rate vs coverage, "
                                            "AURC), choose a threshold and save it with the index.")(calibrate_cmd)


@with_engine
def recommend_cmd(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="Index folder (calibrated with calibrate-threshold)."),
    queries: list[str] = typer.Argument(..., metavar="QUERY...", help="Image files or folders, or ids with --id."),
    by_id: bool = typer.Option(False, "--id", help="The queries are ids of items in the index (left out of their "
                                                   "own recommendations)."),
    where: Optional[list[str]] = typer.Option(None, help=WHERE_OPTION_HELP),
    threshold: Optional[float] = typer.Option(None, help="Override the index's calibrated threshold."),
    score: Optional[str] = typer.Option(None, help="Override the index's confidence score (e.g. top1)."),
    show_all: bool = typer.Option(False, "--all", help="List the items of recommendations below the threshold too."),
    query_views: Optional[str] = QUERY_VIEWS_OPTION,
    model: Optional[Path] = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.index import CatalogIndex
    from stylespace.index.queries import embed_queries
    from stylespace.recommend.choice import choose_recommender

    index = CatalogIndex.open(index_dir)
    recommender, note = choose_recommender(index, score, threshold)
    if note:
        console.print(f"[yellow]note:[/yellow] {note}")
    batch = embed_queries(index, queries, by_id=by_id, model_path=model, device=device, progress=not as_json,
                          query_views=query_views)
    vectors, query_of = batch.searched()
    recommendations = recommender.recommend(vectors, exclude_ids=batch.exclusions() if by_id else None,
                                            where=parse_where(where), blank=batch.blank, query_of=query_of)
    result = {"index": str(index_dir), "score": recommender.score_name, "threshold": recommender.threshold,
              "match_threshold": recommender.match_threshold, "junk": recommender.junk.to_dict(),
              "queries": [{"query": name, "match_score": rec.match_score, "confidence": rec.confidence,
                           "shown": rec.confident,
                           "not_a_product": rec.junk, "reason": rec.reason,
                           "items": [hit_record(r, h) for r, h in enumerate(rec.items, 1)]
                           if rec.confident or show_all else []}
                          for name, rec in zip(batch.names, recommendations)]}

    def render(r: dict) -> None:
        for entry in r["queries"]:
            verdict = "shown" if entry["shown"] else f"no confident match: {entry['reason']}"
            match = f"match {100 * entry['match_score']:.0f} %, " if entry["match_score"] is not None else ""
            title = f"{entry['query']}: {match}confidence {entry['confidence']:.4f} ({r['score']}) -> {verdict}"
            if entry["items"]:
                out.print(hits_table(title, entry["items"], "cosine" if index.metric == "cosine" else "distance"))
            else:
                out.print(title)

    emit(result, as_json, render)


@with_engine
def calibrate_cmd(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="Index folder (its items need labels)."),
    queries: Path = typer.Option(..., help="Labelled queries: a catalog, or a split manifest (default rows: the "
                                           "query side of scenario 4, main + new test)."),
    scenario: Optional[int] = typer.Option(None, help="With a split manifest: the query set of scenario N."),
    part: Optional[list[str]] = typer.Option(None, help="With a split manifest: GROUP/SPLIT rows (repeatable)."),
    catalog: Optional[Path] = typer.Option(None, help="With a split manifest: the catalog its ids refer to."),
    target_error: Optional[float] = typer.Option(None, help="Largest error rate among shown recommendations "
                                                            "(default 0.05 = 5 %)."),
    target_coverage: Optional[float] = typer.Option(None, help="Instead: the share of queries to show (0.8 = 80 %)."),
    score: Optional[list[str]] = typer.Option(None, help="Confidence scores to compare (repeatable; default all, "
                                                         "and `combined`, fitted on these queries)."),
    plot: Optional[Path] = typer.Option(None, help="Write the error rate (%) vs coverage (%) plot here (PNG)."),
    save: bool = typer.Option(True, help="Save the chosen score and threshold in the index's index.json."),
    model: Optional[Path] = MODEL_OPTION,
    batch_size: int = BATCH_OPTION,
    device: str = DEVICE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.data.selection import select_items
    from stylespace.index import CatalogIndex
    from stylespace.index.queries import open_query_model
    from stylespace.recommend.choice import calibrate_index

    index = CatalogIndex.open(index_dir)
    embedding_model = open_query_model(index, model, device)
    calibration, failed = calibrate_index(index, embedding_model, select_items(queries, scenario, part, "query", catalog),
                                          scores=score, target_error=target_error, target_coverage=target_coverage,
                                          batch_size=batch_size, device=device, progress=not as_json)
    saved = False
    if save:
        if calibration.point.reached:
            calibration.save(index)
            saved = True
        else:
            console.print(f"[yellow]not saved:[/yellow] no threshold meets {calibration.point.target} on these queries")
    if plot is not None:
        calibration.plot(plot)
    result = calibration.to_dict()
    result.update({"index": str(index_dir), "saved": saved, "plot": str(plot) if plot else None,
                   "failed": failed})
    emit(result, as_json, _render_calibration)


def _render_calibration(r: dict) -> None:
    target = r["target"]
    goal = (f"error <= {100 * target['error']:.1f} %" if "error" in target
            else f"coverage >= {100 * target['coverage']:.1f} %")
    table = Table(title=f"{r['n_queries']:,} queries from {r['queries']}; top-{r['n_items']} correct when all "
                        f"shown: {100 * r['accuracy_at_full_coverage']:.1f} %; target {goal}", title_justify="left")
    for column in ("score", "AURC", "threshold", "coverage %", "error %"):
        table.add_column(column, justify="left" if column == "score" else "right")
    for row in r["scores"]:
        mark = " *" if row["score"] == r["chosen"] else ""
        table.add_row(row["score"] + mark, f"{row['aurc']:.4f}",
                      "-" if row["threshold"] is None else f"{row['threshold']:.4f}",
                      f"{100 * row['coverage']:.1f}", "-" if row["error"] != row["error"] else f"{100 * row['error']:.2f}")
    out.print(table)
    verdict = "saved in" if r["saved"] else "not saved in"
    out.print(f"chosen: {r['chosen']} (lowest AURC {r['aurc']:.4f}), threshold {r['threshold']}: "
              f"{100 * r['coverage']:.1f} % shown, {100 * r['error']:.2f} % wrong; {verdict} {r['index']}/index.json")
    if r["plot"]:
        out.print(f"plot: {r['plot']}")
