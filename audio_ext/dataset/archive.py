"""The training archive ``stft.zip`` (docs/contract.md, "Dataset archive"): its format, written and read.

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
cache) is :mod:`audio_ext.dataset.build`.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

import numpy as np

from audio_ext.core.geometry import validate_audio_block
from audio_ext.core.png import grey_png
from stylegan2.misc import atomic_path

PathLike = Union[str, os.PathLike]

#: PNGs per subfolder (docs/contract.md).
FILES_PER_FOLDER = 1000
#: Timestamp of every zip entry, so archives are byte-identical across runs.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class ArchiveError(ValueError):
    """The destination or the archive is unusable; one line naming the path and the problem."""


def clip_name(index: int) -> str:
    """Archive path of clip ``index``: ``NNNNN/imgNNNNNNNN.png`` with 1000 clips per folder."""
    return f"{index // FILES_PER_FOLDER:05d}/img{index:08d}.png"


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 ``[R, R]`` image as greyscale (mode ``L``) PNG bytes (:func:`audio_ext.core.png.grey_png`:
    'Up' filter and run-length deflate, about 5x faster than Pillow's level 6 for +0.4 % size)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"archive images must be 2-D uint8, got {image.dtype} {image.shape}")
    return grey_png(image)


def _dest_kind(dest: Path) -> str:
    return "zip" if dest.suffix.lower() == ".zip" else "folder"


#: Marker file at the root of every folder archive this code writes, so ``--overwrite`` can tell an
#: archive of ours from any other folder. Hidden, so image readers never list it.
MARKER_NAME = ".electrogan-archive"
MARKER_TEXT = '{"format": "electrogan-stft-archive", "layout": 1}\n'
_CLIP_FOLDER = re.compile(r"\d{5}")
_CLIP_FILE = re.compile(r"img\d{8}\.png")

#: Largest ``dataset.json`` read: 1 MiB plus 1 KiB per archive member (a clip record and a label
#: take about 200 bytes), so a crafted archive cannot make a reader allocate gigabytes.
JSON_BASE_CAP = 1 << 20
JSON_BYTES_PER_MEMBER = 1024


def json_size_cap(members: int) -> int:
    """Largest accepted ``dataset.json`` in bytes for an archive of ``members`` files."""
    return JSON_BASE_CAP + JSON_BYTES_PER_MEMBER * max(0, int(members))


def png_size_cap(resolution: int, channels: int = 1) -> int:
    """Largest accepted PNG in bytes for an 8-bit ``resolution`` x ``resolution`` image.

    Uncompressed (zlib stored blocks) it is ``R * (R * channels + 1)`` bytes of filtered rows,
    5 bytes per 64 KiB block and 12 per chunk; twice that plus 64 KiB leaves room for odd but
    valid encoders (many small IDAT chunks, text chunks) and still stops a crafted member that
    declares gigabytes.
    """
    r = int(resolution)
    return 2 * r * (r * int(channels) + 1) + 65536


def _is_our_dataset_json(data: bytes) -> bool:
    try:
        meta = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("audio"), dict) and "clips" in meta


def foreign_reason(dest: PathLike) -> Optional[str]:
    """Why the existing ``dest`` is not recognisably an archive of ours (None: it is one, or empty).

    A zip is ours when its ``dataset.json`` has an ``audio`` block and ``clips`` records. A folder
    is ours when it has :data:`MARKER_NAME` or such a ``dataset.json`` (archives written before
    the marker) *and* holds nothing but the archive layout: ``NNNNN/imgNNNNNNNN.png``,
    ``dataset.json`` and the marker -- a folder archive into which someone put other files is not
    replaced, since those files would be lost.
    """
    dest = Path(dest)
    if dest.is_symlink():
        return "is a symbolic link"
    if dest.is_dir():
        entries = sorted(os.listdir(dest))
        if not entries:
            return None
        if MARKER_NAME not in entries:
            try:
                with open(dest / "dataset.json", "rb") as f:
                    data = f.read(json_size_cap(len(entries) * FILES_PER_FOLDER) + 1)
            except OSError:
                return "is a folder that is not an archive (no dataset.json)"
            if not _is_our_dataset_json(data):
                return "is a folder whose dataset.json is not an ElectroGAN archive's"
        for name in entries:
            full = dest / name
            if name in (MARKER_NAME, "dataset.json") and full.is_file() and not full.is_symlink():
                continue
            if not (_CLIP_FOLDER.fullmatch(name) and full.is_dir() and not full.is_symlink()):
                return f"holds {name!r}, which is not part of an archive"
            for sub in os.scandir(full):
                if not (_CLIP_FILE.fullmatch(sub.name) and sub.is_file(follow_symlinks=False)):
                    return f"holds {name}/{sub.name!r}, which is not part of an archive"
        return None
    if not dest.is_file():
        return "is not a regular file"
    try:
        with zipfile.ZipFile(dest) as z:
            names = z.namelist()
            if "dataset.json" not in names:
                return "is a zip without a dataset.json"
            info = z.getinfo("dataset.json")
            if info.file_size > json_size_cap(len(names)):
                return "is a zip whose dataset.json is implausibly large"
            with z.open(info) as f:
                data = f.read(json_size_cap(len(names)) + 1)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError):
        return "is not a zip archive"
    if not _is_our_dataset_json(data):
        return "is a zip whose dataset.json is not an ElectroGAN archive's"
    return None


def _real(p: PathLike) -> Path:
    return Path(os.path.realpath(os.fspath(p)))


def check_not_overlapping(dest: PathLike, sources: Sequence[PathLike], what: str = "source") -> None:
    """Refuse a destination equal to, inside of, or containing any of ``sources`` (symlinks resolved)."""
    d = _real(dest)
    for src in sources:
        s = _real(src)
        if d == s:
            raise ArchiveError(f"{dest}: is the {what} {src} itself; choose another --dest")
        if s in d.parents:
            raise ArchiveError(f"{dest}: is inside the {what} {src}; put the archive outside it")
        if d in s.parents:
            raise ArchiveError(f"{dest}: contains the {what} {src}; choose another --dest")


def check_destination(dest: PathLike, overwrite: bool = False, sources: Sequence[PathLike] = (),
                      what: str = "source") -> Path:
    """Fail early, with one line, when ``dest`` cannot receive an archive; returns it as a Path.

    ``sources`` (the ``--source`` or the ``--merge`` inputs) must not be, lie inside, or contain
    ``dest``. An existing ``dest`` is replaced only with ``overwrite`` and only when it is
    recognisably an archive of ours (:func:`foreign_reason`); nothing is deleted here.
    """
    dest = Path(dest)
    check_not_overlapping(dest, sources, what)
    if dest.exists() or dest.is_symlink():
        if not overwrite:
            raise ArchiveError(f"{dest}: already exists; pass --overwrite to replace it")
        if _dest_kind(dest) == "zip" and dest.is_dir():
            raise ArchiveError(f"{dest}: is a folder, not a zip file; refusing to replace it")
        if _dest_kind(dest) == "folder" and not dest.is_dir():
            raise ArchiveError(f"{dest}: is a file; a folder destination must not be a file")
        reason = foreign_reason(dest)
        if reason is not None:
            raise ArchiveError(f"{dest}: {reason}; --overwrite replaces only an archive made by this tool, "
                               "refusing to touch it")
    parent = dest.parent if str(dest.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ArchiveError(f"{dest}: cannot create the parent folder ({e.strerror or e})") from None
    if not os.access(parent, os.W_OK):
        raise ArchiveError(f"{dest}: the folder {parent} is not writable")
    return dest


def _stale_temp_pattern(dest: Path) -> "re.Pattern[str]":
    """Names of the temporaries a run writing ``dest`` leaves beside it when killed (mkstemp/mkdtemp
    add 8 characters of [a-z0-9_]): the zip or folder being written, a folder archive's old copy
    being replaced, the atomic writes of ``<dest>.log`` / ``<dest>.stats.json`` and of a
    ``--stats-only`` JSON destination."""
    name = re.escape(dest.name)
    rnd = r"[a-z0-9_]{8}"
    return re.compile(rf"\.{name}\.(?:{rnd}\.zip\.tmp|{rnd}\.tmp|old-\d+|{rnd}\.json\.tmp|"
                      rf"log\.{rnd}\.log\.tmp|stats\.json\.{rnd}\.json\.tmp)")


def remove_stale_temps(dest: PathLike, log: Optional[Callable[[str], None]] = None) -> List[str]:
    """Delete the temporaries of an earlier, killed run for ``dest`` (only names we make); returns them.

    Call it only while holding the destination's work lock (:mod:`audio_ext.dataset.worklock`), so that no
    live run is writing them.
    """
    dest = Path(dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    pattern = _stale_temp_pattern(dest)
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    olds = sorted((e for e in entries if re.fullmatch(rf"\.{re.escape(dest.name)}\.old-\d+", e.name)
                   and e.is_dir(follow_symlinks=False)), key=lambda e: e.stat(follow_symlinks=False).st_mtime)
    if olds and not (dest.exists() or dest.is_symlink()):
        # Killed between moving the old folder archive aside and moving the new one in: put the old back.
        os.replace(olds[-1].path, dest)
        if log is not None:
            log(f"{dest}: restored the previous archive from {olds[-1].name} (an interrupted run had moved it aside)")
        entries = [e for e in entries if e.name != olds[-1].name]
    for e in entries:
        if not pattern.fullmatch(e.name):
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path)
            else:
                os.unlink(e.path)
            removed.append(e.name)
        except OSError:
            continue
    if removed and log is not None:
        log(f"removed {len(removed)} temporary file(s) left beside {dest} by an interrupted run: "
            + ", ".join(removed[:3]) + (" ..." if len(removed) > 3 else ""))
    return removed


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
        if self.kind == "folder":
            self._write(MARKER_NAME, MARKER_TEXT.encode("ascii"))
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

    def size(self, name: str) -> int:
        """The size of file ``name`` in bytes as the archive declares it (zip) or the file system says."""
        if self._zip is not None:
            return self._zip.getinfo(name).file_size
        return (self.path / name).stat().st_size

    def read(self, name: str, max_bytes: Optional[int] = None) -> bytes:
        """The bytes of the file ``name``, refused (:class:`ArchiveError`) beyond ``max_bytes``.

        The declared size is checked before anything is read, and the read itself stops at
        ``max_bytes + 1`` bytes, so neither a large member nor a header that understates the size
        can make the reader allocate more than the cap (see :func:`png_size_cap`,
        :func:`json_size_cap`).
        """
        if max_bytes is not None and self.size(name) > max_bytes:
            raise ArchiveError(f"{self.path}:{name}: {self.size(name)} bytes, more than the {max_bytes} "
                               "this file can hold")
        limit = -1 if max_bytes is None else max_bytes + 1
        if self._zip is not None:
            with self._zip.open(name) as f:
                data = f.read(limit)
        else:
            with open(self.path / name, "rb") as f:
                data = f.read(limit)
        if max_bytes is not None and len(data) > max_bytes:
            raise ArchiveError(f"{self.path}:{name}: larger than the {max_bytes} bytes this file can hold")
        return data

    def read_dataset_json(self) -> bytes:
        """The bytes of ``dataset.json``, capped by :func:`json_size_cap` of the member count."""
        return self.read("dataset.json", json_size_cap(len(self.names())))

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
            data = files.read_dataset_json()
    except (KeyError, FileNotFoundError):
        raise ArchiveError(f"{path}: has no dataset.json") from None
    except zipfile.BadZipFile:
        raise ArchiveError(f"{path}: not a zip archive") from None
    except OSError as e:
        raise ArchiveError(f"{path}: cannot read dataset.json ({e.strerror or e})") from None
    return parse_dataset_json(path, data)


def audio_block_of(path: PathLike, meta: dict) -> dict:
    """The ``audio`` block of archive ``path``'s metadata, every field checked against its physical
    range (:func:`audio_ext.core.geometry.validate_audio_block`): a NaN mean is refused here, not at generation."""
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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MEMBER_RE = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*\.png")


def _member_png_name(archive: Path, record, members: set) -> str:
    """The ``file`` of a clip record once it names a PNG inside ``archive``: a relative name of plain
    segments (no ``..``, no absolute path, no backslash) ending in ``.png``, listed among the
    archive's own files, and for a folder archive one whose real path (symlinks resolved) stays
    inside the folder. A crafted shard could otherwise copy any readable file into the merge."""
    name = record.get("file") if isinstance(record, dict) else None
    if not isinstance(name, str) or not _MEMBER_RE.fullmatch(name):
        raise ArchiveError(f"{archive}: clip record file {str(name)[:80]!r} is not the name of a PNG in the archive")
    if name not in members:
        raise ArchiveError(f"{archive}: clip record file {name!r} is not in the archive")
    if archive.is_dir():
        root = archive.resolve()
        if root not in (root / name).resolve().parents:
            raise ArchiveError(f"{archive}: clip record file {name!r} leads outside the archive folder")
    return name


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
    check_destination(dest, overwrite, [p for p, _ in metas], what="--merge input")
    block = audio_block_of(first_path, first)
    cap = png_size_cap(int(block["resolution"]))
    with ArchiveWriter(dest, overwrite=overwrite) as writer:
        for p, m in metas:
            try:
                files = ArchiveFiles(p)
            except (zipfile.BadZipFile, OSError) as e:
                raise ArchiveError(f"{p}: cannot open ({e})") from None
            try:
                label_of = {f: c for f, c in (m.get("labels") or [])}
                own = m.get("label_names") or []
                members = set(files.names())
                for rec in m.get("clips") or []:
                    name = _member_png_name(p, rec, members)
                    rec = dict(rec)
                    rec.pop("file")
                    label = label_of.get(name)
                    if label is not None and own and names:
                        label = names.index(own[label])
                    try:
                        png = files.read(name, cap)
                    except (KeyError, OSError, zipfile.BadZipFile) as e:
                        raise ArchiveError(f"{p}: cannot read a clip ({e})") from None
                    if not png.startswith(PNG_SIGNATURE):
                        raise ArchiveError(f"{p}: clip {name} is not a PNG image")
                    writer.add_png(png, rec, label)  # an OSError here is the destination's: the caller names it
            finally:
                files.close()
        extra = {k: v for k, v in first.items() if k not in ("labels", "audio", "clips", "shard")}
        extra["label_names"] = names or first.get("label_names")
        extra["merged_from"] = [str(p) for p, _ in metas]
        writer.close(first["audio"], extra)
        return len(writer)
