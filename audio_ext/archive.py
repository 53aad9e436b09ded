"""The training archive ``stft.zip`` (DESIGN.md, "Dataset archive"): its format, written and read.

* :class:`ArchiveWriter` writes greyscale PNGs (``00000/img00000000.png``, at most 1000 per
  folder) and ``dataset.json`` into a zip or a folder. It works on a temporary name beside the
  destination and renames only when complete, so ``--dest`` never holds a half-written archive.
  Zip entries are stored (PNG is already compressed) with a fixed timestamp, so the same clips
  give the same bytes.
* :class:`ArchiveFiles` reads the files of an archive, zip or folder, by name;
  :func:`read_dataset_json` / :func:`read_audio_block` read its metadata back, with one-line
  errors naming the path (``python -m audio_ext decode`` and :func:`merge_archives` use the same).
* :func:`merge_archives` concatenates shards built with the same statistics.

Building an archive from audio (sources, shards, labels, statistics, the worker pool and its
cache) is :mod:`audio_ext.build`.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from stylegan2.misc import atomic_path

from .geometry import validate_audio_block

PathLike = Union[str, os.PathLike]

#: PNGs per subfolder (DESIGN.md).
FILES_PER_FOLDER = 1000
#: zlib level of the PNGs: deterministic, about 2x smaller than level 0 on spectrograms.
PNG_COMPRESS_LEVEL = 6
#: Timestamp of every zip entry, so archives are byte-identical across runs.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class ArchiveError(ValueError):
    """The destination or the archive is unusable; one line naming the path and the problem."""


def clip_name(index: int) -> str:
    """Archive path of clip ``index``: ``NNNNN/imgNNNNNNNN.png`` with 1000 clips per folder."""
    return f"{index // FILES_PER_FOLDER:05d}/img{index:08d}.png"


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 ``[R, R]`` image as greyscale (mode ``L``) PNG bytes."""
    from PIL import Image
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"archive images must be 2-D uint8, got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _dest_kind(dest: Path) -> str:
    return "zip" if dest.suffix.lower() == ".zip" else "folder"


def check_destination(dest: PathLike, overwrite: bool = False) -> Path:
    """Fail early, with one line, when ``dest`` cannot receive an archive; returns it as a Path."""
    dest = Path(dest)
    if dest.exists():
        if not overwrite:
            raise ArchiveError(f"{dest}: already exists; pass --overwrite to replace it")
        if _dest_kind(dest) == "zip" and dest.is_dir():
            raise ArchiveError(f"{dest}: is a folder, not a zip file; refusing to replace it")
        if _dest_kind(dest) == "folder" and not dest.is_dir():
            raise ArchiveError(f"{dest}: is a file; a folder destination must not be a file")
    parent = dest.parent if str(dest.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ArchiveError(f"{dest}: cannot create the parent folder ({e.strerror or e})") from None
    if not os.access(parent, os.W_OK):
        raise ArchiveError(f"{dest}: the folder {parent} is not writable")
    return dest


class ArchiveWriter:
    """Writes one archive; ``add`` clips, then ``close`` with the audio block (or ``abort``).

    ``dest`` ending in ``.zip`` gives a zip file, anything else a folder. Nothing appears at
    ``dest`` until :meth:`close` succeeds; an existing ``dest`` is replaced only with ``overwrite``.
    Use as a context manager: an exception inside the block aborts and removes the temp output.
    """

    def __init__(self, dest: PathLike, overwrite: bool = False) -> None:
        self.dest = check_destination(dest, overwrite)
        self.kind = _dest_kind(self.dest)
        self._labels: List[list] = []
        self._records: List[dict] = []
        self._count = 0
        self._closed = False
        if self.kind == "zip":
            self._atomic = atomic_path(self.dest, suffix=".zip")
            self._tmp = self._atomic.__enter__()
            self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        else:
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.", suffix=".tmp", dir=self.dest.parent))

    def __len__(self) -> int:
        return self._count

    def _write(self, name: str, data: bytes) -> None:
        if self.kind == "zip":
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            self._zip.writestr(info, data, compress_type=zipfile.ZIP_STORED)
        else:
            path = self._tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def add(self, image: np.ndarray, record: Optional[dict] = None, label: Optional[int] = None) -> str:
        """Append one uint8 ``[R, R]`` image; returns its archive name. ``record`` goes into ``clips``."""
        return self.add_png(png_bytes(image), record, label)

    def add_png(self, png: bytes, record: Optional[dict] = None, label: Optional[int] = None) -> str:
        """Append an already encoded PNG (as :meth:`add`, without decoding it)."""
        if self._closed:
            raise ArchiveError(f"{self.dest}: archive already closed")
        name = clip_name(self._count)
        self._write(name, png)
        self._records.append({"file": name, **(record or {})})
        if label is not None:
            self._labels.append([name, int(label)])
        self._count += 1
        return name

    def close(self, audio: dict, extra: Optional[dict] = None) -> Path:
        """Write ``dataset.json`` (labels, audio block, clip records, ``extra`` keys) and publish."""
        if self._closed:
            raise ArchiveError(f"{self.dest}: archive already closed")
        if self._labels and len(self._labels) != self._count:
            self.abort()
            raise ArchiveError(f"{self.dest}: {self._count - len(self._labels)} clip(s) have no label; "
                               "give every clip a label or none")
        meta = {"labels": self._labels or None, "audio": audio, **(extra or {}), "clips": self._records}
        self._write("dataset.json", _dataset_json_text(meta).encode("utf-8"))
        self._closed = True
        if self.kind == "zip":
            self._zip.close()
            self._atomic.__exit__(None, None, None)
        else:
            old = None
            if self.dest.exists():
                old = self.dest.with_name(f".{self.dest.name}.old-{os.getpid()}")
                os.replace(self.dest, old)
            os.replace(self._tmp, self.dest)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return self.dest

    def abort(self) -> None:
        """Drop everything written so far; ``dest`` is left as it was."""
        if self._closed:
            return
        self._closed = True
        if self.kind == "zip":
            with contextlib.suppress(Exception):
                self._zip.close()
            with contextlib.suppress(FileNotFoundError):
                Path(self._tmp).unlink()
        else:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "ArchiveWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._closed:
            self.abort()


def _dataset_json_text(meta: dict) -> str:
    """JSON with one top-level key per line and one label/clip record per line.

    Compact enough for half a million clips (about 150 bytes per record), still readable and
    diff-able line by line. ASCII only, so odd file names cannot produce invalid UTF-8.
    """
    parts = []
    for key, value in meta.items():
        if isinstance(value, list) and value:
            body = ",\n  ".join(json.dumps(v, separators=(",", ":"), ensure_ascii=True) for v in value)
            parts.append(f"{json.dumps(key)}: [\n  {body}\n ]")
        else:
            parts.append(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=True)}")
    return "{\n " + ",\n ".join(parts) + "\n}\n"


class ArchiveFiles:
    """Read-only access to the files of an archive by their archive names, zip or folder alike.

    Opening a zip raises what :class:`zipfile.ZipFile` raises (``FileNotFoundError``,
    ``zipfile.BadZipFile``, ``OSError``) and :meth:`read` raises ``KeyError`` (zip) or
    ``FileNotFoundError`` (folder) for a missing name: each caller words its own one-line error.
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._zip: Optional[zipfile.ZipFile] = None
        if not self.path.is_dir():
            self._zip = zipfile.ZipFile(self.path)

    def names(self) -> List[str]:
        """Every file in the archive ('/'-separated, relative to its root), sorted; folders are left out."""
        if self._zip is not None:
            names = [n for n in self._zip.namelist() if not n.endswith("/")]
        else:
            names = [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]
        return sorted(names)

    def read(self, name: str) -> bytes:
        """The bytes of the file ``name``."""
        if self._zip is not None:
            return self._zip.read(name)
        return (self.path / name).read_bytes()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> "ArchiveFiles":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def parse_dataset_json(path: PathLike, data: bytes) -> dict:
    """The bytes of archive ``path``'s ``dataset.json`` as a dict; one-line errors naming the path."""
    try:
        meta = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArchiveError(f"{path}: dataset.json is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ArchiveError(f"{path}: dataset.json must hold an object")
    return meta


def read_dataset_json(path: PathLike) -> dict:
    """``dataset.json`` of an archive (zip or folder) as a dict; one-line errors naming the path."""
    path = Path(path)
    if not (path.is_dir() or path.is_file()):
        raise ArchiveError(f"{path}: no such folder or zip archive")
    try:
        with ArchiveFiles(path) as files:
            data = files.read("dataset.json")
    except (KeyError, FileNotFoundError):
        raise ArchiveError(f"{path}: has no dataset.json") from None
    except zipfile.BadZipFile:
        raise ArchiveError(f"{path}: not a zip archive") from None
    return parse_dataset_json(path, data)


def audio_block_of(path: PathLike, meta: dict) -> dict:
    """The ``audio`` block of archive ``path``'s metadata, every field checked against its physical
    range (:func:`audio_ext.geometry.validate_audio_block`): a NaN mean is refused here, not at generation."""
    block = meta.get("audio")
    if not isinstance(block, dict):
        raise ArchiveError(f"{path}: dataset.json has no 'audio' block (not an audio archive)")
    missing = [k for k in ("mean", "std") if k not in block]
    if missing:
        raise ArchiveError(f"{path}: audio block lacks {', '.join(missing)}")
    try:
        validate_audio_block(block)  # the same physical ranges as a snapshot's block (geometry.py)
    except ValueError as e:
        raise ArchiveError(f"{path}: {e}") from None
    return block


def read_audio_block(path: PathLike) -> dict:
    """The ``audio`` block of an archive, checked to describe a geometry this code can decode."""
    return audio_block_of(path, read_dataset_json(path))


def merge_archives(paths: Sequence[PathLike], dest: PathLike, overwrite: bool = False) -> int:
    """Concatenate archives built with the same audio block (e.g. the shards of one set) into ``dest``.

    PNGs are copied as they are (renumbered in the order given), clip records and labels follow;
    class labels are re-indexed by name when the shards saw different classes. Refuses archives
    whose ``audio`` blocks differ (another geometry or other statistics would make the images
    incomparable). Returns the number of clips written.
    """
    if not paths:
        raise ArchiveError("merge: no archives given")
    metas = [(Path(p), read_dataset_json(p)) for p in paths]
    first_path, first = metas[0]
    for p, m in metas[1:]:
        if m.get("audio") != first.get("audio"):
            raise ArchiveError(f"{p}: its audio block differs from {first_path}'s (geometry or statistics); "
                               "build every shard with the same --stats")
    labelled = [m.get("labels") is not None for _, m in metas]
    if any(labelled) and not all(labelled):
        raise ArchiveError(f"{metas[labelled.index(False)][0]}: has no labels while other archives have")
    names = sorted({n for _, m in metas for n in (m.get("label_names") or [])})
    with ArchiveWriter(dest, overwrite=overwrite) as writer:
        for p, m in metas:
            files = ArchiveFiles(p)
            try:
                label_of = {f: c for f, c in (m.get("labels") or [])}
                own = m.get("label_names") or []
                for rec in m.get("clips") or []:
                    rec = dict(rec)
                    name = rec.pop("file")
                    label = label_of.get(name)
                    if label is not None and own and names:
                        label = names.index(own[label])
                    writer.add_png(files.read(name), rec, label)
            except (KeyError, OSError) as e:
                raise ArchiveError(f"{p}: cannot read a clip ({e})") from None
            finally:
                files.close()
        extra = {k: v for k, v in first.items() if k not in ("labels", "audio", "clips", "shard")}
        extra["label_names"] = names or first.get("label_names")
        extra["merged_from"] = [str(p) for p, _ in metas]
        writer.close(first["audio"], extra)
        return len(writer)
