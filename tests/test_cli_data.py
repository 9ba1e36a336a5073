"""The CLI layer over the data API: --json prints one document, user errors are one line and exit 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

STYLESPACE = [sys.executable, "-m", "stylespace"]


def run(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*STYLESPACE, *map(str, args)], capture_output=True, text=True, timeout=120, env=env)


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for command in ("catalog", "split", "demo"):
        assert command in result.stdout


def test_catalog_json_is_one_document(small_catalog):
    result = run("catalog", small_catalog, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["items"] == 72 and summary["classes"] == 6 and summary["summary"] == "72 items loaded"


def test_split_json_and_manifest(small_catalog, tmp_path):
    out = tmp_path / "split.csv"
    result = run("split", small_catalog, "-o", out, "--stratified", "train=0.5,test=0.5", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["totals"] == {"all/train": 36, "all/test": 36}
    assert out.is_file() and Path(str(out) + ".json").is_file()


def test_bad_input_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    result = run("catalog", bad)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "notes.txt" in result.stderr and "expected" in result.stderr


def test_split_by_a_column(small_catalog, tmp_path):
    out = tmp_path / "split.csv"
    result = run("split", small_catalog, "-o", out, "--by", "gender", "--map", "Women=test,*=train",
                 "--val-fraction", "0.25", "--no-verify", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["totals"] == {"all/train": 24, "all/val": 12, "all/test": 36}
    config = json.loads(Path(str(out) + ".json").read_text())
    assert (config["method"], config["column"], config["val_fraction"]) == ("column", "gender", 0.25)
    # values that name no part: one line saying what was found and what is expected, exit 2
    result = run("split", small_catalog, "-o", out, "--by", "year", "--no-verify")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'2012': 72" in result.stderr and "expected train / test" in result.stderr
    result = run("split", small_catalog, "--by", "nope", "--no-verify")
    assert result.returncode == 2 and "no column 'nope'" in result.stderr
