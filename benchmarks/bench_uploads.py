"""What one upload costs the service's decoder: CPU time and peak memory, per kind of upload.

    .venv/bin/python benchmarks/bench_uploads.py [--repeat 3] [--mpx 4]

Each upload is decoded in a fresh child process (so one case's freed memory does not hide the next's
peak) by the service's decoder (``decode_upload_view`` with the service's default pixel budget) at the
default model's input size; the child reports its CPU time and how far its peak resident memory rose
(Linux: VmHWM after resetting it through /proc/self/clear_refs). The least of ``--repeat`` runs is
kept (the machine is shared). Prints a markdown table.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "blank6000": "the issue's 6000 x 6000 blank PNG (36 Mpx)",
    "line20000": "a 20000 x 1 PNG (padded to 3:4 it was 533 Mpx)",
    "jpeg12mpx": "a 4000 x 3000 noise JPEG (decoded at 1/8 scale)",
    "product2000": "a 2000 x 2000 product-like PNG",
    "noise1800": "a 1800 x 1800 noise PNG (9.7 MB: under the 10 MB upload limit)",
    "rgba2000": "a 2000 x 2000 half-transparent RGBA PNG",
    "grey16_2000": "a 2000 x 2000 16-bit greyscale PNG",
}


def make(kind: str) -> bytes:
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    if kind == "blank6000":
        Image.new("1", (6000, 6000), 1).save(buffer, format="PNG", optimize=True)
    elif kind == "line20000":
        Image.new("RGB", (20000, 1), (40, 40, 40)).save(buffer, format="PNG")
    elif kind == "jpeg12mpx":
        Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    elif kind == "product2000":
        image = Image.new("RGB", (2000, 2000), (255, 255, 255))
        ImageDraw.Draw(image).ellipse([500, 300, 1500, 1700], fill=(170, 40, 60))
        image.save(buffer, format="PNG")
    elif kind == "noise1800":
        Image.fromarray(rng.integers(0, 256, (1800, 1800, 3), dtype=np.uint8)).save(buffer, format="PNG",
                                                                                   compress_level=1)
    elif kind == "rgba2000":
        Image.new("RGBA", (2000, 2000), (200, 30, 30, 128)).save(buffer, format="PNG")
    elif kind == "grey16_2000":
        Image.fromarray(rng.integers(0, 65535, (2000, 2000), dtype=np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def _status(field: str) -> float:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024


def child(kind: str, mpx: float) -> None:
    """Decode one upload; print {"answer", "cpu_ms", "peak_mb", "bytes"} as JSON."""
    from stylespace.data.images import PixelBudget
    from stylespace.service.uploads import UploadError, decode_upload_view

    data = make(kind)
    budget = PixelBudget(decoded=int(mpx * 1_000_000))
    Path("/proc/self/clear_refs").write_text("5")
    base = _status("VmRSS")
    started = time.process_time()
    try:
        decode_upload_view(data, (80, 60), budget=budget)
        answer = "decoded"
    except UploadError as exc:
        answer = f"{exc.status_code}"
    print(json.dumps({"answer": answer, "cpu_ms": 1000 * (time.process_time() - started),
                      "peak_mb": _status("VmHWM") - base, "bytes": len(data)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mpx", type=float, default=4.0, help="The decoded-pixel budget (the service's default: 4).")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.mpx)
    print(f"| upload | bytes | answer ({args.mpx:g} Mpx budget) | CPU ms | peak memory MB |")
    print("| --- | ---: | --- | ---: | ---: |")
    for kind, what in CASES.items():
        runs = [json.loads(subprocess.run([sys.executable, __file__, "--child", kind, "--mpx", str(args.mpx)],
                                          capture_output=True, text=True, check=True).stdout)
                for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["cpu_ms"])
        print(f"| {what} | {best['bytes']:,} | {best['answer']} | {best['cpu_ms']:.0f} | "
              f"{min(r['peak_mb'] for r in runs):.0f} |")


if __name__ == "__main__":
    main()
