"""Hostile uploads cost bounded memory; decoding is bounded in flight; the API is tidy (headers, echoes, paths).

Each hostile upload of issue 16 is posted in-process (TestClient) while the process's peak resident
memory is measured (Linux: /proc/self/clear_refs resets the high-water mark, VmHWM reads it).
"""
from __future__ import annotations

import io
import os
import re
import threading

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service_catalog import served_catalog
from stylespace.service import create_app
from stylespace.service.decoding import Busy, DecodeLane, DecodeLimits

MB = 1_000_000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with served_catalog(tmp_path_factory, "limits") as catalog:
        yield catalog


@pytest.fixture(scope="module")
def client(served):
    return TestClient(create_app(served.index))


def png(width: int, height: int, colour=(40, 40, 40), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), colour).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _status(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024


def peak_memory_of(action) -> int:
    """Bytes by which the process's peak resident memory rose above its resident memory while ``action`` ran."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM to the current resident size
    except OSError:
        pytest.skip("needs Linux's /proc/self/clear_refs to measure peak memory")
    before = _status("VmRSS")
    action()
    return _status("VmHWM") - before


# --- the hostile uploads of issue 16 ------------------------------------------------------------------


@pytest.mark.parametrize("width, height", [(20_000, 1), (1, 20_000), (30_000, 2), (40_000, 1)])
def test_a_tiny_png_of_extreme_shape_costs_little_memory(client, width, height):
    """Under 200 bytes, inside the decoded-pixel limit, but padded to 3:4 it used to be gigabytes of canvas."""
    data = png(width, height)
    assert len(data) < 300
    responses = []
    peak = peak_memory_of(lambda: responses.append(
        client.post("/search", files={"image": ("line.png", data, "image/png")}, data={"k": "3"})))
    assert responses[0].status_code == 200, responses[0].text  # reduced safely, then searched
    assert peak < 100 * MB, f"peak memory rose by {peak / MB:.0f} MB"


def test_the_three_tiny_pngs_together_stay_under_100_mb(client):
    uploads = [png(20_000, 1), png(1, 20_000), png(30_000, 2)]

    def post_all():
        for data in uploads:
            assert client.post("/search", files={"image": ("x.png", data, "image/png")}).status_code == 200

    assert peak_memory_of(post_all) < 100 * MB


def test_a_large_blank_png_is_refused_from_its_header_naming_the_limit(client):
    data = png(6000, 6000, (255, 255, 255))  # 36 Mpx: under the 40 Mpx bomb limit, over the service's budget
    responses = []
    peak = peak_memory_of(lambda: responses.append(client.post("/search", files={"image": ("blank.png", data)})))
    response = responses[0]
    assert response.status_code == 422
    detail = response.json()["error"]["message"]
    assert response.json()["error"]["code"] == "image_too_large"
    assert "6000x6000" in detail and "4 Mpx" in detail and "limit" in detail
    assert peak < 50 * MB, f"peak memory rose by {peak / MB:.0f} MB: it was decoded"  # decoded, it is 108 MB


def test_a_large_jpeg_passes_because_it_decodes_at_reduced_scale(client, served):
    photo = Image.open(served.catalog / "images" / "1042.png").convert("RGB").resize((3000, 4000))  # 12 Mpx
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=80)
    response = client.post("/search", files={"image": ("big.jpg", buffer.getvalue())}, data={"k": "3"})
    assert response.status_code == 200 and response.json()["results"][0]["label"] == "Watches"


def test_the_pixel_budget_is_configurable(served):
    strict = TestClient(create_app(served.index, decode_limits=DecodeLimits(decoded_pixels=5_000)))
    response = strict.post("/search", files={"image": ("p.png", png(100, 100))})
    assert response.status_code == 422 and "0.005 Mpx" in response.json()["error"]["message"]
    assert strict.get("/stats").json()["decoding"]["decoded_pixels"] == 5_000
    assert strict.post("/search", files={"image": ("p.png", png(60, 80))}).status_code == 200
    with pytest.raises(Exception, match="decoded_pixels"):
        DecodeLimits(decoded_pixels=0)


# --- decodes in flight ------------------------------------------------------------------------------------


def test_a_lane_refuses_past_its_queue_with_a_retry_time():
    lane = DecodeLane("test", workers=1, max_waiting=1)
    release = threading.Event()
    try:
        running = lane.submit(release.wait, 10)
        waiting = lane.submit(lambda: "second")
        with pytest.raises(Busy) as refused:
            lane.submit(lambda: "third")
        assert refused.value.retry_after >= 1 and lane.stats()["refused_busy"] == 1
        release.set()
        assert running.result(5) is True and waiting.result(5) == "second"
        assert lane.submit(lambda: "after").result(5) == "after"  # room again
    finally:
        release.set()
        lane.close()


def test_a_rate_limited_lane_spaces_the_starts_of_its_jobs():
    """The heavy lane starts at most heavy_per_second uploads a second (a lower bound on the spacing only:
    sleeping never ends early, so this cannot fail on a slow machine)."""
    import time

    lane = DecodeLane("test", workers=1, max_waiting=8, per_second=20)
    try:
        submitted = time.monotonic()
        starts = [lane.submit(time.monotonic) for _ in range(5)]
        last = [future.result(5) for future in starts][-1]
    finally:
        lane.close()
    # five starts at most 20 a second: the fifth no sooner than 4 intervals after the first could start
    assert last - submitted >= 4 / 20, last - submitted


def test_heavy_uploads_queue_on_their_own_lane_and_a_full_queue_is_503_with_retry_after(served):
    limits = DecodeLimits(heavy_pixels=10_000, heavy_workers=1, max_heavy_waiting=0)
    client = TestClient(create_app(served.index, decode_limits=limits))
    decoder = client.app.state.decoder
    heavy = png(300, 400, (90, 20, 20))  # 0.12 Mpx: heavy under these limits
    release = threading.Event()
    blocker = decoder.heavy.submit(release.wait, 10)  # the one heavy thread is busy
    try:
        response = client.post("/search", files={"image": ("heavy.png", heavy)})
        assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
        assert "busy" in response.json()["error"]["message"] and response.json()["error"]["code"] == "busy"
        # an ordinary upload does not wait for the heavy lane
        light = client.post("/search", files={"image": ("small.png", png(60, 80, (90, 20, 20)))})
        assert light.status_code == 200
    finally:
        release.set()
    assert blocker.result(5) is True
    assert client.post("/search", files={"image": ("heavy.png", heavy)}).status_code == 200
    stats = client.get("/stats").json()["decoding"]
    assert stats["heavy"]["refused_busy"] == 1 and stats["heavy"]["done"] >= 2 and stats["ordinary"]["done"] >= 3


@pytest.mark.skipif(not hasattr(os, "getpriority") or not os.path.exists("/proc/self/task"),
                    reason="thread priorities are a Linux feature")
def test_heavy_decoder_threads_run_at_the_lowest_priority(client):
    lane = client.app.state.decoder.heavy
    assert lane.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result(5) == 19
    ordinary = client.app.state.decoder.ordinary
    assert ordinary.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result(5) == \
        os.getpriority(os.PRIO_PROCESS, 0)


# --- a tidy API ------------------------------------------------------------------------------------------


def test_every_answer_carries_the_security_headers(client):
    for path in ("/", "/stats", "/items/nope", "/docs", "/static/app.js"):
        headers = client.get(path).headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert headers["referrer-policy"] and headers["x-frame-options"] == "DENY", path
    assert "'unsafe-inline'" not in client.get("/").headers["content-security-policy"]


def test_the_api_pages_work_offline(client):
    for path, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        page = client.get(path)
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        assert urls and not [u for u in urls if u.startswith(("http:", "https:", "//"))], urls
        script = next(u for u in urls if u.endswith(asset))
        assert client.get(script).status_code == 200 and len(client.get(script).content) > 100_000
    assert client.get("/favicon.ico").headers["content-type"].startswith("image/svg")


def test_no_answer_shows_a_server_path(client, served):
    stats = client.get("/stats").json()
    assert stats["catalog"] == served.catalog.name
    texts = [client.get(p).text for p in ("/stats", "/health", "/classes", "/items/1013", "/openapi.json")]
    texts.append(client.post("/search", files={"image": ("x.png", b"not an image")}).text)
    for text in texts:
        assert str(served.catalog.parent) not in text and str(served.index) not in text


def test_echoed_values_are_cut_short(client):
    long = "x" * 60_000  # httpx sends URLs of up to 64 KB
    for response in (client.get("/items", params={"label": long}), client.get(f"/items/{long}"),
                     client.get("/items/1013/similar", params={"k": long}),
                     client.post("/search", files={"image": ("q.png", png(60, 80))}, data={"k": long})):
        assert response.status_code in (404, 422) and len(response.content) < 2_000, len(response.content)
    named = client.post("/search", files={"image": (long[:500] + ".png", png(60, 80))}).json()
    assert "query" in named, named
    assert len(named["query"]["filename"]) < 100


# --- one error shape, documented ----------------------------------------------------------------------


def test_every_error_has_the_one_shape_with_a_known_code(client):
    from stylespace.service.errors import CODES

    answers = [client.get("/items/nope"), client.get("/items", params={"label": "nope"}),
               client.get("/items", params={"limit": 0}), client.get("/no/such/path"), client.delete("/stats"),
               client.post("/search", files={"image": ("x.png", b"not an image")}),
               client.post("/search", data={"k": "3"}), client.post("/compare", data={"id_a": "1000"})]
    for response in answers:
        assert response.status_code >= 400 and set(response.json()) == {"error"}, response.text
        error = response.json()["error"]
        assert set(error) == {"code", "message", "field"} and error["message"], error
        assert CODES[error["code"]][0] == response.status_code, error
    assert [r.json()["error"]["code"] for r in answers[:5]] == [
        "unknown_item", "unknown_label", "invalid_request", "not_found", "method_not_allowed"]
    assert answers[1].json()["error"]["field"] == "label" and answers[2].json()["error"]["field"] == "limit"
    assert answers[6].json()["error"]["field"] == "image"  # a missing upload names its field


def test_the_openapi_schema_documents_every_error_status_of_each_route(client):
    schema = client.get("/openapi.json").json()
    expected = {("/search", "post"): {413, 415, 422, 500, 503}, ("/compare", "post"): {404, 413, 415, 422, 500, 503},
                ("/items/{item_id}/similar", "get"): {404, 422, 500}, ("/items/{item_id}", "get"): {404, 422, 500},
                ("/items/{item_id}/image", "get"): {404, 422, 500}, ("/items", "get"): {404, 422, 500},
                ("/health", "get"): {500}, ("/stats", "get"): {500}, ("/classes", "get"): {500}}
    for (path, method), statuses in expected.items():
        responses = schema["paths"][path][method]["responses"]
        assert {int(s) for s in responses if s != "200"} == statuses, (path, sorted(responses))
        for status in statuses:
            body = responses[str(status)]["content"]["application/json"]["schema"]
            assert body == {"$ref": "#/components/schemas/ErrorBody"}, (path, status, body)
            assert "`" in responses[str(status)]["description"]  # names the codes it carries
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert "unit" in schema["components"]["schemas"]["Hit"]["properties"]["score"]["description"]


def test_redoc_loads_nothing_from_outside_the_server(client):
    page = client.get("/redoc")
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    script = client.get(next(u for u in urls if u.endswith("redoc.standalone.js")))
    assert script.status_code == 200 and b"https://cdn." not in script.content
    assert b'"img",{alt:"redocly logo"' not in script.content or b"src:\"/favicon.svg\"" in script.content
