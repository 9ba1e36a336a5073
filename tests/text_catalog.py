"""A generated catalog for the text tests: article types (shapes) in several colours, with names and attributes,
indexed with an untrained compact model (the image side of LiT is locked anyway), and a text model trained on it."""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import torch

from conftest import synth_image

SHAPES = {"Tshirts": ("square", "Topwear", "Apparel"), "Jeans": ("bar", "Bottomwear", "Apparel"),
          "Watches": ("circle", "Watches", "Accessories"), "Casual Shoes": ("triangle", "Shoes", "Footwear")}
COLOURS = {"Red": (210, 30, 30), "Green": (30, 170, 40), "Blue": (30, 50, 210), "Yellow": (235, 215, 30)}


@dataclasses.dataclass
class TextCatalog:
    catalog: Path
    model: Path
    index: Path
    text_model: Path


def write_colour_catalog(root: Path, per_pair: int = 6, seed: int = 0, names: bool = True) -> Path:
    """Kaggle layout: every (article type, colour) pair ``per_pair`` times, genders alternating."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, next_id = [], 5000
    for label, (shape, sub, master) in SHAPES.items():
        for colour, rgb in COLOURS.items():
            for j in range(per_pair):
                synth_image(shape, rgb, rng).save(root / "images" / f"{next_id}.png")
                gender = "Men" if j % 2 else "Women"
                name = f"Brand{j % 3} {gender} {colour} {label[:-1] if label.endswith('s') else label}" if names else ""
                rows.append([next_id, gender, master, sub, label, colour, "Summer", 2012, "Casual", name])
                next_id += 1
    with (root / "styles.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season",
                         "year", "usage", "productDisplayName"])
        writer.writerows(rows)
    return root


def build_text_catalog(root: Path, epochs: int = 40, names: bool = True) -> TextCatalog:
    """Catalog, untrained image model, index and a text model trained for that image model, under ``root``."""
    from stylespace.data import load_catalog
    from stylespace.index.build import build_index
    from stylespace.models import ModelConfig, build_model, save_model
    from stylespace.text import TextConfig, train_text_model

    root = Path(root)
    catalog_dir = write_colour_catalog(root / "catalog", names=names)
    catalog = load_catalog(catalog_dir)
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="compact", embedding_dim=32, width=8)).eval()
    save_model(model, root / "model")
    index, failed = build_index(model, catalog, root / "index", model_path=root / "model", device="cpu",
                                progress=False)
    assert not failed, failed
    index.close()
    config = TextConfig(epochs=epochs, batch_size=32, token_dim=32, hidden_dim=64, vocab_size=200, holdout=0.1,
                        lr=1e-2)
    text_model = train_text_model(model, catalog, config=config, image_model_path=str(root / "model"),
                                  device="cpu", progress=False)
    text_model.save(root / "model" / "text")
    return TextCatalog(catalog_dir, root / "model", root / "index", root / "model" / "text")
