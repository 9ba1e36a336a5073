"""`stylespace index` (build, add, remove, rebuild, info), `stylespace search`, `stylespace recommend`
and `stylespace calibrate-threshold`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from typer.core import TyperGroup

from stylespace.cli._output import console, emit, out
from stylespace.utils import StylespaceError

SHOWN_COLUMNS = ("productDisplayName", "gender", "baseColour")

# Options several commands share (Typer reads these as plain metadata, so one object serves them all).
MODEL_OPTION = typer.Option(None, "--model", help="Model folder that embeds images (default: the index's own).")
BATCH_OPTION = typer.Option(256, "--batch-size", help="Images per forward pass.")
DEVICE_OPTION = typer.Option("auto", "--device", help="auto, cpu or cuda.")
JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document on stdout.")
INCLUDE_BLANK_OPTION = typer.Option(False, "--include-blank", help="Index catalog items whose image is blank or "
                                                                   "nearly uniform too (default: left out, reported).")


class _BuildByDefault(TyperGroup):
    """`stylespace index MODEL CATALOG -o DIR` means `stylespace index build MODEL CATALOG -o DIR`."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["build", *args]
        return super().resolve_command(ctx, args)


index_app = typer.Typer(cls=_BuildByDefault, no_args_is_help=True, help=(
    "Build a searchable catalog index (`stylespace index MODEL CATALOG -o DIR`), or change one: add, remove, "
    "rebuild, info."))


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
    app.command("search", help="Top-k catalog items for query images (files, folders) or catalog ids.")(search_cmd)
    app.command("recommend", help="Top-3 recommendations with a label-free confidence; shown only above the "
                                  "index's calibrated threshold.")(recommend_cmd)
    app.command("calibrate-threshold", help="Compare confidence scores on labelled queries (error rate vs coverage, "
                                            "AURC), choose a threshold and save it with the index.")(calibrate_cmd)


# --- shared option parsing ------------------------------------------------------------------------------


def parse_where(entries: list[str] | None) -> dict[str, list[str]] | None:
    """``["gender=Men", "gender=Unisex", "season=Summer"]`` -> {"gender": ["Men", "Unisex"], "season": ["Summer"]}."""
    if not entries:
        return None
    where: dict[str, list[str]] = {}
    for entry in entries:
        column, sep, value = entry.partition("=")
        if not sep or not column.strip():
            raise StylespaceError(f"--where {entry!r}: expected COLUMN=VALUE, e.g. --where gender=Men")
        where.setdefault(column.strip(), []).append(value.strip())
    return where


def select_items(path: Path, scenario: Optional[int], parts: list[str] | None, side: str,
                 catalog_override: Optional[Path] = None):
    """Items named by a catalog or a split manifest.

    Returns (catalog, ids or None for all, labels {id: label} or None, description). For a manifest, the
    rows are those of ``--part GROUP/SPLIT`` or the ``side`` (support or query) of ``--scenario`` (default 4),
    and the images come from the catalog the manifest was made from (or ``catalog_override``).
    """
    from stylespace.data import SplitManifest, load_catalog

    if _is_manifest(path):
        manifest = SplitManifest.load(path)
        if parts:
            wanted = set()
            for part in parts:
                group, sep, split = part.partition("/")
                if not sep:
                    raise StylespaceError(f"--part {part!r}: expected GROUP/SPLIT, e.g. main/support")
                wanted.add((group, split))
            rows = [r for r in manifest.rows if (r["group"], r["split"]) in wanted]
            description = f"{path} ({', '.join(sorted(parts))})"
        else:
            number = scenario or 4
            support, query = manifest.scenario(number)
            rows = (support if side == "support" else query).rows
            description = f"{path} (scenario {number} {side})"
        if not rows:
            raise StylespaceError(f"{path}: the selection {parts or f'scenario {scenario or 4} {side}'} has no rows")
        source = catalog_override or (Path(manifest.config.catalog) if manifest.config.catalog else None)
        if source is None:
            raise StylespaceError(f"{path}: the manifest does not say which catalog it splits; pass --catalog")
        catalog = load_catalog(source)
        return catalog, [r["id"] for r in rows], {r["id"]: r["label"] for r in rows}, description
    if scenario is not None or parts:
        raise StylespaceError(f"{path}: --scenario and --part select rows of a split manifest, not of a catalog")
    catalog = load_catalog(path)
    return catalog, None, None, str(path)


def _is_manifest(path: Path) -> bool:
    if not (path.is_file() and path.suffix.lower() == ".csv"):
        return False
    with path.open(encoding="utf-8", errors="replace") as handle:
        header = {h.strip() for h in handle.readline().strip().split(",")}
    return {"id", "label", "group", "split"} <= header


def open_index_and_model(index_dir: Path, model_path: Optional[Path], device: str):
    from stylespace.index import CatalogIndex

    index = CatalogIndex.open(index_dir)
    return index, open_model(index, model_path, device)


def open_model(index, model_path: Optional[Path], device: str):
    """The model that embeds queries: ``--model`` or the one the index records; it must be the index's."""
    from stylespace.models import load_model, model_id
    from stylespace.utils import pick_device

    folder = model_path or index.model_dir
    if folder is None:
        raise StylespaceError(f"the index at {index.folder} records no model folder; pass --model MODEL_DIR")
    model = load_model(folder, device=pick_device(device))
    index.check_model(model_id(model), f"queries embedded with {folder}")
    index.check_view()
    return model


def query_vectors(index, queries: list[str], by_id: bool, model_path: Optional[Path], device: str,
                  with_blank: bool = False):
    """(names, vectors (Q, D), query ids for exclusion) for query image paths/folders or catalog ids; with
    ``with_blank``, also (Q,) whether each query image is blank or almost uniform (None for ids)."""
    from stylespace.index.build import embed_query_views, image_files

    if not queries:
        raise StylespaceError("give at least one query: image files, a folder of images, or ids with --id")
    if by_id:
        found = (list(queries), index.vectors(queries), list(queries))
        return (*found, None) if with_blank else found
    files = image_files(queries)
    model = open_model(index, model_path, device)
    with console.status(f"embedding {len(files)} query image(s)"):
        vectors, blank = embed_query_views(model, files, device=device)
    found = ([str(f) for f in files], vectors, [f.stem for f in files])
    return (*found, blank) if with_blank else found


def _hit_record(rank: int, hit) -> dict:
    return {"rank": rank, "id": hit.id, "score": hit.score, "label": hit.label, "meta": hit.meta}


def _hits_table(title: str, hits: list[dict], score_name: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("id")
    table.add_column(score_name, justify="right")
    table.add_column("label")
    columns = [c for c in SHOWN_COLUMNS if any(c in h["meta"] for h in hits)]
    for column in columns:
        table.add_column(column)
    for h in hits:
        table.add_row(str(h["rank"]), h["id"], f"{h['score']:.4f}", h["label"] or "",
                      *[h["meta"].get(c, "") for c in columns])
    return table


# --- stylespace index ... --------------------------------------------------------------------------------


@index_app.command("build", help="Embed a catalog with a model and write an index folder (the default subcommand: "
                                 "`stylespace index MODEL CATALOG -o DIR`).")
def build_cmd(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Model folder (model.safetensors + model.json)."),
    catalog_path: Path = typer.Argument(..., metavar="CATALOG", help="Catalog (Kaggle zip/folder, image tree, manifest) "
                                                                     "or a split manifest CSV."),
    output: Path = typer.Option(..., "-o", "--output", help="Index folder to write."),
    kind: str = typer.Option("exact", help="exact (default), ivf or hnsw (approximate, for millions of items)."),
    metric: str = typer.Option("cosine", help="cosine or euclidean."),
    scenario: Optional[int] = typer.Option(None, help="With a split manifest: index the support set of scenario N "
                                                      "(default 4: main + new support)."),
    part: Optional[list[str]] = typer.Option(None, help="With a split manifest: index these GROUP/SPLIT rows "
                                                        "instead (repeatable), e.g. main/support."),
    catalog: Optional[Path] = typer.Option(None, help="With a split manifest: the catalog its ids refer to "
                                                      "(default: the one recorded in the manifest)."),
    nlist: int = typer.Option(0, help="IVF cells (0 = about 4 sqrt(N))."),
    nprobe: int = typer.Option(16, help="IVF cells visited per query."),
    hnsw_m: int = typer.Option(32, help="HNSW graph degree."),
    ef_search: int = typer.Option(64, help="HNSW search beam width."),
    whiten: bool = typer.Option(True, help="Whiten the vectors with a PCA fitted on this catalog (no labels "
                                           "needed; needs 4 items per dimension): better neighbours and confidence."),
    overwrite: bool = typer.Option(False, help="Replace an index already in the output folder."),
    include_blank: bool = INCLUDE_BLANK_OPTION,
    batch_size: int = BATCH_OPTION,
    device: str = DEVICE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.index.build import build_index
    from stylespace.models import load_model
    from stylespace.utils import pick_device

    started = time.perf_counter()
    model = load_model(model_path, device=pick_device(device))
    cat, ids, labels, description = select_items(catalog_path, scenario, part, "support", catalog)
    index, failed = build_index(model, cat, output, ids=ids, labels=labels, model_path=model_path, kind=kind,
                                metric=metric, overwrite=overwrite, batch_size=batch_size, device=device,
                                progress=not as_json, whiten=whiten, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
                                ef_search=ef_search, include_blank=include_blank)
    result = _info(index)
    result.update({"source": description, "failed": failed, "blank_left_out": _blank_count(failed),
                   "seconds": round(time.perf_counter() - started, 2)})

    def render(r: dict) -> None:
        out.print(f"indexed {r['count']:,} items of {r['source']} into [bold]{r['folder']}[/bold] "
                  f"({r['kind']}, {r['metric']}, model {r['model_id']}) in {r['seconds']:.1f} s")
        if r["recall_at_10"] is not None:
            out.print(f"recall@10 against exact search: {r['recall_at_10']:.4f}")
        if whiten and not r["whitened_items"]:
            out.print(f"not whitened: {r['count']:,} items are too few for {r['dim']} dimensions "
                      "(whitening needs 4 items per dimension)")
        _print_left_out(failed)

    emit(result, as_json, render)


def _blank_count(left_out: dict[str, str]) -> int:
    from stylespace.index.build import BLANK_REASON

    return sum(1 for reason in left_out.values() if reason == BLANK_REASON)


def _print_left_out(left_out: dict[str, str]) -> None:
    """One line per reason items were left out of an index (undecodable, blank), with a few ids."""
    from stylespace.index.build import BLANK_REASON

    by_reason: dict[str, list[str]] = {}
    for item_id, reason in left_out.items():
        by_reason.setdefault(reason, []).append(item_id)
    for reason, ids in by_reason.items():
        hint = " (index them anyway with --include-blank)" if reason == BLANK_REASON else ""
        out.print(f"{len(ids):,} item(s) left out: {reason}{hint}, e.g. {', '.join(ids[:5])}")


@index_app.command("add", help="Embed catalog items and add them without rebuilding (new stock).")
def add_cmd(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="Index folder."),
    catalog_path: Path = typer.Argument(..., metavar="CATALOG", help="Catalog holding the new items."),
    ids: Optional[list[str]] = typer.Option(None, "--id", help="Add only these ids (repeatable; default: every "
                                                               "catalog item not in the index)."),
    replace: bool = typer.Option(False, help="Re-embed and replace items already in the index."),
    include_blank: bool = INCLUDE_BLANK_OPTION,
    model: Optional[Path] = MODEL_OPTION,
    batch_size: int = BATCH_OPTION,
    device: str = DEVICE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.data import load_catalog
    from stylespace.index.build import add_items

    index, embedding_model = open_index_and_model(index_dir, model, device)
    before = len(index)
    added, failed = add_items(index, embedding_model, load_catalog(catalog_path), ids, replace=replace,
                              batch_size=batch_size, device=device, progress=not as_json, include_blank=include_blank)
    result = {"folder": str(index_dir), "added": added, "before": before, "count": len(index), "failed": failed,
              "blank_left_out": _blank_count(failed), "generation": index.config.generation}

    def render(r: dict) -> None:
        out.print(f"added {added:,} item(s): {before:,} -> {r['count']:,} in {index_dir}")
        _print_left_out(failed)

    emit(result, as_json, render)


@index_app.command("remove", help="Remove items by id without rebuilding.")
def remove_cmd(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="Index folder."),
    ids: list[str] = typer.Argument(..., metavar="ID...", help="Item ids to remove."),
    missing_ok: bool = typer.Option(False, help="Ignore ids that are not in the index."),
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.index import CatalogIndex

    index = CatalogIndex.open(index_dir)
    removed = index.remove(ids, missing_ok=missing_ok)
    result = {"folder": str(index_dir), "removed": removed, "count": len(index), "stale": index.config.stale,
              "generation": index.config.generation}
    emit(result, as_json, lambda r: out.print(f"removed {removed:,} item(s); {r['count']:,} left in {index_dir}"
                                              + (f" ({r['stale']} stale HNSW vectors: run `stylespace index rebuild`)"
                                                 if r["stale"] else "")))


@index_app.command("rebuild", help="Remake the FAISS structure from the stored vectors (compaction), optionally as "
                                   "another kind or metric; ids are kept.")
def rebuild_cmd(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="Index folder."),
    kind: Optional[str] = typer.Option(None, help="exact, ivf or hnsw (default: unchanged)."),
    metric: Optional[str] = typer.Option(None, help="cosine or euclidean (default: unchanged)."),
    nlist: Optional[int] = typer.Option(None, help="IVF cells (0 = automatic)."),
    nprobe: Optional[int] = typer.Option(None, help="IVF cells visited per query."),
    hnsw_m: Optional[int] = typer.Option(None, help="HNSW graph degree."),
    ef_search: Optional[int] = typer.Option(None, help="HNSW search beam width."),
    whiten: Optional[bool] = typer.Option(None, help="Whiten (fitted again on the items held now) or not "
                                                     "(default: unchanged)."),
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.index import CatalogIndex

    started = time.perf_counter()
    index = CatalogIndex.open(index_dir)
    settings = {k: v for k, v in {"nlist": nlist, "nprobe": nprobe, "hnsw_m": hnsw_m, "ef_search": ef_search,
                                  "whiten": whiten}.items() if v is not None}
    index.rebuild(kind=kind, metric=metric, **settings)
    result = _info(index)
    result["seconds"] = round(time.perf_counter() - started, 2)
    result["calibration_outdated"] = bool(index.config.calibration.get("outdated"))
    if result["calibration_outdated"] and not as_json:
        console.print("[yellow]note:[/yellow] the whitening was fitted again or switched, so similarities changed; the saved "
                      "recommendation threshold was calibrated before: run `stylespace calibrate-threshold` again")
    emit(result, as_json, lambda r: out.print(
        f"rebuilt {index_dir}: {r['count']:,} items, {r['kind']}, {r['metric']}"
        + (f", whitened on {r['whitened_items']:,} items" if r["whitened_items"] else "")
        + f" in {r['seconds']:.1f} s"
        + (f"; recall@10 vs exact {r['recall_at_10']:.4f}" if r["recall_at_10"] is not None else "")))


@index_app.command("info", help="What an index holds and how it was made.")
def info_cmd(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="Index folder."),
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.index import CatalogIndex

    result = _info(CatalogIndex.open(index_dir))

    def render(r: dict) -> None:
        for key, value in r.items():
            if key not in ("calibration", "typicality"):
                out.print(f"{key:>20}: {value}")

    emit(result, as_json, render)


def _info(index) -> dict:
    c = index.config
    return {"folder": str(index.folder), "count": c.count, "stale": c.stale, "dim": c.dim, "metric": c.metric,
            "kind": c.kind, "whitened_items": c.whitened_items, "model_id": c.model_id, "model_path": c.model_path,
            "input_size": list(c.input_size),
            "catalog": c.catalog, "metadata_columns": c.metadata_columns, "recall_at_10": c.recall_at_10,
            "view_version": c.view_version, "view_outdated": index.view_outdated, "typicality": c.typicality, "confidence": c.confidence, "threshold": c.threshold, "calibration": c.calibration,
            "generation": c.generation, "updated": c.updated}


# --- stylespace search / recommend ----------------------------------------------------------------------------


def search_cmd(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="Index folder."),
    queries: list[str] = typer.Argument(..., metavar="QUERY...", help="Image files or folders of images (any size), "
                                                                      "or catalog ids with --id."),
    k: int = typer.Option(10, "-k", "--k", help="Items per query."),
    by_id: bool = typer.Option(False, "--id", help="The queries are ids of items in the index."),
    exclude_self: bool = typer.Option(False, "--exclude-self", help="Leave the query item out of its results (an id "
                                                                    "query, or an image file named <id>.<ext>)."),
    where: Optional[list[str]] = typer.Option(None, help="Keep items whose metadata COLUMN=VALUE (repeatable: "
                                                         "values of one column OR, columns AND), e.g. gender=Men."),
    metric: Optional[str] = typer.Option(None, help="Report cosine similarity or euclidean distance (default: the "
                                                    "index's metric)."),
    model: Optional[Path] = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.index import CatalogIndex

    index = CatalogIndex.open(index_dir)
    names, vectors, own_ids = query_vectors(index, queries, by_id, model, device)
    exclude = [[i] for i in own_ids] if exclude_self else None
    started = time.perf_counter()
    results = index.search(vectors, k, exclude_ids=exclude, where=parse_where(where), metric=metric, model_id=None)
    seconds = time.perf_counter() - started
    shown_metric = metric or index.metric
    result = {"index": str(index_dir), "k": k, "metric": shown_metric, "search_seconds": round(seconds, 4),
              "queries": [{"query": name, "hits": [_hit_record(r, h) for r, h in enumerate(hits, 1)]}
                          for name, hits in zip(names, results)]}

    def render(r: dict) -> None:
        score_name = "cosine" if shown_metric == "cosine" else "distance"
        for entry in r["queries"]:
            out.print(_hits_table(f"{entry['query']}: top {len(entry['hits'])}", entry["hits"], score_name))

    emit(result, as_json, render)


def recommend_cmd(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="Index folder (calibrated with calibrate-threshold)."),
    queries: list[str] = typer.Argument(..., metavar="QUERY...", help="Image files or folders, or ids with --id."),
    by_id: bool = typer.Option(False, "--id", help="The queries are ids of items in the index (left out of their "
                                                   "own recommendations)."),
    where: Optional[list[str]] = typer.Option(None, help="Keep items whose metadata COLUMN=VALUE (repeatable)."),
    threshold: Optional[float] = typer.Option(None, help="Override the index's calibrated threshold."),
    score: Optional[str] = typer.Option(None, help="Override the index's confidence score (e.g. top1)."),
    show_all: bool = typer.Option(False, "--all", help="List the items of recommendations below the threshold too."),
    model: Optional[Path] = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.index import CatalogIndex
    from stylespace.recommend import SelectiveRecommender, saved_score

    index = CatalogIndex.open(index_dir)
    recommender = SelectiveRecommender.from_index(index)
    noted = False
    if score is not None or threshold is not None:
        same_score = score in (None, recommender.score_name)
        # a local score can reuse the calibration queries the index saved (for its chosen score)
        chosen = recommender.score if same_score else saved_score(
            score, {}, index.calibration_arrays() if score.startswith("local") else None)
        # a calibrated threshold belongs to its score: another score's values live on another scale
        recommender = SelectiveRecommender(index, chosen, threshold if threshold is not None
                                           else recommender.threshold if same_score else None, recommender.n_items,
                                           recommender.junk)
        if not same_score and threshold is None and index.config.threshold is not None:
            console.print(f"[yellow]note:[/yellow] the index's threshold was calibrated for the "
                          f"{index.config.confidence} score, not {score}; every recommendation is shown (give "
                          "--threshold, or calibrate with --score to choose one)")
            noted = True
    if not recommender.calibrated and not noted:
        console.print("[yellow]note:[/yellow] this index has no calibrated threshold, so every recommendation is "
                      "shown; run `stylespace calibrate-threshold` on labelled queries first")
    names, vectors, own_ids, blank = query_vectors(index, queries, by_id, model, device, with_blank=True)
    exclude = [[i] for i in own_ids] if by_id else None
    recommendations = recommender.recommend(vectors, exclude_ids=exclude, where=parse_where(where), blank=blank)
    result = {"index": str(index_dir), "score": recommender.score_name, "threshold": recommender.threshold,
              "junk": recommender.junk.to_dict(),
              "queries": [{"query": name, "confidence": rec.confidence, "shown": rec.confident,
                           "not_a_product": rec.junk, "reason": rec.reason,
                           "items": [_hit_record(r, h) for r, h in enumerate(rec.items, 1)]
                           if rec.confident or show_all else []}
                          for name, rec in zip(names, recommendations)]}

    def render(r: dict) -> None:
        for entry in r["queries"]:
            verdict = "shown" if entry["shown"] else f"no confident match: {entry['reason']}"
            title = f"{entry['query']}: confidence {entry['confidence']:.4f} ({r['score']}) -> {verdict}"
            if entry["items"]:
                out.print(_hits_table(title, entry["items"], "cosine" if index.metric == "cosine" else "distance"))
            else:
                out.print(title)

    emit(result, as_json, render)


# --- stylespace calibrate-threshold -------------------------------------------------------------------------


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
    from stylespace.index.build import embed_items
    from stylespace.recommend import calibrate

    index, embedding_model = open_index_and_model(index_dir, model, device)
    cat, ids, labels, description = select_items(queries, scenario, part, "query", catalog)
    embeddings, failed = embed_items(embedding_model, cat, ids, batch_size=batch_size, device=device,
                                     progress=not as_json)
    query_labels = [labels[i] for i in embeddings.ids] if labels is not None else embeddings.labels
    if query_labels is None or any(v is None for v in query_labels):
        raise StylespaceError(f"{queries}: calibration queries need labels (a catalog with a label column)")
    calibration = calibrate(index, embeddings, query_labels, query_ids=embeddings.ids, scores=score,
                            target_error=target_error, target_coverage=target_coverage, queries=description)
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

    def render(r: dict) -> None:
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
                  f"{100 * r['coverage']:.1f} % shown, {100 * r['error']:.2f} % wrong; {verdict} {index_dir}/index.json")
        if r["plot"]:
            out.print(f"plot: {r['plot']}")

    emit(result, as_json, render)
