"""The copies `stylespace evaluate --dedupe` measures every figure without: found in the catalog, or read
from a saved audit (:class:`stylespace.evaluation.sources.CopyFinder`)."""
from __future__ import annotations

import dataclasses
import os

from stylespace.audit.config import NEAR_DISTANCE, NEAR_PIXELS, NEAR_SHIFT
from stylespace.audit.run import find_copies, load_clusters


@dataclasses.dataclass
class EvaluationCopies:
    """Copy groups for an evaluation.

    Args:
        audit_path: an audit folder (or its audit.json) to take the clusters from; None finds them:
            pixel-identical views, and near copies by the evaluated source's embeddings.
    """

    audit_path: str | os.PathLike | None = None
    progress: bool = True

    def __call__(self, catalog, source_name: str, embeddings) -> tuple[list[list[str]], str]:
        if self.audit_path is not None:
            return load_clusters(self.audit_path)
        size = tuple(int(v) for v in (embeddings.meta.get("input_size") or (80, 60)))
        groups = find_copies(catalog, size, embeddings.ids, embeddings.vectors, progress=self.progress)
        return groups, (f"found by --dedupe: pixel-identical {size[0]}x{size[1]} views, near copies by "
                        f"{source_name}'s embeddings (distance under {NEAR_DISTANCE['model']}, pixels under "
                        f"{NEAR_PIXELS:g}, colour shift under {NEAR_SHIFT:g})")
