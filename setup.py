"""Packaging hook: the wheel carries the shipped models (models/default, models/fast, models/compat) as package data under
stylespace/shipped/, so `pip install` users can name them (`stylespace index build default CATALOG`). The
repository keeps one copy, in models/; an editable install reads it there (stylespace.models.shipped)."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("default", "fast", "compat")  # stylespace.models.shipped.PACKAGED
KEEP = (".json", ".safetensors", ".md")  # the model itself and its card; not the training history or curves


class BuildPyWithModels(build_py):
    def run(self):
        super().run()
        root = Path(__file__).resolve().parent / "models"
        target = Path(self.build_lib) / "stylespace" / "shipped"
        for name in SHIPPED:
            source = root / name
            if not source.is_dir():
                raise SystemExit(f"models/{name} is missing: the wheel must carry the shipped models")
            for path in sorted(source.rglob("*")):
                if path.is_file() and path.suffix in KEEP:
                    out = target / name / path.relative_to(source)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, out)


setup(cmdclass={"build_py": BuildPyWithModels})
