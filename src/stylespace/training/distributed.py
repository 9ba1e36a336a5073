"""Data-parallel training across processes: ``torchrun --nproc-per-node N -m stylespace train ...``.

One model, one *global* batch of ``TrainConfig.batch_size`` items per step, split over the N processes
(ranks): rank r takes items r, r + N, r + 2N ... of every batch the one-process sampler draws
(:class:`stylespace.training.samplers.RankShard`), so m-per-class batches and rare-class strengths hold
for the global batch exactly as in one process, the schedule has as many steps, and a checkpoint can be
resumed with another number of processes. PyTorch's ``DistributedDataParallel`` averages the model's
gradients over the ranks (gloo on CPUs, NCCL on GPUs, chosen from the device); the objective's
pair and triplet terms see every rank's embeddings through pytorch-metric-learning's
``DistributedLossWrapper`` / ``DistributedMinerWrapper``, so their negatives come from the whole global
batch. Rank 0 alone validates, logs and writes the run folder; the others get its validation figures.

What differs from one process: batch-norm statistics are those of each rank's part of the batch
(``DistributedDataParallel``'s default; PyTorch's ``SyncBatchNorm`` is GPU-only), and each rank draws its
own augmentation (statistically the same, not the same pixels). With augmentation off the losses match
one process to float precision, but for batch norm (measured in tests/test_distributed.py).

:func:`join_process_group` reads torchrun's environment: outside torchrun it returns
:class:`SingleProcess`, whose every method is what ``fit`` did before, so plain ``stylespace train`` is unchanged.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
from typing import Any, Callable, TypeVar

import numpy as np
import torch
from torch import nn

from stylespace.training.objectives import InstanceTerm, MetricTerm, Objective
from stylespace.training.samplers import RankShard
from stylespace.utils import StylespaceError, pick_device

T = TypeVar("T")

# torchrun sets all of these in every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Long enough for rank 0 to decode a catalog into the image cache while the others wait at a barrier.
TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("STYLESPACE_DIST_TIMEOUT_MIN", "60")))
LAUNCH_HINT = ("start it with `torchrun --nproc-per-node N -m stylespace train CATALOG --split ...` "
               "(several nodes: add --nnodes M --rdzv-endpoint HOST:PORT), or run plain `stylespace train`")


class TrainingForward(nn.Module):
    """Images -> (pooled features, embeddings, logits or None): the training step's one forward pass, as
    one module so that ``DistributedDataParallel`` sees (and synchronises) the whole of it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        features = self.model.features(x)
        embeddings = self.model.head(features)
        logits = self.model.classify(embeddings) if self.model.classifier is not None else None
        return features, embeddings, logits


class SingleProcess:
    """Training in this process alone: what ``fit`` did before data parallelism (every hook a no-op)."""

    rank = 0
    local_rank = 0
    world_size = 1
    backend = "none"
    is_primary = True

    def device(self, name: str) -> torch.device:
        return pick_device(name)

    def check(self, config, agreed: dict) -> None:
        pass

    def prepare(self, model: nn.Module, objective: Objective, changing_trainables: bool = False) -> nn.Module:
        return TrainingForward(model)

    def shard(self, sampler):
        return sampler

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    def instance_ids(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.arange(n, device=device)

    def average_objective_gradients(self, objective: Objective) -> None:
        pass

    def sum_over_ranks(self, *values: float) -> tuple[float, ...]:
        return values

    def from_primary(self, compute: Callable[[], T]) -> T:
        return compute()

    def primary_first(self, compute: Callable[[], T]) -> T:
        return compute()

    def primary_only(self, log: Callable[[str], None]) -> Callable[[str], None]:
        return log

    def barrier(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclasses.dataclass
class DataParallel(SingleProcess):
    """This process's place in a torchrun job (its process group already joined by :func:`join_process_group`).

    Attributes:
        rank / world_size: this process and how many there are, over all nodes; local_rank: on this node.
        backend: ``gloo`` (CPU tensors) or ``nccl`` (one GPU per process, ``cuda:local_rank``).
    """

    rank: int
    local_rank: int
    world_size: int
    backend: str

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}") if self.backend == "nccl" else torch.device("cpu")

    def check(self, config, agreed: dict) -> None:
        """Refuse a batch that cannot be split evenly, and ranks started with different options or data."""
        if config.batch_size % self.world_size or config.batch_size // self.world_size < 2:
            raise StylespaceError(f"batch_size {config.batch_size} cannot be split over {self.world_size} processes "
                                  f"(it must be a multiple of {self.world_size}, with at least 2 items per process "
                                  "for batch norm); it is the global batch: pass --batch-size accordingly")
        digest = hashlib.sha256(json.dumps(agreed, sort_keys=True, default=str).encode()).hexdigest()
        digests: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(digests, digest)
        odd = [rank for rank, other in enumerate(digests) if other != digests[0]]
        if odd:
            raise StylespaceError(f"processes {odd} were started with other options or data than process 0 "
                                  f"({', '.join(sorted(agreed))} must agree); start every node's torchrun with the "
                                  "same command and catalog")

    def prepare(self, model: nn.Module, objective: Objective, changing_trainables: bool = False) -> nn.Module:
        """Wrap the model's forward pass in ``DistributedDataParallel`` and the objective's pair/triplet
        terms in PML's distributed wrappers (in place: the objective's saved state does not change).
        ``changing_trainables``: some parameters are frozen for a while (fine-tuning's frozen backbone), so
        DDP must look for parameters without gradients at every step."""
        gather_across_ranks(objective, self.world_size)
        forward = TrainingForward(model)
        unused = changing_trainables or (model.classifier is not None and not objective.needs_classifier) or all(
            isinstance(term, InstanceTerm) for term in objective.terms.values())
        return nn.parallel.DistributedDataParallel(
            forward, device_ids=[self.local_rank] if self.backend == "nccl" else None,
            find_unused_parameters=unused)

    def shard(self, sampler) -> RankShard:
        return RankShard(sampler, self.rank, self.world_size)

    def generator(self, seed: int) -> torch.Generator:
        # Every rank augments its own items: its own random stream (rank 0 keeps the one-process seed).
        if self.rank:
            seed = int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])
        return torch.Generator().manual_seed(seed)

    def instance_ids(self, n: int, device: torch.device) -> torch.Tensor:
        # Item ids unique over the global batch (the instance term compares views across all ranks).
        return self.rank + self.world_size * torch.arange(n, device=device)

    def average_objective_gradients(self, objective: Objective) -> None:
        """The objective's own parameters (ArcFace's class centres) are outside DistributedDataParallel:
        average their gradients over the ranks as it does the model's."""
        for parameter in objective.parameters():
            if parameter.grad is not None:
                torch.distributed.all_reduce(parameter.grad, op=torch.distributed.ReduceOp.SUM)
                parameter.grad.div_(self.world_size)

    def sum_over_ranks(self, *values: float) -> tuple[float, ...]:
        device = self.device("auto")
        total = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
        return tuple(float(v) for v in total.cpu())

    def from_primary(self, compute: Callable[[], T]) -> T:
        """``compute()`` on rank 0 alone (validation), its result sent to every rank."""
        box = [compute() if self.is_primary else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def primary_first(self, compute: Callable[[], T]) -> T:
        """``compute()`` on each node's local rank 0 first (it fills the node's image cache), then on the others."""
        if self.local_rank != 0:
            self.barrier()
        result = compute()
        if self.local_rank == 0:
            self.barrier()
        return result

    def primary_only(self, log: Callable[[str], None]) -> Callable[[str], None]:
        return log if self.is_primary else (lambda message: None)

    def barrier(self) -> None:
        torch.distributed.barrier()

    def close(self) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


class AcrossRanks(nn.Module):
    """A PML loss over the whole global batch (``DistributedLossWrapper``: every rank's embeddings and labels).

    The wrapper returns ``world_size x`` the loss, so that DistributedDataParallel's average of the ranks'
    gradients (each only through its own embeddings) is the one-process gradient; the value returned
    here is the loss itself, so logged losses read as in one process. Where no gradient flows
    (validation, on rank 0 alone) it is the plain loss over the given batch."""

    def __init__(self, loss: nn.Module, world_size: int):
        super().__init__()
        from pytorch_metric_learning.utils.distributed import DistributedLossWrapper

        self.gathered = DistributedLossWrapper(loss)
        self.world_size = world_size

    def forward(self, *args) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self.gathered.loss(*args)
        scaled = self.gathered(*args)
        return scaled - scaled.detach() * (1 - 1 / self.world_size)


class MinedAcrossRanks(nn.Module):
    """A PML miner choosing pairs/triplets among every rank's embeddings (``DistributedMinerWrapper``); its
    indices refer to the gathered batch that :class:`AcrossRanks` builds in the same order."""

    def __init__(self, miner: nn.Module):
        super().__init__()
        from pytorch_metric_learning.utils.distributed import DistributedMinerWrapper

        self.gathered = DistributedMinerWrapper(miner)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor):
        if not torch.is_grad_enabled():
            return self.gathered.miner(embeddings, labels)
        return self.gathered(embeddings, labels)


def gather_across_ranks(objective: Objective, world_size: int) -> Objective:
    """Make the objective's pair and triplet terms see the whole global batch, in place.

    Wrapped: metric losses without parameters of their own (contrastive, triplet, multi-similarity: their
    pairs span the batch) with their miners, and the instance term's NT-Xent (every other view a negative).
    Not wrapped: per-item losses (cross-entropy, ArcFace and other proxy losses, whose parameters are
    averaged by :meth:`DataParallel.average_objective_gradients`): they need no other rank's items.
    """
    for term in objective.terms.values():
        if isinstance(term, MetricTerm) and not any(True for _ in term.loss.parameters()):
            term.loss = AcrossRanks(term.loss, world_size)
            if term.miner is not None:
                term.miner = MinedAcrossRanks(term.miner)
        elif isinstance(term, InstanceTerm):
            term.loss = AcrossRanks(term.loss, world_size)
    return objective


def torchrun_environment(environ=os.environ) -> tuple[int, int, int] | None:
    """(rank, local rank, world size) from torchrun's variables, or None outside torchrun; a clear error when
    only some of them are set (a process started by hand or by another launcher)."""
    present = [name for name in TORCHRUN_VARIABLES if name in environ]
    if not present:
        return None
    missing = [name for name in TORCHRUN_VARIABLES if name not in environ]
    if missing:
        raise StylespaceError(f"the environment sets {', '.join(present)} but not {', '.join(missing)}: this process "
                              f"was not started by torchrun; {LAUNCH_HINT}")
    try:
        rank, local_rank, world_size = (int(environ[name]) for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    except ValueError:
        raise StylespaceError(f"RANK, LOCAL_RANK and WORLD_SIZE must be integers, got {environ['RANK']!r}, "
                              f"{environ['LOCAL_RANK']!r}, {environ['WORLD_SIZE']!r}; {LAUNCH_HINT}") from None
    if not (world_size >= 1 and 0 <= rank < world_size and 0 <= local_rank <= rank):
        raise StylespaceError(f"RANK {rank}, LOCAL_RANK {local_rank}, WORLD_SIZE {world_size} do not fit together; "
                              f"{LAUNCH_HINT}")
    return rank, local_rank, world_size


def is_primary_process(environ=os.environ) -> bool:
    """Whether this process speaks for the run (rank 0 of a torchrun job, or a plain process)."""
    return environ.get("RANK", "0") == "0"


def join_process_group(device: str = "auto", environ=os.environ) -> SingleProcess | DataParallel:
    """This process's part in training: :class:`SingleProcess` outside torchrun (or with one process), else
    :class:`DataParallel` after joining the job's process group: NCCL with one GPU per process when the
    device is ``auto`` or ``cuda`` and GPUs are there, else gloo on the CPU."""
    place = torchrun_environment(environ)
    if place is None or place[2] == 1:
        return SingleProcess()
    rank, local_rank, world_size = place
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StylespaceError(f"--device {device} under torchrun, but this node has no CUDA GPU; train on its CPUs "
                              "with --device cpu (gloo)")
    if device not in ("auto", "cpu", "cuda"):
        raise StylespaceError(f"--device {device!r} under torchrun: each process takes the GPU of its local rank; "
                              "pass --device cuda (or auto), or cpu")
    backend = "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        gpus = torch.cuda.device_count()
        if local_rank >= gpus:
            raise StylespaceError(f"local rank {local_rank} has no GPU of its own: this node has {gpus}; start "
                                  f"torchrun with --nproc-per-node {gpus} (or --device cpu to train on CPUs)")
        torch.cuda.set_device(local_rank)
    try:
        torch.distributed.init_process_group(backend, timeout=TIMEOUT)
    except (RuntimeError, ValueError) as exc:
        raise StylespaceError(f"could not join the torchrun job ({backend}, rank {rank} of {world_size}): "
                              f"{str(exc).splitlines()[0]}; check --rdzv-endpoint / MASTER_ADDR and that every "
                              "node can reach it") from None
    return DataParallel(rank=rank, local_rank=local_rank, world_size=world_size, backend=backend)
