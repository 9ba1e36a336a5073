"""The robustness measurement: distorted catalog photos searched against the index (on a generated catalog)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from stylespace.data.distortions import DISTORTIONS
from stylespace.index.robustness import RobustnessConfig, markdown_table, measure_robustness, pixel_copies
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
