"""Data-parallel training under torchrun (2 gloo processes on this machine's CPUs), as real runs.

- the training machinery (DistributedDataParallel, PML's distributed loss and miner wrappers, the rank
  shards of the sampler, the instance ids, the objective's own parameters) gives one process's epoch to
  float precision on a network without batch norm (tests/distributed_probe.py);
- ``torchrun -m stylespace train`` gives one process's losses within the batch-norm difference, the same
  checkpoint and run folder, and resumes a run another number of processes started;
- started wrongly, it says how to start it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stylespace.models import ModelConfig, load_model, model_id
from stylespace.training import TrainConfig, build_sampler, train_run
from stylespace.training.distributed import DataParallel, join_process_group, torchrun_environment
from stylespace.training.samplers import RankShard
from stylespace.utils import StylespaceError

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
# The CLI options of both runs: a small network, metric + classification terms over m-per-class batches.
TRAIN_ARGS = ["--preset", "cpu", "--width", "8", "--epochs", "2", "--batch-size", "16", "--val-fraction", "0.2",
              "--objective", "ce+triplet:0.5", "--miner", "batch_hard", "--sampler", "m_per_class",
              "--m-per-class", "4", "--no-augment", "--device", "cpu"]


def torchrun(*args: str, processes: int = 2, timeout: int = 120) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N ARGS``, one CPU thread per process, this checkout first."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             f"--nproc-per-node={processes}", *args], env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def in_process_config(**kw) -> tuple[ModelConfig, TrainConfig]:
    """The configs TRAIN_ARGS give (what `stylespace train` would build), for runs inside this process."""
    from stylespace.training import preset
    from stylespace.utils import override

    model_config, train_config = preset("cpu")
    model_config = override(model_config, width=8)
    settings = dict(epochs=2, batch_size=16, val_fraction=0.2, objective="ce+triplet:0.5", sampler="m_per_class",
                    m_per_class=4, augment=False, device="cpu", objective_config=override(train_config.objective_config, miner="batch_hard"))
    train_config = override(train_config, **{**settings, **kw})
    return model_config, train_config.validate()


@pytest.fixture
def catalog_and_split(tmp_path, cache_dir):
    """6 generated classes x 24 images (4 main ones train): a few steps of 16 per epoch."""
    from conftest import write_kaggle_catalog

    from stylespace.data import load_catalog, protocol_split

    catalog = write_kaggle_catalog(tmp_path / "catalog", per_class=24)
    protocol_split(load_catalog(catalog), n_main=4, n_new=2,
                   main_fractions=(0.8, 0.1, 0.1)).save(tmp_path / "split.csv")
    return catalog, tmp_path / "split.csv"


def test_an_epoch_over_two_processes_is_the_one_process_epoch(tmp_path):
    """Every objective family: the same epoch loss (to 1e-6) and the same weights after it (to 1e-4 of how far
    they moved), with batch norm taken out of the network (its per-process statistics are the known difference)."""
    out = tmp_path / "probe.json"
    torchrun(str(TESTS / "distributed_probe.py"), str(out))
    report = json.loads(out.read_text())
    assert set(report) == {"ce+triplet:0.5", "arcface", "ce+instance:0.5"}
    for spec, r in report.items():
        assert r["loss_diff"] <= 1e-6 * max(1.0, r["reference_loss"]), (spec, r)
        assert r["moved"] > 1e-3, (spec, r)  # the epoch trained
        assert r["weight_diff"] <= 1e-4 * r["moved"] + 1e-6, (spec, r)
        assert r["objective_diff"] <= 1e-4 * max(1.0, r["moved"]), (spec, r)


@pytest.mark.slow  # a one-process run here and a torchrun of 2 (three Python processes starting on 2 cores)
def test_torchrun_train_matches_one_process_and_writes_the_same_run_folder(tmp_path, catalog_and_split):
    catalog, split = catalog_and_split
    model_config, train_config = in_process_config()
    _, one, record_one = train_run(catalog, split, model_config, train_config, tmp_path / "one", progress=False)

    result = torchrun("-m", "stylespace", "train", str(catalog), "--split", str(split), "--out", str(tmp_path / "two"),
                      *TRAIN_ARGS, "--json")
    summary = json.loads(result.stdout)  # rank 0 alone prints: one JSON document
    two = tmp_path / "two"
    run = json.loads((two / "run.json").read_text())
    assert run["world_size"] == summary["world_size"] == 2 and run["backend"] == "gloo"
    assert record_one["world_size"] == 1
    assert run["train_items"] == record_one["train_items"] and run["classes"] == record_one["classes"]
    # The same losses but for per-process batch-norm statistics (8 items per process here, 16 in one), on
    # 64 training images (4 steps per epoch): epoch 1 within 5 % (measured 0.6 %), epoch 2 within 10 %
    # (measured 2.6 %); without batch norm the epochs agree to 1e-6 (the test above).
    losses_one = [r["train_loss"] for r in one.history]
    losses_two = [r["train_loss"] for r in summary["history"]]
    assert len(losses_two) == len(losses_one) == 2
    assert abs(losses_two[0] - losses_one[0]) <= 0.05 * losses_one[0], (losses_one, losses_two)
    assert abs(losses_two[1] - losses_one[1]) <= 0.10 * losses_one[1], (losses_one, losses_two)
    assert losses_two[1] < 0.5 * losses_two[0]

    # The same run folder and checkpoint format, written once (no temporary files left).
    assert {p.name for p in two.iterdir()} == {p.name for p in (tmp_path / "one").iterdir()}
    assert json.loads((two / "train.json").read_text()) == json.loads((tmp_path / "one" / "train.json").read_text())
    a = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    b = torch.load(two / "checkpoint.pt", weights_only=True)
    assert set(a) == set(b) and a["train_config"] == b["train_config"] and a["model_config"] == b["model_config"]
    for part in ("model", "objective", "best_model"):
        assert {k: v.shape for k, v in a[part].items()} == {k: v.shape for k, v in b[part].items()}, part
    groups = [[len(g["params"]) for g in c["optimizer"]["param_groups"]] for c in (a, b)]
    assert groups[0] == groups[1] and set(a["optimizer"]["state"]) == set(b["optimizer"]["state"])
    assert model_id(load_model(two)) == run["model_id"]

    # One process reads the two-process checkpoint: the run had finished, so it keeps its model.
    _, again, record = train_run(catalog, split, model_config, train_config, two, resume=True, progress=False)
    assert again.epochs_run == 2 and record["model_id"] == run["model_id"]


def test_resume_with_another_number_of_processes(tmp_path, catalog_and_split):
    """A run one process started (interrupted during epoch 2) is finished by two."""
    catalog, split = catalog_and_split
    model_config, train_config = in_process_config(epochs=3)
    run = tmp_path / "run"

    def stop_in_epoch_two(line: str) -> None:
        if line.startswith("epoch 2/"):
            raise KeyboardInterrupt  # just before epoch 2's checkpoint: epoch 1's is on disk

    with pytest.raises(KeyboardInterrupt):
        train_run(catalog, split, model_config, train_config, run, progress=False, log=stop_in_epoch_two)
    first = torch.load(run / "checkpoint.pt", weights_only=True)
    assert first["epoch"] == 1
    result = torchrun("-m", "stylespace", "train", str(catalog), "--split", str(split), "--out", str(run),
                      "--resume", "--json")
    summary = json.loads(result.stdout)
    assert summary["world_size"] == 2 and [r["epoch"] for r in summary["history"]] == [1, 2, 3]
    assert summary["history"][0] == first["history"][0]  # epoch 1 as the one process trained it
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 3
    assert json.loads((run / "run.json").read_text())["world_size"] == 2


def test_rank_shards_split_every_global_batch():
    labels = np.repeat(np.arange(6), [30, 20, 12, 8, 8, 6])
    for kind in ("shuffle", "m_per_class", "rare_augment"):
        sampler = build_sampler(kind, labels, 16, seed=3, m_per_class=4)
        shards = [RankShard(sampler, rank, 2) for rank in range(2)]
        whole = list(sampler.batches(1))
        parts = [list(shard.batches(1)) for shard in shards]
        usable = [(i, s) for i, s in whole if len(i) >= 4]
        assert len(shards[0]) == len(shards[1]) == len(usable) == len(parts[0]) == len(parts[1])
        for (indices, strength), (i0, s0), (i1, s1) in zip(usable, parts[0], parts[1]):
            assert sorted(np.concatenate([i0, i1])) == sorted(indices)
            if strength is not None:  # rare classes keep their stronger augmentation on every rank
                assert np.array_equal(np.concatenate([s0, s1]), np.concatenate([strength[0::2], strength[1::2]]))
            if kind == "m_per_class":  # m / N items of each of the batch's classes on each rank
                for part in (i0, i1):
                    assert sorted(np.bincount(labels[part])[np.bincount(labels[part]) > 0]) == [2, 2, 2, 2]
    shuffle = build_sampler("shuffle", labels, 16, seed=0)  # 84 items: 5 batches of 16 and one of 4
    assert len(shuffle) == 6 and len(RankShard(shuffle, 0, 2)) == 6 and len(RankShard(shuffle, 0, 3)) == 5


@pytest.mark.parametrize("environ, device, message", [
    ({"RANK": "1"}, "auto", "not started by torchrun"),
    ({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "auto", "integers"),
    ({"RANK": "3", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "auto", "do not fit"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "cuda:1",
     "local rank" if torch.cuda.is_available() else "no CUDA"),
])
def test_started_wrongly_says_how_to_start(environ, device, message):
    with pytest.raises(StylespaceError, match=message):
        join_process_group(device, environ)


def test_outside_torchrun_training_stays_in_this_process():
    assert torchrun_environment({}) is None
    solo = join_process_group("cpu", {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "h",
                                      "MASTER_PORT": "1"})
    assert solo.world_size == 1 and solo.is_primary and not torch.distributed.is_initialized()


def test_a_global_batch_that_cannot_be_split_is_refused():
    parallel = DataParallel(rank=0, local_rank=0, world_size=3, backend="gloo")
    with pytest.raises(StylespaceError, match="multiple of 3"):
        parallel.check(TrainConfig(batch_size=16), {})
    with pytest.raises(StylespaceError, match="at least 2 items"):
        DataParallel(rank=0, local_rank=0, world_size=4, backend="gloo").check(TrainConfig(batch_size=4), {})
