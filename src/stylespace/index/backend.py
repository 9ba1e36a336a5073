"""What a :class:`~stylespace.index.CatalogIndex` needs from the engine that holds its items and vectors.

Two backends implement :class:`IndexBackend`: ``faiss`` (:mod:`stylespace.index.embedded`: FAISS + SQLite
in the index folder, the default) and ``milvus`` (:mod:`stylespace.index.milvus`: a Milvus Lite file or a
Milvus server / cluster); :mod:`stylespace.index.backends` picks one by name. ``CatalogIndex`` does what is the same for both (checking vectors, ids and
filters, turning keys into hits, the writer lock); a backend stores, changes and searches.

Vectors cross this boundary as given (``raw``: float32, the metric's preparation not applied) when they
are stored, and *prepared* (normalised for cosine) when they are searched or read back.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Protocol, Sequence

import numpy as np

from stylespace.index.config import IndexConfig
from stylespace.utils import StylespaceError


@dataclasses.dataclass(frozen=True)
class IndexMarker:
    """Where an index stands: compare two to know whether it changed since.

    Attributes:
        generation: bumped by every build and rebuild (a new structure).
        revision: bumped by every committed add or remove (and by a build).
        space_version: bumped by a rebuild that can move similarities (whitening fitted again or switched,
            another metric): what a saved calibration must match to still hold.
    """

    generation: int
    revision: int
    space_version: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class IndexPosition:
    """Exactly which committed state a handle holds: its generation, store revision and the last item key
    it has (what :meth:`~stylespace.index.CatalogIndex.changes_since` starts from)."""

    generation: int
    revision: int
    last_key: int


@dataclasses.dataclass
class IndexChanges:
    """What changed between two positions of one generation.

    Attributes:
        added: key -> (id, source, label, meta) of the items added since (a replaced item: under its new key).
        removed: (R,) int64 keys of items held before and removed since (a replaced item: its old key).
    """

    added: dict[int, tuple[str, str, str | None, dict]]
    removed: np.ndarray

    def __len__(self) -> int:
        return len(self.added) + len(self.removed)


@dataclasses.dataclass
class Neighbours:
    """Raw search results as arrays, for code that scores them (recommendation confidence).

    Attributes:
        keys: (Q, k) int64 item keys, nearest first; -1 where fewer than k items qualified.
        similarities: (Q, k) float32, larger is closer: the cosine (metric ``cosine``) or minus the
            Euclidean distance (``euclidean``); NaN where the key is -1.
        metric: the metric of the index.
    """

    keys: np.ndarray
    similarities: np.ndarray
    metric: str

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def k(self) -> int:
        return self.keys.shape[1]

    @property
    def counts(self) -> np.ndarray:
        """(Q,) how many neighbours each query got."""
        return (self.keys >= 0).sum(axis=1)

    def head(self, k: int) -> "Neighbours":
        return Neighbours(self.keys[:, :k], self.similarities[:, :k], self.metric)


@dataclasses.dataclass
class ItemRows:
    """New items' ids, labels, metadata and image sources, one per vector."""

    ids: list[str]
    labels: list[str | None]
    metas: list[dict[str, str]]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.ids)


class IndexBackend(Protocol):
    """The operations a backend provides (one handle, used by one ``CatalogIndex``).

    Reads see the state of the handle's :attr:`marker` until :meth:`catch_up`; writes are made under the
    index folder's writer lock, which ``CatalogIndex`` holds.
    """

    config: IndexConfig
    structure: object  # the FAISS structure (or the whitening skeleton) that maps vectors to the search space

    @classmethod
    def create(cls, folder, config: IndexConfig, rows: ItemRows, vectors, previous: IndexConfig | None,
               measure_recall: bool) -> "IndexBackend": ...

    @classmethod
    def open(cls, folder, config: IndexConfig) -> "IndexBackend": ...

    @classmethod
    def current_revision(cls, folder, config: IndexConfig) -> int: ...

    @property
    def marker(self) -> IndexMarker: ...

    def count(self) -> int: ...

    def stale_count(self) -> int: ...

    # items
    def find(self, ids: Sequence[str]) -> dict[str, int]: ...

    def rows(self, keys) -> dict[int, tuple[str, str, str | None, dict]]: ...

    def labels(self, keys: np.ndarray) -> np.ndarray: ...

    def labelled_count(self) -> int: ...

    def all_ids(self) -> list[str]: ...

    def vectors(self, keys: np.ndarray) -> np.ndarray: ...

    # search: prepared queries (Q, D); where: column -> sorted values; banned (E,) keys; per_query (Q, E') keys
    def search(self, queries: np.ndarray, k: int, where: Mapping[str, list[str]] | None, banned: np.ndarray,
               per_query: np.ndarray): ...

    # changes
    def add(self, rows: ItemRows, vectors: np.ndarray, replace_keys: np.ndarray, new_columns: list[str]) -> np.ndarray: ...

    def remove(self, keys: np.ndarray) -> None: ...

    def rebuild(self, config: IndexConfig, measure_recall: bool) -> "IndexBackend": ...

    def catch_up(self) -> bool: ...

    # what changed since an earlier position of this handle (None: not known, read everything again)
    @property
    def position(self) -> IndexPosition: ...

    def changes_since(self, position: IndexPosition) -> IndexChanges | None: ...

    def changed_items(self) -> int | None: ...

    def close(self) -> None: ...


class BackendPosition:
    """Where a backend handle stands, the same for every backend: it keeps ``config``, ``revision``,
    ``stale`` (keys searches skip) and ``_count`` (live items) current as it catches up."""

    config: IndexConfig
    revision: int
    stale: np.ndarray
    _count: int

    @property
    def marker(self) -> IndexMarker:
        return IndexMarker(self.config.generation, self.revision, self.config.space_version)

    def count(self) -> int:
        return self._count

    def stale_count(self) -> int:
        return len(self.stale)


def keys_in_order(found: Mapping[str, int], ids: Sequence[str]) -> np.ndarray:
    """(N,) int64 keys of ``ids`` from ``found`` (id -> key), in order; an unknown id is an error naming it."""
    missing = [i for i in ids if i not in found]
    if missing:
        shown = ", ".join(repr(i) for i in missing[:5])
        raise StylespaceError(f"{len(missing)} id(s) not in the index: {shown}{' ...' if len(missing) > 5 else ''}")
    return np.array([found[i] for i in ids], dtype=np.int64)
