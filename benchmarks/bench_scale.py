"""Index scaling on this machine: build time, peak memory, folder size, add / remove cost, single-query p50 / p99,
batch throughput and recall@10 per kind and backend, for synthetic catalogs of 50k, 1M and 10M vectors.

    flock /tmp/stylespace-heavy.lock nice -n 5 .venv/bin/python benchmarks/bench_scale.py \\
        --sizes 50000 1000000 --kinds exact ivf hnsw ivf-pq hnsw-sq8 --milvus 50000
    flock /tmp/stylespace-heavy.lock nice -n 5 .venv/bin/python benchmarks/bench_scale.py --sizes 10000000 \\
        --kinds ivf-pq --nlist 4096

Targets (issue 14): adding 10 items or removing 1 from a 1,000,000-item index <= 0.5 s; the index folder
<= 1.3 x the raw vectors; at 10M, p50 <= 10 ms at recall@10 >= 0.95 in <= 4 GB.

The vectors are 256-d, like the default model's, with the low intrinsic dimension of real embeddings: 4,096
cluster centres on the unit sphere, each item its centre plus a variation in a shared 32-d subspace (norm
about 0.57) plus a little isotropic noise (norm about 0.32). Random points on the sphere have no
neighbourhoods (every approximate index does badly on them, and real embeddings are nothing like them). They are generated chunk by chunk into
a file (never held in memory at 10M) and read back in chunks by each run. Every (size, kind, backend) runs
in its own process, so its peak memory is its own: ``peak anon`` is the process's own memory (what must fit
in RAM), ``peak RSS`` also counts the pages of the index's vector file mapped in (page cache, reclaimable).
Prints one Markdown table and writes the rows as JSON (--json).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIM = 256
CLUSTERS = 4096
CHUNK = 100_000
MODEL = "synthetic"


# --- the synthetic catalog --------------------------------------------------------------------------------------


def centres() -> np.ndarray:
    rng = np.random.default_rng(12345)
    c = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def subspace() -> np.ndarray:
    """(32, D) orthonormal directions in which items of a cluster vary."""
    basis, _ = np.linalg.qr(np.random.default_rng(54321).standard_normal((DIM, 32)))
    return basis.T.astype(np.float32)


def chunk_vectors(index: int, n: int) -> np.ndarray:
    """Rows [index * CHUNK, index * CHUNK + n) of the catalog: deterministic per chunk."""
    rng = np.random.default_rng(1000 + index)
    variation = rng.standard_normal((n, 32)).astype(np.float32) @ subspace()
    noise = rng.standard_normal((n, DIM), dtype=np.float32)
    return (centres()[rng.integers(0, CLUSTERS, n)] + 0.1 * variation + 0.02 * noise).astype(np.float32)


def dataset(size: int, folder: Path) -> Path:
    """The first ``size`` rows written to ``folder/vectors-<size>.f32`` (once; chunk by chunk)."""
    path = folder / f"vectors-{size}.f32"
    if path.is_file() and path.stat().st_size == size * DIM * 4:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as handle:
        for i, start in enumerate(range(0, size, CHUNK)):
            handle.write(chunk_vectors(i, min(CHUNK, size - start)).tobytes())
    os.replace(temporary, path)
    return path


class FileVectors:
    """An (N, D) array-like over a float32 file, read slice by slice with plain reads (never mapped)."""

    def __init__(self, path: Path, n: int):
        self.path, self.shape = path, (n, DIM)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, item):
        start, stop, _ = item.indices(self.shape[0])
        count = max(0, stop - start)
        return np.fromfile(self.path, dtype=np.float32, count=count * DIM, offset=start * DIM * 4).reshape(count, DIM)


# --- one run (in its own process) -------------------------------------------------------------------------------


class MemoryWatch:
    """Peak anonymous memory and RSS of this process, sampled every 20 ms from /proc/self/status."""

    def __init__(self):
        self.anon = self.rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            fields = {}
            with open("/proc/self/status") as handle:
                for line in handle:
                    name, _, value = line.partition(":")
                    if name in ("RssAnon", "VmRSS"):
                        fields[name] = int(value.split()[0]) * 1024
            self.anon = max(self.anon, fields.get("RssAnon", 0))
            self.rss = max(self.rss, fields.get("VmRSS", 0))
            self._stop.wait(0.02)

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._thread.join()
        return self.anon, self.rss


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def one_run(size: int, kind: str, backend: str, data: Path, work: Path, settings: dict) -> dict:
    from stylespace.index import CatalogIndex

    watch = MemoryWatch()
    folder = work / f"index-{backend}-{kind}-{size}"
    shutil.rmtree(folder, ignore_errors=True)
    extra = dict(settings)
    if backend == "milvus":
        extra["uri"] = str(work / f"milvus-{kind}-{size}.db")
        Path(extra["uri"]).unlink(missing_ok=True)
    vectors = FileVectors(data, size)
    if backend == "milvus":  # pymilvus takes Python lists: the vectors are in memory anyway
        vectors = vectors[0:size]
    ids = [str(i) for i in range(size)]
    metas = [{"gender": ("Men", "Women", "Unisex", "Girls")[i % 4]} for i in range(size)]
    started = time.perf_counter()
    index = CatalogIndex.create(folder, ids, vectors, model_id=MODEL, kind=kind, metas=metas, backend=backend, **extra)
    build = time.perf_counter() - started
    del metas, ids

    fresh = chunk_vectors(10_000 + size // CHUNK, 1000)
    add_seconds, remove_seconds, refresh_seconds = [], [], []
    reader = CatalogIndex.open(folder)
    for r in range(5):
        started = time.perf_counter()
        index.add([f"new-{r}-{i}" for i in range(10)], fresh[10 * r:10 * r + 10], model_id=MODEL)
        add_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        index.remove([str(r * 7)])
        remove_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        reader.refresh()
        refresh_seconds.append(time.perf_counter() - started)
    assert len(reader) == len(index) == size + 45
    started = time.perf_counter()
    reopened = CatalogIndex.open(folder)
    open_seconds = time.perf_counter() - started
    reopened.close()

    queries = chunk_vectors(20_000, 1000)
    index.search(queries[:5], k=10)  # warm up
    single = []
    for q in queries[:200]:
        started = time.perf_counter()
        index.search(q[None, :], k=10)
        single.append(time.perf_counter() - started)
    started = time.perf_counter()
    index.search(queries, k=10)
    batch_seconds = time.perf_counter() - started
    filtered = []
    for q in queries[:50]:
        started = time.perf_counter()
        index.search(q[None, :], k=10, where={"gender": "Girls"})
        filtered.append(time.perf_counter() - started)
    anon, rss = watch.stop()
    return {"size": size, "kind": kind, "backend": backend, "settings": settings, "build_s": build,
            "peak_anon_gb": anon / 1e9, "peak_rss_gb": rss / 1e9,
            "folder_gb": (folder_bytes(folder) + (Path(extra["uri"]).stat().st_size if backend == "milvus" else 0)
                          + sum(folder_bytes(p) for p in work.glob(f"milvus-{kind}-{size}.db*") if p.is_dir())) / 1e9,
            "raw_gb": size * DIM * 4 / 1e9, "add10_s": float(np.median(add_seconds)),
            "remove1_s": float(np.median(remove_seconds)), "refresh_s": float(np.median(refresh_seconds)),
            "open_s": open_seconds, "p50_ms": 1000 * float(np.percentile(single, 50)),
            "p99_ms": 1000 * float(np.percentile(single, 99)),
            "filtered_p50_ms": 1000 * float(np.percentile(filtered, 50)),
            "batch_qps": len(queries) / batch_seconds, "recall_at_10": index.config.recall_at_10}


# --- orchestration ---------------------------------------------------------------------------------------------


def table(rows: list[dict]) -> str:
    lines = ["| backend | kind | items | build | peak anon / RSS | folder (x raw) | add 10 | remove 1 | reader refresh "
             "| open | 1 query p50 / p99 | filtered p50 | 1,000 queries | recall@10 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['kind']} | {r['size']:,} | failed: {r['error']} |")
            continue
        recall = "1 (exact)" if r["recall_at_10"] is None else f"{r['recall_at_10']:.3f}"
        lines.append(
            f"| {r['backend']} | {r['kind']} | {r['size']:,} | {r['build_s']:.1f} s | {r['peak_anon_gb']:.2f} / "
            f"{r['peak_rss_gb']:.2f} GB | {r['folder_gb']:.2f} GB ({r['folder_gb'] / r['raw_gb']:.2f}) | "
            f"{1000 * r['add10_s']:.1f} ms | {1000 * r['remove1_s']:.1f} ms | {1000 * r['refresh_s']:.1f} ms | "
            f"{r['open_s']:.2f} s | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms | {r['filtered_p50_ms']:.1f} ms | "
            f"{r['batch_qps']:,.0f} q/s | {recall} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 1_000_000])
    parser.add_argument("--kinds", nargs="+", default=["exact", "ivf", "hnsw", "ivf-pq", "hnsw-sq8"])
    parser.add_argument("--milvus", type=int, nargs="*", default=[], help="Sizes also run on Milvus Lite.")
    parser.add_argument("--milvus-kinds", nargs="+", default=["exact", "hnsw-sq8"])
    parser.add_argument("--nlist", type=int, default=0, help="IVF cells (0 = about 4 sqrt(N)).")
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--rerank", type=int, default=20)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_scale")
    parser.add_argument("--json", type=Path, default=None, help="Also write the rows here.")
    parser.add_argument("--one", nargs=3, metavar=("SIZE", "KIND", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = {"nprobe": args.nprobe, "rerank": args.rerank, **({"nlist": args.nlist} if args.nlist else {})}
    if args.one:
        size, kind, backend = int(args.one[0]), args.one[1], args.one[2]
        row = one_run(size, kind, backend, dataset(size, args.work), args.work, settings)
        print("ROW " + json.dumps(row), flush=True)
        return
    runs = [(s, k, "faiss") for s in args.sizes for k in args.kinds]
    runs += [(s, k, "milvus") for s in args.milvus for k in args.milvus_kinds]
    rows = []
    for size, kind, backend in runs:
        if size >= 5_000_000 and kind in ("exact", "ivf", "hnsw"):
            print(f"skipping {kind} at {size:,}: its vectors do not fit in memory twice", file=sys.stderr)
            continue
        dataset(size, args.work)
        command = [sys.executable, __file__, "--one", str(size), kind, backend, "--work", str(args.work),
                   "--nprobe", str(args.nprobe), "--rerank", str(args.rerank), "--nlist", str(args.nlist)]
        print(f"{backend} {kind} {size:,} ...", file=sys.stderr, flush=True)
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        found = [line[4:] for line in done.stdout.splitlines() if line.startswith("ROW ")]
        if done.returncode or not found:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append({"size": size, "kind": kind, "backend": backend, "error": tail[:200]})
        else:
            rows.append(json.loads(found[0]))
        print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
        shutil.rmtree(args.work / f"index-{backend}-{kind}-{size}", ignore_errors=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
