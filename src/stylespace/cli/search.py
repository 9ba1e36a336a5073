"""`stylespace search`: the top-k catalog items for query images or catalog ids."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from stylespace.cli._options import (DEVICE_OPTION, JSON_OPTION, MODEL_OPTION, WHERE_OPTION_HELP, hit_record,
                                     hits_table, parse_where)
from stylespace.cli._options import with_engine
from stylespace.cli._output import emit, out


def register(app: typer.Typer) -> None:
    app.command("search", help="Top-k catalog items for query images (files, folders) or catalog ids.")(search_cmd)


@with_engine
def search_cmd(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="Index folder."),
    queries: list[str] = typer.Argument(..., metavar="QUERY...", help="Image files or folders of images (any size), "
                                                                      "or catalog ids with --id."),
    k: int = typer.Option(10, "-k", "--k", help="Items per query."),
    by_id: bool = typer.Option(False, "--id", help="The queries are ids of items in the index."),
    exclude_self: bool = typer.Option(False, "--exclude-self", help="Leave the query item out of its results (an id "
                                                                    "query, or an image file named <id>.<ext>)."),
    where: Optional[list[str]] = typer.Option(None, help=WHERE_OPTION_HELP),
    metric: Optional[str] = typer.Option(None, help="Report cosine similarity or euclidean distance (default: the "
                                                    "index's metric)."),
    model: Optional[Path] = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.index import CatalogIndex
    from stylespace.index.queries import embed_queries

    index = CatalogIndex.open(index_dir)
    batch = embed_queries(index, queries, by_id=by_id, model_path=model, device=device, progress=not as_json)
    started = time.perf_counter()
    results = index.search(batch.vectors, k, exclude_ids=batch.exclusions() if exclude_self else None,
                           where=parse_where(where), metric=metric, model_id=None)
    seconds = time.perf_counter() - started
    shown_metric = metric or index.metric
    result = {"index": str(index_dir), "k": k, "metric": shown_metric, "search_seconds": round(seconds, 4),
              "queries": [{"query": name, "hits": [hit_record(r, h) for r, h in enumerate(hits, 1)]}
                          for name, hits in zip(batch.names, results)]}

    def render(r: dict) -> None:
        score_name = "cosine" if shown_metric == "cosine" else "distance"
        for entry in r["queries"]:
            out.print(hits_table(f"{entry['query']}: top {len(entry['hits'])}", entry["hits"], score_name))

    emit(result, as_json, render)
