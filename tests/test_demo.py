"""`stylespace demo` end to end on a small generated catalog: every step's output lands in the work folder,
and a second run reuses them instead of redoing the work."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def test_demo_runs_every_step_then_reuses_them(tmp_path, cache_dir):
    from conftest import write_kaggle_catalog
    from stylespace.data import load_catalog, protocol_split
    from stylespace.index import CatalogIndex
    from stylespace.models import ModelConfig, build_model, save_model

    catalog_dir = write_kaggle_catalog(tmp_path / "catalog", per_class=16)
    workdir = tmp_path / "demo"
    workdir.mkdir()
    # The demo's own split keeps 39 + 30 classes; a 6-class catalog gets a smaller protocol split up front.
    protocol_split(load_catalog(catalog_dir), n_main=4, n_new=2, main_fractions=(0.5, 0.25, 0.25),
                   seed=0).save(workdir / "split.csv")
    model_dir = tmp_path / "model"
    save_model(build_model(ModelConfig(width=8, embedding_dim=16)), model_dir)

    command = [sys.executable, "-m", "stylespace", "demo", "--catalog", str(catalog_dir), "--workdir", str(workdir),
               "--model", str(model_dir), "--no-serve"]
    env = {**os.environ, "STYLESPACE_CACHE": str(cache_dir)}
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    evaluation = json.loads((workdir / "evaluation.json").read_text())
    assert [s["number"] for s in evaluation["scenarios"]] == [1, 2, 3, 4]
    assert "retrieval test / MAP@R" in evaluation["headline"] and evaluation["pairs"]["auc"] > 0
    index = CatalogIndex.open(workdir / "index")
    assert len(index) == 96
    from stylespace.recommend import load_calibration

    assert load_calibration(index), "calibrate-threshold did not save a threshold with the index"
    assert (workdir / "risk_coverage.png").stat().st_size > 0
    assert (workdir / "report" / "report.html").stat().st_size > 0
    assert "demo ready" in first.stderr
    # a log, not a terminal: every command whole on one line (copyable), no developer log lines
    serve = [line for line in first.stdout.splitlines() if line.startswith("to serve it: $ stylespace serve ")]
    assert len(serve) == 1 and "--port 8000" in serve[0]
    assert "report.py:" not in first.stdout + first.stderr

    second = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("already done") == 5, second.stdout
