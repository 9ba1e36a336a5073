"""The analysis report: its measurements on generated arrays, its figures, and the whole report rendered on a
small generated catalog with an untrained compact model."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from stylespace.report import analysis, figures, maps
from stylespace.utils import StylespaceError


def blobs(n_classes=4, per_class=30, dim=16, spread=0.3, seed=0, merge=None):
    """L2-normalised Gaussian blobs; ``merge=(a, b)`` puts class b's centre right beside class a's."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 2
    if merge:
        centres[merge[1]] = centres[merge[0]] + 0.05 * rng.normal(size=dim)
    codes = np.repeat(np.arange(n_classes), per_class)
    vectors = centres[codes] + spread * rng.normal(size=(len(codes), dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), np.array([f"c{c}" for c in codes], dtype=object)


def png_is_drawn(png: bytes) -> bool:
    """Decodes, and is not one flat colour."""
    image = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    return image.size > 0 and image.std() > 5


# --- measurements ---------------------------------------------------------------------------------


def test_knn_overlap_is_high_only_for_mixed_classes():
    vectors, labels = blobs(merge=(0, 1))
    classes = ["c0", "c1", "c2", "c3"]
    overlap = maps.knn_class_overlap(vectors, labels, classes, k=5)
    assert overlap.shape == (4, 4)
    np.testing.assert_allclose(overlap.sum(axis=1), 1.0)
    pairs = maps.symmetric_pair_scores(overlap)
    assert pairs[0, 1] > 0.2  # c0 and c1 share a centre
    assert pairs[2, 3] < 0.05 and pairs[0, 2] < 0.05
    assert overlap[2, 2] > 0.95


def test_knn_overlap_validates_input():
    with pytest.raises(StylespaceError, match="N labels"):
        maps.knn_class_overlap(np.zeros((3, 2)), ["a", "b"], ["a", "b"])
    with pytest.raises(StylespaceError, match="k must be"):
        maps.knn_class_overlap(np.zeros((3, 2)), ["a", "b", "a"], ["a", "b"], k=0)


def test_projector_gives_2d_points_and_says_what_it_used():
    vectors, _ = blobs(per_class=10)
    tsne = maps.Projector2D("tsne", maps.MapConfig(perplexity=50))
    points = tsne.fit_transform(vectors)
    assert points.shape == (40, 2) and np.isfinite(points).all()
    assert tsne.used["perplexity"] == 13.0  # clipped to (n - 1) / 3 for 40 items
    umap_points = maps.Projector2D("umap", maps.MapConfig(umap_epochs=20, n_neighbors=5)).fit_transform(vectors)
    assert umap_points.shape == (40, 2) and np.isfinite(umap_points).all()
    with pytest.raises(StylespaceError, match="method"):
        maps.Projector2D("pca")


def test_reading_ranks_confused_pairs_against_overlap():
    classes = ["a", "b", "c", "d"]
    confusion = np.array([[8, 2, 0, 0], [3, 7, 0, 0], [0, 0, 9, 1], [0, 0, 0, 10]])
    overlap = np.array([[.7, .3, 0, 0], [.3, .7, 0, 0], [0, 0, .95, .05], [0, 0, .02, .98]])
    reading = analysis.read_confusion_vs_overlap(confusion, {"t-SNE": overlap}, classes, top=3)
    assert [(p.class_a, p.class_b) for p in reading.top_pairs] == [("a", "b"), ("c", "d")]  # unconfused pairs not listed
    assert reading.top_pairs[0].overlap_rank["t-SNE"] == 1
    assert reading.top_agreement["t-SNE"] == 2
    assert reading.spearman["t-SNE"] > 0.9
    # Reversing the overlap ranking turns the correlation negative: the number is measured, not assumed.
    flipped = analysis.read_confusion_vs_overlap(confusion, {"t-SNE": 0.5 - overlap * (1 - np.eye(4))}, classes)
    assert flipped.spearman["t-SNE"] < 0
    assert any("Spearman" in s for s in reading.summary())


def test_centroid_line_runs_from_one_class_to_the_other():
    vectors, labels = blobs(n_classes=3, per_class=25, spread=0.2)
    line = analysis.centroid_line(vectors, labels, "c0", "c1", steps=7)
    assert labels[line.nearest_a] == "c0" and labels[line.nearest_b] == "c1"
    assert labels[line.strip[0]] == "c0" and labels[line.strip[-1]] == "c1"
    assert len(set(line.strip.tolist())) == 7  # each strip item is shown once
    positions = np.asarray(line.positions)
    position_labels = np.asarray(line.position_labels)
    assert positions[position_labels == "c0"].mean() == pytest.approx(0.0, abs=1e-6)
    assert positions[position_labels == "c1"].mean() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(StylespaceError, match="no items"):
        analysis.centroid_line(vectors, labels, "c0", "Shirts")


def test_sample_indices_keeps_every_class():
    labels = ["rare"] + ["common"] * 99
    picked = analysis.sample_indices(100, 10, seed=0, labels=labels)
    assert len(picked) == 10 and 0 in picked and len(set(picked.tolist())) == 10
    assert len(analysis.sample_indices(5, 10)) == 5


# --- figures --------------------------------------------------------------------------------------


def test_figures_render_as_non_blank_png():
    vectors, labels = blobs(n_classes=3, per_class=20)
    classes = ["c0", "c1", "c2"]
    points = vectors[:, :2]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(len(vectors), 16, 12, 3), dtype=np.uint8)
    line = analysis.centroid_line(vectors, labels, "c0", "c1", steps=5)
    drawn = [
        figures.scatter_map(points, labels, classes, "map", "t-SNE"),
        figures.thumbnail_map(points, images, "thumbs", "t-SNE", canvas_px=400, thumb_height=16),
        figures.confusion_figure(np.array([[5, 1, 0], [2, 4, 0], [0, 0, 6]]), classes, "confusion"),
        figures.centroid_figure({"test": line}, {"test": images}, {"test": list(labels)},
                                {"test": [str(i) for i in range(len(labels))]}, "centroids"),
        figures.interpolation_figure({"test": line}, {"test": images}, {"test": list(labels)}, "strip"),
        figures.line_position_figure({"test": line}, "positions"),
        figures.level_accuracy_figure([{"level": "articleType", "accuracy": .5, "balanced_accuracy": .4, "classes": 3}],
                                      "levels"),
        figures.roc_figure(np.linspace(0, 1, 10), np.linspace(0, 1, 10) ** .5, 0.7, "roc", (0.2, 0.6, 0.9)),
        figures.learning_curves_figure({"epoch": np.arange(3.0), "loss": np.array([3., 2, 1])}, "epoch", "curves"),
        figures.distance_histogram_figure([("before", rng.random(50), rng.random(50), None),
                                           ("after", rng.random(50) / 2, rng.random(50) + .5, 0.7)], "hist"),
    ]
    for figure in drawn:
        assert figure.axes[0].get_title() or figure.get_suptitle()
        assert png_is_drawn(figures.to_png(figure, dpi=40))


# --- the whole report -----------------------------------------------------------------------------


@pytest.fixture
def report_inputs(tmp_path, cache_dir):
    """A 6-class generated catalog (Shirts and Tshirts among them), a protocol split with main and new
    classes, an untrained compact model saved as a run folder with a short history."""
    from conftest import write_kaggle_catalog
    from stylespace.data import load_catalog, protocol_split
    from stylespace.models import ModelConfig, build_model, save_model

    catalog_dir = write_kaggle_catalog(tmp_path / "catalog", per_class=16)
    catalog = load_catalog(catalog_dir)
    # Equal class sizes rank by name: Casual Shoes, Handbags, Jeans, Shirts are main; Tshirts, Watches new.
    split = protocol_split(catalog, n_main=4, n_new=2, main_fractions=(0.5, 0.25, 0.25), seed=0)
    split_path = split.save(tmp_path / "split.csv")
    model_dir = tmp_path / "run"
    save_model(build_model(ModelConfig(width=8, embedding_dim=16)), model_dir)
    (model_dir / "history.csv").write_text("epoch,train_loss,train_accuracy,val_loss,val_accuracy,val_metric,lr,seconds\n"
                                           "1,2.1,0.3,2.2,0.25,0.25,0.001,3\n2,1.6,0.5,1.8,0.4,0.4,0.001,3\n")
    return model_dir, split_path, catalog_dir


FAST = dict(perplexity=5.0, umap_epochs=20, thumbnail_sample=40, map_sample=200, max_pairs=2000, interpolation_steps=5)


def test_report_renders_every_figure(report_inputs, tmp_path):
    import base64
    import json

    from stylespace.report.build import ReportConfig, write_report
    from stylespace.report.inputs import load_report_inputs

    model_dir, split_path, catalog_dir = report_inputs
    inputs = load_report_inputs(model_dir, split_path, progress=False, batch_size=32)
    result = write_report(inputs, tmp_path / "report", ReportConfig(pair=("Jeans", "Shirts"), **FAST))
    names = [p.name for p in result.figures]
    for expected in ("map_tsne_train", "map_umap_train", "map_tsne_test", "map_umap_test", "thumbnail_map_tsne",
                     "confusion_scenario2", "confusion_vs_overlap", "centroid_nearest", "centroid_interpolation",
                     "centroid_positions", "coarse_labels", "risk_coverage", "roc_pairs", "learning_curves",
                     "distance_histograms"):
        assert any(n.endswith(f"_{expected}.png") for n in names), f"{expected} missing from {names}"
    html = result.html.read_text()
    for path in result.figures:
        png = path.read_bytes()
        assert png_is_drawn(png), f"{path.name} is blank"
        assert base64.b64encode(png).decode() in html, f"{path.name} is not embedded in the HTML"
    assert html.count("<figcaption>") == len(result.figures)
    assert "src=\"http" not in html and "<script" not in html  # self-contained
    assert result.missing == []
    numbers = json.loads((tmp_path / "report" / "report.json").read_text())
    assert numbers["results"]["confusion"]["n_test"] > 0
    assert {r["level"] for r in numbers["results"]["hierarchy"]} == {"articleType", "subCategory", "masterCategory"}


def test_report_says_what_is_missing(report_inputs, tmp_path):
    """Default pair Shirts/Tshirts: Tshirts is a new class (no train items); no history: the run has none."""
    from stylespace.report.build import ReportConfig, write_report
    from stylespace.report.inputs import load_report_inputs

    model_dir, split_path, _ = report_inputs
    (model_dir / "history.csv").unlink()
    # An earlier report in the same folder: its figures go, the user's other files stay.
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "99_old_figure.png").write_bytes(b"old")
    (folder / "notes.txt").write_text("mine")
    (folder / "report.json").write_text('{"figures": [{"file": "99_old_figure.png"}]}')
    inputs = load_report_inputs(model_dir, split_path, progress=False, batch_size=32)
    result = write_report(inputs, folder, ReportConfig(**FAST))
    assert not (folder / "99_old_figure.png").exists() and (folder / "notes.txt").exists()
    missing = " ".join(result.missing)
    assert "no items of class 'Tshirts'" in missing and "train split" in missing
    assert "history.csv" in missing
    html = result.html.read_text()
    assert "Not shown:" in html and "Tshirts" in html
    # The test split has both classes, so that half of the centroid section is still drawn.
    assert any(p.name.endswith("_centroid_interpolation.png") for p in result.figures)
    assert not any(p.name.endswith("_learning_curves.png") for p in result.figures)


def test_cli_json_is_one_document_and_errors_are_one_line(report_inputs, tmp_path):
    import json
    import subprocess
    import sys

    from typer.testing import CliRunner

    from stylespace.cli import app

    model_dir, split_path, _ = report_inputs
    args = ["report", str(model_dir), "--split", str(split_path), "-o", str(tmp_path / "out"), "--pair", "Jeans,Shirts",
            "--perplexity", "5", "--umap-epochs", "20", "--thumbnails", "40", "--max-pairs", "2000"]
    # In-process (UMAP's compiled code is reused); stdout must be exactly one JSON document.
    result = CliRunner().invoke(app, args + ["--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["missing"] == [] and len(doc["figures"]) == 15
    assert (tmp_path / "out" / "report.html").is_file()
    # Through the real entry point: a user error is one line on stderr and exit status 2.
    bad = subprocess.run([sys.executable, "-m", "stylespace", *args[:-8], "--pair", "Shirts"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "--pair expects two class names" in bad.stderr and "Traceback" not in bad.stderr


def test_report_on_a_stratified_split(report_inputs, small_catalog, tmp_path):
    """A stratified train/test split is read as its known classes, train -> test: the confusion, the coarser
    labels and the recommendations' error rate vs coverage are drawn from it, as for a protocol split."""
    from stylespace.data import load_catalog, stratified_split
    from stylespace.report.build import ReportConfig, write_report
    from stylespace.report.inputs import load_report_inputs

    model_dir, _, _ = report_inputs
    split_path = stratified_split(load_catalog(small_catalog), {"train": 0.5, "test": 0.5}).save(tmp_path / "s.csv")
    inputs = load_report_inputs(model_dir, split_path, progress=False, batch_size=32)
    result = write_report(inputs, tmp_path / "report", ReportConfig(**FAST))
    missing = " ".join(result.missing)
    assert "scenario" not in missing, missing
    names = " ".join(p.name for p in result.figures)
    for drawn in ("map_tsne_test", "thumbnail_map_tsne", "confusion", "centroid_interpolation", "risk_coverage",
                  "roc_pairs", "distance_histograms"):
        assert drawn in names, names
