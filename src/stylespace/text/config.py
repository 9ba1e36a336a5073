"""``TextConfig``: how a text model is made (saved as ``text.json`` beside its weights)."""
from __future__ import annotations

import dataclasses

from stylespace.utils import at_least, above, in_range, one_of, validate

ENCODERS = ("bag", "transformer")


@dataclasses.dataclass
class TextConfig:
    """Settings of a text encoder trained against a locked image model (LiT).

    Tokenizer: ``vocab_size`` word pieces learned by the ``tokenizers`` library from the training texts, plus
    the character n-grams (``ngram_min``..``ngram_max`` letters, word boundaries marked) and word pairs seen at
    least ``min_count`` times: a misspelt or unseen word still shares most of its n-grams with known ones.

    Encoder: ``bag`` averages the embeddings of every token, n-gram and word pair of a text (order-free, a few
    microseconds a query); ``transformer`` adds ``layers`` transformer layers over the word pieces. Both end in
    a small MLP that maps into the image model's space (its ``output_dim``).

    Training: InfoNCE (a symmetric cross-entropy over a batch's text-image similarities, learned temperature
    starting at ``temperature``) against the image model's embeddings of the training items, which are never
    changed. Every item of a batch that a text describes (same name, or the same attribute values the phrase
    names) counts as its match, so "women red tops" is pulled towards all women's red tops, not one of them.
    ``name_share`` of the texts are product names (where the catalog has them), the rest attribute phrases.
    ``holdout`` of the training items are kept out to measure the model and calibrate its similarity floor.
    """

    encoder: str = "bag"
    vocab_size: int = 8000
    ngram_min: int = 3
    ngram_max: int = 5
    min_count: int = 2
    max_ngrams: int = 60000
    token_dim: int = 256
    hidden_dim: int = 512
    layers: int = 1
    heads: int = 4
    epochs: int = 20
    batch_size: int = 512
    lr: float = 3e-3
    weight_decay: float = 1e-4
    temperature: float = 0.07
    name_share: float = 0.4
    holdout: float = 0.05
    floor_quantile: float = 0.02
    seed: int = 0
    # torch threads while training (0 = torch's default). One: the steps are small (a sparse embedding bag and
    # a 512 x 512 score matrix), and on a busy 2-core machine two OpenMP threads made an epoch ten times slower
    threads: int = 1

    def __post_init__(self) -> None:
        validate([
            one_of("encoder", self.encoder, ENCODERS),
            at_least("vocab_size", self.vocab_size, 100),
            at_least("ngram_min", self.ngram_min, 1),
            at_least("ngram_max", self.ngram_max, self.ngram_min,
                     note="(the longest character n-gram, at least ngram_min)"),
            at_least("min_count", self.min_count, 1),
            at_least("max_ngrams", self.max_ngrams, 0),
            at_least("token_dim", self.token_dim, 8),
            at_least("hidden_dim", self.hidden_dim, 8),
            at_least("layers", self.layers, 1),
            at_least("heads", self.heads, 1),
            (self.token_dim % self.heads == 0 if isinstance(self.heads, int) and self.heads > 0 else True,
             f"token_dim ({self.token_dim}) must be a multiple of heads ({self.heads})"),
            at_least("epochs", self.epochs, 1),
            at_least("batch_size", self.batch_size, 2),
            above("lr", self.lr, 0),
            at_least("weight_decay", self.weight_decay, 0, integer=False),
            above("temperature", self.temperature, 0),
            in_range("name_share", self.name_share, 0, 1),
            in_range("holdout", self.holdout, 0, 0.5, "[)"),
            in_range("floor_quantile", self.floor_quantile, 0, 0.5),
            at_least("seed", self.seed, 0),
            at_least("threads", self.threads, 0),
        ], owner="text model:")
