"""Load test of the web service, and PyTorch vs ONNX Runtime, side by side in one run.

    .venv/bin/python benchmarks/bench_service.py --index demo/index              # a real index
    .venv/bin/python benchmarks/bench_service.py --generated                     # a generated catalog
    .venv/bin/python benchmarks/bench_service.py --index demo/index --engines torch,onnx --markdown

For each engine (``--engines``), starts `stylespace serve --engine E` on a free 127.0.0.1 port in a
child process (so the clients never share a GIL with the server), waits for /health, then measures:

1. ``single``: one client posting catalog images one after another: the end-to-end latency of one
   search (decode, embed, index search, confidence, JSON) with no queueing;
2. ``honest``: ``--clients`` asyncio clients, each posting catalog images to /search back to back for
   ``--seconds``;
3. ``with_heavy``: the same honest clients (``--client-processes`` processes) while ``--heavy-clients`` more post a heavy upload back to back
   (``--heavy``: ``blank6000``, the issue's 6000 x 6000 blank PNG, refused from its header; or ``png2000``, a
   2000 x 2000 product-like PNG of a few KB inside the pixel budget, decoded whole on the low-priority
   heavy lane).

With ``--rounds N`` the honest and with-heavy phases alternate N times and the medians are reported (the
load of a shared machine drifts). Every request has a timeout, so the run always ends. Reports requests, errors by status, p50/p90/p99/max
latency, throughput, the server's CPU time per search and its peak memory (VmHWM), and how much of the
honest throughput the heavy clients cost. Also times embedding in-process with each engine (one image;
batches of 256). Exits 1 when an honest request failed.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import io
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


def heavy_upload(kind: str) -> tuple[str, bytes]:
    """The heavy client's upload: the issue's 6000 x 6000 blank PNG, or a 2000 x 2000 product-like PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    if kind == "blank6000":
        Image.new("1", (6000, 6000), 1).save(buffer, format="PNG", optimize=True)
    elif kind == "png2000":  # a legal product shot at 4 Mpx: decoded whole, on the heavy lane
        from PIL import ImageDraw

        image = Image.new("RGB", (2000, 2000), (255, 255, 255))
        ImageDraw.Draw(image).ellipse([500, 300, 1500, 1700], fill=(170, 40, 60))
        image.save(buffer, format="PNG")
    else:
        raise SystemExit(f"--heavy {kind!r}: expected blank6000 or png2000")
    return f"{kind}.png", buffer.getvalue()


class Tally:
    """Latencies of successful requests and counts of the others, for one kind of client."""

    def __init__(self):
        self.latencies: list[float] = []
        self.statuses: collections.Counter = collections.Counter()

    def summary(self, wall: float) -> dict:
        ms = np.array(self.latencies) * 1000
        return {"requests": len(self.latencies) + sum(self.statuses.values()), "ok": len(self.latencies),
                "other": dict(self.statuses), "throughput_rps": round(len(self.latencies) / wall, 1),
                "latency_ms": {name: round(float(np.percentile(ms, q)), 2) if len(ms) else None
                               for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}}


async def client(http: httpx.AsyncClient, uploads, deadline: float, k: int, rng: random.Random, tally: Tally,
                 honest: bool = True):
    while time.perf_counter() < deadline:
        name, data = uploads[rng.randrange(len(uploads))]
        started = time.perf_counter()
        try:
            response = await http.post("/search", files={"image": (name, data)}, data={"k": str(k)})
            status = response.status_code
            if honest and status == 200 and not response.json()["results"]:
                status = "empty"
            if status == 503:  # the server asked the client to come back later: a polite client does
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        if status == 200:
            tally.latencies.append(time.perf_counter() - started)
        else:
            tally.statuses[str(status)] += 1


async def _clients(url: str, uploads, clients: int, seconds: float, k: int, seed: int, honest: bool) -> tuple[Tally, float]:
    tally = Tally()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as http:
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(client(http, uploads, deadline, k, random.Random(seed + c), tally, honest)
                               for c in range(clients)))
        return tally, time.perf_counter() - started


def _client_process(url: str, uploads, clients: int, seconds: float, k: int, seed: int, honest: bool, out) -> None:
    tally, wall = asyncio.run(_clients(url, uploads, clients, seconds, k, seed, honest=honest))
    out.put((honest, tally.latencies, dict(tally.statuses), wall))


def run_load(url: str, images, clients: int, seconds: float, k: int, seed: int,
             heavy: tuple[str, bytes] | None = None, heavy_clients: int = 0, processes: int = 1) -> dict:
    """``clients`` honest clients for ``seconds``, spread over ``processes`` processes; the heavy clients run
    in a process of their own, so their requests never take the honest clients' share of a process's CPU
    (an httpx client costs about as much per request as the server)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    uploads = [(f"{item_id}.jpg", data) for item_id, data in images]
    shares = [clients // processes + (1 if n < clients % processes else 0) for n in range(processes)]
    jobs = [(uploads, share, seed + 100 * n, True) for n, share in enumerate(shares) if share]
    if heavy_clients:
        jobs.append(([heavy], heavy_clients, seed + 1000, False))
    workers = [context.Process(target=_client_process, args=(url, group, count, seconds, k, group_seed, honest, queue))
               for group, count, group_seed, honest in jobs]
    for worker in workers:
        worker.start()
    honest_tally, hostile, walls = Tally(), Tally(), {True: 0.0, False: 0.0}
    for _ in workers:
        is_honest, latencies, statuses, wall = queue.get(timeout=seconds + 120)
        tally = honest_tally if is_honest else hostile
        tally.latencies += latencies
        tally.statuses.update(statuses)
        walls[is_honest] = max(walls[is_honest], wall)
    for worker in workers:
        worker.join(timeout=30)
    result = {"clients": clients, "client_processes": processes, "seconds": round(walls[True], 2), "k": k,
              **honest_tally.summary(walls[True])}
    if heavy_clients:
        result["heavy"] = {"clients": heavy_clients, "upload": heavy[0], "bytes": len(heavy[1]),
                           **hostile.summary(walls[False])}
    return result


async def run_single(url: str, images, count: int, k: int) -> dict:
    """One client, one search at a time: the end-to-end latency with no queueing."""
    tally = Tally()
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
        for item_id, data in images[:5]:  # warm-up
            await http.post("/search", files={"image": (f"{item_id}.jpg", data)}, data={"k": str(k)})
        started = time.perf_counter()
        for n in range(count):
            item_id, data = images[n % len(images)]
            t = time.perf_counter()
            response = await http.post("/search", files={"image": (f"{item_id}.jpg", data)}, data={"k": str(k)})
            if response.status_code == 200:
                tally.latencies.append(time.perf_counter() - t)
            else:
                tally.statuses[str(response.status_code)] += 1
        wall = time.perf_counter() - started
    return {"clients": 1, **tally.summary(wall)}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def peak_memory_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def embedding_table(model_dir: Path, seconds: float = 3.0) -> dict:
    """In-process embedding speed of each engine: ms for one image, images/s in batches of 256."""
    import tempfile as _tempfile

    from stylespace.inference import OnnxEmbedder, TorchEmbedder, export_onnx
    from stylespace.models import load_model, model_id

    model = load_model(model_dir, device="cpu")
    height, width = model.config.input_size
    pixels = np.random.default_rng(0).integers(0, 256, (256, height, width, 3), dtype=np.uint8)
    with _tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx")
        engines = {"torch": TorchEmbedder(model, "cpu", batch_size=256),
                   "onnx": OnnxEmbedder(path, model_id(model), batch_size=256)}
        out = {}
        for name, embed in engines.items():
            row = {}
            for label, batch in (("one_image_ms", pixels[:1]), ("batch256_images_per_s", pixels)):
                for _ in range(3):
                    embed(batch)
                runs, started = 0, time.perf_counter()
                while time.perf_counter() - started < seconds:
                    embed(batch)
                    runs += 1
                per_call = (time.perf_counter() - started) / runs
                row[label] = round(per_call * 1000, 3) if label == "one_image_ms" else round(len(batch) / per_call)
            out[name] = row
        out["max_abs_diff"] = float(np.abs(engines["onnx"](pixels) - engines["torch"](pixels)).max())
    return out


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 300.0) -> None:
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


def serve_and_measure(index_dir: Path, engine: str, images, args, heavy) -> dict:
    """Start the server on ``engine`` and run the three measurements against it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "stylespace", "serve", str(index_dir), "--port", str(port), "--engine", engine]
    if args.model is not None:
        command += ["--model", str(args.model)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_ready(url, server)
        stats = httpx.get(f"{url}/stats").json()
        result = {"engine": stats["engine"], "catalog_items": stats["items"], "model_id": stats["model_id"]}
        result["single"] = asyncio.run(run_single(url, images, args.single, args.k))
        phases = [("honest", 0)] + ([("with_heavy", args.heavy_clients)] if args.heavy_clients else [])
        # Alternated --rounds times: on a shared machine the load drifts, and the pair's medians see the same drift.
        for round_number in range(args.rounds):
            for name, heavy_clients in phases:
                before, cpu_before, load_before = (httpx.get(f"{url}/stats").json(), cpu_seconds(server.pid),
                                                   os.getloadavg()[0])
                run = run_load(url, images, args.clients, args.seconds, args.k, args.seed + round_number,
                               heavy, heavy_clients, args.client_processes)
                cpu_after, after = cpu_seconds(server.pid), httpx.get(f"{url}/stats").json()
                run["server_cpu_ms_per_search"] = (None if cpu_before is None or cpu_after is None or not run["ok"]
                                                   else round(1000 * (cpu_after - cpu_before) / run["ok"], 2))
                run["mean_batch"] = round((after["searches"] - before["searches"]) /
                                          max(after["search_batches"] - before["search_batches"], 1), 1)
                run["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
                result.setdefault(f"{name}_rounds", []).append(run)
        for name, _ in phases:  # the round with the median throughput stands for the phase
            rounds = sorted(result[f"{name}_rounds"], key=lambda r: r["throughput_rps"])
            result[name] = rounds[len(rounds) // 2]
        if "with_heavy" in result:
            pairs = zip(result["honest_rounds"], result["with_heavy_rounds"])
            losses = sorted(1 - h["throughput_rps"] / max(o["throughput_rps"], 1e-9) for o, h in pairs)
            result["honest_throughput_lost"] = round(losses[len(losses) // 2], 3)  # median over the rounds
            result["honest_throughput_lost_rounds"] = [round(x, 3) for x in losses]
        result["decoding"] = httpx.get(f"{url}/stats").json()["decoding"]
        result["server_peak_memory_mb"] = peak_memory_mb(server.pid)
        result["server_alive_after"] = httpx.get(f"{url}/health").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    return result


def markdown(result: dict) -> str:
    clients = result["runs"][0]["honest"]["clients"] if result["runs"] else 0
    lines = [f"| engine | one search p50 (ms) | {clients} clients: searches/s | p50 / p99 (ms) | CPU ms/search | "
             f"with {result['heavy_clients']} heavy: searches/s | p50 / p99 (ms) | honest throughput lost | "
             "heavy answers | server peak MB |", "|" + " --- |" * 10]
    for run in result["runs"]:
        honest, heavy = run["honest"], run.get("with_heavy")
        h = heavy or {"throughput_rps": None, "latency_ms": {"p50": None, "p99": None}, "heavy": {"other": {}}}
        lines.append(f"| {run['engine']} | {run['single']['latency_ms']['p50']} | {honest['throughput_rps']} | "
                     f"{honest['latency_ms']['p50']} / {honest['latency_ms']['p99']} | "
                     f"{honest['server_cpu_ms_per_search']} | {h['throughput_rps']} | "
                     f"{h['latency_ms']['p50']} / {h['latency_ms']['p99']} | "
                     f"{run.get('honest_throughput_lost', '')} | {h.get('heavy', {}).get('other', '')} | "
                     f"{run['server_peak_memory_mb']} |")
    table = result.get("embedding")
    if table:
        lines += ["", "| engine | one image (ms) | batches of 256 (images/s) |", "| --- | --- | --- |"]
        lines += [f"| {name} | {table[name]['one_image_ms']} | {table[name]['batch256_images_per_s']:,} |"
                  for name in ("torch", "onnx")]
        lines.append(f"\nONNX Runtime vs PyTorch: max abs difference {table['max_abs_diff']:.1e}; embedding "
                     f"throughput {table['onnx']['batch256_images_per_s'] / table['torch']['batch256_images_per_s']:.1f}x.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--index", type=Path, help="Index folder to serve (stylespace index).")
    source.add_argument("--generated", action="store_true", help="Serve a generated catalog instead.")
    parser.add_argument("--model", type=Path, help="Model folder (default: the index's own).")
    parser.add_argument("--engines", default="torch,onnx", help="Engines to serve with, one after the other.")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--heavy-clients", type=int, default=4)
    parser.add_argument("--client-processes", type=int, default=1, help="Processes the honest clients are "
                                                                        "spread over (the heavy ones get their own).")
    parser.add_argument("--heavy", default="blank6000", help="blank6000 or png2000 (see above).")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=1, help="Alternate honest / with-heavy phases this many "
                                                              "times (medians reported).")
    parser.add_argument("--single", type=int, default=300, help="Sequential searches for the one-client latency.")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200, help="Distinct catalog images to post.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-embedding-table", action="store_true", help="Skip the in-process embedding timing.")
    parser.add_argument("--json", action="store_true", help="Print one JSON document.")
    parser.add_argument("--markdown", action="store_true", help="Print the tables as markdown.")
    args = parser.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.k < 1 or args.heavy_clients < 0:
        parser.error("--clients and --k must be >= 1, --heavy-clients >= 0 and --seconds > 0")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    heavy = heavy_upload(args.heavy)

    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        index_dir = args.index or build_generated_index(Path(tmp) / "generated")
        images = query_images(index_dir, args.queries, args.seed)
        runs = [serve_and_measure(index_dir, engine, images, args, heavy) for engine in engines]
        model_dir = args.model
        if model_dir is None:
            from stylespace.index import CatalogIndex

            model_dir = CatalogIndex.open(index_dir).model_dir
        embedding = None if args.no_embedding_table else embedding_table(Path(model_dir))
    result = {"index": str(args.index) if args.index else "generated catalog (synthetic, untrained compact model)",
              "cpus": os.cpu_count(), "heavy_clients": args.heavy_clients, "heavy": args.heavy, "runs": runs,
              "embedding": embedding}
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.markdown:
        print(markdown(result))
    else:
        print(f"{result['index']} on {result['cpus']} CPUs")
        print(markdown(result))
    failed = any(run[name]["other"].get(code) for run in runs for name in ("honest",) for code in run[name]["other"])
    sys.exit(1 if failed or not all(run["server_alive_after"] for run in runs) else 0)


if __name__ == "__main__":
    main()
