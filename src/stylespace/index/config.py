"""The index's configuration, saved as ``index.json`` in the index folder.

``index.json`` says which backend holds the items and how the index was made; it is replaced (one
``os.replace``) when the index is built, rebuilt or checkpointed, never for an add or a remove (those
commit in the backend's own store: see ``stylespace.index.embedded``).
"""
from __future__ import annotations

import dataclasses
import math

from stylespace.utils import StylespaceError

KINDS = ("exact", "ivf", "hnsw", "ivf-pq", "hnsw-sq8")
# Kinds whose structure holds compressed codes: their shortlist is re-ranked with the exact vectors.
COMPRESSED_KINDS = ("ivf-pq", "hnsw-sq8")
BACKENDS = ("faiss", "milvus")
METRICS = ("cosine", "euclidean")
CONFIG_FILE = "index.json"
# index.json fields of the recommendation's calibration in indexes made before it moved beside the index
LEGACY_CALIBRATION_FIELDS = ("confidence", "confidence_params", "threshold", "calibration_file", "calibration")
FORMAT_VERSION = 2


@dataclasses.dataclass
class IndexConfig:
    """How an index was made and which files hold it.

    Attributes:
        model_id: :func:`stylespace.models.model_id` of the model that embedded the items; queries
            embedded by another model are refused.
        dim: D, the embedding size.
        metric: ``cosine`` (inner product on L2-normalised vectors) or ``euclidean`` (L2 on the vectors as given).
        backend: ``faiss`` (embedded: FAISS + SQLite in the index folder, the default) or ``milvus`` (a Milvus
            Lite file or a Milvus server / cluster at ``uri``, collection ``collection``).
        kind: ``exact`` (flat, the default), ``ivf`` (inverted lists, for millions of items), ``hnsw`` (graph),
            or the compressed ``ivf-pq`` (IVF over product-quantised codes, ``pq_m`` bytes per vector) and
            ``hnsw-sq8`` (HNSW over 8-bit scalar-quantised vectors), whose shortlist of ``rerank`` x k
            candidates is re-ranked with the exact vectors.
        nlist: IVF cells; 0 = chosen from the catalog size (about 4 sqrt(N)).
        nprobe: IVF cells visited per query.
        hnsw_m: HNSW graph degree.
        ef_construction / ef_search: HNSW beam widths when building / searching.
        pq_m: ``ivf-pq`` sub-quantisers (bytes per vector; 0 = D / 8). rerank: candidates re-ranked per result
            (``ivf-pq`` and ``hnsw-sq8``).
        whiten: whiten the vectors (a PCA whitening fitted on the catalog's own vectors, no labels) when the
            structure is made or rebuilt; needs at least 4 items per dimension, else the index is left plain.
        whitened_items: how many items the whitening in use was fitted on (0 = the index is not whitened).
        model_path: the model folder the index was built with (the CLI embeds queries with it).
        input_size: (H, W) the model takes; query images are decoded to this size.
        catalog: the catalog (or split) the items came from; catalog_fingerprint: its fingerprint then.
        metadata_columns: the metadata columns items carry (what ``where=`` filters may name).
        count: live items. stale: vectors still in the FAISS file whose items were removed (HNSW cannot
            delete; ``rebuild`` drops them).
        recall_at_10: for ``ivf``/``hnsw``, recall@10 against exact search measured when it was built.
        space_version: bumped by every rebuild that can move similarities (a whitening fitted again or
            switched, another metric): what a saved calibration compares to know it is out of date.
        view_version: the version of the image preprocessing (``stylespace.data.images.VIEW_VERSION``, the
            canonical view) that decoded the catalog's images; 0 = not recorded (an index made before the
            canonical view, or from vectors). Queries must be decoded the same way (``CatalogIndex.check_view``).
        typicality: how the catalog's own items sit in it, measured when the structure was made or rebuilt
            (percentiles of each item's similarity to its nearest other item, and of its whitened distance
            from the catalog's centre; see ``structures.typicality``): the junk test's floors.
        legacy_calibration: what an index made before the recommendation's calibration moved beside it
            (``stylespace.recommend.saved``) held in its index.json (confidence, confidence_params, threshold,
            calibration_file, calibration); read until the index is calibrated again, empty otherwise.
        generation: the current generation (a build or rebuild); items_file: the item store; faiss_file: the
            FAISS structure of this generation, as of store revision ``structure_revision`` (its last key
            ``structure_last_key``); base_revision: the store revision the generation was built at.
        uri, collection: where a ``milvus`` backend keeps the items.
    """

    model_id: str
    dim: int
    metric: str = "cosine"
    kind: str = "exact"
    backend: str = "faiss"
    uri: str = ""
    collection: str = ""
    nlist: int = 0
    nprobe: int = 16
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    pq_m: int = 0
    rerank: int = 20
    whiten: bool = False
    whitened_items: int = 0
    model_path: str = ""
    input_size: tuple[int, int] = (80, 60)
    catalog: str = ""
    catalog_fingerprint: str = ""
    metadata_columns: list[str] = dataclasses.field(default_factory=list)
    count: int = 0
    stale: int = 0
    recall_at_10: float | None = None
    view_version: int = 0
    typicality: dict = dataclasses.field(default_factory=dict)
    legacy_calibration: dict = dataclasses.field(default_factory=dict)
    space_version: int = 0
    generation: int = 0
    items_file: str = ""
    faiss_file: str = ""
    base_revision: int = 0
    structure_revision: int = 0
    structure_last_key: int = 0
    created: str = ""
    updated: str = ""
    version: int = FORMAT_VERSION

    def validate(self) -> "IndexConfig":
        """Check every field; raises StylespaceError saying what was expected."""
        if not isinstance(self.model_id, str) or not self.model_id:
            raise StylespaceError("an index needs the model_id of the model that embedded its items")
        if not isinstance(self.dim, int) or self.dim < 1:
            raise StylespaceError(f"index dim must be a positive integer, got {self.dim!r}")
        if self.metric not in METRICS:
            raise StylespaceError(f"index metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.kind not in KINDS:
            raise StylespaceError(f"index kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.backend not in BACKENDS:
            raise StylespaceError(f"index backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "milvus" and not self.uri:
            raise StylespaceError("a milvus index needs a uri: a Milvus Lite file (./catalog.db) or a server "
                                  "(http://host:19530); pass --uri")
        for name in ("nprobe", "hnsw_m", "ef_construction", "ef_search", "rerank"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise StylespaceError(f"index {name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.whiten, bool):
            raise StylespaceError(f"index whiten must be true or false, got {self.whiten!r}")
        if not isinstance(self.pq_m, int) or self.pq_m < 0 or (self.pq_m and self.dim % self.pq_m):
            raise StylespaceError(f"index pq_m must divide the dimension {self.dim} (0 = automatic), got {self.pq_m!r}")
        if not isinstance(self.nlist, int) or self.nlist < 0:
            raise StylespaceError(f"index nlist must be an integer >= 0 (0 = automatic), got {self.nlist!r}")
        size = tuple(self.input_size)
        if len(size) != 2 or any(not isinstance(v, int) or v < 1 for v in size):
            raise StylespaceError(f"index input_size must be (H, W) in pixels, got {self.input_size!r}")
        self.input_size = (int(size[0]), int(size[1]))
        if self.version > FORMAT_VERSION:
            raise StylespaceError(f"index format version {self.version} is newer than this stylespace understands "
                                  f"({FORMAT_VERSION}); upgrade stylespace")
        return self

    @property
    def compressed(self) -> bool:
        """The structure holds compressed codes (its shortlist is re-ranked with the exact vectors)."""
        return self.kind in COMPRESSED_KINDS

    def auto_pq_m(self) -> int:
        """``pq_m``, or D / 8 sub-quantisers of 8 bits (32 bytes for 256 dimensions) when 0: FAISS trains
        4-dimensional sub-quantisers 20 x slower than 8-dimensional ones (128 s against 5.6 s on 20,000
        vectors here), and the exact re-ranking recovers what the coarser codes lose."""
        if self.pq_m:
            return self.pq_m
        for m in (self.dim // 8, self.dim // 4, self.dim // 2, self.dim):
            if m >= 1 and self.dim % m == 0:
                return m
        return self.dim

    def auto_nlist(self, n: int) -> int:
        """IVF cells for ``n`` vectors: ``nlist`` when set, else about 4 sqrt(N), with >= 39 vectors per cell
        (FAISS's minimum for a sound k-means)."""
        wanted = self.nlist or int(round(4 * math.sqrt(max(n, 1))))
        return max(1, min(wanted, n // 39))
