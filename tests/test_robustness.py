"""The robustness measurement: distorted catalog photos searched against the index (on a generated catalog)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from stylespace.data.distortions import DISTORTIONS
from stylespace.index.robustness import (RobustnessConfig, markdown_table, measure_photos, measure_robustness,
                                         pixel_copies, read_photo_list, sample_items)
from stylespace.utils import StylespaceError
from conftest import compact_index, plant_item, write_patterned_catalog


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("robustness")
    catalog_dir = write_patterned_catalog(root / "catalog", per_class=8)
    # a pixel-identical copy under another id: the same product for the search
    plant_item(catalog_dir, 5000, "Shirts", (catalog_dir / "images" / "1000.png").read_bytes())
    catalog, model, index = compact_index(root, catalog_dir)
    return root, catalog, model, index


def test_every_distortion_is_measured_with_shares_in_range(setup, monkeypatch):
    root, catalog, model, index = setup
    monkeypatch.setenv("STYLESPACE_CACHE", str(root / "cache"))
    report = measure_robustness(model, catalog, index, RobustnessConfig(items=20, seed=1))
    assert [r.name for r in report.rows] == list(DISTORTIONS)
    for row in report.rows:
        assert row.queries == 20 and row.description
        assert 0 <= row.r1_id <= row.r1 <= row.r10 <= 1 and 0 <= row.type_p1 <= 1
    unchanged = report.row("none")
    assert unchanged.r1 >= 0.7  # its own packshot re-encoded as JPEG mostly finds the product, even untrained
    assert report.row("second_item").r1 < unchanged.r1  # distortions do cost something here
    again = measure_robustness(model, catalog, index, RobustnessConfig(items=20, seed=1, distortions=("mirror",)))
    assert again.row("mirror") == report.row("mirror")  # seeded: the same figures
    table = markdown_table([("a", report), ("b", report)])
    assert table.count("\n") == len(DISTORTIONS) + 1 and "| none: " in table


def test_a_pixel_identical_copy_is_the_same_product(setup, monkeypatch):
    root, catalog, model, index = setup
    monkeypatch.setenv("STYLESPACE_CACHE", str(root / "cache"))
    groups = pixel_copies(catalog, index, tuple(model.config.input_size))
    keys = dict(zip(index.ids, index.keys_of(index.ids)))
    assert groups[keys["1000"]] == groups[keys["5000"]]
    others = [groups[keys[i]] for i in index.ids if i not in ("1000", "5000")]
    assert len(set(others)) == len(others) and groups[keys["1000"]] not in others


def test_bad_settings_are_clear_errors():
    with pytest.raises(StylespaceError, match="unknown"):
        RobustnessConfig(distortions=("sepia",)).validate()
    with pytest.raises(StylespaceError, match="items"):
        RobustnessConfig(items=0).validate()


def test_cli_prints_one_json_document(setup):
    root, _, _, _ = setup
    result = subprocess.run([sys.executable, "-m", "stylespace", "robustness", str(root / "model"),
                             str(root / "catalog"), "--index", str(root / "index"), "--items", "6",
                             "--distortions", "none,mirror,phone_exif", "--json"],
                            capture_output=True, text=True, env={**__import__("os").environ,
                                                                 "STYLESPACE_CACHE": str(root / "cache")})
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [r["name"] for r in document["rows"]] == ["none", "mirror", "phone_exif"]
    assert document["rows"][2]["r1"] == pytest.approx(document["rows"][0]["r1"], abs=0.34)  # EXIF turned upright


# --- a shop's own photos of known products (--photos) ---------------------------------------------------------


def write_photos(folder, catalog, ids, kind):
    """Photos of items ``ids`` made from their packshots by the (deterministic) distortion ``kind``, written to
    ``folder``: the ``(path, item id)`` pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for item_id in ids:
        path = folder / f"{kind}-{item_id}.jpg"
        path.write_bytes(DISTORTIONS[kind].apply(catalog.read_image(item_id), None, None))
        pairs.append((path, item_id))
    return pairs


@pytest.mark.parametrize("kind, views", [("none", "none"), ("mirror", "none"), ("pad_grey", "none"),
                                         ("phone_exif", "none"), ("mirror", "mirror")])
def test_own_photos_go_through_the_query_path_of_the_synthetic_distortions(setup, monkeypatch, tmp_path, kind, views):
    """Photos made as the synthetic distortions make them (re-saved as JPEG, mirrored, padded, sideways with EXIF)
    give the very figures of those distortions on the same items, query views included."""
    root, catalog, model, index = setup
    monkeypatch.setenv("STYLESPACE_CACHE", str(root / "cache"))
    ids = sample_items(index, 12, seed=1)
    synthetic = measure_robustness(model, catalog, index, RobustnessConfig(items=12, seed=1, distortions=(kind,),
                                                                           query_views=views)).row(kind)
    report = measure_photos(model, catalog, index, write_photos(tmp_path, catalog, ids, kind),
                            RobustnessConfig(query_views=views))
    assert report.photos == report.measured == 12 and not report.failed and not report.unknown
    assert (report.r1, report.r10, report.r1_id, report.type_p1, report.views_per_query) == pytest.approx(
        (synthetic.r1, synthetic.r10, synthetic.r1_id, synthetic.type_p1, synthetic.views_per_query))
    assert report.views_per_query == (2.0 if views == "mirror" else 1.0)
    assert len(report.misses) == round(12 * (1 - report.r10))
    assert all(m.found != m.item_id and m.found in index for m in report.misses)
    if kind == "none":
        assert report.r1 >= 0.7  # its own packshot re-saved as JPEG mostly finds the product, as the synthetic test says


def test_a_photo_of_a_pixel_identical_copy_finds_the_product(setup, monkeypatch):
    root, catalog, model, index = setup
    monkeypatch.setenv("STYLESPACE_CACHE", str(root / "cache"))
    packshot = (root / "catalog" / "images" / "1000.png").read_bytes()
    report = measure_photos(model, catalog, index, [(packshot, "5000"), (packshot, "1000")])
    assert report.r1 == 1.0 and report.r1_id == 0.5  # the same vector twice: one of the two ids is first
    assert report.typed == 2 and not report.misses


def test_bad_photos_are_counted_with_their_reasons_and_unknown_items_left_out(setup, monkeypatch, tmp_path):
    root, catalog, model, index = setup
    monkeypatch.setenv("STYLESPACE_CACHE", str(root / "cache"))
    good = write_photos(tmp_path / "shop", catalog, ["1001", "1002"], "none")
    (tmp_path / "shop" / "notes.jpg").write_text("not a photo at all")
    big = Image.new("RGB", (2100, 2000), (250, 250, 250))  # 4.2 Mpx: over what the service decodes of an upload
    big.save(tmp_path / "shop" / "big.png")
    (tmp_path / "photos.csv").write_text(
        "source,path,item_id\n"
        f"shop,{good[0][0].relative_to(tmp_path)},1001\n"
        f"shop,{good[1][0]},1002\n"  # an absolute path
        "shop,shop/gone.jpg,1003\n"
        "shop,shop/notes.jpg,1004\n"
        "shop,shop/big.png,1005\n"
        f"shop,{good[0][0].relative_to(tmp_path)},99999\n")
    photos = read_photo_list(tmp_path / "photos.csv")
    assert photos[0] == (tmp_path / good[0][0].relative_to(tmp_path), "1001") and photos[1] == good[1]
    report = measure_photos(model, catalog, index, photos)
    assert (report.photos, report.measured) == (6, 2)
    reasons = {f.path.rsplit("/", 1)[-1]: (f.item_id, f.reason) for f in report.failed}
    assert reasons.keys() == {"gone.jpg", "notes.jpg", "big.png"}
    assert reasons["gone.jpg"] == ("1003", "no such file")
    assert "not an image" in reasons["notes.jpg"][1]
    assert "4 Mpx limit" in reasons["big.png"][1]
    assert report.unknown_items == ["99999"] and len(report.unknown) == 1
    document = json.loads(json.dumps(report.to_dict(listed=2)))
    assert (document["failed"], len(document["failures"]), document["unknown_photos"]) == (3, 2, 1)
    assert document["unknown_items"] == ["99999"] and document["measured"] == 2

    data = good[0][0].read_bytes()  # the same photo with 1,000 bytes of trailing junk: over a limit it was under
    capped = measure_photos(model, catalog, index, [(data, "1001"), (data + bytes(1000), "1001")],
                            max_bytes=len(data) + 10)
    assert capped.measured == 1 and [(f.path, f.item_id) for f in capped.failed] == [("photo 2 (bytes)", "1001")]
    assert f"{len(data) + 10:,} byte limit" in capped.failed[0].reason


def test_photos_that_all_fail_are_an_error(setup, monkeypatch, tmp_path):
    root, catalog, model, index = setup
    monkeypatch.setenv("STYLESPACE_CACHE", str(root / "cache"))
    with pytest.raises(StylespaceError, match=r"none of the 2 photos.*gone.jpg: no such file.*'nope'"):
        measure_photos(model, catalog, index, [(tmp_path / "gone.jpg", "1000"), (tmp_path / "x.jpg", "nope")])
    with pytest.raises(StylespaceError, match="no photos"):
        measure_photos(model, catalog, index, [])


@pytest.mark.parametrize("text, message", [
    (None, "no such photo list"),
    ("", "an empty file"),
    ("file,item_id\na.jpg,1\n", "no 'path' column"),
    ("path,sku\na.jpg,1\n", "no 'item_id' column"),
    ("path,item_id\n", "no photo rows"),
    ("path,item_id\na.jpg,1\nb.jpg,\n", "line 3: no item_id"),
])
def test_a_bad_photo_list_is_refused_naming_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "photos.csv"
    if text is not None:
        path.write_text(text)
    with pytest.raises(StylespaceError, match=message) as caught:
        read_photo_list(path)
    assert str(path) in str(caught.value)


def test_cli_photos_prints_one_json_document_and_refuses_synthetic_options(setup, tmp_path):
    root, catalog, _, index = setup
    write_photos(tmp_path, catalog, ["1000", "1001"], "mirror")
    (tmp_path / "photos.csv").write_text("path,item_id\nmirror-1000.jpg,1000\nmirror-1001.jpg,1001\n"
                                         "gone.jpg,1002\nmirror-1000.jpg,nope\n")
    env = {**os.environ, "STYLESPACE_CACHE": str(root / "cache")}
    command = [sys.executable, "-m", "stylespace", "robustness", str(root / "model"), str(root / "catalog"),
               "--index", str(root / "index"), "--photos", str(tmp_path / "photos.csv")]
    result = subprocess.run([*command, "--json", "-o", str(tmp_path / "out.json")], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["photos"], document["measured"], document["failed"]) == (4, 2, 1)
    assert document["unknown_items"] == ["nope"] and document["failures"][0]["reason"] == "no such file"
    assert "rows" not in document and document["photo_list"] == str(tmp_path / "photos.csv")
    assert json.loads((tmp_path / "out.json").read_text()) == document
    refused = subprocess.run([*command, "--items", "5"], capture_output=True, text=True, env=env)
    assert refused.returncode != 0 and "--items" in refused.stderr and "Traceback" not in refused.stderr
