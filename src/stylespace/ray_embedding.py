"""Embedding a catalog on a Ray cluster: ``stylespace embed MODEL CATALOG -o FILE --ray [ADDRESS]``.

The catalog's rows are cut into shards (a Ray Data dataset of row numbers and image sources); a pool of Ray
actors, one per worker CPU or GPU the cluster has, each holding the model and the catalog's reader (not its
items: a worker's memory does not grow with the catalog), decodes every row of a shard
into its canonical view (the image cache's decoder, :func:`stylespace.data.cache.decode_item`) and embeds
it with :func:`stylespace.embeddings.embed_images`, through ``map_batches``. The driver puts the vectors
back in catalog order, so the result is what the single-process path gives: the same ids, the same
undecodable and blank items, vectors equal to float precision (tests/test_ray_embedding.py: max
difference <= 1e-5).

Every worker reads the catalog's images itself: the catalog's files (zip, folder or manifest paths) must
be readable on every node (a shared filesystem, or object storage mounted at the same path; see docs/scale.md).

>>> embeddings = embed_catalog_ray(load_model("models/default"), load_catalog("catalog.zip"), RayConfig())
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
from typing import Sequence

import numpy as np

from stylespace.embeddings import Embeddings, catalog_embeddings, embed_images
from stylespace.progress import steps
from stylespace.utils import StylespaceError, above, at_least, validate

# Rows handed to the actor pool per block (Ray Data splits a block into map_batches batches).
_BLOCK_ROWS = 4096


@dataclasses.dataclass
class RayConfig:
    """Where and how wide to embed.

    Attributes:
        address: the cluster to join (``auto``, ``HOST:6379`` or ``ray://HOST:10001``); None: the one
            ``$RAY_ADDRESS`` names, else a local Ray started on this machine for the run (and stopped after).
        workers: embedding actors; 0 = as many as the cluster's CPUs (or GPUs, with ``gpus_per_worker``) allow.
        cpus_per_worker / gpus_per_worker: what each actor reserves (a GPU share puts the model on it).
        shard_rows: catalog rows decoded and embedded per ``map_batches`` call.
        num_cpus / object_store_memory: the local Ray's size (0 cores = all of them; the object store holds
            only row numbers and vectors in passing: 1 GiB by default); ignored when joining a cluster.
    """

    address: str | None = None
    workers: int = 0
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    shard_rows: int = 256
    num_cpus: int = 0
    object_store_memory: int = 1 << 30

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "RayConfig":
        """Check the settings (run when the config is made)."""
        validate([
            at_least("workers", self.workers, 0, note="0 = one per CPU or GPU"),
            above("cpus_per_worker", self.cpus_per_worker, 0),
            at_least("gpus_per_worker", self.gpus_per_worker, 0, integer=False),
            at_least("shard_rows", self.shard_rows, 1),
            at_least("num_cpus", self.num_cpus, 0, note="0 = all of them"),
            at_least("object_store_memory", self.object_store_memory, 0, note="bytes"),
        ], "Ray")
        return self


def import_ray():
    """The ``ray`` module, or a clear error naming the extra that installs it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise StylespaceError("embedding with --ray needs Ray Data, which is not installed: "
                              "pip install 'stylespace[distributed]'") from None
    return ray


class RaySession:
    """Context manager: joins ``config.address`` (or starts a local Ray); shuts down only a Ray it started.
    A Ray already running in this process (``ray.init`` by the caller) is used as it is."""

    def __init__(self, config: RayConfig):
        self.config, self.ray, self.started = config, import_ray(), False

    def __enter__(self):
        ray = self.ray
        if ray.is_initialized():
            return ray
        options = dict(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="warning")
        address = self.config.address or os.environ.get("RAY_ADDRESS")
        try:
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=self.config.num_cpus or None,
                         object_store_memory=self.config.object_store_memory or None, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = address or "a local Ray"
            raise StylespaceError(f"could not start or join {where}: {str(exc).splitlines()[0]}; check the address "
                                  "(`ray status` on the head node), or leave --ray-address out: a local Ray") from None
        self.started = True
        return ray

    def __exit__(self, *exc) -> bool:
        if self.started:
            self.ray.shutdown()
        return False


class EmbedShard:
    """A Ray Data actor: decodes the rows of a shard (a batch ``{"row": (n,) int64, "source": (n,) str}``,
    sources read by ``reader``, a catalog without items) and embeds them.

    Returns ``{"row", "vector" (n, D) float32, "failed" (n,) reason or "", "blank" (n,) bool}``; a failed
    row's vector is zeros (the driver leaves it out)."""

    def __init__(self, model, reader, batch_size: int, device: str, engine: str):
        import torch

        from stylespace.inference import make_embedder
        from stylespace.utils import pick_device

        self.reader, self.batch_size = reader, batch_size
        self.device = pick_device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
        self.size = tuple(model.config.input_size)
        self.output_dim = model.output_dim
        self.embedder = make_embedder(model.to(self.device).eval(), engine, self.device, batch_size=batch_size)

    def __call__(self, batch: dict) -> dict:
        from stylespace.data import Item
        from stylespace.data.cache import decode_item

        rows = np.asarray(batch["row"], dtype=np.int64)
        pixels = np.zeros((len(rows), *self.size, 3), np.uint8)
        failed = np.full(len(rows), "", dtype=object)
        blank = np.zeros(len(rows), dtype=bool)
        for k, (row, source) in enumerate(zip(rows, batch["source"])):
            view, reason = decode_item(self.reader, Item(str(row), str(source), None, {}), self.size)
            if view is None:
                failed[k] = reason
            else:
                pixels[k], blank[k] = view.pixels, view.blank
        vectors = np.zeros((len(rows), self.output_dim), dtype=np.float32)
        ok = failed == ""
        if ok.any():
            vectors[ok] = embed_images(self.embedder, pixels[ok], batch_size=self.batch_size)
        return {"row": rows, "vector": vectors, "failed": failed.astype(str), "blank": blank}


@dataclasses.dataclass
class ItemVectors:
    """Vectors of the catalog items asked for, made on a Ray cluster.

    Attributes:
        ids: the items that decoded, in the order they were asked for (the catalog's, by default).
        vectors: (len(ids), D) float32, unit-length rows.
        failed: id -> why it has no vector (its image fails to decode, or it is not in the catalog).
        blank: the ids (of ``ids``) whose image is blank or nearly uniform.
    """

    ids: list[str]
    vectors: np.ndarray
    failed: dict[str, str]
    blank: list[str]


def embed_items_ray(model, catalog, ids: Sequence[str] | None = None, config: RayConfig | None = None,
                    batch_size: int = 256, device: str = "auto", progress: bool = True) -> ItemVectors:
    """Decode and embed catalog items (all, or ``ids``) on a Ray cluster (see the module's docstring).

    Args:
        model: an :class:`~stylespace.models.EmbeddingModel` (sent once to every worker).
        ids: the items to embed, in the order wanted; default: the whole catalog in its order.
        config: the cluster and its width (:class:`RayConfig`; default: a local Ray with every core).
        batch_size: images per forward pass on a worker. device: ``cpu`` keeps workers off GPUs even where
            they have one; otherwise a worker given a GPU (``gpus_per_worker``) embeds on it.
    """
    config = config or RayConfig()
    wanted = list(catalog.ids) if ids is None else [str(i) for i in ids]
    position = {item_id: row for row, item_id in enumerate(catalog.ids)}
    failed = {i: "not in the catalog" for i in wanted if i not in position}
    asked = [i for i in wanted if i in position]
    rows = np.array([position[i] for i in asked], dtype=np.int64)
    dim = model.output_dim
    vectors = np.zeros((len(rows), dim), dtype=np.float32)
    reasons = np.full(len(rows), "", dtype=object)
    blank = np.zeros(len(rows), dtype=bool)
    if len(rows):
        import pandas

        from stylespace.inference import chosen_precision

        if chosen_precision() != "fp32":  # the int8 file is calibrated on decoded images, which the driver has not
            raise StylespaceError(f"--precision {chosen_precision()} does not run on a Ray cluster yet; embed "
                                  "without --ray, or at --precision fp32")
        slot = {int(row): k for k, row in enumerate(rows)}
        description = f"embedding {len(rows):,} images with Ray"
        with RaySession(config) as ray, steps(progress, len(rows), description) as advance:
            ray.data.DataContext.get_current().enable_progress_bars = False  # ours is the one progress bar
            workers = config.workers or _cluster_width(ray, config)
            # Blocks of up to _BLOCK_ROWS rows, and at least 4 per worker where there are rows enough.
            block_rows = min(_BLOCK_ROWS, math.ceil(len(rows) / (4 * workers)))
            # Rows put by the driver (no read tasks to schedule: every CPU can go to an actor).
            sources = [catalog.items[int(r)].source for r in rows]
            dataset = ray.data.from_pandas([
                pandas.DataFrame({"row": rows[i:i + block_rows], "source": sources[i:i + block_rows]})
                for i in range(0, len(rows), block_rows)])
            reader = dataclasses.replace(catalog, items=[], pairs=[], skipped=[])  # the catalog's reader alone
            results = dataset.map_batches(
                EmbedShard, fn_constructor_kwargs=dict(model=copy.deepcopy(model).cpu().eval(), reader=reader,
                                                       batch_size=batch_size, device=device,
                                                       engine=_engine(model, config, device, len(rows))),
                batch_size=config.shard_rows, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker or None)
            for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
                where = np.array([slot[int(r)] for r in batch["row"]], dtype=np.int64)
                vectors[where], reasons[where], blank[where] = batch["vector"], batch["failed"], batch["blank"]
                advance(len(where))
    failed.update({item_id: str(reason) for item_id, reason in zip(asked, reasons) if reason})
    failed = {i: failed[i] for i in wanted if i in failed}  # in the order asked, as the image cache lists them
    keep = reasons == ""
    kept = [item_id for item_id, ok in zip(asked, keep) if ok]
    return ItemVectors(kept, vectors[keep], failed, [item_id for item_id, b in zip(asked, blank & keep) if b])


def embed_catalog_ray(model, catalog, config: RayConfig | None = None, batch_size: int = 256,
                      device: str = "auto", progress: bool = True) -> Embeddings:
    """:func:`stylespace.embeddings.embed_catalog`'s result (the same ids, vectors, labels and provenance),
    decoded and embedded on a Ray cluster."""
    made = embed_items_ray(model, catalog, None, config, batch_size=batch_size, device=device, progress=progress)
    return catalog_embeddings(model, catalog, made.ids, made.vectors, made.failed, made.blank)


def _engine(model, config: RayConfig, device: str, images: int) -> str:
    """The engine every worker runs the model on, chosen once for the whole job as the single-process path
    chooses it for these images (``--engine``; ``auto``: ONNX Runtime on CPUs for many images), so that
    both give the same vectors; PyTorch for workers on GPUs."""
    from stylespace.inference import chosen_engine, resolve_engine

    if config.gpus_per_worker and device != "cpu":
        return "torch"
    return resolve_engine(chosen_engine(), "cpu", model, images=images)


def _cluster_width(ray, config: RayConfig) -> int:
    """How many actors the cluster holds at once: by its GPUs when each worker takes a GPU share, else its CPUs."""
    resources = ray.cluster_resources()
    if config.gpus_per_worker:
        width = int(resources.get("GPU", 0) / config.gpus_per_worker)
        if width < 1:
            raise StylespaceError(f"the Ray cluster has no GPU for workers asking {config.gpus_per_worker} each; "
                                  "leave gpus_per_worker at 0 to embed on CPUs")
        return width
    return max(1, int(resources.get("CPU", 1) / config.cpus_per_worker))
