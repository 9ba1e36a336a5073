"""The items of an index in SQLite: string id <-> int64 key, image source, label, metadata and vector.

FAISS only knows int64 keys. Keys come from an AUTOINCREMENT column, so a key is never reused, even
after its item is removed: an item keeps its key for its whole life in the index, across adds,
removes and rebuilds. The vectors are kept here too (float32 blobs), which makes SQLite the source of
truth and the FAISS file a derived structure that ``rebuild`` can remake (even as another kind)
without embedding anything again.

One file per generation; a generation is written once and then only read (see ``CatalogIndex``).
"""
from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from stylespace.utils import StylespaceError

SCHEMA = """
CREATE TABLE items (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL DEFAULT '',
    label TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    vector BLOB NOT NULL
);
-- Keys whose vectors are still in the FAISS file although their items were removed (HNSW cannot
-- delete); searches skip them and rebuild drops them.
CREATE TABLE stale (key INTEGER PRIMARY KEY);
"""

# One bound parameter holding a JSON array, expanded by SQLite: no limit on the number of keys.
_KEYS_IN = "key IN (SELECT value FROM json_each(?))"


class ItemStore:
    """One generation's ``items-*.sqlite``.

    Args:
        path: the SQLite file.
        writable: open for writing (only a generation being made is ever written).
    """

    def __init__(self, path: str | Path, writable: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise StylespaceError(f"{self.path}: the index's item table is missing; the index folder is damaged "
                                  "(rebuild it with `stylespace index`)")
        uri = self.path.resolve().as_uri() + ("" if writable else "?mode=ro")
        # The service answers from several threads; one lock serialises use of the one connection.
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        self.writable = writable
        try:
            self._db.execute("SELECT key FROM items LIMIT 1")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StylespaceError(f"{self.path}: not an index item table ({exc})") from None

    @classmethod
    def create(cls, path: str | Path) -> "ItemStore":
        """A new empty table at ``path`` (which must not exist yet)."""
        path = Path(path)
        if path.exists():
            path.unlink()  # a leftover of a crashed write: never referenced by index.json
        db = sqlite3.connect(path)
        db.executescript(SCHEMA)
        db.commit()
        db.close()
        return cls(path, writable=True)

    def copy_to(self, path: str | Path) -> "ItemStore":
        """A writable copy of this table at ``path`` (SQLite's backup API: a consistent snapshot)."""
        path = Path(path)
        if path.exists():
            path.unlink()
        target = sqlite3.connect(path)
        with self._lock:
            self._db.backup(target)
        target.close()
        return ItemStore(path, writable=True)

    def close(self) -> None:
        self._db.close()

    def commit(self) -> None:
        self._db.commit()

    def vacuum(self) -> None:
        """Reclaim the space of deleted rows (after a rebuild)."""
        self._check_writable()
        with self._lock:
            self._db.execute("VACUUM")

    # --- reading ---------------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def __len__(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM items")[0][0])

    def find(self, ids: Sequence[str]) -> dict[str, int]:
        """id -> key for those of ``ids`` in the table."""
        rows = self._query("SELECT id, key FROM items WHERE id IN (SELECT value FROM json_each(?))",
                           (json.dumps(list(ids)),))
        return {item_id: int(key) for item_id, key in rows}

    def keys_of(self, ids: Sequence[str]) -> np.ndarray:
        """(N,) int64 keys of ``ids``, in order; an unknown id is an error naming it."""
        found = self.find(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            shown = ", ".join(repr(i) for i in missing[:5])
            raise StylespaceError(f"{len(missing)} id(s) not in the index: {shown}{' ...' if len(missing) > 5 else ''}")
        return np.array([found[i] for i in ids], dtype=np.int64)

    def rows(self, keys: Sequence[int]) -> dict[int, tuple[str, str, str | None, dict]]:
        """key -> (id, source, label, meta) for the live ones of ``keys``."""
        rows = self._query(f"SELECT key, id, source, label, meta FROM items WHERE {_KEYS_IN}",
                           (json.dumps([int(k) for k in keys]),))
        return {int(key): (item_id, source, label, json.loads(meta)) for key, item_id, source, label, meta in rows}

    def labels(self, keys: np.ndarray) -> np.ndarray:
        """Labels of ``keys`` with the same shape (object array); None for -1 and unlabelled items."""
        flat = np.asarray(keys, dtype=np.int64).ravel()
        found = dict(self._query(f"SELECT key, label FROM items WHERE {_KEYS_IN}",
                                 (json.dumps(np.unique(flat[flat >= 0]).tolist()),)))
        return np.array([found.get(int(k)) for k in flat], dtype=object).reshape(np.shape(keys))

    def vectors(self, keys: np.ndarray, dim: int) -> np.ndarray:
        """Vectors of ``keys``: shape ``keys.shape + (dim,)`` float32; rows of -1 keys are NaN."""
        flat = np.asarray(keys, dtype=np.int64).ravel()
        wanted = np.unique(flat[flat >= 0])
        rows = self._query(f"SELECT key, vector FROM items WHERE {_KEYS_IN}", (json.dumps(wanted.tolist()),))
        if len(rows) != len(wanted):
            raise StylespaceError(f"{self.path}: {len(wanted) - len(rows)} key(s) have no item row; the index is "
                                  "inconsistent (run `stylespace index rebuild`)")
        table = {int(key): np.frombuffer(blob, dtype=np.float32) for key, blob in rows}
        out = np.full((len(flat), dim), np.nan, dtype=np.float32)
        for i, key in enumerate(flat):
            if key >= 0:
                out[i] = table[int(key)]
        return out.reshape(*np.shape(keys), dim)

    def iter_vectors(self, batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(keys (B,), vectors (B, D)) of every item in key order, in batches (bounded memory)."""
        last = -1
        while True:
            rows = self._query("SELECT key, vector FROM items WHERE key > ? ORDER BY key LIMIT ?", (last, batch))
            if not rows:
                return
            keys = np.array([r[0] for r in rows], dtype=np.int64)
            yield keys, np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            last = int(keys[-1])

    def labelled_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM items WHERE label IS NOT NULL")[0][0])

    def all_ids(self) -> list[str]:
        return [r[0] for r in self._query("SELECT id FROM items ORDER BY key")]

    def keys_where(self, where: Mapping[str, Sequence[str]]) -> np.ndarray:
        """Sorted int64 keys of items whose metadata matches: any of the values within a column, all columns.

        ``label`` names the item's label; any other name is a metadata column.
        """
        clauses, params = [], []
        for column, values in where.items():
            field = "label" if column == "label" else "json_extract(meta, ?)"
            if column != "label":
                params.append('$."' + column.replace('"', '\\"') + '"')
            clauses.append(f"{field} IN (SELECT value FROM json_each(?))")
            params.append(json.dumps([str(v) for v in values]))
        rows = self._query(f"SELECT key FROM items WHERE {' AND '.join(clauses)} ORDER BY key", params)
        return np.array([r[0] for r in rows], dtype=np.int64)

    def stale_keys(self) -> np.ndarray:
        return np.array([r[0] for r in self._query("SELECT key FROM stale ORDER BY key")], dtype=np.int64)

    # --- writing (a new generation only) -------------------------------------------------------------

    def insert(self, ids: Sequence[str], sources: Sequence[str], labels: Sequence[str | None],
               metas: Sequence[Mapping[str, str]], vectors: np.ndarray) -> np.ndarray:
        """Insert new items; returns their new keys (N,) int64. Ids must not be in the table."""
        self._check_writable()
        keys = np.empty(len(ids), dtype=np.int64)
        with self._lock:
            for i, (item_id, source, label, meta, vector) in enumerate(zip(ids, sources, labels, metas, vectors)):
                cursor = self._db.execute(
                    "INSERT INTO items (id, source, label, meta, vector) VALUES (?, ?, ?, ?, ?)",
                    (item_id, source, label, json.dumps(dict(meta), ensure_ascii=False),
                     np.ascontiguousarray(vector, dtype=np.float32).tobytes()))
                keys[i] = cursor.lastrowid
        return keys

    def delete(self, keys: np.ndarray, keep_stale: bool) -> None:
        """Delete items by key; ``keep_stale`` records the keys as stale (their vectors stay in FAISS)."""
        self._check_writable()
        payload = json.dumps([int(k) for k in keys])
        with self._lock:
            self._db.execute(f"DELETE FROM items WHERE {_KEYS_IN}", (payload,))
            if keep_stale:
                self._db.execute("INSERT OR IGNORE INTO stale (key) SELECT value FROM json_each(?)", (payload,))

    def clear_stale(self) -> None:
        self._check_writable()
        with self._lock:
            self._db.execute("DELETE FROM stale")

    def _check_writable(self) -> None:
        if not self.writable:
            raise RuntimeError("this generation of the item table is read-only; write a new generation")
