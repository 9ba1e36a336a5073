"""Shared fixtures: small generated catalogs (fast unit tests) and the real shared catalog (integration)."""
from __future__ import annotations

import csv
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
SHARED_ZIP = ROOT.parent / "shared" / "datasets" / "fashion-product-images-small.zip"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# Small synthetic "article types": a shape and a colour each, with Kaggle-like coarser levels.
SYNTH_CLASSES = [
    # label, shape, colour, subCategory, masterCategory
    ("Tshirts", "square", (200, 40, 40), "Topwear", "Apparel"),
    ("Shirts", "square", (40, 40, 200), "Topwear", "Apparel"),
    ("Jeans", "bar", (30, 60, 160), "Bottomwear", "Apparel"),
    ("Watches", "circle", (90, 90, 90), "Watches", "Accessories"),
    ("Casual Shoes", "triangle", (120, 70, 20), "Shoes", "Footwear"),
    ("Handbags", "circle", (200, 160, 40), "Bags", "Accessories"),
]


def synth_image(shape: str, colour: tuple[int, int, int], rng: np.random.Generator, size=(60, 80)) -> Image.Image:
    """A white product photo with one coloured shape, jittered in position, size and shade."""
    w, h = size
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    cx, cy = w / 2 + rng.uniform(-5, 5), h / 2 + rng.uniform(-5, 5)
    r = rng.uniform(14, 22)
    shade = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in colour)
    if shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=shade)
    elif shape == "bar":
        draw.rectangle([cx - r / 2, cy - r * 1.6, cx + r / 2, cy + r * 1.6], fill=shade)
    elif shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=shade)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=shade)
    return image


def write_kaggle_catalog(root: Path, per_class: int = 12, classes=SYNTH_CLASSES, seed: int = 0,
                         ext: str = ".png", make_image=synth_image) -> Path:
    """A Kaggle-layout folder (styles.csv + images/<id><ext>) of synthetic products, each drawn by
    ``make_image(shape, colour, rng)``; returns the folder."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    header = ["id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "year",
              "usage", "productDisplayName"]
    rows = []
    next_id = 1000
    for label, shape, colour, sub, master in classes:
        for j in range(per_class):
            make_image(shape, colour, rng).save(root / "images" / f"{next_id}{ext}")
            gender = "Men" if j % 2 else "Women"
            rows.append([next_id, gender, master, sub, label, "Red", "Summer", 2012, "Casual",
                         f"Brand {gender} {label} {j}"])
            next_id += 1
    with (root / "styles.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return root


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """One IDX file (Fashion-MNIST's format) holding ``array`` as uint8, gzipped as ``<path>.gz`` when ``gz``."""
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def write_idx_catalog(folder: Path, train_labels: np.ndarray, test_labels: np.ndarray) -> Path:
    """A Fashion-MNIST-like folder (train and t10k IDX pairs, gzipped) of 28 x 28 noise images."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, labels in (("train", train_labels), ("t10k", test_labels)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (len(labels), 28, 28)), True)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.asarray(labels), True)
    return folder


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A private image cache for the test, so tests never touch the user's cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("STYLESPACE_CACHE", str(folder))
    return folder


@pytest.fixture
def small_catalog(tmp_path, cache_dir) -> Path:
    """A Kaggle-layout folder with 6 synthetic classes x 12 images (72 items)."""
    return write_kaggle_catalog(tmp_path / "catalog")


@pytest.fixture
def cli_json():
    """``cli_json(*args)``: run a stylespace command with --json, assert it succeeded, return its JSON."""
    import json

    from typer.testing import CliRunner

    from stylespace.cli import app

    runner = CliRunner()

    def run(*args) -> dict:
        result = runner.invoke(app, [*map(str, args), "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    return run


@pytest.fixture(scope="session")
def shared_zip() -> Path:
    """The real Fashion Product Images zip; integration tests skip (with the reason) when it is absent."""
    if not SHARED_ZIP.is_file():
        pytest.skip(f"shared catalog not found at {SHARED_ZIP} (it sits in ../shared/datasets beside the repo)")
    return SHARED_ZIP


@pytest.fixture(scope="session")
def fashion_mnist() -> Path:
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not found at {FASHION_MNIST}: `apt-get install -y dataset-fashion-mnist` "
                    "(make test does this when run as root)")
    return FASHION_MNIST


def pytest_configure(config):
    # Two cores are shared by torch and the test runner; more threads only thrash.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
