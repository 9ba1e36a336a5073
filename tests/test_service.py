"""The REST API and the page's files, with FastAPI's TestClient, on a small generated catalog.

Every endpoint, every kind of bad input (not an image, truncated, zero bytes, too large, decompression
bomb, k out of range, unknown id) and that the app keeps answering after each.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service_catalog import free_port, served_catalog
from stylespace.compat.judge import MATCH, NO_MATCH
from stylespace.service import create_app
from stylespace.service.uploads import BodySizeLimit
from stylespace.utils import StylespaceError


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with served_catalog(tmp_path_factory, "served") as catalog:
        yield catalog


@pytest.fixture(scope="module")
def client(served):
    return TestClient(create_app(served.index, compat_dir=served.compat))


def image_bytes(served, item_id: str) -> bytes:
    return (served.catalog / "images" / f"{item_id}.png").read_bytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with one tiny compressed row: the shape
    of a decompression bomb without its payload."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def assert_still_serving(client, served):
    assert client.get("/health").json()["status"] == "ok"
    found = client.post("/search", files={"image": ("q.png", image_bytes(served, "1013"))}, data={"k": "1"})
    assert found.status_code == 200 and found.json()["results"][0]["id"] == "1013"


# --- service state ----------------------------------------------------------------------------------------


def test_health_and_stats_describe_the_loaded_index(client, served):
    config = json.loads((served.index / "index.json").read_text())
    health = client.get("/health").json()
    assert health == {"status": "ok", "items": 72, "model_id": config["model_id"]}
    stats = client.get("/stats").json()
    assert stats["items"] == 72 and stats["classes"] == 6
    assert stats["model_id"] == config["model_id"] and stats["embedding_dim"] == 32
    saved = json.loads((served.index / "recommendation.json").read_text())  # the calibration, beside the index
    assert stats["threshold"] == pytest.approx(saved["threshold"]) and stats["confidence_score"] == saved["confidence"]
    assert stats["compatibility"]["cutoff"] > 0 and stats["max_upload_bytes"] == 10_000_000
    assert stats["junk"]["top1_floor"] == pytest.approx(config["typicality"]["top1"]["0.5"])


def test_openapi_page_and_static_files(client):
    schema = client.get("/openapi.json").json()
    for path in ("/search", "/compare", "/items/{item_id}/similar", "/items/{item_id}", "/items/{item_id}/image",
                 "/health", "/stats", "/classes", "/items"):
        assert path in schema["paths"], path
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="file-input"' in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


# --- the catalog ------------------------------------------------------------------------------------------


def test_classes_list_article_types_with_counts(client):
    classes = client.get("/classes").json()
    assert len(classes) == 6 and all(c["count"] == 12 for c in classes)
    assert [c["label"] for c in classes] == sorted(c["label"] for c in classes)  # equal counts: by name


def test_items_pages_through_the_catalog_and_filters_by_label(client):
    first = client.get("/items", params={"offset": 0, "limit": 50}).json()
    second = client.get("/items", params={"offset": 50, "limit": 50}).json()
    assert first["total"] == 72 and len(first["items"]) == 50 and len(second["items"]) == 22
    assert len({i["id"] for i in first["items"] + second["items"]}) == 72
    watches = client.get("/items", params={"label": "Watches", "limit": 5}).json()
    assert watches["total"] == 12 and all(i["label"] == "Watches" for i in watches["items"])
    assert client.get("/items", params={"label": "Spacesuits"}).status_code == 404
    assert client.get("/items", params={"limit": 0}).status_code == 422
    assert client.get("/items", params={"offset": -1}).status_code == 422


def test_item_and_its_image_come_from_the_catalog(client, served):
    item = client.get("/items/1013").json()
    assert item["label"] == "Shirts" and item["name"] == "Brand Men Shirts 1"
    assert item["metadata"]["articleType"] == "Shirts" and item["metadata"]["gender"] == "Men"
    assert item["image_url"] == "/items/1013/image" and item["similar_url"] == "/items/1013/similar"
    image = client.get("/items/1013/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == image_bytes(served, "1013")


def test_unknown_ids_are_404(client):
    for path in ("/items/nope", "/items/nope/image", "/items/nope/similar"):
        response = client.get(path)
        error = response.json()["error"]
        assert response.status_code == 404 and "nope" in error["message"], path
        assert error["code"] == "unknown_item" and error["field"] == "item_id", path


def test_images_are_served_from_a_zip_catalog(tmp_path, served, monkeypatch):
    """An index built from a zipped catalog serves its images out of the zip."""
    import zipfile

    from stylespace.data import load_catalog
    from stylespace.index.build import build_index as index_catalog
    from stylespace.models import load_model

    monkeypatch.setenv("STYLESPACE_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "catalog.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(served.catalog / "styles.csv", "styles.csv")
        for image in sorted((served.catalog / "images").iterdir())[:12]:
            zf.write(image, f"images/{image.name}")
    index, _ = index_catalog(load_model(served.model), load_catalog(archive), tmp_path / "index",
                             model_path=served.model, device="cpu", progress=False)
    index.close()
    zipped = TestClient(create_app(tmp_path / "index"))
    assert zipped.get("/items/1003/image").content == image_bytes(served, "1003")
    # never calibrated: every result is shown and the answer says why
    result = zipped.get("/items/1003/similar", params={"k": 2}).json()
    assert result["threshold"] is None and result["confident"] is True and "calibrate" in result["message"]


def test_a_folder_catalog_with_slashes_in_its_ids_is_served(tmp_path, served, monkeypatch):
    """A folder-per-class catalog names its items CLASS/FILE: every item route and link takes such ids."""
    import shutil
    from urllib.parse import quote

    from stylespace.data import load_catalog
    from stylespace.index.build import build_index as index_catalog
    from stylespace.models import load_model

    monkeypatch.setenv("STYLESPACE_CACHE", str(tmp_path / "cache"))
    images = sorted((served.catalog / "images").iterdir())[:8]
    for number, image in enumerate(images):
        folder = tmp_path / "tree" / ("Tshirts" if number % 2 else "Shirts")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, folder / image.name)
    catalog = load_catalog(tmp_path / "tree")
    item_id = catalog.ids[0]
    assert "/" in item_id
    index, _ = index_catalog(load_model(served.model), catalog, tmp_path / "index", model_path=served.model,
                             device="cpu", progress=False)
    index.close()
    tree = TestClient(create_app(tmp_path / "index"))
    path = f"/items/{quote(item_id, safe='')}"
    item = tree.get(path)
    assert item.status_code == 200 and item.json()["id"] == item_id
    assert tree.get(item.json()["image_url"]).content == catalog.read_bytes(item_id)
    similar = tree.get(item.json()["similar_url"], params={"k": 3})
    assert similar.status_code == 200 and item_id not in [h["id"] for h in similar.json()["results"]] and similar.json()["results"]
    assert tree.get(f"/items/{quote('Shirts/nothing', safe='')}").status_code == 404


# --- search -----------------------------------------------------------------------------------------------


def test_similar_ranks_other_items_with_confidence(client):
    result = client.get("/items/1013/similar", params={"k": 7}).json()
    ids = [hit["id"] for hit in result["results"]]
    assert len(ids) == 7 and "1013" not in ids and len(set(ids)) == 7
    scores = [hit["score"] for hit in result["results"]]
    assert scores == sorted(scores, reverse=True) and [h["rank"] for h in result["results"]] == list(range(1, 8))
    assert result["query"] == {"kind": "item", "id": "1013", "filename": None}
    assert result["confident"] == (result["confidence"] >= result["threshold"])


def test_low_confidence_says_no_confident_match(client):
    """The threshold was calibrated at 50 % coverage, so the catalog has items on both sides of it."""
    results = [client.get(f"/items/{i}/similar", params={"k": 3}).json() for i in range(1000, 1072, 3)]
    shown = [r for r in results if r["confident"]]
    withheld = [r for r in results if not r["confident"]]
    assert shown and withheld
    for r in withheld:
        assert r["confidence"] < r["threshold"] and r["message"].startswith("No confident match")
    for r in shown:
        assert r["confidence"] >= r["threshold"] and r["message"].startswith("Confident match")
    # one score for shoppers, in [0, 1]: "confident" means match score >= the match threshold, always
    for r in results:
        assert 0 <= r["match_score"] <= 1 and 0 <= r["match_threshold"] <= 1
        assert (r["match_score"] >= r["match_threshold"]) == r["confident"]
        assert all(hit["cosine_similarity"] == hit["score"] for hit in r["results"])


def test_search_finds_an_uploaded_catalog_image_first(client, served):
    response = client.post("/search", files={"image": ("1042.png", image_bytes(served, "1042"), "image/png")},
                           data={"k": "5"})
    assert response.status_code == 200
    result = response.json()
    assert result["query"]["kind"] == "upload" and result["query"]["filename"] == "1042.png"
    assert len(result["results"]) == 5 and result["results"][0]["id"] == "1042"
    assert result["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert result["results"][0]["metadata"]["articleType"] == result["results"][0]["label"]
    assert result["confident"] == (result["confidence"] >= result["threshold"])


@pytest.mark.parametrize("kind", ["blank", "near-uniform", "noise", "gradient", "text", "landscape"])
def test_a_picture_that_is_not_a_product_photo_is_no_confident_match_with_the_reason(client, kind):
    from conftest import JUNK

    from stylespace.recommend.junk import BLANK, JUNK_REASONS, UNSURE

    buffer = io.BytesIO()
    JUNK[kind]().save(buffer, format="PNG")
    response = client.post("/search", files={"image": (f"{kind}.png", buffer.getvalue())}, data={"k": "3"})
    assert response.status_code == 200
    result = response.json()
    assert result["confident"] is False and result["message"].startswith("No confident match")
    assert result["reason"] in (*JUNK_REASONS, UNSURE) and result["not_a_product"] == (result["reason"] in JUNK_REASONS)
    assert len(result["results"]) == 3  # kept for "show the weak matches anyway"
    if kind in ("blank", "near-uniform"):  # the upload's own view says so, whatever its embedding
        assert result["not_a_product"] is True and result["reason"] == BLANK and BLANK in result["message"]
    assert result["match_score"] < result["match_threshold"]  # whatever its confidence
    if result["not_a_product"]:
        assert result["match_score"] == 0.0


def test_search_takes_large_jpeg_and_transparent_png(client, served):
    """A phone photo (1800 x 2400 JPEG) and an RGBA PNG go through the training decoder."""
    photo = Image.open(io.BytesIO(image_bytes(served, "1042"))).resize((1800, 2400))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    found = client.post("/search", files={"image": ("big.jpg", buffer.getvalue())}, data={"k": "3"}).json()
    assert found["results"][0]["label"] == "Watches"
    rgba = Image.new("RGBA", (60, 80), (0, 0, 0, 0))
    rgba.paste(Image.open(io.BytesIO(image_bytes(served, "1042"))).convert("RGBA"))
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    assert client.post("/search", files={"image": ("a.png", buffer.getvalue())}).status_code == 200


@pytest.mark.parametrize("k", ["0", "-3", "101", "ten", "2.5"])
def test_k_out_of_range_is_422(client, served, k):
    assert client.get("/items/1013/similar", params={"k": k}).status_code == 422
    response = client.post("/search", files={"image": ("q.png", image_bytes(served, "1013"))}, data={"k": k})
    assert response.status_code == 422 and response.json()["error"] == {
        "code": "invalid_request", "field": "k", "message": response.json()["error"]["message"]}
    assert response.json()["error"]["message"].startswith("k: ")


def test_search_without_an_image_is_422(client):
    assert client.post("/search", data={"k": "3"}).status_code == 422


# --- bad uploads ------------------------------------------------------------------------------------------


def truncated_png(served) -> bytes:
    data = image_bytes(served, "1020")
    return data[: len(data) // 2]


@pytest.mark.parametrize("name, make, status, code, words", [
    ("text", lambda s: b"this is not an image at all, just some text\n" * 20, 415, "not_an_image", "not an image"),
    ("html", lambda s: b"<html><body>hello</body></html>", 415, "not_an_image", "not an image"),
    ("truncated", truncated_png, 422, "unreadable_image", "decode"),
    ("zero bytes", lambda s: b"", 422, "empty_upload", "empty"),
    ("bomb", lambda s: png_header_only(20_000, 20_000), 422, "image_too_large", "bomb"),
    ("64 Mpx", lambda s: png_header_only(8_000, 8_000), 422, "image_too_large", "limit"),
])
def test_bad_uploads_are_refused_and_the_server_keeps_serving(client, served, name, make, status, code, words):
    response = client.post("/search", files={"image": (f"{name}.png", make(served), "image/png")})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"].lower() and error["code"] == code and error["field"] == "image"
    assert_still_serving(client, served)


def test_uploads_over_the_size_limit_are_413(served):
    small = TestClient(create_app(served.index, compat_dir=served.compat, max_upload_bytes=1_000))
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 150, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    assert len(buffer.getvalue()) > 1_000
    response = small.post("/search", files={"image": ("big.png", buffer.getvalue())})
    assert response.status_code == 413 and "limit" in response.json()["error"]["message"]
    assert response.json()["error"]["code"] == "upload_too_large"
    response = small.post("/compare", files={"image_a": ("a.png", buffer.getvalue())}, data={"id_b": "1000"})
    assert response.status_code == 413
    # a body far over the limit is cut off while it streams in (chunked: no Content-Length to check)
    streamed = small.post("/search", content=iter([b"x" * 4096] * 64),
                          headers={"content-type": "multipart/form-data; boundary=b"})
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "upload_too_large"
    assert small.get("/health").status_code == 200
    ok = small.post("/search", files={"image": ("q.png", image_bytes(served, "1013"))}, data={"k": "1"})
    assert ok.status_code == 200


def test_declared_content_length_over_the_limit_is_refused_unread():
    """The middleware answers 413 from the Content-Length header alone, never reading the body."""
    async def app(scope, receive, send):  # pragma: no cover - must not be reached
        raise AssertionError("the app was called")

    async def receive():  # pragma: no cover - must not be reached
        raise AssertionError("the body was read")

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": "/search", "headers": [(b"content-length", b"5000000000")]}
    asyncio.run(BodySizeLimit(app, lambda path: 1_000)(scope, receive, send))
    assert sent[0]["status"] == 413 and b"limit" in sent[1]["body"]


# --- compare ----------------------------------------------------------------------------------------------


def test_compare_two_ids_gives_003s_verdict(client):
    verdict = client.post("/compare", data={"id_a": "1000", "id_b": "1050"}).json()
    assert verdict["compatible"] == (verdict["distance"] <= verdict["cutoff"])
    assert verdict["message"] == (MATCH if verdict["compatible"] else NO_MATCH)
    assert verdict["a"] == {"kind": "item", "id": "1000", "filename": None}
    same = client.post("/compare", data={"id_a": "1000", "id_b": "1000"}).json()
    assert same["distance"] == pytest.approx(0.0, abs=1e-5) and same["compatible"] and same["message"] == MATCH


def test_compare_uploads_equal_compare_ids(client, served):
    by_id = client.post("/compare", data={"id_a": "1001", "id_b": "1062"}).json()
    by_upload = client.post("/compare", files={"image_a": ("a.png", image_bytes(served, "1001")),
                                               "image_b": ("b.png", image_bytes(served, "1062"))}).json()
    mixed = client.post("/compare", files={"image_a": ("a.png", image_bytes(served, "1001"))},
                        data={"id_b": "1062"}).json()
    assert by_upload["distance"] == pytest.approx(by_id["distance"], abs=1e-5)
    assert mixed["distance"] == pytest.approx(by_id["distance"], abs=1e-5)
    assert by_upload["a"]["kind"] == "upload" and by_upload["cutoff"] == by_id["cutoff"]


def test_both_verdicts_occur(client):
    """The test cutoff is the median pair distance, so some catalog pairs pass and some do not."""
    verdicts = {client.post("/compare", data={"id_a": "1000", "id_b": str(1000 + j)}).json()["compatible"]
                for j in range(1, 72, 5)}
    assert verdicts == {True, False}


def test_compare_bad_input(client, served):
    assert client.post("/compare", data={"id_a": "1000"}).status_code == 422
    both = client.post("/compare", files={"image_a": ("a.png", image_bytes(served, "1001"))},
                       data={"id_a": "1001", "id_b": "1002"})
    assert both.status_code == 422 and "exactly one" in both.json()["error"]["message"]
    assert both.json()["error"]["field"] == "image_a"
    unknown = client.post("/compare", data={"id_a": "1000", "id_b": "nope"})
    assert unknown.status_code == 404 and unknown.json()["error"] | {"message": ""} == {
        "code": "unknown_item", "field": "id_b", "message": ""}
    not_image = client.post("/compare", files={"image_a": ("a.txt", b"hello"), "image_b": ("b.txt", b"hello")})
    assert not_image.status_code == 415 and not_image.json()["error"]["code"] == "not_an_image"
    assert_still_serving(client, served)


def test_compare_without_a_compatibility_model_is_503(served):
    bare = TestClient(create_app(served.index))
    response = bare.post("/compare", data={"id_a": "1000", "id_b": "1001"})
    assert response.status_code == 503 and "--compat" in response.json()["error"]["message"]
    assert response.json()["error"]["code"] == "compare_unavailable"
    assert bare.get("/stats").json()["compatibility"] is None


# --- start-up -----------------------------------------------------------------------------------------------


def test_create_app_refuses_bad_arguments(served, tmp_path):
    with pytest.raises(StylespaceError, match="max_upload_bytes"):
        create_app(served.index, max_upload_bytes=0)
    with pytest.raises(StylespaceError, match="not an index folder"):
        create_app(tmp_path)


def test_serve_command_prints_the_url_and_answers(served):
    port = free_port()
    env = {**os.environ, "STYLESPACE_CACHE": str(served.index.parent / "cache"), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "stylespace", "serve", str(served.index), "--port", str(port),
                                "--compat", str(served.compat)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line and "72 items" in line
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()["items"] == 72
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_serve_command_reports_a_missing_index(tmp_path):
    result = subprocess.run([sys.executable, "-m", "stylespace", "serve", str(tmp_path / "none")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "index folder not found" in result.stderr


# --- batching concurrent searches -----------------------------------------------------------------------------


def test_concurrent_searches_share_batches_and_get_their_own_answers(served):
    from stylespace.data import load_rgb
    from stylespace.service import StyleEngine

    engine = StyleEngine.load(served.index, max_batch=32)
    try:
        uploads = [str(i) for i in range(1000, 1072, 6)]
        items = [str(i) for i in range(1003, 1072, 6)]
        alone = {i: [r.id for r, _ in engine.similar(i, 5).hits] for i in items}
        pixels = {u: load_rgb(served.catalog / "images" / f"{u}.png", size=engine.input_size) for u in uploads}
        batches_before = engine._batcher.batches
        futures = []
        # The engine's lock held while submitting stands for a busy worker, whatever the machine's speed: the
        # worker takes the first queries and waits on the lock, the rest queue up and go in one batch.
        with engine._lock:
            for upload, item in zip(uploads, items):  # interleaved: images and catalog items in the same batches
                futures.append((upload, "upload", engine.submit_search(pixels[upload], 3)))
                futures.append((item, "item", engine.submit_similar(item, 5)))
        for item_id, kind, future in futures:
            ranking = future.result(timeout=60)
            ids = [record.id for record, _ in ranking.hits]
            if kind == "upload":
                assert ids[0] == item_id and len(ids) == 3
            else:
                assert ids == alone[item_id]
        assert engine._batcher.batches - batches_before <= 2
    finally:
        engine.close()


def test_query_batcher_answers_in_order_and_survives_a_failed_batch():
    from stylespace.service.batching import QueryBatcher

    sizes = []

    def answer(queries):
        sizes.append(len(queries))
        if any(q == "boom" for q in queries):
            raise ValueError("boom in this batch")
        time.sleep(0.01)
        return [q * 2 for q in queries]

    batcher = QueryBatcher(answer, max_batch=4)
    futures = [batcher.submit(i) for i in range(10)]
    assert [f.result(timeout=10) for f in futures] == [i * 2 for i in range(10)]
    assert max(sizes) <= 4 and len(sizes) < 10
    with pytest.raises(ValueError, match="boom"):
        batcher("boom")
    assert batcher(21) == 42  # the worker goes on after a failed batch
    batcher.close()
    with pytest.raises(StylespaceError, match="stopped"):
        batcher.submit(1)
    with pytest.raises(StylespaceError, match="max_batch"):
        QueryBatcher(answer, max_batch=0)
    short = QueryBatcher(lambda queries: [], max_batch=2)
    with pytest.raises(RuntimeError, match="0 answers for 1"):
        short(1)
    short.close()


def test_a_model_other_than_the_indexs_is_refused(served, tmp_path):
    import torch

    from stylespace.models import ModelConfig, build_model, save_model

    torch.manual_seed(1)
    save_model(build_model(ModelConfig(backbone="compact", embedding_dim=32, width=8)), tmp_path / "other")
    with pytest.raises(StylespaceError, match="embedded by model"):
        create_app(served.index, model_dir=tmp_path / "other")


def test_the_service_picks_up_new_stock_and_a_new_calibration_without_a_restart(tmp_path_factory):
    """Another process adds and removes items and recalibrates; the running service sees it at its next
    search (refresh_seconds = 0 here), and refuses to adopt an index rebuilt by another model."""
    import torch

    from stylespace.index import CatalogIndex
    from stylespace.models import ModelConfig, build_model, model_id

    with served_catalog(tmp_path_factory, "refresh") as served:
        client = TestClient(create_app(served.index))
        engine = client.app.state.engine
        engine.refresh_seconds = 0.0
        before = client.get("/health").json()["items"]
        writer = CatalogIndex.open(served.index)
        first_id = writer.ids[0]
        vector = writer.vectors([first_id])
        writer.add(["new-stock"], vector, model_id=writer.model_id, labels=["Tshirts"], metas=[{"gender": "Men"}],
                   sources=[writer.items.rows(writer.keys_of([first_id]))[int(writer.keys_of([first_id])[0])][1]])
        found = client.post("/search", files={"image": ("q.png", image_bytes(served, first_id), "image/png")},
                            data={"k": "3"}).json()
        assert client.get("/health").json()["items"] == before + 1
        assert "new-stock" in {hit["id"] for hit in found["results"]}
        assert client.get("/items/new-stock").status_code == 200
        writer.remove(["new-stock"])
        client.post("/search", files={"image": ("q.png", image_bytes(served, first_id), "image/png")}, data={"k": "3"})
        assert client.get("/items/new-stock").status_code == 404

        from stylespace.recommend import save_calibration

        save_calibration(writer, "top1", 0.123, {"note": "recalibrated"})
        client.post("/search", files={"image": ("q.png", image_bytes(served, first_id), "image/png")}, data={"k": "3"})
        assert engine.recommender.threshold == pytest.approx(0.123) and engine.recommender.score_name == "top1"

        # another model's index is not adopted: searches go on with the loaded one
        torch.manual_seed(5)
        other = build_model(ModelConfig(backbone="compact", embedding_dim=32, width=8)).eval()
        CatalogIndex.create(served.index, writer.ids, writer.vectors(writer.ids), model_id=model_id(other),
                            overwrite=True)
        response = client.post("/search", files={"image": ("q.png", image_bytes(served, first_id), "image/png")},
                               data={"k": "3"})
        assert response.status_code == 200 and engine.model_id != model_id(other)
        writer.close()
