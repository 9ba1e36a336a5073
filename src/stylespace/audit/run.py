"""Running an audit: every finding about a catalog (and a split of it), as one :class:`AuditResult`."""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from stylespace.audit.calibrate import CopyMeasurement, measure_copy_distances
from stylespace.audit.config import AuditConfig, AuditSettings
from stylespace.audit.copies import cluster_copies, components, nearest, pixel_hashes, pooled_views
from stylespace.audit.quality import Blank, Outlier, OutlierRule, Tiny, blank_items, outliers, tiny_items
from stylespace.audit.vectors import Embedder
from stylespace.utils import StylespaceError, atomic_write, save_dataclass, to_jsonable

AUDIT_JSON = "audit.json"
CONFIG_JSON = "config.json"
CLEAN_SPLIT = "split.clean.csv"
PART_ORDER = ("train", "val", "support", "test")  # which member of a cluster --fix keeps: the earliest part


@dataclasses.dataclass
class Cluster:
    """Items that are copies of one image.

    kind: ``exact`` (all pixel-identical) or ``near`` (at least one near-copy link).
    labels: each member's label; conflict: they are not all the same.
    parts: each member's ``group/split`` in the split ("" when not in it, or no split); straddles: the
        members in the split sit in more than one part.
    """

    id: int
    members: list[str]
    kind: str
    labels: list[str | None]
    conflict: bool
    parts: list[str] = dataclasses.field(default_factory=list)
    straddles: bool = False


@dataclasses.dataclass
class SplitFindings:
    """What the copies and blank images mean for a split.

    part_leaks: "A in B" -> {"exact": items of part A with a pixel-identical copy in part B, "any": with
        any copy (pixel-identical or near)}, for every pair of parts that has one.
    scenario_leaks: per scenario of seed 004, query items with a copy in its support set ("exact", "any").
    straddling: {"exact": pixel-identical groups in more than one part, "any": clusters in more than one part}.
    blank: blank or nearly uniform images in the split.
    clean_split: the cleaned manifest written by ``fix`` (or ""), with what it left out.
    """

    n_rows: int
    straddling: dict[str, int]
    part_leaks: dict[str, dict[str, int]]
    scenario_leaks: dict[str, dict[str, int]]
    blank: int
    clean_split: str = ""
    clean_rows: int = 0
    removed: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class AuditResult:
    """Every finding of one audit (see docs/audit.md for what each means)."""

    config: AuditConfig
    n_items: int
    failed: dict[str, str]
    groups: list[list[str]]
    clusters: list[Cluster]
    near: list[tuple[str, str, float, float]]
    blank: list[Blank]
    tiny: list[Tiny]
    outliers: list[Outlier]
    outlier_rule: OutlierRule | None
    split: SplitFindings | None = None
    calibration: CopyMeasurement | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    removed: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (id, reason) left out by fix

    def counts(self) -> dict:
        """The numbers a person reads first."""
        exact_items = sum(len(g) for g in self.groups)
        labels = {m: l for c in self.clusters for m, l in zip(c.members, c.labels)}
        exact_conflicts = sum(1 for g in self.groups if len({labels.get(m) for m in g}) > 1)
        near = [c for c in self.clusters if c.kind == "near"]
        out = {
            "items": self.n_items,
            "failed to decode": len(self.failed),
            "pixel-identical groups": len(self.groups),
            "items in pixel-identical groups": exact_items,
            "extra pixel-identical copies": exact_items - len(self.groups),
            "pixel-identical groups with different labels": exact_conflicts,
            "near-copy pairs": len(self.near),
            "clusters (pixel-identical or near)": len(self.clusters),
            "clusters with a near copy": len(near),
            "items in clusters": sum(len(c.members) for c in self.clusters),
            "largest cluster": max((len(c.members) for c in self.clusters), default=0),
            "clusters with different labels": sum(1 for c in self.clusters if c.conflict),
            "blank images": sum(1 for b in self.blank if b.kind == "blank"),
            "nearly uniform images": sum(1 for b in self.blank if b.kind != "blank"),
            "tiny images": len(self.tiny),
            "outliers": len(self.outliers),
        }
        if self.split is not None:
            s = self.split
            out.update({
                "split items": s.n_rows,
                "pixel-identical groups straddling parts": s.straddling["exact"],
                "clusters straddling parts": s.straddling["any"],
                **{f"{k}: exact copy": v["exact"] for k, v in s.part_leaks.items()},
                **{f"{k}: any copy": v["any"] for k, v in s.part_leaks.items()},
                "blank images in the split": s.blank,
            })
            if s.clean_split:
                out["cleaned split items"] = s.clean_rows
        return out

    def to_dict(self) -> dict:
        data = to_jsonable(dataclasses.asdict(self))
        data["counts"] = self.counts()
        data["near"] = [dict(zip(("a", "b", "distance", "pixels"), pair)) for pair in self.near]
        return {"counts": data.pop("counts"), **data}

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``audit.json`` and ``config.json`` into ``folder``, atomically; returns the audit.json path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / AUDIT_JSON
        with atomic_write(path, "w") as handle:
            json.dump(self.to_dict(), handle, indent=1)
            handle.write("\n")
        save_dataclass(self.config, folder / CONFIG_JSON)
        return path


def load_clusters(path: str | os.PathLike) -> tuple[list[list[str]], str]:
    """(clusters, description) from an ``audit.json`` (or the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / AUDIT_JSON
    try:
        data = json.loads(path.read_text())
        clusters = [[str(m) for m in c["members"]] for c in data["clusters"]]
        config = data.get("config", {})
    except FileNotFoundError:
        raise StylespaceError(f"{path}: audit file not found; write one with `stylespace audit CATALOG -o FOLDER`") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StylespaceError(f"{path}: not an audit file ({type(exc).__name__}: {exc}); expected the audit.json "
                              "written by `stylespace audit`") from None
    return clusters, (f"audit {path} ({config.get('embedder', '?')}, near copies under {config.get('near_distance')}"
                      f" / {config.get('near_pixels')} px / shift {config.get('near_shift')})")


def run_audit(catalog, settings: AuditSettings | None = None, *, model=None, manifest=None, embeddings=None,
              calibrate: bool = False, batch_size: int = 256, device: str = "auto", progress: bool = False,
              log: Callable[[str], None] | None = None, output: str | os.PathLike | None = None) -> AuditResult:
    """Audit ``catalog`` (a :class:`~stylespace.data.Catalog`).

    Args:
        settings: what to look for (:class:`AuditSettings`); an :class:`AuditConfig` may also name the catalog,
            split and model as the user gave them (recorded; default: the catalog's source path). The result's
            ``config`` is the record of the audit: these settings, the near-copy gate used, what was read.
        model: an :class:`~stylespace.models.EmbeddingModel` for near copies and outliers; None: coarse pixel
            vectors (:func:`stylespace.audit.vectors.pixel_vectors`).
        manifest: a :class:`~stylespace.data.SplitManifest` of the catalog: copies across its parts, leaks per
            scenario, and (with ``config.fix``) the cleaned manifest.
        embeddings: an :class:`~stylespace.embeddings.Embeddings` of ``model`` on this catalog (``stylespace
            embed``), used instead of embedding again; it must have the model's id and every decoded item.
        calibrate: measure copy distances with this embedder and set ``near_distance`` from them.
        output: the audit folder (needed for ``config.fix``: the cleaned manifest is written there).
    """
    from stylespace.data import load_image_array
    from stylespace.models import model_id

    settings = settings or AuditSettings()
    log = log or (lambda message: None)
    seconds: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(stage: str) -> None:
        now = time.perf_counter()
        seconds[stage] = round(now - clock[0], 2)
        clock[0] = now
        log(f"{stage}: {seconds[stage]:.1f} s")

    if settings.fix and manifest is None:
        raise StylespaceError("--fix writes a cleaned split manifest: give the split to clean with --split")
    if settings.fix and output is None:
        raise StylespaceError("fix needs the audit folder to write the cleaned split manifest into")
    named = settings if isinstance(settings, AuditConfig) else AuditConfig()
    config = AuditConfig(
        **{f.name: getattr(settings, f.name) for f in dataclasses.fields(AuditSettings)},
        catalog=named.catalog or str(catalog.source_path), catalog_fingerprint=catalog.fingerprint(),
        split=named.split, split_sha256=manifest.sha256 if manifest is not None else "", model=named.model,
        model_id=model_id(model) if model is not None else "", embedder="model" if model is not None else "pixels",
        size=tuple(int(v) for v in model.config.input_size) if model is not None else named.size)
    notes: list[str] = []

    array = load_image_array(catalog, size=config.size, progress=progress)
    ids = list(array.ids)
    lap("image cache")
    blank = blank_items(array, catalog)
    skip = {b.id for b in blank}
    hashes = pixel_hashes(array.pixels)
    lap("pixel hashes")
    embed = Embedder(model, batch_size=batch_size, device=device)
    if embeddings is not None:
        vectors = _reuse(embeddings, model, ids)
        lap("vectors (embeddings file)")
    else:
        vectors = embed(array.pixels, progress=progress)
        lap(f"vectors ({embed.name})")
    pooled = pooled_views(array.pixels)
    searched = np.array([i for i, item_id in enumerate(ids) if item_id not in skip], dtype=np.int64)
    found = nearest(vectors, searched, max(config.neighbours, config.outlier_k))
    lap("nearest neighbours")

    calibration = None
    if calibrate:
        counts = collections.Counter(hashes)
        copied = {item_id for item_id, digest in zip(ids, hashes) if counts[digest] > 1}
        calibration = measure_copy_distances(catalog, ids, vectors, pooled, embed, config.size, config.near_pixels,
                                             config.near_shift, exclude=skip | copied)
        config = dataclasses.replace(config, near_distance=calibration.near_distance)
        lap("calibration")
    elif config.near_distance is None and model is not None:
        notes.append(f"near-copy gate {config.near_gate} is the one measured for the shipped model (models/default); "
                     "for another model, --near-distance auto measures it")
    if config.near_distance is None:
        config = dataclasses.replace(config, near_distance=config.near_gate)  # the gate used, on record

    near_found = dataclasses.replace(found, distances=found.distances[:, :config.neighbours],
                                     indices=found.indices[:, :config.neighbours])
    copies = cluster_copies(ids, hashes, vectors if config.near_pixels > 0 else None, pooled, config.near_distance,
                            config.near_pixels, config.near_shift, skip=skip, found=near_found)
    exact_sets = {frozenset(g) for g in copies.groups}
    labels = {item.id: item.label for item in catalog.items}
    clusters = []
    for number, members in enumerate(copies.clusters, 1):
        member_labels = [labels.get(m) for m in members]
        clusters.append(Cluster(number, members, "exact" if frozenset(members) in exact_sets else "near",
                                member_labels, len(set(member_labels)) > 1))
    lap("copies")

    outlier_list, rule = [], None
    if found.distances.shape[1] >= config.outlier_k and len(searched) > config.outlier_k:
        outlier_list, rule = outliers([ids[r] for r in searched], found.distances[:, config.outlier_k - 1],
                                      config.outlier_k, config.outlier_percentile, config.outlier_spread)
    else:
        notes.append(f"outliers not looked for: fewer than {config.outlier_k + 1} items")
    tiny, tiny_note = tiny_items(catalog, ids, config.tiny_side)
    if tiny_note:
        notes.append(tiny_note)
    lap("blank, tiny and outlier images")

    result = AuditResult(config, len(catalog), dict(array.failed), copies.groups, clusters, copies.near, blank, tiny,
                         outlier_list, rule, calibration=calibration, notes=notes, seconds=seconds)
    if manifest is not None:
        result.split = split_findings(result, manifest)
        if config.fix:
            clean, removed = clean_manifest(result, manifest)
            path = Path(output) / CLEAN_SPLIT
            clean.save(path)
            result.split.clean_split, result.split.clean_rows = str(path), len(clean)
            result.split.removed = dict(collections.Counter(reason.split(" (")[0] for _, reason in removed))
            result.removed = removed
        lap("split")
    return result


def _reuse(embeddings, model, ids: list[str]) -> np.ndarray:
    """The rows of ``embeddings`` for ``ids``, after checking they were made by ``model``."""
    from stylespace.models import model_id

    if model is None:
        raise StylespaceError("an embeddings file needs the model that made it (--model)")
    if embeddings.model_id != model_id(model):
        raise StylespaceError(f"the embeddings file was made by model {embeddings.model_id}, not by the model given "
                              f"({model_id(model)}); embed again with `stylespace embed` or leave it out")
    index = {item_id: i for i, item_id in enumerate(embeddings.ids)}
    missing = [i for i in ids if i not in index]
    if missing:
        raise StylespaceError(f"the embeddings file has no vector for {len(missing)} of the catalog's items "
                              f"(e.g. {missing[:3]}); was it made from this catalog?")
    return np.ascontiguousarray(embeddings.vectors[[index[i] for i in ids]], dtype=np.float32)


def split_findings(result: AuditResult, manifest) -> SplitFindings:
    """Copies across the parts of ``manifest`` (and fills each cluster's ``parts`` / ``straddles``)."""
    from stylespace.evaluation.dedupe import scenario_leaks

    part = {r["id"]: f"{r['group']}/{r['split']}" for r in manifest.rows}
    for cluster in result.clusters:
        cluster.parts = [part.get(m, "") for m in cluster.members]
        cluster.straddles = len({p for p in cluster.parts if p}) > 1
    leaks: dict[str, dict[str, int]] = {}
    for kind, groups in (("exact", result.groups), ("any", [c.members for c in result.clusters])):
        for members in groups:
            parts = [part.get(m, "") for m in members]
            for i, (member, own) in enumerate(zip(members, parts)):
                if not own:
                    continue
                for other in {p for j, p in enumerate(parts) if j != i and p and p != own}:
                    counts = leaks.setdefault(f"{own} in {other}", {"exact": 0, "any": 0})
                    counts[kind] += 1
    order = {p: n for n, p in enumerate(f"{g}/{s}" for g in ("main", "new", "all") for s in PART_ORDER)}
    leaks = dict(sorted(leaks.items(), key=lambda kv: tuple(order.get(p, 99) for p in kv[0].split(" in "))))
    exact_scenarios = scenario_leaks(manifest, result.groups)
    any_scenarios = scenario_leaks(manifest, [c.members for c in result.clusters])
    straddling_exact = sum(1 for g in result.groups if len({part[m] for m in g if m in part}) > 1)
    blank = sum(1 for b in result.blank if b.id in part)
    return SplitFindings(len(manifest), {"exact": straddling_exact, "any": sum(c.straddles for c in result.clusters)},
                         leaks, {k: {"exact": exact_scenarios[k], "any": any_scenarios[k]} for k in exact_scenarios},
                         blank)


def clean_manifest(result: AuditResult, manifest):
    """(``manifest`` with one item per cluster and no blank image, [(id, reason) left out]).

    The member kept is the one with the cluster's most common label (among its members in the split), then
    the earliest part (train, val, support, test: test items with a copy in train leave test), then the first
    in the manifest.
    """
    from stylespace.data import SplitManifest

    position = {r["id"]: n for n, r in enumerate(manifest.rows)}
    row = {r["id"]: r for r in manifest.rows}
    removed: list[tuple[str, str]] = []
    for b in result.blank:
        if b.id in row:
            removed.append((b.id, f"{b.kind} image"))
    gone = {item_id for item_id, _ in removed}
    for cluster in result.clusters:
        inside = [m for m in cluster.members if m in row and m not in gone]
        if len(inside) < 2:
            continue
        common = collections.Counter(row[m]["label"] for m in inside)
        keep = min(inside, key=lambda m: (-common[row[m]["label"]], _part_rank(row[m]["split"]), position[m]))
        for m in inside:
            if m != keep:
                removed.append((m, f"copy (cluster {cluster.id}, kept {keep})"))
                gone.add(m)
    return SplitManifest([r for r in manifest.rows if r["id"] not in gone], manifest.config), removed


def _part_rank(split: str) -> int:
    return PART_ORDER.index(split) if split in PART_ORDER else len(PART_ORDER)


def find_copies(catalog, size: tuple[int, int] = (80, 60), ids=None, vectors: np.ndarray | None = None,
                near_distance: float | None = None, near_pixels: float | None = None,
                near_shift: float | None = None, neighbours: int = 10, progress: bool = False) -> list[list[str]]:
    """Clusters of copies (pixel-identical or near) of ``catalog``'s items, without the rest of an audit:
    what ``stylespace evaluate --dedupe`` leaves out. ``ids`` / ``vectors``: embeddings of the items (a
    model's; near copies are looked for among the items that have one); None: pixel-identical copies only.
    Blank images take no part (they are all alike)."""
    from stylespace.audit.config import NEAR_DISTANCE, NEAR_PIXELS, NEAR_SHIFT
    from stylespace.data import load_image_array

    array = load_image_array(catalog, size=tuple(size), progress=progress)
    blank = {b.id for b in blank_items(array)}
    hashes = pixel_hashes(array.pixels)
    groups = cluster_copies(array.ids, hashes, None, None, 0.0, 0.0, 0.0, skip=blank).clusters
    if vectors is None or ids is None:
        return groups
    row = {item_id: i for i, item_id in enumerate(array.ids)}
    present = [(i, row[item_id]) for i, item_id in enumerate(ids) if item_id in row and item_id not in blank]
    if len(present) < 2:
        return groups
    vector_rows, array_rows = (np.asarray(part, dtype=np.int64) for part in zip(*present))
    chosen = [array.ids[r] for r in array_rows]
    pooled = pooled_views(array.pixels)[array_rows]
    found = nearest(np.asarray(vectors, dtype=np.float32)[vector_rows], np.arange(len(chosen)), neighbours)
    near = cluster_copies(chosen, [hashes[r] for r in array_rows], np.asarray(vectors)[vector_rows], pooled,
                          near_distance if near_distance is not None else NEAR_DISTANCE["model"],
                          NEAR_PIXELS if near_pixels is None else near_pixels,
                          NEAR_SHIFT if near_shift is None else near_shift, found=found)
    # Join the two: pixel-identical groups (over all items) and near clusters (over the embedded ones).
    everything = {m for g in groups + near.clusters for m in g}
    order = {item_id: i for i, item_id in enumerate(array.ids)}
    members = sorted(everything, key=order.__getitem__)
    index = {m: i for i, m in enumerate(members)}
    edges = [(index[g[0]], index[m]) for g in groups + near.clusters for m in g[1:]]
    labels = components(len(members), np.asarray([a for a, _ in edges], np.int64), np.asarray([b for _, b in edges], np.int64))
    joined: dict[int, list[str]] = {}
    for m, label in zip(members, labels.tolist()):
        joined.setdefault(label, []).append(m)
    return sorted((g for g in joined.values() if len(g) > 1), key=lambda g: order[g[0]])
