"""Junk is never a confident match: an upload that is not a product photo (blank or near-uniform, noise,
a gradient, a text screenshot, a landscape) gets "no confident match" with the reason, from the
recommender and the `recommend` CLI; the floors of the test are the catalog's own figures, saved in
index.json. Blank catalog images are recorded by the image cache, reported, and left out of an index
unless asked. (The service's answer is tested in test_service.py.)"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import JUNK, blank_picture, near_uniform_picture, write_kaggle_catalog
from stylespace.index import CatalogIndex
from stylespace.recommend import JunkRule, SelectiveRecommender
from stylespace.recommend.junk import ATYPICAL, BLANK, JUNK_REASONS, UNLIKE, UNSURE

MODEL = "model-a"




# --- the rule ------------------------------------------------------------------------------------------------


def test_the_rule_gives_one_reason_per_query_blank_first():
    rule = JunkRule(top1_floor=0.5, centre_ceiling=1.0)
    reasons = rule.reasons(top1=np.array([0.9, 0.4, 0.9, np.nan, 0.2]), centre=np.array([0.1, 0.1, 2.0, 0.1, 5.0]),
                           blank=[True, False, False, False, False])
    assert reasons == [BLANK, UNLIKE, ATYPICAL, None, UNLIKE]
    off = JunkRule()  # no floors: only a blank picture is refused
    assert off.reasons(top1=np.array([0.0, 0.0]), centre=np.array([9.0, 9.0]), blank=[True, False]) == [BLANK, None]
    assert JunkRule.from_typicality({}) == off
    assert JunkRule.from_typicality({"top1": {"0.5": 0.3}, "centre_distance": {"99.5": 0.2}}) == JunkRule(0.3, 0.2)


def clustered(n=400, dim=12, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, dim))
    labels = rng.integers(0, 5, n)
    vectors = (centres[labels] + spread * rng.normal(size=(n, dim))).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), labels, centres


def test_the_floors_are_the_catalogs_own_figures_saved_in_index_json(tmp_path):
    vectors, labels, _ = clustered()
    ids = [f"c{i}" for i in range(len(vectors))]
    index = CatalogIndex.create(tmp_path / "w", ids, vectors, model_id=MODEL, whiten=True)
    typicality = CatalogIndex.open(index.folder).config.typicality  # read back from index.json
    assert typicality["items"] == typicality["of"] == 400
    # leave-one-out top-1 of every item, in the space searches compare (whitened)
    loo = np.array([hits[0].score for hits in index.search_ids(ids, k=1)])
    assert typicality["top1"]["0.5"] == pytest.approx(np.percentile(loo, 0.5), abs=1e-5)
    centre = index.centre_distances(index.vectors(ids))
    assert typicality["centre_distance"]["99.5"] == pytest.approx(np.percentile(centre, 99.5), rel=1e-5)
    rule = SelectiveRecommender(index).junk
    assert rule == JunkRule(typicality["top1"]["0.5"], typicality["centre_distance"]["99.5"])
    # about 1 % of the catalog's own items are flagged, by construction of the percentiles
    flagged = rule.reasons(top1=loo, centre=centre)
    assert 0 < sum(r is not None for r in flagged) <= 0.015 * len(ids) + 1

    plain = CatalogIndex.create(tmp_path / "p", ids, vectors, model_id=MODEL)
    assert "centre_distance" not in plain.config.typicality and plain.centre_distances(vectors) is None
    assert SelectiveRecommender(plain).junk.centre_ceiling is None
    index.rebuild(whiten=False)  # measured again on what the index then holds, in the space it then searches
    assert "centre_distance" not in CatalogIndex.open(index.folder).config.typicality


def test_junk_vectors_are_never_confident_whatever_the_threshold(tmp_path):
    vectors, labels, centres = clustered()
    catalog, held_out = vectors[:300], vectors[300:]
    ids = [f"c{i}" for i in range(300)]
    index = CatalogIndex.create(tmp_path / "idx", ids, catalog, model_id=MODEL, labels=[f"L{v}" for v in labels[:300]],
                                metas=[{"kind": f"L{v}"} for v in labels[:300]])
    far = -centres[:1] / np.linalg.norm(centres[0])  # opposite the first cluster: like nothing in the catalog
    queries = np.vstack([catalog[:1], far, held_out]).astype(np.float32)
    blank = [True] + [False] * (len(queries) - 1)  # a catalog item's own vector, but its picture was blank
    for recommender in (SelectiveRecommender(index, "top1"),  # uncalibrated: everything else is shown
                        SelectiveRecommender(index, "top1", threshold=-1.0)):  # a threshold every query clears
        found = recommender.recommend(queries, blank=blank)
        assert (found[0].confident, found[0].reason, found[0].junk) == (False, BLANK, True)
        assert (found[1].confident, found[1].reason) == (False, UNLIKE)
        assert found[0].items and found[1].items  # the items are still there, for --all / "show anyway"
        passed = [r for r in found[2:] if not r.junk]
        assert len(passed) >= 0.95 * len(held_out) and all(r.confident and r.reason is None for r in passed)
    # a threshold: what the junk test passes is judged on its confidence, with its own reason
    strict = SelectiveRecommender(index, "top1", threshold=2.0).recommend(held_out[:5])
    assert all(not r.confident and r.reason == UNSURE and not r.junk for r in strict)
    # a filter narrows what is recommended, not what the query is compared with
    other = {"kind": [f"L{(labels[300] + 1) % 5}"]}
    narrowed = SelectiveRecommender(index, "top1").recommend(held_out[:1], where=other)[0]
    assert narrowed.items[0].meta["kind"] == other["kind"][0] and not narrowed.junk
    # the embedding tests off: the far vector would have been shown
    assert SelectiveRecommender(index, "top1", junk=JunkRule()).recommend(far)[0].confident


def test_a_vector_off_the_catalogs_spread_is_atypical(tmp_path):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(400, 12)) * np.r_[np.ones(8), np.full(4, 0.01)]  # 4 directions barely vary
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    index = CatalogIndex.create(tmp_path / "w", [f"c{i}" for i in range(400)], vectors, model_id=MODEL, whiten=True)
    query = np.vstack([vectors[:1], vectors[:1]])
    query[1, 8:] = 0.3  # an item, moved far out along the directions the catalog never takes
    found = SelectiveRecommender(index, "top1").recommend(query)
    assert found[0].reason is None and not found[1].confident and found[1].junk
    # the centre test alone (the top-1 test off) says why
    ceiling = SelectiveRecommender(index).junk.centre_ceiling
    alone = SelectiveRecommender(index, "top1", junk=JunkRule(centre_ceiling=ceiling)).recommend(query)
    assert [r.reason for r in alone] == [None, ATYPICAL]
    assert index.centre_distances(query[1:])[0] > ceiling > index.centre_distances(query[:1])[0]


# --- pictures through the embedding model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A generated catalog (144 items: enough to whiten 32 dimensions) indexed with an untrained compact
    model, calibrated at 50 % coverage on its own items; and fresh generated products (another seed)."""
    import torch

    from stylespace.data import load_catalog
    from stylespace.index.build import build_index
    from stylespace.models import ModelConfig, build_model, model_id, save_model
    from stylespace.recommend import calibrate

    root = tmp_path_factory.mktemp("junk")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STYLESPACE_CACHE", str(root / "cache"))
        catalog = load_catalog(write_kaggle_catalog(root / "catalog", per_class=24))
        torch.manual_seed(0)
        model = build_model(ModelConfig(backbone="compact", embedding_dim=32, width=8)).eval()
        save_model(model, root / "model")
        index, failed = build_index(model, catalog, root / "index", model_path=root / "model", device="cpu",
                                    progress=False)
        assert not failed and index.config.whitened_items == 144
        ids = index.ids
        calibrate(index, index.vectors(ids), [catalog[i].label for i in ids], query_ids=ids,
                  model_id=model_id(model), target_coverage=0.5).save(index)
        fresh = load_catalog(write_kaggle_catalog(root / "fresh", per_class=4, seed=5))
        yield model, CatalogIndex.open(root / "index"), fresh, root


def test_generated_junk_pictures_are_never_confident_and_say_why(indexed):
    from stylespace.index.build import embed_query_views

    model, index, fresh, _ = indexed
    names = list(JUNK)
    vectors, blank = embed_query_views(model, [JUNK[name]() for name in names], device="cpu")
    calibrated = SelectiveRecommender.from_index(index)
    uncalibrated = SelectiveRecommender(index)  # no threshold: only the junk test can refuse
    for recommender in (calibrated, uncalibrated):
        found = dict(zip(names, recommender.recommend(vectors, blank=blank)))
        for name, recommendation in found.items():
            assert not recommendation.confident and recommendation.reason in JUNK_REASONS, (name, recommendation.reason)
        assert found["blank"].reason == found["near-uniform"].reason == BLANK
        for name in ("noise", "text", "landscape"):  # pictures with something in them: the embedding tests
            assert found[name].reason in (UNLIKE, ATYPICAL), (name, found[name].reason)
    # fresh product photos pass the junk test (the threshold alone decides on them)
    products, product_blank = embed_query_views(model, [fresh.read_image(item) for item in fresh.items], device="cpu")
    judged = uncalibrated.recommend(products, blank=product_blank)
    assert not any(product_blank) and sum(r.junk for r in judged) <= 1
    assert sum(r.confident for r in calibrated.recommend(products, blank=product_blank)) > 0


def test_recommend_cli_says_no_confident_match_with_the_reason_in_one_json_document(indexed, tmp_path):
    from typer.testing import CliRunner

    from stylespace.cli import app

    model, index, fresh, _ = indexed
    files = []
    for name in ("blank", "noise", "text"):
        files.append(tmp_path / f"{name}.png")
        JUNK[name]().save(files[-1])
    files.append(tmp_path / "product.png")
    fresh.read_image(fresh.items[0]).save(files[-1])
    result = CliRunner().invoke(app, ["recommend", str(index.folder), *map(str, files), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)  # the whole stdout is one JSON document
    by_name = {Path(q["query"]).stem: q for q in document["queries"]}
    assert by_name["blank"]["reason"] == BLANK
    for name in ("blank", "noise", "text"):
        entry = by_name[name]
        assert entry["shown"] is False and entry["not_a_product"] is True and entry["items"] == []
    product = by_name["product"]
    assert product["not_a_product"] is False and (product["reason"] is None) == product["shown"]
    assert document["junk"]["top1_floor"] == index.config.typicality["top1"]["0.5"]
    text = CliRunner().invoke(app, ["recommend", str(index.folder), str(files[0])], catch_exceptions=False).output
    assert f"no confident match: {BLANK}" in " ".join(text.split())


# --- blank catalog images --------------------------------------------------------------------------------------


def catalog_with_blanks(root: Path) -> tuple[Path, list[str]]:
    """The small generated catalog (24 items) plus a blank and a near-uniform product image."""
    folder = write_kaggle_catalog(root, per_class=4)
    with (folder / "styles.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    blank_ids = ["9001", "9002"]
    blank_picture((60, 80)).save(folder / "images" / "9001.png")
    near_uniform_picture((60, 80)).save(folder / "images" / "9002.png")
    for item_id in blank_ids:
        rows.append([item_id, "Men", "Apparel", "Topwear", "Tshirts", "White", "Summer", "2012", "Casual",
                     f"Blank {item_id}"])
    with (folder / "styles.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return folder, blank_ids


def test_blank_catalog_images_are_recorded_reported_and_left_out_unless_asked(tmp_path, cache_dir):
    import torch
    from typer.testing import CliRunner

    from stylespace.cli import app
    from stylespace.data import load_catalog, load_image_array
    from stylespace.index.build import BLANK_REASON, add_items, build_index
    from stylespace.models import ModelConfig, build_model, save_model

    folder, blank_ids = catalog_with_blanks(tmp_path / "catalog")
    catalog = load_catalog(folder)
    array = load_image_array(catalog, progress=False)
    assert array.blank == blank_ids and set(blank_ids) <= set(array.ids)  # they decode: recorded, not failed
    meta = json.loads((array.folder / "meta.json").read_text())
    assert meta["blank"] == blank_ids
    # a cache made before blanks were recorded is made again, so that they are known
    del meta["blank"]
    (array.folder / "meta.json").write_text(json.dumps(meta))
    assert load_image_array(catalog, progress=False).blank == blank_ids

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="compact", embedding_dim=16, width=8)).eval()
    save_model(model, tmp_path / "model")
    index, left_out = build_index(model, catalog, tmp_path / "idx", progress=False)
    assert left_out == {i: BLANK_REASON for i in blank_ids}
    assert len(index) == 24 and not any(i in index for i in blank_ids)
    assert add_items(index, model, catalog, progress=False) == (0, {i: BLANK_REASON for i in blank_ids})
    everything, left_out = build_index(model, catalog, tmp_path / "all", progress=False, include_blank=True)
    assert left_out == {} and len(everything) == 26 and all(i in everything for i in blank_ids)

    runner = CliRunner()

    def run(*args) -> dict:
        result = runner.invoke(app, [*map(str, args), "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert run("catalog", folder)["blank"] == blank_ids
    built = run("index", tmp_path / "model", folder, "-o", tmp_path / "cli")
    assert built["count"] == 24 and built["blank_left_out"] == 2 and built["failed"] == {i: BLANK_REASON for i in blank_ids}
    built = run("index", tmp_path / "model", folder, "-o", tmp_path / "cli", "--overwrite", "--include-blank")
    assert built["count"] == 26 and built["blank_left_out"] == 0
    said = runner.invoke(app, ["index", str(tmp_path / "model"), str(folder), "-o", str(tmp_path / "said")]).output
    assert "2 item(s) left out: blank or nearly uniform image" in " ".join(said.split())
    said = runner.invoke(app, ["catalog", str(folder)]).output
    assert "2 blank or nearly uniform image(s)" in " ".join(said.split())
