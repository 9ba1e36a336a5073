"""Embedding on Ray (Ray Data map_batches on a local Ray with 2 workers): the single-process result.

One local Ray for the module (2 CPUs, a 200 MB object store), shut down after it.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from stylespace.utils import StylespaceError

ray = pytest.importorskip("ray", reason="Ray is the extra stylespace[distributed] (make test installs it)")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False,
             configure_logging=True, logging_level="warning")
    yield ray
    ray.shutdown()


@pytest.fixture
def catalog_with_bad_images(small_catalog):
    """The generated catalog with one undecodable image, one blank image, and an empty file (the catalog
    skips it: 71 items)."""
    from PIL import Image

    images = small_catalog / "images"
    (images / "1003.png").write_bytes(b"not an image at all")
    (images / "1010.png").write_bytes(b"")
    Image.new("RGB", (60, 80), (255, 255, 255)).save(images / "1020.png")
    return small_catalog


@pytest.fixture
def model_folder(tmp_path):
    import torch

    from stylespace.models import ModelConfig, build_model, save_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(width=8, embedding_dim=16, stem_stride=4, classes=["a", "b"]))
    save_model(model.eval(), tmp_path / "model")
    return tmp_path / "model"


def test_ray_embeddings_are_the_single_process_ones(local_ray, catalog_with_bad_images, model_folder):
    from stylespace.data import load_catalog
    from stylespace.embeddings import embed_catalog
    from stylespace.models import load_model
    from stylespace.ray_embedding import RayConfig, embed_catalog_ray

    model, catalog = load_model(model_folder), load_catalog(catalog_with_bad_images)
    here = embed_catalog(model, catalog, progress=False)
    there = embed_catalog_ray(model, catalog, RayConfig(workers=2, shard_rows=16), batch_size=8, progress=False)
    assert there.ids == here.ids and len(catalog) == 71 and len(here) == 70  # catalog order, less the undecodable
    assert there.labels == here.labels and there.model_id == here.model_id
    assert there.meta == here.meta  # the same failed (with reasons) and blank items, the same provenance
    assert list(here.meta["failed"]) == ["1003"] and here.meta["blank"] == ["1020"]
    assert float(np.abs(there.vectors - here.vectors).max()) <= 1e-5


def test_ray_subset_in_the_order_asked(local_ray, catalog_with_bad_images, model_folder):
    from stylespace.data import load_catalog
    from stylespace.embeddings import embed_images
    from stylespace.data.cache import decode_one
    from stylespace.models import load_model
    from stylespace.ray_embedding import RayConfig, embed_items_ray

    model, catalog = load_model(model_folder), load_catalog(catalog_with_bad_images)
    asked = ["1050", "1003", "nope", "1001", "1020"]
    made = embed_items_ray(model, catalog, asked, RayConfig(workers=2, shard_rows=2), progress=False)
    assert made.ids == ["1050", "1001", "1020"] and made.blank == ["1020"]
    assert list(made.failed) == ["1003", "nope"] and made.failed["nope"] == "not in the catalog"
    expected = embed_images(model, np.stack([decode_one(catalog, catalog[i], (80, 60)) for i in made.ids]))
    assert float(np.abs(made.vectors - expected).max()) <= 1e-5


@pytest.mark.slow  # four Ray runs, each starting its 2 workers (about 5 s each on an idle 2-core machine)
def test_cli_embed_and_index_build_with_ray(local_ray, catalog_with_bad_images, model_folder, tmp_path):
    from typer.testing import CliRunner

    from stylespace.cli import app
    from stylespace.embeddings import Embeddings
    from stylespace.index import CatalogIndex

    runner = CliRunner()
    base = ["embed", str(model_folder), str(catalog_with_bad_images), "--json"]
    plain = runner.invoke(app, [*base, "-o", str(tmp_path / "plain.npz")])
    on_ray = runner.invoke(app, [*base, "-o", str(tmp_path / "ray.npz"), "--ray", "--ray-workers", "2"])
    assert plain.exit_code == 0 and on_ray.exit_code == 0, (plain.output, on_ray.output)
    report = json.loads(on_ray.stdout)  # one JSON document: Ray's own logging stays off stdout
    assert report["items"] == 70 and report["failed"] == 1 and report["blank"] == 1
    a, b = Embeddings.load(tmp_path / "plain.npz"), Embeddings.load(tmp_path / "ray.npz")
    assert a.ids == b.ids and a.meta == b.meta and float(np.abs(a.vectors - b.vectors).max()) <= 1e-5

    build = ["index", "build", str(model_folder), str(catalog_with_bad_images), "--json", "--no-whiten"]
    assert runner.invoke(app, [*build, "-o", str(tmp_path / "i1")]).exit_code == 0
    built = runner.invoke(app, [*build, "-o", str(tmp_path / "i2"), "--ray", "--ray-workers", "2"])
    assert built.exit_code == 0, built.output
    one, two = CatalogIndex.open(tmp_path / "i1"), CatalogIndex.open(tmp_path / "i2")
    assert one.ids == two.ids and len(one) == 69  # the blank image is left out of an index by default
    assert float(np.abs(one.vectors(one.ids) - two.vectors(two.ids)).max()) <= 1e-5
    assert json.loads(built.stdout)["failed"] == json.loads(runner.invoke(
        app, [*build, "-o", str(tmp_path / "i3")]).stdout)["failed"]

    # New stock embedded on Ray goes into an index as it would from here.
    gone = one.ids[:5]
    assert runner.invoke(app, ["index", "remove", str(tmp_path / "i2"), *gone]).exit_code == 0
    added = runner.invoke(app, ["index", "add", str(tmp_path / "i2"), str(catalog_with_bad_images), "--ray",
                                "--ray-workers", "2", "--json"])
    assert added.exit_code == 0 and json.loads(added.stdout)["added"] == 5, added.output
    again = CatalogIndex.open(tmp_path / "i2")
    assert float(np.abs(again.vectors(gone) - one.vectors(gone)).max()) <= 1e-5


def test_without_ray_the_message_names_the_extra(monkeypatch):
    from stylespace.ray_embedding import RayConfig, RaySession

    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra gives: ImportError
    with pytest.raises(StylespaceError, match=r"pip install 'stylespace\[distributed\]'"):
        RaySession(RayConfig())
    with pytest.raises(StylespaceError, match="workers must be an integer >= 0"):
        RayConfig(workers=-1).validate()
