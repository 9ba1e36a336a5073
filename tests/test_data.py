"""Catalog readers, malformed input, the image cache and splits, on small generated files."""
from __future__ import annotations

import csv
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_idx, write_idx_catalog, write_kaggle_catalog
from stylespace.data import (
    CatalogError,
    ImageDecodeError,
    SplitManifest,
    column_split,
    load_catalog,
    load_image_array,
    load_rgb,
    parse_column_map,
    parse_merge,
    protocol_split,
    stratified_split,
)
from stylespace.utils import StylespaceError


def test_kaggle_folder_loads_with_metadata(small_catalog):
    catalog = load_catalog(small_catalog)
    assert catalog.kind == "kaggle" and len(catalog) == 72
    assert catalog.label_column == "articleType"
    assert set(catalog.class_counts().values()) == {12}
    assert {"gender", "subCategory", "masterCategory", "productDisplayName"} <= set(catalog.metadata_columns)
    assert catalog.summary_line() == "72 items loaded"
    assert catalog.read_image(catalog.ids[0]).mode == "RGB"


def _append_rows(styles: Path, rows: list[str]) -> None:
    with styles.open("a") as handle:
        for row in rows:
            handle.write(row + "\n")


def test_kaggle_malformed_rows_are_kept_or_reported(small_catalog):
    images = small_catalog / "images"
    # Unquoted comma in the product name -> 11 fields: the name is joined back, the row kept.
    Image.new("RGB", (60, 80), (10, 200, 10)).save(images / "5001.png")
    # A row whose image is missing, a short row, a zero-byte image, an empty label.
    (images / "5003.jpg").write_bytes(b"")
    Image.new("RGB", (60, 80)).save(images / "5004.png")
    _append_rows(small_catalog / "styles.csv", [
        "5001,Men,Apparel,Topwear,Tshirts,Green,Summer,2012,Casual,Nike Men, Green Tshirt",
        "5002,Men,Apparel,Topwear,Tshirts,Green,Summer,2012,Casual,No image for me",
        "5005,Men,Apparel",
        "5003,Men,Apparel,Topwear,Tshirts,Green,Summer,2012,Casual,Zero bytes",
        "5004,Men,Apparel,Topwear,,Green,Summer,2012,Casual,No label",
    ])
    catalog = load_catalog(small_catalog)
    item = catalog["5001"]
    assert item.meta["productDisplayName"] == "Nike Men, Green Tshirt"
    assert item.meta["season"] == "Summer" and item.label == "Tshirts"
    reasons = catalog.skip_reasons()
    assert reasons == {"row without image": 1, "row with 3 of 10 fields": 1, "zero-byte image": 1,
                       "row without articleType": 1}
    assert catalog.summary_line().startswith("73 items loaded, ")
    assert "1 row without image skipped" in catalog.summary_line()


def test_odd_image_modes_and_broken_files(small_catalog, cache_dir):
    images = small_catalog / "images"
    Image.new("RGBA", (60, 80), (255, 0, 0, 0)).save(images / "6001.png")  # fully transparent -> white
    Image.new("L", (60, 80), 128).save(images / "6002.png")
    Image.new("CMYK", (60, 80), (0, 255, 255, 0)).save(images / "6003.jpg")
    Image.new("P", (30, 80), 3).save(images / "6004.gif")  # narrower: padded, not stretched
    good = (images / "1000.png").read_bytes()
    (images / "6005.png").write_bytes(good[: len(good) // 3])  # truncated
    (images / "6006.webp").write_bytes(b"this is not an image")
    rows = [f"{i},Men,Apparel,Topwear,Tshirts,Red,Summer,2012,Casual,Odd {i}" for i in range(6001, 6007)]
    _append_rows(small_catalog / "styles.csv", rows)
    catalog = load_catalog(small_catalog)
    assert len(catalog) == 78
    array = load_image_array(catalog, size=(40, 30), progress=False)
    assert set(array.failed) == {"6005", "6006"}
    assert all(r == "image that fails to decode" for r in array.failed.values())
    assert len(array) == 76 and array.pixels.shape == (76, 40, 30, 3) and array.pixels.dtype == np.uint8
    assert array.take(["6001"])[0].min() == 255  # transparency became white
    grey = array.take(["6002"])[0]
    assert np.all(grey == grey[..., :1])
    red = array.take(["6003"])[0].reshape(-1, 3).mean(0)
    assert red[0] > 200 and red[1] < 80
    verified = catalog.without(array.failed)
    assert len(verified) == 76 and verified.skip_reasons()["image that fails to decode"] == 2


def test_load_rgb_pads_to_aspect_and_handles_large_images():
    wide = Image.new("RGB", (200, 50), (0, 0, 0))
    out = load_rgb(wide, size=(80, 60))
    assert out.shape == (80, 60, 3)
    assert out[0, 30].tolist() == [255, 255, 255] and out[40, 30].tolist() == [0, 0, 0]
    big = Image.new("RGB", (1800, 2400), (10, 20, 30))
    assert load_rgb(big, size=(80, 60))[40, 30].tolist() == [10, 20, 30]
    with pytest.raises(ImageDecodeError, match="zero bytes"):
        load_rgb(b"")


def test_a_large_jpeg_decoded_at_reduced_scale_matches_a_full_decode():
    import io

    from stylespace.data.images import fit_to_size

    rng = np.random.default_rng(0)
    # Smooth content (a product photo, not noise): blocks of colour upscaled to 1800 x 2400.
    blocks = Image.fromarray(rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)).resize((1800, 2400), Image.BILINEAR)
    buffer = io.BytesIO()
    blocks.save(buffer, format="JPEG", quality=90)
    fast = load_rgb(buffer.getvalue(), size=(80, 60)).astype(int)
    full = fit_to_size(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), (80, 60)).astype(int)
    assert np.abs(fast - full).mean() < 2.0


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (10000, 10000)).save(path)  # 100 Mpx, tiny file
    with pytest.raises(ImageDecodeError, match="bomb|limit"):
        load_rgb(path)


def test_zip_in_place_equals_folder(small_catalog, tmp_path):
    archive = tmp_path / "catalog.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for file in sorted(small_catalog.rglob("*")):
            if file.is_file():
                z.write(file, "fashion-product-images-small/" + file.relative_to(small_catalog).as_posix())
    from_zip, from_folder = load_catalog(archive), load_catalog(small_catalog)
    assert from_zip.kind == "kaggle" and from_zip.ids == from_folder.ids
    assert from_zip.labels == from_folder.labels
    a = load_image_array(from_zip, size=(40, 30), progress=False, workers=2)
    b = load_image_array(from_folder, size=(40, 30), progress=False)
    assert np.array_equal(np.asarray(a.pixels), np.asarray(b.pixels))


def test_image_folder_tree_and_manifest(tmp_path):
    root = tmp_path / "tree"
    for cls, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), colour).save(root / cls / f"{i}.jpg")
    (root / "red" / "notes.txt").write_text("not an image")
    (root / "blue" / "empty.png").write_bytes(b"")
    catalog = load_catalog(root)
    assert catalog.kind == "folder" and len(catalog) == 6
    assert catalog.class_counts() == {"red": 3, "blue": 3}
    assert catalog.skip_reasons() == {"file that is not an image": 1, "zero-byte image": 1}

    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "brand"])
        writer.writerow(["tree/red/0.jpg", "red", "acme"])
        writer.writerow(["tree/blue/1.jpg", "blue", "zeta"])
        writer.writerow(["tree/missing.jpg", "blue", "zeta"])
    catalog = load_catalog(manifest)
    assert catalog.kind == "manifest" and catalog.ids == ["tree/red/0.jpg", "tree/blue/1.jpg"]
    assert catalog["tree/red/0.jpg"].meta["brand"] == "acme"
    assert catalog.skip_reasons() == {"row whose image file is missing": 1}


def test_pairs_csv_in_both_formats(tmp_path):
    for name in ("a", "b", "c"):
        Image.new("RGB", (20, 20)).save(tmp_path / f"{name}.png")
    (tmp_path / "pairs.csv").write_text("image_a,image_b,label\na.png,b.png,1\nb.png,c.png,0\na.png,gone.png,1\n")
    catalog = load_catalog(tmp_path / "pairs.csv")
    assert catalog.kind == "pairs" and catalog.pairs == [("a.png", "b.png", 1), ("b.png", "c.png", 0)]
    assert len(catalog) == 3 and catalog.skip_reasons() == {"pair whose image is missing": 1}
    (tmp_path / "compat.csv").write_text("pic1,pic2,score\na.png,c.png,1.0\n")
    assert load_catalog(tmp_path / "compat.csv").pairs == [("a.png", "c.png", 1)]


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder(tmp_path, gz):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 255, (20, 28, 28)), gz)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(20) % 10, gz)
    catalog = load_catalog(tmp_path)
    assert catalog.kind == "idx" and len(catalog) == 20
    assert catalog["train-00003"].label == "Dress"
    array = load_image_array(catalog, size=(28, 28), progress=False, cache_dir=tmp_path / "c")
    assert array.pixels.shape == (20, 28, 28, 3)


def test_not_a_catalog_names_the_file(tmp_path):
    bad = tmp_path / "notes.csv"
    bad.write_text("foo,bar\n1,2\n")
    with pytest.raises(CatalogError, match="notes.csv.*expected"):
        load_catalog(bad)
    with pytest.raises(CatalogError, match="no such file"):
        load_catalog(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CatalogError, match="empty.*no catalog"):
        load_catalog(empty)
    with pytest.raises(CatalogError, match="styles.csv"):
        load_catalog(tmp_path / "notes.csv", kind="kaggle")


def test_cache_is_reused_and_rebuilt_when_source_changes(small_catalog, cache_dir):
    catalog = load_catalog(small_catalog)
    first = load_image_array(catalog, size=(40, 30), progress=False)
    again = load_image_array(catalog, size=(40, 30), progress=False)
    assert first.folder == again.folder and again.build_seconds == 0.0
    Image.new("RGB", (60, 80), (0, 0, 0)).save(small_catalog / "images" / "7000.png")
    _append_rows(small_catalog / "styles.csv", ["7000,Men,Apparel,Topwear,Tshirts,Black,Summer,2012,Casual,New"])
    changed = load_catalog(small_catalog)
    rebuilt = load_image_array(changed, size=(40, 30), progress=False)
    assert rebuilt.folder != first.folder and len(rebuilt) == 73
    # No temporary folders are left behind next to the caches.
    assert not [p for p in (cache_dir / "images").iterdir() if p.name.startswith(".")]


def test_cache_build_failure_leaves_no_partial_cache(small_catalog, cache_dir, monkeypatch):
    import stylespace.data.cache as cache

    catalog = load_catalog(small_catalog)

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cache, "_decode_chunk", boom)
    with pytest.raises(RuntimeError):
        load_image_array(catalog, size=(40, 30), progress=False)
    images = cache_dir / "images"
    assert not images.exists() or not list(images.iterdir())


def test_protocol_split_is_stratified_and_deterministic(small_catalog, tmp_path):
    catalog = load_catalog(small_catalog)
    manifest = protocol_split(catalog, n_main=4, n_new=2, main_fractions=(0.5, 0.25, 0.25), seed=3)
    again = protocol_split(catalog, n_main=4, n_new=2, main_fractions=(0.5, 0.25, 0.25), seed=3)
    other = protocol_split(catalog, n_main=4, n_new=2, main_fractions=(0.5, 0.25, 0.25), seed=4)
    assert manifest.sha256 == again.sha256 != other.sha256
    assert manifest.totals() == {"main/train": 24, "main/support": 12, "main/test": 12,
                                 "new/support": 12, "new/test": 12}
    assert all(c == {"main/train": 6, "main/support": 3, "main/test": 3} for label, c in manifest.counts().items()
               if label in manifest.config.main_classes)
    path = manifest.save(tmp_path / "split.csv")
    loaded = SplitManifest.load(path)
    assert loaded.sha256 == manifest.sha256 and loaded.config.main_classes == manifest.config.main_classes
    support, query = loaded.scenario(4)
    assert len(support) == 24 and len(query) == 24
    assert loaded.hierarchy("subCategory")["Tshirts"] == "Topwear"
    assert loaded.hierarchy("masterCategory")["Casual Shoes"] == "Footwear"


def test_stratified_split_merge_and_errors(small_catalog):
    catalog = load_catalog(small_catalog)
    merge = parse_merge("Shirts=Tops,Tshirts=Tops")
    manifest = stratified_split(catalog, {"train": 0.5, "val": 0.25, "test": 0.25}, merge=merge)
    counts = manifest.counts()
    assert "Shirts" not in counts and counts["Tops"] == {"all/train": 12, "all/val": 6, "all/test": 6}
    with pytest.raises(StylespaceError, match="summing to 1"):
        stratified_split(catalog, {"train": 0.5, "test": 0.2})
    with pytest.raises(StylespaceError, match="OLD=NEW"):
        parse_merge("Shirts")
    with pytest.raises(StylespaceError, match="classes"):
        protocol_split(catalog, n_main=39, n_new=30)


@pytest.mark.integration
def test_shared_zip_in_place(shared_zip):
    catalog = load_catalog(shared_zip)
    assert len(catalog) == 44441
    assert catalog.skip_reasons() == {"row without image": 5}
    assert catalog.summary_line() == "44,441 items loaded, 5 rows without image skipped"
    manifest = protocol_split(catalog)
    totals = manifest.totals()
    assert len(manifest.config.main_classes) == 39 and len(manifest.config.new_classes) == 30
    assert abs(totals["main/train"] - 35950) < 20 and abs(totals["main/test"] - 1994) < 10
    assert abs(totals["new/support"] - 1673) < 20 and abs(totals["new/test"] - 1687) < 20
    assert sum(totals.values()) == 43298


@pytest.mark.integration
def test_fashion_mnist_debian_files(fashion_mnist, tmp_path):
    catalog = load_catalog(fashion_mnist)
    assert catalog.kind == "idx" and len(catalog) == 70000
    assert len(catalog.class_counts()) == 10
    assert sum(1 for i in catalog.items if i.meta["subset"] == "test") == 10000
    assert catalog.read_image("test-00000").size == (28, 28)


def test_column_split_keeps_the_official_subsets(tmp_path):
    catalog = load_catalog(write_idx_catalog(tmp_path / "fm", np.arange(40) % 10, np.arange(20) % 10))
    manifest = column_split(catalog, "subset", val_fraction=0.25, seed=1)
    assert manifest.totals() == {"all/train": 30, "all/val": 10, "all/test": 20}
    assert all(c == {"all/train": 3, "all/val": 1, "all/test": 2} for c in manifest.counts().values())
    # the official test items stay test, validation comes out of the official train items only
    assert {r["id"] for r in manifest.rows if r["split"] == "test"} == {f"test-{i:05d}" for i in range(20)}
    assert all(r["id"].startswith("train-") for r in manifest.rows if r["split"] == "val")
    assert column_split(catalog, "subset", val_fraction=0.25, seed=1).sha256 == manifest.sha256
    assert column_split(catalog, "subset", val_fraction=0.25, seed=2).sha256 != manifest.sha256
    loaded = SplitManifest.load(manifest.save(tmp_path / "split.csv"))
    assert loaded.sha256 == manifest.sha256
    assert (loaded.config.method, loaded.config.column, loaded.config.val_fraction) == ("column", "subset", 0.25)
    assert len(loaded.config.main_classes) == 10
    assert column_split(catalog, "subset", val_fraction=0).totals() == {"all/train": 40, "all/test": 20}


def test_column_split_errors(tmp_path, small_catalog):
    catalog = load_catalog(small_catalog)
    with pytest.raises(StylespaceError, match="no column 'colour'.*gender"):
        column_split(catalog, "colour")
    # a store's year: the values are not train / test; the message says what it found and what it expects
    with pytest.raises(StylespaceError, match=r"'2012': 72\).*expected train / test.*--map 2012=test"):
        column_split(catalog, "year")
    with pytest.raises(StylespaceError, match="no item .* falls in test"):
        column_split(catalog, "year", mapping={"2012": "train"})
    with pytest.raises(StylespaceError, match="must map to one of train, val, test, skip"):
        column_split(catalog, "year", mapping={"2012": "holdout"})
    # a class present on one side only
    fm = load_catalog(write_idx_catalog(tmp_path / "fm", np.arange(40) % 10, np.arange(18) % 9))
    with pytest.raises(StylespaceError, match=r"1 class\(es\) are on one side.*Ankle boot \(train only: 4\).*--drop-unshared"):
        column_split(fm, "subset")
    kept = column_split(fm, "subset", drop_unshared=True, val_fraction=0)
    assert "Ankle boot" not in kept.counts() and kept.totals() == {"all/train": 36, "all/test": 18}


def test_column_split_maps_values(small_catalog):
    catalog = load_catalog(small_catalog)
    mapping = parse_column_map("Women=test, *=train")
    assert mapping == {"Women": "test", "*": "train"}
    manifest = column_split(catalog, "gender", val_fraction=0.0, mapping=mapping)
    women = {item.id for item in catalog.items if item.meta["gender"] == "Women"}
    assert {r["id"] for r in manifest.rows if r["split"] == "test"} == women
    assert manifest.config.column_map == mapping
    with pytest.raises(StylespaceError, match="no item .* falls in train"):
        column_split(catalog, "gender", mapping={"Women": "test", "Men": "skip"})
    with pytest.raises(StylespaceError, match="VALUE=PART"):
        parse_column_map("Women")
