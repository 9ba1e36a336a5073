"""Readers for every supported catalog layout, and `load_catalog` which picks the right one.

Layouts: the Kaggle Fashion Product Images layout (folder or zip, read in place), an image-folder
tree (one sub-folder per class), a CSV manifest (path,label[,more]), Fashion-MNIST IDX files and a
pairs CSV (image_a,image_b,label or 003's pic1,pic2,score). Bad rows and files are recorded as
skipped with a reason; they never stop a load.
"""
from __future__ import annotations

import csv
import gzip
import io
import os
import struct
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from stylespace.data.catalog import (
    ArrayReader,
    Catalog,
    CatalogError,
    FileReader,
    Item,
    Skipped,
    ZipReader,
    bytes_identity,
)
from stylespace.data.images import IMAGE_EXTENSIONS

KAGGLE_COLUMNS = [
    "id", "gender", "masterCategory", "subCategory", "articleType",
    "baseColour", "season", "year", "usage", "productDisplayName",
]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
KINDS = ("auto", "kaggle", "folder", "manifest", "idx", "pairs")
EXPECTED = (
    "expected one of: a Kaggle Fashion Product Images folder or zip (styles.csv + images/<id>.<ext>), "
    "an image-folder tree (one sub-folder of images per class), a CSV manifest with columns path,label, "
    "a pairs CSV with columns image_a,image_b,label (or pic1,pic2,score), or a folder of Fashion-MNIST IDX files"
)


def load_catalog(path: str | os.PathLike, kind: str = "auto", label_column: str | None = None,
                 base: Catalog | None = None) -> Catalog:
    """Read a catalog from ``path``.

    Args:
        path: a folder, a zip, or a CSV file.
        kind: one of ``auto`` (detect), ``kaggle``, ``folder``, ``manifest``, ``idx``, ``pairs``.
        label_column: for Kaggle/manifest catalogs, the column that holds the class
            (default ``articleType`` / ``label``).
        base: for a pairs CSV whose entries are item ids, the catalog those ids belong to.

    Raises:
        CatalogError: the path does not exist or is not a catalog of the expected kind.
    """
    path = Path(path)
    if kind not in KINDS:
        raise CatalogError(f"unknown catalog kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not path.exists():
        raise CatalogError(f"{path}: no such file or folder; {EXPECTED}")
    if kind == "auto":
        kind = detect_kind(path)
    reader = {"kaggle": read_kaggle, "folder": read_image_folder, "manifest": read_manifest,
              "idx": read_idx, "pairs": read_pairs}[kind]
    if kind == "pairs":
        return read_pairs(path, base=base)
    if kind in ("kaggle", "manifest"):
        return reader(path, label_column=label_column)
    return reader(path)


def detect_kind(path: Path) -> str:
    """Guess the layout of ``path`` from its files; CatalogError when it is none of them."""
    if path.is_file():
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if _find_styles_member(archive.namelist()) is not None:
                    return "kaggle"
            raise CatalogError(f"{path}: a zip without styles.csv; {EXPECTED}")
        if path.suffix.lower() in (".csv", ".tsv", ".txt"):
            header = _read_header(path)
            if {"id", "articletype"} <= header:
                return "kaggle"
            if {"image_a", "image_b"} <= header or {"pic1", "pic2"} <= header:
                return "pairs"
            if "path" in header:
                return "manifest"
            raise CatalogError(
                f"{path}: CSV header {sorted(header)} is not a catalog; {EXPECTED}"
            )
        raise CatalogError(f"{path}: not a zip or CSV file; {EXPECTED}")
    if (path / "styles.csv").is_file() or any((p / "styles.csv").is_file() for p in _subdirs(path)):
        return "kaggle"
    if any(_is_idx_name(p.name) for p in path.iterdir()):
        return "idx"
    if any(_has_images(p) for p in _subdirs(path)):
        return "folder"
    raise CatalogError(f"{path}: a folder with no catalog in it; {EXPECTED}")


# --- Kaggle Fashion Product Images ----------------------------------------------------------------


def read_kaggle(path: Path, label_column: str | None = None) -> Catalog:
    """The Kaggle layout as a folder, a zip (read in place) or a styles.csv with images/ beside it."""
    label_column = label_column or "articleType"
    skipped: list[Skipped] = []
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            styles = _find_styles_member([i.filename for i in infos])
            if styles is None:
                raise CatalogError(f"{path}: no styles.csv inside the zip; {EXPECTED}")
            text = archive.read(styles).decode("utf-8", errors="replace")
        prefix = str(PurePosixPath(styles).parent / "images") + "/"
        if prefix.startswith("./"):
            prefix = prefix[2:]
        files = {i.filename: i.file_size for i in infos if i.filename.startswith(prefix) and not i.is_dir()}
        reader = ZipReader(path, {i.filename: bytes_identity(i.CRC, i.file_size) for i in infos})
        stat = path.stat()
        parts = (stat.st_size, stat.st_mtime_ns)
        styles_name = styles
    else:
        styles_path = path if path.is_file() else _find_styles_file(path)
        text = styles_path.read_bytes().decode("utf-8", errors="replace")
        root = styles_path.parent
        images_dir = root / "images"
        if not images_dir.is_dir():
            raise CatalogError(f"{root}: no images/ folder beside {styles_path.name}; {EXPECTED}")
        files = {}
        with os.scandir(images_dir) as entries:
            for entry in entries:
                if entry.is_file():
                    files[f"images/{entry.name}"] = entry.stat().st_size
        reader = FileReader(root)
        prefix = "images/"
        stat = styles_path.stat()
        parts = (stat.st_size, stat.st_mtime_ns, len(files), sum(files.values()))
        styles_name = styles_path.name

    by_stem: dict[str, str] = {}
    for name in sorted(files):
        stem, ext = os.path.splitext(name[len(prefix):])
        if ext.lower() in IMAGE_EXTENSIONS and "/" not in stem:
            by_stem.setdefault(stem, name)

    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise CatalogError(f"{path}: {styles_name} is empty; expected a header {','.join(KAGGLE_COLUMNS)}")
    header = [h.strip() for h in rows[0]]
    if "id" not in header or label_column not in header:
        raise CatalogError(
            f"{path}: {styles_name} has columns {header}; expected at least 'id' and '{label_column}' "
            f"(the Kaggle columns are {','.join(KAGGLE_COLUMNS)})"
        )
    n_cols = len(header)
    id_col, label_col = header.index("id"), header.index(label_column)
    items: list[Item] = []
    seen: set[str] = set()
    for row_number, row in enumerate(rows[1:], start=2):
        where = f"{styles_name} line {row_number}"
        if not row or all(not field.strip() for field in row):
            continue
        if len(row) > n_cols:
            # An unquoted comma in the last column (the product name) splits it; join it back.
            row = row[: n_cols - 1] + [",".join(row[n_cols - 1:])]
        elif len(row) < n_cols:
            skipped.append(Skipped(where, f"row with {len(row)} of {n_cols} fields"))
            continue
        item_id = row[id_col].strip()
        label = row[label_col].strip()
        if not item_id:
            skipped.append(Skipped(where, "row without id"))
            continue
        where = f"{where} (id {item_id})"
        if item_id in seen:
            skipped.append(Skipped(where, "row with duplicate id"))
            continue
        if not label:
            skipped.append(Skipped(where, f"row without {label_column}"))
            continue
        member = by_stem.get(item_id)
        if member is None:
            skipped.append(Skipped(where, "row without image"))
            continue
        if files[member] == 0:
            skipped.append(Skipped(member, "zero-byte image"))
            continue
        seen.add(item_id)
        meta = {h: row[i].strip() for i, h in enumerate(header) if i not in (id_col,)}
        items.append(Item(item_id, member, label, meta))
    columns = [h for h in header if h != "id"]
    return Catalog(items, "kaggle", path, reader, label_column, columns, skipped, fingerprint_parts=parts)


def _find_styles_member(names: list[str]) -> str | None:
    candidates = [n for n in names if PurePosixPath(n).name == "styles.csv" and n.count("/") <= 1]
    return min(candidates, key=len) if candidates else None


def _find_styles_file(path: Path) -> Path:
    if (path / "styles.csv").is_file():
        return path / "styles.csv"
    for sub in _subdirs(path):
        if (sub / "styles.csv").is_file():
            return sub / "styles.csv"
    raise CatalogError(f"{path}: no styles.csv here or one folder down; {EXPECTED}")


# --- image-folder tree -----------------------------------------------------------------------------


def read_image_folder(path: Path) -> Catalog:
    """``path/<class>/<image>``: each sub-folder is a class; ids are ``class/file`` without extension."""
    items: list[Item] = []
    skipped: list[Skipped] = []
    sizes = []
    for class_dir in _subdirs(path):
        for file in sorted(class_dir.rglob("*")):
            if not file.is_file() or file.name.startswith("."):
                continue
            rel = file.relative_to(path).as_posix()
            if file.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append(Skipped(rel, "file that is not an image"))
                continue
            size = file.stat().st_size
            if size == 0:
                skipped.append(Skipped(rel, "zero-byte image"))
                continue
            sizes.append(size)
            items.append(Item(os.path.splitext(rel)[0], rel, class_dir.name, {"file": rel}))
    if not items:
        raise CatalogError(f"{path}: no images in its sub-folders; {EXPECTED}")
    return Catalog(items, "folder", path, FileReader(path), None, ["file"], skipped,
                   fingerprint_parts=(len(sizes), sum(sizes)))


# --- CSV manifest --------------------------------------------------------------------------------


def read_manifest(path: Path, label_column: str | None = None) -> Catalog:
    """A CSV with a ``path`` column (relative to the CSV's folder), a label column and any others."""
    label_column = label_column or "label"
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8", errors="replace"))))
    header = list(rows[0].keys()) if rows else _read_header_list(path)
    if "path" not in header:
        raise CatalogError(f"{path}: manifest columns {header}; expected a 'path' column (and '{label_column}')")
    root = path.parent
    items, skipped = [], []
    seen = set()
    for line, row in enumerate(rows, start=2):
        rel = (row.get("path") or "").strip()
        where = f"{path.name} line {line}"
        if not rel:
            skipped.append(Skipped(where, "row without path"))
            continue
        file = root / rel
        if not file.is_file():
            skipped.append(Skipped(f"{where} ({rel})", "row whose image file is missing"))
            continue
        if file.stat().st_size == 0:
            skipped.append(Skipped(rel, "zero-byte image"))
            continue
        item_id = (row.get("id") or "").strip() or rel
        if item_id in seen:
            skipped.append(Skipped(where, "row with duplicate id"))
            continue
        seen.add(item_id)
        label = (row.get(label_column) or "").strip() or None
        meta = {k: (v or "").strip() for k, v in row.items() if k not in ("id", label_column) and k is not None}
        items.append(Item(item_id, rel, label, meta))
    columns = [h for h in header if h not in ("id", label_column)]
    stat = path.stat()
    return Catalog(items, "manifest", path, FileReader(root), label_column if label_column in header else None,
                   columns, skipped, fingerprint_parts=(stat.st_size, stat.st_mtime_ns))


# --- Fashion-MNIST IDX -------------------------------------------------------------------------------


def read_idx(path: Path) -> Catalog:
    """A folder with Fashion-MNIST's IDX files (``train-images-idx3-ubyte[.gz]`` ...), gzipped or not."""
    subsets = []
    for prefix, subset in (("train", "train"), ("t10k", "test")):
        images = _find_idx(path, f"{prefix}-images-idx3-ubyte")
        labels = _find_idx(path, f"{prefix}-labels-idx1-ubyte")
        if images and labels:
            subsets.append((subset, images, labels))
    if not subsets:
        raise CatalogError(
            f"{path}: no IDX pairs found; expected train-images-idx3-ubyte[.gz] with train-labels-idx1-ubyte[.gz] "
            "and/or the t10k-* pair (apt-get install -y dataset-fashion-mnist puts them in /usr/share/datasets/fashion-mnist)"
        )
    arrays, items, parts = [], [], []
    offset = 0
    for subset, image_file, label_file in subsets:
        pixels = _read_idx_array(image_file)
        labels = _read_idx_array(label_file)
        if pixels.ndim != 3 or labels.ndim != 1 or len(pixels) != len(labels):
            raise CatalogError(f"{image_file}: shapes {pixels.shape} / {labels.shape} do not form an image set")
        arrays.append(pixels)
        for i, label in enumerate(labels):
            name = FASHION_MNIST_CLASSES[label] if label < len(FASHION_MNIST_CLASSES) else str(label)
            items.append(Item(f"{subset}-{i:05d}", str(offset + i), name, {"subset": subset}))
        offset += len(pixels)
        parts.append((image_file.name, image_file.stat().st_size, image_file.stat().st_mtime_ns))
    reader = ArrayReader(np.concatenate(arrays), f"{path} (IDX)")
    return Catalog(items, "idx", path, reader, "label", ["subset"], [], fingerprint_parts=tuple(parts))


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def _read_idx_array(file: Path) -> np.ndarray:
    opener = gzip.open if file.suffix == ".gz" else open
    try:
        with opener(file, "rb") as handle:
            data = handle.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("bad magic number")
        shape = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, ValueError, struct.error, EOFError) as exc:
        raise CatalogError(f"{file}: not a valid uint8 IDX file ({exc})") from None


def _is_idx_name(name: str) -> bool:
    return "idx1-ubyte" in name or "idx3-ubyte" in name


# --- pairs CSV -----------------------------------------------------------------------------------


def read_pairs(path: Path, base: Catalog | None = None) -> Catalog:
    """A pairs CSV: ``image_a,image_b,label`` (or 003's ``pic1,pic2,score``).

    Entries are image paths relative to the CSV's folder, or item ids of ``base`` when given.
    The catalog's items are the distinct images; ``catalog.pairs`` holds ``(id_a, id_b, label)``.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    rows = list(csv.DictReader(io.StringIO(text)))
    header = {h.strip().lower(): h for h in (rows[0].keys() if rows else _read_header_list(path))}
    if {"image_a", "image_b"} <= set(header):
        col_a, col_b = header["image_a"], header["image_b"]
        col_y = header.get("label") or header.get("score")
    elif {"pic1", "pic2"} <= set(header):
        col_a, col_b = header["pic1"], header["pic2"]
        col_y = header.get("score") or header.get("label")
    else:
        raise CatalogError(f"{path}: columns {sorted(header)}; expected image_a,image_b,label (or pic1,pic2,score)")
    if col_y is None:
        raise CatalogError(f"{path}: no label column; expected image_a,image_b,label (or pic1,pic2,score)")
    root = path.parent
    items: dict[str, Item] = {}
    pairs, skipped = [], []
    for line, row in enumerate(rows, start=2):
        where = f"{path.name} line {line}"
        ends = []
        for col in (col_a, col_b):
            ref = (row.get(col) or "").strip()
            if base is not None and ref in base:
                ends.append(ref)
                items.setdefault(ref, base[ref])
                continue
            file = root / ref
            if not ref or not file.is_file():
                ends = None
                skipped.append(Skipped(f"{where} ({ref or 'empty'})", "pair whose image is missing"))
                break
            if file.stat().st_size == 0:
                ends = None
                skipped.append(Skipped(ref, "pair with a zero-byte image"))
                break
            items.setdefault(ref, Item(ref, ref, None, {}))
            ends.append(ref)
        if ends is None:
            continue
        raw = (row.get(col_y) or "").strip()
        try:
            label = int(float(raw) >= 0.5)
        except ValueError:
            skipped.append(Skipped(where, "pair with a label that is not a number"))
            continue
        pairs.append((ends[0], ends[1], label))
    if base is not None:
        reader, kind_root = base.reader, base.source_path
    else:
        reader, kind_root = FileReader(root), path
    stat = path.stat()
    return Catalog(list(items.values()), "pairs", kind_root if base is None else path, reader, None,
                   base.metadata_columns if base is not None else [], skipped, pairs,
                   fingerprint_parts=(stat.st_size, stat.st_mtime_ns))


# --- helpers -------------------------------------------------------------------------------------


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _has_images(folder: Path) -> bool:
    return any(f.suffix.lower() in IMAGE_EXTENSIONS for f in folder.rglob("*") if f.is_file())


def _read_header_list(path: Path) -> list[str]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        first = handle.readline()
    return [h.strip() for h in next(csv.reader([first]), [])]


def _read_header(path: Path) -> set[str]:
    return {h.lower() for h in _read_header_list(path)}
