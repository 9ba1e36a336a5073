"""Query-time views (issue 24, item 4): a query searched as its canonical view, mirrored and un-stretched, each
catalog item keeping its best score; off, every search is exactly what it was."""
from __future__ import annotations

import io
import types

import numpy as np
import pytest
from PIL import Image

from stylespace.data import load_view
from stylespace.data.query_views import QueryViews, load_query_views, mirrored
from stylespace.index import CatalogIndex
from stylespace.index.backend import Neighbours
from stylespace.index.query_views import ViewVectors, merge_views, neighbours_of_views, search_views
from stylespace.utils import StylespaceError
from conftest import compact_index, synth_image, write_patterned_catalog

SIZE = (80, 60)  # (H, W): the catalog's 3:4


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def smooth_scene(size=(96, 96), seed=0) -> Image.Image:
    """A picture with no uniform or linear margin (kept whole by the canonical view), smooth enough that two
    resampling routes agree: low-frequency colour noise."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    return small.resize(size, Image.Resampling.BICUBIC)


# --- the views --------------------------------------------------------------------------------------------------

def test_off_is_the_canonical_view_alone():
    image = synth_image("square", (200, 40, 40), np.random.default_rng(1)).resize((224, 224))
    views = load_query_views(png(image), SIZE)
    assert views.names == ("canonical",) and views.pixels.shape == (1, *SIZE, 3)
    assert np.array_equal(views.pixels[0], load_view(png(image), SIZE).pixels)
    assert views.blank == load_view(png(image), SIZE).blank


def test_the_mirror_view_is_the_canonical_view_flipped():
    image = synth_image("triangle", (120, 70, 20), np.random.default_rng(2))
    views = load_query_views(png(image), SIZE, QueryViews(("mirror",)))
    assert views.names == ("canonical", "mirror")
    assert np.array_equal(views.pixels[1], views.pixels[0][:, ::-1])
    assert np.array_equal(mirrored(views.pixels[0]), views.pixels[1])


def test_the_unstretched_view_is_the_picture_resized_to_the_catalogs_aspect_ratio():
    scene = smooth_scene((96, 96))  # square: not the model's 3:4
    views = load_query_views(png(scene), SIZE, QueryViews(("unstretch",)))
    assert views.names == ("canonical", "unstretch")
    plain = np.asarray(scene.resize((SIZE[1], SIZE[0]), Image.Resampling.BILINEAR), dtype=np.int16)
    unstretched = views.pixels[1].astype(np.int16)
    assert np.abs(unstretched - plain).mean() < 3  # the plain resize, not padded
    canonical = views.pixels[0]
    assert (canonical[:6] == 255).all()  # the canonical view pads the square on white instead


def test_the_unstretched_view_undoes_a_stretched_packshot():
    packshot = synth_image("bar", (30, 60, 160), np.random.default_rng(3))  # 60 x 80, as the catalog's
    reference = load_view(png(packshot), SIZE).pixels.astype(np.int16)
    stretched = packshot.resize((224, 224), Image.Resampling.BICUBIC)
    views = load_query_views(png(stretched), SIZE, QueryViews.parse("all"))
    assert views.names == ("canonical", "mirror", "unstretch")
    as_given = np.abs(views.pixels[0].astype(np.int16) - reference).mean()
    undone = np.abs(views.pixels[2].astype(np.int16) - reference).mean()
    assert undone < as_given / 2, (undone, as_given)


def test_a_picture_of_the_catalogs_shape_has_no_unstretched_view():
    packshot = synth_image("circle", (90, 90, 90), np.random.default_rng(4))  # 60 x 80: nothing to undo
    views = load_query_views(png(packshot.resize((300, 400))), SIZE, QueryViews.parse("all"))
    assert views.names == ("canonical", "mirror")


@pytest.mark.parametrize("value, words", [
    (("flip",), "views must be zero or more of mirror, unstretch"),
    (("mirror", "mirror"), "mirror twice"),
    ("mirror", "views must be"),  # a string is not a tuple of names
])
def test_bad_views_are_clear_errors_naming_the_field(value, words):
    with pytest.raises(StylespaceError, match=words):
        QueryViews(value)


def test_text_spellings_and_bad_text():
    assert QueryViews.parse("all") == QueryViews.parse("unstretch, mirror") == QueryViews(("mirror", "unstretch"))
    assert QueryViews.parse("none") == QueryViews.parse("canonical") == QueryViews.of(None) == QueryViews()
    assert not QueryViews().enabled and QueryViews.parse("mirror").names == ("canonical", "mirror")
    with pytest.raises(StylespaceError, match="query views: views .* unknown 'sepia'"):
        QueryViews.parse("mirror,sepia")
    with pytest.raises(StylespaceError, match="query views"):
        QueryViews.of(3)


def test_robustness_config_names_the_field():
    from stylespace.index.robustness import RobustnessConfig

    assert RobustnessConfig(query_views="all").query_views == QueryViews(("mirror", "unstretch"))
    with pytest.raises(StylespaceError, match="views"):
        RobustnessConfig(query_views="upside-down")


# --- the merge --------------------------------------------------------------------------------------------------

def test_merge_keeps_each_items_best_score_and_k_distinct_items():
    keys = np.array([[5, 3, 9, -1], [3, 7, 5, 1], [2, -1, -1, -1]])
    sims = np.array([[0.9, 0.5, 0.4, np.nan], [0.8, 0.7, 0.6, 0.1], [0.3, np.nan, np.nan, np.nan]], np.float32)
    merged = merge_views(Neighbours(keys, sims, "cosine"), np.array([0, 0, 1]), 2, k=4)
    assert merged.keys.tolist() == [[5, 3, 7, 9], [2, -1, -1, -1]]
    assert merged.similarities[0].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.4])
    assert np.isnan(merged.similarities[1, 1:]).all() and merged.metric == "cosine"
    assert merge_views(Neighbours(keys, sims, "cosine"), np.array([0, 0, 1]), 2, k=2).keys.tolist() == [[5, 3],
                                                                                                          [2, -1]]


@pytest.fixture(scope="module")
def vector_index(tmp_path_factory):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(200, 16)).astype(np.float32)
    ids = [str(i) for i in range(200)]
    metas = [{"gender": "Men" if i % 2 else "Women"} for i in range(200)]
    index = CatalogIndex.create(tmp_path_factory.mktemp("views") / "idx", ids, vectors, model_id="m", metas=metas)
    return index, vectors


def brute_force(vectors, views, query_of, k, allowed=None, banned=None):
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = views / np.linalg.norm(views, axis=1, keepdims=True)
    out = []
    for q in range(query_of.max() + 1):
        best = (queries[query_of == q] @ unit.T).max(axis=0)
        order = [int(i) for i in np.argsort(-best, kind="stable")
                 if (allowed is None or i in allowed) and (banned is None or str(i) not in banned[q])]
        out.append(order[:k])
    return out


def test_search_over_views_is_the_best_score_per_item_with_filters_and_exclusions(vector_index):
    index, vectors = vector_index
    rng = np.random.default_rng(1)
    views = rng.normal(size=(7, 16)).astype(np.float32)
    query_of = np.array([0, 0, 0, 1, 2, 2, 3])
    exclude = [["5", "8"], [], ["11"], ["0"]]
    found = neighbours_of_views(index, views, query_of, k=6, exclude_ids=exclude, where={"gender": "Men"})
    men = {i for i in range(200) if i % 2}
    expected = brute_force(vectors, views, query_of, 6, allowed=men, banned=exclude)
    by_key = dict(zip(index.keys_of(index.ids).tolist(), map(int, index.ids)))
    assert [[by_key[k] for k in row] for row in found.keys.tolist()] == expected
    assert all(len(set(row)) == len(row) == 6 for row in found.keys.tolist())
    hits = search_views(index, ViewVectors(views, query_of, ["x"] * 7, [False] * 4), k=6, exclude_ids=exclude,
                        where={"gender": "Men"})
    assert [[int(h.id) for h in row] for row in hits] == expected


def test_one_view_each_is_exactly_todays_search(vector_index):
    index, _ = vector_index
    queries = np.random.default_rng(2).normal(size=(5, 16)).astype(np.float32)
    today = index.neighbours(queries, 7, exclude_ids=[["1"], [], ["3"], [], []])
    views = neighbours_of_views(index, queries, np.arange(5), 7, exclude_ids=[["1"], [], ["3"], [], []])
    assert np.array_equal(today.keys, views.keys) and np.array_equal(today.similarities, views.similarities)


def test_rows_out_of_order_are_refused(vector_index):
    index, _ = vector_index
    with pytest.raises(StylespaceError, match="query_of"):
        neighbours_of_views(index, np.ones((3, 16), np.float32), np.array([0, 2, 1]), 3)


# --- embedding: one forward pass --------------------------------------------------------------------------------

class CountingEmbedder:
    """Stands in for a model: records each forward pass; a vector of a picture's mean colour and its left half's."""

    engine = "counting"
    output_dim = 6

    def __init__(self):
        self.input_size = SIZE
        self.config = types.SimpleNamespace(input_size=SIZE)
        self.passes: list[int] = []

    def __call__(self, pixels):
        self.passes.append(len(pixels))
        pixels = np.asarray(pixels, np.float32)
        left = pixels[:, :, : SIZE[1] // 2].mean(axis=(1, 2))
        vectors = np.concatenate([pixels.mean(axis=(1, 2)), left], axis=1) + 1.0
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_every_view_of_a_batch_of_queries_goes_through_one_forward_pass():
    from stylespace.index.build import embed_query_view_sets

    rng = np.random.default_rng(5)
    images = [synth_image("square", (40, 40, 200), rng).resize((200, 200)) for _ in range(3)]
    images.append(synth_image("bar", (30, 60, 160), rng))  # the catalog's shape: no un-stretched view
    embedder = CountingEmbedder()
    embedded = embed_query_view_sets(embedder, [png(i) for i in images], "all")
    assert embedder.passes == [3 * 3 + 2]
    assert embedded.query_of.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    assert embedded.names[-2:] == ["canonical", "mirror"] and embedded.views_per_query == pytest.approx(11 / 4)
    plain = CountingEmbedder()
    off = embed_query_view_sets(plain, [png(i) for i in images])
    assert plain.passes == [4] and np.array_equal(off.vectors, embedded.canonical)


@pytest.fixture(scope="module")
def model_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("query-views")
    catalog, model, index = compact_index(root, write_patterned_catalog(root / "catalog", per_class=5))
    return root, catalog, model, index


def test_off_gives_exactly_todays_vectors_and_results(model_index):
    from stylespace.embeddings import embed_images
    from stylespace.index.queries import embed_queries

    root, catalog, model, index = model_index
    files = sorted((root / "catalog" / "images").glob("*.png"))[:6]
    today = embed_images(model, np.stack([load_view(f, SIZE).pixels for f in files]), batch_size=64)
    batch = embed_queries(index, [str(f) for f in files], progress=False, device="cpu")
    assert batch.views is None and np.array_equal(batch.vectors, today)
    expected = index.search(today, 5, exclude_ids=batch.exclusions())
    assert batch.search(index, 5, exclude_self=True) == expected
    with_views = embed_queries(index, [str(f) for f in files], progress=False, device="cpu", query_views="all")
    # the canonical rows are today's vectors (to float rounding: the forward pass holds more images)
    assert np.allclose(with_views.vectors, today, atol=1e-5)
    found = with_views.search(index, 5, exclude_self=True)
    assert all(len({h.id for h in hits}) == 5 and f.stem not in {h.id for h in hits} for f, hits in zip(files, found))


def test_a_mirrored_photo_is_found_with_the_mirror_view(model_index):
    from stylespace.index.build import embed_query_view_sets
    from stylespace.models import model_id

    root, catalog, model, index = model_index
    ids = index.ids[:12]
    uploads = [png(catalog.read_image(catalog[i]).transpose(Image.Transpose.FLIP_LEFT_RIGHT)) for i in ids]
    embedded = embed_query_view_sets(model, uploads, "mirror", device="cpu")
    found = neighbours_of_views(index, embedded.vectors, embedded.query_of, 1, model_id=model_id(model))
    own = index.keys_of(ids)
    assert (found.keys[:, 0] == own).all()  # the mirror of a mirror is the packshot (to a pixel of padding)
    assert found.similarities[:, 0] == pytest.approx(1.0, abs=5e-3)


# --- the service and the commands -------------------------------------------------------------------------------

def test_the_service_searches_an_upload_as_its_views(model_index):
    from fastapi.testclient import TestClient

    from stylespace.service import StyleEngine, create_app

    root, catalog, model, index = model_index
    item = index.ids[3]
    mirrored_upload = png(catalog.read_image(catalog[item]).transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    engine = StyleEngine.load(root / "index", device="cpu", query_views="mirror")
    try:
        views = load_query_views(mirrored_upload, engine.input_size, engine.query_views)
        ranking = engine.search(views.pixels, 5)
        assert ranking.hits[0][0].id == item and ranking.hits[0][1] == pytest.approx(1.0, abs=5e-3)
        assert len({record.id for record, _ in ranking.hits}) == 5
        alone = engine.search(views.pixels[0], 5)  # one view: the search as it always was
        assert alone.hits[0][1] < ranking.hits[0][1]
        with pytest.raises(StylespaceError, match="views"):
            engine.search(np.zeros((2, 10, 10, 3), np.uint8), 5)
    finally:
        engine.close()
    client = TestClient(create_app(root / "index", device="cpu", query_views="all"))
    response = client.post("/search", files={"image": ("m.png", mirrored_upload, "image/png")}, data={"k": "3"})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["id"] == item
    assert client.get("/stats").json()["query_views"] == ["canonical", "mirror", "unstretch"]


def test_search_and_robustness_commands_take_query_views(model_index, cli_json, monkeypatch):
    root, catalog, model, index = model_index
    monkeypatch.setenv("STYLESPACE_CACHE", str(root / "cache"))
    image = root / "catalog" / "images" / f"{index.ids[0]}.png"
    result = cli_json("search", root / "index", image, "-k", "3", "--query-views", "all")
    assert result["query_views"] == ["canonical", "mirror", "unstretch"] and len(result["queries"][0]["hits"]) == 3
    recommended = cli_json("recommend", root / "index", image, "--query-views", "mirror")
    assert recommended["queries"][0]["items"][0]["id"] == index.ids[0]
    report = cli_json("robustness", root / "model", root / "catalog", "--index", root / "index", "--items", "4",
                      "--distortions", "none,stretch", "--query-views", "all")
    assert report["config"]["query_views"] == {"views": ["mirror", "unstretch"]}
    stretch = next(r for r in report["rows"] if r["name"] == "stretch")
    assert stretch["views_per_query"] == 3.0
    assert next(r for r in report["rows"] if r["name"] == "none")["views_per_query"] == 2.0


def test_a_bad_query_views_option_is_a_clear_error(model_index):
    from typer.testing import CliRunner

    from stylespace.cli import app

    root, _, _, index = model_index
    image = root / "catalog" / "images" / f"{index.ids[0]}.png"
    result = CliRunner().invoke(app, ["search", str(root / "index"), str(image), "--query-views", "sideways"])
    assert result.exit_code != 0 and isinstance(result.exception, StylespaceError)  # main() prints it as one line
    assert "query views: views must be zero or more of mirror, unstretch" in str(result.exception)
