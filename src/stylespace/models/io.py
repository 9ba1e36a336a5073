"""Saving and loading models: ``model.safetensors`` (weights) + ``model.json`` (the ModelConfig)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors

from stylespace.models.config import ModelConfig
from stylespace.models.embedding import EmbeddingModel
from stylespace.models.shipped import resolve_model_dir, shipped_names
from stylespace.utils import StylespaceError, atomic_write, dataclass_from_dict, read_json, write_json

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"


def _tensors(model: EmbeddingModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def model_id(model: EmbeddingModel) -> str:
    """A short (12 hex digits) hash of the weights and config: embeddings and indexes record it, so a
    mismatch between a model and vectors made by another model can be detected."""
    digest = hashlib.sha256()
    config = dataclasses.asdict(model.config)
    # Fields at the value that was the only behaviour before they existed are left out: old ids stay valid.
    for field, before in (("embed_layer", "head"), ("network_size", []), ("head_share", 0.5), ("head_hidden", 0)):
        if field in config and (list(config[field]) if isinstance(config[field], tuple) else config[field]) == before:
            del config[field]
    digest.update(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(_tensors(model).items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes())
    return digest.hexdigest()[:12]


def save_model(model: EmbeddingModel, folder: str | os.PathLike) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/model.json``, each atomically.

    The config is also stored in the safetensors metadata, so :func:`load_model` notices a
    ``model.json`` that belongs to another save (e.g. a crash between the two writes).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = dataclasses.asdict(model.config)
    payload = save_safetensors(_tensors(model), metadata={"config": json.dumps(config, sort_keys=True),
                                                           "model_id": model_id(model)})
    with atomic_write(folder / WEIGHTS_FILE) as handle:
        handle.write(payload)
    write_json(folder / CONFIG_FILE, config)
    return folder


def load_model(folder: str | os.PathLike, device: str | torch.device = "cpu") -> EmbeddingModel:
    """Rebuild the model saved in ``folder`` (in eval mode). The backbone weights file named in the
    config is not needed: the saved weights already hold it. ``folder`` may also name a shipped model
    (``default``; see :mod:`stylespace.models.shipped`)."""
    folder = resolve_model_dir(folder)
    weights_file, config_file = folder / WEIGHTS_FILE, folder / CONFIG_FILE
    if not folder.is_dir() or not weights_file.is_file() or not config_file.is_file():
        raise StylespaceError(f"{folder}: not a model folder (expected {WEIGHTS_FILE} and {CONFIG_FILE}, "
                              "as written by `stylespace train`, or a shipped model name: "
                              f"{', '.join(shipped_names()) or 'none in this installation'})")
    config_data = read_json(config_file, "ModelConfig JSON")
    config = dataclass_from_dict(ModelConfig, config_data, source=str(config_file))
    try:
        with safe_open(str(weights_file), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise StylespaceError(f"{weights_file}: not a readable safetensors file ({exc})") from None
    if "config" in metadata and json.loads(metadata["config"]) != config_data:
        raise StylespaceError(f"{config_file} does not match {weights_file} (they come from different saves); "
                              "save the model again")
    model = EmbeddingModel(config, load_weights=False)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise StylespaceError(f"{weights_file} does not fit {config_file}: {len(missing)} missing tensors "
                              f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise StylespaceError(f"{weights_file} does not fit {config_file}: {str(exc).splitlines()[0]}") from None
    model.folder = folder  # where it came from: its ONNX export is kept beside it (stylespace.inference)
    return model.to(device).eval()
