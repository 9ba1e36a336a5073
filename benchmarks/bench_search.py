"""Catalog search on this machine's CPU: index build time, one-query latency (decode + embed + search),
batch search throughput against scikit-learn brute force, and IVF/HNSW recall against exact search.

    .venv/bin/python benchmarks/bench_search.py --model runs/default          # a trained model
    .venv/bin/python benchmarks/bench_search.py                               # an untrained compact model

Targets (issue 5): index build of the 44k catalog <= 2 min; one query image p50 <= 10 ms, p99 <= 30 ms,
embedding included; 1,000 queries >= 2,000 queries/s for the search alone. Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import collections
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CATALOG = ROOT.parent / "shared" / "datasets" / "fashion-product-images-small.zip"


def percentile_ms(seconds: list[float], q: float) -> float:
    return 1000 * float(np.percentile(seconds, q))


def load_or_make_model(path: Path | None):
    """The model to benchmark: ``path``, or an untrained compact model (same architecture and cost)."""
    import torch

    from stylespace.models import ModelConfig, build_model, load_model

    if path is not None:
        return load_model(path).eval(), str(path)
    torch.manual_seed(0)
    return build_model(ModelConfig()).eval(), "untrained compact (ModelConfig defaults)"


def bench_build(model, catalog, folder: Path, batch_size: int, whiten: bool) -> tuple[object, dict]:
    """Time the image cache (cold or warm), embedding and index writing of the whole catalog."""
    from stylespace.data import load_image_array
    from stylespace.embeddings import embed_images
    from stylespace.index import CatalogIndex
    from stylespace.models import model_id

    started = time.perf_counter()
    array = load_image_array(catalog, size=tuple(model.config.input_size), progress=False)
    decode = time.perf_counter() - started
    started = time.perf_counter()
    vectors = embed_images(model, np.array(array.pixels), batch_size=batch_size, device="cpu")
    embed = time.perf_counter() - started
    started = time.perf_counter()
    items = [catalog[i] for i in array.ids]
    index = CatalogIndex.create(folder, array.ids, vectors, model_id=model_id(model), labels=[i.label for i in items],
                                metas=[i.meta for i in items], sources=[i.source for i in items], overwrite=True,
                                input_size=tuple(model.config.input_size), whiten=whiten)
    write = time.perf_counter() - started
    return index, {"items": len(index), "image cache (s)": decode, "cache was": "built" if array.build_seconds else "warm",
                   "embedding (s)": embed, "images/s": len(array.ids) / embed, "index write (s)": write,
                   "total (s)": decode + embed + write}


def bench_single_queries(model, index, catalog, n: int, seed: int, large: bool, engine: str = "auto") -> dict:
    """One query at a time: image bytes -> load_rgb -> embed -> top-10 search, timed per stage. ``engine``:
    what embeds (``auto`` is what `stylespace search` and the service take for one image: ONNX Runtime
    where it is installed)."""
    from PIL import Image

    from stylespace.inference import make_embedder

    from stylespace.data import load_rgb

    rng = np.random.default_rng(seed)
    ids = [index.ids[i] for i in rng.choice(len(index), n, replace=False)]
    payloads = [catalog.read_bytes(catalog[i]) for i in ids]
    if large:  # the same products as 1800 x 2400 JPEG photos, as a phone would send them
        def enlarge(data: bytes) -> bytes:
            buffer = io.BytesIO()
            Image.open(io.BytesIO(data)).convert("RGB").resize((1800, 2400), Image.Resampling.BICUBIC).save(
                buffer, format="JPEG", quality=90)
            return buffer.getvalue()
        payloads = [enlarge(p) for p in payloads]
    size = tuple(model.config.input_size)
    decode, embed, search, total = [], [], [], []
    embedder = make_embedder(model, engine=engine, images=1)
    for warmup in payloads[:5]:
        embedder(load_rgb(warmup, size)[None])
    for data in payloads:
        t0 = time.perf_counter()
        pixels = load_rgb(data, size)
        t1 = time.perf_counter()
        vector = embedder(pixels[None])
        t2 = time.perf_counter()
        index.search(vector, 10)
        t3 = time.perf_counter()
        decode.append(t1 - t0)
        embed.append(t2 - t1)
        search.append(t3 - t2)
        total.append(t3 - t0)
    return {stage: (percentile_ms(values, 50), percentile_ms(values, 99))
            for stage, values in (("decode", decode), ("embed", embed), ("search", search), ("total", total))}


def bench_batch(index, vectors: np.ndarray, k: int, repeats: int) -> dict:
    """Queries/s for a batch of queries: FAISS through CatalogIndex (ids only, and with Hit records), raw
    FAISS, and scikit-learn NearestNeighbors brute force (what seed 001 used), in the same run."""
    from sklearn.neighbors import NearestNeighbors

    from stylespace.index import structures

    queries = vectors
    prepared = structures.prepare_vectors(queries, "cosine")
    all_vectors = index.vectors_of_keys(np.sort(index.keys_of(index.ids)))

    def rate(fn) -> float:
        fn()  # warm up
        best = min(_timed(fn) for _ in range(repeats))
        return len(queries) / best

    sklearn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(all_vectors)
    return {
        "CatalogIndex.neighbours (exact)": rate(lambda: index.neighbours(prepared, k, prepared=True)),
        "CatalogIndex.search (+ ids, metadata)": rate(lambda: index.search(prepared, k)),
        "raw FAISS structure": rate(lambda: index.structure.search(prepared, k)),
        "sklearn NearestNeighbors brute (cosine)": rate(lambda: sklearn.kneighbors(queries, k)),
    }


def bench_whitening_cost(index, queries: np.ndarray, folder: Path, k: int, rounds: int = 5) -> list[dict]:
    """Interleaved A/B on the same vectors: a plain and a whitened exact index, a batch of ``queries`` on one
    and two FAISS threads ($STYLESPACE_SEARCH_THREADS) and one query at a time (p50 of 100); the median over
    ``rounds``, so that a noisy machine moves both sides alike."""
    from stylespace.index import CatalogIndex, structures

    ids = index.ids
    vectors = index.vectors(ids)
    built = {whiten: CatalogIndex.create(folder / f"ab-{whiten}", ids, vectors, model_id=index.model_id,
                                         overwrite=True, whiten=whiten) for whiten in (False, True)}
    prepared = structures.prepare_vectors(queries, "cosine")
    measured = collections.defaultdict(list)
    previous = os.environ.get("STYLESPACE_SEARCH_THREADS")
    try:
        for _ in range(rounds):
            for whiten, candidate in built.items():
                for threads in (1, 2):
                    os.environ["STYLESPACE_SEARCH_THREADS"] = str(threads)
                    seconds = _timed(lambda: candidate.neighbours(prepared, k, prepared=True))
                    measured[whiten, f"batch q/s, {threads} thread(s)"].append(len(prepared) / seconds)
                singles = [_timed(lambda: candidate.neighbours(prepared[i:i + 1], k, prepared=True)) for i in range(100)]
                measured[whiten, "one query p50 (ms)"].append(1000 * float(np.median(singles)))
    finally:
        if previous is None:
            os.environ.pop("STYLESPACE_SEARCH_THREADS", None)
        else:
            os.environ["STYLESPACE_SEARCH_THREADS"] = previous
    names = sorted({name for _, name in measured})
    return [{"measure": name, **{("whitened" if w else "plain"): float(np.median(measured[w, name])) for w in built}}
            for name in names]


def bench_approximate(index, query_ids: list[str], folder: Path, k: int) -> list[dict]:
    """IVF and HNSW over the catalog minus ``query_ids``, queried with those held-out items (unseen, like new
    photos): build time, recall@k against exact search over the same items, queries/s."""
    from stylespace.index import CatalogIndex, recall_at_k

    held_out = set(query_ids)
    base_ids = [i for i in index.ids if i not in held_out]
    base = index.vectors(base_ids)
    queries = index.vectors(query_ids)
    whiten = index.config.whiten  # as the benchmarked index: whitened (fitted on the base items) or not
    exact = CatalogIndex.create(folder / "exact-base", base_ids, base, model_id=index.model_id, overwrite=True,
                                whiten=whiten)
    truth = exact.neighbours(queries, k, prepared=True).keys
    rows = []
    for kind, settings in (("ivf", {"nprobe": 8}), ("ivf", {"nprobe": 16}), ("ivf", {"nprobe": 64}),
                           ("hnsw", {"ef_search": 64}), ("hnsw", {"ef_search": 128}), ("hnsw", {"ef_search": 256})):
        started = time.perf_counter()
        approximate = CatalogIndex.create(folder / kind, base_ids, base, model_id=index.model_id, kind=kind,
                                          overwrite=True, measure_recall=False, whiten=whiten, **settings)
        build = time.perf_counter() - started
        started = time.perf_counter()
        found = approximate.neighbours(queries, k, prepared=True).keys
        seconds = time.perf_counter() - started
        # both indexes were given the same ids in the same order, so their keys agree; check rather than assume
        assert (approximate.keys_of(base_ids[:100]) == exact.keys_of(base_ids[:100])).all()
        rows.append({"kind": kind, "settings": ", ".join(f"{name}={value}" for name, value in settings.items()),
                     "build (s)": build, "recall": recall_at_k(found, truth), "queries/s": len(queries) / seconds})
    return rows


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder (default: an untrained compact model)")
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--queries", type=int, default=300, help="single-query latency samples")
    parser.add_argument("--batch", type=int, default=1000, help="queries in the throughput batch")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass when indexing")
    parser.add_argument("--threads", type=int, default=0, help="torch threads when indexing (0 = torch's default)")
    parser.add_argument("--query-threads", type=int, default=1,
                        help="torch threads for one query at a time (1: a single small image gains nothing from more)")
    parser.add_argument("--engine", default="auto", help="what embeds single queries: auto (as search and the "
                                                         "service: ONNX Runtime where installed), torch or onnx")
    parser.add_argument("--skip-approximate", action="store_true")
    parser.add_argument("--no-whiten", action="store_true", help="index without whitening (the default whitens, "
                                                                 "as `stylespace index` does)")
    parser.add_argument("--index", type=Path, help="reuse the index in this folder (same model), or build into it "
                                                   "and keep it (default: build into a temporary folder)")
    args = parser.parse_args()

    import torch

    from stylespace.data import load_catalog

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.catalog.is_file() and not args.catalog.is_dir():
        print(f"catalog not found: {args.catalog}", file=sys.stderr)
        return 2
    model, model_name = load_or_make_model(args.model)
    catalog = load_catalog(args.catalog)
    load = os.getloadavg()[0]
    print(f"## Catalog search benchmark\n\nmodel: {model_name}; catalog: {args.catalog.name} ({len(catalog):,} items); "
          f"CPU: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"load average at start {load:.1f}; whitening {'off' if args.no_whiten else 'on'}\n")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.index is not None and (args.index / "index.json").is_file():
            from stylespace.index import CatalogIndex
            from stylespace.models import model_id

            index = CatalogIndex.open(args.index)
            index.check_model(model_id(model), f"the benchmark model {model_name}")
            print(f"(index build skipped: reusing {args.index})\n")
        else:
            index, build = bench_build(model, catalog, args.index or folder / "exact", args.batch_size,
                                       not args.no_whiten)
            print("### Index build (target: <= 120 s for the 44k catalog)\n")
            print("| items | image cache (s) | embedding (s) | images/s | index write (s) | total (s) |")
            print("| ---: | ---: | ---: | ---: | ---: | ---: |")
            print(f"| {build['items']:,} | {build['image cache (s)']:.1f} ({build['cache was']}) "
                  f"| {build['embedding (s)']:.1f} | {build['images/s']:.0f} | {build['index write (s)']:.1f} "
                  f"| {build['total (s)']:.1f} |\n")

        print("### One query image: decode + embed + top-10 search (targets: p50 <= 10 ms, p99 <= 30 ms)\n")
        print("| query | decode p50/p99 (ms) | embed p50/p99 (ms) | search p50/p99 (ms) | total p50/p99 (ms) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        build_threads = torch.get_num_threads()
        torch.set_num_threads(args.query_threads)
        for large in (False, True):
            timing = bench_single_queries(model, index, catalog, args.queries, 0, large, args.engine)
            name = "1800x2400 JPEG photo" if large else "catalog WebP (60x80)"
            print(f"| {name} | " + " | ".join(f"{p50:.2f} / {p99:.2f}" for p50, p99 in timing.values()) + " |")
        print(f"\n(embedding engine for single queries: {args.engine}; torch threads: {args.query_threads})\n")
        torch.set_num_threads(build_threads)

        all_ids = index.ids
        query_ids = [all_ids[i] for i in np.random.default_rng(1).choice(len(all_ids), args.batch, replace=False)]
        queries = index.vectors(query_ids)
        print(f"### Batch of {args.batch:,} queries, top-10, search only (target: >= 2,000 queries/s)\n")
        print("| method | queries/s |")
        print("| --- | ---: |")
        for method, qps in bench_batch(index, queries, 10, 3).items():
            print(f"| {method} | {qps:,.0f} |")
        print()
        print("### Whitening's own cost: the same vectors plain and whitened, interleaved, median of 5 rounds\n")
        print("| | plain | whitened |")
        print("| --- | ---: | ---: |")
        for row in bench_whitening_cost(index, queries, folder, 10):
            print(f"| {row['measure']} | {row['plain']:,.2f} | {row['whitened']:,.2f} |")
        print()
        if not args.skip_approximate:
            print(f"### Approximate kinds against exact search ({args.batch:,} held-out items as queries over the "
                  f"other {len(index) - args.batch:,}, top-10)\n")
            print("| kind | settings | build (s) | recall@10 | queries/s |")
            print("| --- | --- | ---: | ---: | ---: |")
            for row in bench_approximate(index, query_ids, folder, 10):
                print(f"| {row['kind']} | {row['settings']} | {row['build (s)']:.1f} | {row['recall']:.4f} "
                      f"| {row['queries/s']:,.0f} |")
            print()
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
