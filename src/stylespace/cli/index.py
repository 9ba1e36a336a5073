"""`stylespace index`: build an index folder, and change one (add, remove, rebuild) or describe it (info)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from stylespace.cli._options import (BATCH_OPTION, DEVICE_OPTION, INCLUDE_BLANK_OPTION, JSON_OPTION, MODEL_OPTION,
                                     RAY_ADDRESS_OPTION, RAY_GPUS_OPTION, RAY_OPTION, RAY_WORKERS_OPTION,
                                     blank_count, given, print_left_out, ray_config, setting, with_engine)
from stylespace.cli._output import console, emit, out
from stylespace.index.config import IndexSettings
from stylespace.utils import METRICS


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


# --- stylespace index ... --------------------------------------------------------------------------------


@index_app.command("build", help="Embed a catalog with a model and write an index folder (the default subcommand: "
                                 "`stylespace index MODEL CATALOG -o DIR`).")
@with_engine
def build_cmd(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Model folder (model.safetensors + model.json)."),
    catalog_path: Path = typer.Argument(..., metavar="CATALOG", help="Catalog (Kaggle zip/folder, image tree, manifest) "
                                                                     "or a split manifest CSV."),
    output: Path = typer.Option(..., "-o", "--output", help="Index folder to write."),
    kind: Optional[str] = setting(IndexSettings, "kind", help="exact, ivf or hnsw (approximate, for millions of "
                                  "items), or ivf-pq / hnsw-sq8 (compressed, re-ranked exactly: tens of millions)."),
    backend: Optional[str] = setting(IndexSettings, "backend", help="faiss (embedded in the index folder) or milvus "
                                     "(a Milvus Lite file or a Milvus server / cluster at --uri)."),
    uri: Optional[str] = setting(IndexSettings, "uri", help="With --backend milvus: a Milvus Lite file "
                                 "(./catalog.db) or a server (http://host:19530)."),
    collection: Optional[str] = setting(IndexSettings, "collection", shown="from the folder name",
                                        help="With --backend milvus: the collection."),
    metric: Optional[str] = setting(IndexSettings, "metric", help=f"{' or '.join(METRICS)}."),
    scenario: Optional[int] = typer.Option(None, help="With a split manifest: index the support set of scenario N "
                                                      "(default 4: main + new support)."),
    part: Optional[list[str]] = typer.Option(None, help="With a split manifest: index these GROUP/SPLIT rows "
                                                        "instead (repeatable), e.g. main/support."),
    catalog: Optional[Path] = typer.Option(None, help="With a split manifest: the catalog its ids refer to "
                                                      "(default: the one recorded in the manifest)."),
    nlist: Optional[int] = setting(IndexSettings, "nlist", help="IVF cells (0 = about 4 sqrt(N))."),
    nprobe: Optional[int] = setting(IndexSettings, "nprobe", help="IVF cells visited per query."),
    hnsw_m: Optional[int] = setting(IndexSettings, "hnsw_m", help="HNSW graph degree."),
    ef_search: Optional[int] = setting(IndexSettings, "ef_search", help="HNSW search beam width."),
    pq_m: Optional[int] = setting(IndexSettings, "pq_m", help="ivf-pq: bytes per vector (sub-quantisers; 0 = D / 8)."),
    rerank: Optional[int] = setting(IndexSettings, "rerank", help="ivf-pq / hnsw-sq8: candidates per result "
                                    "re-ranked with exact vectors."),
    whiten: Optional[bool] = setting(IndexSettings, "whiten", "--whiten/--no-whiten", help="Whiten the vectors "
                                     "with a PCA fitted on this catalog (no labels needed; needs 4 items per "
                                     "dimension): better neighbours and confidence."),
    search_dims: Optional[int] = setting(IndexSettings, "search_dims", "--search-dims", metavar="N",
                                         help="Search only the top N whitened dimensions (the whitening's PCA "
                                              "keeps N components; needs --whiten): faster searches; the full "
                                              "vectors are kept. 0 = every dimension the model gives."),
    overwrite: bool = typer.Option(False, help="Replace an index already in the output folder."),
    include_blank: bool = INCLUDE_BLANK_OPTION,
    batch_size: int = BATCH_OPTION,
    device: str = DEVICE_OPTION,
    ray: bool = RAY_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    ray_workers: Optional[int] = RAY_WORKERS_OPTION,
    ray_gpus: Optional[float] = RAY_GPUS_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.data.selection import select_items
    from stylespace.index.build import build_index
    from stylespace.index.queries import index_summary
    from stylespace.models import load_model
    from stylespace.utils import pick_device

    started = time.perf_counter()
    model = load_model(model_path, device=pick_device(device))
    selection = select_items(catalog_path, scenario, part, "support", catalog)
    index, failed = build_index(model, selection.catalog, output, ids=selection.ids, labels=selection.labels,
                                model_path=model_path, overwrite=overwrite, batch_size=batch_size, device=device,
                                progress=not as_json, include_blank=include_blank,
                                ray=ray_config(ray, ray_address, ray_workers, ray_gpus),
                                **given(kind=kind, metric=metric, whiten=whiten, nlist=nlist, nprobe=nprobe,
                                        hnsw_m=hnsw_m, ef_search=ef_search, backend=backend, uri=uri,
                                        collection=collection, pq_m=pq_m, rerank=rerank, search_dims=search_dims))
    result = index_summary(index)
    result.update({"source": selection.description, "failed": failed, "blank_left_out": blank_count(failed),
                   "seconds": round(time.perf_counter() - started, 2)})

    def render(r: dict) -> None:
        out.print(f"indexed {r['count']:,} items of {r['source']} into [bold]{r['folder']}[/bold] "
                  f"({r['backend']}, {r['kind']}, {r['metric']}, model {r['model_id']}) in {r['seconds']:.1f} s")
        if r["recall_at_10"] is not None:
            out.print(f"recall@10 against exact search: {r['recall_at_10']:.4f}")
        if r["search_dims"]:
            out.print(f"searching the top {r['search_dims']} of {r['dim']} whitened dimensions")
        if index.config.whiten and not r["whitened_items"]:
            out.print(f"not whitened: {r['count']:,} items are too few for {r['dim']} dimensions "
                      "(whitening needs 4 items per dimension)")
        print_left_out(failed)

    emit(result, as_json, render)


@index_app.command("add", help="Embed catalog items and add them without rebuilding (new stock).")
@with_engine
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
    ray: bool = RAY_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    ray_workers: Optional[int] = RAY_WORKERS_OPTION,
    ray_gpus: Optional[float] = RAY_GPUS_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.data import load_catalog
    from stylespace.index import CatalogIndex
    from stylespace.index.build import add_items
    from stylespace.index.queries import open_query_model

    index = CatalogIndex.open(index_dir)
    embedding_model = open_query_model(index, model, device)
    before = len(index)
    added, failed = add_items(index, embedding_model, load_catalog(catalog_path), ids, replace=replace,
                              batch_size=batch_size, device=device, progress=not as_json, include_blank=include_blank,
                              ray=ray_config(ray, ray_address, ray_workers, ray_gpus))
    result = {"folder": str(index_dir), "added": added, "before": before, "count": len(index), "failed": failed,
              "blank_left_out": blank_count(failed), "generation": index.marker.generation,
              "revision": index.marker.revision}

    def render(r: dict) -> None:
        out.print(f"added {added:,} item(s): {before:,} -> {r['count']:,} in {index_dir}")
        print_left_out(failed)

    emit(result, as_json, render)


@index_app.command("remove", help="Remove items by id without rebuilding (what DELETE /items/{id} does).")
def remove_cmd(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="Index folder."),
    ids: list[str] = typer.Argument(..., metavar="ID...", help="Item ids to remove."),
    missing_ok: bool = typer.Option(False, help="Ignore ids that are not in the index."),
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.index import CatalogIndex
    from stylespace.index.writes import remove_items

    index = CatalogIndex.open(index_dir)
    written = remove_items(index, ids, missing_ok=missing_ok)
    removed = len(written.removed)
    result = {"folder": str(index_dir), "removed": removed, "count": len(index), "stale": index.config.stale,
              "generation": written.generation, "revision": written.revision, "unchanged": written.unchanged}
    emit(result, as_json, lambda r: out.print(f"removed {removed:,} item(s); {r['count']:,} left in {index_dir}"
                                              + (f" ({r['stale']} stale HNSW vectors: run `stylespace index rebuild`)"
                                                 if r["stale"] else "")))


@index_app.command("put", help="Add an item from an image file, or put it again under its id (what POST /items "
                               "does): decoded, embedded by the index's model, kept in the index folder.")
@with_engine
def put_cmd(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="Index folder."),
    image: Path = typer.Argument(..., metavar="IMAGE", help="The item's image file."),
    item_id: Optional[str] = typer.Option(None, "--id", help="The item's id (default: made from the image and "
                                                             "metadata, the same each time)."),
    label: Optional[str] = typer.Option(None, help="Its label (article type)."),
    meta: Optional[list[str]] = typer.Option(None, "--meta", help="A metadata column as NAME=VALUE (repeatable)."),
    model: Optional[Path] = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.index import CatalogIndex
    from stylespace.index.queries import open_query_model
    from stylespace.index.writes import put_images
    from stylespace.utils import StylespaceError

    if not image.is_file():
        raise StylespaceError(f"{image}: no such image file")
    index = CatalogIndex.open(index_dir)
    written = put_images(index, open_query_model(index, model, device), [image.read_bytes()], [item_id],
                         labels=[label], metas=[_columns(meta or [], "--meta")], device=device)
    result = {"folder": str(index_dir), **written.to_dict(), "count": len(index)}
    emit(result, as_json, lambda r: out.print(_fates(r) + f"; {r['count']:,} items in {index_dir} (revision "
                                              f"{r['revision']})"))


@index_app.command("set", help="Change an item's label or metadata (what PATCH /items/{id} does); its image and "
                               "vector stay.")
def set_cmd(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="Index folder."),
    item_id: str = typer.Argument(..., metavar="ID", help="The item's id."),
    label: Optional[str] = typer.Option(None, help="Its new label."),
    meta: Optional[list[str]] = typer.Option(None, "--meta", help="Set a metadata column: NAME=VALUE (repeatable)."),
    unset: Optional[list[str]] = typer.Option(None, "--unset", help="Remove a metadata column (repeatable)."),
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.index import CatalogIndex
    from stylespace.index.writes import ItemPatch, update_items

    columns: dict[str, str | None] = {**_columns(meta or [], "--meta"), **{name: None for name in unset or []}}
    index = CatalogIndex.open(index_dir)
    written = update_items(index, {item_id: ItemPatch(columns, label, set_label=label is not None)})
    result = {"folder": str(index_dir), **written.to_dict()}
    emit(result, as_json, lambda r: out.print(_fates(r) + f" (revision {r['revision']})"))


def _columns(pairs: list[str], option: str) -> dict[str, str]:
    from stylespace.utils import StylespaceError

    columns = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise StylespaceError(f"{option} takes NAME=VALUE, got {pair!r}")
        columns[name] = value
    return columns


def _fates(result: dict) -> str:
    done = [f"{what} {', '.join(result[what])}" for what in ("created", "replaced", "updated", "removed", "unchanged")
            if result[what]]
    return "; ".join(done) or "nothing to do"


@index_app.command("rebuild", help="Remake the FAISS structure from the stored vectors (compaction), optionally as "
                                   "another kind or metric; ids are kept.")
def rebuild_cmd(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="Index folder."),
    kind: Optional[str] = typer.Option(None, help="exact, ivf, hnsw, ivf-pq or hnsw-sq8 (default: unchanged)."),
    metric: Optional[str] = typer.Option(None, help=f"{' or '.join(METRICS)} (default: unchanged)."),
    nlist: Optional[int] = typer.Option(None, help="IVF cells (0 = automatic)."),
    nprobe: Optional[int] = typer.Option(None, help="IVF cells visited per query."),
    hnsw_m: Optional[int] = typer.Option(None, help="HNSW graph degree."),
    ef_search: Optional[int] = typer.Option(None, help="HNSW search beam width."),
    pq_m: Optional[int] = typer.Option(None, help="ivf-pq: bytes per vector (0 = D / 8)."),
    rerank: Optional[int] = typer.Option(None, help="ivf-pq / hnsw-sq8: candidates per result re-ranked exactly."),
    whiten: Optional[bool] = typer.Option(None, help="Whiten (fitted again on the items held now) or not "
                                                     "(default: unchanged)."),
    search_dims: Optional[int] = typer.Option(None, "--search-dims", metavar="N",
                                              help="Search only the top N whitened dimensions (0 = every one; "
                                                   "default: unchanged)."),
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.index import CatalogIndex
    from stylespace.index.queries import index_summary
    from stylespace.recommend import calibration_summary

    started = time.perf_counter()
    index = CatalogIndex.open(index_dir)
    settings = {k: v for k, v in {"nlist": nlist, "nprobe": nprobe, "hnsw_m": hnsw_m, "ef_search": ef_search,
                                  "pq_m": pq_m, "rerank": rerank, "whiten": whiten,
                                  "search_dims": search_dims}.items() if v is not None}
    index.rebuild(kind=kind, metric=metric, **settings)
    result = index_summary(index)
    result["seconds"] = round(time.perf_counter() - started, 2)
    result.update(calibration_summary(index))
    if result["calibration_outdated"] and not as_json:
        console.print("[yellow]note:[/yellow] the rebuild moved similarities (the whitening was fitted again or switched, "
                      "or the metric changed); the saved recommendation threshold was calibrated before: run "
                      "`stylespace calibrate-threshold` again")
    emit(result, as_json, lambda r: out.print(
        f"rebuilt {index_dir}: {r['count']:,} items, {r['kind']}, {r['metric']}"
        + (f", whitened on {r['whitened_items']:,} items" if r["whitened_items"] else "")
        + (f", searching {r['search_dims']} of {r['dim']} dimensions" if r["search_dims"] else "")
        + f" in {r['seconds']:.1f} s"
        + (f"; recall@10 vs exact {r['recall_at_10']:.4f}" if r["recall_at_10"] is not None else "")))


@index_app.command("info", help="What an index holds and how it was made.")
def info_cmd(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="Index folder."),
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.index import CatalogIndex
    from stylespace.index.queries import index_summary
    from stylespace.recommend import calibration_summary

    index = CatalogIndex.open(index_dir)
    result = index_summary(index) | calibration_summary(index)

    def render(r: dict) -> None:
        for key, value in r.items():
            if key not in ("calibration", "typicality"):
                out.print(f"{key:>20}: {value}")

    emit(result, as_json, render)
