"""End to end in a real browser: Debian's headless Chromium driven by Selenium against uvicorn.

Open the page, upload a catalog image, see the grid with that item first, click a result, see its
similar items; an item below the threshold shows "No confident match"; type words, see their items (and
"No confident match" with the reason for words the text model does not know). Screenshots go to the test's
temporary folder. Skipped (with the reason) where chromium or chromium-driver is not installed.
"""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from service_catalog import free_port, served_catalog

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run")

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with served_catalog(tmp_path_factory, "browser") as catalog:
        yield catalog


@pytest.fixture(scope="module")
def app(served):
    from stylespace.service import create_app

    return create_app(served.index, compat_dir=served.compat)


@pytest.fixture(scope="module")
def server(app):
    """uvicorn on a free loopback port, in a thread of this process; yields its URL."""
    import uvicorn

    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists() or shutil.which("chromium") is None:
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}); "
                    "`make apt-deps` installs them (as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(driver, condition, what: str, timeout: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d), message=f"waiting for {what}")


def card_ids(driver, grid: str = "#results") -> list[str]:
    """The ids of the item cards in ``grid`` (not the skeletons shown while waiting), read in one script call
    so that a grid being replaced cannot leave a stale element behind."""
    return driver.execute_script("return Array.from(document.querySelectorAll(arguments[0] + ' .card:not(.skeleton)'),"
                                 " (card) => card.dataset.id);", grid)


def confident_upload(server: str, served, candidates=range(1042, 1072)) -> str:
    """A catalog image the API finds confidently, itself first (trimmed to the product, the generated shapes
    of one class differ only by a shade, so under the untrained model about half fall below the threshold)."""
    with httpx.Client(base_url=server) as api:
        for item_id in map(str, candidates):
            data = (served.catalog / "images" / f"{item_id}.png").read_bytes()
            found = api.post("/search", files={"image": (f"{item_id}.png", data, "image/png")},
                             data={"k": 18}).json()
            if found["confident"] and found["results"][0]["id"] == item_id:
                return item_id
    raise AssertionError("no confidently found upload among the candidates")


def test_upload_then_click_through_similar_items(browser, server, served, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    wait_for(browser, lambda d: "72 items" in d.find_element(By.ID, "stats").text, "the catalog stats")

    # 1. upload a catalog image the API finds confidently: the grid shows that very item first
    api = httpx.Client(base_url=server)
    query_id = confident_upload(server, served)
    browser.find_element(By.ID, "file-input").send_keys(str(served.catalog / "images" / f"{query_id}.png"))
    wait_for(browser, lambda d: card_ids(d), "the result grid")
    results = card_ids(browser)
    assert results[0] == query_id and len(results) == 18
    assert "similar items" in browser.find_element(By.ID, "search-status").text
    browser.save_screenshot(str(tmp_path / "1-upload.png"))

    # 2. click a result whose own neighbours are confident: its similar items replace the grid
    target = next(i for i in results[1:] if api.get(f"/items/{i}/similar", params={"k": 3}).json()["confident"])
    browser.find_element(By.CSS_SELECTOR, f'#results .card[data-id="{target}"] .thumb').click()
    wait_for(browser, lambda d: d.current_url.endswith(f"#item/{target}") and card_ids(d)
             and target not in card_ids(d) and f"id {target}" in d.find_element(By.ID, "query-caption").text,
             f"the items similar to {target}")
    expected = [hit["id"] for hit in api.get(f"/items/{target}/similar", params={"k": 18}).json()["results"]]
    assert card_ids(browser) == expected
    browser.save_screenshot(str(tmp_path / "2-similar.png"))

    # 3. an item below the threshold: "No confident match" and no cards, until asked for them
    weak = next(i for i in map(str, range(1000, 1072))
                if not api.get(f"/items/{i}/similar", params={"k": 3}).json()["confident"])
    browser.get(f"{server}/#item/{weak}")
    wait_for(browser, lambda d: "No confident match" in d.find_element(By.ID, "search-status").text,
             "the no-confident-match notice")
    assert card_ids(browser) == []
    browser.save_screenshot(str(tmp_path / "3-no-confident-match.png"))
    browser.find_element(By.CSS_SELECTOR, "#search-status button").click()
    wait_for(browser, lambda d: len(card_ids(d)) == 18, "the weak matches")
    assert all("weak" in c.get_attribute("class") for c in browser.find_elements(By.CSS_SELECTOR, "#results .card"))


def test_a_blank_upload_says_why_there_is_no_confident_match(browser, server, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 400), (255, 255, 255)).save(blank)
    browser.get(server + "/")
    wait_for(browser, lambda d: "72 items" in d.find_element(By.ID, "stats").text, "the catalog stats")
    browser.find_element(By.ID, "file-input").send_keys(str(blank))
    wait_for(browser, lambda d: "No confident match" in d.find_element(By.ID, "search-status").text,
             "the no-confident-match notice")
    assert "The picture is blank or almost uniform" in browser.find_element(By.ID, "search-status").text
    assert card_ids(browser) == []
    browser.save_screenshot(str(tmp_path / "blank-upload.png"))


def test_browse_and_compare(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server + "/#browse/Watches")
    wait_for(browser, lambda d: len(card_ids(d, "#browse-grid")) == 12, "the Watches items")
    assert "Watches" in browser.find_element(By.CSS_SELECTOR, "#classes a.active").text
    browser.save_screenshot(str(tmp_path / "4-browse.png"))

    cards = browser.find_elements(By.CSS_SELECTOR, "#browse-grid .card")
    cards[0].find_element(By.CSS_SELECTOR, ".to-compare").click()
    wait_for(browser, lambda d: d.current_url.endswith("#compare"), "the compare view")
    browser.get(server + "/#browse/Handbags")
    wait_for(browser, lambda d: len(card_ids(d, "#browse-grid")) == 12, "the Handbags items")
    browser.find_element(By.CSS_SELECTOR, "#browse-grid .card .to-compare").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "compare-button").is_enabled(), "two items to compare")
    browser.find_element(By.ID, "compare-button").click()
    wait_for(browser, lambda d: "distance" in d.find_element(By.ID, "verdict").text, "the verdict")
    verdict = browser.find_element(By.ID, "verdict").text
    assert "Nice, this looks good together!" in verdict or "Sorry, these styles do not match." in verdict
    browser.save_screenshot(str(tmp_path / "5-compare.png"))


def test_waiting_shows_a_skeleton_and_disables_the_dropzone_then_the_count_applies_to_the_upload(
        browser, server, served, app, tmp_path):
    """Every decoding thread is held busy, so the upload waits: the page shows it is waiting and takes no
    second photo; released, the results come; a new result count re-runs the same upload."""
    import threading

    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    wait_for(browser, lambda d: "72 items" in d.find_element(By.ID, "stats").text, "the catalog stats")
    query_id = confident_upload(server, served)
    lane = app.state.decoder.ordinary
    release = threading.Event()
    held = [lane.submit(release.wait, 30) for _ in range(lane.workers)]
    try:
        browser.find_element(By.ID, "file-input").send_keys(str(served.catalog / "images" / f"{query_id}.png"))
        wait_for(browser, lambda d: "busy" in d.find_element(By.ID, "dropzone").get_attribute("class"),
                 "the busy dropzone")
        assert browser.find_element(By.ID, "file-input").get_attribute("disabled") is not None
        assert "Searching" in browser.find_element(By.ID, "search-status").text
        assert browser.find_element(By.ID, "search-status").get_attribute("aria-live") == "polite"
        assert len(browser.find_elements(By.CSS_SELECTOR, "#results .skeleton")) > 0
        assert browser.find_element(By.ID, "results").get_attribute("aria-busy") == "true"
        browser.save_screenshot(str(tmp_path / "6-waiting.png"))
    finally:
        release.set()
    for future in held:
        future.result(10)
    wait_for(browser, lambda d: card_ids(d) and "busy" not in d.find_element(By.ID, "dropzone").get_attribute("class"),
             "the results after waiting")
    assert not browser.find_elements(By.CSS_SELECTOR, "#results .skeleton")
    first = browser.find_element(By.CSS_SELECTOR, "#results .card")
    assert first.find_element(By.CSS_SELECTOR, ".rank").text == "#1"
    assert first.find_element(By.CSS_SELECTOR, ".score-text").text.startswith(("similarity", "distance"))

    # the result count applies to the upload: 6 asked, 6 shown, without choosing the photo again
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "k")).select_by_visible_text("6")
    wait_for(browser, lambda d: len(card_ids(d)) == 6 and not d.find_elements(By.CSS_SELECTOR, "#results .skeleton"),
             "six results for the same upload")


def test_an_error_is_friendly_with_the_technical_detail_behind_a_toggle(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    not_a_photo = tmp_path / "notes.png"
    not_a_photo.write_text("these are my shopping notes, not a picture\n" * 10)
    browser.get(server + "/")
    wait_for(browser, lambda d: "72 items" in d.find_element(By.ID, "stats").text, "the catalog stats")
    browser.find_element(By.ID, "file-input").send_keys(str(not_a_photo))
    wait_for(browser, lambda d: "error" in d.find_element(By.ID, "search-status").get_attribute("class"),
             "the error")
    status = browser.find_element(By.ID, "search-status")
    assert "doesn't look like a photo" in status.text
    toggle = status.find_element(By.CSS_SELECTOR, "details.technical")
    assert not toggle.find_element(By.TAG_NAME, "code").is_displayed()  # hidden until asked for
    assert "Error" not in status.text and "415" not in status.text
    toggle.find_element(By.TAG_NAME, "summary").click()
    assert "HTTP 415" in toggle.find_element(By.TAG_NAME, "code").text
    browser.save_screenshot(str(tmp_path / "7-error.png"))
    assert browser.find_element(By.ID, "file-input").is_enabled()  # ready for the next photo


def test_the_shopper_sees_no_model_id_or_threshold_and_the_about_view_has_them(browser, server, served, tmp_path):
    import json

    from selenium.webdriver.common.by import By

    config = json.loads((served.index / "index.json").read_text())
    browser.get(server + "/#item/1042")
    wait_for(browser, lambda d: "Searching" not in d.find_element(By.ID, "search-status").text
             and d.find_element(By.ID, "search-status").text, "the item's similar items")
    shopper = browser.find_element(By.TAG_NAME, "body").text
    assert config["model_id"] not in shopper and "threshold" not in shopper.lower()
    assert all(img.get_attribute("alt") for img in browser.find_elements(By.CSS_SELECTOR, "img:not([hidden])"))
    assert browser.find_elements(By.CSS_SELECTOR, "h1") and browser.find_element(By.ID, "search-heading")
    browser.get(server + "/#about")
    wait_for(browser, lambda d: config["model_id"] in d.find_element(By.ID, "about-list").text, "the about view")
    assert "threshold" in browser.find_element(By.ID, "about-list").text.lower()
    browser.save_screenshot(str(tmp_path / "8-about.png"))


def test_on_a_narrow_screen_browse_folds_its_class_list_away(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    browser.set_window_size(400, 900)
    try:
        browser.get(server + "/#browse/Watches")
        wait_for(browser, lambda d: len(card_ids(d, "#browse-grid")) == 12, "the Watches items")
        box = browser.find_element(By.ID, "classes-box")
        assert box.get_attribute("open") is None and "Watches" in box.text
        grid_top = browser.find_element(By.ID, "browse-grid").rect["y"]
        assert grid_top < 400, f"the grid starts {grid_top:.0f} px down"
        assert browser.execute_script("return document.documentElement.scrollWidth") <= 400  # no sideways scroll
        browser.save_screenshot(str(tmp_path / "9-narrow-browse.png"))
        box.find_element(By.TAG_NAME, "summary").click()
        wait_for(browser, lambda d: d.find_element(By.ID, "class-filter").is_displayed(), "the opened class list")
        label = browser.find_element(By.CSS_SELECTOR, "label[for=class-filter]")
        assert label.text == "Filter article types"
        browser.save_screenshot(str(tmp_path / "10-narrow-classes-open.png"))
    finally:
        browser.set_window_size(1280, 900)


def test_type_words_and_see_their_items(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server + "/")
    wait_for(browser, lambda d: d.find_element(By.ID, "text-form").is_displayed(), "the search box")
    box = browser.find_element(By.ID, "text-input")
    box.send_keys("watches for women", Keys.ENTER)
    wait_for(browser, lambda d: d.current_url.endswith("#text/watches%20for%20women") and len(card_ids(d)) == 18,
             "the items for the words")
    with httpx.Client(base_url=server) as api:
        expected = api.post("/search/text", json={"text": "watches for women", "k": 18}).json()
    assert expected["confident"] and card_ids(browser) == [hit["id"] for hit in expected["results"]]
    labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .card .label")]
    assert labels.count("Watches") >= 10, labels
    assert "items for" in browser.find_element(By.ID, "search-status").text
    browser.save_screenshot(str(tmp_path / "6-words.png"))

    box = browser.find_element(By.ID, "text-input")
    box.clear()
    box.send_keys("qqxzv wbbkj", Keys.ENTER)
    wait_for(browser, lambda d: "No confident match" in d.find_element(By.ID, "search-status").text,
             "the no-confident-match notice for unknown words")
    assert "No word of the query is known" in browser.find_element(By.ID, "search-status").text
    assert card_ids(browser) == []
    browser.save_screenshot(str(tmp_path / "7-unknown-words.png"))
