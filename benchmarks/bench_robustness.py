"""Robustness of search to real photos: several models side by side, from one run.

For each model: index the whole catalog (whitened, as `stylespace index build`), then search a seeded
sample of distorted catalog photos against it (`stylespace.index.robustness`): exact-product R@1 /
R@10 and the article type of the first other hit, per distortion. Prints one Markdown table.

    .venv/bin/python benchmarks/bench_robustness.py \
        --model packshot=models/packshot:legacy --model default=models/default --items 1000 \
        -o docs/robustness.json

``NAME=PATH:legacy`` measures a model with the preprocessing it was trained with before the canonical
view (no EXIF orientation, no margin trimming: pad on white and resize), so the old model is measured
as it was shipped; ``NAME=PATH:working-copy`` with the canonical view as it was before issue 29 (the
product cut from the reduced working copy, not from the decoded image: the "before" of the small-in-frame
family); without either the canonical view of today is used. ``--family small_in_frame`` measures one
family of distortions (the product at 10 / 25 / 50 % of a 1200 px frame):

    .venv/bin/python benchmarks/bench_robustness.py --family small_in_frame --items 300 \
        --model before=models/default:working-copy --model after=models/default

``--query-views VIEWS`` (repeatable) measures each model on its one index once per choice of query views
(``none``: the canonical view alone; ``mirror``, ``unstretch``, ``mirror,unstretch`` or ``all``: the query also
searched as those views, each item's best score kept; `stylespace.data.query_views`), a column each:

    .venv/bin/python benchmarks/bench_robustness.py --model default=models/default --items 1000 \
        --query-views none --query-views mirror --query-views unstretch --query-views all -o views.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CATALOG = ROOT.parent / "shared" / "datasets" / "fashion-product-images-small.zip"


@contextlib.contextmanager
def legacy_view():
    """The decoder as it was before the canonical view (VIEW_VERSION 1): no EXIF, no trimming."""
    from stylespace.data import cache, images

    def plain(image, size):
        return images.View(images.fit_to_size(image, size), None, (0.0, 0.0, 1.0, 1.0), 1.0,
                           float(images.np.asarray(image).std()))

    saved = images.canonical_view, cache.canonical_view, images._upright, cache.VIEW_VERSION
    images.canonical_view = cache.canonical_view = plain
    images._upright = lambda image: image
    cache.VIEW_VERSION = "1-legacy"  # its own image cache
    try:
        yield
    finally:
        images.canonical_view, cache.canonical_view, images._upright, cache.VIEW_VERSION = saved


@contextlib.contextmanager
def working_copy_view():
    """The canonical view as it was before issue 29 (VIEW_VERSION 3): the product cut from the working copy,
    a JPEG decoded once. A catalog packshot's view is the same in both, so the image cache is shared."""
    import functools

    from stylespace.data import images

    saved = images._view_and_trim, images._stored_size
    images._view_and_trim = functools.partial(saved[0], refine=False)
    images._stored_size = lambda source: None
    try:
        yield
    finally:
        images._view_and_trim, images._stored_size = saved


VIEWS = {"legacy": (legacy_view, "legacy view"), "working-copy": (working_copy_view, "view cut from the working copy"),
         "": (contextlib.nullcontext, "canonical view")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--model", action="append", required=True,
                        help="NAME=PATH[:legacy|:working-copy][@N], repeatable; @N indexes the model searching "
                             "the top N whitened dimensions (index search_dims; default: all)")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distortions", default="", help="comma-separated names (default: all)")
    parser.add_argument("--family", default="", help="one family of distortions instead (small_in_frame)")
    parser.add_argument("--query-views", action="append", default=None, metavar="VIEWS",
                        help="none, mirror, unstretch, mirror,unstretch or all; repeatable: each model is measured "
                             "once per choice, on the same index (default: none)")
    parser.add_argument("-o", "--output", type=Path, help="write all reports as JSON")
    args = parser.parse_args()

    import torch

    from stylespace.data import load_catalog
    from stylespace.data.distortions import DISTORTIONS, FAMILIES
    from stylespace.data.query_views import QueryViews
    from stylespace.index.build import build_index
    from stylespace.index.robustness import RobustnessConfig, markdown_table, measure_robustness
    from stylespace.models import load_model
    from stylespace.utils import StylespaceError

    torch.set_num_threads(torch.get_num_threads())
    if args.family and args.family not in FAMILIES:
        parser.error(f"--family {args.family!r}: expected one of {', '.join(FAMILIES)}")
    names = (FAMILIES[args.family] if args.family else tuple(n for n in args.distortions.split(",") if n)) \
        or tuple(DISTORTIONS)
    try:
        choices = [QueryViews.parse(text) for text in (args.query_views or ["none"])]
    except StylespaceError as exc:
        parser.error(f"--query-views: {exc}")
    configs = [RobustnessConfig(items=args.items, seed=args.seed, distortions=names, query_views=views)
               for views in choices]
    config = configs[0]
    catalog = load_catalog(args.catalog)
    reports, records = [], {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        path, _, dims = path.partition("@")
        path, _, mode = path.partition(":")
        if dims and not dims.isdigit():
            parser.error(f"--model {spec}: @{dims} is not a number of dimensions")
        started = time.perf_counter()
        if mode not in VIEWS:
            parser.error(f"--model {spec}: unknown view {mode!r}; expected legacy or working-copy")
        view, view_name = VIEWS[mode]
        with view(), \
                tempfile.TemporaryDirectory(prefix="bench-robustness-") as scratch:
            model = load_model(path)
            index, _ = build_index(model, catalog, Path(scratch) / "index", model_path=path, progress=False,
                                   search_dims=int(dims or 0))
            print(f"{name}: indexed {len(index):,} items in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            for measured in configs:
                views = measured.query_views
                shown = name if not views.enabled else f"{name}+views:{','.join(views.views)}"
                report = measure_robustness(model, catalog, index, measured,
                                            log=lambda line, shown=shown: print(f"  {shown} {line}", file=sys.stderr))
                print(f"{shown}: measured in {report.seconds:.0f} s", file=sys.stderr)
                label = f"{shown} ({view_name})"
                reports.append((label, report))
                records[label] = {"model": path, "view": mode or "canonical", "query_views": list(views.names),
                                  **report.to_dict()}
            index.close()
    table = markdown_table(reports)
    print(f"{config.items} catalog items, seed {config.seed}, searched against the whole index of "
          f"{reports[0][1].index_items:,} items; cells are exact-product R@1 / R@10 / article-type P@1 (%)\n")
    print(table)
    if args.output:
        args.output.write_text(json.dumps({"command": " ".join(sys.argv), "reports": records, "table": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
