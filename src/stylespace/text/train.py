"""Training a text model against a locked image model (LiT): InfoNCE between texts and the image model's
embeddings of the same items; only the text side learns.

>>> text_model = train_text_model(load_model("models/default"), catalog, ids=manifest.select("main", "train").ids)
>>> text_model.save("models/default/text")

Each step draws one text per item of a batch (its name with probability ``name_share``, else one of its
attribute phrases), embeds the texts, and scores every text against every image of the batch. The loss is
the symmetric cross-entropy of CLIP, with every item the text describes as a match (soft targets spread
over them): "men shirts" has many right answers in a batch of 512, and calling all but one of them wrong
would teach the model to tell apart items its words cannot tell apart.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stylespace.text.config import TextConfig
from stylespace.text.encoder import TextEncoder, batch_inputs
from stylespace.text.model import TextModel, TextModelInfo
from stylespace.text.phrases import ATTRIBUTES, Text, item_texts, phrase, vocabulary_texts
from stylespace.text.tokenizer import TextTokenizer
from stylespace.utils import StylespaceError

FACT_COLUMNS = ("name", *ATTRIBUTES)
PHRASES_PER_ITEM = 8
FEATURE_CACHE = 50_000  # texts whose features are kept between epochs
# Strings of random letters: what the floor should turn away (reported as ``gibberish_below_floor``).
GIBBERISH = 200


def train_text_model(image_model, catalog, ids: Sequence[str] | None = None, config: TextConfig | None = None, *,
                     embeddings=None, image_model_path: str = "", split_path: str = "", device: str = "auto",
                     progress: bool = True, log: Callable[[str], None] | None = None) -> TextModel:
    """Train a text model for ``image_model`` on the ``ids`` of ``catalog`` (default: every item).

    Args:
        embeddings: the image model's :class:`stylespace.embeddings.Embeddings` of the catalog, when made
            already (else made here with ``embed_catalog``); its model id must be ``image_model``'s.
        image_model_path, split_path: recorded in the model's info.
        log: called with one line per epoch.
    Returns the trained :class:`TextModel` (not saved).
    """
    from stylespace.embeddings import embed_catalog
    from stylespace.models import model_id

    config = config or TextConfig()
    started = time.perf_counter()
    image_id = model_id(image_model)
    if embeddings is None:
        embeddings = embed_catalog(image_model, catalog, device=device, progress=progress)
    if embeddings.model_id != image_id:
        raise StylespaceError(f"the image embeddings were made by model {embeddings.model_id}, not by the image model "
                              f"{image_id} the text model is trained for; embed the catalog with that model")
    usable = set(embeddings.ids) - set(embeddings.meta.get("blank", []))
    wanted = list(catalog.ids if ids is None else ids)
    kept = [i for i in wanted if i in usable]
    if len(kept) < 16:
        raise StylespaceError(f"only {len(kept)} of the {len(wanted)} training items have a usable image; a text model "
                              "needs at least 16 (and thousands to be useful)")
    row = {item_id: k for k, item_id in enumerate(embeddings.ids)}
    vectors = np.ascontiguousarray(embeddings.vectors[[row[i] for i in kept]], dtype=np.float32)
    metas = [catalog[i].meta for i in kept]

    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(kept))
    n_holdout = int(round(config.holdout * len(kept))) if len(kept) >= 40 else 0
    holdout, train = np.sort(order[:n_holdout]), np.sort(order[n_holdout:])
    pools = [item_texts(m, rng, PHRASES_PER_ITEM) for m in metas]
    if not any(name or phrases for name, phrases in pools):
        raise StylespaceError(f"{catalog.source_path}: the items have neither names nor attributes "
                              f"({', '.join(ATTRIBUTES)}) to learn words from")
    train_texts = [t.text for k in train for t in _pool_texts(pools[k])]
    tokenizer = TextTokenizer.train(vocabulary_texts([metas[k] for k in train]), train_texts, config.vocab_size,
                                    (config.ngram_min, config.ngram_max), config.min_count, config.max_ngrams)
    codes = _fact_codes(metas)

    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _fit(config, tokenizer, vectors, codes, pools, metas, train, holdout, rng, image_id, image_model_path,
                    catalog, split_path, started, log)
    finally:
        torch.set_num_threads(threads)


def _fit(config, tokenizer, vectors, codes, pools, metas, train, holdout, rng, image_id, image_model_path, catalog,
         split_path, started, log) -> TextModel:
    """The training loop, the held-out measures and the floor (see :func:`train_text_model`)."""
    torch.manual_seed(config.seed)
    encoder = TextEncoder(tokenizer.size, tokenizer.pieces, vectors.shape[1], config)
    sparse = torch.optim.SparseAdam(encoder.sparse_parameters(), lr=config.lr)
    dense = torch.optim.AdamW(encoder.dense_parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(train) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    image_tensor = torch.from_numpy(vectors)
    code_tensor = torch.from_numpy(codes)
    history = []
    features_cache: dict[str, object] = {}

    def featurise(texts: list[Text]):
        # the attribute phrases repeat (a few thousand distinct), the names do not: a bounded cache holds the former
        out = []
        for t in texts:
            found = features_cache.get(t.text)
            if found is None:
                found = tokenizer.features(t.text)
                if len(features_cache) < FEATURE_CACHE:
                    features_cache[t.text] = found
            out.append(found)
        return out

    step = 0
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        encoder.train()
        losses = []
        shuffled = rng.permutation(train)
        for start in range(0, steps_per_epoch * config.batch_size, config.batch_size):
            batch = shuffled[start:start + config.batch_size]
            texts = [_draw(pools[k], rng, config.name_share) for k in batch]
            lr = config.lr * _schedule(step, total_steps)
            for optimizer in (sparse, dense):
                for group in optimizer.param_groups:
                    group["lr"] = lr
            loss = _loss(encoder, tokenizer, featurise(texts), texts, batch, image_tensor, code_tensor, config)
            sparse.zero_grad()
            dense.zero_grad()
            loss.backward()
            sparse.step()
            dense.step()
            with torch.no_grad():
                encoder.logit_scale.clamp_(0.0, math.log(100.0))
            losses.append(loss.item())
            step += 1
        record = {"epoch": epoch, "loss": round(float(np.mean(losses)), 5),
                  "seconds": round(time.perf_counter() - epoch_started, 2)}
        if len(holdout) >= 2:
            record["holdout_loss"] = round(_holdout_loss(encoder, tokenizer, pools, holdout, image_tensor, code_tensor,
                                                         config), 5)
        history.append(record)
        if log is not None:
            log(f"epoch {epoch}/{config.epochs}: loss {record['loss']:.4f}"
                + (f", held-out loss {record['holdout_loss']:.4f}" if "holdout_loss" in record else "")
                + f" ({record['seconds']:.1f} s)")
    encoder.eval()
    info = TextModelInfo(image_model_id=image_id, output_dim=int(vectors.shape[1]), image_model=str(image_model_path),
                         catalog=str(catalog.source_path), split=str(split_path), items=int(len(train)),
                         holdout=int(len(holdout)), history=history)
    model = TextModel(tokenizer, encoder, config, info)
    _calibrate(model, pools, metas, holdout if len(holdout) else train, train, vectors, codes, rng)
    info.train_seconds = round(time.perf_counter() - started, 1)
    return model


# --- batches and the loss -------------------------------------------------------------------------------------


def _pool_texts(pool) -> list[Text]:
    name, phrases = pool
    return ([name] if name else []) + list(phrases)


def _draw(pool, rng: np.random.Generator, name_share: float) -> Text:
    name, phrases = pool
    if name is not None and (not phrases or rng.random() < name_share):
        return name
    return phrases[int(rng.integers(len(phrases)))] if phrases else name


def _fact_codes(metas) -> np.ndarray:
    """(N, F) int64: per item, a code per fact column (equal codes = equal values; -1 = no value)."""
    from stylespace.text.phrases import item_name

    codes = np.full((len(metas), len(FACT_COLUMNS)), -1, dtype=np.int64)
    for f, column in enumerate(FACT_COLUMNS):
        table: dict[str, int] = {}
        for k, meta in enumerate(metas):
            value = item_name(meta) if column == "name" else str(meta.get(column) or "").strip()
            if value:
                codes[k, f] = table.setdefault(value, len(table))
    return codes


def _targets(texts: Sequence[Text], batch: np.ndarray, codes: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: text i describes the item of column j (it has every fact the text states)."""
    used = torch.zeros((len(texts), len(FACT_COLUMNS)), dtype=torch.bool)
    for i, t in enumerate(texts):
        for column, _ in t.facts:
            used[i, FACT_COLUMNS.index(column)] = True
    item_codes = codes[torch.as_tensor(batch)]
    same = item_codes[:, None, :] == item_codes[None, :, :]
    match = (same | ~used[:, None, :]).all(-1)
    match |= torch.eye(len(texts), dtype=torch.bool)  # an item always matches its own text
    return match


def _contrastive(text_vectors: torch.Tensor, image_vectors: torch.Tensor, match: torch.Tensor,
                 scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with soft targets spread over every match."""
    logits = scale.exp() * text_vectors @ image_vectors.T
    targets = match.float()
    text_to_image = -(targets / targets.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
    image_to_text = -(targets.T / targets.T.sum(1, keepdim=True) * F.log_softmax(logits.T, 1)).sum(1).mean()
    return (text_to_image + image_to_text) / 2


def _loss(encoder, tokenizer, features, texts, batch, images, codes, config) -> torch.Tensor:
    inputs = batch_inputs(features, tokenizer.pieces, config.encoder == "transformer")
    return _contrastive(encoder(*inputs), images[torch.as_tensor(batch)], _targets(texts, batch, codes),
                        encoder.logit_scale)


@torch.no_grad()
def _holdout_loss(encoder, tokenizer, pools, holdout, images, codes, config) -> float:
    encoder.eval()
    rng = np.random.default_rng(0)  # the same held-out texts every epoch
    losses = []
    for start in range(0, len(holdout), config.batch_size):
        batch = holdout[start:start + config.batch_size]
        if len(batch) < 2:
            continue
        texts = [_draw(pools[k], rng, config.name_share) for k in batch]
        losses.append(float(_loss(encoder, tokenizer, [tokenizer.features(t.text) for t in texts], texts, batch,
                                  images, codes, config)))
    encoder.train()
    return float(np.mean(losses)) if losses else float("nan")


def _schedule(step: int, total: int, warmup: float = 0.05) -> float:
    """Linear warm-up, then cosine decay to 5 %."""
    warm = max(1, int(warmup * total))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# --- what it measures after training --------------------------------------------------------------------------


def _calibrate(model: TextModel, pools, metas, measured: np.ndarray, train: np.ndarray, vectors: np.ndarray,
               codes: np.ndarray, rng: np.random.Generator) -> None:
    """The similarity floor and held-out recall: the held-out items' full phrases ("women red tops") and names
    as queries against every image the model was trained with plus the held-out ones."""
    gallery = np.concatenate([train, measured]) if measured is not train else train
    gallery_vectors = vectors[gallery]
    gallery_codes = codes[gallery]
    metrics: dict[str, float] = {}
    best: list[np.ndarray] = []
    full = ("gender", "baseColour", "articleType")
    for kind, texts in (
        ("phrase", [(k, phrase(metas[k], full)) for k in measured]),
        ("name", [(k, pools[k][0].text) for k in measured if pools[k][0] is not None]),
    ):
        texts = [(k, t) for k, t in texts if t]
        if not texts:
            continue
        items = np.array([k for k, _ in texts])
        encoded = model.encode([t for _, t in texts])
        top, most = _top10(encoded, gallery_vectors)
        # a hit: the item itself, or one with its gender, colour and article type
        wanted = codes[items][:, [FACT_COLUMNS.index(c) for c in full]]
        found = gallery_codes[:, [FACT_COLUMNS.index(c) for c in full]][top]
        hit = (found == wanted[:, None, :]).all(-1) | (gallery[top] == items[:, None])
        metrics[f"r10_{kind}"] = round(float(hit.any(1).mean()), 4)
        metrics[f"p10_{kind}"] = round(float(hit.mean()), 4)
        best.append(most)
    tops = np.concatenate(best)
    floor = float(np.quantile(tops, model.config.floor_quantile))
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    gibberish = [" ".join("".join(rng.choice(letters, size=int(rng.integers(4, 9)))) for _ in range(int(rng.integers(1, 4))))
                 for _ in range(GIBBERISH)]
    read = [model.read_query(g) for g in gibberish]
    vectors_read = [r.vector for r in read if r.vector is not None]
    refused_words = sum(r.vector is None for r in read)
    below = 0
    if vectors_read:
        below = int((_top10(np.stack(vectors_read), gallery_vectors)[1] < floor).sum())
    metrics["gibberish_refused"] = round((refused_words + below) / len(gibberish), 4)
    metrics["gibberish_unknown_words"] = round(refused_words / len(gibberish), 4)
    model.info.floor = round(floor, 5)
    model.info.floor_note = (f"the {model.config.floor_quantile:.0%} quantile of the best item's similarity for "
                             f"{len(tops)} held-out phrases and names")
    model.info.metrics = metrics


def _top10(queries: np.ndarray, gallery: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """((Q, 10) gallery rows most similar to each query, best first; (Q,) the best similarity), in chunks
    (the held-out queries of the whole catalog against 36k images would be a 260 MB matrix at once)."""
    tops, best = [], []
    for start in range(0, len(queries), chunk):
        similarity = queries[start:start + chunk] @ gallery.T
        k = min(10, similarity.shape[1])
        part = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(similarity, part, 1), axis=1)
        tops.append(np.take_along_axis(part, order, 1))
        best.append(similarity.max(1))
    return np.concatenate(tops), np.concatenate(best)


def train_text_run(image_model_dir, catalog_path, out_dir, split_path=None, config: TextConfig | None = None, *,
                   device: str = "auto", progress: bool = True, log: Callable[[str], None] | None = None) -> TextModel:
    """What ``stylespace text-train`` does: load the image model (a folder or a shipped name) and the catalog,
    train on the split's ``train`` rows (every item without a split), and save the text model to ``out_dir``."""
    from stylespace.data import SplitManifest, load_catalog
    from stylespace.models import load_model
    from stylespace.models.shipped import resolve_model_dir

    image_dir = resolve_model_dir(image_model_dir)
    image_model = load_model(image_dir)
    catalog = load_catalog(catalog_path)
    ids = None
    if split_path is not None:
        manifest = SplitManifest.load(split_path)
        ids = [r["id"] for r in manifest.rows if r["split"] == "train"]
        if not ids:
            raise StylespaceError(f"{split_path}: the split has no train rows to learn from")
        unknown = [i for i in ids[:1000] if i not in catalog]
        if unknown:
            raise StylespaceError(f"{split_path}: ids such as {unknown[:3]} are not in {catalog_path}; give the "
                                  "catalog the split was made from")
    model = train_text_model(image_model, catalog, ids, config, image_model_path=str(image_dir),
                             split_path="" if split_path is None else str(split_path), device=device,
                             progress=progress, log=log)
    model.save(out_dir)
    return model
