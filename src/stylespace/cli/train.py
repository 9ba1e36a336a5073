"""`stylespace train` (a model from a catalog and a split) and `stylespace embed` (a catalog's vectors)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from stylespace.cli._options import (JSON_OPTION, RAY_ADDRESS_OPTION, RAY_GPUS_OPTION, RAY_OPTION, RAY_WORKERS_OPTION,
                                     ray_config, with_engine)
from stylespace.cli._output import console, emit, out
from stylespace.utils import StylespaceError


def register(app: typer.Typer) -> None:
    app.command("train", help="Train an embedding model on a catalog's training split (one run folder per run).")(train_cmd)
    app.command("embed", help="Turn a catalog into an embeddings file (vectors + ids) with a trained model.")(embed_cmd)


def _ints(text: Optional[str], name: str) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise StylespaceError(f"{name} {text!r}: expected comma-separated integers, e.g. 1,1,1,1") from None


def train_cmd(
    catalog_path: Path = typer.Argument(..., metavar="CATALOG", help="The catalog (Kaggle zip/folder, image tree, manifest...)."),
    split: Path = typer.Option(..., "--split", help="Split manifest from `stylespace split`; trains on main/train."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Run folder (model, configs, history, curves, checkpoint)."),
    preset_name: Optional[str] = typer.Option(None, "--preset", help="Starting settings: cpu (~5 min on 2 cores; "
                                                             "the default), default (the shipped model, ~60 min on 2 "
                                                             "cores), lite0 (EfficientNet-Lite0 from ImageNet, frozen, "
                                                             "head trained on cached features), packshot (the earlier "
                                                             "default), gpu, small "
                                                             "(28 x 28 grey images; the default up to 32 px a side), or "
                                                             "finetune (the default with --init; finetune-frozen for a "
                                                             "lite0 parent), distill (the compact network learning "
                                                             "models/default's vectors: the fast tier)."),
    init: Optional[str] = typer.Option(None, "--init", help="Fine-tune a trained stylespace model: `default` (the "
                                       "shipped one), a run folder or a model folder. Its architecture, backbone and "
                                       "embedding head are kept; the classifier is new, for this catalog's classes."),
    freeze_backbone_epochs: Optional[int] = typer.Option(None, help="Fine-tuning: epochs at the start that train "
                                                                    "everything but the backbone."),
    backbone_lr_factor: Optional[float] = typer.Option(None, help="Fine-tuning: the backbone's learning rate is "
                                                                  "--lr times this."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Distil from this trained model (distill preset: "
                                          "default): the student learns its vectors, PCA-reduced to its own width."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out with its own settings."),
    backbone: Optional[str] = typer.Option(None, help="compact, lenet, resnet18, resnet50, vgg16, inception_v3, or "
                                                      "efficientnet-lite0/1/2 (ImageNet weights from a pip package)."),
    weights: Optional[str] = typer.Option(None, help="Local pre-trained backbone weights (torchvision .pth or "
                                                     ".safetensors), or imagenet for efficientnet-lite0/1/2."),
    network_size: Optional[str] = typer.Option(None, help="HxW the backbone sees (images are resized to it inside "
                                                          "the model; lite0 preset: 160x120)."),
    head_hidden: Optional[int] = typer.Option(None, help="Width of a hidden layer in the embedding head (0 = none)."),
    head_share: Optional[float] = typer.Option(None, help="embed-layer both: the head's share of the cosine, 0-1."),
    cached_views: Optional[int] = typer.Option(None, help="N > 0: the backbone stays frozen and the head trains on "
                                                          "its features of N views per image, computed once and "
                                                          "cached (lite0 preset: 3); 0: train the whole network."),
    embedding_dim: Optional[int] = typer.Option(None, help="Embedding size D."),
    input_size: Optional[str] = typer.Option(None, help="Image size HxW in pixels (default 80x60)."),
    width: Optional[int] = typer.Option(None, help="compact/lenet: base channel width."),
    depth: Optional[str] = typer.Option(None, help="compact: residual blocks per stage, e.g. 1,1,1,1."),
    stem_stride: Optional[int] = typer.Option(None, help="compact: 2, or 4 (cheaper, for CPUs)."),
    multiscale: Optional[bool] = typer.Option(None, "--multiscale/--no-multiscale", help="Pool a shallow stage too (002)."),
    pooling: Optional[str] = typer.Option(None, help="avg, gem or avgmax."),
    dropout: Optional[float] = typer.Option(None, help="Dropout before the embedding layer."),
    classifier: Optional[str] = typer.Option(None, help="linear or cosine (normalised) classifier."),
    embed_layer: Optional[str] = typer.Option(None, help="What embed() returns: head (the trained embedding), "
                                                         "features (the pooled features under it; presets "
                                                         "cpu/default) or both (lite0)."),
    objective: Optional[str] = typer.Option(None, help="Terms joined by +, with optional :weight: ce, contrastive, "
                                                       "triplet, ms, arcface, instance (e.g. ce+instance:0.5)."),
    views: Optional[int] = typer.Option(None, help="Augmented views of each item per batch (instance needs 2)."),
    temperature: Optional[float] = typer.Option(None, help="instance: NT-Xent temperature."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
    batch_size: Optional[int] = typer.Option(None, help="Items per batch."),
    optimizer: Optional[str] = typer.Option(None, help="adam, adamw, sgd (momentum) or rmsprop."),
    schedule: Optional[str] = typer.Option(None, help="onecycle, cosine or constant."),
    weight_decay: Optional[float] = typer.Option(None, help="Weight decay (L2) on weight matrices."),
    sampler: Optional[str] = typer.Option(None, help="shuffle, m_per_class or rare_augment (000's balancing)."),
    m_per_class: Optional[int] = typer.Option(None, help="m_per_class sampler: items per class in a batch."),
    balance_power: Optional[float] = typer.Option(None, help="rare_augment: 0 = natural frequencies, 1 = balanced."),
    patience: Optional[int] = typer.Option(None, help="Early stopping patience in epochs (0 = off)."),
    label_smoothing: Optional[float] = typer.Option(None, help="ce: label smoothing."),
    margin: Optional[float] = typer.Option(None, help="contrastive: margin m."),
    pair_ratio: Optional[float] = typer.Option(None, help="contrastive: dissimilar pairs per similar pair (000: 20)."),
    gap: Optional[float] = typer.Option(None, help="triplet: gap g."),
    miner: Optional[str] = typer.Option(None, help="triplet: semihard, batch_hard or all."),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="On-the-fly augmentation."),
    val_fraction: Optional[float] = typer.Option(None, help="Part of the training split kept for validation."),
    seed: Optional[int] = typer.Option(None, help="Random seed (weights, sampling, augmentation)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (0 = default)."),
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.cli.data import parse_size
    from stylespace.training import preset, resume_configs, train_run
    from stylespace.training.distributed import is_primary_process
    from stylespace.training.presets import default_preset, finetune_preset
    from stylespace.utils import override

    if resume:
        model_config, train_config = resume_configs(out_dir)
        train_config = override(train_config, device=device, num_threads=threads)
        console.print(f"resuming {out_dir} with its saved settings ({model_config.backbone}, {train_config.objective})")
    else:
        size = parse_size(input_size) if input_size else None
        model_config, train_config = preset(preset_name or (finetune_preset(init) if init else default_preset(size)))
        architecture = dict(backbone=backbone, weights=weights, embedding_dim=embedding_dim, input_size=size,
                            width=width, depth=_ints(depth, "--depth"), stem_stride=stem_stride, multiscale=multiscale,
                            pooling=pooling, dropout=dropout, classifier=classifier, embed_layer=embed_layer,
                            network_size=parse_size(network_size) if network_size else None,
                            head_hidden=head_hidden, head_share=head_share)
        if init:
            given = [f"--{k.replace('_', '-')}" for k, v in architecture.items() if v is not None]
            if given:
                raise StylespaceError(f"{', '.join(given)}: a fine-tuning run (--init {init}) keeps its parent's "
                                      "architecture; leave these options out")
            model_config = None
        else:
            model_config = override(model_config, **architecture).validate()
        objective_config = override(train_config.objective_config, label_smoothing=label_smoothing, margin=margin,
                                    pair_ratio=pair_ratio, gap=gap, miner=miner, temperature=temperature)
        train_config = override(train_config, objective=objective, views=views, epochs=epochs, lr=lr, batch_size=batch_size,
                                optimizer=optimizer, schedule=schedule, weight_decay=weight_decay, sampler=sampler,
                                m_per_class=m_per_class, balance_power=balance_power, patience=patience,
                                augment=augment, val_fraction=val_fraction, seed=seed, device=device,
                                num_threads=threads, objective_config=objective_config, init=init,
                                freeze_backbone_epochs=freeze_backbone_epochs,
                                backbone_lr_factor=backbone_lr_factor, cached_views=cached_views,
                                teacher=teacher).validate()
    model, result, record = train_run(catalog_path, split, model_config, train_config, out_dir, resume=resume,
                                      progress=not as_json, log=lambda line: console.print(line))
    if not is_primary_process():
        return  # under torchrun, rank 0 reports for the run
    summary = {"run": str(out_dir), **record, "history": result.history}

    def render(r: dict) -> None:
        start = f"fine-tuned from {r['parent']['init']} ({r['parent']['model_id']})" if r.get("parent") else \
            (model_config.backbone if model_config else "")
        table = Table(title=f"{out_dir}: {start}, {train_config.objective}, {r['epochs_run']} epochs")
        for column in ("epoch", "train loss", "train acc", "val loss", "val acc", "seconds"):
            table.add_column(column, justify="right")
        pct = lambda v: "" if v is None else f"{100 * v:.1f} %"
        num = lambda v: "" if v is None else f"{v:.4f}"
        for row in r["history"]:
            table.add_row(str(row["epoch"]), num(row["train_loss"]), pct(row["train_accuracy"]), num(row["val_loss"]),
                          pct(row["val_metric"]), f"{row['seconds']:.0f}")
        out.print(table)
        out.print(f"kept epoch {r['best_epoch']} ({r['val_metric']} {pct(r['best_val_metric'])}); model id "
                  f"{r['model_id']}; {r['train_seconds']:.0f} s on {r['device']}")
        out.print(f"next: stylespace embed {out_dir} {catalog_path} -o embeddings.npz")

    emit(summary, as_json, render)


@with_engine
def embed_cmd(
    model_dir: Path = typer.Argument(..., metavar="MODEL", help="A model folder (a `stylespace train` run)."),
    catalog_path: Path = typer.Argument(..., metavar="CATALOG", help="The catalog to embed."),
    output: Path = typer.Option(..., "-o", "--output", help="Embeddings file to write (.npz)."),
    batch_size: int = typer.Option(512, help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    ray: bool = RAY_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    ray_workers: Optional[int] = RAY_WORKERS_OPTION,
    ray_gpus: Optional[float] = RAY_GPUS_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    from stylespace.data import load_catalog
    from stylespace.embeddings import embed_catalog
    from stylespace.models import load_model
    from stylespace.ray_embedding import embed_catalog_ray

    started = time.perf_counter()
    on_ray = ray_config(ray, ray_address, ray_workers, ray_gpus)
    model = load_model(model_dir)
    catalog = load_catalog(catalog_path)
    if on_ray is not None:
        embeddings = embed_catalog_ray(model, catalog, on_ray, batch_size=batch_size, device=device,
                                       progress=not as_json)
    else:
        embeddings = embed_catalog(model, catalog, batch_size=batch_size, device=device, progress=not as_json)
    embeddings.save(output)
    result = {"output": str(output), "items": len(embeddings), "dim": embeddings.dim, "model_id": embeddings.model_id,
              "labelled": embeddings.labels is not None, "failed": len(embeddings.meta["failed"]),
              "blank": len(embeddings.meta["blank"]), "seconds": round(time.perf_counter() - started, 2)}

    def render(r: dict) -> None:
        out.print(f"{r['output']}: {r['items']:,} vectors of {r['dim']} dims (model {r['model_id']}) in "
                  f"{r['seconds']:.1f} s" + (f"; {r['failed']} images failed to decode" if r["failed"] else "")
                  + (f"; {r['blank']} blank or nearly uniform images (embedded all the same)" if r["blank"] else ""))

    emit(result, as_json, render)
