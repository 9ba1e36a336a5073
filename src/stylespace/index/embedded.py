"""The embedded backend (``faiss``, the default): FAISS + SQLite in the index folder, no server.

Folder layout::

    INDEX_DIR/
      index.json                 IndexConfig (backend faiss): how it was made, and which files hold it
      items-000001.sqlite        items (id <-> key, source, label, metadata), versioned, WAL mode (items.py)
      vectors-000003.f32         generation 3's exact vectors as given, float32, append-only, in key order
      keys-000003.i64            their keys, row for row
      structure-000003-000042.faiss  the FAISS structure of generation 3 as of store revision 42
      .lock                      held by a writer

**Adds and removes cost what they change.** A change is one SQLite transaction: new items' rows are
inserted and their vectors appended to the vector file past its committed rows (written and fsynced
before the commit); removed items are marked with the revision that removed them; the store's
``revision`` is bumped; COMMIT is the commit point. A crash before it rolls the transaction back and
leaves at most an uncommitted tail in the vector file, which no reader reads (the committed row count is
in the store) and the next writer overwrites. Nothing is copied: 10 items added to a 1,000,000-item
index write 10 rows and 10 vectors.

**The FAISS side is kept current incrementally.** Every handle (the writer's and each reader's) holds its
structure at a store revision and catches up by applying what changed since (:meth:`EmbeddedBackend.catch_up`):
new keys' vectors are read from the vector file and added, removed keys are removed (exact and IVF
kinds) or skipped as stale (HNSW kinds, which cannot delete, until ``rebuild``). The structure file is
the structure as of ``structure_revision``: an exact index's holds only its whitening (its vectors are
read from the vector file at open: 1,000,000 in under a second), an approximate index's holds its cells or
graph and is checkpointed (written again, then ``index.json`` names it) once the changes since exceed
1 % of the items, so that opening replays a bounded number of changes.

**Rebuilds** (compaction, another kind) write a new generation: the live items' vectors copied to a new
vector file, a new structure, and then ``index.json`` replaced (one ``os.replace``, the commit point). A
crash before leaves the previous generation, untouched, in force; its files are kept one generation longer
for readers that opened it, and the orphans of a crashed write are removed by the next rebuild.

Each vector is stored once, in the vector file (plus the small SQLite row of its id and metadata);
``ivf`` and ``hnsw`` structures hold a second, full copy (FAISS cannot search vectors it does not hold;
``search_dims`` dimensions of it, whitened, when set), the compressed kinds only codes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from stylespace.index import structures
from stylespace.index.backend import BackendPosition, IndexChanges, IndexPosition, ItemRows, Neighbours
from stylespace.index.config import CONFIG_FILE, IndexConfig
from stylespace.index.items import ItemStore
from stylespace.utils import StylespaceError, write_json

# Vectors read, prepared and added to FAISS per step (bounded memory for any catalog size).
CHUNK = 131_072
# An approximate structure is written again once the changes applied since it was written exceed this
# share of the items (or CHECKPOINT_MIN_CHANGES): opening then replays at most that many.
CHECKPOINT_SHARE = 0.01
CHECKPOINT_MIN_CHANGES = 2_000
# Items whose recall@10 is measured at build: queries sampled from the catalog (fewer for huge catalogs,
# where each query is compared with every vector).
RECALL_QUERIES = 1000
RECALL_QUERIES_LARGE = 200
# Queries whose shortlists are re-ranked at once (their candidates' exact vectors are read into memory).
RERANK_BLOCK = 256

_FILE = re.compile(r"^(items-\d{6,}\.sqlite(-wal|-shm|-journal)?|vectors-\d{6,}\.f32|keys-\d{6,}\.i64|"
                   r"structure-\d{6,}-\d{6,}\.faiss|vectors-\d{6,}\.faiss)$")


def items_name(generation: int) -> str:
    return f"items-{generation:06d}.sqlite"


def structure_name(generation: int, revision: int) -> str:
    return f"structure-{generation:06d}-{revision:06d}.faiss"


class VectorFile:
    """One generation's exact vectors as given (float32, (R, D)) and their keys ((R,) int64, increasing),
    appended row by row; a reader maps only the rows committed when it last looked."""

    def __init__(self, folder: Path, generation: int, dim: int):
        self.vectors_path = Path(folder) / f"vectors-{generation:06d}.f32"
        self.keys_path = Path(folder) / f"keys-{generation:06d}.i64"
        self.dim = dim
        self.rows = 0
        self._vectors = np.empty((0, dim), dtype=np.float32)
        self._keys = np.empty(0, dtype=np.int64)

    def files(self) -> list[str]:
        return [self.vectors_path.name, self.keys_path.name]

    def map(self, rows: int) -> None:
        """Map the first ``rows`` rows (read-only; a no-op when unchanged)."""
        if rows == self.rows:
            return
        if rows > 0:
            for path, width in ((self.vectors_path, 4 * self.dim), (self.keys_path, 8)):
                if not path.is_file() or path.stat().st_size < rows * width:
                    raise StylespaceError(f"{path}: holds fewer than the {rows:,} committed rows; the index folder "
                                          "is damaged (build it again with `stylespace index build ... --overwrite`)")
            self._vectors = np.memmap(self.vectors_path, dtype=np.float32, mode="r", shape=(rows, self.dim))
            self._keys = np.memmap(self.keys_path, dtype=np.int64, mode="r", shape=(rows,))
        else:
            self._vectors = np.empty((0, self.dim), dtype=np.float32)
            self._keys = np.empty(0, dtype=np.int64)
        self.rows = rows

    def append(self, start: int, keys: np.ndarray, vectors) -> None:
        """Write ``vectors`` (N, D) and ``keys`` at row ``start`` (dropping whatever an uncommitted write
        left past it) and fsync both files; the caller commits the new row count after."""
        for path, data, width in ((self.vectors_path, vectors, 4 * self.dim), (self.keys_path, keys, 8)):
            with open(path, "r+b" if path.exists() else "w+b") as handle:
                handle.truncate(start * width)
                handle.seek(start * width)
                if isinstance(data, np.ndarray) and data.dtype == (np.int64 if width == 8 else np.float32):
                    handle.write(np.ascontiguousarray(data).tobytes())
                else:  # a large array-like (memmap): in chunks
                    for offset in range(0, len(data), CHUNK):
                        chunk = np.asarray(data[offset:offset + CHUNK], dtype=np.int64 if width == 8 else np.float32)
                        handle.write(np.ascontiguousarray(chunk).tobytes())
                handle.flush()
                os.fsync(handle.fileno())

    @property
    def keys(self) -> np.ndarray:
        return self._keys

    def rows_of(self, keys: np.ndarray) -> np.ndarray:
        """Rows of ``keys`` (-1 where a key has no row)."""
        keys = np.asarray(keys, dtype=np.int64)
        rows = np.searchsorted(self._keys, keys)
        found = rows < self.rows
        found[found] = self._keys[rows[found]] == keys[found]
        return np.where(found, rows, -1)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """A copy of the vectors of ``rows`` (N, D)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (np.diff(rows) == 1).all():
            return self._slice(int(rows[0]), int(rows[-1]) + 1)  # a contiguous slice: one read
        return np.array(self._vectors[rows]) if len(rows) else np.empty((0, self.dim), dtype=np.float32)

    def _slice(self, start: int, end: int) -> np.ndarray:
        """Rows [start, end) read from the file (a plain read: a pass over every row does not map the whole
        file into this process, as reading the memory map would)."""
        end = min(end, self.rows)
        if end <= start:
            return np.empty((0, self.dim), dtype=np.float32)
        vectors = np.fromfile(self.vectors_path, dtype=np.float32, count=(end - start) * self.dim,
                              offset=start * 4 * self.dim)
        return vectors.reshape(end - start, self.dim)

    def chunks(self, start: int = 0, keep: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(keys, vectors) of rows ``start``.. in chunks; ``keep`` (sorted keys) drops the others."""
        for offset in range(start, self.rows, CHUNK):
            keys = np.array(self._keys[offset:offset + CHUNK])
            vectors = self._slice(offset, offset + CHUNK)
            if keep is not None:
                mask = np.isin(keys, keep, assume_unique=True)
                keys, vectors = keys[mask], vectors[mask]
            if len(keys):
                yield keys, vectors


class EmbeddedBackend(BackendPosition):
    """The ``faiss`` backend: see the module docstring.

    A handle holds the structure at store revision :attr:`revision` (items up to key :attr:`last_key`),
    and its item reads are pinned there, so what it answers is one committed state until it catches up.
    """

    name = "faiss"

    def __init__(self, folder: Path, config: IndexConfig, store: ItemStore, vectors: VectorFile, structure):
        self.folder = Path(folder)
        self.config = config
        self.store = store
        self.vector_file = vectors
        self.structure = structure
        self.revision = config.structure_revision
        self.last_key = config.structure_last_key
        self.stale = np.empty(0, dtype=np.int64)  # removed keys an HNSW structure still holds, until rebuild
        self.skipped = np.empty(0, dtype=np.int64)  # keys searches skip: the stale ones, or removed lazily
        self._count = 0
        self._changes_since_checkpoint = 0
        self._where_cache: dict[str, np.ndarray] = {}

    # --- opening and making ------------------------------------------------------------------------

    @classmethod
    def open(cls, folder, config: IndexConfig) -> "EmbeddedBackend":
        folder = Path(folder)
        store = ItemStore(folder / config.items_file)
        try:
            structure = structures.read_file(folder / config.faiss_file)
            backend = cls(folder, config, store, VectorFile(folder, config.generation, config.dim), structure)
            backend._catch_up(initial=True)
        except BaseException:
            store.close()
            raise
        return backend

    @classmethod
    def current_revision(cls, folder, config: IndexConfig) -> int:
        """The store's committed revision (what a reader compares with its own to know it is behind)."""
        store = ItemStore(Path(folder) / config.items_file)
        try:
            return store.state("revision")
        finally:
            store.close()

    @classmethod
    def create(cls, folder, config: IndexConfig, rows: ItemRows, vectors, previous: IndexConfig | None,
               measure_recall: bool, keys: np.ndarray | None = None) -> "EmbeddedBackend":
        """Write a new index of ``vectors`` (raw, (N, D), any array-like: read in chunks) into ``folder``
        (the caller holds the writer lock); ``index.json`` is written last (the commit point). ``keys``:
        the items' keys when an index is converted (default: new ones)."""
        folder = Path(folder)
        generation = (previous.generation if previous else 0) + 1
        config.generation = generation
        config.items_file = items_name(generation)
        store = ItemStore.create(folder / config.items_file)
        vector_file = VectorFile(folder, generation, config.dim)
        try:
            _check_finite(vectors, "index vectors")
            with store.writing() as revision:
                keys = store.insert(rows.ids, rows.sources, rows.labels, rows.metas, keys)
                vector_file.append(0, keys, vectors)
                store.add_columns(config.metadata_columns)
                store.set_state(f"rows-{generation}", len(keys))
            vector_file.map(len(keys))
            backend = cls._build(folder, config, store, vector_file, revision, previous, measure_recall)
        except BaseException:
            store.close()
            raise
        return backend

    @classmethod
    def _build(cls, folder: Path, config: IndexConfig, store: ItemStore, vector_file: VectorFile, revision: int,
               previous: IndexConfig | None, measure_recall: bool) -> "EmbeddedBackend":
        """Make the structure of ``config`` over every row of ``vector_file``, measure it, write it and then
        ``index.json`` (the commit point), and sweep the files no configuration names any more."""
        keys_all = vector_file.keys
        structure = structures.new_structure(config, _training_sample(config, vector_file))
        config.whitened_items = vector_file.rows if structures.is_whitened(structure) else 0
        config.base_revision = config.structure_revision = revision
        config.count = vector_file.rows
        config.stale = 0
        if config.kind == "exact":  # the file holds the whitening only: its vectors are read at open
            config.structure_last_key = 0
            config.faiss_file = structure_name(config.generation, revision)
            structures.write_file(structure, folder / config.faiss_file)
        backend = cls(folder, config, store, vector_file, structure)
        for keys, raw in vector_file.chunks():
            structure.add_with_ids(structures.prepare_vectors(raw, config.metric, config.dim), keys)
        backend.revision = revision
        backend.last_key = int(keys_all[-1]) if len(keys_all) else 0
        backend._count = vector_file.rows
        store.pin(backend.revision, backend.last_key)
        config.recall_at_10 = None
        if config.kind != "exact" and measure_recall and vector_file.rows:
            config.recall_at_10 = backend.measure_recall()
        config.typicality = backend.typicality()
        if config.kind != "exact":
            config.structure_last_key = backend.last_key
            config.faiss_file = structure_name(config.generation, revision)
            structures.write_file(structure, folder / config.faiss_file)
        write_json(folder / CONFIG_FILE, dataclasses.asdict(config))
        collect_garbage(folder, keep=backend.files() + (_config_files(previous) if previous else []))
        return backend

    def files(self) -> list[str]:
        """The files this handle's generation is made of."""
        return [self.config.items_file, self.config.faiss_file, *self.vector_file.files()]

    # --- where it stands ---------------------------------------------------------------------------------

    def catch_up(self) -> bool:
        """Apply what other handles committed since this one's revision; returns whether anything changed."""
        return self._catch_up(initial=False)

    def _catch_up(self, initial: bool) -> bool:
        """Bring the structure from (``revision``, ``last_key``) to the store's committed revision: add the
        vectors of newer keys (read from the vector file) and drop removed keys: IVF kinds remove them from
        their lists (a scan of the list ids: 16 ms at 1M); an exact index skips them in searches until it is
        next opened (removing from a flat index moves every vector after them: 0.27 s at 1M, in every
        handle); HNSW kinds cannot delete, so their removed vectors stay *stale* until ``rebuild``."""
        config = self.config
        graph = config.kind in ("hnsw", "hnsw-sq8")
        deletes = config.kind in ("ivf", "ivf-pq")
        with self.store.reading():
            upto = self.store.state("revision")
            if upto == self.revision and not initial:
                return False
            rows = self.store.state(f"rows-{config.generation}")
            removed = self.store.removed_keys(self.revision, upto)
            stale = self.store.removed_keys(config.base_revision, upto) if graph else None
            columns = self.store.columns()
            count = self.store.live_count() if initial else None
        # the rows committed past this handle's last key are the new items (the vector file is in key order)
        self.vector_file.map(rows)
        start = int(np.searchsorted(self.vector_file.keys, self.last_key, side="right"))
        added = np.array(self.vector_file.keys[start:])
        # what was removed since need not be added (an exact index at open: its every row is new)
        keep = np.setdiff1d(added, removed, assume_unique=True) if not graph and len(removed) else None
        for keys, raw in self.vector_file.chunks(start, keep):
            self.structure.add_with_ids(structures.prepare_vectors(raw, config.metric, config.dim), keys)
        old = removed[removed <= self.last_key]  # removed keys the structure holds
        if graph:
            self.stale = stale
            self.skipped = stale
        elif deletes and len(old):
            import faiss

            done = self.structure.remove_ids(faiss.IDSelectorBatch(old))
            if done != len(old):
                raise StylespaceError(f"{self.folder}: FAISS held {done} of {len(old)} removed keys; the index "
                                      "is inconsistent (run `stylespace index rebuild`)")
        elif len(old):
            self.skipped = np.union1d(self.skipped, old)
        self._count = count if initial else self._count + len(added) - len(removed)
        if not initial:
            self._changes_since_checkpoint += len(added) + len(removed)
        else:  # what the structure file does not hold yet: what a checkpoint would save replaying
            self._changes_since_checkpoint = 0 if config.kind == "exact" else len(added) + len(removed)
        self.revision, self.last_key = upto, int(added[-1]) if len(added) else self.last_key
        self.store.pin(self.revision, self.last_key)
        config.count, config.stale = self._count, len(self.stale)
        config.metadata_columns = sorted(set(config.metadata_columns) | set(columns))
        self._where_cache = {}
        return True

    def changes_since(self, position: IndexPosition) -> IndexChanges | None:
        """What changed between ``position`` (an earlier position of this generation) and where this handle
        stands: the rows added since and the keys removed since, read with two range queries (the cost of
        the change, not of the catalog); None when ``position`` is of another generation."""
        if position.generation != self.config.generation or position.revision > self.revision:
            return None
        with self.store.reading():
            added = self.store.added_rows(position.last_key, self.last_key, self.revision)
            removed = self.store.removed_keys(position.revision, self.revision)
        return IndexChanges(added, removed[removed <= position.last_key])

    @property
    def position(self) -> IndexPosition:
        return IndexPosition(self.config.generation, self.revision, self.last_key)

    # --- items -------------------------------------------------------------------------------------------

    def find(self, ids: Sequence[str]) -> dict[str, int]:
        return self.store.find(ids)

    def rows(self, keys) -> dict:
        return self.store.rows(keys)

    def labels(self, keys: np.ndarray) -> np.ndarray:
        return self.store.labels(keys)

    def labelled_count(self) -> int:
        return self.store.labelled_count()

    def all_ids(self) -> list[str]:
        return self.store.all_ids()

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        """Prepared vectors of ``keys`` (any shape) -> ``keys.shape + (D,)``; NaN rows for -1."""
        keys = np.asarray(keys, dtype=np.int64)
        flat = keys.ravel()
        out = np.full((len(flat), self.config.dim), np.nan, dtype=np.float32)
        valid = flat >= 0
        rows = self.vector_file.rows_of(flat[valid])
        if (rows < 0).any():
            raise StylespaceError(f"{self.folder}: {int((rows < 0).sum())} key(s) have no stored vector; the index "
                                  "is inconsistent (run `stylespace index rebuild`)")
        if len(rows):
            order = np.argsort(rows, kind="stable")  # read the memory map in file order
            vectors = np.empty((len(rows), self.config.dim), dtype=np.float32)
            vectors[order] = self.vector_file.read(rows[order])
            out[valid] = structures.prepare_vectors(vectors, self.config.metric, self.config.dim)
        return out.reshape(*keys.shape, self.config.dim)

    # --- search --------------------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, where: Mapping[str, list[str]] | None, banned: np.ndarray,
               per_query: np.ndarray):
        """Over-fetch: ask FAISS for more than k, drop what the filters refuse, and ask again (4x more) for
        the rows still short, until each row has k or the whole index was returned. Compressed kinds
        re-rank each shortlist with the exact vectors first."""
        allowed = self._allowed(where)
        n_queries = len(queries)
        keys_out = np.full((n_queries, k), -1, dtype=np.int64)
        sims_out = np.full((n_queries, k), np.nan, dtype=np.float32)
        total = int(self.structure.ntotal)
        if n_queries == 0 or total == 0 or (allowed is not None and len(allowed) == 0):
            return Neighbours(keys_out, sims_out, self.config.metric)
        refused = np.union1d(self.skipped, banned)
        # enough candidates that k are left once the skipped share of the structure and the exclusions are dropped
        expected = math.ceil((k + len(banned) + per_query.shape[1]) * total / max(1, total - len(self.skipped))) + 1
        if allowed is not None:
            # enough candidates that, at the filter's share of the catalog, k of them pass
            expected = math.ceil(expected * total / len(allowed) * 1.25)
        fetch = min(max(expected, k), total)
        pending = np.arange(n_queries)
        while len(pending):
            sims, keys = self._shortlist(queries[pending], fetch)
            keep = keys >= 0
            if len(refused):
                keep &= ~np.isin(keys, refused)
            if allowed is not None:
                keep &= np.isin(keys, allowed)
            if per_query.shape[1]:
                keep &= ~(keys[:, :, None] == per_query[pending][:, None, :]).any(axis=2)
            enough = (keep.sum(axis=1) >= k) | (fetch >= total)
            rows = np.flatnonzero(enough)
            # the first k kept columns of each finished row, in rank order (a stable sort puts kept first)
            order = np.argsort(~keep[rows], axis=1, kind="stable")[:, :k]
            picked_keys = np.take_along_axis(keys[rows], order, axis=1)
            picked_sims = np.take_along_axis(sims[rows], order, axis=1)
            picked_keep = np.take_along_axis(keep[rows], order, axis=1)
            width = picked_keys.shape[1]
            keys_out[pending[rows], :width] = np.where(picked_keep, picked_keys, -1)
            sims_out[pending[rows], :width] = np.where(picked_keep, picked_sims, np.nan)
            pending = pending[~enough]
            fetch = min(total, fetch * 4)
        return Neighbours(keys_out, sims_out, self.config.metric)

    def _shortlist(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, keys) (Q, fetch) nearest first: FAISS's answer, or for a compressed kind the
        best ``fetch`` of its ``rerank`` x ``fetch`` candidates scored again on the exact vectors."""
        if not self.config.compressed:
            return structures.search_structure(self.structure, self.config, queries, fetch)
        wide = min(int(self.structure.ntotal), fetch * self.config.rerank)
        _, candidates = structures.search_structure(self.structure, self.config, queries, wide)
        parts = [structures.rerank(self.structure, self.config, queries[i:i + RERANK_BLOCK], candidates[i:i + RERANK_BLOCK],
                                   self.vectors(candidates[i:i + RERANK_BLOCK]), fetch)
                 for i in range(0, len(queries), RERANK_BLOCK)]  # blocks: bounded memory for many queries
        if not parts:
            return np.empty((0, fetch), np.float32), np.empty((0, fetch), np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _allowed(self, where: Mapping[str, list[str]] | None) -> np.ndarray | None:
        """Sorted keys that pass ``where`` (None = no filter), cached per filter until the next change."""
        if not where:
            return None
        import json

        cache_key = json.dumps(where, sort_keys=True)
        if cache_key not in self._where_cache:
            self._where_cache[cache_key] = self.store.keys_where(where)
        return self._where_cache[cache_key]

    # --- measures ------------------------------------------------------------------------------------------

    def measure_recall(self, k: int = 10, seed: int = 0) -> float:
        """Recall@k of this structure (with its re-ranking) against exact search, over sampled items of
        its own as queries; the truth is computed chunk by chunk over the vector file (bounded memory)."""
        n = self.vector_file.rows
        wanted = RECALL_QUERIES if n <= 1_000_000 else RECALL_QUERIES_LARGE
        rows = np.sort(np.random.default_rng(seed).choice(n, min(wanted, n), replace=False))
        queries = structures.prepare_vectors(self.vector_file.read(rows), self.config.metric, self.config.dim)
        searched = np.ascontiguousarray(structures.search_space(self.structure, queries))
        chunks = ((keys, structures.search_space(self.structure,
                                                 structures.prepare_vectors(raw, self.config.metric, self.config.dim)))
                  for keys, raw in self.vector_file.chunks())
        truth = structures.exact_neighbours(chunks, searched, min(k, n), self.config.metric)
        _, found = self._shortlist(queries, min(k, n))
        return structures.recall_at_k(found, truth)

    def typicality(self) -> dict:
        """The catalog's own spread (see ``structures.typicality``), on a sample of its rows."""
        n = self.vector_file.rows
        if n < 2:
            return {}
        rows = np.sort(np.random.default_rng(0).choice(n, min(structures.TYPICALITY_SAMPLE, n), replace=False))
        keys = self.vector_file.keys[rows]
        prepared = structures.prepare_vectors(self.vector_file.read(rows), self.config.metric, self.config.dim)
        result = structures.typicality(self.structure, self.config, np.asarray(keys), prepared,
                                       sample=len(rows), searcher=self._shortlist)
        if structures.is_whitened(self.structure):  # every item: the tail percentiles need them all
            distances = np.concatenate([structures.centre_distances(
                self.structure, structures.prepare_vectors(raw, self.config.metric, self.config.dim))
                for _, raw in self.vector_file.chunks()])
            result["centre_distance"] = {str(p): float(np.percentile(distances, p))
                                         for p in structures.CENTRE_PERCENTILES}
        result["of"] = int(n)
        return result

    # --- changes (the caller holds the folder's writer lock and has caught up) -----------------------------------

    def add(self, rows: ItemRows, vectors: np.ndarray, replace_keys: np.ndarray, new_columns: list[str]) -> np.ndarray:
        generation = self.config.generation
        with self.store.writing() as revision:
            start = self.store.state(f"rows-{generation}")
            keys = self.store.insert(rows.ids, rows.sources, rows.labels, rows.metas)
            self.vector_file.append(start, keys, vectors)
            if len(replace_keys):
                self.store.mark_removed(replace_keys, revision)
            if new_columns:
                self.store.add_columns(new_columns)
            self.store.set_state(f"rows-{generation}", start + len(keys))
            self._count_changed(len(keys) + len(replace_keys))
        self._after_change()
        return keys

    def remove(self, keys: np.ndarray) -> None:
        with self.store.writing() as revision:
            self.store.mark_removed(keys, revision)
            self._count_changed(len(keys))
        self._after_change()

    def _count_changed(self, n: int) -> None:
        """Inside a write: add ``n`` to the items changed so far (what a saved calibration compares with)."""
        self.store.set_state("changed_items", self.store.state("changed_items") + int(n))

    def changed_items(self) -> int:
        """Items added, replaced or removed over the index's whole life, as committed."""
        return self.store.state("changed_items")

    def _after_change(self) -> None:
        self._catch_up(initial=False)
        if self.config.kind == "exact":
            return
        if self._changes_since_checkpoint > max(CHECKPOINT_MIN_CHANGES, CHECKPOINT_SHARE * self._count):
            self.checkpoint()

    def checkpoint(self) -> None:
        """Write the structure as it is now and name it in ``index.json`` (the previous file is kept one
        checkpoint longer for readers that have just read the previous ``index.json``)."""
        previous = self.config.faiss_file
        name = structure_name(self.config.generation, self.revision)
        structures.write_file(self.structure, self.folder / name)
        config = dataclasses.replace(self.config, faiss_file=name, structure_revision=self.revision,
                                     structure_last_key=self.last_key,
                                     metadata_columns=list(self.config.metadata_columns))
        write_json(self.folder / CONFIG_FILE, dataclasses.asdict(config))
        self.config.faiss_file, self.config.structure_revision = name, self.revision
        self.config.structure_last_key = self.last_key
        self._changes_since_checkpoint = 0
        pattern = re.compile(rf"^structure-{self.config.generation:06d}-\d+\.faiss$")
        for entry in self.folder.iterdir():
            if pattern.match(entry.name) and entry.name not in (name, previous):
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()

    def rebuild(self, config: IndexConfig, measure_recall: bool) -> "EmbeddedBackend":
        """A new generation from the live items' stored vectors (see the module docstring); returns the new
        handle (this one stays usable until closed)."""
        previous = self.config
        config.generation = previous.generation + 1
        vector_file = VectorFile(self.folder, config.generation, config.dim)
        live = self.store.live_keys()
        rows = self.vector_file.rows_of(live)
        if (rows < 0).any():
            raise StylespaceError(f"{self.folder}: {int((rows < 0).sum())} item(s) have no stored vector; the index "
                                  "is damaged (build it again with `stylespace index build ... --overwrite`)")
        for offset in range(0, len(rows), CHUNK):  # copied in chunks: bounded memory
            part = rows[offset:offset + CHUNK]
            vector_file.append(offset, live[offset:offset + CHUNK], self.vector_file.read(part))
        if not len(rows):
            vector_file.append(0, live, np.empty((0, config.dim), dtype=np.float32))
        with self.store.writing() as revision:
            self.store.set_state(f"rows-{config.generation}", len(live))
        vector_file.map(len(live))
        store = ItemStore(self.folder / config.items_file)
        try:
            fresh = self._build(self.folder, config, store, vector_file, revision, previous, measure_recall)
        except BaseException:
            store.close()
            raise
        # rows removed before the previous generation was built: no reader of either generation sees them
        store.purge(previous.base_revision)
        return fresh

    def close(self) -> None:
        self.store.close()


def upgrade(folder: Path, config: IndexConfig) -> None:
    """Convert, in place, an index written in format 1 (every change a copied generation, vectors in SQLite)
    to this format, keeping its items' keys, settings and saved calibration (the caller holds the writer
    lock). ``index.json`` is replaced last: a crash leaves the format-1 index, still readable by this code."""
    import json
    import sqlite3

    from stylespace.index.config import FORMAT_VERSION
    from stylespace.progress import console

    if config.version >= FORMAT_VERSION:
        return  # converted meanwhile by another process
    path = Path(folder) / config.items_file
    console.print(f"converting the index at {folder} to format {FORMAT_VERSION} (once)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        found = db.execute("SELECT key, id, source, label, meta, vector FROM items ORDER BY key").fetchall()
        db.close()
    except sqlite3.DatabaseError as exc:
        raise StylespaceError(f"{path}: not a readable format-1 item table ({exc}); build the index again with "
                              "`stylespace index build ... --overwrite`") from None
    keys = np.array([r[0] for r in found], dtype=np.int64)
    vectors = (np.stack([np.frombuffer(r[5], dtype=np.float32) for r in found]) if found
               else np.empty((0, config.dim), dtype=np.float32))
    rows = ItemRows([r[1] for r in found], [r[3] for r in found], [json.loads(r[4]) for r in found],
                    [r[2] for r in found])
    fresh = dataclasses.replace(config, version=FORMAT_VERSION, metadata_columns=list(config.metadata_columns))
    old_files = [config.items_file, config.faiss_file]
    EmbeddedBackend.create(folder, fresh, rows, vectors, config, measure_recall=True, keys=keys).close()
    for name in old_files:
        with contextlib.suppress(FileNotFoundError):
            (Path(folder) / name).unlink()


# --- helpers ------------------------------------------------------------------------------------------------


def _check_finite(vectors, what: str) -> None:
    for offset in range(0, len(vectors), CHUNK):
        if not np.isfinite(np.asarray(vectors[offset:offset + CHUNK], dtype=np.float32)).all():
            raise StylespaceError(f"{what}: contain NaN or infinite values; re-run the embedding step")


def _training_sample(config: IndexConfig, vector_file: VectorFile) -> np.ndarray:
    """Prepared vectors to fit the whitening and train IVF cells / codebooks on: every row up to 200,000,
    else an even sample of that many (what FAISS would subsample to anyway)."""
    n = vector_file.rows
    limit = 200_000
    rows = np.arange(n) if n <= limit else np.sort(np.random.default_rng(0).choice(n, limit, replace=False))
    return structures.prepare_vectors(vector_file.read(rows), config.metric, config.dim, "stored vectors")


def _config_files(config: IndexConfig) -> list[str]:
    names = [config.items_file, config.faiss_file]
    if config.generation:
        names += [f"vectors-{config.generation:06d}.f32", f"keys-{config.generation:06d}.i64"]
    return names


def collect_garbage(folder: Path, keep: list[str]) -> None:
    """Delete index files not in ``keep`` (with their SQLite side files) and temporary files left by
    crashed writes."""
    kept = set(keep) | {f"{name}-wal" for name in keep} | {f"{name}-shm" for name in keep}
    for entry in Path(folder).iterdir():
        crashed_temp = entry.name.startswith(".") and entry.name.endswith(".tmp")
        if (_FILE.match(entry.name) and entry.name not in kept) or crashed_temp:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
