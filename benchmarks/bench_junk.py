r"""Junk queries: uploads that are not product photos never get a confident match (`stylespace.recommend.junk`).

Needs a whitened index of the shared catalog built with the model, and calibrated (the threshold it
shows recommendations above, and the floors of the junk test, live in its index.json):

    .venv/bin/stylespace index build models/default ../shared/datasets/fashion-product-images-small.zip \
        -o runs/junk-index
    .venv/bin/stylespace calibrate-threshold runs/junk-index --queries runs/split.csv \
        --catalog ../shared/datasets/fashion-product-images-small.zip
    .venv/bin/python benchmarks/bench_junk.py --model models/default --index runs/junk-index -o junk.json

Queries, each decoded into its canonical view at the model's input size as an upload is:

* fixed junk: hand-made pictures (blank white and coloured, near-uniform grey, noise, gradients, text
  screenshots, landscapes; several sizes, some re-encoded as JPEG) and `stylespace.data.distortions.junk_images`;
* a seeded random battery, ``--per-kind`` pictures of each of noise, gradient, text screenshot and
  landscape (random sizes, colours, fonts, blur and JPEG);
* ``--real`` catalog photos drawn at random from the index, mirrored, padded on white and padded on grey
  (`stylespace.data.distortions`), each left out of its own search;
* the catalog's blank images (those the image cache records as blank or nearly uniform).

For each, how many are confident matches with no junk test (the calibrated threshold alone), with the
blank test only, and with all three tests (blank, unlike the catalog, atypical), and the reasons given.
For real photos the first count is what the threshold shows and "refused" how many of those the junk
tests refuse (the lower, the better); for junk every confident match is a failure. Prints one Markdown
table; progress on stderr.
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CATALOG = ROOT.parent / "shared" / "datasets" / "fashion-product-images-small.zip"
REAL_DISTORTIONS = {"mirrored": "mirror", "padded on white": "pad_white", "padded on grey": "pad_grey"}


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- pictures that are not product photos ------------------------------------------------------------------
# Every generator takes a numpy Generator first: a seed names every picture.


def _image(array):
    from PIL import Image

    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _jpeg(image, quality: int = 85):
    """``image`` after a JPEG round trip (the library's upload encoder)."""
    from PIL import Image

    from stylespace.data.distortions import encode

    return Image.open(io.BytesIO(encode(image, quality=quality))).convert("RGB")


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def blank(rng, h, w, colour=(255, 255, 255)):
    return _image(np.broadcast_to(np.array(colour), (h, w, 3)).copy())


def near_uniform(rng, h, w, colour, sigma):
    return _image(np.array(colour) + rng.normal(0, sigma, (h, w, 3)))


def noise_uniform(rng, h, w):
    return _image(rng.integers(0, 256, (h, w, 3)))


def noise_grey(rng, h, w):
    return _image(np.repeat(rng.normal(128, 50, (h, w, 1)), 3, 2))


def noise_blurred(rng, h, w):
    from PIL import ImageFilter

    return noise_uniform(rng, h, w).filter(ImageFilter.GaussianBlur(3))


def gradient(rng, h, w, a, b, direction):
    """From colour ``a`` to ``b``: horizontal (h), vertical (v), diagonal (d) or radial (r)."""
    if direction == "h":
        t = np.linspace(0, 1, w)[None, :, None] * np.ones((h, 1, 1))
    elif direction == "v":
        t = np.linspace(0, 1, h)[:, None, None] * np.ones((1, w, 1))
    elif direction == "d":
        t = (np.linspace(0, 1, h)[:, None] + np.linspace(0, 1, w)[None, :])[..., None] / 2
    else:
        yy, xx = np.mgrid[0:h, 0:w]
        t = (np.hypot(yy - h / 2, xx - w / 2) / np.hypot(h / 2, w / 2))[..., None]
    return _image(np.array(a) * (1 - t) + np.array(b) * t)


WORDS = ("the quick brown fox jumps over lazy dog order invoice total shipping returns account settings").split()


def text(rng, h, w, dark=False, size=16, header=False):
    """A screenshot of text: lines of words, dark on white (or light on dark), optionally a blue header bar."""
    from PIL import Image, ImageDraw

    bg, fg = ((30, 30, 30), (230, 230, 230)) if dark else ((255, 255, 255), (20, 20, 20))
    image = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(image)
    font = _font(size)
    y = 8
    while y < h - size:
        draw.text((10, y), " ".join(rng.choice(WORDS, 8)), fill=fg, font=font)
        y += int(size * 1.5)
    if header:
        draw.rectangle([0, 0, w, 40], fill=(40, 90, 200))
    return image


def landscape(rng, h, w, horizon=0.55, sun=False, hills=False):
    """Sky (a blue gradient) over a green field with noise; a sun, a ridge of hills."""
    from PIL import ImageDraw

    a = np.zeros((h, w, 3))
    k = int(h * horizon)
    t = np.linspace(0, 1, k)[:, None, None]
    a[:k] = np.array((70, 130, 220)) * (1 - t) + np.array((190, 220, 250)) * t
    a[k:] = np.array((60, 140, 50)) + rng.normal(0, 25, (h - k, w, 3))
    if hills:
        ridge = (h * 0.45 + 25 * np.sin(np.arange(w) / w * 6)).astype(int)
        for x in range(w):
            a[ridge[x]:int(h * horizon), x] = (90, 110, 70)
    image = _image(a)
    if sun:
        ImageDraw.Draw(image).ellipse([w * .7, h * .1, w * .85, h * .1 + w * .15], fill=(255, 240, 180))
    return image


def fixed_junk(seed: int) -> dict[str, list]:
    """Hand-made pictures per kind (PIL images or file bytes), the same for a seed."""
    from stylespace.data.distortions import junk_images

    rng = np.random.default_rng([seed, 0])
    kinds = {
        "blank": [blank(rng, 400, 300), blank(rng, 480, 640), _jpeg(blank(rng, 400, 300)),
                  blank(rng, 400, 300, (0, 0, 0)), blank(rng, 400, 300, (200, 30, 30)),
                  blank(rng, 300, 300, (128, 128, 128))],
        "near-uniform": [near_uniform(rng, 400, 300, (128, 128, 128), 2),
                         _jpeg(near_uniform(rng, 480, 640, (180, 180, 180), 3)),
                         near_uniform(rng, 400, 300, (90, 100, 110), 4),
                         near_uniform(rng, 400, 300, (240, 240, 240), 2.5)],
        "noise": [noise_uniform(rng, 400, 300), noise_uniform(rng, 480, 640), noise_grey(rng, 400, 300),
                  noise_blurred(rng, 400, 300), _jpeg(noise_uniform(rng, 300, 300), 60)],
        "gradient": [gradient(rng, 400, 300, (0, 0, 0), (255, 255, 255), "h"),
                     gradient(rng, 400, 300, (255, 0, 0), (0, 0, 255), "v"),
                     gradient(rng, 480, 640, (250, 200, 50), (20, 20, 120), "d"),
                     gradient(rng, 400, 400, (255, 255, 255), (60, 60, 60), "r"),
                     gradient(rng, 400, 300, (255, 255, 255), (200, 200, 200), "v"),
                     gradient(rng, 224, 224, (0, 120, 255), (255, 120, 0), "h"),
                     gradient(rng, 640, 480, (0, 0, 0), (255, 255, 255), "r")],
        "text screenshot": [text(rng, 400, 300), text(rng, 480, 640), text(rng, 480, 640, size=24),
                            text(rng, 400, 300, dark=True), text(rng, 600, 400, header=True),
                            _jpeg(text(rng, 800, 600, size=28)), text(rng, 224, 224, size=12),
                            text(rng, 1000, 800, size=32), text(rng, 600, 400, dark=True, size=20)],
        "landscape": [landscape(rng, 400, 600), landscape(rng, 480, 640, 0.4), landscape(rng, 480, 640, sun=True),
                      landscape(rng, 400, 600, 0.5, hills=True), _jpeg(landscape(rng, 300, 400)),
                      landscape(rng, 224, 224), landscape(rng, 768, 1024, 0.6), landscape(rng, 300, 400, sun=True)],
    }
    for h, w in [(60, 80), (120, 160), (224, 224), (300, 400), (480, 640), (1000, 1000), (768, 1024)]:
        kinds["noise"] += [noise_uniform(rng, h, w), noise_grey(rng, h, w)]
    # the library's own junk pictures (JPEG bytes, as uploaded)
    library = junk_images(seed=seed)
    for name, kind in [("blank", "blank"), ("near_uniform", "near-uniform"), ("noise", "noise"),
                       ("gradient", "gradient"), ("text_screenshot", "text screenshot"), ("landscape", "landscape")]:
        kinds[kind].append(library[name])
    return kinds


class Battery:
    """Random junk pictures of four kinds: random sizes (60 to 1,200 px high, aspect 0.6 to 1.7) and colours."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng([seed, 1])

    def size(self) -> tuple[int, int]:
        h = int(self.rng.integers(60, 1200))
        return h, int(h * self.rng.uniform(0.6, 1.7))

    def colour(self) -> tuple[int, int, int]:
        return tuple(int(c) for c in self.rng.integers(0, 256, 3))

    def noise(self):
        """Uniform, grey Gaussian, coloured Gaussian, salt and pepper or blocky noise; sometimes blurred."""
        from PIL import ImageFilter

        rng = self.rng
        h, w = self.size()
        kind = rng.integers(0, 5)
        if kind == 0:
            a = rng.integers(0, 256, (h, w, 3))
        elif kind == 1:
            a = np.repeat(rng.normal(rng.uniform(60, 200), rng.uniform(10, 80), (h, w, 1)), 3, 2)
        elif kind == 2:
            a = np.array(self.colour()) + rng.normal(0, rng.uniform(10, 90), (h, w, 3))
        elif kind == 3:
            a = np.where(rng.random((h, w, 1)) < rng.uniform(0.05, 0.5), 255, 0) * np.ones(3)
        else:
            s = int(rng.integers(4, 40))
            a = rng.integers(0, 256, (h // s + 1, w // s + 1, 3)).repeat(s, 0).repeat(s, 1)[:h, :w]
        image = _image(a)
        if rng.random() < 0.3:
            image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 4))))
        return image

    def gradient(self):
        h, w = self.size()
        return gradient(self.rng, h, w, self.colour(), self.colour(), self.rng.choice(["h", "v", "d", "r"]))

    def text(self):
        """Random words in a random font size and colour, light or dark; sometimes a coloured header bar."""
        from PIL import Image, ImageDraw

        rng = self.rng
        h, w = self.size()
        dark = rng.random() < 0.3
        bg = (int(rng.integers(0, 50)),) * 3 if dark else tuple(int(c) for c in rng.integers(225, 256, 3))
        fg = (int(rng.integers(180, 256)),) * 3 if dark else self.colour() if rng.random() < 0.3 \
            else (int(rng.integers(0, 80)),) * 3
        image = Image.new("RGB", (w, h), bg)
        draw = ImageDraw.Draw(image)
        size = int(rng.integers(9, max(10, h // 12)))
        font = _font(size)
        if rng.random() < 0.4:
            draw.rectangle([0, 0, w, int(rng.integers(20, max(21, h // 6)))], fill=self.colour())
        y = int(rng.integers(4, 50))
        while y < h - size:
            draw.text((int(rng.integers(4, 30)), y), " ".join(rng.choice(WORDS, int(rng.integers(2, 12)))),
                      fill=fg, font=font)
            y += int(size * rng.uniform(1.2, 2.2))
        return image

    def landscape(self):
        """Sky over a field, random horizon, hues and grain; sometimes a sun; half re-encoded as JPEG."""
        from PIL import ImageDraw

        rng = self.rng
        h, w = self.size()
        k = int(h * rng.uniform(0.3, 0.7))
        a = np.zeros((h, w, 3))
        t = np.linspace(0, 1, k)[:, None, None]
        top = np.array((rng.integers(30, 120), rng.integers(90, 170), rng.integers(180, 255)))
        a[:k] = top * (1 - t) + np.array((rng.integers(170, 230), rng.integers(200, 240), 250)) * t
        a[k:] = np.array((rng.integers(30, 110), rng.integers(100, 180), rng.integers(20, 80))) \
            + rng.normal(0, rng.uniform(5, 40), (h - k, w, 3))
        image = _image(a)
        if rng.random() < 0.4:
            r, x, y = w * rng.uniform(0.04, 0.1), w * rng.uniform(0.1, 0.9), k * rng.uniform(0.1, 0.6)
            ImageDraw.Draw(image).ellipse([x - r, y - r, x + r, y + r], fill=(255, 240, 190))
        if rng.random() < 0.5:
            image = _jpeg(image, int(rng.integers(50, 95)))
        return image

    def kinds(self) -> dict:
        return {"noise": self.noise, "gradient": self.gradient, "text screenshot": self.text,
                "landscape": self.landscape}


# --- the measurement ---------------------------------------------------------------------------------------


SHORT = {}  # full reason -> short name for the table (filled in main)


class Judge:
    """Embeds query pictures and recommends to them three ways: no junk test (the threshold alone), the
    blank test only, and all three tests (the index's floors)."""

    def __init__(self, model, index, device: str, batch_size: int):
        from stylespace.models import model_id
        from stylespace.recommend import JunkRule, SelectiveRecommender

        self.model, self.index, self.device, self.batch_size = model, index, device, batch_size
        self.size = tuple(model.config.input_size)
        self.model_id = model_id(model)
        self.full = SelectiveRecommender.from_index(index)
        self.plain = SelectiveRecommender(index, self.full.score, self.full.threshold, self.full.n_items, JunkRule())

    def views(self, sources) -> tuple[np.ndarray, list[bool]]:
        """(Q, D) embeddings and blank flags of ``sources`` (PIL images, bytes), decoded one at a time."""
        from stylespace.data import load_view
        from stylespace.embeddings import embed_images

        pixels, blank = [], []
        for source in sources:
            view = load_view(source, self.size)
            pixels.append(view.pixels)
            blank.append(bool(view.blank))
        stacked = np.stack(pixels) if pixels else np.empty((0, *self.size, 3), np.uint8)
        return embed_images(self.model, stacked, batch_size=self.batch_size, device=self.device), blank

    def row(self, group: str, kind: str, sources, exclude_ids=None, ids=None) -> dict:
        started = time.perf_counter()
        vectors, blank = self.views(sources)
        options = {"model_id": self.model_id, "exclude_ids": exclude_ids}
        no_test = self.plain.recommend(vectors, **options)
        blank_only = self.plain.recommend(vectors, blank=blank, **options)
        full = self.full.recommend(vectors, blank=blank, **options)
        shown = [r.confident for r in no_test]
        reasons = collections.Counter(SHORT.get(r.reason, r.reason) if r.reason else "shown" for r in full)
        row = {"group": group, "kind": kind, "n": len(full), "blank_views": int(sum(blank)),
               "confident_no_test": int(sum(shown)),
               "confident_blank_test": int(sum(r.confident for r in blank_only)),
               "confident_all_tests": int(sum(r.confident for r in full)),
               "refused_of_shown": int(sum(s and r.junk for s, r in zip(shown, full))),
               "reasons": dict(reasons)}
        if ids is not None:  # which real photos the tests refused (shown by the threshold or not), and why
            row["refused"] = {i: {"reason": SHORT.get(r.reason, r.reason), "shown_without_tests": s}
                              for i, s, r in zip(ids, shown, full) if r.junk}
        log(f"  {group} {kind}: {row['n']} queries, confident {row['confident_no_test']} / "
            f"{row['confident_blank_test']} / {row['confident_all_tests']} "
            f"(no test / blank test / all tests) in {time.perf_counter() - started:.1f} s")
        return row


def markdown_table(rows: list[dict]) -> str:
    order = ["shown", *SHORT.values()]
    lines = ["| queries | n | confident, no test (threshold alone) | blank test only | all three tests "
             "| shown without tests, refused | reasons (all three tests) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        reasons = "; ".join(f"{name} {r['reasons'][name]}" for name in order if r["reasons"].get(name))
        lines.append(f"| {r['group']}: {r['kind']} | {r['n']:,} | {r['confident_no_test']:,} | "
                     f"{r['confident_blank_test']:,} | {r['confident_all_tests']:,} | {r['refused_of_shown']:,} "
                     f"| {reasons or '-'} |")
    return "\n".join(lines)


def open_index(path: Path, model, model_path: Path):
    """The index at ``path``, or a clear error when it cannot be measured with ``model`` (from ``model_path``)."""
    from stylespace.index import CatalogIndex
    from stylespace.models import model_id

    if not (path / "index.json").is_file():
        raise SystemExit(f"error: {path} is not an index folder (no index.json); build one with "
                         "`stylespace index build MODEL CATALOG -o DIR`")
    index = CatalogIndex.open(path)
    config = index.config
    build = (f"`stylespace index build {model_path} CATALOG -o DIR` then "
             "`stylespace calibrate-threshold DIR --queries runs/split.csv --catalog CATALOG`")
    if config.model_id != model_id(model):
        raise SystemExit(f"error: the index at {path} was built by model {config.model_id}"
                         f"{f' ({config.model_path})' if config.model_path else ''}, not by this --model "
                         f"({model_id(model)}); build one with this model: {build}")
    from stylespace.recommend import load_calibration

    saved = load_calibration(index)
    if saved is None or saved.threshold is None:
        raise SystemExit(f"error: the index at {path} is not calibrated (no threshold saved with it), so "
                         f"the \"no test\" column would show everything; calibrate it first: `stylespace "
                         f"calibrate-threshold {path} --queries runs/split.csv --catalog CATALOG`")
    if not config.whitened_items:
        raise SystemExit(f"error: the index at {path} is not whitened, so the third junk test (distance from "
                         f"the catalog's centre) is off; build a whitened one (the default): {build}")
    typicality = config.typicality or {}
    if not typicality.get("top1") or not typicality.get("centre_distance"):
        raise SystemExit(f"error: the index at {path} has no junk floors (made before they were measured); "
                         f"`stylespace index rebuild {path}` measures them (then calibrate again)")
    if index.view_outdated:
        log(f"note: the index's images were decoded by an older image preprocessing (view version "
            f"{config.view_version}); queries are decoded by today's")
    return index


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="model folder the index was built with")
    parser.add_argument("--index", type=Path, required=True,
                        help="a whitened index of the catalog built with --model, calibrated with calibrate-threshold")
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG, help="the catalog the index holds (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the junk pictures and the sample of real photos (default: %(default)s)")
    parser.add_argument("--per-kind", type=int, default=150, help="random junk pictures of each kind (default: %(default)s)")
    parser.add_argument("--real", type=int, default=500, help="catalog photos drawn for each distortion (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("-o", "--output", type=Path, help="write the figures as JSON")
    args = parser.parse_args()

    from stylespace.data import load_catalog, load_image_array
    from stylespace.data.distortions import DISTORTIONS
    from stylespace.models import load_model
    from stylespace.recommend.junk import ATYPICAL, BLANK, UNLIKE, UNSURE

    SHORT.update({BLANK: "blank", UNLIKE: "unlike the catalog", ATYPICAL: "atypical", UNSURE: "below threshold"})
    started = time.perf_counter()
    model = load_model(args.model).eval()
    index = open_index(args.index, model, args.model)
    catalog = load_catalog(args.catalog)
    if index.config.catalog_fingerprint and index.config.catalog_fingerprint != catalog.fingerprint():
        log(f"note: the index was built from {index.config.catalog or 'another catalog'}, not {args.catalog} "
            "as it is now (ids are matched by name)")
    judge = Judge(model, index, args.device, args.batch_size)
    rule = judge.full.junk
    log(f"index {args.index}: {len(index):,} items; score {judge.full.score_name}, threshold "
        f"{judge.full.threshold:.4f}; top-1 floor {rule.top1_floor:.4f}, centre ceiling {rule.centre_ceiling:.4f}")

    rows = []
    log("fixed junk pictures")
    for kind, sources in fixed_junk(args.seed).items():
        rows.append(judge.row("fixed", kind, sources))

    log(f"random junk battery, {args.per_kind} per kind")
    for kind, make in Battery(args.seed).kinds().items():
        rows.append(judge.row("random", kind, (make() for _ in range(args.per_kind))))

    pool = [i for i in index.ids if i in catalog]
    if not pool:
        raise SystemExit(f"error: none of the index's items is in {args.catalog}: give the catalog the index "
                         f"was built from (--catalog; the index says {index.config.catalog or 'nothing'})")
    rng = np.random.default_rng([args.seed, 2])
    ids = [str(pool[i]) for i in rng.choice(len(pool), size=min(args.real, len(pool)), replace=False)]
    log(f"{len(ids)} real catalog photos, each left out of its own search")
    for kind, name in REAL_DISTORTIONS.items():
        apply = DISTORTIONS[name].apply
        sources = (apply(image, rng, image) for image in (catalog.read_image(i) for i in ids))
        rows.append(judge.row("real", kind, sources, exclude_ids=[[i] for i in ids], ids=ids))

    size = tuple(model.config.input_size)
    blanks = [i for i in load_image_array(catalog, size=size).blank if i in catalog]
    log(f"{len(blanks)} blank catalog images (image cache at {size[0]} x {size[1]})")
    if blanks:
        rows.append(judge.row("catalog", "blank images", (catalog.read_image(i) for i in blanks),
                              exclude_ids=[[i] for i in blanks], ids=blanks))

    seconds = time.perf_counter() - started
    table = markdown_table(rows)
    print(f"## Junk queries\n\nmodel: {args.model}; index: {args.index} ({len(index):,} items, whitened, "
          f"{judge.full.score_name} score, threshold {judge.full.threshold:.4f}); top-1 floor "
          f"{rule.top1_floor:.4f}, centre ceiling {rule.centre_ceiling:.4f}; seed {args.seed}; {seconds:.0f} s\n")
    print(table)
    print(f"\n- real: {len(ids)} catalog photos drawn from the index, each left out of its own search; for them "
          "\"no test\" is what the threshold shows, and \"refused\" how many of those the junk tests refuse")
    print("- reasons: " + "; ".join(f"{short}: \"{full}\"" for full, short in SHORT.items())
          + "; shown: a confident match")
    if args.output:
        args.output.write_text(json.dumps({
            "command": " ".join(sys.argv), "model": str(args.model), "index": str(args.index),
            "catalog": str(args.catalog), "seed": args.seed, "per_kind": args.per_kind, "real": len(ids),
            "index_items": len(index), "score": judge.full.score_name, "threshold": judge.full.threshold,
            "junk": rule.to_dict(), "reasons": {short: full for full, short in SHORT.items()},
            "seconds": seconds, "rows": rows, "table": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
