"""The index backends by name (what ``index.json``'s ``backend`` says), and the conversion of older folders."""
from __future__ import annotations

from pathlib import Path

from stylespace.index.config import IndexConfig
from stylespace.utils import StylespaceError


def backend_class(name: str):
    """The backend class of ``name`` (``faiss`` or ``milvus``); a clear error when its extra is missing."""
    if name == "faiss":
        from stylespace.index.embedded import EmbeddedBackend

        return EmbeddedBackend
    if name == "milvus":
        try:
            import pymilvus  # noqa: F401
        except ImportError:
            raise StylespaceError("the milvus backend needs pymilvus (and milvus-lite for a local file): "
                                  "pip install 'stylespace[milvus]'") from None
        from stylespace.index.milvus import MilvusBackend

        return MilvusBackend
    raise StylespaceError(f"unknown index backend {name!r}; expected faiss or milvus")


def upgrade_format(folder: Path, config: IndexConfig) -> None:
    """Convert an index folder of an older format in place (see ``embedded.upgrade``)."""
    from stylespace.index.embedded import upgrade

    upgrade(folder, config)
