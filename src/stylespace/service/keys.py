"""API keys: who may change the catalog (scope ``write``) and, with ``serve --read-key``, who may read it.

``stylespace keys create INDEX --name NAME [--scope write|read]`` makes a key and prints it once; only its
Argon2id hash (argon2-cffi, the maintained binding of the Password Hashing Competition's winner) is kept,
in ``INDEX/keys.json``, a file only its owner may read or write (mode 0600). A key reads
``ssk_<key id>_<secret>``: the key id (not secret) says which hash to check, the secret is 32 random
bytes. ``keys list`` shows names, ids, scopes and dates, never a hash; ``keys revoke`` marks a key
revoked (the service sees it at its next request: it watches the file).

Checking an Argon2 hash costs tens of milliseconds on purpose; the service checks a key's hash once and
then keeps only a SHA-256 digest of it in memory, compared in constant time (:func:`hmac.compare_digest`),
until the key file changes. A ``write`` key may also read.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from pathlib import Path

from stylespace.utils import StylespaceError

KEYS_FILE = "keys.json"
SCOPES = ("read", "write")
KEY_PREFIX = "ssk_"
_KEY = re.compile(r"^ssk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[\w.@-]{1,64}$")


@dataclasses.dataclass
class KeyRecord:
    """One key as stored: never the key itself, only its Argon2id hash."""

    id: str
    name: str
    scope: str
    hash: str
    created: str
    revoked: str | None = None

    def public(self) -> dict:
        """What ``keys list`` shows (no hash)."""
        return {"id": self.id, "name": self.name, "scope": self.scope, "created": self.created,
                "revoked": self.revoked}


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()  # Argon2id with the library's current (RFC 9106 low-memory) parameters


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class KeyStore:
    """The keys of one index folder (``keys.json``; see the module docstring)."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / KEYS_FILE

    # --- managing (the CLI) -------------------------------------------------------------------------------
    def records(self) -> list[KeyRecord]:
        if not self.path.is_file():
            return []
        try:
            data = json.loads(self.path.read_text())
            return [KeyRecord(**entry) for entry in data["keys"]]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise StylespaceError(f"{self.path}: not a readable key file ({exc}); move it away and create the "
                                  "keys again") from None

    def create(self, name: str, scope: str = "write") -> tuple[str, KeyRecord]:
        """Make a key; returns (the key, shown once and never stored, its record)."""
        if scope not in SCOPES:
            raise StylespaceError(f"--scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        if not _NAME.match(name or ""):
            raise StylespaceError(f"--name must be 1-64 letters, digits or . _ @ -, got {name!r}")
        records = self.records()
        if any(r.name == name and r.revoked is None for r in records):
            raise StylespaceError(f"a key named {name!r} exists; revoke it first (`stylespace keys revoke`) or "
                                  "choose another name")
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = KeyRecord(key_id, name, scope, _hasher().hash(key), _now())
        self._write([*records, record])
        return key, record

    def revoke(self, name_or_id: str) -> KeyRecord:
        records = self.records()
        found = [r for r in records if (r.name == name_or_id or r.id == name_or_id) and r.revoked is None]
        if not found:
            raise StylespaceError(f"no key named {name_or_id!r} (or with that id) that is not revoked; "
                                  "`stylespace keys list` shows them")
        for record in found:
            record.revoked = _now()
        self._write(records)
        return found[0]

    def _write(self, records: list[KeyRecord]) -> None:
        """Replace the file atomically, private from the first byte (0600)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{KEYS_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump({"version": 1, "keys": [dataclasses.asdict(r) for r in records]}, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if tmp.exists():
                tmp.unlink()
            raise


class KeyChecker:
    """Checks bearer keys against a :class:`KeyStore` for the service (thread-safe; the file is read again
    when it changes, so a revoked key stops working at once)."""

    def __init__(self, store: KeyStore):
        self.store = store
        self._lock = threading.Lock()
        self._stamp = None
        self._records: dict[str, KeyRecord] = {}
        self._verified: dict[str, bytes] = {}  # key id -> SHA-256 of the key whose hash verified

    @property
    def any_keys(self) -> bool:
        self._load()
        return bool(self._records)

    def scope_of(self, key: str) -> str | None:
        """The scope of a valid, unrevoked ``key``; None for anything else (never says why)."""
        match = _KEY.match(key)
        self._load()
        record = self._records.get(match.group(1)) if match else None
        if record is None:
            # the same work as a wrong key for a known id, so timing does not tell ids apart
            hmac.compare_digest(hashlib.sha256(key.encode()).digest(), b"\0" * 32)
            return None
        digest = hashlib.sha256(key.encode()).digest()
        with self._lock:
            known = self._verified.get(record.id)
        if known is not None:
            return record.scope if hmac.compare_digest(known, digest) else None
        try:
            _hasher().verify(record.hash, key)  # constant-time inside the library
        except Exception:  # VerifyMismatchError, InvalidHashError: a wrong key either way
            return None
        with self._lock:
            self._verified[record.id] = digest
        return record.scope

    def _load(self) -> None:
        try:
            stat = self.path_stat()
        except FileNotFoundError:
            stat = None
        with self._lock:
            if stat == self._stamp:
                return
        records = {r.id: r for r in self.store.records() if r.revoked is None}
        with self._lock:
            self._records, self._verified, self._stamp = records, {}, stat

    def path_stat(self):
        st = self.store.path.stat()
        return (st.st_mtime_ns, st.st_size, st.st_ino)
