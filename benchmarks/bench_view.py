"""The canonical view's own cost per query photo, against the decoder before it, interleaved in one run.

    .venv/bin/python benchmarks/bench_view.py [--rounds 300]

A catalog packshot resized to 1800 x 2400 and saved as JPEG (quality 90), and the catalog's own 60 x 80 WebP:
each decoded by `load_rgb` (EXIF, trim, backdrop, pad, resize) and by the decoder before it (`open_image` +
`fit_to_size`: pad and resize only), alternately, so the machine's noise moves both sides alike.
"""
from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CATALOG = ROOT.parent / "shared" / "datasets" / "fashion-product-images-small.zip"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()

    from stylespace.data import load_catalog, load_rgb
    from stylespace.data.images import fit_to_size, open_image

    catalog = load_catalog(args.catalog)
    item = catalog.ids[0]
    small = catalog.read_bytes(item)
    buffer = io.BytesIO()
    catalog.read_image(item).resize((1800, 2400)).save(buffer, "JPEG", quality=90)
    photo = buffer.getvalue()
    size = (80, 60)
    decoders = {
        "canonical view (load_rgb)": lambda data: load_rgb(data, size),
        "before: pad + resize": lambda data: fit_to_size(open_image(data, draft=(2 * size[1], 2 * size[0])), size),
    }
    print(f"| query | {' | '.join(decoders)} |\n| --- | ---: | ---: |")
    for name, data in (("catalog WebP 60 x 80", small), ("1800 x 2400 JPEG", photo)):
        times = {k: [] for k in decoders}
        for _ in range(args.rounds):
            for key, decode in decoders.items():
                started = time.perf_counter()
                decode(data)
                times[key].append(time.perf_counter() - started)
        cells = [f"{1000 * np.median(v):.2f} ms p50 / {1000 * np.percentile(v, 99):.2f} p99" for v in times.values()]
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
