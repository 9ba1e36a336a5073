"""Catalog index: embeddings + ids + metadata in a folder, searchable exactly (default) or approximately
(IVF, HNSW, and the compressed IVF-PQ and HNSW-SQ8), changed in place crash-safely; held by an embedded
FAISS + SQLite backend (default) or by Milvus (``IndexBackend``).

>>> index = CatalogIndex.create("my-index", ids, vectors, model_id=model_id(model), metas=metas)
>>> index.search(queries, k=10, where={"gender": "Men"}, model_id=model_id(model))
"""
from stylespace.index.backend import IndexBackend, IndexMarker
from stylespace.index.catalog_index import CatalogIndex, Hit, Neighbours, read_config
from stylespace.index.config import KINDS, METRICS, IndexConfig, IndexSettings
from stylespace.index.structures import measure_recall, recall_at_k

__all__ = ["CatalogIndex", "Hit", "IndexBackend", "IndexConfig", "IndexSettings", "IndexMarker", "KINDS", "METRICS", "Neighbours", "measure_recall",
           "read_config", "recall_at_k"]
