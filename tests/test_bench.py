"""`stylespace bench`: the published protocols (Fashion-MNIST's official split, the year split, few-shot
episodes) on small generated data, the published figures with their sources, and the pieces under them."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import SYNTH_CLASSES, write_idx_catalog, write_kaggle_catalog
from stylespace.cli import app
from stylespace.data import YEAR_PARITY_MAP, column_split, load_catalog, protocol_split, year_split
from stylespace.data.splits import map_column_value
from stylespace.evaluation.benchmarks import RESULT_FILE, BenchConfig, run_benchmark
from stylespace.evaluation.episodes import EpisodeConfig, evaluate_episodes, mean_interval, sample_episodes
from stylespace.evaluation.probe import LinearProbe, top_k_accuracy
from stylespace.evaluation.published import BENCHMARKS, BenchResult, markdown_table
from stylespace.models import EmbeddingModel, ModelConfig, save_model
from stylespace.utils import StylespaceError

# 18 distinct synthetic article types: the 6 shapes-and-colours of conftest, each also in two other shades
MANY_CLASSES = [(f"{label} {k}", shape, tuple(int((c + 70 * k) % 256) for c in colour), sub, master)
                for k in range(3) for label, shape, colour, sub, master in SYNTH_CLASSES]


def _set_years(root: Path, year_of) -> Path:
    """Rewrite the generated catalog's year column: ``year_of(label, index within its class)``."""
    path = root / "styles.csv"
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    seen: dict[str, int] = {}
    for row in rows[1:]:
        label = row[4]
        row[7] = year_of(label, seen.get(label, 0))
        seen[label] = seen.get(label, 0) + 1
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return root


def _untrained_model(folder: Path, classes: list[str] | None = None, size=(80, 60)) -> Path:
    config = ModelConfig(backbone="compact", width=8, stem_stride=4, input_size=size, embedding_dim=16,
                         classes=list(classes or []), embed_layer="features").validate()
    torch.manual_seed(0)  # the same random weights whatever ran before (the year-split figure depends on them)
    save_model(EmbeddingModel(config), folder)
    return folder


def _invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout


# --- the published figures -------------------------------------------------------------------------------


def test_every_benchmark_has_published_figures_with_a_source():
    for name, chosen in BENCHMARKS.items():
        assert chosen.published, name
        keys = {m.key for m in chosen.metrics}
        for figure in chosen.published:
            assert set(figure.values) == keys and all(0 < v < 1 for v in figure.values.values())
            assert figure.source and figure.url.startswith("https://")
    assert {p.values["accuracy"] for p in BENCHMARKS["fashion-mnist"].published} >= {0.842, 0.897}
    assert [tuple(p.values.values()) for p in BENCHMARKS["episodes"].published] == [(0.765, 0.887, 0.764)]


def test_published_table_is_printed_with_its_sources():
    code, text = _invoke("bench", "fashion-mnist", "--published")
    assert code == 0
    assert "84.20 %" in text and "89.70 %" in text
    assert "https://arxiv.org/abs/1708.07747" in text and "zalandoresearch/fashion-mnist" in text
    code, text = _invoke("bench", "year-split", "--published", "--json")
    document = json.loads(text)  # exactly one JSON document on stdout
    assert document["benchmark"] == "year-split"
    assert [(r["values"]["top1"], r["values"]["top5"]) for r in document["rows"]] == [(0.868, 0.9574),
                                                                                      (0.8805, 0.9578)]
    assert all("uditarora/fashion-product-classification" in r["url"] for r in document["rows"])


def test_markdown_table_marks_our_rows_and_names_sources():
    chosen = BENCHMARKS["episodes"]
    from stylespace.evaluation.published import BenchRow

    result = BenchResult.with_published(chosen, [BenchRow("ours", {"5w1s": 0.5, "5w5s": 0.7, "15w5s": None},
                                                           interval={"5w1s": 0.012})], model={}, details={})
    lines = markdown_table(chosen, result.rows).splitlines()
    assert lines[0] == "| method | 5-way 1-shot | 5-way 5-shot | 15-way 5-shot | source |"
    assert lines[2] == "| **ours** | 50.00 +- 1.20 % | 70.00 % |  | this run |"
    assert "[gitmatti/few-shot-learning" in lines[3] and "76.50 %" in lines[3]


def test_bench_config_refuses_what_does_not_belong_to_the_protocol():
    with pytest.raises(StylespaceError, match="benchmark must be one of"):
        BenchConfig("cifar")
    with pytest.raises(StylespaceError, match="train belongs to year-split"):
        BenchConfig("episodes", train=True)
    with pytest.raises(StylespaceError, match="give one"):
        BenchConfig("year-split", train=True, model="default")
    with pytest.raises(StylespaceError, match="preset and epochs"):
        BenchConfig("episodes", epochs=3)
    with pytest.raises(StylespaceError, match="split belongs to episodes"):
        BenchConfig("year-split", split="split.csv")
    with pytest.raises(StylespaceError, match="episodes must be an integer in"):
        BenchConfig("episodes", episodes=10**9)
    assert BenchConfig("year-split", train=True, epochs=2).folder == Path("runs/bench/year-split")


# --- episodes -----------------------------------------------------------------------------------------


def test_episode_sampling_never_mixes_support_and_query_items():
    labels = [f"c{k % 9}" for k in range(9 * 7)] + ["tiny"] * 3  # "tiny" has too few items to take part
    config = EpisodeConfig(ways=5, shots=2, queries=3, episodes=200, seed=4)
    episodes = list(sample_episodes(labels, config))
    assert len(episodes) == 200
    for episode in episodes:
        assert not set(episode.support) & set(episode.query)
        assert len(set(episode.support)) == 10 and len(set(episode.query)) == 15
        assert list(np.bincount(episode.support_class)) == [2] * 5 and list(np.bincount(episode.query_class)) == [3] * 5
        # each episode class is one real class, on both sides, and the classes differ
        real = {}
        for rows, classes in ((episode.support, episode.support_class), (episode.query, episode.query_class)):
            for row, cls in zip(rows, classes):
                assert real.setdefault(cls, labels[row]) == labels[row]
        assert len(set(real.values())) == 5 and "tiny" not in real.values()
    again = list(sample_episodes(labels, config))
    assert all(np.array_equal(a.query, b.query) for a, b in zip(episodes, again))  # a fixed seed, the same episodes
    with pytest.raises(StylespaceError, match="need 10 classes of at least 5 items; 9 of 10"):
        next(sample_episodes(labels, EpisodeConfig(ways=10, shots=2, queries=3)))


def test_prototypes_find_separated_classes_and_chance_on_noise():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(8), 10)
    centres = np.eye(8, 16) * 10
    separated = centres[labels] + rng.normal(0, 0.5, (80, 16))
    result = evaluate_episodes(separated, labels, EpisodeConfig(ways=5, shots=1, episodes=300))
    assert result.mean == 1.0 and result.interval == 0.0 and result.classes == 8 and result.items == 80
    # labels that say nothing about the vectors: about 1 in 4 right (the fixed items make episodes depend a little)
    many = np.repeat(np.arange(8), 200)
    chance = evaluate_episodes(rng.normal(0, 1, (1600, 32)), many, EpisodeConfig(ways=4, shots=1, queries=2,
                                                                                 episodes=2000))
    assert abs(chance.mean - 0.25) < 0.03 and 0 < chance.interval < 0.02


def test_mean_interval_is_1_96_standard_errors():
    values = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    assert mean_interval(values) == pytest.approx(1.96 * values.std(ddof=1) / np.sqrt(5))
    assert mean_interval(np.array([0.4])) == 0.0


def test_episodes_benchmark_over_new_classes_the_model_never_trained_on(tmp_path, cache_dir):
    root = write_kaggle_catalog(tmp_path / "catalog", per_class=6, classes=MANY_CLASSES)
    catalog = load_catalog(root)
    manifest = protocol_split(catalog, n_main=2, n_new=16)
    split = manifest.save(tmp_path / "split.csv")
    new = sorted(set(manifest.select(group="new").labels))
    model = _untrained_model(tmp_path / "model", classes=[new[0]])  # its classifier knows one new type
    result = run_benchmark(BenchConfig("episodes", data=str(root), model=str(model), split=str(split),
                                       episodes=300, out=str(tmp_path / "out")))
    ours = result.rows[0]
    assert ours.ours and set(ours.values) == {"5w1s", "5w5s", "15w5s"}
    assert all(0 < ours.interval[k] < 0.2 for k in ours.values)
    assert ours.values["5w5s"] > 0.2 + 0.1 and ours.values["15w5s"] > 1 / 15 + 0.1  # far above chance
    assert result.details["left_out_known_classes"] == [new[0]] and new[0] not in result.details["classes"]
    assert result.details["items"] == 15 * 6
    assert any("left out" in c for c in result.caveats) and any("300 episodes" in c for c in result.caveats)
    assert not result.rows[1].ours and result.rows[1].url
    saved = json.loads((tmp_path / "out" / RESULT_FILE).read_text())
    assert saved["rows"][0]["values"] == pytest.approx(ours.values)


# --- the year split ----------------------------------------------------------------------------------


def test_year_parity_mapping():
    assert [map_column_value(v, YEAR_PARITY_MAP) for v in ("2012", "2011", "2016.0", "", "n/a", "2012.5")] == \
        ["train", "test", "train", "skip", "skip", "skip"]
    # a value named itself wins over its parity
    assert map_column_value("2012", {"2012": "test", "even": "train"}) == "test"
    assert map_column_value("2014", {"2012": "test", "even": "train", "*": "skip"}) == "train"


ONLY_ODD = "Casual Shoes"  # like the shared catalog's Perfume and Body Mist: no even-year item


def _year_catalog(tmp_path: Path) -> Path:
    """5 article types of 12 items, years 2011, 2012, 2016, 2017 in turn, the 12th item without a year; every
    item of ONLY_ODD in 2011."""
    root = write_kaggle_catalog(tmp_path / "catalog", per_class=12, classes=SYNTH_CLASSES[:5])

    def year_of(label: str, k: int) -> str:
        if k == 11:
            return ""  # no year: left out
        if label == ONLY_ODD:
            return "2011"
        return ("2012", "2011", "2016", "2017")[k % 4]

    return _set_years(root, year_of)


def test_year_split_even_years_train_odd_years_test(tmp_path, cache_dir):
    catalog = load_catalog(_year_catalog(tmp_path))
    manifest = year_split(catalog, n_classes=5, val_fraction=0.2, seed=0)
    years = {item.id: item.meta["year"] for item in catalog.items}
    for row in manifest.rows:
        assert int(years[row["id"]]) % 2 == (1 if row["split"] == "test" else 0)
    assert set(manifest.labels) == {"Tshirts", "Shirts", "Jeans", "Watches"}  # not the class of odd years only
    assert manifest.totals() == {"all/train": 4 * 5, "all/val": 4 * 1, "all/test": 4 * 5}
    # the same split from the CLI's column map
    code, text = _invoke("split", tmp_path / "catalog", "--by", "year", "--map", "even=train,odd=test,*=skip",
                         "--drop-unshared", "--val-fraction", "0.2", "-o", tmp_path / "s.csv", "--json")
    assert code == 0 and json.loads(text)["sha256"] == column_split(
        catalog, "year", val_fraction=0.2, mapping=YEAR_PARITY_MAP, drop_unshared=True).sha256
    # the 2 most frequent (a tie: by name) are Casual Shoes and Jeans; Casual Shoes cannot be learnt
    assert year_split(catalog, n_classes=2).config.main_classes == ["Jeans"]


def test_top_k_accuracy_counts_unlearnt_classes_as_errors():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    classes = ["a", "b", "c"]
    truth = ["b", "b", "a", "never-learnt"]
    assert top_k_accuracy(scores, classes, truth, 1) == 0.25
    assert top_k_accuracy(scores, classes, truth, 2) == 0.5
    assert top_k_accuracy(scores, classes, truth, 5) == 0.75  # k above the classes: all of them, but not the 4th
    with pytest.raises(StylespaceError, match="do not match"):
        top_k_accuracy(scores[:2], classes, truth, 1)


def test_linear_probe_chooses_its_strength_on_validation_only():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    x = np.eye(3, 8)[y] + rng.normal(0, 0.3, (90, 8))
    probe = LinearProbe(strengths=(0.01, 1.0)).fit(x[::2], y[::2], x[1::2], y[1::2])
    assert set(probe.validation) == {0.01, 1.0} and probe.chosen in probe.validation
    assert probe.validation[probe.chosen] == max(probe.validation.values())
    assert probe.scores(x).shape == (90, 3) and probe.classes == [0, 1, 2]
    with pytest.raises(StylespaceError, match="strengths must be"):
        LinearProbe(strengths=(0.0,))
    with pytest.raises(StylespaceError, match="validation part"):
        LinearProbe().fit(x, y, x[:0], y[:0])


def test_year_split_benchmark_for_a_given_model(tmp_path, cache_dir):
    root = _year_catalog(tmp_path)
    model = _untrained_model(tmp_path / "model")
    result = run_benchmark(BenchConfig("year-split", data=str(root), model=str(model), classes=5,
                                       out=str(tmp_path / "out")))
    details = result.details
    assert details["unlearnable_test_items"] == {ONLY_ODD: 11}  # its 11 items with a year, all odd
    assert details["test_items"] == 4 * 5 + 11 and details["learnt_classes"] == 4
    ours = result.rows[0]
    assert ours.method.endswith("logistic regression on its embedding") and len(result.rows) == 1 + 2
    # the unlearnable items are always errors, so at most 20 of 31 test items can be right
    assert 0.5 < ours.values["top1"] <= 20 / 31 + 1e-9 and ours.values["top5"] == pytest.approx(20 / 31)
    assert details["probe"]["chosen_C"] in details["probe"]["validation_top1"]
    assert any("5 article types" in c for c in result.caveats)
    assert (tmp_path / "out" / "split.csv").is_file() and (tmp_path / "out" / RESULT_FILE).is_file()


def test_year_split_benchmark_trains_on_even_years_only(tmp_path, cache_dir):
    root = _year_catalog(tmp_path)
    result = run_benchmark(BenchConfig("year-split", data=str(root), train=True, preset="cpu", epochs=1, classes=5,
                                       out=str(tmp_path / "out")))
    head, probe = result.rows[0], result.rows[1]
    assert head.method == "cpu preset, trained here: its classifier" and "epochs changed to 1" in head.note
    assert probe.method.endswith("logistic regression on its embedding")
    assert result.model["trained_here"] and (tmp_path / "out" / "model" / "model.json").is_file()
    run = json.loads((tmp_path / "out" / "model" / "run.json").read_text())
    assert run["split_sha256"] == result.details["split_sha256"]  # trained on the year split's even years
    assert run["train_items"] == 20 and run["val_items"] == 4


# --- Fashion-MNIST ----------------------------------------------------------------------------------------


def _scored_again(data: Path, model_dir: Path) -> tuple[float, float | None]:
    """(1-NN accuracy, classifier accuracy) of the official split under the saved model, computed here without
    the benchmark: what its figures must equal."""
    from stylespace.data import load_image_array
    from stylespace.embeddings import embed_images, predict_classes
    from stylespace.models import load_model

    model, catalog = load_model(model_dir), load_catalog(data)
    array = load_image_array(catalog, size=tuple(model.config.input_size), progress=False)
    part = lambda name: [i.id for i in catalog.items if i.meta["subset"] == name]
    labels = lambda ids: np.array([catalog[i].label for i in ids])
    refs, queries = embed_images(model, array.take(part("train"))), embed_images(model, array.take(part("test")))
    nearest = (queries @ refs.T).argmax(axis=1)
    nn1 = float((labels(part("train"))[nearest] == labels(part("test"))).mean())
    if model.classifier is None or not set(labels(part("test"))) <= set(model.classes):
        return nn1, None
    predicted = np.array(model.classes)[predict_classes(model, array.take(part("test")))]
    return nn1, float((predicted == labels(part("test"))).mean())


def test_fashion_mnist_benchmark_trains_the_small_preset_and_prints_one_json_document(tmp_path, cache_dir):
    data = write_idx_catalog(tmp_path / "fm", np.arange(200) % 10, np.arange(30) % 10)
    code, text = _invoke("bench", "fashion-mnist", "--data", data, "--epochs", "1", "--out", tmp_path / "out",
                         "--json")
    assert code == 0
    document = json.loads(text)  # exactly one JSON document on stdout
    ours = [r for r in document["rows"] if r["ours"]]
    assert [r["method"] for r in ours] == ["small preset, trained here: its classifier",
                                           "small preset, trained here: 1-NN on its embedding (cosine, 200 training images)"]
    assert "compact w32 stem 2" in ours[0]["note"] and "epochs changed to 1" in ours[0]["note"]
    details = document["details"]
    assert (details["train_images"], details["test_images"], details["official_split"]) == (200, 30, False)
    nn1, classifier = _scored_again(data, tmp_path / "out" / "model")
    assert (details["nn1_accuracy"], details["classifier_accuracy"]) == (pytest.approx(nn1), pytest.approx(classifier))
    assert [r["values"]["accuracy"] for r in ours] == [pytest.approx(classifier), pytest.approx(nn1)]
    assert any("not the official" in c for c in document["caveats"])
    assert [r["values"]["accuracy"] for r in document["rows"] if not r["ours"]][:2] == [0.842, 0.897]
    run = json.loads((tmp_path / "out" / "model" / "run.json").read_text())
    assert (run["train_items"], run["val_items"]) == (190, 10)  # 5 % of each class of the training images validates
    # the same run, read back from its folder
    assert json.loads((tmp_path / "out" / RESULT_FILE).read_text())["details"] == details


def test_fashion_mnist_benchmark_with_a_model_for_other_classes(tmp_path, cache_dir):
    data = write_idx_catalog(tmp_path / "fm", np.arange(40) % 10, np.arange(20) % 10)
    model = _untrained_model(tmp_path / "model", classes=["Tshirts", "Shirts"], size=(28, 28))
    result = run_benchmark(BenchConfig("fashion-mnist", data=str(data), model=str(model), out=str(tmp_path / "out")))
    assert [r.method for r in result.rows if r.ours] == [f"model {model}: 1-NN on its embedding (cosine, 40 training images)"]
    assert result.details["classifier_accuracy"] is None
    assert result.details["nn1_accuracy"] == pytest.approx(_scored_again(data, model)[0])
    assert any("1-NN only" in c for c in result.caveats)


def test_missing_data_names_the_install(tmp_path):
    with pytest.raises(StylespaceError, match="apt-get install -y dataset-fashion-mnist"):
        run_benchmark(BenchConfig("fashion-mnist", data=str(tmp_path / "nowhere"), out=str(tmp_path / "out")))
