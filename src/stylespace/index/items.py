"""The items of an embedded index in SQLite: string id <-> int64 key, image source, label and metadata.

FAISS only knows int64 keys. Keys are handed out in increasing order and never reused, even after their
item is removed: an item keeps its key for its whole life in the index, across adds, removes and
rebuilds (a replaced item gets a new key). The vectors are not here: they live once, in the
generation's append-only vector file (``embedded.VectorFile``), in key order.

The table is *versioned* so that one SQLite file serves every reader and the one writer at once (WAL
mode: readers never block the writer nor see half of its transaction). Every committed change bumps the
store's ``revision``; a removed item is not deleted but marked with the revision that removed it. A
reader pinned at revision X with last key K (:meth:`ItemStore.pin`) sees exactly the items added up to K
and not removed by X, whatever the writer commits meanwhile, and catches up by asking what changed since
(:meth:`ItemStore.changes`). Rows removed before the current generation was built are purged by the
rebuild after it.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from stylespace.utils import StylespaceError

SCHEMA = """
PRAGMA auto_vacuum = INCREMENTAL;
CREATE TABLE items (
    key INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    label TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    removed INTEGER
);
CREATE INDEX items_id ON items (id);
CREATE INDEX items_removed ON items (removed) WHERE removed IS NOT NULL;
-- revision (bumped by every committed change), next_key, rows-G (committed rows of generation G's vector file),
-- changed_items (items added, replaced or removed, summed over every change: how far a calibration drifted)
CREATE TABLE state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- the metadata columns items carry (what where= filters may name)
CREATE TABLE columns (name TEXT PRIMARY KEY);
"""

# One bound parameter holding a JSON array, expanded by SQLite: no limit on the number of keys.
_KEYS_IN = "key IN (SELECT value FROM json_each(?))"
# Items visible to a reader pinned at (revision, last key).
_VISIBLE = "key <= ? AND (removed IS NULL OR removed > ?)"
# Rows per INSERT batch when adding many items.
_INSERT_BATCH = 10_000


class ItemStore:
    """An embedded index's ``items-*.sqlite``, read at a pinned revision (see the module docstring).

    Args:
        path: the SQLite file (made by :meth:`create`).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise StylespaceError(f"{self.path}: the index's item table is missing; the index folder is damaged "
                                  "(build it again with `stylespace index build ... --overwrite`)")
        # autocommit mode: every transaction is explicit (BEGIN / BEGIN IMMEDIATE ... COMMIT)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=60)
        # The service answers from several threads; one lock serialises use of the one connection.
        self._lock = threading.RLock()
        try:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("SELECT key, removed FROM items LIMIT 1")
            self._db.execute("SELECT value FROM state LIMIT 1")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StylespaceError(f"{self.path}: not an index item table ({exc}); build the index again "
                                  "with `stylespace index build ... --overwrite`") from None
        self.revision = 0
        self.last_key = 0

    @classmethod
    def create(cls, path: str | Path) -> "ItemStore":
        """A new empty table at ``path`` (a leftover of a crashed write there is replaced)."""
        path = Path(path)
        for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if leftover.exists():
                leftover.unlink()
        db = sqlite3.connect(path, isolation_level=None)
        db.executescript(SCHEMA)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("INSERT INTO state (name, value) VALUES ('revision', 0), ('next_key', 1)")
        db.close()
        return cls(path)

    def close(self) -> None:
        self._db.close()

    def pin(self, revision: int, last_key: int) -> None:
        """Read the items as they were at ``revision`` (added up to ``last_key``, not removed by then)."""
        self.revision, self.last_key = int(revision), int(last_key)

    # --- transactions ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """One read transaction: every read inside sees the same committed state."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield
            finally:
                self._db.execute("COMMIT")

    @contextlib.contextmanager
    def writing(self) -> Iterator[int]:
        """One write transaction (the folder's writer lock must be held): yields the revision it commits,
        and commits it, or rolls everything back when the block raises (or the process dies)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                revision = self.state("revision") + 1
                yield revision
                self._set("revision", revision)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # --- reading ---------------------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def state(self, name: str, default: int = 0) -> int:
        rows = self._query("SELECT value FROM state WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else default

    def columns(self) -> list[str]:
        return [r[0] for r in self._query("SELECT name FROM columns ORDER BY name")]

    def count(self) -> int:
        """Items visible at the pinned revision."""
        return int(self._query(f"SELECT COUNT(*) FROM items WHERE {_VISIBLE}", (self.last_key, self.revision))[0][0])

    def live_count(self) -> int:
        """Items not removed, as committed (inside :meth:`reading`: as of the revision read there)."""
        return int(self._query("SELECT COUNT(*) FROM items WHERE removed IS NULL")[0][0])

    def removed_keys(self, after_revision: int, upto_revision: int) -> np.ndarray:
        rows = self._query("SELECT key FROM items WHERE removed > ? AND removed <= ? ORDER BY key",
                           (after_revision, upto_revision))
        return np.array([r[0] for r in rows], dtype=np.int64)

    def added_rows(self, after_key: int, upto_key: int, revision: int) -> dict[int, tuple[str, str, str | None, dict]]:
        """key -> (id, source, label, meta) of the items with keys in (``after_key``, ``upto_key``] still there
        at ``revision``: what a reader at ``after_key`` gains by moving to (``revision``, ``upto_key``); one
        range scan of the primary key, so it costs what was added, not the catalog's size."""
        rows = self._query("SELECT key, id, source, label, meta FROM items WHERE key > ? AND key <= ? AND "
                           "(removed IS NULL OR removed > ?) ORDER BY key", (int(after_key), int(upto_key), int(revision)))
        return {int(key): (item_id, source, label, json.loads(meta)) for key, item_id, source, label, meta in rows}

    def __len__(self) -> int:
        return self.count()

    def find(self, ids: Sequence[str]) -> dict[str, int]:
        """id -> key for those of ``ids`` visible at the pinned revision."""
        rows = self._query(f"SELECT id, key FROM items WHERE id IN (SELECT value FROM json_each(?)) AND {_VISIBLE}",
                           (json.dumps(list(ids)), self.last_key, self.revision))
        return {item_id: int(key) for item_id, key in rows}

    def rows(self, keys: Sequence[int]) -> dict[int, tuple[str, str, str | None, dict]]:
        """key -> (id, source, label, meta) for ``keys`` (keys a search returned at the pinned revision)."""
        rows = self._query(f"SELECT key, id, source, label, meta FROM items WHERE {_KEYS_IN}",
                           (json.dumps([int(k) for k in keys]),))
        return {int(key): (item_id, source, label, json.loads(meta)) for key, item_id, source, label, meta in rows}

    def labels(self, keys: np.ndarray) -> np.ndarray:
        """Labels of ``keys`` with the same shape (object array); None for -1 and unlabelled items."""
        flat = np.asarray(keys, dtype=np.int64).ravel()
        found = dict(self._query(f"SELECT key, label FROM items WHERE {_KEYS_IN}",
                                 (json.dumps(np.unique(flat[flat >= 0]).tolist()),)))
        return np.array([found.get(int(k)) for k in flat], dtype=object).reshape(np.shape(keys))

    def labelled_count(self) -> int:
        return int(self._query(f"SELECT COUNT(*) FROM items WHERE label IS NOT NULL AND {_VISIBLE}",
                               (self.last_key, self.revision))[0][0])

    def all_ids(self) -> list[str]:
        return [r[0] for r in self._query(f"SELECT id FROM items WHERE {_VISIBLE} ORDER BY key",
                                          (self.last_key, self.revision))]

    def live_keys(self) -> np.ndarray:
        """Sorted keys visible at the pinned revision."""
        rows = self._query(f"SELECT key FROM items WHERE {_VISIBLE} ORDER BY key", (self.last_key, self.revision))
        return np.array([r[0] for r in rows], dtype=np.int64)

    def keys_where(self, where: Mapping[str, Sequence[str]]) -> np.ndarray:
        """Sorted int64 keys of visible items whose metadata matches: any of the values within a column,
        all columns. ``label`` names the item's label; any other name is a metadata column."""
        clauses, params = [], []
        for column, values in where.items():
            field = "label" if column == "label" else "json_extract(meta, ?)"
            if column != "label":
                params.append('$."' + column.replace('"', '\\"') + '"')
            clauses.append(f"{field} IN (SELECT value FROM json_each(?))")
            params.append(json.dumps([str(v) for v in values]))
        rows = self._query(f"SELECT key FROM items WHERE {' AND '.join(clauses)} AND {_VISIBLE} ORDER BY key",
                           [*params, self.last_key, self.revision])
        return np.array([r[0] for r in rows], dtype=np.int64)

    # --- writing (inside :meth:`writing`) ---------------------------------------------------------------

    def _set(self, name: str, value: int) -> None:
        self._db.execute("INSERT INTO state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET "
                         "value = excluded.value", (name, int(value)))

    def set_state(self, name: str, value: int) -> None:
        with self._lock:
            self._set(name, value)

    def insert(self, ids: Sequence[str], sources: Sequence[str], labels: Sequence[str | None],
               metas: Sequence[Mapping[str, str]], keys: np.ndarray | None = None) -> np.ndarray:
        """Insert new items; returns their new keys (N,) int64, increasing (``keys``: given, increasing and
        past every key so far, when an index is converted). Ids must not be live."""
        with self._lock:
            start = self.state("next_key", 1)
            if keys is None:
                keys = np.arange(start, start + len(ids), dtype=np.int64)
            elif len(keys) and (keys[0] < start or (np.diff(keys) <= 0).any()):
                raise ValueError("given keys must increase and follow the keys already handed out")
            for offset in range(0, len(ids), _INSERT_BATCH):
                end = offset + _INSERT_BATCH
                self._db.executemany(
                    "INSERT INTO items (key, id, source, label, meta) VALUES (?, ?, ?, ?, ?)",
                    zip(keys[offset:end].tolist(), ids[offset:end], sources[offset:end], labels[offset:end],
                        (json.dumps(dict(m), ensure_ascii=False) for m in metas[offset:end])))
            self._set("next_key", int(keys[-1]) + 1 if len(keys) else start)
        return keys

    def mark_removed(self, keys: np.ndarray, revision: int) -> None:
        with self._lock:
            self._db.execute(f"UPDATE items SET removed = ? WHERE {_KEYS_IN} AND removed IS NULL",
                             (int(revision), json.dumps([int(k) for k in keys])))

    def add_columns(self, names: Sequence[str]) -> None:
        with self._lock:
            self._db.executemany("INSERT OR IGNORE INTO columns (name) VALUES (?)", [(n,) for n in names])

    def purge(self, removed_upto: int) -> None:
        """Delete the rows removed at or before ``removed_upto`` (no reader of the current or the previous
        generation can see them) and give their pages back to the file system."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM items WHERE removed IS NOT NULL AND removed <= ?", (int(removed_upto),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("PRAGMA incremental_vacuum")
