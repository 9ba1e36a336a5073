"""Catalog audit: pixel-identical and near copies grouped into clusters, clusters with different labels,
blank / nearly uniform / tiny images, outliers, and, with a split, copies across its parts (leaks) and a
cleaned split manifest. Everything is found on the decoded image cache and an embedder (a model, or coarse
pixel vectors without one); nothing here writes to the catalog.

>>> result = run_audit(load_catalog("catalog.zip"), model=load_model("models/default"), manifest=split)
>>> result.counts()["pixel-identical groups"], result.save("audit/")
"""
from stylespace.audit.calibrate import COPY_DISTORTIONS, CopyMeasurement, measure_copy_distances
from stylespace.audit.config import NEAR_DISTANCE, NEAR_PIXELS, NEAR_SHIFT, AuditConfig, AuditSettings
from stylespace.audit.evaluation_copies import EvaluationCopies
from stylespace.audit.copies import CopyClusters, cluster_copies, pixel_difference, pixel_hashes, pooled_views
from stylespace.audit.quality import Blank, Outlier, OutlierRule, Tiny, blank_items, outliers, tiny_items
from stylespace.audit.run import (
    AUDIT_JSON,
    CLEAN_SPLIT,
    AuditResult,
    Cluster,
    SplitFindings,
    clean_manifest,
    find_copies,
    load_clusters,
    run_audit,
    split_findings,
)
from stylespace.audit.vectors import Embedder, pixel_vectors

__all__ = [
    "COPY_DISTORTIONS", "CopyMeasurement", "EvaluationCopies", "measure_copy_distances",
    "NEAR_DISTANCE", "NEAR_PIXELS", "NEAR_SHIFT", "AuditConfig", "AuditSettings",
    "CopyClusters", "cluster_copies", "pixel_difference", "pixel_hashes", "pooled_views",
    "Blank", "Outlier", "OutlierRule", "Tiny", "blank_items", "outliers", "tiny_items",
    "AUDIT_JSON", "CLEAN_SPLIT", "AuditResult", "Cluster", "SplitFindings", "clean_manifest", "find_copies",
    "load_clusters",
    "run_audit", "split_findings",
    "Embedder", "pixel_vectors",
]
