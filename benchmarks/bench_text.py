"""Search by words on the shared catalog: 200 shopper queries, names as queries, synonyms and misspellings,
zero-shot article types, an image with words, and the latency of one query (issue 25).

    .venv/bin/python benchmarks/bench_text.py MODEL --split split.csv [--text-model DIR] [--index DIR] [--json]

MODEL is the image model (a folder, or a shipped name: default); the text model defaults to MODEL/text (what
`stylespace text-train MODEL CATALOG --split split.csv` writes) and must have been trained for MODEL. The index
is the whole catalog embedded by MODEL (built into --index, or a temporary folder, when it is not there yet).

The queries (fixed seed): 200 (gender, colour, article type) combinations drawn from those of the split's
main/test items, each written as a shopper would ("red tops for women", "men navy blue shirt"). An item is
relevant when it has all three. Precision@10 is measured over the whole index (``ceiling`` is the best any
ranking can do: some combinations have fewer than 10 items) and over the test items only (images the text
model never saw). "Embedding" ignores the names (a catalog without names), "hybrid" is what a catalog with
names gets (BM25 on names + embedding, reciprocal rank fusion), "BM25" the names alone.

Targets: embedding p@10 >= 80 %, hybrid >= 95 %; own name as query R@10 >= 90 %; synonyms and misspellings
within 5 points of the right spelling; zero-shot top-1 over the 30 new types >= 60 %; p50 <= 5 ms in-process.
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
FACTS = ("gender", "baseColour", "articleType")
# How shoppers write a (gender, colour, article type) request; {type} is lower case, plural or singular.
SHOPPER_TEMPLATES = ("{colour} {type} for {gender}", "{gender} {colour} {type}", "{colour} {gender} {type}")
# (what the catalog says, what a shopper may type instead): synonyms, spellings and misspellings. Fixed here,
# never used in training.
VARIANTS = (
    ("tshirts", "tees"), ("tshirts", "t-shirts"), ("tshirts", "tshrits"), ("tshirts", "t shirts"),
    ("sports shoes", "trainers"), ("sports shoes", "running shoes"), ("casual shoes", "sneakers"),
    ("navy blue", "navy"), ("shirts", "shrits"), ("jeans", "jenas"), ("watches", "wrist watches"),
    ("handbags", "hand bags"), ("handbags", "purses"), ("women", "ladies"), ("men", "mens"),
    ("sunglasses", "sunglases"), ("heels", "high heels"), ("kurtas", "kurta"), ("track pants", "joggers"),
    ("sweatshirts", "hoodies"), ("black", "blak"), ("white", "whte"),
)


def shopper_phrase(combo: tuple[str, str, str], rng: np.random.Generator) -> str:
    from stylespace.text import singular

    gender, colour, article = combo
    article = article.lower() if rng.random() < 0.5 else singular(article).lower()
    template = SHOPPER_TEMPLATES[int(rng.integers(len(SHOPPER_TEMPLATES)))]
    return template.format(gender=gender.lower(), colour=colour.lower(), type=article)


def facts_of(meta: dict) -> tuple[str, str, str]:
    return tuple(str(meta.get(c) or "") for c in FACTS)


def precision_at_10(answer, combo) -> float:
    return sum(facts_of(h.meta) == combo for h in answer.hits[:10]) / 10.0


def measure_queries(search, queries, combos, mode: str, exclude=()) -> dict:
    latencies, precisions, answered = [], [], 0
    for text, combo in zip(queries, combos):
        started = time.perf_counter()
        answer = search.search(text, 10, mode=mode, exclude_ids=exclude)
        latencies.append(time.perf_counter() - started)
        precisions.append(precision_at_10(answer, combo))
        answered += answer.confident
    return {"p10": float(np.mean(precisions)), "answered": answered / len(queries),
            "p50_ms": 1000 * float(np.percentile(latencies, 50)), "p99_ms": 1000 * float(np.percentile(latencies, 99))}


def open_or_build_index(model, model_dir, catalog, folder: Path | None):
    from stylespace.index import CatalogIndex
    from stylespace.index.build import build_index
    from stylespace.models import model_id

    if folder is not None and (folder / "index.json").exists():
        index = CatalogIndex.open(folder)
        if index.model_id == model_id(model):
            return index, 0.0
        print(f"{folder}: made by model {index.model_id}, not {model_id(model)}; building it again", file=sys.stderr)
    folder = folder or Path(tempfile.mkdtemp(prefix="bench-text-")) / "index"
    started = time.perf_counter()
    index, _ = build_index(model, catalog, folder, model_path=model_dir, overwrite=True, progress=sys.stderr.isatty())
    return index, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the image model (folder or shipped name) the text model was trained for")
    parser.add_argument("--split", type=Path, required=True, help="the 004 split manifest (`stylespace split`)")
    parser.add_argument("--text-model", type=Path, help="text model folder (default: MODEL/text)")
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--index", type=Path, help="index of the whole catalog by MODEL (built here when absent)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--names", type=int, default=0, help="test items' names as queries (0 = all of them)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    args = parser.parse_args()

    from stylespace.data import SplitManifest, load_catalog
    from stylespace.index.text_search import TextSearch
    from stylespace.models import load_model, model_id
    from stylespace.models.shipped import resolve_model_dir
    from stylespace.text import TextModel, item_name, text_prototypes

    model_dir = resolve_model_dir(args.model)
    model = load_model(model_dir)
    text_model = TextModel.load(args.text_model or model_dir / "text", image_model_id=model_id(model))
    catalog = load_catalog(args.catalog)
    manifest = SplitManifest.load(args.split)
    index, build_seconds = open_or_build_index(model, model_dir, catalog, args.index)
    search = TextSearch(index, text_model)
    started = time.perf_counter()
    space = search.space
    space_seconds = time.perf_counter() - started
    in_index = set(space.ids)
    metas = {i: catalog[i].meta for i in in_index}
    test_ids = [i for i in manifest.select("main", "test").ids if i in in_index]
    not_test = sorted(in_index - set(test_ids))
    rng = np.random.default_rng(args.seed)
    result = {"model": str(model_dir), "model_id": model_id(model), "text_model": str(text_model.folder),
              "encoder": text_model.config.encoder, "floor": text_model.floor, "index_items": len(in_index),
              "index_build_seconds": round(build_seconds, 1), "text_space_seconds": round(space_seconds, 2),
              "test_items": len(test_ids), "seed": args.seed}

    # 1. shopper queries from (gender, colour, article type) combinations of the test part
    combos_all = sorted({facts_of(metas[i]) for i in test_ids if all(facts_of(metas[i]))})
    picked = [combos_all[int(j)] for j in rng.choice(len(combos_all), min(args.queries, len(combos_all)), replace=False)]
    queries = [shopper_phrase(c, rng) for c in picked]
    counts: dict[tuple, int] = {}
    test_counts: dict[tuple, int] = {}
    for i in in_index:
        counts[facts_of(metas[i])] = counts.get(facts_of(metas[i]), 0) + 1
    for i in test_ids:
        test_counts[facts_of(metas[i])] = test_counts.get(facts_of(metas[i]), 0) + 1
    for text in queries[:5]:  # warm-up: first calls pay for lazy set-up, not what a query costs
        search.search(text, 10)
    rows = {}
    for name, mode in (("embedding (names hidden)", "embedding"), ("hybrid (names + embedding)", "auto"),
                       ("BM25 on names alone", "keywords")):
        whole = measure_queries(search, queries, picked, mode)
        tests = measure_queries(search, queries, picked, mode, exclude=not_test)
        rows[name] = {"mode": mode, **whole, "p10_test_items": tests["p10"]}
    result["shopper_queries"] = {
        "queries": len(queries), "examples": queries[:8], "rows": rows,
        "ceiling": float(np.mean([min(10, counts[c]) / 10 for c in picked])),
        "ceiling_test_items": float(np.mean([min(10, test_counts[c]) / 10 for c in picked]))}

    # 2. the test items' own names: the item, or one with its three attributes, in the top 10
    named = [i for i in test_ids if item_name(metas[i])]
    if args.names:
        named = [named[int(j)] for j in np.sort(rng.choice(len(named), min(args.names, len(named)), replace=False))]
    own = {}
    for mode in ("embedding", "auto"):
        hits = 0
        for i in named:
            answer = search.search(item_name(metas[i]), 10, mode=mode)
            hits += any(h.id == i or facts_of(h.meta) == facts_of(metas[i]) for h in answer.hits)
        own[mode] = hits / max(1, len(named))
    result["own_name_r10"] = {"queries": len(named), "embedding": own["embedding"], "hybrid": own["auto"]}

    # 3. synonyms and misspellings: the same combination written the catalog's way and the shopper's way
    variant_rows = []
    for canonical, variant in VARIANTS:
        matching = [c for c in combos_all if f" {canonical} " in f" {c[0].lower()} {c[1].lower()} {c[2].lower()} "]
        if not matching:
            continue
        chosen = [matching[int(j)] for j in np.sort(rng.choice(len(matching), min(10, len(matching)), replace=False))]
        right = [f"{c[1]} {c[2]} for {c[0]}".lower() for c in chosen]
        swapped = [f" {q} ".replace(f" {canonical} ", f" {variant} ").strip() for q in right]
        row = {"catalog_word": canonical, "shopper_word": variant, "queries": len(chosen)}
        for mode, key in (("embedding", "embedding"), ("auto", "hybrid")):
            row[f"{key}_right"] = measure_queries(search, right, chosen, mode)["p10"]
            row[f"{key}_variant"] = measure_queries(search, swapped, chosen, mode)["p10"]
        variant_rows.append(row)
    result["variants"] = variant_rows
    for key in ("embedding", "hybrid"):
        drops = [r[f"{key}_right"] - r[f"{key}_variant"] for r in variant_rows]
        result[f"variants_{key}_mean_drop"] = float(np.mean(drops)) if drops else None

    # 4. zero-shot: the 30 new article types from their names, beside 1-NN from their support images
    new_test = manifest.select("new", "test")
    new_support = manifest.select("new", "support")
    classes = list(manifest.config.new_classes) or sorted(set(new_test.labels))
    test_rows = [(i, l) for i, l in zip(new_test.ids, new_test.labels) if i in in_index]
    support_rows = [(i, l) for i, l in zip(new_support.ids, new_support.labels) if i in in_index]
    test_vectors = space.vectors[[space.position[i] for i, _ in test_rows]]
    support_vectors = space.vectors[[space.position[i] for i, _ in support_rows]]
    prototypes = text_prototypes(text_model, classes)
    zero = [classes[int(j)] for j in np.argmax(test_vectors @ prototypes.T, axis=1)]
    nearest = np.argmax(test_vectors @ support_vectors.T, axis=1)
    truth = [l for _, l in test_rows]
    result["zero_shot"] = {"classes": len(classes), "test_items": len(test_rows),
                           "text_prototypes_top1": float(np.mean([p == t for p, t in zip(zero, truth)])),
                           "one_nn_support_top1": float(np.mean([support_rows[int(j)][1] == t
                                                                 for j, t in zip(nearest, truth)]))}

    # 5. "like this photo, but <colour>": an image's vector with a colour's words
    colours_of: dict[tuple[str, str], set[str]] = {}
    for c, n in counts.items():
        if n >= 10:
            colours_of.setdefault((c[0], c[2]), set()).add(c[1])
    candidates = [i for i in test_ids if len(colours_of.get((metas[i]["gender"], metas[i]["articleType"]), ())) > 1]
    chosen = [candidates[int(j)] for j in rng.choice(len(candidates), min(200, len(candidates)), replace=False)]
    combined = {"queries": len(chosen), "image_alone": [], "words_alone": [], "image_and_words": []}
    for i in chosen:
        gender, colour, article = facts_of(metas[i])
        others = sorted(colours_of[(gender, article)] - {colour})
        target = (gender, others[int(rng.integers(len(others)))], article)
        vector = space.vectors[space.position[i]]
        positions, _ = space.nearest(vector, 11, space.allowed(None, [i]))
        combined["image_alone"].append(sum(facts_of(space.metas[p]) == target for p in positions[:10]) / 10)
        words = search.search(target[1].lower(), 10, mode="embedding", exclude_ids=[i])
        combined["words_alone"].append(precision_at_10(words, target))
        both = search.search(target[1].lower(), 10, image_vector=vector, exclude_ids=[i])
        combined["image_and_words"].append(precision_at_10(both, target))
    result["image_and_words"] = {k: (float(np.mean(v)) if v else None) if isinstance(v, list) else v
                                 for k, v in combined.items()}

    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    pct = lambda v: f"{100 * v:.1f} %"  # noqa: E731
    s = r["shopper_queries"]
    lines = [f"Text model {r['text_model']} ({r['encoder']}) for image model {r['model_id']} ({r['model']}); "
             f"{r['index_items']:,} items indexed, {r['test_items']:,} in main/test; similarity floor {r['floor']:.3f}",
             "", f"{s['queries']} shopper queries (seed {r['seed']}; e.g. {', '.join(repr(q) for q in s['examples'][:4])}); "
             f"precision@10 ceiling {pct(s['ceiling'])} (whole index), {pct(s['ceiling_test_items'])} (test items only)", "",
             "| ranking | p@10, whole index | p@10, test items only | answered | p50 / p99 latency |",
             "| --- | --- | --- | --- | --- |"]
    for name, row in s["rows"].items():
        lines.append(f"| {name} | {pct(row['p10'])} | {pct(row['p10_test_items'])} | {pct(row['answered'])} | "
                     f"{row['p50_ms']:.2f} / {row['p99_ms']:.2f} ms |")
    o = r["own_name_r10"]
    lines += ["", f"Own name as query, R@10 (the item or one with its gender, colour and type), {o['queries']:,} test "
              f"items: embedding {pct(o['embedding'])}, hybrid {pct(o['hybrid'])}", "",
              "| catalog word -> shopper word | queries | embedding: right / variant | hybrid: right / variant |",
              "| --- | --- | --- | --- |"]
    for v in r["variants"]:
        lines.append(f"| {v['catalog_word']} -> {v['shopper_word']} | {v['queries']} | {pct(v['embedding_right'])} / "
                     f"{pct(v['embedding_variant'])} | {pct(v['hybrid_right'])} / {pct(v['hybrid_variant'])} |")
    if r["variants"]:
        lines.append(f"| mean drop | | {100 * r['variants_embedding_mean_drop']:.1f} points | "
                     f"{100 * r['variants_hybrid_mean_drop']:.1f} points |")
    z = r["zero_shot"]
    c = r["image_and_words"]
    lines += ["", f"Zero-shot, {z['classes']} new article types ({z['test_items']:,} new/test items): text prototypes "
              f"{pct(z['text_prototypes_top1'])} top-1; 1-NN from their support images {pct(z['one_nn_support_top1'])}"]
    if not c["queries"]:
        lines += ["", "An image and a colour's name: not measured (no gender and type comes in two colours of 10 items)"]
        return "\n".join(lines)
    lines += ["", f"An image and a colour's name ({c['queries']} test items, another colour their gender and type "
              f"come in), p@10 for the three attributes: image alone {pct(c['image_alone'])}, the colour's name "
              f"alone {pct(c['words_alone'])}, both {pct(c['image_and_words'])}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
