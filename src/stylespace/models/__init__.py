"""Backbones and the embedding model: images (B, 3, H, W) in [0, 1] -> embeddings (B, D).

>>> model = build_model(ModelConfig(backbone="compact", embedding_dim=128, classes=["Tshirts", "Shirts"]))
>>> model.embed(torch.rand(4, 3, 80, 60)).shape   # L2-normalised
torch.Size([4, 128])
"""
from stylespace.models.backbones import Backbone, build_backbone
from stylespace.models.config import BACKBONES, ModelConfig
from stylespace.models.embedding import EmbeddingModel, build_model
from stylespace.models.io import load_model, model_id, save_model
from stylespace.models.shipped import require_shipped, resolve_model_dir, shipped_dir
from stylespace.models.weights import load_backbone_weights, read_state_dict

__all__ = [
    "BACKBONES", "Backbone", "EmbeddingModel", "ModelConfig", "build_backbone", "build_model",
    "load_backbone_weights", "load_model", "model_id", "read_state_dict", "require_shipped",
    "resolve_model_dir", "save_model", "shipped_dir",
]
