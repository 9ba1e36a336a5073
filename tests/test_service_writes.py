"""The write API and its keys, on a small generated catalog: each endpoint's success and refusals (missing
field, wrong type, hostile image, unknown id), retries that change nothing, keys (none, wrong, revoked,
wrong scope, in the query string, never in the logs), searches that see a change whole, and the CLI
taking the same path."""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import shutil
import stat
import struct
import threading
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import synth_image
from service_catalog import served_catalog
from stylespace.service import create_app
from stylespace.service.keys import KeyStore


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    with served_catalog(tmp_path_factory, "writes") as catalog:
        yield catalog


@pytest.fixture
def served(built, tmp_path):
    """A private copy of the built index (each test changes its own)."""
    shutil.copytree(built.index, tmp_path / "index")
    return dataclasses.replace(built, index=tmp_path / "index")


@pytest.fixture
def keys(served):
    store = KeyStore(served.index)
    return {"write": store.create("writer")[0], "read": store.create("reader", "read")[0]}


@pytest.fixture
def client(served, keys):
    with TestClient(create_app(served.index, inference="torch")) as test_client:
        yield test_client


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def product(seed: int, shape: str = "square", colour=(30, 160, 60)) -> bytes:
    buffer = io.BytesIO()
    synth_image(shape, colour, np.random.default_rng(seed)).save(buffer, "PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def post_item(client, key, image: bytes, **fields):
    data = {name: (json.dumps(value) if name == "metadata" and not isinstance(value, str) else value)
            for name, value in fields.items()}
    return client.post("/items", files={"image": ("new.png", image, "image/png")}, data=data, headers=bearer(key))


def search_ids(client, image: bytes, k: int = 5) -> list[str]:
    found = client.post("/search", files={"image": ("q.png", image, "image/png")}, data={"k": str(k)})
    assert found.status_code == 200, found.text
    return [hit["id"] for hit in found.json()["results"]]


def error_of(response) -> dict:
    return response.json()["error"]


# --- POST /items -----------------------------------------------------------------------------------------------


def test_an_item_put_is_committed_searchable_and_served_and_a_retry_changes_nothing(client, keys):
    image = product(1)
    before = client.get("/stats").json()["index"]["revision"]
    added = post_item(client, keys["write"], image, id="green-1", label="Tshirts",
                      metadata={"gender": "Men", "productDisplayName": "Green tee"})
    assert added.status_code == 201, added.text
    answer = added.json()
    assert answer["created"] == ["green-1"] and answer["revision"] > before
    assert answer["item_url"] == "/items/green-1"
    item = client.get("/items/green-1").json()
    assert item["label"] == "Tshirts" and item["name"] == "Green tee" and item["metadata"]["gender"] == "Men"
    assert search_ids(client, image, 1) == ["green-1"]
    assert client.get("/items/green-1/image").content == image
    assert client.get("/stats").json()["items"] == 73

    again = post_item(client, keys["write"], image, id="green-1", label="Tshirts",
                      metadata={"gender": "Men", "productDisplayName": "Green tee"})
    assert again.status_code == 200 and again.json()["unchanged"] == ["green-1"]
    assert again.json()["revision"] == answer["revision"]  # nothing was written
    assert client.get("/stats").json()["items"] == 73

    changed = post_item(client, keys["write"], image, id="green-1", label="Tshirts", metadata={"gender": "Women"})
    assert changed.status_code == 200 and changed.json()["replaced"] == ["green-1"]
    assert client.get("/items/green-1").json()["metadata"] == {"gender": "Women"}
    assert client.get("/stats").json()["items"] == 73


def test_an_item_without_an_id_gets_one_made_from_its_content_so_a_retry_does_not_duplicate_it(client, keys):
    image = product(2, "circle")
    first = post_item(client, keys["write"], image, label="Watches", metadata={"gender": "Men"})
    assert first.status_code == 201
    made = first.json()["created"][0]
    assert made.startswith("item-")
    retry = post_item(client, keys["write"], image, label="Watches", metadata={"gender": "Men"})
    assert retry.status_code == 200 and retry.json()["unchanged"] == [made]
    assert client.get("/stats").json()["items"] == 73
    assert client.get(f"/items/{made}").json()["label"] == "Watches"


@pytest.mark.parametrize("fields, files, status, field", [
    ({"id": "x"}, None, 422, "image"),                                              # missing image
    ({"id": "x", "metadata": "[1, 2]"}, "ok", 422, "metadata"),                    # wrong type
    ({"id": "x", "metadata": "{not json"}, "ok", 422, "metadata"),
    ({"id": "x", "metadata": '{"gender": ["Men"]}'}, "ok", 422, "metadata.gender"),
    ({"id": "  padded "}, "ok", 422, "id"),
    ({"id": "x/image"}, "ok", 422, "id"),
    ({"id": "x", "label": "L" * 300}, "ok", 422, "label"),
    ({"id": "x"}, b"this is not an image", 415, "image"),                           # hostile images
    ({"id": "x"}, b"", 422, "image"),
    ({"id": "x"}, "bomb", 422, "image"),
    ({"id": "x"}, "truncated", 422, "image"),
    ({"id": "x"}, "blank", 422, "image"),
])
def test_a_bad_item_is_refused_naming_the_field_and_nothing_is_written(client, keys, fields, files, status, field):
    good = product(3)
    payloads = {"ok": good, "bomb": png_header_only(30_000, 30_000), "truncated": good[: len(good) // 2],
                "blank": _png(Image.new("RGB", (60, 80), (255, 255, 255)))}
    image = payloads.get(files, files)
    before = client.get("/stats").json()["index"]["revision"]
    response = client.post("/items", files=None if image is None else {"image": ("x.png", image, "image/png")},
                           data=fields, headers=bearer(keys["write"]))
    assert response.status_code == status, response.text
    assert error_of(response)["field"] == field
    assert client.get("/stats").json()["index"]["revision"] == before
    assert client.get("/items/x").status_code == 404
    assert search_ids(client, product(4, "circle", (90, 90, 90)), 1)  # still serving


def test_an_upload_over_the_size_limit_is_413(served, keys):
    with TestClient(create_app(served.index, inference="torch", max_upload_bytes=2_000)) as small:
        response = small.post("/items", files={"image": ("x.png", os.urandom(50_000), "image/png")},
                              data={"id": "x"}, headers=bearer(keys["write"]))
        assert response.status_code == 413 and error_of(response) == {"code": "upload_too_large", "field": "image",
                                                                      "message": error_of(response)["message"]}


# --- PATCH, PUT image, DELETE ------------------------------------------------------------------------------------


def test_patch_changes_label_and_metadata_and_keeps_the_vector(client, keys):
    image = product(5)
    assert post_item(client, keys["write"], image, id="p-1", label="Tshirts", metadata={"gender": "Men"}).status_code == 201
    response = client.patch("/items/p-1", json={"label": "Shirts", "metadata": {"gender": None, "season": "Fall"}},
                            headers=bearer(keys["write"]))
    assert response.status_code == 200 and response.json()["updated"] == ["p-1"]
    assert client.get("/items/p-1").json()["label"] == "Shirts"
    assert client.get("/items/p-1").json()["metadata"] == {"season": "Fall"}
    assert search_ids(client, image, 1) == ["p-1"]  # the same vector
    again = client.patch("/items/p-1", json={"metadata": {"season": "Fall"}}, headers=bearer(keys["write"]))
    assert again.json()["unchanged"] == ["p-1"] and again.json()["revision"] == response.json()["revision"]

    unknown = client.patch("/items/nope", json={"label": "Shirts"}, headers=bearer(keys["write"]))
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "unknown_item"
    wrong = client.patch("/items/p-1", json={"metadata": 5}, headers=bearer(keys["write"]))
    assert wrong.status_code == 422 and error_of(wrong)["field"] == "metadata"
    not_json = client.patch("/items/p-1", content=b"label=Shirts", headers={**bearer(keys["write"]),
                                                                             "content-type": "application/json"})
    assert not_json.status_code == 422


def test_put_image_embeds_the_new_image_and_keeps_the_metadata(client, keys):
    old, new = product(6, "square", (200, 40, 40)), product(7, "triangle", (120, 70, 20))
    assert post_item(client, keys["write"], old, id="img-1", label="Tshirts", metadata={"gender": "Men"}).status_code == 201
    response = client.put("/items/img-1/image", files={"image": ("n.png", new, "image/png")},
                          headers=bearer(keys["write"]))
    assert response.status_code == 200 and response.json()["replaced"] == ["img-1"]
    assert client.get("/items/img-1/image").content == new
    assert client.get("/items/img-1").json()["metadata"] == {"gender": "Men"}
    assert search_ids(client, new, 1) == ["img-1"]
    assert client.put("/items/nope/image", files={"image": ("n.png", new, "image/png")},
                      headers=bearer(keys["write"])).status_code == 404
    hostile = client.put("/items/img-1/image", files={"image": ("n.png", b"<svg/>", "image/png")},
                         headers=bearer(keys["write"]))
    assert hostile.status_code == 415 and client.get("/items/img-1/image").content == new
    missing = client.put("/items/img-1/image", headers=bearer(keys["write"]))
    assert missing.status_code == 422 and error_of(missing)["field"] == "image"


def test_delete_removes_the_item_everywhere_and_a_second_delete_is_404(client, keys):
    image = product(8)
    assert post_item(client, keys["write"], image, id="d-1").status_code == 201
    response = client.delete("/items/d-1", headers=bearer(keys["write"]))
    assert response.status_code == 200 and response.json()["removed"] == ["d-1"]
    assert client.get("/items/d-1").status_code == 404
    assert "d-1" not in search_ids(client, image, 10)
    assert client.get("/stats").json()["items"] == 72
    again = client.delete("/items/d-1", headers=bearer(keys["write"]))
    assert again.status_code == 404 and error_of(again)["code"] == "unknown_item"


def test_a_batch_puts_and_removes_in_one_revision(client, keys):
    images = [product(10 + n, "bar", (30, 60, 160)) for n in range(3)]
    assert post_item(client, keys["write"], product(9), id="old-1").status_code == 201
    items = [{"id": f"b-{n}", "label": "Jeans", "metadata": {"n": str(n)}, "image": f"file{n}"} for n in range(3)]
    response = client.post("/items/batch", data={"items": json.dumps(items), "remove": json.dumps(["old-1"])},
                           files=[(f"file{n}", (f"{n}.png", image, "image/png")) for n, image in enumerate(images)],
                           headers=bearer(keys["write"]))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["created"] == ["b-0", "b-1", "b-2"] and answer["removed"] == ["old-1"]
    assert client.get("/stats").json()["index"]["revision"] == answer["revision"]
    assert client.get("/stats").json()["items"] == 75
    assert client.get("/items/b-2").json()["metadata"] == {"n": "2"}

    bad = [{"id": "b-9", "image": "nowhere"}]
    refused = client.post("/items/batch", data={"items": json.dumps(bad)}, headers=bearer(keys["write"]))
    assert refused.status_code == 422 and error_of(refused)["field"] == "items[0].image"
    wrong = client.post("/items/batch", data={"items": json.dumps({"id": "x"})}, headers=bearer(keys["write"]))
    assert wrong.status_code == 422 and error_of(wrong)["field"] == "items"
    unknown = client.post("/items/batch", data={"remove": json.dumps(["never-there"])}, headers=bearer(keys["write"]))
    assert unknown.status_code == 404
    assert client.get("/stats").json()["items"] == 75


def test_searches_during_writes_see_a_batch_whole_or_not_at_all(client, keys):
    """A batch of 8 copies of one image is written while searches for that image run: each search sees
    none of them or all of them."""
    image = product(20, "circle", (20, 200, 200))
    items = [{"id": f"same-{n}", "image": "file"} for n in range(8)]
    seen, stop = [], threading.Event()

    def search_loop():
        while not stop.is_set():
            seen.append(sum(i.startswith("same-") for i in search_ids(client, image, 12)))

    threads = [threading.Thread(target=search_loop) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for round_ in range(3):
            put = client.post("/items/batch", data={"items": json.dumps(items)},
                              files=[("file", ("s.png", image, "image/png"))], headers=bearer(keys["write"]))
            assert put.status_code == 200
            removed = client.post("/items/batch", data={"remove": json.dumps([i["id"] for i in items])},
                                  headers=bearer(keys["write"]))
            assert removed.status_code == 200
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert seen and set(seen) <= {0, 8}, sorted(set(seen))


# --- keys ----------------------------------------------------------------------------------------------------------


def test_writes_need_a_write_key(client, served, keys):
    image = product(30)
    none = client.post("/items", files={"image": ("x.png", image, "image/png")}, data={"id": "k-1"})
    assert none.status_code == 401 and none.headers["www-authenticate"].startswith("Bearer")
    assert error_of(none)["field"] == "authorization"
    wrong = post_item(client, "ssk_000000000000_" + "A" * 43, image, id="k-1")
    assert wrong.status_code == 401
    garbage = post_item(client, "not-a-key", image, id="k-1")
    assert garbage.status_code == 401
    read_only = post_item(client, keys["read"], image, id="k-1")
    assert read_only.status_code == 403
    for method in ("patch", "delete"):
        assert getattr(client, method)("/items/1013", headers=bearer(keys["read"])).status_code == 403
    assert client.get("/items/k-1").status_code == 404  # nothing written

    assert post_item(client, keys["write"], image, id="k-1").status_code == 201
    KeyStore(served.index).revoke("writer")
    revoked = post_item(client, keys["write"], product(31), id="k-2")
    assert revoked.status_code == 401 and client.get("/items/k-2").status_code == 404
    # reads stay open without --read-key
    assert client.get("/items/1013").status_code == 200 and client.get("/").status_code == 200


def test_a_key_in_the_query_string_is_refused(client, keys):
    for query in (f"?key={keys['write']}", f"?api_key={keys['write']}", f"?k=5&x={keys['read']}", "?token=abc"):
        response = client.get("/items" + query)
        assert response.status_code == 400 and error_of(response)["code"] == "key_in_query", query
        assert keys["write"] not in response.text and keys["read"] not in response.text
    posted = client.post(f"/items?access_token={keys['write']}", files={"image": ("x.png", product(32), "image/png")},
                         data={"id": "q-1"})
    assert posted.status_code == 400 and client.get("/items/q-1").status_code == 404


def test_read_key_closes_reads_but_not_the_page(served, keys):
    with TestClient(create_app(served.index, inference="torch", read_key=True)) as closed:
        for path in ("/items", "/items/1013", "/classes", "/stats"):
            assert closed.get(path).status_code == 401, path
            assert closed.get(path, headers=bearer(keys["read"])).status_code == 200, path
            assert closed.get(path, headers=bearer(keys["write"])).status_code == 200, path
        image = product(33)
        assert closed.post("/search", files={"image": ("q.png", image, "image/png")}).status_code == 401
        assert closed.post("/search", files={"image": ("q.png", image, "image/png")},
                           headers=bearer(keys["read"])).status_code == 200
        for path in ("/", "/health", "/static/app.js", "/openapi.json"):
            assert closed.get(path).status_code == 200, path


def test_repeated_wrong_keys_from_one_client_are_slowed_down(client, keys):
    wrong = "ssk_000000000000_" + "B" * 43
    codes = [client.delete("/items/1013", headers=bearer(wrong)).status_code for _ in range(7)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
    blocked = client.delete("/items/1013", headers=bearer(keys["write"]))
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    assert client.get("/items/1013").status_code == 200  # reads stay open


def test_keys_are_kept_hashed_in_a_private_file_and_never_logged(client, served, keys, caplog):
    path = served.index / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = path.read_text()
    for key in keys.values():
        assert key not in stored and key[17:] not in stored  # nor its secret (after "ssk_<12-hex id>_")
    assert all(record["hash"].startswith("$argon2id$") for record in json.loads(stored)["keys"])
    with caplog.at_level(logging.DEBUG):
        post_item(client, keys["write"], product(34), id="log-1")
        post_item(client, keys["read"], product(35), id="log-2")
        client.get(f"/items?key={keys['write']}")
        post_item(client, keys["write"] + "x", product(36), id="log-3")
    # the server's records (the test's HTTP client logs the URLs it was asked to send itself)
    logged = "\n".join(f"{r.getMessage()} {r.args}" for r in caplog.records if not r.name.startswith("httpx"))
    assert any(r.name.startswith("httpx") and keys["write"] in r.getMessage() for r in caplog.records)  # seen
    for key in keys.values():
        assert key not in logged and key[17:] not in logged


def test_keys_cli_prints_a_key_once_and_lists_and_revokes_without_showing_it(served, cli_json):
    made = cli_json("keys", "create", str(served.index), "--name", "ci", "--scope", "read")
    assert made["key"].startswith("ssk_") and made["scope"] == "read"
    listed = cli_json("keys", "list", str(served.index))
    assert [k["name"] for k in listed] == ["ci"] and made["key"] not in json.dumps(listed)
    assert "hash" not in listed[0]
    revoked = cli_json("keys", "revoke", str(served.index), "ci")
    assert revoked["revoked"] is not None
    assert KeyStore(served.index).records()[0].revoked is not None


# --- the CLI takes the same path -------------------------------------------------------------------------------------


def test_the_cli_puts_sets_and_removes_items_through_the_write_path(served, cli_json, tmp_path):
    image = tmp_path / "new.png"
    image.write_bytes(product(40))
    put = cli_json("index", "put", str(served.index), str(image), "--id", "cli-1", "--label", "Tshirts",
                   "--meta", "gender=Men", "--engine", "torch")
    assert put["created"] == ["cli-1"] and put["count"] == 73
    again = cli_json("index", "put", str(served.index), str(image), "--id", "cli-1", "--label", "Tshirts",
                     "--meta", "gender=Men", "--engine", "torch")
    assert again["unchanged"] == ["cli-1"] and again["revision"] == put["revision"]
    changed = cli_json("index", "set", str(served.index), "cli-1", "--meta", "season=Fall", "--unset", "gender")
    assert changed["updated"] == ["cli-1"]
    with TestClient(create_app(served.index, inference="torch")) as client:  # what the service then serves
        assert client.get("/items/cli-1").json()["metadata"] == {"season": "Fall"}
        assert client.get("/items/cli-1/image").content == image.read_bytes()
        assert search_ids(client, image.read_bytes(), 1) == ["cli-1"]
    removed = cli_json("index", "remove", str(served.index), "cli-1")
    assert removed["removed"] == 1 and removed["count"] == 72


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
