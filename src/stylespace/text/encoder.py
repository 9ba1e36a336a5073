"""``TextEncoder``: feature ids -> a unit vector in the image model's space.

``bag``: the mean of the embeddings of every feature of a text (word pieces, character n-grams, word pairs;
:mod:`stylespace.text.tokenizer`). ``transformer``: the same, plus a few transformer layers over the word
pieces in order, mean-pooled. Both then go through a small MLP with a linear skip into the image space, and
are L2-normalised, as the image model's embeddings are. The embedding table is sparse (only the rows a
batch uses get a gradient): most of the parameters are there, and a batch touches a few thousand of them.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from stylespace.text.config import TextConfig

MAX_PIECES = 128  # word pieces a transformer reads per text (a query is cut to 48 words before)


class TextEncoder(nn.Module):
    """Args: ``features``: how many feature ids (``TextTokenizer.size``); ``pieces``: how many of them are word
    pieces (``TextTokenizer.pieces``); ``output_dim``: the image model's embedding size."""

    def __init__(self, features: int, pieces: int, output_dim: int, config: TextConfig):
        super().__init__()
        width = config.token_dim
        self.pieces = pieces
        self.bag = nn.EmbeddingBag(features, width, mode="mean", sparse=True)
        nn.init.normal_(self.bag.weight, std=0.1)
        self.sequence = None
        if config.encoder == "transformer":
            self.piece_embedding = nn.Embedding(pieces + 1, width, padding_idx=pieces)
            self.position = nn.Embedding(MAX_PIECES, width)
            layer = nn.TransformerEncoderLayer(width, config.heads, 2 * width, dropout=0.1, batch_first=True,
                                               norm_first=True)
            self.sequence = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, config.hidden_dim), nn.GELU(), nn.Linear(config.hidden_dim, output_dim))
        self.skip = nn.Linear(width, output_dim)
        # the InfoNCE temperature, learned (as CLIP and LiT do), kept as log(1 / temperature)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))

    def sparse_parameters(self) -> list[nn.Parameter]:
        return [self.bag.weight]

    def dense_parameters(self) -> list[nn.Parameter]:
        sparse = {id(p) for p in self.sparse_parameters()}
        return [p for p in self.parameters() if id(p) not in sparse]

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor, pieces: torch.Tensor | None = None) -> torch.Tensor:
        """(B, output_dim) unit vectors from a batch made by :func:`batch_inputs`."""
        hidden = self.bag(ids, offsets)
        if self.sequence is not None and pieces is not None:
            mask = pieces == self.pieces  # padding
            mask[mask.all(1), 0] = False  # a text without word pieces: attend to one (zero) pad, not to nothing
            positions = torch.arange(pieces.shape[1], device=pieces.device)
            x = self.sequence(self.piece_embedding(pieces) + self.position(positions), src_key_padding_mask=mask)
            keep = (~mask).unsqueeze(-1).float()
            hidden = hidden + (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        hidden = self.norm(hidden)
        return F.normalize(self.mlp(hidden) + self.skip(hidden), dim=-1)


def batch_inputs(features: Sequence, pieces: int, with_pieces: bool, device="cpu"):
    """(ids, offsets, pieces or None) tensors for a list of :class:`stylespace.text.tokenizer.Features`."""
    lengths = [len(f.ids) for f in features]
    offsets = torch.tensor([0, *lengths[:-1]], dtype=torch.long).cumsum(0)
    ids = torch.tensor([i for f in features for i in f.ids], dtype=torch.long)
    sequence = None
    if with_pieces:
        width = max(1, min(MAX_PIECES, max((len(f.pieces) for f in features), default=1)))
        sequence = torch.full((len(features), width), pieces, dtype=torch.long)
        for row, f in enumerate(features):
            cut = f.pieces[:width]
            if cut:
                sequence[row, :len(cut)] = torch.tensor(cut, dtype=torch.long)
    return ids.to(device), offsets.to(device), None if sequence is None else sequence.to(device)
