"""Objectives, samplers, augmentation, the training loop (history, checkpoints, resume) and `stylespace train`."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from conftest import SHAPES_SIZE, shapes, tiny_model
from stylespace.models import ModelConfig, load_model, model_id
from stylespace.training import (
    AugmentConfig, BatchAugment, ObjectiveConfig, RatioPairMiner, TrainConfig, build_objective, build_sampler,
    carve_validation, fit, leave_one_out_1nn_accuracy, parse_objective, preset, train_run,
)
from stylespace.utils import StylespaceError

def tiny_config(**kw) -> TrainConfig:
    kw.setdefault("epochs", 4)
    kw.setdefault("batch_size", 32)
    kw.setdefault("lr", 3e-3)
    kw.setdefault("device", "cpu")
    return TrainConfig(**kw)


@pytest.fixture(scope="module")
def data():
    x, y = shapes(24, seed=0)
    vx, vy = shapes(8, seed=1)
    return x, y, vx, vy


# --- objectives ------------------------------------------------------------------------------------


OBJECTIVES = [
    ("ce", {}, "shuffle"),
    ("contrastive", {}, "m_per_class"),
    ("triplet", {"miner": "all"}, "m_per_class"),
    ("triplet", {"miner": "batch_hard"}, "m_per_class"),
    ("triplet", {"miner": "semihard"}, "m_per_class"),
    ("ms", {}, "m_per_class"),
    ("arcface", {}, "shuffle"),
    ("ce+triplet:0.5", {"miner": "batch_hard"}, "m_per_class"),
]


@pytest.mark.parametrize("objective, loss, sampler", OBJECTIVES, ids=[f"{o}-{l.get('miner', '')}" for o, l, _ in OBJECTIVES])
def test_objective_loss_decreases(tmp_path, data, objective, loss, sampler):
    """The objective, measured on the same un-augmented images, is lower after training.

    The probe scores every triplet (no miner) and averages over all of them: with PML's default "average
    over non-zero losses" and a miner, the measured loss may rise as easy triplets drop out.
    """
    from pytorch_metric_learning.losses import TripletMarginLoss
    from pytorch_metric_learning.reducers import MeanReducer

    x, y, _, _ = data
    needs_classes = "ce" in parse_objective(objective)
    model = tiny_model(classes=needs_classes)
    config = tiny_config(objective=objective, objective_config=ObjectiveConfig(**loss), sampler=sampler, m_per_class=8,
                         augment=False, epochs=6)
    trained = build_objective(objective, config.objective_config, 4, 16)  # composed here, handed to fit
    probe = build_objective(objective, ObjectiveConfig(miner="all"), 4, 16)
    for term in probe.terms.values():
        if isinstance(term.loss, TripletMarginLoss):
            term.loss.reducer = MeanReducer()

    def measure() -> float:
        """The probe with the trained objective's parameters (ArcFace's class centres) at this moment."""
        model.eval()
        probe.load_state_dict(trained.state_dict())
        torch.manual_seed(2)  # the contrastive miner's random negatives
        with torch.no_grad():
            embeddings = model(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)
            logits = model.classify(embeddings) if model.classifier is not None else None
            return float(probe(embeddings, logits, torch.from_numpy(y))[0])

    before = measure()
    result = fit(model, x, y, None, None, config, tmp_path / "run", progress=False, objective=trained)
    after = measure()
    assert after < before * 0.9, (objective, before, after)
    assert result.epochs_run == 6 and len(result.history) == 6


def test_arcface_proxies_are_trained_with_the_model(tmp_path, data):
    x, y, vx, vy = data
    model = tiny_model(classes=False)
    result = fit(model, x, y, vx, vy, tiny_config(objective="arcface", epochs=5), tmp_path / "run", progress=False)
    assert result.val_metric == "val_1nn_accuracy"
    assert result.best_val_metric > 0.5


def test_ratio_pair_miner_keeps_all_positives_and_ratio_negatives():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, 3, 3] * 4)
    embeddings = torch.randn(len(labels), 8)
    a1, p, a2, n = RatioPairMiner(ratio=2.0)(embeddings, labels)
    n_pos = int(sum((labels == c).sum() * ((labels == c).sum() - 1) for c in labels.unique()))
    assert len(a1) == len(p) == n_pos
    assert len(a2) == len(n) == 2 * n_pos
    assert bool((labels[a1] == labels[p]).all()) and bool((labels[a2] != labels[n]).all())
    few = RatioPairMiner(ratio=100.0)(embeddings, labels)  # capped by the negatives there are
    assert len(few[2]) == int((labels[:, None] != labels[None, :]).sum())


@pytest.mark.parametrize("spec, expected", [("ce", {"ce": 1.0}), ("ce + triplet:0.5", {"ce": 1.0, "triplet": 0.5}),
                                            ("ms:2+arcface", {"ms": 2.0, "arcface": 1.0})])
def test_parse_objective(spec, expected):
    assert parse_objective(spec) == expected


@pytest.mark.parametrize("spec, message", [("hinge", "unknown"), ("ce:x", "not a number"), ("ce:0", "> 0"),
                                           ("ce+ce", "twice"), ("", "names no term")])
def test_parse_objective_errors(spec, message):
    with pytest.raises(StylespaceError, match=message):
        parse_objective(spec)


def test_cross_entropy_needs_a_classifier(tmp_path, data):
    x, y, _, _ = data
    with pytest.raises(StylespaceError, match="no classifier"):
        fit(tiny_model(classes=False), x, y, None, None, tiny_config(objective="ce"), tmp_path / "run", progress=False)


# --- samplers and augmentation -----------------------------------------------------------------------


def test_samplers():
    labels = np.array([0] * 40 + [1] * 10 + [2] * 6 + [3] * 4)
    shuffle = build_sampler("shuffle", labels, 16, seed=0)
    seen = np.concatenate([b for b, _ in shuffle.batches(1)])
    assert sorted(seen) == list(range(60)) and len(list(shuffle.batches(1))) == len(shuffle)
    assert not np.array_equal(seen, np.concatenate([b for b, _ in shuffle.batches(2)]))

    m_per_class = build_sampler("m_per_class", labels, 16, seed=0, m_per_class=4)
    batches = [b for b, _ in m_per_class.batches(1)]
    assert len(batches) == len(m_per_class) == 60 // 16
    for batch in batches:
        assert sorted(np.bincount(labels[batch], minlength=4)) == [4, 4, 4, 4]
    assert all(np.array_equal(a, b) for a, b in zip(batches, [b for b, _ in m_per_class.batches(1)]))

    rare = build_sampler("rare_augment", labels, 16, seed=0, balance_power=1.0)
    drawn, strength = map(np.concatenate, zip(*rare.batches(1)))
    counts = np.bincount(labels[drawn], minlength=4)
    assert counts.min() > 4  # the rarest class is drawn more often than its 4 items
    assert strength[labels[drawn] == 0].max() == 1.0 and strength[labels[drawn] == 3].min() > 1.0


def test_sampler_errors():
    labels = np.array([0, 0, 1, 1])
    with pytest.raises(StylespaceError, match="multiple of m_per_class"):
        build_sampler("m_per_class", labels, 3, seed=0, m_per_class=2)
    with pytest.raises(StylespaceError, match="< batch_size"):
        build_sampler("m_per_class", labels, 8, seed=0, m_per_class=2)
    with pytest.raises(StylespaceError, match="unknown"):
        build_sampler("weighted", labels, 2, seed=0)


def test_augmentation():
    x, _ = shapes(2)
    batch = torch.from_numpy(x)
    identity = BatchAugment(AugmentConfig(scale=0, translate=0, flip=0, colour=0))
    assert torch.allclose(identity(batch), batch.permute(0, 3, 1, 2).float() / 255, atol=1e-5)
    flipped = BatchAugment(AugmentConfig(scale=0, translate=0, flip=1.0, colour=0))(batch)
    assert torch.allclose(flipped, batch.permute(0, 3, 1, 2).float().flip(-1) / 255, atol=1e-5)
    strong = BatchAugment(AugmentConfig())
    out = strong(batch, torch.full((len(batch),), 2.0), torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, *SHAPES_SIZE) and out.min() >= 0 and out.max() <= 1
    again = strong(batch, torch.full((len(batch),), 2.0), torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    weak = strong(batch, torch.zeros(len(batch)), torch.Generator().manual_seed(0))
    # strength 0 leaves only the flip: every image is either itself or its mirror
    plain = batch.permute(0, 3, 1, 2).float() / 255
    assert all(torch.allclose(w, p, atol=1e-5) or torch.allclose(w, p.flip(-1), atol=1e-5) for w, p in zip(weak, plain))
    with pytest.raises(StylespaceError, match="scale"):
        AugmentConfig(scale=1.5).validate()


FAMILIES = [
    dict(aspect=0.35), dict(rotate=10.0), dict(scale=0.18), dict(colour=0.3),
    dict(padding="backdrop", background=1.0), dict(greyscale=1.0), dict(blur=1.0), dict(jpeg=1.0),
    dict(erase=1.0),
]


@pytest.mark.parametrize("family", FAMILIES, ids=[next(iter(f)) if len(f) == 1 else "background" for f in FAMILIES])
def test_each_augmentation_family_keeps_shape_and_range_and_changes_the_image(family):
    x, _ = shapes(2)
    batch = torch.from_numpy(x)
    off = dict(scale=0.0, translate=0.0, flip=0.0, colour=0.0)
    out = BatchAugment(AugmentConfig(**{**off, **family}))(batch, None, torch.Generator().manual_seed(1))
    assert out.shape == (8, 3, *SHAPES_SIZE) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    plain = batch.permute(0, 3, 1, 2).float() / 255
    assert (out - plain).abs().mean() > 0.002, family


def test_random_erasing_replaces_one_rectangle_and_spares_the_rest():
    x, _ = shapes(2)
    batch = torch.from_numpy(x)
    off = dict(scale=0.0, translate=0.0, flip=0.0, colour=0.0)
    out = BatchAugment(AugmentConfig(**off, erase=1.0))(batch, None, torch.Generator().manual_seed(0))
    changed = (out - batch.permute(0, 3, 1, 2).float() / 255).abs().amax(dim=1) > 1e-6  # (B, H, W)
    for mask in changed:
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        # one rectangle (changed pixels fill their bounding box, up to noise equal to the pixel), 2-25 % of the area
        assert mask.sum() >= 0.9 * box and 0.015 * mask.numel() <= box <= 0.26 * mask.numel()
    assert not BatchAugment(AugmentConfig(**off, erase=0.0))(batch).sub(batch.permute(0, 3, 1, 2) / 255).abs().max() > 1e-6


def test_greyscale_and_backdrop_do_what_they_say():
    x, _ = shapes(2)
    batch = torch.from_numpy(x)
    off = dict(scale=0.0, translate=0.0, flip=0.0, colour=0.0)
    grey = BatchAugment(AugmentConfig(**off, greyscale=1.0))(batch)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    painted = BatchAugment(AugmentConfig(**off, padding="backdrop", background=1.0))(batch, None, torch.Generator().manual_seed(0))
    corners = painted[:, :, 0, 0]
    assert (corners < 0.99).any(dim=1).all()  # no white backdrop is left
    shapes_kept = painted[:, :, 16, 12]  # the shape's centre keeps its colour
    assert torch.allclose(shapes_kept, batch[:, 16, 12].permute(1, 0).t().float() / 255, atol=0.02)
    with pytest.raises(StylespaceError, match="backdrop"):
        AugmentConfig(background=0.5).validate()
    with pytest.raises(StylespaceError, match="rotate"):
        AugmentConfig(rotate=90).validate()


def test_instance_objective_loss_falls_and_needs_views(tmp_path, data):
    """Two augmented views of each item must find each other: NT-Xent with item ids falls with training."""
    x, y, _, _ = data
    model = tiny_model(classes=False)
    augmentation = AugmentConfig(scale=0.1, flip=0.5, colour=0.1, aspect=0.1, rotate=5, padding="backdrop")
    config = tiny_config(objective="instance", views=2, epochs=16, lr=5e-3, augmentation=augmentation)
    objective = build_objective("instance", config.objective_config, 4, 16)
    augment = BatchAugment(augmentation)
    batch = torch.from_numpy(x[:32])

    def instance_loss() -> float:
        model.eval()
        generator = torch.Generator().manual_seed(5)
        with torch.no_grad():
            views = torch.cat([augment(batch, None, generator), augment(batch, None, generator)])
            features = model.features(views)
            return float(objective.terms["instance"](model.head(features), None, None,
                                                     torch.arange(32).repeat(2), features))

    before = instance_loss()
    fit(model, x, y, None, None, config, tmp_path / "run", progress=False, objective=objective)
    after = instance_loss()
    assert after < before * 0.9, (before, after)
    assert float(objective.terms["instance"](torch.randn(4, 16), None, None)) == 0.0  # no views, no term
    with pytest.raises(StylespaceError, match="views >= 2"):
        TrainConfig(objective="ce+instance", views=1).validate()


# --- the loop --------------------------------------------------------------------------------------


def test_cpu_amp_trains_under_bfloat16_autocast_where_the_cpu_has_it(tmp_path, data, monkeypatch):
    import torch

    x, y, vx, vy = data
    entered = []
    real_autocast = torch.autocast

    def recording_autocast(device_type, dtype=None, enabled=True, **kw):
        entered.append((device_type, dtype, enabled))
        return real_autocast(device_type, dtype=dtype, enabled=enabled, **kw)

    monkeypatch.setattr(torch, "autocast", recording_autocast)
    result = fit(tiny_model(), x, y, vx, vy, tiny_config(epochs=3, cpu_amp=True), tmp_path / "amp", progress=False)
    supported = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert entered and all(e == ("cpu", torch.bfloat16, supported) for e in entered)
    assert result.best_val_metric > 0.5  # it still learns (chance: 0.25)
    entered.clear()
    fit(tiny_model(), x, y, vx, vy, tiny_config(epochs=1), tmp_path / "fp32", progress=False)
    assert entered and not any(enabled for _, _, enabled in entered)  # off unless asked: runs stay as they were


def test_fit_writes_the_run_folder(tmp_path, data):
    x, y, vx, vy = data
    model = tiny_model()
    run = tmp_path / "run"
    result = fit(model, x, y, vx, vy, tiny_config(epochs=3), run, progress=False)
    assert {p.name for p in run.iterdir()} >= {"model.safetensors", "model.json", "train.json", "history.csv",
                                                "learning_curves.png", "checkpoint.pt"}
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all(0 <= float(r["val_accuracy"]) <= 1 for r in rows)
    assert (run / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run / "train.json").read_text())["epochs"] == 3
    assert result.val_metric == "val_accuracy" and result.best_val_metric > 0.5  # chance: 0.25
    assert model_id(load_model(run)) == model_id(model)


def test_metric_only_run_validates_with_nearest_neighbours(tmp_path, data):
    x, y, vx, vy = data
    result = fit(tiny_model(classes=False), x, y, vx, vy, tiny_config(objective="triplet", sampler="m_per_class",
                                                                        m_per_class=8), tmp_path / "run", progress=False)
    assert result.val_metric == "val_1nn_accuracy" and result.best_val_metric > 0.7
    assert result.history[0]["train_accuracy"] is None


def test_leave_one_out_1nn_accuracy():
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9], [0.95, 0.05]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 1])
    # items 0 and 1 (label 0) have item 4 (label 1) as nearest neighbour and item 4 has item 0: only items
    # 2 and 3 are right, whatever the chunk size
    assert leave_one_out_1nn_accuracy(emb, labels) == leave_one_out_1nn_accuracy(emb, labels, chunk=2) == 0.4
    assert leave_one_out_1nn_accuracy(emb, torch.tensor([0, 0, 1, 1, 0])) == 1.0


def test_early_stopping_keeps_the_best_epoch(tmp_path, data):
    x, y, vx, vy = data
    # A learning rate this small cannot move the validation accuracy for long: the run stops early.
    result = fit(tiny_model(), x, y, vx, vy, tiny_config(epochs=30, patience=2, lr=1e-6), tmp_path / "run",
                 progress=False)
    assert result.stopped_early and result.epochs_run < 30
    assert result.best_val_metric == max(r["val_metric"] for r in result.history)
    assert result.history[result.best_epoch - 1]["val_metric"] == result.best_val_metric


class Interrupt(Exception):
    pass


def test_resume_gives_the_same_model_as_an_uninterrupted_run(tmp_path, data):
    x, y, vx, vy = data
    config = tiny_config(epochs=4, objective="ce+triplet:0.5", sampler="m_per_class", m_per_class=8)
    whole = tiny_model()
    fit(whole, x, y, vx, vy, config, tmp_path / "whole", progress=False)

    def stop_after_two(line: str) -> None:
        if line.startswith("epoch 2/"):
            raise KeyboardInterrupt  # what Ctrl-C does, just after epoch 2 is logged (and before its checkpoint)

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), x, y, vx, vy, config, tmp_path / "cut", progress=False, log=stop_after_two)
    # The interruption came before epoch 2's checkpoint: epoch 1's is there, complete.
    saved = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1 and not (tmp_path / "cut" / "model.safetensors").exists()
    with pytest.raises(StylespaceError, match="--resume"):
        fit(tiny_model(), x, y, vx, vy, config, tmp_path / "cut", progress=False)
    resumed = tiny_model(seed=5)  # its own initial weights are replaced by the checkpoint's
    result = fit(resumed, x, y, vx, vy, config, tmp_path / "cut", resume=True, progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name


def test_resume_refuses_other_settings(tmp_path, data):
    x, y, vx, vy = data
    fit(tiny_model(), x, y, vx, vy, tiny_config(epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(StylespaceError, match="lr"):
        fit(tiny_model(), x, y, vx, vy, tiny_config(epochs=1, lr=0.1), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(StylespaceError, match="another model configuration"):
        fit(tiny_model(dropout=0.1), x, y, vx, vy, tiny_config(epochs=1), tmp_path / "run", resume=True,
            progress=False)
    with pytest.raises(StylespaceError, match="no checkpoint.pt"):
        fit(tiny_model(), x, y, vx, vy, tiny_config(epochs=1), tmp_path / "new", resume=True, progress=False)


def test_a_failed_checkpoint_write_leaves_the_previous_one(tmp_path, data, monkeypatch):
    import stylespace.training.trainer as trainer

    x, y, vx, vy = data
    real_save, calls = torch.save, []

    def save_then_fail(obj, handle):
        calls.append(obj["epoch"])
        if obj["epoch"] == 2:
            handle.write(b"half a checkpoint")
            raise OSError("disk full")
        real_save(obj, handle)

    monkeypatch.setattr(trainer.torch, "save", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        fit(tiny_model(), x, y, vx, vy, tiny_config(epochs=3), tmp_path / "run", progress=False)
    monkeypatch.undo()
    assert calls == [1, 2]
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("bad, message", [
    (dict(train_pixels=np.zeros((4, 32, 24, 3), np.float32)), "uint8"),
    (dict(train_pixels=np.zeros((4, 80, 60, 3), np.uint8)), "input_size"),
    (dict(train_labels=np.array([0, 1, 2])), "4 integers"),
    (dict(train_labels=np.array([0, 1, 2, 9])), r"in \[0, 4\)"),
])
def test_fit_input_errors(tmp_path, bad, message):
    args = dict(train_pixels=np.zeros((4, *SHAPES_SIZE, 3), np.uint8), train_labels=np.array([0, 1, 2, 3]))
    args.update(bad)
    with pytest.raises(StylespaceError, match=message):
        fit(tiny_model(), args["train_pixels"], args["train_labels"], None, None, tiny_config(), tmp_path / "r",
            progress=False)


@pytest.mark.parametrize("field, value, message", [
    ("optimizer", "lbfgs", "optimizer"), ("schedule", "step", "schedule"), ("sampler", "x", "sampler"),
    ("epochs", 0, "epochs"), ("lr", 0, "lr"), ("val_fraction", 0.7, "val_fraction"), ("objective", "foo", "unknown"),
])
def test_train_config_validation(field, value, message):
    with pytest.raises(StylespaceError, match=message):
        TrainConfig(**{field: value}).validate()


def test_train_config_round_trips_through_json(tmp_path):
    from stylespace.utils import load_dataclass, save_dataclass

    config = TrainConfig(objective="ce+triplet:0.5", objective_config=ObjectiveConfig(gap=0.3), augmentation=AugmentConfig(flip=0))
    save_dataclass(config, tmp_path / "train.json")
    assert load_dataclass(TrainConfig, tmp_path / "train.json") == config


def test_presets_are_valid():
    for name in ("cpu", "default", "gpu", "packshot", "small"):
        model_config, train_config = preset(name)
        assert model_config.backbone and train_config.epochs >= 1
    with pytest.raises(StylespaceError, match="preset"):
        preset("tpu")


def test_small_images_get_the_small_preset():
    from stylespace.training.presets import default_preset

    assert default_preset((28, 28)) == default_preset((32, 24)) == "small"
    assert default_preset(None) == default_preset((80, 60)) == "cpu"
    model_config, _ = preset("small")
    # the stride-4 stem of the photo presets would leave 7 x 7 of a 28 x 28 image
    assert model_config.input_size == (28, 28) and model_config.stem_stride < preset("cpu")[0].stem_stride


def test_carve_validation_is_stratified_and_deterministic():
    labels = np.array([0] * 50 + [1] * 20 + [2] * 1)
    train, val = carve_validation(labels, 0.1, seed=0)
    assert sorted(np.concatenate([train, val])) == list(range(71))
    assert list(np.bincount(labels[val], minlength=3)) == [5, 2, 0]
    assert np.array_equal(val, carve_validation(labels, 0.1, seed=0)[1])
    assert not np.array_equal(val, carve_validation(labels, 0.1, seed=1)[1])


# --- from a catalog and a split manifest -----------------------------------------------------------------


@pytest.fixture
def catalog_and_split(small_catalog, tmp_path):
    from stylespace.data import load_catalog, protocol_split

    manifest = protocol_split(load_catalog(small_catalog), n_main=4, n_new=2, main_fractions=(0.8, 0.1, 0.1))
    manifest.save(tmp_path / "split.csv")
    return small_catalog, tmp_path / "split.csv", manifest


def test_train_run_records_the_split(tmp_path, catalog_and_split):
    catalog, split, manifest = catalog_and_split
    model_config = ModelConfig(width=8, embedding_dim=16, stem_stride=4)
    model, result, record = train_run(catalog, split, model_config, tiny_config(epochs=2, val_fraction=0.2),
                                      tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["split_sha256"] == manifest.sha256 == record["split_sha256"]
    assert saved["classes"] == sorted(set(manifest.select(group="main").labels)) == model.classes
    assert saved["train_items"] + saved["val_items"] == len(manifest.select(group="main", split="train"))
    assert saved["model_id"] == model_id(load_model(tmp_path / "run"))


def test_train_run_validates_on_the_splits_own_val_part(tmp_path, small_catalog):
    from stylespace.data import column_split, load_catalog

    manifest = column_split(load_catalog(small_catalog), "gender", val_fraction=0.25, mapping={"Women": "test", "*": "train"})
    manifest.save(tmp_path / "split.csv")
    model_config = ModelConfig(width=8, embedding_dim=16, stem_stride=4)
    _, _, record = train_run(small_catalog, tmp_path / "split.csv", model_config, tiny_config(epochs=1, val_fraction=0.4),
                             tmp_path / "run", progress=False)
    # the manifest's val rows, not a val_fraction of its train rows
    assert record["val_items"] == len(manifest.select(split="val")) == 6 * 2
    assert record["train_items"] == len(manifest.select(split="train")) == 6 * 4


def test_cli_train_resume_and_embed(tmp_path, catalog_and_split):
    from typer.testing import CliRunner

    from stylespace.cli import app
    from stylespace.embeddings import Embeddings

    catalog, split, _ = catalog_and_split
    run = tmp_path / "run"
    runner = CliRunner()
    args = ["train", str(catalog), "--split", str(split), "--out", str(run), "--preset", "cpu", "--width", "8",
            "--epochs", "2", "--batch-size", "16", "--val-fraction", "0.2", "--objective", "ce+triplet:0.5",
            "--sampler", "m_per_class", "--device", "cpu", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs_run"] == 2 and len(summary["history"]) == 2 and summary["run"] == str(run)
    again = runner.invoke(app, args)  # the folder holds a checkpoint: refuse rather than overwrite
    assert again.exit_code != 0 and "--resume" in str(again.exception)
    resumed = runner.invoke(app, ["train", str(catalog), "--split", str(split), "--out", str(run), "--resume", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["epochs_run"] == 2  # it had finished: nothing more to do

    embedded = runner.invoke(app, ["embed", str(run), str(catalog), "-o", str(tmp_path / "e.npz"), "--json"])
    assert embedded.exit_code == 0, embedded.output
    report = json.loads(embedded.stdout)
    emb = Embeddings.load(tmp_path / "e.npz")
    # The cpu preset embeds with the pooled features under the head: 8 x width channels.
    assert report["items"] == len(emb) == 72 and emb.dim == 64 and emb.model_id == summary["model_id"]


def test_the_instance_term_is_nt_xent_with_two_views():
    """SupConLoss over item ids gives NTXentLoss's value when every item has two views (the presets)."""
    from pytorch_metric_learning import losses

    from stylespace.training.objectives import InstanceTerm

    torch.manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(64, 24), dim=1)
    items = torch.arange(32).repeat(2)
    term = InstanceTerm(temperature=0.1)
    ours = term(vectors, None, torch.zeros(64, dtype=torch.long), instances=items)
    reference = losses.NTXentLoss(temperature=0.1)(vectors, items)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    assert float(term(vectors, None, torch.zeros(64, dtype=torch.long))) == 0.0  # single views: no term


# --- distillation ----------------------------------------------------------------------------------------


def test_the_distill_term_is_the_cosine_distance_to_the_targets():
    from stylespace.training.objectives import DistillTerm

    term = DistillTerm()
    targets = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    assert float(term(targets * 3.0, targets)) == pytest.approx(0.0, abs=1e-6)  # the search vector's length is free
    assert float(term(-targets, targets)) == pytest.approx(2.0, abs=1e-6)
    assert float(term(targets, None)) == 0.0  # validation batches carry no targets
    with pytest.raises(StylespaceError, match="student's width"):
        term(torch.randn(6, 4), targets)
    objective = build_objective("ce+distill:2", ObjectiveConfig(), 4, 8)
    assert objective.needs_targets and not build_objective("ce", ObjectiveConfig(), 4, 8).needs_targets


def test_pca_targets_are_unit_vectors_on_the_training_rows_top_components():
    from stylespace.training.teacher import pca_targets

    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(32, 32)))[0]
    scales = np.array([10.0, 5.0, 2.0] + [0.01] * 29)
    vectors = (rng.normal(size=(400, 32)) * scales) @ basis.T
    targets, explained = pca_targets(vectors, np.arange(300), 3)
    assert targets.shape == (400, 3) and targets.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(targets, axis=1), 1.0, atol=1e-5)
    assert explained > 0.99  # three strong directions hold nearly all the variance
    # the reduced vectors keep the teacher's neighbours: cosines of the centred vectors are close to the targets'
    centred = vectors - vectors[:300].mean(0)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    assert np.abs(centred[:50] @ centred[:50].T - targets[:50] @ targets[:50].T).max() < 0.05
    _, fewer = pca_targets(vectors, np.arange(300), 1)
    assert fewer < explained
    with pytest.raises(StylespaceError, match="at most as wide"):
        pca_targets(vectors, np.arange(300), 33)


def test_distillation_brings_the_student_to_the_teachers_vectors(tmp_path, data):
    """Trained with the distill term alone, the student's search vectors of the training images (augmented as it
    learnt them) come close to their targets, from an untrained start that is not."""
    x, y, _, _ = data
    student = tiny_model(classes=False, embed_layer="head")
    rng = np.random.default_rng(1)
    class_directions = rng.normal(size=(4, student.output_dim))  # a teacher that knows the classes
    targets = class_directions[y] + 0.3 * rng.normal(size=(len(y), student.output_dim))
    targets = (targets / np.linalg.norm(targets, axis=1, keepdims=True)).astype(np.float32)

    def mean_cosine() -> float:
        student.eval()
        with torch.no_grad():
            from stylespace.models.inputs import as_model_input

            vectors = student.embed(as_model_input(torch.from_numpy(x))).numpy()
        return float((vectors * targets).sum(1).mean())

    before = mean_cosine()
    config = tiny_config(objective="distill", teacher="a teacher", epochs=12, lr=5e-3,
                         augmentation=AugmentConfig(scale=0.1, flip=0.5))
    fit(student, x, y, None, None, config, tmp_path / "run", progress=False, targets=targets)
    after = mean_cosine()
    assert after > before + 0.3 and after > 0.6, (before, after)


def test_distillation_needs_its_targets_and_its_teacher(tmp_path, data):
    x, y, _, _ = data
    config = tiny_config(objective="ce+distill", teacher="default", epochs=1)
    with pytest.raises(StylespaceError, match="no teacher targets"):
        fit(tiny_model(), x, y, None, None, config, tmp_path / "a", progress=False)
    with pytest.raises(StylespaceError, match=r"one vector per training image"):
        fit(tiny_model(), x, y, None, None, config, tmp_path / "b", progress=False,
            targets=np.zeros((len(y), 5), np.float32))
    with pytest.raises(StylespaceError, match="teacher"):
        TrainConfig(objective="ce+distill")
    with pytest.raises(StylespaceError, match="distill term"):
        TrainConfig(objective="ce", teacher="default")
    with pytest.raises(StylespaceError, match="cached_views"):
        TrainConfig(objective="ce+distill", teacher="default", cached_views=2, views=1)


def test_cli_distils_a_trained_teacher_into_a_smaller_student(tmp_path, catalog_and_split):
    from typer.testing import CliRunner

    from stylespace.cli import app

    catalog, split, _ = catalog_and_split
    runner = CliRunner()
    common = ["--split", str(split), "--epochs", "1", "--batch-size", "16", "--val-fraction", "0.2", "--device", "cpu",
              "--json"]
    teacher = runner.invoke(app, ["train", str(catalog), "--out", str(tmp_path / "teacher"), "--preset", "cpu",
                                  "--width", "8", *common])
    assert teacher.exit_code == 0, teacher.output
    student_run = tmp_path / "student"
    student = runner.invoke(app, ["train", str(catalog), "--out", str(student_run), "--preset", "distill",
                                  "--teacher", str(tmp_path / "teacher"), "--width", "4", "--embedding-dim", "32",
                                  *common])
    assert student.exit_code == 0, student.output
    record = json.loads(student.stdout)["distilled_from"]
    assert record["teacher"] == str(tmp_path / "teacher") and record["teacher_dim"] == 64 and record["target_dim"] == 32
    assert record["model_id"] == json.loads(teacher.stdout)["model_id"]
    assert 0 < record["explained_variance"] <= 1
    saved = json.loads((student_run / "train.json").read_text())
    assert saved["teacher"] == str(tmp_path / "teacher") and saved["objective"] == "ce+distill:4"
    assert load_model(student_run).output_dim == 32
    wider = runner.invoke(app, ["train", str(catalog), "--out", str(tmp_path / "wider"), "--preset", "distill",
                                "--teacher", str(tmp_path / "teacher"), "--width", "4", "--embedding-dim", "128",
                                *common])
    assert wider.exit_code != 0 and "at most as wide" in str(wider.exception)
    other_size = runner.invoke(app, ["train", str(catalog), "--out", str(tmp_path / "size"), "--preset", "distill",
                                     "--teacher", str(tmp_path / "teacher"), "--width", "4", "--embedding-dim", "32",
                                     "--input-size", "64x48", *common])
    assert other_size.exit_code != 0 and "input size" in str(other_size.exception)
