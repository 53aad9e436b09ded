"""Decoder-model files checked as strictly as snapshots: one validator for every way a model comes in.

A decoder model (:mod:`audio_ext.decoder.frame_model`) reaches the code through a file (``--decoder-model``,
``$ELECTROGAN_DECODER_MODEL``, the shipped model, ``<archive>.decoder.pt``, ``train-decoder
--init`` and its own ``--out`` when resuming) or as the ``decoder_model`` dict a training snapshot
carries. :func:`read_model_file` and :func:`check_model_payload` are the two doors, and the second
does all the checking, before any real network is built (:func:`load_decoder_model`: a file read
through the first door, ready to decode):

* the file: a regular file of at most :data:`MAX_FILE_BYTES`, whose zip members declare at most
  twice its size (``torch.save`` stores them uncompressed; a deflated 1 GiB record in a 1 MB file
  is refused before ``torch.load`` would inflate it), read with ``weights_only=True``;
* the entries: format, version, ``geometry`` (the audio block rules), ``stats`` finite with
  ``std > 0``;
* ``config``: exactly the keys of :class:`~audio_ext.decoder.frame_model.FrameInterpNet`, integers within
  :data:`CONFIG_LIMITS` (``dilations`` a non-empty list), so ``dilations: []`` or a
  ``body_width`` of 6000 is one line, not a ZeroDivisionError or gigabytes;
* ``state_dict``: compared with the network the config declares, built on torch's ``meta``
  device (shapes only, no memory), so nothing is allocated beyond what the file holds;
* every weight, and the optimizer state a ``train-decoder`` checkpoint carries, finite: NaN
  weights would decode digital silence and exit 0.

Each refusal is a one-line :class:`~audio_ext.decoder.frame_model.ModelError` naming the file (or
``<snapshot>:decoder_model``) and the field.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Union

import torch

from audio_ext.decoder.frame_model import (
    MODEL_FORMAT,
    MODEL_VERSION,
    DecoderModel,
    FrameInterpNet,
    ModelError,
    model_geometry,
)
from stylegan2.snapshot import SnapshotError, check_unpacked_size, first_non_finite, open_regular_file

PathLike = Union[str, Path]

#: Largest decoder-model file read, in bytes (the shipped model is 0.3 MB; "large" with its Adam
#: state about 1 MB).
MAX_FILE_BYTES = 64 * 2**20
#: Accepted range of each ``config`` entry (inclusive); ``dilations`` holds 1..16 values in its range.
CONFIG_LIMITS: Dict[str, tuple] = {"width": (1, 64), "body_width": (1, 256), "n_blocks": (1, 32),
                                   "dilations": (1, 64), "down": (1, 16)}
MAX_DILATIONS = 16


def _error(message: str) -> ModelError:
    return ModelError(message)


def read_model_file(path: PathLike) -> dict:
    """The checked plain-data dict of the decoder-model file ``path`` (see the module docstring)."""
    path = Path(path)
    try:
        with open_regular_file(path, what="decoder model") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise _error(f"{path}: {size:,} bytes, larger than any decoder model ({MAX_FILE_BYTES:,})")
            if f.read(4) != b"PK\x03\x04":
                raise _error(f"{path}: not a loadable decoder model (not a torch zip file)")
            check_unpacked_size(path, f, what="decoder model")
            f.seek(0)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    payload = torch.load(f, map_location="cpu", weights_only=True)
            except Exception as e:  # pickle refusals, truncation, damaged zips: all one line
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise _error(f"{path}: not a loadable decoder model ({type(e).__name__}: {first[:200]})") from None
    except SnapshotError as e:
        msg = str(e)
        if msg.endswith(": no such file"):
            msg = f"{path}: decoder model file not found"
        raise _error(msg) from None
    return check_model_payload(payload, path)


def load_decoder_model(path: PathLike) -> DecoderModel:
    """The decoder-model file ``path``, checked by :func:`read_model_file`, as a network ready to decode."""
    return DecoderModel(read_model_file(path), path)


def _check_int(where: str, key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _error(f"{where}: config {key} {value!r} is not an integer in {lo}..{hi}")
    return value


def check_config(config: Any, where: PathLike = "model") -> dict:
    """``config`` as FrameInterpNet's keyword arguments once every entry is within :data:`CONFIG_LIMITS`."""
    if not isinstance(config, dict):
        raise _error(f"{where}: model file has no 'config' entry")
    keys = set(CONFIG_LIMITS)
    if set(config) != keys:
        extra, missing = sorted(map(str, set(config) - keys)), sorted(keys - set(config))
        raise _error(f"{where}: config keys differ from a frame-interpolation model's "
                     f"(missing {missing or 'none'}, unknown {extra or 'none'})")
    out = {}
    for key, (lo, hi) in CONFIG_LIMITS.items():
        value = config[key]
        if key == "dilations":
            if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_DILATIONS:
                raise _error(f"{where}: config dilations must be a list of 1..{MAX_DILATIONS} integers")
            out[key] = tuple(_check_int(where, "dilations", d, lo, hi) for d in value)
        else:
            out[key] = _check_int(where, key, value, lo, hi)
    return out


def _non_finite_in(values: Any, prefix: str) -> Union[str, None]:
    """Key path (``prefix.…``) of the first NaN/inf tensor or float in ``values``, else None (the snapshot check)."""
    return first_non_finite({prefix: values})


def check_model_payload(payload: Any, where: PathLike = "model") -> dict:
    """``payload`` itself once it is a usable frame-interpolation model dict (module docstring);
    ModelError naming ``where`` otherwise. Used for files and for a snapshot's ``decoder_model``."""
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise _error(f"{where}: not an ElectroGAN frame-interpolation model (format "
                     f"{payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r})")
    version = payload.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MODEL_VERSION:
        raise _error(f"{where}: model file version {version!r} is not one this code reads "
                     f"(1..{MODEL_VERSION})")
    for key in ("geometry", "config", "state_dict", "stats"):
        if not isinstance(payload.get(key), dict):
            raise _error(f"{where}: model file has no {key!r} entry")
    model_geometry(payload, where)
    stats = payload["stats"]
    for key in ("mean", "std"):
        v = stats.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _error(f"{where}: stats {key} {v!r} is not a finite number")
    if stats["std"] <= 0:
        raise _error(f"{where}: stats std {stats['std']!r} must be > 0")
    config = check_config(payload["config"], where)
    stored = payload["state_dict"]
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in FrameInterpNet(**config).state_dict().items()}
    for k, shape in shapes.items():
        value = stored.get(k)
        if not isinstance(value, torch.Tensor):
            raise _error(f"{where}: model weights do not fit its configuration ({k} is missing)")
        if tuple(value.shape) != shape:
            raise _error(f"{where}: model weights do not fit its configuration ({k} is stored as "
                         f"{list(value.shape)}, the config declares {list(shape)})")
    unexpected = [k for k in stored if k not in shapes]
    if unexpected:
        raise _error(f"{where}: model weights do not fit its configuration ({unexpected[0]} is not in the network)")
    bad = _non_finite_in(stored, "state_dict") or (
        _non_finite_in(payload["optimizer"], "optimizer") if "optimizer" in payload else None)
    if bad:
        raise _error(f"{where}: {bad} holds NaN or infinite values")
    return payload
