"""Training on 1 vs N processes (torchrun, gloo) and embedding in one process vs on a local Ray, side by side.

    python benchmarks/bench_distributed.py train --catalog ZIP [--epochs 1] [--processes 2] [--out runs/bench_dist]
    python benchmarks/bench_distributed.py embed --catalog ZIP [--model models/default] [--items 8000] [--workers 2]
    python benchmarks/bench_distributed.py steps [--preset default] [--steps 8] [--processes 2]

``train`` makes the protocol split (if absent), then trains the ``cpu`` preset for ``--epochs`` in one process
(all cores as torch threads) and under ``torchrun --nproc-per-node N`` (one thread each), with the same global
batch, and prints seconds per epoch, losses and validation accuracy of both. ``embed`` embeds the first
``--items`` items of the catalog in this process from a cold image cache (decode + embed), from the warm
cache (embed only), and on a local Ray with ``--workers`` workers (decode + embed on the workers), and prints
the times and the largest difference between the vectors. ``steps`` times ``--steps`` training steps of a
preset's recipe (its network, objective, views and augmentation, global batch) on generated 80 x 60 images,
in one process and under torchrun: the cost of a step without the catalog around it. Each prints one JSON
document on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _run(command: list[str], env: dict) -> dict:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    summary = json.loads(result.stdout)
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    return summary


def bench_train(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split = out / "split.csv"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    if not split.exists():
        subprocess.run([sys.executable, "-m", "stylespace", "split", args.catalog, "-o", str(split), "--json"],
                       env=env, check=True, capture_output=True)
    cores = os.cpu_count() or 1
    common = ["train", args.catalog, "--split", str(split), "--preset", "cpu", "--epochs", str(args.epochs),
              "--device", "cpu", "--json"]
    runs = {}
    for processes in (1, args.processes):
        folder = out / f"train_{processes}p"
        subprocess.run(["rm", "-rf", str(folder)], check=True)
        threads = max(1, cores // processes)
        launch = [sys.executable, "-m", "stylespace"] if processes == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
             "-m", "stylespace"]
        command = [*launch, *common, "-o", str(folder), "--threads", str(threads)]
        summary = _run(command, {**env, "OMP_NUM_THREADS": str(threads)})
        runs[f"{processes}p"] = {
            "command": " ".join(command[1:]), "processes": processes, "threads_each": threads,
            "world_size": summary["world_size"], "train_seconds": summary["train_seconds"],
            "seconds_per_epoch": [row["seconds"] for row in summary["history"]],
            "train_loss": [round(row["train_loss"], 4) for row in summary["history"]],
            "val_accuracy": [round(row["val_metric"], 4) for row in summary["history"]],
            "train_items": summary["train_items"], "wall_seconds": summary["wall_seconds"]}
    return {"bench": "train", "catalog": args.catalog, "epochs": args.epochs, "cores": cores, "runs": runs}


def bench_embed(args) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    import ray

    from stylespace.data import load_catalog
    from stylespace.embeddings import embed_catalog
    from stylespace.models import load_model
    from stylespace.ray_embedding import RayConfig, embed_catalog_ray

    model = load_model(args.model)
    full = load_catalog(args.catalog)
    catalog = full.subset(full.ids[:args.items]) if args.items else full
    times = {}
    with tempfile.TemporaryDirectory(dir=ROOT / "runs") as cache:
        started = time.perf_counter()
        cold = embed_catalog(model, catalog, cache_dir=cache, progress=False)
        times["local_cold_cache"] = time.perf_counter() - started
        started = time.perf_counter()
        warm = embed_catalog(model, catalog, cache_dir=cache, progress=False)
        times["local_warm_cache"] = time.perf_counter() - started
    started = time.perf_counter()
    ray.init(num_cpus=args.workers, object_store_memory=args.object_store_mb * 2**20, include_dashboard=False,
             log_to_driver=False, configure_logging=True, logging_level="warning")
    times["ray_start"] = time.perf_counter() - started
    try:
        # A run of a few items first: what every run pays to start its actors (imports, the model).
        few = catalog.subset(catalog.ids[:2 * args.workers])
        started = time.perf_counter()
        embed_catalog_ray(model, few, RayConfig(workers=args.workers), progress=False)
        times["ray_start_actors"] = time.perf_counter() - started
        started = time.perf_counter()
        remote = embed_catalog_ray(model, catalog, RayConfig(workers=args.workers), progress=False)
        times["ray_embed"] = time.perf_counter() - started
    finally:
        ray.shutdown()
    assert remote.ids == cold.ids == warm.ids and remote.meta == cold.meta
    n = len(remote)
    return {"bench": "embed", "catalog": args.catalog, "model": args.model, "items": n, "workers": args.workers,
            "cores": os.cpu_count(), "seconds": {k: round(v, 2) for k, v in times.items()},
            "images_per_second": {k: round(n / v, 1) for k, v in times.items() if not k.startswith("ray_start")},
            "ray_images_per_second_after_start": round(n / max(1e-9, times["ray_embed"] - times["ray_start_actors"]), 1),
            "decode_images_per_second": round(n / (times["local_cold_cache"] - times["local_warm_cache"]), 1),
            "max_abs_diff": float(np.abs(remote.vectors - cold.vectors).max())}


def _steps_worker(args) -> None:
    """Under torchrun (or alone): one epoch of ``--steps`` steps of the preset's recipe; rank 0 prints the time."""
    sys.path.insert(0, str(ROOT / "src"))
    import dataclasses

    import torch

    from stylespace.models import EmbeddingModel
    from stylespace.training import fit, preset
    from stylespace.training.distributed import join_process_group

    model_config, config = preset(args.preset)
    config = dataclasses.replace(config, epochs=1, device="cpu", num_threads=args.threads)
    rng = np.random.default_rng(0)
    n = args.steps * config.batch_size
    pixels = np.full((n, *model_config.input_size, 3), 255, np.uint8)  # a coloured block on a white backdrop
    h, w = model_config.input_size
    for i in range(n):
        top, left = rng.integers(0, h // 3), rng.integers(0, w // 3)
        pixels[i, top:top + h // 2, left:left + w // 2] = rng.integers(0, 200, 3)
    labels = rng.integers(0, 39, n)
    model_config = dataclasses.replace(model_config, classes=[f"c{k}" for k in range(39)])
    parallel = join_process_group("cpu")
    torch.manual_seed(0)
    model = EmbeddingModel(model_config)
    result = fit(model, pixels, labels, None, None, config, args.folder, progress=False, parallel=parallel)
    if parallel.is_primary:
        print(json.dumps({"epoch_seconds": result.history[0]["seconds"], "steps": args.steps,
                          "loss": result.history[0]["train_loss"]}))
    parallel.close()


def bench_steps(args) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cores = os.cpu_count() or 1
    runs = {}
    # one process on every core, one process on one core (the per-process share of N), N processes
    for processes, threads in ((1, cores), (1, max(1, cores // args.processes)),
                               (args.processes, max(1, cores // args.processes))):
        run = ROOT / "runs" / "bench_dist" / f"steps_{processes}p"  # one folder all the processes agree on
        subprocess.run(["rm", "-rf", str(run)], check=True)
        worker = [str(Path(__file__).resolve()), "_steps", "--preset", args.preset, "--steps", str(args.steps),
                  "--threads", str(threads), "--folder", str(run)]
        launch = [sys.executable] if processes == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        summary = _run([*launch, *worker], {**env, "OMP_NUM_THREADS": str(threads)})
        runs[f"{processes}p{threads}t"] = {"processes": processes, "threads_each": threads, **summary,
                                 "seconds_per_step": round(summary["epoch_seconds"] / args.steps, 3)}
    return {"bench": "steps", "preset": args.preset, "cores": cores, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    train = sub.add_parser("train")
    train.add_argument("--catalog", required=True)
    train.add_argument("--epochs", type=int, default=1)
    train.add_argument("--processes", type=int, default=2)
    train.add_argument("--out", default=str(ROOT / "runs" / "bench_dist"))
    embed = sub.add_parser("embed")
    embed.add_argument("--catalog", required=True)
    embed.add_argument("--model", default=str(ROOT / "models" / "default"))
    embed.add_argument("--items", type=int, default=8000)
    embed.add_argument("--workers", type=int, default=2)
    embed.add_argument("--object-store-mb", type=int, default=500)
    for name in ("steps", "_steps"):
        steps = sub.add_parser(name)
        steps.add_argument("--preset", default="default")
        steps.add_argument("--steps", type=int, default=8)
        steps.add_argument("--processes", type=int, default=2)
        steps.add_argument("--threads", type=int, default=0)
        steps.add_argument("--folder", default=str(ROOT / "runs" / "bench_dist" / "steps"))
    args = parser.parse_args()
    (ROOT / "runs").mkdir(exist_ok=True)
    if args.bench == "_steps":
        return _steps_worker(args)
    bench = {"train": bench_train, "embed": bench_embed, "steps": bench_steps}[args.bench]
    print(json.dumps(bench(args), indent=1))


if __name__ == "__main__":
    main()
