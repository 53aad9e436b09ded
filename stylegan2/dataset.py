"""The training set: a folder (walked recursively) or a zip of same-sized square 8-bit PNGs.

Images are returned as uint8 CHW numpy arrays (1 channel for spectrograms, or 3 for RGB) with a
float32 label vector, in the order of their relative paths. ``dataset.json`` at the root may hold
``labels`` (null, or ``[[file, int | [floats]], ...]``) and, for audio archives, the ``audio`` and
``clips`` blocks, which are passed through untouched so the STFT geometry travels with the data.

Every problem is reported in one line naming the file: not square, not a power of two, mixed sizes
or channel counts, RGBA or 16-bit images, bad ``dataset.json``, a missing label, no images at all.
A file whose header cannot be read is skipped (listed in :attr:`ImageFolderDataset.skipped`, with
a warning); one that fails to decode later is reported and replaced by the next image.
"""
from __future__ import annotations

import io
import json
import os
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import numpy as np
import PIL.Image
import torch

PathLike = Union[str, os.PathLike]


class DatasetError(ValueError):
    """The dataset cannot be used as given; the message starts with the offending file."""


def _image_extensions() -> set:
    PIL.Image.init()
    return {ext.lower() for ext in PIL.Image.registered_extensions()}


def _is_16bit(image: PIL.Image.Image) -> bool:
    """True for 16-bit PNGs, including RGB ones that PIL silently reduces to 8 bits."""
    if image.mode.startswith("I") or image.mode == "F":
        return True
    for tile in getattr(image, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else ""
        raw = args[0] if isinstance(args, tuple) and args else args
        if isinstance(raw, str) and ";16" in raw:
            return True
    return False


def _check_mode(image: PIL.Image.Image, where: str) -> int:
    """Return the channel count (1 or 3) or raise naming the unsupported pixel format."""
    if _is_16bit(image):
        raise DatasetError(f"{where}: 16-bit image (mode {image.mode}); only 8-bit greyscale (L) or RGB is supported")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        raise DatasetError(f"{where}: image has an alpha channel (mode {image.mode}); convert it to L or RGB")
    if image.mode == "L":
        return 1
    if image.mode == "RGB":
        return 3
    raise DatasetError(f"{where}: unsupported image mode {image.mode}; only 8-bit greyscale (L) or RGB is supported")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {0: ("L", 1), 2: ("RGB", 3), 3: ("P", None), 4: ("LA", None), 6: ("RGBA", None)}


def _png_header(head: bytes, where: str) -> Optional[Tuple[int, int, int]]:
    """(width, height, channels) from the IHDR chunk of a PNG's first 33 bytes, or None if not a PNG.

    Reading 33 bytes instead of letting PIL parse the file makes the start-up scan of a
    half-million-image archive about three times faster.
    """
    if len(head) < 33 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    mode, channels = _PNG_COLOUR_TYPES.get(colour, ("unknown", None))
    if depth == 16:
        raise DatasetError(f"{where}: 16-bit image (mode {mode}); only 8-bit greyscale (L) or RGB is supported")
    if mode in ("LA", "RGBA"):
        raise DatasetError(f"{where}: image has an alpha channel (mode {mode}); convert it to L or RGB")
    if channels is None or depth != 8:
        raise DatasetError(f"{where}: unsupported image mode {mode} ({depth}-bit); "
                           "only 8-bit greyscale (L) or RGB is supported")
    return width, height, channels


#: Largest ``dataset.json`` read: 1 MiB plus 1 KiB per file in the dataset (a label or clip record
#: takes ~200 bytes), so a crafted file cannot make the reader allocate gigabytes.
JSON_BASE_CAP = 1 << 20
JSON_BYTES_PER_FILE = 1024


def image_size_cap(width: int, height: int, channels: int) -> int:
    """Largest accepted image file in bytes for an 8-bit ``width`` x ``height`` x ``channels`` image.

    An uncompressed PNG (zlib stored blocks) holds ``height * (width * channels + 1)`` bytes of
    filtered rows plus a few bytes per block and chunk; twice that plus 64 KiB leaves room for any
    sane encoder and still refuses a member that declares (or inflates to) gigabytes.
    """
    return 2 * int(height) * (int(width) * int(channels) + 1) + 65536


MAX_CLASSES = 65536     # integer class labels become one-hot vectors of this length at most


class ImageFolderDataset(torch.utils.data.Dataset):
    """Square, power-of-two, 8-bit images from a folder or zip, with optional labels.

    ``resolution``: expected image size in pixels (checked when given). ``use_labels``: return the
    labels of ``dataset.json`` (one-hot for integer classes). ``max_size``: keep a random subset of
    this many images chosen with ``random_seed`` (``--subset``). ``xflip``: add mirrored copies
    (``--mirror``); off by default because mirroring a spectrogram plays the audio backwards.
    """

    def __init__(self, path: PathLike, resolution: Optional[int] = None, use_labels: bool = False,
                 max_size: Optional[int] = None, xflip: bool = False, random_seed: int = 0,
                 name: Optional[str] = None):
        self._path = str(path)
        self._use_labels = bool(use_labels)
        self._zipfile: Optional[zipfile.ZipFile] = None
        self._zip_pid: Optional[int] = None
        self._bad: set = set()

        p = Path(path)
        if p.is_dir():
            self._type = "dir"
            names = [f.relative_to(p).as_posix() for f in p.rglob("*") if f.is_file()]
        elif p.is_file() and zipfile.is_zipfile(p):
            self._type = "zip"
            names = [n for n in self._get_zipfile().namelist() if not n.endswith("/")]
        elif p.exists():
            raise DatasetError(f"{path}: not a folder or a zip archive")
        else:
            raise DatasetError(f"{path}: no such folder or zip archive")
        self._name = name or (p.stem if p.is_file() else p.name)

        self._json_cap = JSON_BASE_CAP + JSON_BYTES_PER_FILE * len(names)
        self._image_cap: Optional[int] = None
        exts = _image_extensions()
        candidates = sorted(n for n in names if os.path.splitext(n)[1].lower() in exts
                            and not any(part.startswith(".") for part in n.split("/")))
        self._meta = self._load_json("dataset.json" in names)
        self.skipped: List[Tuple[str, str]] = []
        self._fnames, shape = self._scan(candidates)
        if not self._fnames:
            raise DatasetError(f"{path}: no images found" + (f" ({len(self.skipped)} unreadable)" if self.skipped else ""))
        if resolution is not None and shape[1] != resolution:
            raise DatasetError(f"{path}: images are {shape[2]}x{shape[1]} but resolution={resolution} was requested")
        self._raw_shape = [len(self._fnames)] + list(shape)
        self._raw_labels = self._parse_labels()

        self._raw_idx = np.arange(len(self._fnames), dtype=np.int64)
        if max_size is not None and max_size < self._raw_idx.size:
            if max_size < 1:
                raise DatasetError(f"{path}: max_size must be at least 1, got {max_size}")
            rnd = np.random.RandomState(random_seed)
            self._raw_idx = np.sort(rnd.permutation(self._raw_idx)[:max_size])
        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])

    # ---------------------------------------------------------------------------- file access
    def _where(self, fname: str) -> str:
        return f"{self._path}:{fname}" if self._type == "zip" else str(Path(self._path) / fname)

    def _get_zipfile(self) -> zipfile.ZipFile:
        # One handle per process: a handle inherited through fork/pickle would share file offsets.
        if self._zipfile is None or self._zip_pid != os.getpid():
            self._zipfile = zipfile.ZipFile(self._path)
            self._zip_pid = os.getpid()
        return self._zipfile

    def _open(self, fname: str):
        if self._type == "dir":
            return open(os.path.join(self._path, fname), "rb")
        return self._get_zipfile().open(fname, "r")

    def _size(self, fname: str) -> int:
        """Size in bytes of ``fname`` as the zip directory declares it (or the file system says)."""
        if self._type == "dir":
            return os.stat(os.path.join(self._path, fname)).st_size
        return self._get_zipfile().getinfo(fname).file_size

    def _read_capped(self, fname: str, cap: int) -> bytes:
        """The bytes of ``fname``, refused beyond ``cap``: the declared size is checked before reading
        and the read stops at ``cap + 1`` bytes, so a header that understates the size cannot help."""
        size = self._size(fname)
        if size > cap:
            raise DatasetError(f"{self._where(fname)}: {size} bytes, more than the {cap} such a file can hold")
        with self._open(fname) as f:
            data = f.read(cap + 1)
        if len(data) > cap:
            raise DatasetError(f"{self._where(fname)}: larger than the {cap} bytes such a file can hold")
        return data

    def close(self) -> None:
        """Close the zip handle of this process (it is reopened on the next access)."""
        if self._zipfile is not None:
            self._zipfile.close()
        self._zipfile = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_zipfile"] = None  # DataLoader workers open their own handle
        state["_zip_pid"] = None
        return state

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---------------------------------------------------------------------------- metadata
    def _load_json(self, present: bool) -> dict:
        if not present:
            return {}
        where = self._where("dataset.json")
        try:
            meta = json.loads(self._read_capped("dataset.json", self._json_cap))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{where}: bad json ({e})") from None
        if not isinstance(meta, dict):
            raise DatasetError(f"{where}: bad json (expected an object at the top level, got {type(meta).__name__})")
        return meta

    def _scan(self, candidates: List[str]) -> Tuple[List[str], Tuple[int, int, int]]:
        """Read every header: fix the shape from the first image, enforce it on the rest."""
        kept: List[str] = []
        shape = None
        first = None
        for fname in candidates:
            where = self._where(fname)
            try:
                declared = self._size(fname)
                if self._image_cap is not None and declared > self._image_cap:
                    self.skipped.append((fname, f"{declared} bytes, more than the {self._image_cap} an image "
                                                f"of this size can hold"))
                    continue
                with self._open(fname) as f:
                    header = _png_header(f.read(33), where) if shape is not None else None
                    if header is not None:
                        size, channels = header[:2], header[2]
                    else:
                        f.seek(0)
                        image = PIL.Image.open(f)
                        size, channels = image.size, _check_mode(image, where)
                        if shape is None:
                            cap = image_size_cap(size[0], size[1], channels)
                            if declared > cap:
                                raise DatasetError(f"{where}: {declared} bytes, more than the {cap} a "
                                                   f"{size[0]}x{size[1]} image can hold")
                            image.load()  # decode the first one fully: a broken first image fails early
            except DatasetError:
                raise
            except Exception as e:
                self.skipped.append((fname, f"unreadable image ({type(e).__name__}: {e})"))
                continue
            w, h = size
            if shape is None:
                if w != h:
                    raise DatasetError(f"{where}: image is {w}x{h}; images must be square")
                if w < 4 or w & (w - 1):
                    raise DatasetError(f"{where}: resolution {w} is not a power of two (>= 4)")
                shape, first = (channels, h, w), fname
                self._image_cap = image_size_cap(w, h, channels)
            elif (channels, h, w) != shape:
                raise DatasetError(f"{where}: image is {w}x{h} with {channels} channel(s) but {first} is "
                                   f"{shape[2]}x{shape[1]} with {shape[0]}; all images must match")
            kept.append(fname)
        if self.skipped:
            listed = ", ".join(self._where(n) for n, _ in self.skipped[:3])
            more = f" and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
            warnings.warn(f"{self._path}: skipped {len(self.skipped)} unreadable image(s): {listed}{more}")
        return kept, shape

    def _parse_labels(self) -> Optional[np.ndarray]:
        if not self._use_labels:
            return None
        where = self._where("dataset.json")
        labels = self._meta.get("labels")
        if labels is None:
            raise DatasetError(f"{where if self._meta else self._path}: use_labels=True but the dataset has no labels")
        if not isinstance(labels, list):
            raise DatasetError(f"{where}: bad json ('labels' must be null or a list of [file, label] pairs)")
        table = {}
        for entry in labels:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
                raise DatasetError(f"{where}: bad label entry {entry!r}; expected [file, int or list of numbers]")
            table[entry[0].replace("\\", "/")] = entry[1]
        values = []
        for fname in self._fnames:
            if fname not in table:
                raise DatasetError(f"{where}: no label for {fname}")
            values.append(table[fname])
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            for fname, v in zip(self._fnames, values):      # checked as Python ints: no int64 overflow
                if v < 0:
                    raise DatasetError(f"{where}: negative class label for {fname}")
                if v >= MAX_CLASSES:
                    raise DatasetError(f"{where}: class label {v} for {fname} is too large (labels are class "
                                       f"indices 0..{MAX_CLASSES - 1}; one-hot vectors of that length per image)")
            ints = np.asarray(values, dtype=np.int64)
            onehot = np.zeros((ints.size, int(ints.max()) + 1), dtype=np.float32)
            onehot[np.arange(ints.size), ints] = 1
            return onehot
        try:
            vectors = np.asarray(values, dtype=np.float32)
        except (ValueError, TypeError):
            raise DatasetError(f"{where}: labels must be all ints or all equal-length lists of numbers") from None
        if vectors.ndim != 2:
            raise DatasetError(f"{where}: labels must be all ints or all equal-length lists of numbers")
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            bad = self._fnames[int(np.argmin(finite))]
            raise DatasetError(f"{where}: non-finite labels (NaN or infinity, or beyond float32) for {bad} "
                               f"and {int((~finite).sum()) - 1} other image(s)")
        return vectors

    # ---------------------------------------------------------------------------- Dataset API
    def __len__(self) -> int:
        return int(self._raw_idx.size)

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        fname = self._fnames[raw_idx]
        with PIL.Image.open(io.BytesIO(self._read_capped(fname, self._image_cap))) as image:
            array = np.array(image)  # a writable copy: torch warns on (and may not own) read-only buffers
        if array.ndim == 2:
            array = array[:, :, np.newaxis]
        array = array.transpose(2, 0, 1)
        if list(array.shape) != self._raw_shape[1:] or array.dtype != np.uint8:
            raise DatasetError(f"{self._where(fname)}: decoded to {array.dtype} {list(array.shape)}, "
                               f"expected uint8 {self._raw_shape[1:]}")
        return array

    def __getitem__(self, idx: int) -> Tuple[np.ndarray, np.ndarray]:
        raw_idx = int(self._raw_idx[idx])
        for _ in range(len(self._fnames)):
            if raw_idx not in self._bad:
                try:
                    image = self._load_raw_image(raw_idx)
                    break
                except Exception as e:
                    self._bad.add(raw_idx)
                    warnings.warn(f"{self._where(self._fnames[raw_idx])}: corrupt image skipped "
                                  f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
            raw_idx = (raw_idx + 1) % len(self._fnames)
        else:
            raise DatasetError(f"{self._path}: every image failed to decode")
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return np.ascontiguousarray(image), self.get_label(idx)

    def get_label(self, idx: int) -> np.ndarray:
        """The float32 label vector of item ``idx`` (length :attr:`label_dim`; empty without labels)."""
        if self._raw_labels is None:
            return np.zeros([0], dtype=np.float32)
        return self._raw_labels[self._raw_idx[idx]].copy()

    def get_details(self, idx: int) -> dict:
        """Which file item ``idx`` comes from and whether it is mirrored."""
        raw_idx = int(self._raw_idx[idx])
        return {"raw_idx": raw_idx, "fname": self._fnames[raw_idx], "xflip": bool(self._xflip[idx])}

    # ---------------------------------------------------------------------------- properties
    @property
    def name(self) -> str:
        return self._name

    @property
    def path(self) -> str:
        return self._path

    @property
    def filenames(self) -> List[str]:
        """Relative paths of all usable images, sorted (before subset and x-flip)."""
        return list(self._fnames)

    @property
    def image_shape(self) -> List[int]:
        return list(self._raw_shape[1:])

    @property
    def num_channels(self) -> int:
        return self._raw_shape[1]

    @property
    def resolution(self) -> int:
        return self._raw_shape[2]

    @property
    def label_shape(self) -> List[int]:
        return [0] if self._raw_labels is None else list(self._raw_labels.shape[1:])

    @property
    def label_dim(self) -> int:
        return self.label_shape[0]

    @property
    def has_labels(self) -> bool:
        return self.label_dim > 0

    @property
    def has_onehot_labels(self) -> bool:
        return self._raw_labels is not None and bool(np.all(np.isin(self._raw_labels, (0, 1)))) and \
            bool(np.all(self._raw_labels.sum(axis=1) == 1))

    @property
    def audio(self) -> Optional[Any]:
        """The ``audio`` block of ``dataset.json`` exactly as stored, or None."""
        return self._meta.get("audio")

    @property
    def clips(self) -> Optional[Any]:
        """The ``clips`` records of ``dataset.json`` exactly as stored, or None."""
        return self._meta.get("clips")
