"""``TextModel``: a tokenizer and a text encoder trained for one image model, and what it says about a query.

A text model belongs to the image model whose embeddings it was trained against (LiT: the image side is
locked): its vectors mean something only beside that model's. The folder records the image model's id, and
:meth:`TextModel.check_image_model` refuses any other, saying what to do.

Files (one folder, written whole or not at all): ``text.json`` (:class:`TextConfig`), ``text-model.json``
(:class:`TextModelInfo`: the image model, the similarity floor, what training measured), ``text.safetensors``
(the encoder) and the tokenizer's ``tokenizer.json`` + ``vocabulary.json``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from stylespace.text.config import TextConfig
from stylespace.text.encoder import TextEncoder, batch_inputs
from stylespace.text.tokenizer import Features, TextTokenizer
from stylespace.utils import (StylespaceError, atomic_dir, atomic_write, dataclass_from_dict, load_dataclass,
                              read_json, save_dataclass, write_json)

CONFIG_FILE = "text.json"
INFO_FILE = "text-model.json"
WEIGHTS_FILE = "text.safetensors"


@dataclasses.dataclass
class TextModelInfo:
    """What a text model was made for and what its training measured.

    Attributes:
        image_model_id: the id of the image model whose embeddings it maps into (``models.model_id``).
        image_model: the image model's folder when trained (for messages only).
        output_dim: the image embedding size.
        floor: the calibrated similarity floor: a query whose best item is less similar than this (cosine, in
            the image model's space, unwhitened) is "no confident match". ``floor_note`` says how it was chosen.
        catalog, split: what it was trained on; ``items`` training items, ``holdout`` items kept out.
        metrics: held-out measures (``r10_phrase``, ``r10_name``, ``gibberish_below_floor``, ...).
        history: per epoch ``{"epoch", "loss", "holdout_loss", "seconds"}``.
    """

    image_model_id: str
    output_dim: int
    floor: float = -1.0
    floor_note: str = ""
    image_model: str = ""
    catalog: str = ""
    split: str = ""
    items: int = 0
    holdout: int = 0
    train_seconds: float = 0.0
    metrics: dict = dataclasses.field(default_factory=dict)
    history: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class QueryText:
    """A query as the text model reads it.

    Attributes:
        text: the query as given. words: its normalised words; ``unknown``: those the model never saw (nor
        most of their letter n-grams). vector: (D,) unit vector in the image space, None when no word is known.
        reason: why this query cannot be answered confidently by the text model (None when it can be tried).
    """

    text: str
    words: list[str]
    unknown: list[str]
    vector: np.ndarray | None
    reason: str | None


class TextModel:
    """A trained text encoder for one image model. Load with :meth:`load`; make with
    :func:`stylespace.text.train_text_model`.

    >>> text_model = TextModel.load("models/default/text", image_model_id=index.model_id)
    >>> text_model.encode(["women red tops"]).shape
    (1, 128)
    """

    def __init__(self, tokenizer: TextTokenizer, encoder: TextEncoder, config: TextConfig, info: TextModelInfo,
                 folder: Path | None = None):
        self.tokenizer = tokenizer
        self.encoder = encoder.eval()
        self.config = config
        self.info = info
        self.folder = folder
        self._bag = _NumpyBag(encoder) if config.encoder == "bag" else None

    @property
    def image_model_id(self) -> str:
        return self.info.image_model_id

    @property
    def floor(self) -> float:
        return self.info.floor

    def check_image_model(self, image_model_id: str, what: str = "the index") -> None:
        """Refuse an image model other than the one this text model was trained for."""
        if image_model_id != self.info.image_model_id:
            where = f" ({self.folder})" if self.folder else ""
            raise StylespaceError(
                f"the text model{where} was trained for image model {self.info.image_model_id}"
                f"{f' ({self.info.image_model})' if self.info.image_model else ''}, but {what} uses image model "
                f"{image_model_id}: its words would land in another space. Train a text model for that image model: "
                "stylespace text-train MODEL CATALOG --split SPLIT -o DIR")

    # --- encoding ---------------------------------------------------------------------------------------------

    def features(self, texts: Sequence[str]) -> list[Features]:
        return [self.tokenizer.features(t) for t in texts]

    @torch.no_grad()
    def encode_features(self, features: Sequence[Features]) -> np.ndarray:
        if not features:
            return np.zeros((0, self.info.output_dim), np.float32)
        if self._bag is not None:
            return self._bag(features)
        inputs = batch_inputs(features, self.tokenizer.pieces, self.config.encoder == "transformer")
        return self.encoder(*inputs).numpy().astype(np.float32)

    def encode(self, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        """(N, D) unit vectors in the image model's space, one per text."""
        texts = [str(t) for t in texts]
        parts = [self.encode_features(self.features(texts[s:s + batch_size])) for s in range(0, len(texts), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.info.output_dim), np.float32)

    def read_query(self, text: str) -> QueryText:
        """What the model makes of a query: its words, those it does not know, and its vector (None, with the
        reason, when the query has no word or none it knows)."""
        features = self.tokenizer.features(text)
        unknown = [w for w, k in zip(features.words, features.known) if not k]
        if not features.words:
            return QueryText(text, [], [], None, "the query has no words (letters or digits) to search for")
        if len(unknown) == len(features.words):
            shown = ", ".join(repr(w) for w in unknown[:6])
            return QueryText(text, features.words, unknown, None,
                             f"no word of the query is known to the text model ({shown}): it learned the catalog's "
                             "product names and attributes (colours, article types, genders, seasons, usage)")
        return QueryText(text, features.words, unknown, self.encode_features([features])[0], None)

    # --- files ---------------------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the model folder atomically (a half-written folder never replaces a good one)."""
        from safetensors.torch import save as save_safetensors

        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            self.tokenizer.save(tmp)
            save_dataclass(self.config, tmp / CONFIG_FILE)
            write_json(tmp / INFO_FILE, dataclasses.asdict(self.info))
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()}
            with atomic_write(tmp / WEIGHTS_FILE) as handle:
                handle.write(save_safetensors(tensors, metadata={"image_model_id": self.info.image_model_id}))
        self.folder = folder
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, image_model_id: str | None = None) -> "TextModel":
        """Read a text model folder; with ``image_model_id``, refuse it unless it was made for that image model."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / INFO_FILE).is_file():
            raise StylespaceError(f"{folder}: not a text model folder (no {INFO_FILE}); make one with "
                                  "`stylespace text-train MODEL CATALOG --split SPLIT -o DIR`")
        config = load_dataclass(TextConfig, folder / CONFIG_FILE)
        info = dataclass_from_dict(TextModelInfo, read_json(folder / INFO_FILE, "text model info"),
                                   source=str(folder / INFO_FILE))
        tokenizer = TextTokenizer.load(folder)
        encoder = TextEncoder(tokenizer.size, tokenizer.pieces, info.output_dim, config)
        try:
            state = load_file(str(folder / WEIGHTS_FILE))
            encoder.load_state_dict(state)
        except (SafetensorError, FileNotFoundError, RuntimeError, OSError) as exc:
            raise StylespaceError(f"{folder / WEIGHTS_FILE}: cannot load the text encoder ({str(exc)[:200]}); train "
                                  "the text model again with `stylespace text-train`") from None
        model = cls(tokenizer, encoder, config, info, folder)
        if image_model_id is not None:
            model.check_image_model(image_model_id)
        return model

    def summary(self) -> dict:
        info = dataclasses.asdict(self.info)
        info.pop("history")
        return {"folder": str(self.folder) if self.folder else None, "encoder": self.config.encoder,
                "features": self.tokenizer.size, **json.loads(json.dumps(info))}


class _NumpyBag:
    """The ``bag`` encoder's forward pass in NumPy, for queries: the same numbers as the torch module (checked
    by the tests), without torch's per-call overhead and thread pool (a query costs tens of microseconds; under
    a loaded CPU, torch's two OpenMP threads made one query cost 25 ms)."""

    def __init__(self, encoder):
        state = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in encoder.state_dict().items()}
        self.table = state["bag.weight"]
        self.norm_weight, self.norm_bias, self.eps = state["norm.weight"], state["norm.bias"], encoder.norm.eps
        self.w1, self.b1 = state["mlp.0.weight"].T.copy(), state["mlp.0.bias"]
        self.w2, self.b2 = state["mlp.2.weight"].T.copy(), state["mlp.2.bias"]
        self.skip_w, self.skip_b = state["skip.weight"].T.copy(), state["skip.bias"]

    def __call__(self, features) -> np.ndarray:
        from scipy.special import erf

        hidden = np.zeros((len(features), self.table.shape[1]), np.float32)
        for row, f in enumerate(features):
            if f.ids:
                hidden[row] = self.table[f.ids].mean(0)
        mean = hidden.mean(1, keepdims=True)
        var = hidden.var(1, keepdims=True)
        hidden = (hidden - mean) / np.sqrt(var + self.eps) * self.norm_weight + self.norm_bias
        inner = _product(hidden, self.w1) + self.b1
        inner = 0.5 * inner * (1.0 + erf(inner / np.sqrt(2.0)))  # exact GELU, as nn.GELU()
        out = _product(inner, self.w2) + self.b2 + _product(hidden, self.skip_w) + self.skip_b
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b``; for a query or a few, without BLAS's thread pool (on a busy CPU its threads' hand-off costs
    far more than the product itself)."""
    return np.einsum("ij,jk->ik", a, b) if len(a) <= 8 else a @ b
