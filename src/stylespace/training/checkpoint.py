"""The training checkpoint file: what an interrupted run resumes from (``run_dir/checkpoint.pt``).

One reader for every consumer (the trainer resuming, ``stylespace train --resume`` finding the configs
a run was started with), so a damaged or foreign file gets the same clear error everywhere.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from stylespace.utils import StylespaceError

CHECKPOINT_FILE = "checkpoint.pt"


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint's payload (tensors on the CPU): ``train_config``, ``model_config``, ``model``,
    ``objective``, ``optimizer``, ``schedule``, ``rng`` and the loop's state (``epoch``, ``history``...)."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StylespaceError(f"{path}: no training checkpoint here; start the run without --resume") from None
    except Exception as exc:  # a damaged or foreign file
        raise StylespaceError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or "model_config" not in payload:
        raise StylespaceError(f"{path}: not a stylespace training checkpoint (no model_config)")
    return payload
