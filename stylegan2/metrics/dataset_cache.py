"""Dataset feature statistics cached by the archive's content, not its path.

Computing detector features for a whole training set is the expensive part of ``*_full`` metrics
(546k clips for the thesis set), so the result is cached. Upstream keys its cache by the dataset
path and options, which silently reuses stale statistics after an archive is rebuilt in place.
Here the key is a hash of the archive's *content* — for a zip the (name, size, CRC-32) of every
member from the central directory (no decompression); for a folder the name, size and CRC-32 of
every file — plus the items used (subset, mirroring), the detector's md5 and the statistic options.
An identical copy at another path hits the cache; any changed, added or removed file misses it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import numpy as np

from ..misc import atomic_path
from .detector import cache_dir
from .feature_stats import FeatureStats

PathLike = Union[str, os.PathLike]


def _crc32_file(path: Path, chunk: int = 1 << 20) -> int:
    crc = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            crc = zlib.crc32(block, crc)
    return crc


def _folder_entries(path: Path, root: Optional[PathLike]) -> list:
    """(relative name, size, CRC-32) of every file under ``path``.

    Reading every byte of a large folder at each evaluation would be slow, so CRCs are memoised in
    ``<cache>/content-crcs/<md5 of the folder path>.json`` against each file's size and mtime: only
    new or touched files are read again. The memo is an optimisation only; the hash stays one of content.
    """
    memo_path = (Path(root) if root is not None else cache_dir()) / "content-crcs" / \
        (hashlib.md5(str(path.resolve()).encode("utf-8")).hexdigest() + ".json")
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    entries, fresh = [], {}
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        name, st = f.relative_to(path).as_posix(), f.stat()
        known = memo.get(name)
        if isinstance(known, list) and len(known) == 3 and known[:2] == [st.st_size, st.st_mtime_ns]:
            crc = int(known[2])
        else:
            crc = _crc32_file(f)
        fresh[name] = [st.st_size, st.st_mtime_ns, crc]
        entries.append((name, st.st_size, crc))
    if fresh != memo:
        try:
            with atomic_path(memo_path, suffix=".json") as tmp:
                tmp.write_text(json.dumps(fresh), encoding="utf-8")
        except OSError:  # a read-only cache only costs speed
            pass
    return entries


def archive_content_hash(path: PathLike, root: Optional[PathLike] = None) -> str:
    """sha256 over (member name, size, CRC-32) of a zip's members or a folder's files, sorted by name.

    ``root``: cache folder for the folder CRC memo (default: the ElectroGAN cache).
    """
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        entries = _folder_entries(path, root)
    elif path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            entries = sorted((i.filename, i.file_size, i.CRC) for i in z.infolist() if not i.is_dir())
    elif path.exists():
        raise ValueError(f"{path}: not a folder or a zip archive")
    else:
        raise ValueError(f"{path}: no such folder or zip archive")
    for name, size, crc in entries:
        h.update(f"{name}\0{size}\0{crc:08x}\n".encode("utf-8"))
    return h.hexdigest()


def stats_cache_key(content_hash: str, items_signature: str, feature_id: str, options: Dict[str, Any]) -> str:
    """md5 naming one cached statistic: archive content, items used, feature extractor and options."""
    blob = json.dumps(dict(content=content_hash, items=items_signature, features=feature_id, options=options),
                      sort_keys=True, default=str)
    return hashlib.md5(blob.encode("utf-8")).hexdigest()


def stats_cache_path(dataset_name: str, feature_name: str, key: str, root: Optional[PathLike] = None) -> Path:
    """``<cache>/gan-metrics/<dataset>-<features>-<key>.npz`` (names sanitised for the file system)."""
    clean = lambda s: re.sub(r"[^A-Za-z0-9_.-]+", "_", str(s))[:80] or "x"
    root = Path(root) if root is not None else cache_dir()
    return root / "gan-metrics" / f"{clean(dataset_name)}-{clean(feature_name)}-{key}.npz"


def load_cached_stats(path: PathLike) -> Optional[FeatureStats]:
    """The statistics stored at ``path``, or None when absent; an unreadable file is warned about and ignored."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return FeatureStats.from_dict({k: data[k] for k in data.files})
    except Exception as e:
        warnings.warn(f"{path}: unreadable metric cache ignored ({type(e).__name__}: {e})")
        return None


def save_cached_stats(path: PathLike, stats: FeatureStats) -> None:
    """Write ``stats`` to ``path`` atomically (np.savez, no pickle)."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **stats.to_dict())


def cached_stats(compute: Callable[[], FeatureStats], dataset_path: PathLike, dataset_name: str,
                 items_signature: str, feature_name: str, feature_id: str, options: Dict[str, Any],
                 root: Optional[PathLike] = None, write: bool = True) -> FeatureStats:
    """Return cached statistics for this (content, items, features, options), computing them once."""
    key = stats_cache_key(archive_content_hash(dataset_path, root), items_signature, feature_id, options)
    path = stats_cache_path(dataset_name, feature_name, key, root)
    stats = load_cached_stats(path)
    if stats is None:
        stats = compute()
        if write:
            try:
                save_cached_stats(path, stats)
            except OSError as e:  # an unwritable cache costs time on the next run, not this result
                warnings.warn(f"{path}: metric cache not written ({e})")
    return stats
