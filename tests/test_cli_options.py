"""Each setting is said once: a command's option for a config field defaults to None (the config's own default
applies and the help shows it), never to a copy of that default that can drift; `--json` is the one shared
option everywhere; old config files stay readable under renamed fields.

Every command of the `stylespace` app is walked, so a new option that restates a default fails here.
"""
from __future__ import annotations

import dataclasses

import pytest
import typer.main

from stylespace.audit.config import AuditSettings
from stylespace.cli import app
from stylespace.cli._options import JSON_OPTION, default_of
from stylespace.compat.model import CompatibilityConfig
from stylespace.compat.pairs import ProxyPairConfig
from stylespace.descriptors.plan import CompareConfig
from stylespace.evaluation.config import EvaluationConfig
from stylespace.index.config import IndexSettings
from stylespace.index.robustness import RobustnessConfig
from stylespace.models import ModelConfig
from stylespace.ray_embedding import RayConfig
from stylespace.report.config import ReportConfig
from stylespace.training import TrainConfig
from stylespace.training.objectives import ObjectiveConfig

# command -> the configs its options set
CONFIGS = {
    "index build": [IndexSettings, RayConfig],
    "index add": [RayConfig],
    "index rebuild": [IndexSettings],
    "embed": [RayConfig],
    "audit": [AuditSettings],
    "compat-pairs": [ProxyPairConfig],
    "compat-train": [CompatibilityConfig],
    "evaluate": [EvaluationConfig],
    "report": [ReportConfig],
    "robustness": [RobustnessConfig],
    "compare-extractors": [CompareConfig],
    "train": [TrainConfig, ModelConfig, ObjectiveConfig],
}
# (command, option parameter) -> the config field it sets, where the names differ
FIELDS = {
    ("compat-train", "hidden"): "hidden_dims", ("evaluate", "knn"): "knn_k",
    ("evaluate", "retrieval"): "retrieval_sets", ("report", "thumbnails"): "thumbnail_sample",
    ("compare-extractors", "pretrained_size"): "pretrained_input_size", ("train", "threads"): "num_threads",
    ("index build", "ray_workers"): "workers", ("index build", "ray_gpus"): "gpus_per_worker",
    ("index add", "ray_workers"): "workers", ("index add", "ray_gpus"): "gpus_per_worker",
    ("embed", "ray_workers"): "workers", ("embed", "ray_gpus"): "gpus_per_worker",
}


def commands(group=None, prefix: str = ""):
    """(``"index build"``, its click command) for every command of the app, groups walked."""
    group = group or typer.main.get_command(app)
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):
            yield from commands(command, f"{path} ")
        else:
            yield path, command


def test_every_option_for_a_config_field_defaults_to_none():
    walked = dict(commands())
    assert set(CONFIGS) <= set(walked), f"commands renamed? {sorted(set(CONFIGS) - set(walked))}"
    restated, matched = [], {name: 0 for name in CONFIGS}
    for name, command in walked.items():
        for param in command.params:
            if param.param_type_name != "option":
                continue
            field = FIELDS.get((name, param.name), param.name)
            for config in CONFIGS.get(name, []):
                if field not in {f.name for f in dataclasses.fields(config)}:
                    continue
                matched[name] += 1
                if param.default is not None:
                    restated.append(f"stylespace {name} {param.opts[0]} defaults to {param.default!r}; "
                                    f"{config.__name__}.{field} is {default_of(config, field)!r}: default it to None")
    assert not restated, "\n".join(restated)
    assert all(matched.values()), f"no option sets a field of its config: {[n for n, k in matched.items() if not k]}"


def test_every_json_option_is_the_shared_one():
    inline = [f"stylespace {name}" for name, command in commands() for param in command.params
              if param.param_type_name == "option" and "--json" in param.opts
              and (param.help != JSON_OPTION.help or param.default is not False)]
    assert not inline, inline
    assert sum(1 for _, command in commands() for p in command.params if "--json" in getattr(p, "opts", ())) >= 12


def test_the_help_shows_the_configs_default(tmp_path):
    from typer.testing import CliRunner

    shown = CliRunner().invoke(app, ["index", "build", "--help"], env={"COLUMNS": "400"}).output
    assert f"(default: {IndexSettings.nprobe})" in shown and "(default: on)" in shown  # nprobe, whiten
    audit = CliRunner().invoke(app, ["audit", "--help"], env={"COLUMNS": "400"}).output
    from stylespace.audit.config import NEAR_DISTANCE

    assert f"{NEAR_DISTANCE['model']}" in audit and "0.031" not in audit


@pytest.mark.parametrize("cls, old, new", [
    (CompatibilityConfig, {"learning_rate": 0.002, "max_epochs": 7}, {"lr": 0.002, "epochs": 7}),
    (TrainConfig, {"loss": {"label_smoothing": 0.2}}, {"objective_config": ObjectiveConfig(label_smoothing=0.2)}),
])
def test_configs_written_before_a_field_was_renamed_still_read(tmp_path, cls, old, new):
    import json

    from stylespace.utils import load_dataclass

    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = load_dataclass(cls, tmp_path / "old.json")
    assert {name: getattr(loaded, name) for name in new} == new


def test_index_settings_are_checked_when_made_and_the_record_keeps_them():
    from stylespace.index.config import IndexConfig
    from stylespace.utils import StylespaceError

    with pytest.raises(StylespaceError, match="index nprobe must be an integer >= 1"):
        IndexSettings(nprobe=0)
    with pytest.raises(StylespaceError, match="index metric must be one of cosine, euclidean"):
        IndexSettings(metric="manhattan")
    with pytest.raises(StylespaceError, match="pq_m must divide the dimension 30"):
        IndexConfig(model_id="m", dim=30, pq_m=8)
    record = IndexConfig(model_id="m", dim=32, nprobe=4)
    assert isinstance(record, IndexSettings) and record.nprobe == 4 and record.whiten is IndexSettings.whiten
