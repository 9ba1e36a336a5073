"""The index's configuration, saved as ``index.json`` in the index folder.

``index.json`` says which backend holds the items and how the index was made; it is replaced (one
``os.replace``) when the index is built, rebuilt or checkpointed, never for an add or a remove (those
commit in the backend's own store: see ``stylespace.index.embedded``).
"""
from __future__ import annotations

import dataclasses
import math

from stylespace.utils import METRICS, at_least, each, in_range, one_of, validate

KINDS = ("exact", "ivf", "hnsw", "ivf-pq", "hnsw-sq8")
# Kinds whose structure holds compressed codes: their shortlist is re-ranked with the exact vectors.
COMPRESSED_KINDS = ("ivf-pq", "hnsw-sq8")
BACKENDS = ("faiss", "milvus")
CONFIG_FILE = "index.json"
# index.json fields of the recommendation's calibration in indexes made before it moved beside the index
LEGACY_CALIBRATION_FIELDS = ("confidence", "confidence_params", "threshold", "calibration_file", "calibration")
FORMAT_VERSION = 2


@dataclasses.dataclass
class IndexSettings:
    """How to make an index: the choices a user makes (``stylespace index build`` / ``rebuild`` options, derived
    from these defaults). Checked when made.

    Attributes:
        metric: ``cosine`` (inner product on L2-normalised vectors) or ``euclidean`` (L2 on the vectors as given).
        kind: ``exact`` (flat, the default), ``ivf`` (inverted lists, for millions of items), ``hnsw`` (graph),
            or the compressed ``ivf-pq`` (IVF over product-quantised codes, ``pq_m`` bytes per vector) and
            ``hnsw-sq8`` (HNSW over 8-bit scalar-quantised vectors), whose shortlist of ``rerank`` x k
            candidates is re-ranked with the exact vectors.
        backend: ``faiss`` (embedded: FAISS + SQLite in the index folder, the default) or ``milvus`` (a Milvus
            Lite file or a Milvus server / cluster at ``uri``, collection ``collection``).
        nlist: IVF cells; 0 = chosen from the catalog size (about 4 sqrt(N)).
        nprobe: IVF cells visited per query.
        hnsw_m: HNSW graph degree.
        ef_construction / ef_search: HNSW beam widths when building / searching.
        pq_m: ``ivf-pq`` sub-quantisers (bytes per vector; 0 = D / 8). rerank: candidates re-ranked per result
            (``ivf-pq`` and ``hnsw-sq8``).
        whiten: whiten the vectors (a PCA whitening fitted on the catalog's own vectors, no labels) when the
            structure is made or rebuilt; needs at least 4 items per dimension, else the index is left plain.
            On for an index of a catalog embedded by a model (``build_index``, the CLI); ``CatalogIndex.create``
            indexes vectors as given unless asked.
        search_dims: searched dimensions; 0 (the default) = every dimension the model gives. N > 0: the
            whitening's PCA keeps its top N components (``PCAMatrix(D, N, -0.5)``), and the FAISS structure (every
            kind) holds and compares N-dimensional whitened vectors, which makes each comparison D / N times
            cheaper; the item store keeps the full vectors (re-ranking, text search and a later rebuild read
            them) and items added later go through the same PCA. The reduction *is* the whitening, so it needs
            ``whiten`` on (refused when off) and enough items to fit it (4 per model dimension, 4 x D: a build or
            rebuild with fewer is refused rather than silently searching all D unwhitened dimensions). See
            docs/search.md, "Searching fewer dimensions".
    """

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
    whiten: bool = True
    search_dims: int = 0

    def __post_init__(self) -> None:
        validate(self._checks(), "index")

    def _checks(self):
        yield one_of("metric", self.metric, METRICS)
        yield one_of("kind", self.kind, KINDS)
        yield one_of("backend", self.backend, BACKENDS)
        yield (self.backend != "milvus" or bool(self.uri),
               "a milvus index needs a uri: a Milvus Lite file (./catalog.db) or a server (http://host:19530); "
               "pass --uri")
        for name in ("nprobe", "hnsw_m", "ef_construction", "ef_search", "rerank"):
            yield at_least(name, getattr(self, name), 1)
        yield one_of("whiten", self.whiten, (True, False))
        yield at_least("nlist", self.nlist, 0, note="0 = automatic")
        yield at_least("pq_m", self.pq_m, 0, note="0 = automatic")
        yield at_least("search_dims", self.search_dims, 0, note="0 = every dimension the model gives")
        yield (not self.search_dims or self.whiten,
               f"search_dims {self.search_dims} needs whitening on (the reduction is the whitening's PCA): "
               "turn whiten on (--whiten), or search every dimension (search_dims 0)")


@dataclasses.dataclass(kw_only=True)
class IndexConfig(IndexSettings):
    """What an index is (``index.json``): the :class:`IndexSettings` it was made with, and the record of how it
    was made and which files hold it now.

    Attributes:
        model_id: :func:`stylespace.models.model_id` of the model that embedded the items; queries
            embedded by another model are refused.
        dim: D, the embedding size (what the item store holds and queries are given in); the FAISS structure
            compares :attr:`searched_dim` dimensions (``search_dims``, or D).
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
    """

    model_id: str
    dim: int
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

    def _checks(self):
        yield (isinstance(self.model_id, str) and bool(self.model_id),
               "needs the model_id of the model that embedded its items")
        yield at_least("dim", self.dim, 1)
        yield from super()._checks()
        yield in_range("search_dims", self.search_dims, 0, self.dim, integer=True,
                       note=f"at most the {self.dim} dimensions the model gives; 0 = every one")
        searched = f"{self.searched_dim}{' searched (search_dims)' if self.search_dims else ''}"
        yield (not self.pq_m or self.searched_dim % self.pq_m == 0,
               f"pq_m must divide the dimension {searched} (0 = automatic), got {self.pq_m!r}")
        yield each("input_size", self.input_size, 1, count=2, note="(H, W) in pixels")
        yield (self.version <= FORMAT_VERSION, f"format version {self.version} is newer than this stylespace "
                                               f"understands ({FORMAT_VERSION}); upgrade stylespace")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))

    def validate(self) -> "IndexConfig":
        """Check every field again (after fields were changed in place); raises StylespaceError saying what
        was expected."""
        self.__post_init__()
        return self

    @property
    def searched_dim(self) -> int:
        """The dimensions the FAISS structure holds and compares: ``search_dims``, or every one (D) when 0."""
        return self.search_dims or self.dim

    @property
    def compressed(self) -> bool:
        """The structure holds compressed codes (its shortlist is re-ranked with the exact vectors)."""
        return self.kind in COMPRESSED_KINDS

    def auto_pq_m(self) -> int:
        """``pq_m``, or D / 8 sub-quantisers of 8 bits (32 bytes for 256 dimensions) when 0, D being the
        searched dimension (:attr:`searched_dim`): FAISS trains 4-dimensional sub-quantisers 20 x slower than
        8-dimensional ones (128 s against 5.6 s on 20,000 vectors here), and the exact re-ranking recovers what
        the coarser codes lose."""
        if self.pq_m:
            return self.pq_m
        dim = self.searched_dim
        for m in (dim // 8, dim // 4, dim // 2, dim):
            if m >= 1 and dim % m == 0:
                return m
        return dim

    def auto_nlist(self, n: int) -> int:
        """IVF cells for ``n`` vectors: ``nlist`` when set, else about 4 sqrt(N), with >= 39 vectors per cell
        (FAISS's minimum for a sound k-means)."""
        wanted = self.nlist or int(round(4 * math.sqrt(max(n, 1))))
        return max(1, min(wanted, n // 39))
