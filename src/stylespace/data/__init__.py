"""Catalogs, the decoded image cache and splits: everything downstream starts here."""
from stylespace.data.cache import ImageArray, load_image_array
from stylespace.data.catalog import Catalog, CatalogError, ImageReader, Item, Skipped
from stylespace.data.held_out import SplitChoice, held_out_split, split_for_catalog
from stylespace.data.images import ImageDecodeError, View, canonical_view, load_rgb, load_view, open_image
from stylespace.data.readers import load_catalog
from stylespace.data.splits import (
    SCENARIOS,
    YEAR_PARITY_MAP,
    SplitConfig,
    SplitManifest,
    coarse_label_map,
    column_split,
    parse_column_map,
    parse_merge,
    protocol_split,
    stratified_split,
    top_classes,
    year_split,
)

__all__ = [
    "Catalog", "CatalogError", "ImageReader", "Item", "Skipped", "load_catalog",
    "ImageArray", "load_image_array", "ImageDecodeError", "load_rgb", "open_image",
    "View", "canonical_view", "load_view",
    "SCENARIOS", "SplitConfig", "SplitManifest", "protocol_split", "stratified_split", "column_split",
    "parse_column_map", "parse_merge", "YEAR_PARITY_MAP", "top_classes", "year_split",
    "coarse_label_map", "SplitChoice", "held_out_split", "split_for_catalog",
]
