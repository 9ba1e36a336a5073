"""Run by tests/test_distributed.py under torchrun: one training epoch of each objective, split over the
processes, against the same epoch in one process (computed by rank 0 alone), on a network without batch
norm (whose per-process statistics are the one known difference). Rank 0 writes the largest differences
of the epoch's loss and of the weights after it, per objective, as JSON to argv[1].

    torchrun --standalone --nproc-per-node 2 tests/distributed_probe.py OUT.json
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import shapes, tiny_model  # noqa: E402  (the shared generated images and model)

from stylespace.training import ObjectiveConfig, build_objective, build_sampler, parse_objective  # noqa: E402
from stylespace.training.distributed import SingleProcess, join_process_group  # noqa: E402
from stylespace.training.trainer import train_epoch  # noqa: E402

# (objective, miner, sampler, views): a per-item loss with a mined triplet loss over m-per-class batches,
# a proxy loss (its class centres trained outside DistributedDataParallel), instances over rare-class batches.
CASES = [
    ("ce+triplet:0.5", "batch_hard", "m_per_class", 1),
    ("arcface", "semihard", "shuffle", 1),
    ("ce+instance:0.5", "semihard", "rare_augment", 2),
]


def without_batch_norm(model: nn.Module) -> nn.Module:
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, nn.Identity())
        else:
            without_batch_norm(child)
    return model


def one_epoch(model, objective, sampler, x, y, views: int, parallel) -> float:
    optimizer = torch.optim.SGD(list(model.parameters()) + list(objective.parameters()), lr=0.5)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    forward = parallel.prepare(model, objective)
    loss, _ = train_epoch(model, objective, optimizer, schedule, parallel.shard(sampler).batches(1) if parallel.world_size > 1
                          else sampler.batches(1), x, y, None, torch.device("cpu"), False, parallel.generator(0),
                          lambda k, loss: None, views=views, forward=forward, parallel=parallel)
    return loss


def main(out: str) -> None:
    parallel = join_process_group("cpu")
    assert parallel.world_size > 1, "run me under torchrun with 2 or more processes"
    x, y = shapes(24, seed=0)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    report = {}
    for spec, miner, sampler_name, views in CASES:
        torch.manual_seed(0)
        model = without_batch_norm(tiny_model(classes="ce" in parse_objective(spec)))
        objective = build_objective(spec, ObjectiveConfig(miner=miner), 4, 16)
        sampler = build_sampler(sampler_name, y.numpy(), 32, seed=0, m_per_class=8)
        reference_model, reference_objective = copy.deepcopy(model), copy.deepcopy(objective)
        reference_loss = (one_epoch(reference_model, reference_objective, sampler, x, y, views, SingleProcess())
                          if parallel.is_primary else None)
        loss = one_epoch(model, objective, sampler, x, y, views, parallel)
        if parallel.is_primary:
            weights = max(float((a - b).abs().max()) for a, b in zip(model.state_dict().values(),
                                                                     reference_model.state_dict().values()))
            centres = max([float((a - b).abs().max()) for a, b in zip(objective.parameters(),
                                                                      reference_objective.parameters())] or [0.0])
            report[spec] = {"loss": loss, "reference_loss": reference_loss, "loss_diff": abs(loss - reference_loss),
                            "weight_diff": weights, "objective_diff": centres,
                            "moved": max(float((a - b).abs().max()) for a, b in zip(
                                model.state_dict().values(), without_batch_norm(tiny_model(classes="ce" in parse_objective(spec)))
                                .state_dict().values()))}
    if parallel.is_primary:
        Path(out).write_text(json.dumps(report, indent=1))
    parallel.close()


if __name__ == "__main__":
    main(sys.argv[1])
