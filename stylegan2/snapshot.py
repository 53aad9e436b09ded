"""Network snapshots as plain data: write atomically, load without ever running code from the file.

Upstream StyleGAN2-ADA pickles whole modules (and the source code of their classes), so loading one
executes whatever the file contains and needs the original source tree. An ElectroGAN snapshot
(``network-snapshot-NNNNNN.pkl``) is instead a ``torch.save`` of a dict holding only plain data:
dicts, lists, tuples, str, int, float, bool, None and torch tensors. It is read back with
``torch.load(weights_only=True)``, which refuses every pickle global outside torch's small
allow-list, and networks are rebuilt from an allow-list of class names kept in this module.

Top-level keys (all optional except ``format_version``; the training loop writes all of them):

=====================  =============================================================================
``format_version``     int, :data:`FORMAT_VERSION`; newer versions are refused with a clear message
``G``, ``D``, ``G_ema`` network records ``{'class': str, 'init_kwargs': dict, 'state_dict': dict}``
                       (see :func:`network_record`); ``class`` must be in the allow-list
``opt_G``, ``opt_D``   ``torch.optim.Optimizer.state_dict()`` of the two Adam optimisers
``cur_nimg``           int, real images shown to D so far (the kimg counter is ``cur_nimg / 1000``)
``cur_tick``           int, ticks completed
``batch_idx``          int, iterations completed (drives lazy regularisation and the ADA interval)
``augment``            ``{'kwargs': dict, 'p': float}`` or None when training without augmentation
``ada_stats``          :meth:`stylegan2.ada.AdaController.state_dict` or None
``pl_mean``            0-d tensor, the path-length running mean of the loss
``rng``                :func:`capture_rng_state` output: ``{'torch', 'numpy', 'python', 'cuda'}``
``training_options``   dict, the resolved training options (plain data)
``training_set_kwargs`` dict, how to reopen the training set (path, resolution, use_labels, ...)
``audio``              dict or None, the dataset's ``audio`` block, passed through untouched
``best``, ``nonfinite_steps``  the ``--keep-best`` record and the count of skipped non-finite steps
*other keys*           whatever plain data the caller of the training loop hands it as
                       ``snapshot_extra``, copied untouched (``train.py``: ``decoder_model``, the
                       archive's decoder model file as its own dict); this module never interprets them
=====================  =============================================================================
"""
from __future__ import annotations

import contextlib
import os
import pickle
import random
import re
import stat
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Union

import numpy as np
import torch

from .misc import atomic_torch_save

PathLike = Union[str, os.PathLike]

FORMAT_VERSION = 1
NETWORK_KEYS = ("G", "D", "G_ema")
SNAPSHOT_RE = re.compile(r"^network-snapshot-(\d+)\.pkl$")


class SnapshotError(Exception):
    """A snapshot could not be written, read or turned back into networks; the message names why."""


# --------------------------------------------------------------------------------------------------
# Allow-list of network classes that build_networks may instantiate.

def _networks_class(name: str) -> Callable[[], type]:
    def resolve() -> type:
        from . import networks  # imported lazily: networks is heavier and may not be needed
        return getattr(networks, name)
    return resolve


_ALLOWED_CLASSES: Dict[str, Callable[[], type]] = {
    "stylegan2.networks.Generator": _networks_class("Generator"),
    "stylegan2.networks.Discriminator": _networks_class("Discriminator"),
    "stylegan2.networks.MappingNetwork": _networks_class("MappingNetwork"),
    "stylegan2.networks.SynthesisNetwork": _networks_class("SynthesisNetwork"),
}


def class_name(cls: type) -> str:
    """The dotted name under which a network class is stored in a snapshot record."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register_network_class(cls: type, name: Optional[str] = None) -> str:
    """Add ``cls`` to the allow-list (under ``name``, default its dotted name); return that name.

    Meant for extensions and tests; the name is a lookup key only, it is never imported.
    """
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise TypeError(f"register_network_class: {cls!r} is not an nn.Module subclass")
    name = name or class_name(cls)
    _ALLOWED_CLASSES[name] = lambda: cls
    return name


def unregister_network_class(name: str) -> None:
    """Remove ``name`` from the allow-list (no error when it is absent)."""
    _ALLOWED_CLASSES.pop(name, None)


def allowed_network_classes() -> list:
    """The sorted names that :func:`build_networks` accepts."""
    return sorted(_ALLOWED_CLASSES)


# --------------------------------------------------------------------------------------------------
# Plain-data validation.

_SCALARS = (str, int, float, bool, type(None))


def _check_plain(value: Any, where: str) -> None:
    """Raise ``TypeError`` naming the key path of the first value that is not plain data."""
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, torch.Tensor):
        if type(value) not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError(f"{where}: tensor subclass {type(value).__name__} is not plain data")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"{where}: dict key {key!r} must be a str or int")
            _check_plain(item, f"{where}.{key}" if where else str(key))
        return
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    hint = ""
    if isinstance(value, torch.nn.Module):
        hint = " (store network_record(module) instead)"
    elif isinstance(value, (np.ndarray, np.generic)):
        hint = " (convert it with torch.as_tensor() or .item())"
    raise TypeError(f"{where}: {type(value).__module__}.{type(value).__qualname__} is not plain data{hint}")


def check_plain_data(data: Any, root: str = "snapshot") -> None:
    """Raise ``TypeError("<key path>: ...")`` if ``data`` holds anything but plain data and tensors."""
    _check_plain(data, root)


# --------------------------------------------------------------------------------------------------
# Records, RNG state.

def network_record(net: torch.nn.Module) -> dict:
    """Describe ``net`` as plain data: its allow-listed class name, constructor kwargs and CPU state dict.

    ``net.init_kwargs`` (a plain dict, set by every ElectroGAN network) is what rebuilds it.
    """
    name = class_name(type(net))
    if name not in _ALLOWED_CLASSES:
        raise TypeError(f"network_record: class {name} is not in the snapshot allow-list")
    init_kwargs = getattr(net, "init_kwargs", None)
    if not isinstance(init_kwargs, dict):
        raise TypeError(f"network_record: {name} has no init_kwargs dict")
    check_plain_data(init_kwargs, f"{name}.init_kwargs")
    state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
    return {"class": name, "init_kwargs": dict(init_kwargs), "state_dict": state}


def capture_rng_state() -> dict:
    """The torch, CUDA, NumPy-global and Python ``random`` generator states as plain data."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    cuda = [s.clone() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {
        "torch": torch.get_rng_state().clone(),
        "cuda": cuda,
        "numpy": {
            "bit_generator": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64).copy()),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }


def restore_rng_state(state: dict) -> None:
    """Put back the generator states captured by :func:`capture_rng_state` (CUDA ones when present)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        for i, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)
    npst = state["numpy"]
    np.random.set_state((npst["bit_generator"], npst["keys"].numpy().astype(np.uint32),
                         npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"]))


# --------------------------------------------------------------------------------------------------
# Save / load.

def save_snapshot(path: PathLike, data: dict) -> None:
    """Write ``data`` (plain data only, see module doc) to ``path`` atomically with ``torch.save``.

    ``format_version`` is added when absent. Nothing is written if validation fails; the error
    names the offending key path.
    """
    if not isinstance(data, dict):
        raise TypeError(f"{path}: a snapshot must be a dict, got {type(data).__name__}")
    data = dict(data)
    version = data.setdefault("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: cannot write format_version {version!r}; this code writes {FORMAT_VERSION}")
    try:
        check_plain_data(data)
    except TypeError as e:
        raise TypeError(f"{path}: {e}") from None
    atomic_torch_save(path, data)    # a full disk is an OSError naming path, not torch's zip-writer error


def _refusal_detail(message: str) -> str:
    m = re.search(r"GLOBAL ([\w.]+)", message)
    if m:
        return f" (it references {m.group(1)})"
    m = re.search(r"Unsupported operand \d+", message)
    return f" ({m.group(0)})" if m else ""


def load_snapshot(path: PathLike, keys: Optional[Iterable[str]] = None) -> dict:
    """Read a snapshot written by :func:`save_snapshot`; never executes code from the file.

    ``keys``: None reads everything (resuming needs it all). Otherwise only those top-level keys are
    read, e.g. ``("G_ema", "audio", "decoder_model")`` for generation: the file is memory-mapped
    (``torch.load(mmap=True, weights_only=True)``) and the tensors of other keys (G, D, the optimizer
    states: most of a training snapshot) are never read from disk. The result then holds
    ``format_version`` and the requested keys the file has; asking for ``G_ema`` in a snapshot
    without one gives ``G`` instead.

    Every failure becomes ``SnapshotError("<path>: <problem>")``: missing file, not a regular file
    (a FIFO is refused without blocking), not a snapshot, truncated or corrupt data, a zip that
    would unpack to far more than its size, an unsupported ``format_version``, a pickle that would
    run code, anything else that is not plain data (:func:`check_plain_data`, applied to every key,
    including the ones a caller added such as ``decoder_model``, and with ``keys`` too: it reads the
    structure, not the tensors), or values no training run writes (:func:`check_snapshot_values`,
    on every key for the counters and scalars, and with ``keys`` the finite-weight checks only on the
    keys returned).
    """
    path = Path(path)
    with open_regular_file(path) as f:
        magic = f.read(4)
        # torch.save writes a zip (PK\x03\x04); legacy torch files and raw pickles start with protocol 2+ (\x80).
        if not magic:
            raise SnapshotError(f"{path}: empty file, not a snapshot")
        if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
            raise SnapshotError(f"{path}: not a network snapshot (neither a torch zip file nor a pickle)")
        if magic.startswith(b"PK\x03\x04"):
            check_unpacked_size(path, f)
        f.seek(0)
        if keys is not None and magic.startswith(b"PK\x03\x04"):
            data = _torch_load(path, _mapped_source(path, f), mmap=True)
        else:       # a legacy pickle cannot be mapped: it is read whole, then narrowed like a zip
            data = _torch_load(path, f)
    if not isinstance(data, dict) or "format_version" not in data:
        raise SnapshotError(f"{path}: not an ElectroGAN network snapshot (no format_version key)")
    version = data["format_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise SnapshotError(f"{path}: not an ElectroGAN network snapshot (format_version {version!r})")
    if version > FORMAT_VERSION or version < 1:
        raise SnapshotError(f"{path}: unsupported format_version {version} (this code reads up to {FORMAT_VERSION})")
    try:    # weights_only also lets a few torch types through (torch.Size, dtypes, devices); refuse them too
        check_plain_data(data)
    except TypeError as e:
        raise SnapshotError(f"{path}: refused to load: {e}") from None
    if keys is None:
        check_snapshot_values(data, path)
        return data
    _check_scalar_values(data, path)        # counters, pl_mean, p: a few bytes, so checked for every key
    data = _only_keys(data, keys)
    _check_tensor_values(data, path)        # finite weights and moments: only of what was asked for
    return data


def _only_keys(data: dict, keys: Iterable[str]) -> dict:
    """``format_version`` and the requested ``keys`` that ``data`` has (``G`` for a missing ``G_ema``)."""
    if isinstance(keys, str):
        keys = [keys]
    wanted = set(keys)
    if "G_ema" in wanted and data.get("G_ema") is None:
        wanted.add("G")     # the generator to use: G_ema, or G in a snapshot written without one
    return {k: v for k, v in data.items() if k == "format_version" or k in wanted}


def _mapped_source(path: Path, f) -> str:
    """A name for the already-checked open file ``f`` that ``torch.load(mmap=True)`` can map.

    mmap needs a file name, not a file object. ``/proc/self/fd/N`` names exactly the file that was
    opened and checked (a regular file); where it does not exist, the path is used only if it still
    names the same file (device and inode), so nothing swapped in after the check is mapped.
    """
    by_fd = f"/proc/self/fd/{f.fileno()}"
    if os.path.exists(by_fd):
        return by_fd
    opened, now = os.fstat(f.fileno()), os.stat(path)
    if (opened.st_dev, opened.st_ino) != (now.st_dev, now.st_ino):
        raise SnapshotError(f"{path}: the file was replaced while it was being opened; try again")
    return str(path)


@contextlib.contextmanager
def open_regular_file(path: Path, what: str = "snapshot"):
    """The file at ``path`` opened for reading, refused at once unless it is a regular file
    (``what`` names the kind of file in messages; also used for decoder-model files).

    Opened non-blocking and checked with ``fstat`` on the open descriptor (no window for a swap
    between check and open): a FIFO would otherwise block forever waiting for a writer, and a
    device such as /dev/zero would be read without end.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SnapshotError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SnapshotError(f"{path}: is a directory, not a {what} file") from None
    except PermissionError:
        raise SnapshotError(f"{path}: permission denied") from None
    except OSError as e:
        raise SnapshotError(f"{path}: cannot open ({e.strerror or e})") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise SnapshotError(f"{path}: is a directory, not a {what} file")
        if not stat.S_ISREG(mode):
            kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or
                    stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
            raise SnapshotError(f"{path}: is {kind}, not a {what} file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


#: A torch zip may unpack to at most this multiple of its size (plus 1 MiB). torch.save stores its
#: members uncompressed (ratio 1); torch.load also reads deflated members, so without this check a
#: 1 MB file of compressed zeros could make the loader allocate a gigabyte.
MAX_UNPACK_RATIO = 2


def check_unpacked_size(path: Path, f, what: str = "snapshot") -> None:
    """Refuse a zip whose members declare far more data than the file holds (a zip bomb); ``what``
    names the kind of file (torch.save writes snapshots and decoder models alike, uncompressed)."""
    import zipfile
    size = os.fstat(f.fileno()).st_size
    try:
        f.seek(0)
        with zipfile.ZipFile(f) as z:
            declared = sum(info.file_size for info in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return      # torch.load reports damaged files in its own words (truncated or corrupt)
    if declared > MAX_UNPACK_RATIO * size + 2**20:
        raise SnapshotError(f"{path}: its members unpack to {declared:,} bytes from a {size:,}-byte file; "
                            f"{what}s are stored uncompressed, so this is not one (a zip bomb?)")


def _torch_load(path: Path, f, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` of an open file (or, with ``mmap``, a file name to map);
    every failure becomes a one-line SnapshotError naming ``path``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(f, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg:
            raise SnapshotError(
                f"{path}: refused to load: the file contains pickled code or objects other than plain "
                f"data{_refusal_detail(msg)}; upstream StyleGAN2 pickles are not supported") from None
        raise SnapshotError(f"{path}: truncated or corrupt snapshot ({msg.splitlines()[0] if msg else e!r})") from None
    except MemoryError:
        raise SnapshotError(f"{path}: truncated or corrupt snapshot (it declares more data than fits in "
                            f"memory)") from None
    except Exception as e:  # torch reports damaged files with many exception types; all mean the same here
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SnapshotError(f"{path}: truncated or corrupt snapshot ({first})") from None


# --------------------------------------------------------------------------------------------------
# Values: what a snapshot may hold without being refused at load.

#: Largest image counter a snapshot may claim: 10**12 images = 10**9 kimg, thousands of times any
#: published training run (StyleGAN2-ADA's longest is 25,000 kimg).
MAX_NIMG = 10**12
_COUNTERS = ("cur_nimg", "cur_tick", "batch_idx")


def _all_finite(t: torch.Tensor) -> bool:
    """True when no element of ``t`` is NaN or inf.

    A sum is non-finite when any element is (NaN and inf propagate), and summing reads the data
    once without the boolean mask ``isfinite(t).all()`` allocates; only a sum that overflowed
    (finite values beyond float range together) is settled element by element.
    """
    if bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def first_non_finite(tensors: Dict[str, Any]) -> Optional[str]:
    """Name (key path) of the first floating-point tensor or float holding NaN or inf, else None."""
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor):
            if (value.is_floating_point() or value.is_complex()) and value.numel() and not _all_finite(value):
                return name
        elif isinstance(value, float):
            if not np.isfinite(value):
                return name
        elif isinstance(value, dict):
            inner = first_non_finite({f"{name}.{k}": v for k, v in value.items()})
            if inner:
                return inner
        elif isinstance(value, (list, tuple)):
            inner = first_non_finite({f"{name}[{i}]": v for i, v in enumerate(value)})
            if inner:
                return inner
    return None


def check_snapshot_values(data: dict, path: PathLike = "snapshot") -> None:
    """Refuse values no healthy training run writes, with one line naming ``path`` and the field.

    * ``cur_nimg``, ``cur_tick``, ``batch_idx``: integers in 0..10**12 (a negative or absurd image
      counter would shift the data order, the schedules and the snapshot names of a resumed run);
    * the weights and buffers of ``G``, ``D``, ``G_ema`` and the optimizer states: finite (NaN or
      inf weights generate silence or noise, and a resumed run would never recover);
    * ``pl_mean``: finite and >= 0; ``augment.p`` and ``ada_stats.p``: finite and >= 0 (ADA's p has no upper clamp).
    """
    _check_scalar_values(data, path)
    _check_tensor_values(data, path)


def _check_tensor_values(data: dict, path: PathLike) -> None:
    """The network weights and optimizer moments among ``data``'s keys hold no NaN or inf."""
    for key in NETWORK_KEYS:
        record = data.get(key)
        state = record.get("state_dict") if isinstance(record, dict) else None
        if isinstance(state, dict):
            bad = first_non_finite(state)
            if bad:
                raise SnapshotError(f"{path}: {key} weight {bad} holds NaN or inf; the snapshot is unusable "
                                    f"(use an earlier one)")
    for key in ("opt_G", "opt_D"):
        state = data.get(key)
        if isinstance(state, dict) and isinstance(state.get("state"), dict):
            bad = first_non_finite({str(k): v for k, v in state["state"].items()})
            if bad:
                raise SnapshotError(f"{path}: {key} optimizer state {bad} holds NaN or inf; cannot resume from it")


def _check_scalar_values(data: dict, path: PathLike) -> None:
    """The counters, ``pl_mean`` and the augmentation strengths are in their ranges."""
    for key in _COUNTERS:
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SnapshotError(f"{path}: {key} {value!r} is not an integer")
        if not 0 <= value <= MAX_NIMG:
            raise SnapshotError(f"{path}: {key} {value} is outside 0..{MAX_NIMG:.0e}; the counter is damaged")
    pl_mean = data.get("pl_mean")
    if pl_mean is not None:
        try:
            value = float(pl_mean)
        except (TypeError, ValueError, RuntimeError):
            raise SnapshotError(f"{path}: pl_mean is not a number ({type(pl_mean).__name__})") from None
        if not (np.isfinite(value) and value >= 0):
            raise SnapshotError(f"{path}: pl_mean {value!r} is not a finite number >= 0")
    for key in ("augment", "ada_stats"):
        block = data.get(key)
        if isinstance(block, dict) and "p" in block:
            p = block["p"]
            try:
                p = float(p)
            except (TypeError, ValueError, RuntimeError):
                raise SnapshotError(f"{path}: {key}.p {p!r} is not a number") from None
            # ADA's p has no upper clamp (each augmentation fires with min(p, 1)), so only a negative or
            # non-finite p is damage; 1e3 bounds what the controller could reach in any real run.
            if not 0.0 <= p <= 1e3:   # also False for NaN
                raise SnapshotError(f"{path}: {key}.p {p!r} is not a finite augmentation strength >= 0")


#: Upper bounds on the sizes a network record may declare in its init_kwargs (at any nesting depth,
#: e.g. ``mapping_kwargs.num_layers``). Far beyond every published StyleGAN configuration; they
#: exist so that a small file cannot make the loader build a huge network before the shape check.
SIZE_LIMITS = {
    "img_resolution": 8192, "resolution": 8192, "img_channels": 4, "z_dim": 65536, "w_dim": 65536,
    "c_dim": 65536, "num_ws": 64, "channel_base": 2**24, "channel_max": 65536, "num_layers": 64,
    "cmap_dim": 65536, "embed_features": 65536, "layer_features": 65536, "mbstd_group_size": 4096,
    "mbstd_num_channels": 64, "num_fp16_res": 16,
}


def _check_declared_sizes(key: str, kwargs: dict, where: str = "init_kwargs") -> None:
    """Refuse a declared size that is not an integer in ``0..SIZE_LIMITS[name]`` (resolutions: powers of two)."""
    for name, value in kwargs.items():
        here = f"{where}.{name}"
        if isinstance(value, dict):
            _check_declared_sizes(key, value, here)
            continue
        limit = SIZE_LIMITS.get(name)
        if limit is None or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            raise SnapshotError(f"snapshot: '{key}' {here} {value!r} is not an integer in 0..{limit}")
        if name.endswith("resolution") and value & (value - 1):
            raise SnapshotError(f"snapshot: '{key}' {here} {value} is not a power of two")


#: Sizes within which building a network for real costs at most a few hundred MB: every preset and
#: published configuration (the paper's 1024 model: 30 M generator parameters) fits. A record
#: inside them is built directly and its shapes compared afterwards; one beyond them is built
#: on torch's ``meta`` device first (shapes only), which costs about 0.9 CPU s on its first use
#: (torch imports its Python meta kernels), so the common case does not pay for the rare one.
ORDINARY_SIZES = {
    "img_resolution": 1024, "resolution": 1024, "img_channels": 4, "z_dim": 1024, "w_dim": 1024,
    "c_dim": 1024, "num_ws": 18, "channel_base": 32768, "channel_max": 512, "num_layers": 8,
    "cmap_dim": 1024, "embed_features": 1024, "layer_features": 1024, "mbstd_group_size": 64,
    "mbstd_num_channels": 4, "num_fp16_res": 8,
}


def _within_ordinary_sizes(kwargs: dict) -> bool:
    """True when every size ``kwargs`` declares (at any nesting depth) is at most :data:`ORDINARY_SIZES`'s."""
    for name, value in kwargs.items():
        if isinstance(value, dict):
            if not _within_ordinary_sizes(value):
                return False
        elif name in ORDINARY_SIZES and value is not None and value > ORDINARY_SIZES[name]:
            return False
    return True


def _construct(key: str, name: str, cls: type, kwargs: dict, device: Optional[str] = None):
    """``cls(**kwargs)`` (under ``torch.device(device)`` when given); a failure is a SnapshotError naming the record."""
    try:
        if device is None:
            return cls(**kwargs)
        with torch.device(device):
            return cls(**kwargs)
    except Exception as e:  # a bad kwarg set is a snapshot problem, report it as one
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SnapshotError(f"snapshot: cannot construct '{key}' ({name}): {first}") from None


def _check_shapes(key: str, name: str, net: torch.nn.Module, stored: dict) -> None:
    """Refuse a stored state dict whose tensors are not exactly the ones ``net`` holds, naming the first difference."""
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = [k for k in shapes if k not in stored]
    unexpected = [k for k in stored if k not in shapes]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) its init_kwargs declare are missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} stored tensor(s) are not in the network (first: {unexpected[0]})")
        raise SnapshotError(f"snapshot: '{key}' state_dict does not fit {name}: {'; '.join(parts)}")
    for k, shape in shapes.items():
        value = stored[k]
        if not isinstance(value, torch.Tensor):
            raise SnapshotError(f"snapshot: '{key}' state_dict entry {k} is not a tensor")
        if tuple(value.shape) != shape:
            raise SnapshotError(f"snapshot: '{key}' state_dict does not fit {name}: {k} is stored as "
                                f"{list(value.shape)}, its init_kwargs declare {list(shape)}")


def _build_checked(key: str, name: str, cls: type, record: dict) -> torch.nn.Module:
    """The network a record declares, its stored tensors' shapes checked before they are loaded.

    A record beyond :data:`ORDINARY_SIZES` is first built on the ``meta`` device (shapes only, no
    memory), so a small file that declares a huge network (a resolution of 2**13 with a 64 x 64 state
    dict) is refused with the first missing, unexpected or mis-shaped tensor named, instead of
    allocating gigabytes; what is then built holds as many numbers as the file.
    """
    kwargs, stored = record["init_kwargs"], record["state_dict"]
    if not _within_ordinary_sizes(kwargs):
        _check_shapes(key, name, _construct(key, name, cls, kwargs, device="meta"), stored)
    net = _construct(key, name, cls, kwargs)
    _check_shapes(key, name, net, stored)
    return net


def build_networks(snapshot: dict, device: Union[str, torch.device] = "cpu",
                   names: Optional[Iterable[str]] = None) -> dict:
    """Rebuild networks from the records of a loaded snapshot; return ``{'G': .., 'D': .., 'G_ema': ..}``.

    ``names`` = which records to build (default: whichever of G, D, G_ema are present; at least one
    must be). Classes come only from the allow-list; the sizes declared in ``init_kwargs`` are
    checked against :data:`SIZE_LIMITS` and the stored tensors' shapes before anything is allocated;
    the networks are returned in eval mode with ``requires_grad`` off, on ``device``.
    """
    if not isinstance(snapshot, dict):
        raise SnapshotError(f"snapshot: expected a dict, got {type(snapshot).__name__}")
    if names is None:
        names = [k for k in NETWORK_KEYS if snapshot.get(k) is not None]
        if not names:
            raise SnapshotError("snapshot: holds no network record (G, D or G_ema)")
    nets = {}
    for key in names:
        record = snapshot.get(key)
        if record is None:
            raise SnapshotError(f"snapshot: has no '{key}' network record")
        if not isinstance(record, dict) or not {"class", "init_kwargs", "state_dict"} <= set(record):
            raise SnapshotError(f"snapshot: '{key}' is not a network record (needs class, init_kwargs, state_dict)")
        name = record["class"]
        factory = _ALLOWED_CLASSES.get(name) if isinstance(name, str) else None
        if factory is None:
            raise SnapshotError(f"snapshot: '{key}' has class {name!r}, which is not an allowed network class")
        if not isinstance(record["init_kwargs"], dict):
            raise SnapshotError(f"snapshot: '{key}'.init_kwargs is not a dict")
        if not isinstance(record["state_dict"], dict):
            raise SnapshotError(f"snapshot: '{key}'.state_dict is not a dict")
        _check_declared_sizes(key, record["init_kwargs"])
        net = _build_checked(key, name, factory(), record)
        try:
            net.load_state_dict(record["state_dict"], strict=True)
        except Exception as e:
            first = str(e).splitlines()
            raise SnapshotError(f"snapshot: '{key}' state_dict does not fit {name}: "
                                f"{' '.join(s.strip() for s in first)[:400]}") from None
        nets[key] = net.to(device).eval().requires_grad_(False)
    return nets


def find_latest_snapshot(outdir: PathLike) -> Optional[Path]:
    """The most recently written ``network-snapshot-NNNNNN.pkl`` in ``outdir`` or its run dirs, or None.

    Used by ``--resume latest``. Newest = latest modification time; ties go to the later run
    directory name, then the larger kimg. Temporary files of interrupted writes are ignored.
    """
    outdir = Path(outdir)
    if not outdir.is_dir():
        return None
    candidates = []
    for folder in [outdir] + sorted(p for p in outdir.iterdir() if p.is_dir()):
        for f in folder.iterdir():
            m = SNAPSHOT_RE.match(f.name)
            if m and f.is_file():
                candidates.append((f.stat().st_mtime, folder.name if folder != outdir else "", int(m.group(1)), f))
    if not candidates:
        return None
    return max(candidates, key=lambda c: c[:3])[3]
