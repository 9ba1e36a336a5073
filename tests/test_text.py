"""Search by words: the tokenizer, the text encoder trained against a locked image model, the refusal of
another image model, text search (embedding, hybrid, combined with an image, no confident match), the CLI
and the API, on a generated catalog of article types in four colours."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from text_catalog import build_text_catalog, write_colour_catalog


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STYLESPACE_CACHE", str(root / "cache"))
        yield build_text_catalog(root)


@pytest.fixture(scope="module")
def search(built):
    from stylespace.index import CatalogIndex
    from stylespace.index.text_search import TextSearch

    return TextSearch.open(CatalogIndex.open(built.index))


def colours(answer) -> list[str]:
    return [hit.meta["baseColour"] for hit in answer.hits]


# --- the tokenizer -------------------------------------------------------------------------------------------


def test_tokenizer_normalises_and_keeps_misspellings_close():
    from stylespace.text import TextTokenizer

    names = ["Turtle Check Men Navy Blue Shirt", "Nike Men Black T-Shirt", "Puma Women Red Tshirt",
             "Adidas Men White Sports Shoes", "Vero Moda Women Red Top"] * 3
    tokenizer = TextTokenizer.train(names, names, vocab_size=200)
    assert tokenizer.words_of("Men's NAVY-blue T-Shirt!") == ["mens", "navyblue", "tshirt"]
    assert tokenizer.words_of("tshirt") == tokenizer.words_of("T-Shirt")
    doubled, unknown = tokenizer.features("tshirtt"), tokenizer.features("qqxz")
    assert doubled.known == [True] and unknown.known == [False]
    # a misspelling shares n-grams with the right word; gibberish shares none of the known n-grams
    right = set(tokenizer.features("tshirt").ids)
    assert len(right & set(tokenizer.features("tshrit").ids)) >= 3
    assert not (set(unknown.ids) - set(range(tokenizer.pieces)))
    # hostile input is cut short before anything reads it
    assert len(tokenizer.words_of("shirt " * 10_000)) <= 48


def test_text_config_checks_itself():
    from stylespace.text import TextConfig
    from stylespace.utils import StylespaceError

    with pytest.raises(StylespaceError, match="encoder must be one of bag, transformer"):
        TextConfig(encoder="lstm")
    with pytest.raises(StylespaceError, match="epochs must be an integer >= 1"):
        TextConfig(epochs=0)


# --- training --------------------------------------------------------------------------------------------------


def test_training_lowers_the_loss_and_a_colour_finds_its_items(built, search):
    model = search.text_model
    history = model.info.history
    assert history[-1]["loss"] < history[0]["loss"] - 0.5
    assert model.info.image_model_id == search.index.model_id and model.info.items > 0
    for colour in ("Green", "Yellow", "Blue"):
        answer = search.search(colour.lower(), k=8, mode="embedding")
        assert answer.confident and answer.method == "embedding"
        assert colours(answer).count(colour) >= 6, (colour, colours(answer))
    both = search.search("red jeans", k=6, mode="embedding")
    assert sum(h.meta["baseColour"] == "Red" and h.label == "Jeans" for h in both.hits) >= 4


def test_a_misspelt_colour_still_finds_it(search):
    answer = search.search("yelow", k=8, mode="embedding")
    assert answer.confident and colours(answer).count("Yellow") >= 6


def test_the_text_model_round_trips_and_refuses_another_image_model(built, search, tmp_path):
    from stylespace.index import CatalogIndex
    from stylespace.index.text_search import TextSearch
    from stylespace.text import TextModel
    from stylespace.utils import StylespaceError

    loaded = TextModel.load(built.text_model)
    assert np.allclose(loaded.encode(["green watch"]), search.text_model.encode(["green watch"]), atol=1e-6)
    # queries run the bag in NumPy: the same vectors as the torch module that was trained
    import torch

    from stylespace.text.encoder import batch_inputs

    texts = ["green watch", "blue jeans for men", "", "yelow"]
    with torch.no_grad():
        by_torch = loaded.encoder(*batch_inputs(loaded.features(texts), loaded.tokenizer.pieces, False)).numpy()
    assert np.allclose(loaded.encode(texts), by_torch, atol=1e-5)
    with pytest.raises(StylespaceError, match="trained for image model .* uses image model 0123456789ab"):
        TextModel.load(built.text_model, image_model_id="0123456789ab")
    vectors = np.random.default_rng(0).normal(size=(20, 32)).astype(np.float32)
    other = CatalogIndex.create(tmp_path / "other", [str(i) for i in range(20)], vectors, model_id="0123456789ab")
    with pytest.raises(StylespaceError, match="text-train"):
        TextSearch(other, loaded)
    with pytest.raises(StylespaceError, match="not a text model folder"):
        TextModel.load(tmp_path)


def test_the_transformer_encoder_trains_too(built):
    from stylespace.data import load_catalog
    from stylespace.models import load_model
    from stylespace.text import TextConfig, train_text_model

    config = TextConfig(encoder="transformer", epochs=3, batch_size=32, token_dim=32, hidden_dim=32, vocab_size=200,
                        heads=2)
    model = train_text_model(load_model(built.model), load_catalog(built.catalog), config=config, device="cpu",
                             progress=False)
    assert model.encode(["red jeans", ""]).shape == (2, 32)
    assert np.isfinite(model.encode(["red jeans", ""])).all()


# --- search ------------------------------------------------------------------------------------------------------


def test_words_the_model_does_not_know_get_no_items_and_the_reason(search):
    for query in ("qqxzv wbbkj", "!!!"):
        answer = search.search(query, k=5)
        assert not answer.confident and answer.hits == [] and answer.method == "none"
        assert "no word" in answer.reason or "no words" in answer.reason
    # known words, but nothing that resembles them: below the calibrated floor
    floored = dataclasses.replace(search.text_model.info, floor=1.01)
    strict = type(search)(search.index, type(search.text_model)(search.text_model.tokenizer, search.text_model.encoder,
                                                                search.text_model.config, floored))
    answer = strict.search("green", k=5, mode="embedding")
    assert not answer.confident and answer.hits == [] and "below the floor" in answer.reason


def test_hybrid_where_names_exist_embedding_where_they_do_not(built, search, tmp_path, monkeypatch):
    from stylespace.data import load_catalog
    from stylespace.index.build import build_index
    from stylespace.index.text_search import TextSearch
    from stylespace.models import load_model

    answer = search.search("green jeans", k=6)
    assert answer.method == "hybrid" and answer.name_matches > 0 and answer.score_name == "rrf"
    assert all(h.label == "Jeans" and h.meta["baseColour"] == "Green" for h in answer.hits)
    keywords = search.search("brand1 green", k=3, mode="keywords")
    assert keywords.method == "keywords" and all("Brand1" in h.meta["productDisplayName"] for h in keywords.hits)
    # the same images without names: the text model alone answers
    monkeypatch.setenv("STYLESPACE_CACHE", str(tmp_path / "cache"))
    catalog = load_catalog(write_colour_catalog(tmp_path / "nameless", names=False))
    index, _ = build_index(load_model(built.model), catalog, tmp_path / "index", model_path=built.model,
                           device="cpu", progress=False)
    nameless = TextSearch(index, search.text_model)
    answer = nameless.search("green jeans", k=6)
    assert answer.method == "embedding" and not nameless.has_names
    # the same images and vectors: the very ranking the named index gives with its names ignored
    assert [h.id for h in answer.hits] == [h.id for h in search.search("green jeans", k=6, mode="embedding").hits]
    assert (answer.hits[0].label, answer.hits[0].meta["baseColour"]) == ("Jeans", "Green")
    assert not nameless.search("green", k=3, mode="keywords").confident


def test_filters_and_an_image_with_words(search):
    answer = search.search("jeans", k=10, where={"gender": "Men"})
    assert answer.hits and all(h.meta["gender"] == "Men" for h in answer.hits)
    red_shirt = next(h.id for h in search.search("red tshirt", k=1, mode="embedding").hits)
    image = search.index.vectors([red_shirt])[0]
    combined = search.search("green", k=6, image_vector=image, exclude_ids=[red_shirt])
    assert combined.method == "image+text" and red_shirt not in [h.id for h in combined.hits]
    alone = search.index.search(image[None, :], k=7, model_id=None)[0][1:]
    assert colours(combined).count("Green") > [h.meta["baseColour"] for h in alone].count("Green")


# --- CLI and API ---------------------------------------------------------------------------------------------------


def test_cli_text_train_and_search(built, tmp_path, cli_json, monkeypatch):
    monkeypatch.setenv("STYLESPACE_CACHE", str(tmp_path / "cache"))
    trained = cli_json("text-train", built.model, built.catalog, "-o", tmp_path / "text", "--epochs", 2,
                       "--batch-size", 32, "--token-dim", 16, "--vocab-size", 150)
    assert trained["image_model_id"] and len(trained["history"]) == 2 and trained["floor"] > -1
    found = cli_json("search", built.index, "--text", "green watch", "-k", 4)
    entry = found["queries"][0]
    assert entry["confident"] and len(entry["hits"]) == 4 and entry["method"] in ("hybrid", "embedding")
    refused = cli_json("search", built.index, "--text", "qqxzv", "--text-model", built.text_model)
    assert refused["queries"][0]["hits"] == [] and "no word" in refused["queries"][0]["reason"]
    combined = cli_json("search", built.index, "5000", "--id", "--text", "blue", "--exclude-self", "-k", 3)
    assert combined["queries"][0]["method"] == "image+text"
    assert "5000" not in [h["id"] for h in combined["queries"][0]["hits"]]


def test_api_search_text(built):
    from fastapi.testclient import TestClient

    from stylespace.service import create_app

    with TestClient(create_app(built.index, inference="torch")) as client:
        assert client.get("/stats").json()["text_search"]["names"] is True
        found = client.post("/search/text", json={"text": "yellow watch", "k": 5}).json()
        assert found["confident"] and len(found["results"]) == 5 and found["method"] == "hybrid"
        assert found["results"][0]["image_url"].startswith("/items/")
        assert sum(r["metadata"]["baseColour"] == "Yellow" for r in found["results"]) >= 4
        nothing = client.post("/search/text", json={"text": "qqxzv wbbkj"}).json()
        assert not nothing["confident"] and nothing["results"] == [] and "No confident match" in nothing["message"]
        like = client.post("/search/text", json={"text": "green", "like_id": "5000", "k": 3}).json()
        assert like["method"] == "image+text" and like["like"]["id"] == "5000"
        filtered = client.post("/search/text", json={"text": "jeans", "where": {"gender": "Women"}}).json()
        assert all(r["metadata"]["gender"] == "Women" for r in filtered["results"])
        assert client.post("/search/text", json={"text": ""}).status_code == 422
        assert client.post("/search/text", json={"text": "x" * 600}).status_code == 422
        bad_filter = client.post("/search/text", json={"text": "jeans", "where": {"colour": "Red"}})
        assert bad_filter.status_code == 422 and "colour" in bad_filter.json()["error"]["message"]
        unknown = client.post("/search/text", json={"text": "jeans", "like_id": "nope"})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_item"


def test_api_without_a_text_model_says_how_to_get_one(built, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from stylespace.service import create_app

    # the same image model in a folder without a text model beside it, recorded by a copy of the index
    model = tmp_path / "model"
    shutil.copytree(built.model, model, ignore=shutil.ignore_patterns("text"))
    index_copy = tmp_path / "index"
    shutil.copytree(built.index, index_copy)
    import json

    config = json.loads((index_copy / "index.json").read_text())
    config["model_path"] = str(model)
    (index_copy / "index.json").write_text(json.dumps(config))
    with TestClient(create_app(index_copy, inference="torch")) as client:
        assert client.get("/stats").json()["text_search"] is None
        answer = client.post("/search/text", json={"text": "red"})
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "text_search_unavailable"
        assert "text-train" in answer.json()["error"]["message"]


def test_wide_vectors_are_ranked_through_a_shortlist_that_finds_the_exact_top(monkeypatch):
    """A 1,536-dimension model's items are ranked in their top principal directions, then exactly: on vectors
    of a few hundred effective dimensions, the shortlist holds the exact top 10 for every query."""
    from stylespace.index import text_search

    rng = np.random.default_rng(0)
    items = rng.normal(size=(3000, 48)) @ rng.normal(size=(48, 600)) + 0.05 * rng.normal(size=(3000, 600))
    items = (items / np.linalg.norm(items, axis=1, keepdims=True)).astype(np.float32)
    basis, reduced = text_search._reduction(items)
    assert basis.shape == (600, text_search.REDUCED_DIM) and reduced.shape == (3000, text_search.REDUCED_DIM)
    space = object.__new__(text_search.TextSpace)
    space.vectors, space.basis, space.reduced = items, basis, reduced
    for query in items[rng.choice(3000, 20, replace=False)] + 0.1 * rng.normal(size=(20, 600)).astype(np.float32):
        found, scores = space.nearest(query, 10, None)
        exact = np.argsort(-(items @ query))[:10]
        assert list(found) == list(exact) and np.allclose(scores, (items @ query)[exact], atol=1e-5)
    allowed = np.arange(3000) % 2 == 0
    found, _ = space.nearest(items[1], 10, allowed)
    assert all(p % 2 == 0 for p in found)
