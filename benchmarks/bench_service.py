"""Load test of the web service: N concurrent clients POST /search for a fixed time.

    .venv/bin/python benchmarks/bench_service.py --index demo/index              # a real index
    .venv/bin/python benchmarks/bench_service.py --generated                     # a generated catalog

Starts `stylespace serve` on a free 127.0.0.1 port in a child process (so the clients never share a
GIL with the server), waits for /health, then runs ``--clients`` asyncio clients, each posting catalog
images to /search back to back until ``--seconds`` have passed (every request has a timeout, so the run
always ends). Reports requests, errors by status, p50/p90/p99/max latency and throughput; exits 1 when
any request failed.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' generated catalog and port helper: one definition each
from service_catalog import free_port  # noqa: E402


def build_generated_index(folder: Path) -> Path:
    """A generated Kaggle-layout catalog (the tests' synthetic products), indexed with an untrained
    compact model: used when no real index is at hand."""
    from service_catalog import build_index

    os.environ["STYLESPACE_CACHE"] = str(folder / "cache")  # not the user's cache
    return build_index(folder, per_class=40).index


def query_images(index_dir: Path, count: int, seed: int) -> list[tuple[str, bytes]]:
    """``count`` catalog images (their stored bytes) to post as queries."""
    from stylespace.data import load_catalog
    from stylespace.index import CatalogIndex

    index = CatalogIndex.open(index_dir)
    catalog = load_catalog(index.catalog_path)
    ids = random.Random(seed).sample(list(index.ids), min(count, len(index.ids)))
    return [(i, catalog.read_bytes(i)) for i in ids]


async def client(http: httpx.AsyncClient, images, deadline: float, k: int, rng: random.Random, latencies, errors):
    while time.perf_counter() < deadline:
        item_id, data = images[rng.randrange(len(images))]
        started = time.perf_counter()
        try:
            response = await http.post("/search", files={"image": (f"{item_id}.jpg", data)}, data={"k": str(k)})
            status = response.status_code
            if status == 200 and not response.json()["results"]:
                status = "empty"
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        elapsed = time.perf_counter() - started
        if status == 200:
            latencies.append(elapsed)
        else:
            errors[str(status)] += 1


async def run_load(url: str, images, clients: int, seconds: float, k: int, seed: int) -> dict:
    latencies: list[float] = []
    errors: collections.Counter = collections.Counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as http:
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(client(http, images, deadline, k, random.Random(seed + c), latencies, errors)
                               for c in range(clients)))
        wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "clients": clients, "seconds": round(wall, 2), "k": k,
        "requests": len(latencies) + sum(errors.values()), "ok": len(latencies), "errors": dict(errors),
        "throughput_rps": round(len(latencies) / wall, 1),
        "latency_ms": {name: round(float(np.percentile(ms, q)), 1) if len(ms) else None
                       for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
    }


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode} before answering")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server did not answer {url}/health within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--index", type=Path, help="Index folder to serve (stylespace index).")
    source.add_argument("--generated", action="store_true", help="Serve a generated catalog instead.")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200, help="Distinct catalog images to post.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="Print one JSON document.")
    args = parser.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.k < 1:
        parser.error("--clients and --k must be >= 1 and --seconds > 0")

    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        index_dir = args.index or build_generated_index(Path(tmp) / "generated")
        images = query_images(index_dir, args.queries, args.seed)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "stylespace", "serve", str(index_dir), "--port", str(port)]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_ready(url, server)
            stats = httpx.get(f"{url}/stats").json()
            load_before, cpu_before = os.getloadavg()[0], cpu_seconds(server.pid)
            result = asyncio.run(run_load(url, images, args.clients, args.seconds, args.k, args.seed))
            cpu_after = cpu_seconds(server.pid)
            alive = httpx.get(f"{url}/health").status_code == 200
            after = httpx.get(f"{url}/stats").json()
        finally:
            server.terminate()
            server.wait(timeout=30)
    # On a shared machine the wall-clock figures depend on what else runs; the server's own CPU time per
    # search does not, and says what the same server would do on idle cores.
    cpu_ms = None if cpu_before is None or cpu_after is None or not result["ok"] else \
        round(1000 * (cpu_after - cpu_before) / result["ok"], 2)
    result.update(index=str(args.index) if args.index else "generated catalog (synthetic, untrained compact model)",
                  catalog_items=stats["items"], model_id=stats["model_id"], confidence_score=stats["confidence_score"],
                  server_alive_after=alive, cpus=os.cpu_count(),
                  mean_batch=round((after["searches"] - stats["searches"]) /
                                   max(after["search_batches"] - stats["search_batches"], 1), 1), server_cpu_ms_per_search=cpu_ms,
                  load_average_before=round(load_before, 2), load_average_after=round(os.getloadavg()[0], 2))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        lat = result["latency_ms"]
        print(f"{result['index']}: {result['catalog_items']:,} items, model {result['model_id']}")
        print(f"{result['clients']} clients x {result['seconds']} s: {result['requests']:,} requests, "
              f"{result['ok']:,} ok, errors {result['errors'] or 'none'}")
        print(f"latency p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms, max {lat['max']} ms; "
              f"throughput {result['throughput_rps']} searches/s on {result['cpus']} CPUs")
        print(f"server CPU time {result['server_cpu_ms_per_search']} ms per search, {result['mean_batch']} searches "
              f"per batch; load average "
              f"{result['load_average_before']} before, {result['load_average_after']} after")
    sys.exit(1 if result["errors"] or not alive else 0)


if __name__ == "__main__":
    main()
