"""Style compatibility (seed 003): pair data, the cross-category sampler, head training, saving and the verdict."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_kaggle_catalog
from stylespace.compat.model import CompatibilityConfig, CompatibilityHead
from stylespace.compat.pairs import (
    PairSet,
    ProxyPairConfig,
    build_proxy_pairs,
    complement_table,
    is_proxy_negative,
    is_proxy_positive,
    item_split,
    split_pairs,
    _Meta,
)
from stylespace.compat.sampler import CrossCategoryPairSampler
from stylespace.compat.train import PairFeatures, train_compatibility
from stylespace.data import load_catalog
from stylespace.utils import StylespaceError

torch.set_num_threads(1)


@pytest.fixture
def pair_catalog(tmp_path, cache_dir):
    """180 synthetic items over 5 complementary subCategories, genders alternating."""
    return load_catalog(write_kaggle_catalog(tmp_path / "catalog", per_class=30))


def meta_of(catalog, item_id) -> _Meta:
    m = catalog[item_id].meta
    return _Meta(m["subCategory"], m["gender"], m["usage"], m["season"])


# --- pair data -----------------------------------------------------------------------------------


def test_proxy_pairs_follow_the_rules_and_proportions(pair_catalog):
    config = ProxyPairConfig(n_pairs=300, positive_fraction=0.06)
    pairs, report = build_proxy_pairs(pair_catalog, config)
    assert len(pairs) == 300
    assert report["positives"] == sum(round(round(300 * f) * 0.06) for f in config.fractions) == 19  # 11 + 4 + 4
    assert report["positive_fraction"] == pytest.approx(0.06, abs=0.005)
    complements = complement_table()
    for a, b, y in zip(pairs.id_a, pairs.id_b, pairs.label):
        ma, mb = meta_of(pair_catalog, a), meta_of(pair_catalog, b)
        assert ma.sub != mb.sub, "every pair is cross-category"
        assert item_split(a) == item_split(b), "a pair never straddles two item splits"
        if y == 1:
            assert is_proxy_positive(ma, mb, complements)
            assert ma.gender == mb.gender, "no cross-gender positives"
        else:
            assert is_proxy_negative(ma, mb, complements)
    assert len({tuple(sorted(p)) for p in zip(pairs.id_a, pairs.id_b)}) == len(pairs), "no duplicate pairs"


def test_proxy_negatives_copy_the_positives_category_combinations(pair_catalog):
    pairs, _ = build_proxy_pairs(pair_catalog, ProxyPairConfig(n_pairs=300))
    sub = {i: pair_catalog[i].meta["subCategory"] for i in pair_catalog.ids}
    combos = lambda y: {tuple(sorted((sub[a], sub[b]))) for a, b, l in zip(pairs.id_a, pairs.id_b, pairs.label) if l == y}
    assert combos(0) <= combos(1)


def test_proxy_pairs_are_deterministic_by_seed(pair_catalog, tmp_path):
    first = build_proxy_pairs(pair_catalog, ProxyPairConfig(n_pairs=200, seed=3))[0].save_csv(tmp_path / "a.csv")
    again = build_proxy_pairs(pair_catalog, ProxyPairConfig(n_pairs=200, seed=3))[0].save_csv(tmp_path / "b.csv")
    other = build_proxy_pairs(pair_catalog, ProxyPairConfig(n_pairs=200, seed=4))[0].save_csv(tmp_path / "c.csv")
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_pairs_csv_round_trip_through_load_catalog(pair_catalog, tmp_path):
    pairs, _ = build_proxy_pairs(pair_catalog, ProxyPairConfig(n_pairs=100))
    path = pairs.save_csv(tmp_path / "pairs.csv")
    assert path.read_text().splitlines()[0] == "image_a,image_b,label"
    back = PairSet.from_catalog(load_catalog(path, base=pair_catalog))
    assert (back.id_a, back.id_b, back.label.tolist()) == (pairs.id_a, pairs.id_b, pairs.label.tolist())


def test_proxy_pairs_need_kaggle_metadata(tmp_path, cache_dir):
    folder = tmp_path / "tree"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        from PIL import Image

        Image.new("RGB", (8, 8), "white").save(folder / cls / "1.png")
    with pytest.raises(StylespaceError, match="needs item columns"):
        build_proxy_pairs(load_catalog(folder))


def test_too_many_pairs_for_a_small_catalog_is_a_clear_error(pair_catalog):
    with pytest.raises(StylespaceError, match="lower n_pairs"):
        build_proxy_pairs(pair_catalog, ProxyPairConfig(n_pairs=50_000, positive_fraction=0.5))


def test_item_split_keeps_items_apart_and_reports_dropped_pairs(pair_catalog):
    rng = np.random.default_rng(0)
    ids = pair_catalog.ids
    a, b = rng.choice(ids, 2000), rng.choice(ids, 2000)
    pairs = PairSet(list(a), list(b), (rng.random(2000) < 0.3).astype(int))
    splits, report = split_pairs(pairs, by="item")
    items = {name: set(part.ids) for name, part in splits.items()}
    assert not (items["train"] & items["val"]) and not (items["train"] & items["test"]) and not (items["val"] & items["test"])
    assert report["dropped_pairs"] == len(pairs) - sum(len(p) for p in splits.values()) > 0
    assert 0.45 < len(splits["train"]) / (len(pairs) - report["dropped_pairs"]) < 0.9


def test_pair_split_is_stratified_60_20_20(pair_catalog):
    rng = np.random.default_rng(1)
    n = 1000
    labels = np.zeros(n, int)
    labels[:60] = 1
    pairs = PairSet(list(rng.choice(pair_catalog.ids, n)), list(rng.choice(pair_catalog.ids, n)), labels)
    splits, report = split_pairs(pairs, by="pair")
    assert [len(splits[s]) for s in ("train", "val", "test")] == [600, 200, 200]
    assert [int(splits[s].label.sum()) for s in ("train", "val", "test")] == [36, 12, 12]
    with pytest.raises(StylespaceError, match="'item'"):
        split_pairs(pairs, by="random")


# --- sampler -------------------------------------------------------------------------------------


def sampler_data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    cats = np.array(["top", "bottom", "shoes", "bag"])
    cat_a, cat_b = cats[rng.integers(0, 4, n)], cats[rng.integers(0, 4, n)]
    labels = (rng.random(n) < 0.15).astype(int)
    return list(cat_a), list(cat_b), labels


def test_sampler_yields_only_cross_category_pairs():
    cat_a, cat_b, labels = sampler_data()
    sampler = CrossCategoryPairSampler(cat_a, cat_b, labels, batch_size=32, seed=0)
    same = sum(a == b for a, b in zip(cat_a, cat_b))
    assert sampler.excluded == same > 0
    seen = set()
    for batch in sampler:
        assert len(batch) == 32
        assert all(cat_a[k] != cat_b[k] for k in batch)
        seen.update(batch)
    assert len(sampler) == -(-(len(labels) - same) // 32)
    assert seen <= {k for k in range(len(labels)) if cat_a[k] != cat_b[k]}


def test_sampler_positive_share_and_matched_negatives():
    cat_a, cat_b, labels = sampler_data()
    sampler = CrossCategoryPairSampler(cat_a, cat_b, labels, batch_size=40, positive_fraction=0.25, seed=1)
    combo = lambda k: tuple(sorted((cat_a[k], cat_b[k])))
    for batch in sampler:
        positives = [k for k in batch if labels[k] == 1]
        assert len(positives) == 10
        negative_combos = {combo(k) for k in batch if labels[k] == 0}
        assert negative_combos <= {combo(k) for k in positives}


def test_sampler_is_deterministic_per_seed_and_epoch():
    cat_a, cat_b, labels = sampler_data()
    one = CrossCategoryPairSampler(cat_a, cat_b, labels, batch_size=16, seed=5)
    two = CrossCategoryPairSampler(cat_a, cat_b, labels, batch_size=16, seed=5)
    assert list(one) == list(two)
    two.set_epoch(1)
    assert list(one) != list(two)


def test_sampler_rejects_pairs_without_positives():
    with pytest.raises(StylespaceError, match="needs both"):
        CrossCategoryPairSampler(["a", "b"], ["b", "a"], [0, 0])


# --- training ------------------------------------------------------------------------------------


def toy_problem(n_items=300, n_pairs=3000, seed=0):
    """Features = category direction + style direction + noise; a pair matches when the styles agree."""
    rng = np.random.default_rng(seed)
    ids = [f"i{k}" for k in range(n_items)]
    category, style = rng.integers(0, 3, n_items), rng.integers(0, 2, n_items)
    features = 3 * rng.normal(size=(3, 16))[category] + rng.normal(size=(2, 16))[style] + rng.normal(size=(n_items, 16))
    a, b = rng.integers(0, n_items, n_pairs), rng.integers(0, n_items, n_pairs)
    keep = category[a] != category[b]
    a, b = a[keep], b[keep]
    pairs = PairSet([ids[k] for k in a], [ids[k] for k in b], (style[a] == style[b]).astype(int))
    return PairFeatures(ids, features), pairs, {i: str(c) for i, c in zip(ids, category)}


def test_training_beats_the_untrained_head_and_lowers_the_loss():
    features, pairs, category_of = toy_problem()
    splits, _ = split_pairs(pairs, by="pair")
    config = CompatibilityConfig(hidden_dims=(32,), batch_size=64, epochs=6, patience=3, weight_decays=(0.0, 1e-2))
    result = train_compatibility(features, splits, config, category_of)
    assert result.test_auc > result.untrained["test"] + 0.2
    assert result.test_auc > 0.9
    assert [e.weight_decay for e in result.sweep] == [0.0, 1e-2]
    chosen = max(result.sweep, key=lambda e: e.val_auc)
    assert result.config.weight_decay == chosen.weight_decay and result.test_auc == chosen.test_auc
    history = result.sweep[0].history
    assert history[-1].train_loss < history[0].train_loss
    assert result.baselines["category_combination"] < 0.65, "categories alone must not give the label away"
    assert [row.fpr_target for row in result.test.cutoffs] == [0.05, 0.10, 0.20]
    assert result.test.auc == result.test_auc


def test_head_shapes_and_standardisation():
    head = CompatibilityHead(8, (16,), 128)
    features = np.random.default_rng(0).normal(5.0, 3.0, size=(50, 8)).astype(np.float32)
    features[:, 0] = 1.0  # a constant feature must not divide by zero
    head.set_standardisation(features)
    out = head(torch.as_tensor(features))
    assert out.shape == (50, 128) and torch.isfinite(out).all()
    assert float(head.feature_std[0]) == 1.0


# --- verdict -------------------------------------------------------------------------------


def test_verdict_from_the_cutoff():
    from stylespace.compat.judge import MATCH, NO_MATCH, Verdict

    assert Verdict.from_distance(0.5, 0.82) == Verdict(0.5, True, 0.82, MATCH)
    assert Verdict.from_distance(0.82, 0.82).compatible
    assert Verdict.from_distance(1.28, 0.82) == Verdict(1.28, False, 0.82, NO_MATCH)
    assert MATCH == "Nice, this looks good together!" and NO_MATCH == "Sorry, these styles do not match."


# --- the whole model: needs stylespace.models ----------------------------------------------------


def compact_model(input_size=(80, 60)):
    from stylespace.compat.model import CompatibilityModel
    from stylespace.compat.pipeline import load_backbone

    backbone, description = load_backbone("compact", input_size)
    config = CompatibilityConfig(backbone=description, input_size=input_size,
                                 feature_dim=backbone.config.embedding_dim)
    torch.manual_seed(0)
    return CompatibilityModel(backbone, CompatibilityHead(config.feature_dim, config.hidden_dims), config)


def test_save_load_round_trip_and_judge(tmp_path, pair_catalog):
    pytest.importorskip("stylespace.models", reason="stylespace.models is not in this checkout yet")
    from stylespace.compat.judge import CompatibilityJudge, save_compatibility
    from stylespace.compat.model import Cutoff
    from stylespace.data import load_image_array

    model = compact_model()
    pixels = np.array(load_image_array(pair_catalog, progress=False).pixels[:6])
    before = model.distance(pixels[:3], pixels[3:])
    cutoff = Cutoff(float(np.median(before)), "test", 0.5, 0.5)
    save_compatibility(tmp_path / "compat", model, cutoff, {"note": "test"})
    judge = CompatibilityJudge.load(tmp_path / "compat", device="cpu")
    after = judge.model.distance(pixels[:3], pixels[3:])
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    assert judge.cutoff == cutoff
    for k in range(3):
        verdict = judge.judge(pixels[k], pixels[3 + k])
        assert verdict.distance == pytest.approx(before[k], rel=1e-5)
        assert verdict.compatible == (verdict.distance <= cutoff.value)
    # any image source goes through the training decoder: a path and a PIL image give the same answer
    path = pair_catalog.source_path / "images" / f"{pair_catalog.ids[0]}.png"
    image = pair_catalog.read_image(pair_catalog.ids[0])
    assert judge.distance(path, pixels[1]) == pytest.approx(judge.distance(image, pixels[1]), rel=1e-6)


def test_save_is_atomic(tmp_path, monkeypatch):
    pytest.importorskip("stylespace.models", reason="stylespace.models is not in this checkout yet")
    from stylespace.compat import judge as judge_module
    from stylespace.compat.model import Cutoff

    model = compact_model()
    folder = tmp_path / "compat"
    judge_module.save_compatibility(folder, model, Cutoff(1.0))
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(judge_module, "save_dataclass", broken)
    with pytest.raises(OSError, match="disk full"):
        judge_module.save_compatibility(folder, model, Cutoff(2.0))
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["compat"], "no temporary folder is left behind"


def test_load_names_what_is_missing(tmp_path):
    from stylespace.compat.judge import CompatibilityJudge

    (tmp_path / "empty").mkdir()
    with pytest.raises(StylespaceError, match="missing compat.json"):
        CompatibilityJudge.load(tmp_path / "empty")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stylespace", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_cli_pairs_train_and_compat(tmp_path, cache_dir):
    pytest.importorskip("stylespace.models", reason="stylespace.models is not in this checkout yet")
    catalog = write_kaggle_catalog(tmp_path / "catalog", per_class=30)
    pairs_csv = tmp_path / "pairs.csv"
    made = run_cli("compat-pairs", catalog, "-o", pairs_csv, "--n-pairs", "300", "--json")
    assert made.returncode == 0, made.stderr
    report = json.loads(made.stdout)
    assert report["pairs"] == 300 and Path(str(pairs_csv) + ".json").is_file()

    trained = run_cli("compat-train", catalog, "--pairs", pairs_csv, "--backbone", "compact", "-o", tmp_path / "compat",
                      "--max-epochs", "2", "--weight-decays", "0,1e-3", "--hidden", "32", "--device", "cpu", "--json")
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert [e["weight_decay"] for e in summary["sweep"]] == [0.0, 0.001]
    assert set(summary["untrained"]) == {"val", "test"} and len(summary["test"]["cutoffs"]) == 3
    assert summary["split"]["dropped_pairs"] == 0
    saved = json.loads((tmp_path / "compat" / "cutoff.json").read_text())
    assert saved["value"] == summary["cutoff"]["value"]

    ids = load_catalog(catalog).ids
    judged = run_cli("compat", tmp_path / "compat", ids[0], ids[-1], "--catalog", catalog, "--json")
    assert judged.returncode == 0, judged.stderr
    verdict = json.loads(judged.stdout)
    assert verdict["cutoff"] == saved["value"]
    assert verdict["compatible"] == (verdict["distance"] <= verdict["cutoff"])
    assert verdict["message"] in ("Nice, this looks good together!", "Sorry, these styles do not match.")

    unknown = run_cli("compat", tmp_path / "compat", "nope", ids[0], "--catalog", catalog)
    assert unknown.returncode == 2 and "not an image file" in unknown.stderr and "Traceback" not in unknown.stderr


@pytest.mark.integration
def test_proxy_pairs_on_the_shared_catalog(shared_zip):
    catalog = load_catalog(shared_zip)
    pairs, report = build_proxy_pairs(catalog, ProxyPairConfig(n_pairs=4000))
    assert report["positives"] == 240 and len(pairs) == 4000
    complements = complement_table()
    for a, b, y in zip(pairs.id_a, pairs.id_b, pairs.label):
        ma, mb = meta_of(catalog, a), meta_of(catalog, b)
        assert (is_proxy_positive if y else is_proxy_negative)(ma, mb, complements)
    assert split_pairs(pairs)[1]["dropped_pairs"] == 0


def test_backbone_from_a_run_folder_or_a_name(tmp_path):
    pytest.importorskip("stylespace.models", reason="stylespace.models is not in this checkout yet")
    from stylespace.compat.pipeline import load_backbone
    from stylespace.models import model_id, save_model

    built, description = load_backbone("compact", (40, 30))
    assert description == "compact (untrained)" and built.config.input_size == (40, 30)
    assert built.config.embedding_dim == built.feature_dim, "an untrained embedding layer must not narrow the features"
    save_model(built, tmp_path / "run")
    loaded, description = load_backbone(str(tmp_path / "run"))
    assert description == str(tmp_path / "run") and model_id(loaded) == model_id(built)
    with pytest.raises(StylespaceError, match="run folder"):
        load_backbone(str(tmp_path / "nowhere"))
