"""The audit page: every finding of ``stylespace audit`` with thumbnails, as one self-contained HTML file
(the report's machinery: :func:`stylespace.report.html.render_html`)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from stylespace.report.html import Gallery, Section, Table, Thumbnail, render_html
from stylespace.utils import atomic_write

AUDIT_HTML = "audit.html"


def _thumbnail(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


class _Tiles:
    """Thumbnails of items from the decoded image cache, captioned with id, label and split part."""

    def __init__(self, result, array, catalog=None):
        self.array, self.catalog = array, catalog
        self.rows = {item_id: i for i, item_id in enumerate(array.ids)}
        self.labels = {item.id: item.label for item in catalog.items} if catalog is not None else {}
        self.part = {m: p for c in result.clusters for m, p in zip(c.members, c.parts) if p}

    def __call__(self, item_id: str, extra: str = "") -> Thumbnail:
        label = self.labels.get(item_id) or ""
        caption = " · ".join(v for v in (item_id, label[:22], self.part.get(item_id, ""), extra) if v)
        name = ""
        if self.catalog is not None and item_id in self.catalog:
            name = self.catalog[item_id].meta.get("productDisplayName", "")
        row = self.rows.get(item_id)
        pixels = self.array.pixels[row] if row is not None else np.full((*self.array.size, 3), 200, np.uint8)
        return Thumbnail(_thumbnail(pixels), caption, "image/jpeg", f"{item_id} {label} {name}".strip())


def audit_sections(result, array, catalog=None) -> list[Section]:
    """The page's sections for an :class:`~stylespace.audit.AuditResult` and the image array it was made from."""
    tile = _Tiles(result, array, catalog)
    config = result.config
    counts = result.counts()
    summary = Section("Summary", intro=f"{result.n_items:,} items audited with the {config.embedder} embedder "
                                       f"({config.model or 'no model'}), views of {config.size[0]} x {config.size[1]} px.")
    summary.tables.append(Table("What was found", ["finding", "count"], [[k, v] for k, v in counts.items()]))
    rule = result.outlier_rule
    summary.findings.append(
        f"Near copy: embedding distance under {config.near_distance:.4g} (cosine), pixel difference under "
        f"{config.near_pixels:g} grey levels and colour shift under {config.near_shift:g}; pixel-identical: the same "
        "decoded pixels. Blank images take no part.")
    if rule is not None:
        summary.findings.append(f"Outlier: distance to the {rule.k}th nearest item above {rule.cutoff:.4g} (the larger "
                                f"of the {rule.percentile:g}th percentile, {rule.percentile_value:.4g}, and the median "
                                f"{rule.median:.4g} + {config.outlier_spread:g} robust SD {rule.robust_sd:.4g}).")
    summary.findings += [f"Note: {note}" for note in result.notes]
    if result.calibration is not None:
        c = result.calibration
        summary.tables.append(Table(
            f"Copy distances measured on {c.n_items} items ({c.embedder})",
            ["copies", "distance p50 / p90 / p99", "pixels p50 / p90 / p99", "shift p50 / p90 / p99", "called copies"],
            [[name] + [" / ".join(f"{v[f'{what} p{p}']:.4g}" for p in (50, 90, 99)) for what in ("distance", "pixels", "shift")]
             + [f"{100 * v['found']:.1f} %"] for name, v in c.copies.items()]
            + [["nearest distinct item (p1 / p5 / p50)"]
               + [" / ".join(f"{c.distinct[f'{what} p{p}']:.4g}" for p in (1, 5, 50)) for what in ("distance", "pixels", "shift")]
               + [f"{100 * c.distinct_found:.1f} %"]]))
    sections = [summary]

    def cluster_row(cluster) -> tuple[str, list[Thumbnail]]:
        labels = sorted({l or "(no label)" for l in cluster.labels})
        parts = sorted({p for p in cluster.parts if p})
        heading = (f"cluster {cluster.id}: {len(cluster.members)} {'pixel-identical' if cluster.kind == 'exact' else 'copies (near)'}"
                   f" · {', '.join(labels)}" + (f" · {', '.join(parts)}" if parts else ""))
        return heading, [tile(m) for m in cluster.members]

    conflicts = [c for c in result.clusters if c.conflict]
    straddling = [c for c in result.clusters if c.straddles and not c.conflict]
    others = [c for c in result.clusters if not c.conflict and not c.straddles]
    copies = Section("Clusters of copies", intro="Connected groups of items that are copies of one image. Each "
                     "cluster is shown once: first those whose members carry different labels, then those that sit "
                     "in more than one part of the split, then the rest.")
    for title, chosen in ((f"Different labels ({len(conflicts)})", conflicts),
                          (f"Across split parts ({len(straddling)}, not counting those above)", straddling),
                          (f"Other clusters ({len(others)})", others)):
        if chosen:
            copies.galleries.append(Gallery(title, [cluster_row(c) for c in chosen]))
    if not result.clusters:
        copies.findings.append("No copies found.")
    sections.append(copies)

    quality = Section("Blank, nearly uniform and tiny images")
    if result.blank:
        quality.galleries.append(Gallery(f"Blank or nearly uniform ({len(result.blank)})",
                                         [("canonical views", [tile(b.id, f"{b.kind}, spread {b.spread:g}") for b in result.blank])]))
    if result.tiny:
        quality.galleries.append(Gallery(f"Tiny: under {config.tiny_side} px on a side ({len(result.tiny)})",
                                         [("canonical views", [tile(t.id, f"{t.width}x{t.height}") for t in result.tiny])]))
    if not result.blank and not result.tiny:
        quality.findings.append("None found.")
    sections.append(quality)

    far = Section("Outliers", intro="Items far from all of their nearest items in the style space, furthest first.")
    if result.outliers:
        far.galleries.append(Gallery(f"Outliers ({len(result.outliers)})",
                                     [("by distance to the k-th nearest item", [tile(o.id, f"{o.distance:.3f}") for o in result.outliers])]))
    else:
        far.findings.append("None found.")
    sections.append(far)

    if result.split is not None:
        s = result.split
        part = Section("The split", intro=f"{s.n_rows:,} items in {config.split or 'the split'}.")
        part.tables.append(Table("Items of one part with a copy in another", ["parts", "pixel-identical copy", "any copy"],
                                 [[k, v["exact"], v["any"]] for k, v in s.part_leaks.items()]))
        part.tables.append(Table("Queries with a copy in their support set", ["scenario", "pixel-identical copy", "any copy"],
                                 [[k, v["exact"], v["any"]] for k, v in s.scenario_leaks.items()]))
        if s.clean_split:
            part.findings.append(f"Cleaned split written to {s.clean_split}: {s.clean_rows:,} items; left out: "
                                 + ", ".join(f"{v:,} {k}" for k, v in s.removed.items()) + ".")
        sections.append(part)
    return sections


def write_audit_page(result, array, path: str | os.PathLike, catalog=None) -> Path:
    """Write the audit page (self-contained HTML) to ``path``, atomically."""
    path = Path(path)
    config = result.config
    meta = [("catalog", config.catalog), ("model", f"{config.model or 'none (pixel vectors)'} {config.model_id}".strip())]
    if config.split:
        meta.append(("split", f"{config.split} (sha256 {config.split_sha256[:12]})"))
    meta.append(("took", ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())))
    page = render_html("Catalog audit", meta, audit_sections(result, array, catalog))
    with atomic_write(path, "w") as handle:
        handle.write(page)
    return path
