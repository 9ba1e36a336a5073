"""A catalog changed while it serves: the served index catches up in place (counted, not timed) at 200,000
items, two worker processes both see one write, and a server killed with SIGKILL in the middle of writes
comes back with every acknowledged change whole."""
from __future__ import annotations

import dataclasses
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import synth_image
from service_catalog import free_port, served_catalog


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    with served_catalog(tmp_path_factory, "live") as catalog:
        yield catalog


@pytest.fixture
def served(built, tmp_path):
    shutil.copytree(built.index, tmp_path / "index")
    return dataclasses.replace(built, index=tmp_path / "index")


def product(seed: int, shape: str = "square", colour=(30, 160, 60)) -> bytes:
    buffer = io.BytesIO()
    synth_image(shape, colour, np.random.default_rng(seed)).save(buffer, "PNG")
    return buffer.getvalue()


# --- in place, at 200,000 items ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_change_at_200k_items_is_applied_in_place_without_reopening(tmp_path, monkeypatch):
    """Another process adds, changes and removes items of a 200,000-item index; the engine applies exactly
    those (its counters), keeps its index handle and view objects, and never reads the catalog again."""
    import torch

    from stylespace.index import CatalogIndex
    from stylespace.index.writes import ItemPatch, NewItem, put_items, remove_items, update_items
    from stylespace.models import ModelConfig, build_model, model_id
    from stylespace.recommend import SelectiveRecommender
    from stylespace.service.engine import CatalogView, LiveCounters, StyleEngine, UnknownItem

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="compact", embedding_dim=32, width=8)).eval()
    n = 200_000
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, 32)).astype(np.float32)
    labels = [("Tshirts", "Shirts", "Jeans", "Watches")[k % 4] for k in range(n)]
    CatalogIndex.create(tmp_path / "index", [f"i{k}" for k in range(n)], vectors, model_id=model_id(model),
                        labels=labels).close()
    index = CatalogIndex.open(tmp_path / "index")
    monkeypatch.setattr("stylespace.service.engine.REFRESH_SECONDS", 3600.0)  # only the refreshes below catch up
    engine = StyleEngine(index, model, SelectiveRecommender.from_index(index), catalog=None, inference="torch")
    try:
        handle, backend, view = engine.index, engine.index.backend, engine._view
        rows_read = []  # every time the view would read every item again
        original_of = CatalogView.of.__func__
        monkeypatch.setattr(CatalogView, "of", classmethod(lambda cls, idx: rows_read.append(1) or original_of(cls, idx)))

        writer = CatalogIndex.open(tmp_path / "index")
        new = rng.standard_normal((3, 32)).astype(np.float32)
        put_items(writer, [NewItem(f"new-{k}", new[k], "Jeans", {"colour": "Blue"}) for k in range(3)],
                  model_id=writer.model_id)
        remove_items(writer, ["i10", "i11"])
        update_items(writer, {"i12": ItemPatch({"colour": "Red"}, "Shirts", set_label=True)})

        assert engine.refresh()
        assert engine.live == LiveCounters(catch_ups=1, items_patched=3 + 2 + 2, view_rebuilds=0, reopens=0)
        assert engine.index is handle and engine.index.backend is backend and engine._view is view
        assert rows_read == []  # no item was read again beyond the change
        assert engine.size == n + 1 and engine.index.position == writer.position
        assert engine.item("new-2").meta == {"colour": "Blue"} and engine.item("i12").label == "Shirts"
        for gone in ("i10", "i11"):
            with pytest.raises(UnknownItem):
                engine.item(gone)
        hits = engine.index.search(new[1:2], k=1, model_id=writer.model_id)[0]
        assert hits[0].id == "new-1"
        total, page = engine.items("Jeans", n // 4 - 1, 5)  # i10 was Jeans; the new items come last
        assert total == n // 4 - 1 + 3 and [r.id for r in page] == ["new-0", "new-1", "new-2"]

        assert not engine.refresh()  # nothing new: nothing done
        engine.remove_items(["i13"])  # a write through the engine itself
        assert engine.live == LiveCounters(catch_ups=2, items_patched=8, view_rebuilds=0, reopens=0, writes=1)
        assert engine.size == n and rows_read == []
        writer.close()
    finally:
        engine.close()


def test_a_worker_that_has_not_caught_up_yet_still_removes_and_changes_an_item_another_acknowledged(served, monkeypatch):
    from stylespace.service import create_app
    from stylespace.service.keys import KeyStore

    monkeypatch.setattr("stylespace.service.engine.REFRESH_SECONDS", 3600.0)  # neither worker catches up by itself
    key = KeyStore(served.index).create("test")[0]
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(served.index, inference="torch")) as first, \
            TestClient(create_app(served.index, inference="torch")) as second:
        added = first.post("/items", files={"image": ("a.png", product(1), "image/png")},
                           data={"id": "new-a", "label": "Shirts"}, headers=auth)
        assert added.status_code == 201, added.text
        first.post("/items", files={"image": ("b.png", product(2), "image/png")},
                   data={"id": "new-b", "label": "Shirts"}, headers=auth).raise_for_status()
        assert second.get("/items/new-a").status_code == 404  # its view is behind: nothing has caught it up
        changed = second.put("/items/new-b/image", files={"image": ("c.png", product(3), "image/png")}, headers=auth)
        assert changed.status_code == 200, changed.text
        removed = second.delete("/items/new-a", headers=auth)
        assert removed.status_code == 200, removed.text
        assert removed.json()["removed"] == ["new-a"]


def test_a_rebuild_is_the_one_change_that_reads_every_item_again(served, monkeypatch):
    from stylespace.index import CatalogIndex
    from stylespace.service import create_app

    monkeypatch.setattr("stylespace.service.engine.REFRESH_SECONDS", 3600.0)  # only the refreshes below catch up
    with TestClient(create_app(served.index, inference="torch")) as client:
        engine = client.app.state.engine
        writer = CatalogIndex.open(served.index)
        writer.remove([writer.ids[0]])
        assert engine.refresh()
        assert (engine.live.catch_ups, engine.live.view_rebuilds, engine.live.reopens) == (1, 0, 0)
        writer.rebuild()
        assert engine.refresh()
        assert (engine.live.catch_ups, engine.live.view_rebuilds, engine.live.reopens) == (2, 1, 1)
        assert client.get("/stats").json()["items"] == 71
        writer.close()


def test_stats_reports_the_calibration_stale_past_the_share_of_changed_items(served, monkeypatch):
    from stylespace.index import CatalogIndex
    from stylespace.index.writes import remove_items
    from stylespace.service import create_app

    monkeypatch.setattr("stylespace.service.engine.REFRESH_SECONDS", 3600.0)
    with TestClient(create_app(served.index, inference="torch", calibration_stale_share=0.05)) as client:
        engine = client.app.state.engine
        state = client.get("/stats").json()["calibration"]
        assert state == {"calibrated": True, "changed_share": 0.0, "stale_share": 0.05, "stale": False,
                         "outdated": False}
        writer = CatalogIndex.open(served.index)
        remove_items(writer, writer.ids[:3])  # 3 / 72 = 4.2 %
        engine.refresh()
        state = client.get("/stats").json()["calibration"]
        assert state["changed_share"] == pytest.approx(3 / 72, abs=1e-6) and not state["stale"]
        remove_items(writer, writer.ids[:1])  # 4 / 72 = 5.6 %
        engine.refresh()
        assert client.get("/stats").json()["calibration"]["stale"]
        writer.close()


# --- processes: two workers, and a kill in the middle of writes ---------------------------------------------------


def start_server(served, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "stylespace", "serve", str(served.index), "--port", str(port),
                                "--engine", "torch", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server stopped: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise AssertionError("the server did not start within 120 s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_two_workers_both_see_one_write(served):
    from stylespace.service.keys import KeyStore

    key = KeyStore(served.index).create("writer")[0]
    process, url = start_server(served, "--workers", "2")
    try:
        seen: dict[int, int] = {}
        deadline = time.monotonic() + 60
        while len(seen) < 2 and time.monotonic() < deadline:  # both workers up and answering
            with httpx.Client(timeout=10) as fresh:  # a new connection: the kernel picks a worker
                stats = fresh.get(url + "/stats").json()
            seen[stats["index"]["worker"]] = stats["index"]["revision"]
        assert len(seen) == 2, "the second worker never answered"
        written = httpx.post(url + "/items", files={"image": ("n.png", product(1), "image/png")},
                             data={"id": "two-workers"}, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert written.status_code == 201
        revision, acknowledged = written.json()["revision"], time.monotonic()
        caught_up: dict[int, float] = {}
        while len(caught_up) < 2 and time.monotonic() < acknowledged + 20:
            with httpx.Client(timeout=10) as fresh:
                stats = fresh.get(url + "/stats").json()
                item = fresh.get(url + "/items/two-workers")
            worker = stats["index"]["worker"]
            if stats["index"]["revision"] >= revision and stats["items"] == 73 and worker not in caught_up:
                assert item.status_code == 200  # the same connection's worker serves the item too
                caught_up[worker] = time.monotonic() - acknowledged
        assert set(caught_up) == set(seen), caught_up
    finally:
        stop(process)


@pytest.mark.slow
def test_a_server_killed_during_writes_keeps_every_acknowledged_change_whole(served):
    """Twice: a writer puts and removes items through the API while the server is SIGKILLed at a random
    moment; then every acknowledged put is there with the vector of its image, every acknowledged removal
    gone, nothing half there (each item has its vector and image), and the index takes the next write."""
    from stylespace.index import CatalogIndex
    from stylespace.index.build import embed_query_images
    from stylespace.index.writes import image_path, remove_items
    from stylespace.models import load_model
    from stylespace.service import create_app
    from stylespace.service.keys import KeyStore

    key = KeyStore(served.index).create("writer")[0]
    headers = {"Authorization": f"Bearer {key}"}
    rng = np.random.default_rng(7)
    present: dict[str, bytes] = {}  # acknowledged puts not removed since
    removed: set[str] = set()
    counter = 0
    for round_ in range(2):
        process, url = start_server(served)
        stop_writing = threading.Event()

        def write_loop():
            nonlocal counter
            with httpx.Client(timeout=30, headers=headers) as client:
                while not stop_writing.is_set():
                    counter += 1
                    try:
                        if counter % 4 == 0 and present:
                            victim = sorted(present)[0]
                            image = present.pop(victim)  # in flight: it may be gone or not
                            response = client.delete(f"{url}/items/{victim}")
                            if response.status_code == 200:
                                removed.add(victim)
                            elif response.status_code != 404:
                                present[victim] = image
                        else:
                            image = product(1000 + counter, ("square", "circle", "bar")[counter % 3])
                            response = client.post(url + "/items", files={"image": ("k.png", image, "image/png")},
                                                   data={"id": f"kill-{counter}"})
                            if response.status_code == 201:
                                present[f"kill-{counter}"] = image
                    except httpx.HTTPError:
                        return  # the server is gone

        writer = threading.Thread(target=write_loop)
        writer.start()
        time.sleep(float(rng.uniform(3.0, 6.0)))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        stop_writing.set()
        writer.join()

    assert len(present) >= 2 and removed, (len(present), removed)
    index = CatalogIndex.open(served.index)
    ids = set(index.ids)
    assert set(present) <= ids and not (removed & ids)
    vectors = index.vectors(sorted(ids))  # raises if any item has no stored vector
    assert np.isfinite(vectors).all()
    rows = index.items.rows(index.keys_of(sorted(ids)))
    for _, source, _, _ in rows.values():
        kept = image_path(served.index, source)
        assert kept is None or kept.is_file()  # no item without its image
    model = load_model(served.model, device="cpu")
    order = sorted(present)
    expected = embed_query_images(model, [present[i] for i in order], device="cpu")
    stored = index.vectors(order)
    assert (np.sum(expected * stored, axis=1) > 0.999).all()  # each acknowledged item with its own vector
    remove_items(index, [order[0]])  # the next write works
    index.close()
    with TestClient(create_app(served.index, inference="torch")) as client:  # and the restarted service serves them
        for item_id in order[1:]:
            assert client.get(f"/items/{item_id}").status_code == 200
            assert client.get(f"/items/{item_id}/image").content == present[item_id]
