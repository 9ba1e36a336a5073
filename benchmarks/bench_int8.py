"""int8 against fp32 for one model on ONNX Runtime, side by side from one run: what int8 saves and what it costs.

- speed: images/s embedding in batches of 64 and the p50 latency of one image, the two precisions measured in
  alternating rounds on the same catalog images (the machine's other work falls on both alike);
- agreement: the cosine of each image's int8 and fp32 vectors (mean and least) on ``--images`` catalog images
  (a seeded sample, not the calibration one);
- recall: exact-product R@1 / R@10 of distorted catalog photos (``stylespace.index.robustness``, the families of
  ``benchmarks/bench_robustness.py``) against the whole catalog indexed at each precision, queries at the same
  precision; and int8 queries against the fp32 index (``--no-mixed`` leaves that column out).

The int8 file is made beside the model when there is none (``model-<id>-int8.onnx``, calibrated on a seeded
sample of 256 of the catalog's images); the catalog's vectors are read from the vector cache when an earlier run
kept them ($STYLESPACE_CACHE/vectors, keyed by model id and precision). Prints one Markdown table; progress on
stderr.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_int8.py --model models/default --items 1000 -o int8.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CATALOG = ROOT.parent / "shared" / "datasets" / "fashion-product-images-small.zip"
BATCH = 64


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def speed(embedders: dict, images: np.ndarray, rounds: int, single: int) -> dict:
    """{precision: {"images_per_s", "p50_ms"}}: medians over ``rounds`` alternating rounds."""
    for embedder in embedders.values():
        embedder(images[:BATCH])  # warm: the session's first run allocates
    rates = {name: [] for name in embedders}
    latencies = {name: [] for name in embedders}
    for _ in range(rounds):
        for name, embedder in embedders.items():
            started = time.perf_counter()
            embedder(images)
            rates[name].append(len(images) / (time.perf_counter() - started))
            for row in range(min(single, len(images))):
                started = time.perf_counter()
                embedder(images[row:row + 1])
                latencies[name].append(time.perf_counter() - started)
    return {name: {"images_per_s": float(np.median(rates[name])), "rounds_images_per_s": rates[name],
                   "p50_ms": 1000 * float(np.median(latencies[name]))} for name in embedders}


def recall(model, model_path: str, catalog, array, config, mixed: bool) -> tuple[dict, dict]:
    """({column: RobustnessReport}, {precision: index seconds and whether the vectors were cached})."""
    from stylespace.embeddings import cached_array_vectors
    from stylespace.index.build import build_index
    from stylespace.index.robustness import measure_robustness
    from stylespace.inference import engine_choice, precision_choice

    reports, indexing = {}, {}
    for precision in ("fp32", "int8"):
        with engine_choice("onnx"), precision_choice(precision), \
                tempfile.TemporaryDirectory(prefix="bench-int8-") as scratch:
            cached = cached_array_vectors(model, array) is not None
            started = time.perf_counter()
            index, _ = build_index(model, catalog, Path(scratch) / "index", model_path=model_path, progress=False)
            indexing[precision] = {"seconds": round(time.perf_counter() - started, 1), "vectors_cached": cached,
                                   "items": len(index)}
            note(f"{precision}: indexed {len(index):,} items in {indexing[precision]['seconds']:.0f} s"
                 f"{' (vectors from the cache)' if cached else ''}")
            columns = [(precision, precision)] + ([("int8 queries, fp32 index", "int8")]
                                                  if mixed and precision == "fp32" else [])
            for column, queries in columns:
                with precision_choice(queries):
                    reports[column] = measure_robustness(model, catalog, index, config,
                                                         log=lambda line, c=column: note(f"  {c}: {line}"))
            index.close()
    order = ["fp32", "int8", "int8 queries, fp32 index"]
    return {column: reports[column] for column in order if column in reports}, indexing


def table(result: dict) -> str:
    speed_, agree, files, indexing, rows = (result[k] for k in ("speed", "cosine", "files", "indexing", "recall"))
    columns = list(rows)
    lines = ["| | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]

    def line(label: str, cells: dict) -> None:
        lines.append(f"| {label} | " + " | ".join(cells.get(c, "") for c in columns) + " |")

    gain = speed_["int8"]["images_per_s"] / speed_["fp32"]["images_per_s"]
    line("ONNX file", {p: f"{files[p]['bytes'] / 1e6:.1f} MB" for p in files})
    line(f"embedding, batches of {BATCH}", {"fp32": f"{speed_['fp32']['images_per_s']:.0f} images/s",
                                            "int8": f"{speed_['int8']['images_per_s']:.0f} images/s ({gain:.2f}x)"})
    line("one image, p50", {p: f"{speed_[p]['p50_ms']:.2f} ms" for p in ("fp32", "int8")})
    line(f"cosine to fp32 on {agree['images']:,} catalog images, mean / least",
         {"fp32": "1 / 1", "int8": f"{agree['mean']:.4f} / {agree['least']:.4f}"})
    line(f"indexing the catalog ({indexing['fp32']['items']:,} items)",
         {p: "vectors cached" if v["vectors_cached"] else f"{v['seconds']:.0f} s" for p, v in indexing.items()})
    for name in rows[columns[0]]:
        line(f"{name}: R@1 / R@10 (%)", {c: f"{100 * rows[c][name]['r1']:.1f} / {100 * rows[c][name]['r10']:.1f}"
                                          for c in columns})
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/default", help="model folder or name (default: models/default)")
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--items", type=int, default=1000, help="catalog items distorted and searched")
    parser.add_argument("--images", type=int, default=1024, help="catalog images timed and compared by cosine")
    parser.add_argument("--single", type=int, default=100, help="one-image runs per round for the p50")
    parser.add_argument("--rounds", type=int, default=3, help="alternating speed rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distortions", default="", help="comma-separated names (default: all)")
    parser.add_argument("--family", default="", help="one family of distortions instead (small_in_frame)")
    parser.add_argument("--no-mixed", action="store_true", help="leave out int8 queries against the fp32 index")
    parser.add_argument("-o", "--output", type=Path, help="write everything measured as JSON")
    args = parser.parse_args()

    from stylespace.data import load_catalog, load_image_array
    from stylespace.data.distortions import DISTORTIONS, FAMILIES
    from stylespace.index.robustness import RobustnessConfig
    from stylespace.inference import OnnxEmbedder, calibration_sample, ensure_int8, ensure_onnx
    from stylespace.models import load_model, model_id

    if args.family and args.family not in FAMILIES:
        parser.error(f"--family {args.family!r}: expected one of {', '.join(FAMILIES)}")
    names = (FAMILIES[args.family] if args.family else tuple(n for n in args.distortions.split(",") if n)) \
        or tuple(DISTORTIONS)
    config = RobustnessConfig(items=args.items, seed=args.seed, distortions=names)
    started = time.perf_counter()
    model = load_model(args.model, device="cpu")
    mid = model_id(model)
    catalog = load_catalog(args.catalog)
    array = load_image_array(catalog, size=tuple(model.config.input_size), progress=True)
    made = time.perf_counter()
    paths = {"fp32": ensure_onnx(model), "int8": ensure_int8(model, array.pixels)}
    note(f"model {mid}: ONNX files ready in {time.perf_counter() - made:.0f} s: {paths['fp32']}, {paths['int8']}")
    embedders = {"fp32": OnnxEmbedder(paths["fp32"], mid, BATCH),
                 "int8": OnnxEmbedder(paths["int8"], mid, BATCH, precision="int8")}
    images = calibration_sample(array.pixels, args.images, args.seed + 1)  # not the calibration sample
    measured = speed(embedders, images, args.rounds, args.single)
    note("speed: " + ", ".join(f"{p} {m['images_per_s']:.0f} images/s, one image {m['p50_ms']:.2f} ms"
                               for p, m in measured.items()))
    cosine = (embedders["int8"](images) * embedders["fp32"](images)).sum(axis=1)  # unit vectors
    reports, indexing = recall(model, args.model, catalog, array, config, not args.no_mixed)
    meta = embedders["int8"].session.get_modelmeta().custom_metadata_map
    result = {
        "command": " ".join(sys.argv), "model": args.model, "model_id": mid, "catalog": str(args.catalog),
        "files": {p: {"path": str(path), "bytes": path.stat().st_size} for p, path in paths.items()},
        "calibration_images": int(meta.get("stylespace_calibration_images", 0)),
        "speed": measured,
        "cosine": {"images": len(images), "mean": float(cosine.mean()), "least": float(cosine.min()),
                   "p01": float(np.quantile(cosine, 0.01))},
        "indexing": indexing,
        "recall": {column: {row.name: {"r1": row.r1, "r10": row.r10, "r1_id": row.r1_id, "type_p1": row.type_p1}
                            for row in report.rows} for column, report in reports.items()},
        "robustness": {column: report.to_dict() for column, report in reports.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    result["table"] = table(result)
    print(result["table"])
    if args.output:
        args.output.write_text(json.dumps(result, indent=2))
    note(f"done in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
