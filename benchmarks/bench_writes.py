"""The write API under measurement: one item added or removed through HTTP, and a soak of writes under
search load with several workers.

    .venv/bin/python benchmarks/bench_writes.py latency --items 44000 1000000     # add / remove p50 by size
    .venv/bin/python benchmarks/bench_writes.py soak --items 44000 --seconds 300 --workers 2

Each size gets an *exact embedded* index of that many items (random unit vectors of the model's width,
made once into ``--work`` and reused; ``--index DIR`` uses a copy of a real one instead), a write key,
and `stylespace serve` in a child process (so clients never share a GIL with the server).

``latency``: one client adds ``--adds`` items one at a time (POST /items: a product photo uploaded,
decoded, embedded by ``--model``, committed), then removes them one at a time (DELETE /items/{id});
reports each one's p50 / p90 / p99 as the client saw it (answered once committed).

``soak``: ``--workers`` server processes; first a read-only phase, then a write phase, each ``--seconds``:
``--clients`` search clients (in ``--client-processes`` processes, bench_service's load generator) post
product photos to /search back to back, and in the write phase a writer adds ``--add-rate`` items and
removes ``--remove-rate`` a second. A poller reads /stats over fresh connections (so every worker is
asked) throughout both phases and notes when each worker first stands at each acknowledged write's
revision: the *visibility latency* of that write on that worker. Reports errors (search and write), the
search throughput and p50 / p99 of both phases and their ratio, the writes' latencies, and the visibility
latencies (p50, p99, max, and how many writes took over 1 s on some worker). Exits 1 on any error.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from service_catalog import free_port  # noqa: E402

CHUNK = 100_000


# --- the index --------------------------------------------------------------------------------------------------


def generated_index(work: Path, items: int, model_dir: str) -> Path:
    """An exact embedded index of ``items`` random unit vectors of the model's width (made once, reused)."""
    from conftest import write_kaggle_catalog
    from stylespace.data.images import VIEW_VERSION
    from stylespace.index import CatalogIndex
    from stylespace.models import load_model, model_id
    from stylespace.models.shipped import resolve_model_dir

    model_path = resolve_model_dir(model_dir).resolve()
    model = load_model(model_path, device="cpu")
    folder = work / f"index-{items}-{model_id(model)}"
    if (folder / "index.json").exists():
        return folder
    catalog = write_kaggle_catalog(work / "catalog", per_class=2)  # the service serves images from a catalog
    raw = np.lib.format.open_memmap(work / f"vectors-{items}.npy", mode="w+", dtype=np.float32,
                                    shape=(items, model.output_dim))
    rng = np.random.default_rng(0)
    for start in range(0, items, CHUNK):  # chunk by chunk: bounded memory at any size
        block = rng.standard_normal((min(CHUNK, items - start), model.output_dim)).astype(np.float32)
        raw[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    raw.flush()
    labels = [("Tshirts", "Shirts", "Jeans", "Watches", "Casual Shoes", "Handbags")[k % 6] for k in range(items)]
    started = time.perf_counter()
    CatalogIndex.create(folder, [f"g{k}" for k in range(items)], raw, model_id=model_id(model), labels=labels,
                        kind="exact", model_path=str(model_path), input_size=tuple(model.config.input_size),
                        catalog=str(catalog.resolve()), view_version=VIEW_VERSION, measure_recall=False).close()
    print(f"made a {items:,}-item exact index in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    (work / f"vectors-{items}.npy").unlink()
    return folder


def index_copy(source: Path, work: Path) -> Path:
    target = work / f"copy-{source.name}"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("keys.json", ".lock"))
    return target


def products(count: int, seed: int) -> list[bytes]:
    """Distinct product photos (the tests' synthetic products) as PNG bytes."""
    from conftest import SYNTH_CLASSES, synth_image

    rng = np.random.default_rng(seed)
    out = []
    for n in range(count):
        _, shape, colour, _, _ = SYNTH_CLASSES[n % len(SYNTH_CLASSES)]
        buffer = io.BytesIO()
        # colours kept off white: a near-white product on the white backdrop is a blank picture (refused, 422)
        synth_image(shape, tuple(int(c) for c in rng.integers(0, 200, 3)), rng).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


class Server:
    """`stylespace serve` on a free port in a child process, with a write key."""

    def __init__(self, index: Path, model: str | None, workers: int, engine: str):
        from stylespace.service.keys import KeyStore

        store = KeyStore(index)
        for record in store.records():
            if record.name == "bench" and record.revoked is None:
                store.revoke("bench")
        self.key = store.create("bench")[0]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "stylespace", "serve", str(index), "--port", str(self.port),
                   "--workers", str(workers), "--engine", engine]
        if model:
            command += ["--model", model]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 900  # opening a 1M exact index reads every vector
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server stopped: {self.process.stderr.read().decode()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            self.close()
            raise SystemExit("the server did not start within 900 s")
        self.wait_for_workers(workers)

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}

    def wait_for_workers(self, workers: int) -> None:
        seen, deadline = set(), time.monotonic() + 900
        while len(seen) < workers and time.monotonic() < deadline:
            with httpx.Client(timeout=30) as fresh:
                seen.add(fresh.get(self.url + "/stats").json()["index"]["worker"])
        if len(seen) < workers:
            raise SystemExit(f"only {len(seen)} of {workers} workers answered")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"n": len(ms), **{name: round(float(np.percentile(ms, q)), 2) if len(ms) else None
                             for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}}


# --- latency ------------------------------------------------------------------------------------------------------


def run_latency(args, index: Path, items: int) -> dict:
    server = Server(index, args.model_for_server, 1, args.engine)
    images = products(args.adds + 5, seed=items)
    adds, removes, errors = [], [], []
    try:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as http:
            for n in range(5):  # warm-up: the key's hash checked once, the first forward pass
                http.post("/items", files={"image": ("w.png", images[-1 - n], "image/png")}, data={"id": f"warm-{n}"})
                http.delete(f"/items/warm-{n}")
            for n in range(args.adds):
                started = time.perf_counter()
                response = http.post("/items", files={"image": ("n.png", images[n], "image/png")},
                                     data={"id": f"bench-{n}", "label": "Tshirts",
                                           "metadata": json.dumps({"gender": "Men"})})
                (adds if response.status_code == 201 else errors).append(
                    time.perf_counter() - started if response.status_code == 201 else response.status_code)
            for n in range(args.adds):
                started = time.perf_counter()
                response = http.delete(f"/items/bench-{n}")
                (removes if response.status_code == 200 else errors).append(
                    time.perf_counter() - started if response.status_code == 200 else response.status_code)
            stats = http.get("/stats").json()
    finally:
        server.close()
    return {"items": items, "add_ms": percentiles(adds), "remove_ms": percentiles(removes), "errors": errors,
            "in_place": stats["index"]}


# --- soak ---------------------------------------------------------------------------------------------------------


class Poller:
    """Asks /stats over fresh connections and notes, per worker, when it first stood at each revision."""

    def __init__(self, url: str, threads: int = 2, interval: float = 0.05):
        self.url, self.interval = url, interval
        self.reached: dict[int, list[tuple[int, float]]] = {}  # worker -> [(revision, first time seen)]
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with httpx.Client(timeout=10, headers={"Connection": "close"}) as fresh:
                    stats = fresh.get(self.url + "/stats").json()
                now = time.monotonic()
                worker, revision = stats["index"]["worker"], stats["index"]["revision"]
                with self._lock:
                    seen = self.reached.setdefault(worker, [])
                    if not seen or revision > seen[-1][0]:
                        seen.append((revision, now))
            except (httpx.HTTPError, KeyError, ValueError):
                self.errors += 1
            self._stop.wait(self.interval)

    def visible_after(self, revision: int, acknowledged: float, workers: int) -> float | None:
        """Seconds from acknowledgement until every worker stood at ``revision`` (None: one never did)."""
        with self._lock:
            if len(self.reached) < workers:
                return None
            latest = 0.0
            for seen in self.reached.values():
                first = next((t for r, t in seen if r >= revision), None)
                if first is None:
                    return None
                latest = max(latest, first - acknowledged)
        return max(0.0, latest)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


class Writer:
    """Adds ``add_rate`` and removes ``remove_rate`` items a second (the oldest it has had acknowledged) until
    stopped: open-loop, each request sent when it is due and answered on a thread of its own (as a shop's
    backend with several workers would), so a slow answer does not slow the rate."""

    def __init__(self, server: Server, add_rate: float, remove_rate: float, images: list[bytes], in_flight: int = 32):
        self.server, self.images = server, images
        self.add_rate, self.remove_rate, self.in_flight = add_rate, remove_rate, in_flight
        self.acknowledged: list[tuple[str, int, float, float]] = []  # (kind, revision, time, latency)
        self.errors: list[str] = []
        self._removable: list[str] = []
        self.tag = f"{time.time_ns():x}"  # ids of this run's own: a reused index keeps an earlier run's items
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        added = removed = 0
        started = time.monotonic()
        limits = httpx.Limits(max_connections=self.in_flight, max_keepalive_connections=self.in_flight)
        with httpx.Client(base_url=self.server.url, headers=self.server.headers, timeout=60, limits=limits) as http, \
                ThreadPoolExecutor(self.in_flight, thread_name_prefix="writer") as pool:
            while not self._stop.is_set():
                elapsed = time.monotonic() - started
                if added < elapsed * self.add_rate:
                    pool.submit(self._add, http, f"soak-{self.tag}-{added}", self.images[added % len(self.images)])
                    added += 1
                    continue
                if removed < elapsed * self.remove_rate:
                    with self._lock:
                        item_id = self._removable.pop(0) if self._removable else None
                    if item_id is not None:
                        pool.submit(self._remove, http, item_id)
                        removed += 1
                        continue
                self._stop.wait(0.005)

    def _add(self, http, item_id: str, image: bytes) -> None:
        t = time.monotonic()
        response = http.post("/items", files={"image": ("s.png", image, "image/png")},
                             data={"id": item_id, "label": "Shirts"})
        if self._note("add", response, t, 201):
            with self._lock:
                self._removable.append(item_id)

    def _remove(self, http, item_id: str) -> None:
        t = time.monotonic()
        self._note("remove", http.delete(f"/items/{item_id}"), t, 200)

    def _note(self, kind: str, response, started: float, expected: int) -> bool:
        done = time.monotonic()
        with self._lock:
            if response.status_code == expected:
                self.acknowledged.append((kind, response.json()["revision"], done, done - started))
                return True
            self.errors.append(f"{kind} {response.status_code}: {response.text[:200]}")
            return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(120)


def run_soak(args, index: Path, items: int) -> dict:
    from bench_service import run_load

    server = Server(index, args.model_for_server, args.workers, args.engine)
    queries = [(f"q{n}", data) for n, data in enumerate(products(64, seed=1))]
    write_images = products(256, seed=2)
    phases = {}
    try:
        for phase in ("read_only", "writes"):
            poller = Poller(server.url)
            writer = Writer(server, args.add_rate, args.remove_rate, write_images) if phase == "writes" else None
            load = run_load(server.url, queries, args.clients, args.seconds, args.k, seed=3,
                            processes=args.client_processes)
            if writer is not None:
                writer.close()
            time.sleep(2.0)  # the last writes' visibility
            poller.close()
            phases[phase] = {"search": load, "poller_errors": poller.errors}
            if writer is not None:
                visible = [poller.visible_after(revision, t, args.workers) for _, revision, t, _ in writer.acknowledged]
                seen = [v for v in visible if v is not None]
                phases[phase]["writes"] = {
                    "acknowledged": len(writer.acknowledged), "errors": writer.errors,
                    "add_ms": percentiles([lat for kind, _, _, lat in writer.acknowledged if kind == "add"]),
                    "remove_ms": percentiles([lat for kind, _, _, lat in writer.acknowledged if kind == "remove"]),
                    "visibility_ms": percentiles(seen), "never_visible": len(visible) - len(seen),
                    "over_1s": sum(v > 1.0 for v in seen)}
    finally:
        server.close()
    ro, rw = phases["read_only"]["search"], phases["writes"]["search"]
    return {"items": items, "workers": args.workers, "clients": args.clients, "seconds": args.seconds,
            "add_rate": args.add_rate, "remove_rate": args.remove_rate, **phases,
            "throughput_ratio": round(rw["throughput_rps"] / ro["throughput_rps"], 3) if ro["throughput_rps"] else None,
            "p99_ratio": (round(rw["latency_ms"]["p99"] / ro["latency_ms"]["p99"], 3)
                          if ro["latency_ms"]["p99"] and rw["latency_ms"]["p99"] else None)}


def failed(result: dict) -> bool:
    if "add_ms" in result:  # latency
        return bool(result["errors"])
    writes = result["writes"]["writes"]
    return bool(writes["errors"] or writes["never_visible"] or result["read_only"]["search"]["other"]
                or result["writes"]["search"]["other"])


def markdown(results: list[dict]) -> str:
    lines = []
    for r in results:
        if "add_ms" in r:
            lines.append(f"| {r['items']:,} | {r['add_ms']['p50']} / {r['add_ms']['p99']} ms | "
                         f"{r['remove_ms']['p50']} / {r['remove_ms']['p99']} ms | {len(r['errors'])} | "
                         f"{r['in_place']['catch_ups']} in place, {r['in_place']['view_rebuilds']} view rebuilds |")
        else:
            w, ro, rw = r["writes"]["writes"], r["read_only"]["search"], r["writes"]["search"]
            lines.append(f"| {r['items']:,} | {r['workers']} | {r['clients']} | {r['seconds']} s | "
                         f"{ro['throughput_rps']} -> {rw['throughput_rps']} q/s ({r['throughput_ratio']}) | "
                         f"{ro['latency_ms']['p99']} -> {rw['latency_ms']['p99']} ms ({r['p99_ratio']}) | "
                         f"{w['acknowledged']} | {w['visibility_ms']['p50']} / {w['visibility_ms']['max']} ms, "
                         f"{w['over_1s']} over 1 s | {len(w['errors'])} + {sum(ro['other'].values())} + "
                         f"{sum(rw['other'].values())} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["latency", "soak"])
    parser.add_argument("--items", type=int, nargs="+", default=[44_000], help="index sizes (generated indexes)")
    parser.add_argument("--index", type=Path, help="a real index folder instead (a copy is written to)")
    parser.add_argument("--model", default="default", help="the model of generated indexes (default: the shipped one)")
    parser.add_argument("--engine", default="auto", help="what runs the model in the server: auto, torch, onnx")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_writes")
    parser.add_argument("--adds", type=int, default=200, help="latency: items added (then removed) one at a time")
    parser.add_argument("--seconds", type=float, default=300, help="soak: each phase's length")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--add-rate", type=float, default=10.0)
    parser.add_argument("--remove-rate", type=float, default=5.0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.model_for_server = None  # generated indexes record their model; a real index its own
    targets = ([(index_copy(args.index, args.work), None)] if args.index else
               [(generated_index(args.work, n, args.model), n) for n in args.items])
    results = []
    for index, items in targets:
        if items is None:
            from stylespace.index import CatalogIndex

            handle = CatalogIndex.open(index)
            items = len(handle)
            handle.close()
        run = run_latency if args.mode == "latency" else run_soak
        results.append(run(args, index, items))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(markdown(results))
    (args.work / f"{args.mode}.json").write_text(json.dumps(results, indent=2))
    return 1 if any(failed(r) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
