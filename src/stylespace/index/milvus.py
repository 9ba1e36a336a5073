"""The ``milvus`` backend: the items and their vectors in a Milvus collection, for catalogs that outgrow one
machine (``pip install 'stylespace[milvus]'``).

``uri`` is a Milvus Lite file (``./catalog.db``: embedded, nothing to run; what development and the tests
use) or a Milvus server or cluster (``http://host:19530``); the same pymilvus client code talks to both.
The index folder keeps ``index.json`` (backend, uri, collection) and the whitening fitted at build
(``whitening-G.faiss``: queries and items are whitened on the client, so the server only compares).

One collection per generation, ``<collection>_g<G>``: fields ``key`` (INT64 primary key, the item's key),
``item_id``, ``source``, ``label`` (nullable), ``meta`` (JSON), one VARCHAR scalar field ``m_<column>`` per
metadata column known at build (``where`` filters become Milvus filter expressions on them; columns that
appear later are filtered through the JSON field), ``raw`` (the vector as given) and ``vector`` (as
searched: prepared, whitened; only the whitening's top ``search_dims`` components when that is set). Kinds
map to Milvus index types: exact -> FLAT, ivf -> IVF_FLAT, hnsw -> HNSW, ivf-pq -> IVF_PQ (a server; Milvus
Lite does not build it), hnsw-sq8 -> HNSW_SQ (SQ8); the compressed kinds' shortlists are re-ranked on the
client with the exact vectors, as in the embedded backend.
A small ``<collection>_state`` collection holds the revision (the index's "changed since" marker) and the
next key. A rebuild fills the next generation's collection and then replaces ``index.json`` (the commit
point); the previous collection is dropped one rebuild later.

Milvus has no transactions across calls: an add is one insert, a remove one delete, a replace a delete and
an insert; the crash-safety promise of the embedded backend (old or new state, whatever the moment) holds
here only per call. One writer at a time is enforced through the index folder's lock, so writers must
share the folder (one machine); readers anywhere see what the server holds.
"""
from __future__ import annotations

import dataclasses
import json
import re
import threading
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from stylespace.index import structures
from stylespace.index.backend import BackendPosition, IndexChanges, IndexPosition, ItemRows, Neighbours
from stylespace.index.config import CONFIG_FILE, IndexConfig
from stylespace.utils import StylespaceError, write_json

# Rows per insert / query call (Milvus caps a message at 64 MB and an `in` list is parsed on the server).
BATCH = 2_000
# Milvus refuses a search limit above this.
MAX_LIMIT = 16_384
_INDEX_TYPES = {"exact": "FLAT", "ivf": "IVF_FLAT", "hnsw": "HNSW", "ivf-pq": "IVF_PQ", "hnsw-sq8": "HNSW_SQ"}
_clients: dict[str, object] = {}
_clients_lock = threading.Lock()


def client(uri: str):
    """One pymilvus client per uri and process (a Milvus Lite file is served by one embedded server)."""
    from pymilvus import MilvusClient

    with _clients_lock:
        if uri not in _clients:
            try:
                _clients[uri] = MilvusClient(uri)
            except Exception as exc:  # pymilvus raises its own exception types for every connection failure
                raise StylespaceError(f"cannot reach Milvus at {uri} ({str(exc).splitlines()[0]}); start the server, "
                                      "or give a Milvus Lite file (--uri ./catalog.db)") from None
        return _clients[uri]


def normalise_uri(uri: str) -> str:
    """A server address as given; a Milvus Lite file as an absolute path (the index opens from anywhere)."""
    if re.match(r"^[a-z]+://", uri):
        return uri
    path = Path(uri).expanduser().resolve()
    if path.suffix != ".db":
        raise StylespaceError(f"--uri {uri}: a Milvus Lite file must end in .db (or give a server, http://host:19530)")
    return str(path)


def column_field(column: str) -> str:
    """The scalar field that holds metadata column ``column``."""
    return "m_" + re.sub(r"[^0-9A-Za-z_]", "_", column)


def _quoted(values: Sequence) -> str:
    return json.dumps([str(v) for v in values], ensure_ascii=False)


class MilvusBackend(BackendPosition):
    """The ``milvus`` backend: see the module docstring."""

    name = "milvus"

    def __init__(self, folder: Path, config: IndexConfig, skeleton):
        self.folder = Path(folder)
        self.config = config
        self.structure = skeleton  # the whitening (an empty flat structure): what maps vectors to the search space
        self.milvus = client(config.uri)
        self.name_of = f"{config.collection}_g{config.generation}"
        self.revision = 0
        self.stale = np.empty(0, dtype=np.int64)
        self._count = 0
        self._scalar_columns = set(config.metadata_columns)

    # --- opening and making ------------------------------------------------------------------------

    @classmethod
    def open(cls, folder, config: IndexConfig) -> "MilvusBackend":
        backend = cls(Path(folder), config, structures.read_file(Path(folder) / config.faiss_file))
        if not backend.milvus.has_collection(backend.name_of):
            raise StylespaceError(f"{folder}: the Milvus collection {backend.name_of} is not at {config.uri}; was it "
                                  "dropped? Build the index again (`stylespace index build ... --overwrite`)")
        fields = {f["name"] for f in backend.milvus.describe_collection(backend.name_of)["fields"]}
        backend._scalar_columns = {c for c in config.metadata_columns if column_field(c) in fields}
        backend.catch_up(force=True)
        return backend

    @classmethod
    def current_revision(cls, folder, config: IndexConfig) -> int:
        return _read_state(client(config.uri), config.collection).get("revision", 0)

    @classmethod
    def create(cls, folder, config: IndexConfig, rows: ItemRows, vectors, previous: IndexConfig | None,
               measure_recall: bool) -> "MilvusBackend":
        folder = Path(folder)
        config.uri = normalise_uri(config.uri)
        config.collection = config.collection or "stylespace_" + re.sub(r"[^0-9A-Za-z_]", "_", folder.resolve().name)
        if not re.match(r"^[A-Za-z_][0-9A-Za-z_]*$", config.collection):
            raise StylespaceError(f"--collection {config.collection!r}: a Milvus collection name is letters, digits "
                                  "and underscores, not starting with a digit")
        if len({column_field(c) for c in config.metadata_columns}) != len(config.metadata_columns):
            raise StylespaceError(f"metadata columns {config.metadata_columns} collide once made Milvus field names")
        same_place = previous is not None and previous.backend == "milvus" and (
            previous.uri, previous.collection) == (config.uri, config.collection)
        config.generation = previous.generation + 1 if same_place else 1
        raw = np.asarray(vectors, dtype=np.float32)
        prepared = structures.prepare_vectors(raw, config.metric, config.dim, "index vectors")
        skeleton = structures.new_structure(dataclasses.replace(config, kind="exact"), prepared)
        config.whitened_items = len(prepared) if structures.is_whitened(skeleton) else 0
        backend = cls(folder, config, skeleton)
        backend._make_collection(len(prepared))
        state = _read_state(backend.milvus, config.collection)
        keys = backend._reserve(len(rows), state)
        backend._insert(keys, rows, raw, prepared)
        backend._write_state(state.get("revision", 0) + 1, int(keys[-1]) + 1 if len(keys) else state.get("next_key", 1))
        backend._commit(folder, previous if same_place else None, measure_recall, keys, prepared)
        return backend

    def _commit(self, folder: Path, previous: IndexConfig | None, measure_recall: bool, keys: np.ndarray,
                prepared: np.ndarray) -> None:
        """Measure, write the whitening and then index.json (the commit point); drop old generations."""
        config = self.config
        self.catch_up(force=True)
        config.recall_at_10 = None
        if config.kind != "exact" and measure_recall and len(keys):
            config.recall_at_10 = self.measure_recall(keys, prepared)
        searcher = lambda queries, k: self._shortlist(queries, k, None, np.empty((len(queries), 0), np.int64))
        config.typicality = structures.typicality(self.structure, config, keys, prepared, searcher=searcher)
        config.faiss_file = f"whitening-{config.generation:06d}.faiss"
        config.items_file = ""
        config.base_revision = config.structure_revision = self.revision
        structures.write_file(self.structure, folder / config.faiss_file)
        write_json(folder / CONFIG_FILE, dataclasses.asdict(config))
        from stylespace.index.embedded import collect_garbage

        collect_garbage(folder, keep=[])  # the files of an embedded index this one replaced
        keep = {self.name_of, f"{config.collection}_g{previous.generation}" if previous else ""}
        for name in self.milvus.list_collections():
            if re.fullmatch(rf"{re.escape(config.collection)}_g\d+", name) and name not in keep:
                self.milvus.drop_collection(name)
        for entry in folder.glob("whitening-*.faiss"):
            if entry.name not in (config.faiss_file, previous.faiss_file if previous else ""):
                entry.unlink()

    def _make_collection(self, n: int) -> None:
        from pymilvus import DataType

        config = self.config
        if self.milvus.has_collection(self.name_of):
            self.milvus.drop_collection(self.name_of)  # the leftover of a build that crashed before its commit
        schema = self.milvus.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.INT64, is_primary=True)
        schema.add_field("item_id", DataType.VARCHAR, max_length=1024)
        schema.add_field("source", DataType.VARCHAR, max_length=4096)
        schema.add_field("label", DataType.VARCHAR, max_length=1024, nullable=True)
        schema.add_field("meta", DataType.JSON)
        for column in config.metadata_columns:
            schema.add_field(column_field(column), DataType.VARCHAR, max_length=1024, nullable=True)
        schema.add_field("raw", DataType.FLOAT_VECTOR, dim=config.dim)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=config.searched_dim)  # reduced with search_dims
        metric = "IP" if config.metric == "cosine" else "L2"
        params = {"exact": {}, "ivf": {"nlist": config.auto_nlist(max(n, 39))},
                  "hnsw": {"M": config.hnsw_m, "efConstruction": config.ef_construction},
                  "ivf-pq": {"nlist": config.auto_nlist(max(n, 39)), "m": config.auto_pq_m(), "nbits": 8},
                  "hnsw-sq8": {"M": config.hnsw_m, "efConstruction": config.ef_construction, "sq_type": "SQ8"}}
        index_params = self.milvus.prepare_index_params()
        index_params.add_index("vector", index_type=_INDEX_TYPES[config.kind], metric_type=metric,
                               params=params[config.kind])
        index_params.add_index("raw", index_type="FLAT", metric_type="L2")
        # Session consistency: this client reads its own writes; other processes see them within Milvus's
        # bounded staleness (they learn that something changed from the state collection, read Strong).
        self.milvus.create_collection(self.name_of, schema=schema, index_params=index_params,
                                      consistency_level="Session")

    # --- where it stands ---------------------------------------------------------------------------------

    def catch_up(self, force: bool = False) -> bool:
        """Milvus searches what it holds now: catching up only reads the revision and the count."""
        revision = _read_state(self.milvus, self.config.collection).get("revision", 0)
        if revision == self.revision and not force:
            return False
        self.revision = revision
        found = self.milvus.query(self.name_of, filter="", output_fields=["count(*)"])
        self._count = int(found[0]["count(*)"])
        self.config.count = self._count
        return True

    # --- items -------------------------------------------------------------------------------------------

    def _query(self, filter: str, fields: list[str]) -> list[dict]:
        return list(self.milvus.query(self.name_of, filter=filter, output_fields=fields))

    def _by_keys(self, keys, fields: list[str]) -> dict[int, dict]:
        keys = sorted({int(k) for k in np.asarray(keys).ravel() if k >= 0})
        found = {}
        for offset in range(0, len(keys), BATCH):
            part = keys[offset:offset + BATCH]
            for row in self._query(f"key in {part}", ["key", *fields]):
                found[int(row["key"])] = row
        return found

    def find(self, ids: Sequence[str]) -> dict[str, int]:
        ids = [str(i) for i in ids]
        found = {}
        for offset in range(0, len(ids), BATCH):
            for row in self._query(f"item_id in {_quoted(ids[offset:offset + BATCH])}", ["key", "item_id"]):
                found[row["item_id"]] = int(row["key"])
        return found

    def rows(self, keys) -> dict:
        return {key: (row["item_id"], row["source"], row.get("label"), dict(row["meta"]))
                for key, row in self._by_keys(keys, ["item_id", "source", "label", "meta"]).items()}

    def labels(self, keys: np.ndarray) -> np.ndarray:
        found = self._by_keys(keys, ["label"])
        flat = np.asarray(keys, dtype=np.int64).ravel()
        return np.array([found[int(k)].get("label") if int(k) in found else None for k in flat],
                        dtype=object).reshape(np.shape(keys))

    def labelled_count(self) -> int:
        return int(self._query("label is not null", ["count(*)"])[0]["count(*)"])

    def all_ids(self) -> list[str]:
        rows = []
        iterator = self.milvus.query_iterator(self.name_of, batch_size=BATCH, filter="", output_fields=["key", "item_id"])
        try:
            while batch := iterator.next():
                rows.extend((int(r["key"]), r["item_id"]) for r in batch)
        finally:
            iterator.close()
        return [item_id for _, item_id in sorted(rows)]

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.int64)
        found = self._by_keys(keys, ["raw"])
        flat = keys.ravel()
        missing = [int(k) for k in flat if k >= 0 and int(k) not in found]
        if missing:
            raise StylespaceError(f"{len(missing)} key(s) are not in the Milvus collection {self.name_of}")
        out = np.full((len(flat), self.config.dim), np.nan, dtype=np.float32)
        valid = np.flatnonzero(flat >= 0)
        if len(valid):
            raw = np.array([found[int(flat[i])]["raw"] for i in valid], dtype=np.float32)
            out[valid] = structures.prepare_vectors(raw, self.config.metric, self.config.dim)
        return out.reshape(*keys.shape, self.config.dim)

    # --- search --------------------------------------------------------------------------------------------

    def _filter(self, where: Mapping[str, list[str]] | None, banned: np.ndarray) -> str:
        """A Milvus filter expression for ``where`` (scalar fields; later columns through the JSON field)
        and the keys every query excludes."""
        clauses = []
        for column, values in (where or {}).items():
            if column == "label":
                clauses.append(f"label in {_quoted(values)}")
            elif column in self.config_columns:
                clauses.append(f"{column_field(column)} in {_quoted(values)}")
            else:
                path = json.dumps(column, ensure_ascii=False)
                clauses.append("(" + " or ".join(f"meta[{path}] == {json.dumps(str(v), ensure_ascii=False)}"
                                                 for v in values) + ")")
        if len(banned):
            clauses.append(f"key not in {[int(k) for k in banned]}")
        return " and ".join(clauses)

    @property
    def config_columns(self) -> set[str]:
        """The metadata columns that have scalar fields (those known when this generation was built)."""
        return self._scalar_columns

    def _shortlist(self, queries: np.ndarray, fetch: int, where, per_query: np.ndarray,
                   banned: np.ndarray = np.empty(0, np.int64)) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, keys) (Q, fetch) from Milvus (re-ranked on the exact vectors for compressed kinds)."""
        config = self.config
        wide = min(MAX_LIMIT, fetch * (config.rerank if config.compressed else 1))
        searched = np.ascontiguousarray(structures.search_space(self.structure, queries), dtype=np.float32)
        params = {"metric_type": "IP" if config.metric == "cosine" else "L2",
                  "params": {"nprobe": config.nprobe, "ef": max(config.ef_search, wide)}}
        answers = self.milvus.search(self.name_of, data=searched.tolist(), limit=wide,
                                     filter=self._filter(where, banned), output_fields=["key"],
                                     search_params=params, anns_field="vector")
        keys = np.full((len(queries), wide), -1, dtype=np.int64)
        sims = np.full((len(queries), wide), np.nan, dtype=np.float32)
        for row, hits in enumerate(answers):
            for column, hit in enumerate(hits[:wide]):
                keys[row, column] = int(hit["entity"]["key"])
                distance = float(hit["distance"])
                sims[row, column] = distance if config.metric == "cosine" else -np.sqrt(max(distance, 0.0))
        if config.compressed:
            return structures.rerank(self.structure, config, queries, keys, self.vectors(keys), fetch)
        return sims[:, :fetch], keys[:, :fetch]

    def search(self, queries: np.ndarray, k: int, where: Mapping[str, list[str]] | None, banned: np.ndarray,
               per_query: np.ndarray):
        """``where`` and the shared exclusions are Milvus filters; per-query exclusions are over-fetched (k
        plus as many as a query excludes) and dropped here."""
        width = per_query.shape[1]
        fetch = min(k + width, MAX_LIMIT // max(1, self.config.rerank if self.config.compressed else 1))
        sims, keys = self._shortlist(queries, fetch, where, per_query, banned)
        keep = keys >= 0
        if width:
            keep &= ~(keys[:, :, None] == per_query[:, None, :]).any(axis=2)
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        picked_keep = np.take_along_axis(keep, order, axis=1)
        keys_out = np.where(picked_keep, np.take_along_axis(keys, order, axis=1), -1)
        sims_out = np.where(picked_keep, np.take_along_axis(sims, order, axis=1), np.nan).astype(np.float32)
        if keys_out.shape[1] < k:
            pad = k - keys_out.shape[1]
            keys_out = np.pad(keys_out, ((0, 0), (0, pad)), constant_values=-1)
            sims_out = np.pad(sims_out, ((0, 0), (0, pad)), constant_values=np.nan)
        return Neighbours(keys_out, sims_out, self.config.metric)

    def measure_recall(self, keys: np.ndarray, prepared: np.ndarray, k: int = 10, seed: int = 0) -> float:
        n = len(keys)
        rows = np.sort(np.random.default_rng(seed).choice(n, min(1000, n), replace=False))
        searched = np.ascontiguousarray(structures.search_space(self.structure, prepared))
        truth = structures.exact_neighbours([(keys, searched)], searched[rows], min(k, n), self.config.metric)
        _, found = self._shortlist(prepared[rows], min(k, n), None, np.empty((len(rows), 0), np.int64))
        return structures.recall_at_k(found, truth)

    # --- changes (under the folder's writer lock) ------------------------------------------------------------

    def _reserve(self, n: int, state: dict) -> np.ndarray:
        """``n`` new keys, recorded as handed out before they are used (a crash leaves a gap, never a reuse)."""
        start = int(state.get("next_key", 1))
        self._write_state(int(state.get("revision", 0)), start + n)
        return np.arange(start, start + n, dtype=np.int64)

    def _write_state(self, revision: int, next_key: int) -> None:
        _ensure_state(self.milvus, self.config.collection, self.config.dim)
        self.milvus.upsert(f"{self.config.collection}_state",
                           [{"key": 0, "revision": int(revision), "next_key": int(next_key),
                             "pad": [0.0, 0.0]}])

    def _insert(self, keys: np.ndarray, rows: ItemRows, raw: np.ndarray, prepared: np.ndarray) -> None:
        searched = np.asarray(structures.search_space(self.structure, prepared), dtype=np.float32)
        columns = self.config_columns
        for offset in range(0, len(keys), BATCH):
            batch = []
            for i in range(offset, min(offset + BATCH, len(keys))):
                record = {"key": int(keys[i]), "item_id": rows.ids[i], "source": rows.sources[i],
                          "label": rows.labels[i], "meta": rows.metas[i], "raw": raw[i].tolist(),
                          "vector": searched[i].tolist()}
                record.update({column_field(c): rows.metas[i].get(c) for c in columns})
                batch.append(record)
            self.milvus.insert(self.name_of, batch)

    def add(self, rows: ItemRows, vectors: np.ndarray, replace_keys: np.ndarray, new_columns: list[str]) -> np.ndarray:
        if not len(rows):
            self.remove(replace_keys)
            return np.empty(0, dtype=np.int64)
        prepared = structures.prepare_vectors(vectors, self.config.metric, self.config.dim, "new item vectors")
        state = _read_state(self.milvus, self.config.collection)
        keys = self._reserve(len(rows), state)
        if len(replace_keys):
            self.milvus.delete(self.name_of, filter=f"key in {[int(k) for k in replace_keys]}")
        self._insert(keys, rows, np.asarray(vectors, dtype=np.float32), prepared)
        self._write_state(int(state.get("revision", 0)) + 1, int(keys[-1]) + 1)
        if new_columns:
            self.config.metadata_columns = sorted(set(self.config.metadata_columns) | set(new_columns))
            write_json(self.folder / CONFIG_FILE, dataclasses.asdict(self.config))
        self.catch_up()
        return keys

    def remove(self, keys: np.ndarray) -> None:
        state = _read_state(self.milvus, self.config.collection)
        for offset in range(0, len(keys), BATCH):
            self.milvus.delete(self.name_of, filter=f"key in {[int(k) for k in keys[offset:offset + BATCH]]}")
        self._write_state(int(state.get("revision", 0)) + 1, int(state.get("next_key", 1)))
        self.catch_up()

    @property
    def position(self) -> IndexPosition:
        return IndexPosition(self.config.generation, self.revision, 0)

    def changes_since(self, position: IndexPosition) -> IndexChanges | None:
        """Not known: Milvus deletes rows outright and keeps no log of its changes (readers read everything again)."""
        return None

    def changed_items(self) -> int | None:
        return None

    def rebuild(self, config: IndexConfig, measure_recall: bool) -> "MilvusBackend":
        """The next generation's collection, filled from this one's stored vectors (keys kept); then
        index.json names it."""
        previous = self.config
        keys, rows, raw = [], ItemRows([], [], [], []), []
        iterator = self.milvus.query_iterator(self.name_of, batch_size=BATCH, filter="",
                                              output_fields=["key", "item_id", "source", "label", "meta", "raw"])
        try:
            while batch := iterator.next():
                for r in batch:
                    keys.append(int(r["key"]))
                    rows.ids.append(r["item_id"])
                    rows.sources.append(r["source"])
                    rows.labels.append(r.get("label"))
                    rows.metas.append(dict(r["meta"]))
                    raw.append(r["raw"])
        finally:
            iterator.close()
        order = np.argsort(keys, kind="stable")
        keys = np.asarray(keys, dtype=np.int64)[order]
        rows = ItemRows(*[[values[i] for i in order] for values in (rows.ids, rows.labels, rows.metas, rows.sources)])
        raw = np.asarray(raw, dtype=np.float32).reshape(-1, config.dim)[order]
        config.generation = previous.generation + 1
        prepared = structures.prepare_vectors(raw, config.metric, config.dim, "stored vectors")
        skeleton = structures.new_structure(dataclasses.replace(config, kind="exact"), prepared)
        config.whitened_items = len(prepared) if structures.is_whitened(skeleton) else 0
        fresh = MilvusBackend(self.folder, config, skeleton)
        fresh._make_collection(len(prepared))
        fresh._insert(keys, rows, raw, prepared)
        state = _read_state(self.milvus, config.collection)
        fresh._write_state(int(state.get("revision", 0)) + 1, int(state.get("next_key", 1)))
        fresh._commit(self.folder, previous, measure_recall, keys, prepared)
        return fresh

    def close(self) -> None:
        """The client is shared per uri in this process (see :func:`client`); nothing to close per handle."""


def _ensure_state(milvus, collection: str, dim: int) -> None:
    from pymilvus import DataType

    name = f"{collection}_state"
    if milvus.has_collection(name):
        return
    schema = milvus.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", DataType.INT64, is_primary=True)
    schema.add_field("revision", DataType.INT64)
    schema.add_field("next_key", DataType.INT64)
    schema.add_field("pad", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field in every collection
    index_params = milvus.prepare_index_params()
    index_params.add_index("pad", index_type="FLAT", metric_type="L2")
    milvus.create_collection(name, schema=schema, index_params=index_params, consistency_level="Strong")


def _read_state(milvus, collection: str) -> dict:
    name = f"{collection}_state"
    if not milvus.has_collection(name):
        return {}
    found = milvus.query(name, filter="key == 0", output_fields=["revision", "next_key"], consistency_level="Strong")
    return {"revision": int(found[0]["revision"]), "next_key": int(found[0]["next_key"])} if found else {}
