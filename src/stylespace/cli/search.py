"""`stylespace search`: the top-k catalog items for query images or catalog ids, for words (`--text`), or for
an image and words together."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from stylespace.cli._options import (DEVICE_OPTION, JSON_OPTION, MODEL_OPTION, QUERY_VIEWS_OPTION, WHERE_OPTION_HELP,
                                     hit_record, hits_table, parse_where)
from stylespace.cli._options import with_engine
from stylespace.cli._output import emit, out
from stylespace.utils import StylespaceError


def register(app: typer.Typer) -> None:
    app.command("search", help="Top-k catalog items for query images (files, folders), catalog ids, or words "
                               "(--text; with images too: both together).")(search_cmd)


@with_engine
def search_cmd(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="Index folder."),
    queries: Optional[list[str]] = typer.Argument(None, metavar="[QUERY]...", help="Image files or folders of images "
                                                  "(any size), or catalog ids with --id; none with --text alone."),
    k: int = typer.Option(10, "-k", "--k", help="Items per query."),
    by_id: bool = typer.Option(False, "--id", help="The queries are ids of items in the index."),
    exclude_self: bool = typer.Option(False, "--exclude-self", help="Leave the query item out of its results (an id "
                                                                    "query, or an image file named <id>.<ext>)."),
    where: Optional[list[str]] = typer.Option(None, help=WHERE_OPTION_HELP),
    metric: Optional[str] = typer.Option(None, help="Report cosine similarity or euclidean distance (default: the "
                                                    "index's metric)."),
    text: Optional[str] = typer.Option(None, "--text", help="Search by words (\"navy check shirt for men\"); with "
                                                            "image or id queries, each is searched with the words "
                                                            "(\"like this, but red\")."),
    text_model: Optional[Path] = typer.Option(None, "--text-model", help="Text model folder (default: MODEL/text "
                                                                          "beside the index's image model)."),
    mode: str = typer.Option("auto", "--mode", help="Words: auto (hybrid where items have names, else the "
                                                    "embedding), embedding, hybrid or keywords (BM25 on names)."),
    text_weight: float = typer.Option(1.0, "--text-weight", help="Image and words: how much the words count "
                                                                 "beside the image."),
    query_views: Optional[str] = QUERY_VIEWS_OPTION,
    model: Optional[Path] = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.data.query_views import QueryViews
    from stylespace.index import CatalogIndex

    views = QueryViews.of(query_views)
    index = CatalogIndex.open(index_dir)
    if text is not None:
        return _text_search(index, index_dir, text, queries or [], by_id, exclude_self, k, where, mode, text_weight,
                            text_model, model, device, as_json)
    if not queries:
        raise StylespaceError("give query images, ids with --id, or words with --text")
    from stylespace.index.queries import embed_queries

    batch = embed_queries(index, queries, by_id=by_id, model_path=model, device=device, progress=not as_json,
                          query_views=views)
    started = time.perf_counter()
    results = batch.search(index, k, exclude_self=exclude_self, where=parse_where(where), metric=metric)
    seconds = time.perf_counter() - started
    shown_metric = metric or index.metric
    result = {"index": str(index_dir), "k": k, "metric": shown_metric, "search_seconds": round(seconds, 4),
              "query_views": list(views.names) if batch.views is not None else ["canonical"],
              "queries": [{"query": name, "hits": [hit_record(r, h) for r, h in enumerate(hits, 1)]}
                          for name, hits in zip(batch.names, results)]}

    def render(r: dict) -> None:
        score_name = "cosine" if shown_metric == "cosine" else "distance"
        for entry in r["queries"]:
            out.print(hits_table(f"{entry['query']}: top {len(entry['hits'])}", entry["hits"], score_name))

    emit(result, as_json, render)


def _text_search(index, index_dir, text, queries, by_id, exclude_self, k, where, mode, text_weight, text_model,
                 model, device, as_json) -> None:
    from stylespace.index.text_search import TextSearch

    search = TextSearch.open(index, text_model)
    started = time.perf_counter()
    if queries:
        from stylespace.index.queries import embed_queries

        batch = embed_queries(index, queries, by_id=by_id, model_path=model, device=device, progress=not as_json)
        answers = [search.search(text, k, where=parse_where(where), image_vector=vector, text_weight=text_weight,
                                 exclude_ids=[own] if exclude_self else ())
                   for vector, own in zip(batch.vectors, batch.own_ids)]
        names = [f"{name} + {text!r}" for name in batch.names]
    else:
        answers = [search.search(text, k, where=parse_where(where), mode=mode)]
        names = [text]
    result = {"index": str(index_dir), "k": k, "text_model": str(search.text_model.folder),
              "search_seconds": round(time.perf_counter() - started, 4),
              "queries": [{**answer.to_dict(), "query": name} for name, answer in zip(names, answers)]}

    def render(r: dict) -> None:
        for entry in r["queries"]:
            if not entry["confident"]:
                out.print(f"{entry['query']}: no confident match: {entry['reason']}")
                continue
            note = f" (words not known to the text model: {', '.join(entry['unknown_words'])})" \
                if entry["unknown_words"] else ""
            out.print(hits_table(f"{entry['query']}: top {len(entry['hits'])} by {entry['method']}{note}",
                                 entry["hits"], entry["score_name"]))

    emit(result, as_json, render)
