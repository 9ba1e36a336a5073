"""Your own catalog: evaluation on any split layout, held-out-class splits, fine-tuning from a trained model
(--init), the shipped models by name, and `stylespace demo --catalog` on a generated folder tree."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, synth_image
from stylespace.data import SplitManifest, held_out_split, load_catalog, split_for_catalog, stratified_split
from stylespace.evaluation import EvaluationConfig, VectorTable, evaluate, plan_for
from stylespace.utils import StylespaceError

# 12 classes of shapes and colours; three folders nearly empty (3, 2 and 1 photos).
TREE_CLASSES = [(f"{shape}-{name}", shape, colour) for shape in ("square", "circle", "bar", "triangle")
                for name, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200)), ("green", (40, 160, 60)))]
TREE_SIZES = [10] * 9 + [3, 2, 1]


def write_tree(root: Path, sizes=TREE_SIZES, broken: bool = True, seed: int = 0) -> Path:
    """A folder per class of 60x80 JPEG photos, plus (``broken``) a zero-byte photo, a truncated one and a
    text file among them."""
    rng = np.random.default_rng(seed)
    for (label, shape, colour), size in zip(TREE_CLASSES, sizes):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(size):
            synth_image(shape, colour, rng).save(folder / f"{j:03d}.jpg", quality=90)
    if broken:
        (root / TREE_CLASSES[0][0] / "empty.jpg").write_bytes(b"")
        whole = (root / TREE_CLASSES[1][0] / "000.jpg").read_bytes()
        (root / TREE_CLASSES[1][0] / "cut.jpg").write_bytes(whole[: len(whole) // 3])
        (root / TREE_CLASSES[2][0] / "notes.txt").write_text("not a photo")
    return root


def random_table(manifest: SplitManifest, dim: int = 8, seed: int = 0) -> VectorTable:
    """Vectors that cluster by label (so the figures are far above chance)."""
    rng = np.random.default_rng(seed)
    centres = {label: rng.normal(size=dim) * 3 for label in sorted(set(manifest.labels))}
    vectors = np.stack([centres[label] + rng.normal(size=dim) for label in manifest.labels]).astype(np.float32)
    return VectorTable(manifest.ids, vectors)


# --- splits and the evaluation plan ----------------------------------------------------------------


def test_held_out_split_keeps_new_classes_out_of_training(tmp_path):
    catalog = load_catalog(write_tree(tmp_path / "tree", broken=False))
    manifest = held_out_split(catalog, 2, seed=0)
    new = set(manifest.config.new_classes)
    assert len(new) == 2 and all(len(manifest.select(group="new").select(split=s)) for s in ("support", "test"))
    assert not new & set(manifest.select(split="train").labels), "a held-out class leaked into training"
    assert {r["split"] for r in manifest.select(group="new").rows} == {"support", "test"}
    assert new <= {label for (label, _, _), size in zip(TREE_CLASSES, TREE_SIZES) if size >= 4}
    assert held_out_split(catalog, 2, seed=0).sha256 == manifest.sha256  # the seed fixes it
    with pytest.raises(StylespaceError, match="cannot hold out 12 classes"):
        held_out_split(catalog, 12)


def test_split_for_catalog_adapts_to_the_number_of_classes(tmp_path):
    twelve = load_catalog(write_tree(tmp_path / "twelve", broken=False))
    assert split_for_catalog(twelve).method == "held_out" and split_for_catalog(twelve).n_new == 2
    four = load_catalog(write_tree(tmp_path / "four", sizes=[6, 6, 6, 6], broken=False))
    assert split_for_catalog(four).method == "stratified"


def test_plan_for_each_layout_and_an_error_naming_what_is_missing(tmp_path):
    catalog = load_catalog(write_tree(tmp_path / "tree", broken=False))
    stratified = stratified_split(catalog, {"train": 0.7, "val": 0.1, "test": 0.2})
    held_out = held_out_split(catalog, 2)
    assert plan_for(stratified).layout == "stratified" and plan_for(stratified).numbers == (1,)
    assert plan_for(held_out).layout == "held-out classes" and plan_for(held_out).numbers == (1, 3, 4)
    assert plan_for(held_out).broadest.number == 4
    only_train = stratified_split(catalog, {"train": 1.0})
    with pytest.raises(StylespaceError, match="nothing to score: it lacks a test part") as error:
        plan_for(only_train, "split.csv")
    assert "all/train" in str(error.value) and "--stratified" in str(error.value)


def test_evaluate_a_stratified_split_scores_train_to_test_and_never_val(tmp_path):
    catalog = load_catalog(write_tree(tmp_path / "tree", broken=False))
    manifest = stratified_split(catalog, {"train": 0.6, "val": 0.2, "test": 0.2})
    report = evaluate(random_table(manifest), manifest, EvaluationConfig())
    (scenario,) = report.scenarios
    assert scenario.number == 1 and scenario.description == "train -> test"
    assert scenario.n_support == len(manifest.select(split="train"))
    assert scenario.n_query == len(manifest.select(split="test"))
    assert scenario.results["kNN k=1"].accuracy > 0.8
    assert "retrieval test / MAP@R" in report.headline() and report.pairs is not None
    assert any("scenarios 2, 3, 4 not measured" in note for note in report.notes)
    assert any("open set not measured" in note for note in report.notes)


def test_evaluate_a_held_out_split_has_known_new_and_mixed_scenarios(tmp_path):
    catalog = load_catalog(write_tree(tmp_path / "tree", broken=False))
    manifest = held_out_split(catalog, 2)
    report = evaluate(random_table(manifest), manifest, EvaluationConfig())
    by_number = {s.number: s for s in report.scenarios}
    assert sorted(by_number) == [1, 3, 4]
    assert by_number[3].n_support == len(manifest.select(group="new", split="support"))
    assert by_number[4].n_query == len(manifest.select(split="test"))
    assert report.open_set and report.open_set[0].n_support == len(manifest.select(group="main", split="train"))


# --- fine-tuning from a trained model ---------------------------------------------------------------


def test_frozen_epochs_leave_the_backbone_alone(tmp_path):
    from stylespace.models import ModelConfig, build_model
    from stylespace.training import TrainConfig, fit

    torch.manual_seed(0)
    model = build_model(ModelConfig(width=8, embedding_dim=16, input_size=(32, 24), classes=["a", "b", "c"]))
    rng = np.random.default_rng(0)
    pixels, labels = rng.integers(0, 256, (48, 32, 24, 3), dtype=np.uint8), np.arange(48) % 3
    learnt = [k for k in model.backbone.state_dict() if "running" not in k and "num_batches" not in k]
    start = {k: model.backbone.state_dict()[k].clone() for k in learnt}
    after_first = {}

    def log(line: str) -> None:  # called after each epoch; the model trains in place
        if line.startswith("epoch 1/"):
            after_first.update({k: model.backbone.state_dict()[k].clone() for k in learnt})

    config = TrainConfig(epochs=2, freeze_backbone_epochs=1, batch_size=16, device="cpu", augment=False)
    head_before = model.head[1].weight.detach().clone()
    fit(model, pixels, labels, None, None, config, tmp_path / "run", progress=False, log=log)
    assert all(torch.equal(after_first[k], start[k]) for k in learnt), "the backbone moved while frozen"
    assert any(not torch.equal(model.backbone.state_dict()[k], start[k]) for k in learnt)
    assert not torch.equal(model.head[1].weight, head_before)


def test_train_init_starts_from_the_parent_and_records_it(tmp_path, cache_dir):
    from stylespace.models import ModelConfig, build_model, load_model, model_id, save_model
    from stylespace.training import TrainConfig, train_run
    from stylespace.training.run import ParentModel

    tree = write_tree(tmp_path / "tree", broken=True)
    split = tmp_path / "split.csv"
    stratified_split(load_catalog(tree), {"train": 0.7, "val": 0.1, "test": 0.2}, min_count=2).save(split)
    torch.manual_seed(1)
    # width 16: torch 2.14's CPU backward crashes on width-8 compact nets when a batch has 3 items
    parent = build_model(ModelConfig(width=16, embedding_dim=16, classes=["a", "b", "c"], classifier="cosine"))
    save_model(parent, tmp_path / "parent")
    child = ParentModel(str(tmp_path / "parent")).child(ModelConfig(width=16, embedding_dim=16, classes=["x", "y"],
                                                                    classifier="cosine"))
    assert all(torch.equal(child.state_dict()[k], v) for k, v in parent.state_dict().items()
               if not k.startswith("classifier."))
    config = TrainConfig(init=str(tmp_path / "parent"), epochs=2, freeze_backbone_epochs=1, backbone_lr_factor=0.3,
                         batch_size=16, device="cpu", objective="ce")
    model, result, record = train_run(tree, split, None, config, tmp_path / "run", progress=False)
    assert record["parent"] == {"init": str(tmp_path / "parent"), "folder": str(tmp_path / "parent"),
                                "model_id": model_id(load_model(tmp_path / "parent")), "classes": 3}
    assert record["val_source"] == "the split's val rows"
    assert record["val_items"] == len(SplitManifest.load(split).select(split="val"))
    assert model.classes == sorted(set(SplitManifest.load(split).select(split="train").labels))
    assert json.loads((tmp_path / "run" / "run.json").read_text())["parent"]["model_id"] == record["parent"]["model_id"]
    assert load_model(tmp_path / "run").config.width == 16  # the parent's architecture


def test_fine_tuning_refuses_architecture_options(tmp_path):
    from stylespace.models import ModelConfig
    from stylespace.training import TrainConfig, train_run

    with pytest.raises(StylespaceError, match="takes its architecture from the parent"):
        train_run(tmp_path, tmp_path / "split.csv", ModelConfig(), TrainConfig(init="default"), tmp_path / "run")


def test_the_backbone_learns_at_its_own_rate():
    from stylespace.models import ModelConfig, build_model
    from stylespace.training import TrainConfig
    from stylespace.training.trainer import make_optimizer, make_schedule

    model = build_model(ModelConfig(width=8, embedding_dim=16, classes=["a", "b"]))
    config = TrainConfig(lr=1e-2, backbone_lr_factor=0.1, epochs=2)
    optimizer = make_optimizer(list(model.parameters()), config, list(model.backbone.parameters()))
    make_schedule(optimizer, config, steps_per_epoch=10)
    backbone = {id(p) for p in model.backbone.parameters()}
    peaks = {("backbone" if id(g["params"][0]) in backbone else "rest"): g["max_lr"] for g in optimizer.param_groups
             if g["params"]}
    assert peaks == {"backbone": pytest.approx(1e-3), "rest": pytest.approx(1e-2)}


# --- shipped models by name -------------------------------------------------------------------------


def test_shipped_models_by_name_and_a_path_wins(tmp_path, monkeypatch):
    from stylespace.compat import load_compatibility
    from stylespace.models import load_model, resolve_model_dir, shipped_dir

    if shipped_dir("default") is None:
        pytest.skip("this installation has no shipped models")
    assert resolve_model_dir("default") == shipped_dir("default")
    assert load_model("default").config.backbone == "efficientnet-lite0"  # the shipped default since issue 24
    assert load_compatibility("compat", device="cpu")[1].value > 0
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").mkdir()
    assert resolve_model_dir("default") == Path("default")  # the user's own folder of that name
    with pytest.raises(StylespaceError, match="shipped model name"):
        load_model("no-such-model")


# --- the demo on a folder of your own photos --------------------------------------------------------


def _demo(catalog: Path, workdir: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "STYLESPACE_CACHE": str(cache_dir), "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "stylespace", "demo", "--catalog", str(catalog), "--workdir", str(workdir),
               "--no-serve"]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.slow
def test_demo_on_a_folder_catalog_fine_tunes_chooses_evaluates_indexes_and_reports(tmp_path, cache_dir):
    from stylespace.index import CatalogIndex
    from stylespace.models import load_model, model_id, shipped_dir

    if shipped_dir("default") is None:
        pytest.skip("this installation has no shipped models")
    tree = write_tree(tmp_path / "tree")
    workdir = tmp_path / "demo"
    run = _demo(tree, workdir, cache_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "--hold-out 2" in run.stdout and "--init default" in run.stdout, run.stdout
    assert json.loads((workdir / "split.csv.json").read_text())["method"] == "held_out"
    parent = json.loads((workdir / "finetuned" / "run.json").read_text())["parent"]
    assert parent["model_id"] == model_id(load_model("default"))
    choice = json.loads((workdir / "model_choice.json").read_text())
    assert len(choice["candidates"]) == 2 and "validation" in choice["reason"]
    assert "using the " in run.stdout
    evaluation = json.loads((workdir / "evaluation.json").read_text())
    assert [s["number"] for s in evaluation["scenarios"]] == [1, 3, 4]
    assert evaluation["model_id"] == json.loads((workdir / "model_choice.json").read_text())["candidates"][
        0 if choice["chosen"] == choice["candidates"][0]["folder"] else 1]["model_id"]
    index = CatalogIndex.open(workdir / "index")
    assert len(index) == sum(TREE_SIZES)  # the broken files are left out, every photo is in
    assert (workdir / "report" / "report.html").stat().st_size > 0
    assert "calibrate-threshold" in run.stdout and "--part main/test" in run.stdout
    assert "demo ready" in run.stderr and "to serve it: $ stylespace serve" in run.stdout


def test_demo_on_an_unlabelled_catalog_indexes_searches_and_audits(tmp_path, cache_dir):
    from stylespace.models import shipped_dir

    if shipped_dir("default") is None:
        pytest.skip("this installation has no shipped models")
    rng = np.random.default_rng(0)
    (tmp_path / "photos").mkdir()
    rows = ["path"]
    for j, (_, shape, colour) in enumerate(TREE_CLASSES * 2):
        synth_image(shape, colour, rng).save(tmp_path / "photos" / f"{j}.png")
        rows.append(f"photos/{j}.png")
    (tmp_path / "catalog.csv").write_text("\n".join(rows) + "\n")
    workdir = tmp_path / "demo"
    run = _demo(tmp_path / "catalog.csv", workdir, cache_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "has no labels" in run.stderr
    assert (workdir / "index" / "index.json").is_file() and (workdir / "audit" / "audit.json").is_file()
    assert "$ stylespace search" in run.stdout and not (workdir / "split.csv").exists()
