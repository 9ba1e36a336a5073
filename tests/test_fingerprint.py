"""The catalog's content fingerprint: the same wherever a catalog lies (a copy, a move, its zip unpacked), changed
by a changed image, and old path-based records still recognised on the machine that wrote them."""
from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylespace.data import load_catalog, load_image_array
from tests.conftest import ROOT


def _zip_folder(folder: Path, target: Path, prefix: str = "fashion-product-images-small/") -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return target


def test_a_copied_catalog_has_the_same_fingerprint_and_a_changed_image_does_not(small_catalog, tmp_path):
    original = load_catalog(small_catalog)
    copy = shutil.copytree(small_catalog, tmp_path / "elsewhere" / "copy")
    os.utime(copy / "styles.csv", (time.time() + 3600, time.time() + 3600))  # a later time: not part of it
    assert load_catalog(copy).fingerprint() == original.fingerprint()
    assert load_catalog(copy).path_fingerprint() != original.path_fingerprint()  # the old one hashed the path

    first = sorted((copy / "images").iterdir())[0]
    pixels = np.asarray(Image.open(first).convert("RGB")).copy()
    pixels[0, 0] = 255 - pixels[0, 0]  # one pixel: the file keeps its name (and most likely its size)
    Image.fromarray(pixels).save(first)
    assert load_catalog(copy).fingerprint() != original.fingerprint()


def test_a_zip_and_its_unpacked_folder_and_a_moved_zip_agree(small_catalog, tmp_path):
    folder = load_catalog(small_catalog)
    archive = _zip_folder(small_catalog, tmp_path / "catalog.zip")
    zipped = load_catalog(archive)
    assert len(zipped) == len(folder) and zipped.fingerprint() == folder.fingerprint()
    moved = tmp_path / "other" / "renamed.zip"
    moved.parent.mkdir()
    shutil.copy(archive, moved)
    os.utime(moved, (1, 1))
    assert load_catalog(moved).fingerprint() == zipped.fingerprint()


def test_what_the_items_are_is_part_of_it(small_catalog):
    catalog = load_catalog(small_catalog)
    assert catalog.subset(catalog.ids[:-1]).fingerprint() != catalog.fingerprint()
    text = (small_catalog / "styles.csv").read_text()
    (small_catalog / "styles.csv").write_text(text.replace(",Tshirts,", ",Tops,", 1))  # one label changed
    assert load_catalog(small_catalog).fingerprint() != catalog.fingerprint()


def test_old_records_are_still_recognised(small_catalog):
    catalog = load_catalog(small_catalog)
    assert catalog.matches_fingerprint(catalog.fingerprint())
    assert catalog.matches_fingerprint("0123456789abcdef", catalog.path_fingerprint())  # an old record
    assert not catalog.matches_fingerprint("0123456789abcdef", None)
    assert not catalog.matches_fingerprint(None, "")


def test_the_image_cache_is_reused_after_the_catalog_moves(small_catalog, tmp_path, cache_dir):
    first = load_image_array(load_catalog(small_catalog), size=(40, 30), progress=False)
    moved = shutil.move(str(small_catalog), str(tmp_path / "moved"))
    again = load_image_array(load_catalog(moved), size=(40, 30), progress=False)
    assert again.folder == first.folder and again.build_seconds == 0.0


def test_the_shipped_models_name_the_shared_catalog_by_content():
    """The shipped models record the shared catalog's content fingerprint, which the demo compares to decide
    that the shipped model was trained on it; an older model keeps its old path fingerprint beside it."""
    records = {name: json.loads((ROOT / "models" / name / "run.json").read_text())
               for name in ("default", "fast", "compact", "packshot")}
    compat = json.loads((ROOT / "models" / "compat" / "evaluation.json").read_text())
    assert {r["catalog_fingerprint"] for r in records.values()} == {compat["catalog_fingerprint"]}
    assert records["compact"]["catalog_path_fingerprint"] == "f0294e85dc36cdaa"


@pytest.mark.integration
def test_the_shared_catalog_is_the_one_the_shipped_model_was_trained_on(shared_zip, tmp_path):
    run = json.loads((ROOT / "models" / "default" / "run.json").read_text())
    catalog = load_catalog(shared_zip)
    assert catalog.fingerprint() == run["catalog_fingerprint"]
    linked = tmp_path / "somewhere" / "fashion-product-images-small.zip"
    linked.parent.mkdir()
    os.symlink(shared_zip.resolve(), linked)
    assert load_catalog(linked).matches_fingerprint(run["catalog_fingerprint"], run.get("catalog_path_fingerprint"))
