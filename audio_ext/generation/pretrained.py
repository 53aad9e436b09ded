"""Shipped networks: ``--network pretrained:NAME`` and the export step that makes such a file.

A shipped network is a snapshot file (:mod:`stylegan2.snapshot`'s format, plain data read with
``weights_only=True`` and every snapshot check) that holds only what generation needs: ``G_ema``
(class, init_kwargs, state_dict), the ``audio`` block (geometry, dataset statistics, target_bpm),
the archive's ``decoder_model`` when training carried one, and a ``pretrained`` provenance record
(name, source snapshot, kimg, decoder method, notes), and ``cur_nimg``. Files live in ``audio_ext/generation/models/
<name>.pt`` and are at most :data:`MAX_BYTES`. Every CLI that takes ``--network`` passes it through
:func:`resolve_network`, so a shipped name works wherever a snapshot path does.
"""
from __future__ import annotations

import datetime
import io
import os
import re
from pathlib import Path
from typing import List, Optional, Union

import torch

PathLike = Union[str, os.PathLike]

PREFIX = "pretrained:"
#: Where the package keeps its shipped networks.
PRETRAINED_DIR = Path(__file__).resolve().parent / "models"
#: Largest shipped file, bytes (a package should stay small; G_ema of R = 128 is far below this).
MAX_BYTES = 25 * 1024 * 1024
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class PretrainedError(ValueError):
    """An unknown shipped name, or a network that cannot be exported; the message is one line."""


def known_names(folder: Optional[PathLike] = None) -> List[str]:
    """Names of the shipped networks in ``folder`` (default :data:`PRETRAINED_DIR`), sorted."""
    folder = Path(folder) if folder is not None else PRETRAINED_DIR
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.pt") if p.is_file() and NAME_RE.match(p.stem))


def is_pretrained(spec) -> bool:
    """True when ``spec`` is written ``pretrained:NAME``."""
    return isinstance(spec, str) and spec.startswith(PREFIX)


def resolve_network(spec: PathLike, folder: Optional[PathLike] = None) -> str:
    """The snapshot file ``spec`` names: ``pretrained:NAME`` -> the shipped file; anything else unchanged.

    An unknown name is one line listing the known ones, each written ``pretrained:NAME``.
    """
    if not is_pretrained(spec):
        return str(spec)
    name = spec[len(PREFIX):]
    folder = Path(folder) if folder is not None else PRETRAINED_DIR
    path = folder / f"{name}.pt"
    if NAME_RE.match(name) and path.is_file():
        return str(path)
    names = known_names(folder)
    known = ", ".join(PREFIX + n for n in names) if names else "none (no shipped network is installed)"
    raise PretrainedError(f"{spec}: unknown shipped network; known: {known}")


def export_pretrained(snapshot: PathLike, name: str, notes: str = "", folder: Optional[PathLike] = None,
                      overwrite: bool = False, max_bytes: int = MAX_BYTES) -> Path:
    """Write ``snapshot``'s G_ema (with its audio block and decoder model) as the shipped network ``name``.

    The file is built in memory, checked (plain data, finite weights, the audio block in range, at
    most ``max_bytes``) and then renamed into place, so a failed export leaves nothing behind and
    never replaces a good file; an existing ``name`` is refused unless ``overwrite``.
    """
    from audio_ext.core.geometry import StftGeometry, validate_audio_block
    from audio_ext.decoder.methods import LEARNED_METHOD, default_method
    from stylegan2.misc import atomic_write_bytes
    from stylegan2.snapshot import FORMAT_VERSION, SnapshotError, check_plain_data, check_snapshot_values, load_snapshot

    if not isinstance(name, str) or not NAME_RE.match(name):
        raise PretrainedError(f"--name {name!r}: use 1-64 lower-case letters, digits, '-' or '_'")
    folder = Path(folder) if folder is not None else PRETRAINED_DIR
    dest = folder / f"{name}.pt"
    if dest.exists() and not overwrite:
        raise PretrainedError(f"{dest}: already exists (pass --overwrite to replace it)")
    try:
        snap = load_snapshot(snapshot)
    except SnapshotError as e:
        raise PretrainedError(str(e)) from None
    source = Path(snapshot)
    if snap.get("G_ema") is None:
        raise PretrainedError(f"{source}: snapshot holds no G_ema")
    block = snap.get("audio")
    if not isinstance(block, dict):
        raise PretrainedError(f"{source}: snapshot has no 'audio' block, so it cannot make sound")
    try:
        validate_audio_block(block)
    except ValueError as e:
        raise PretrainedError(f"{source}: {e}") from None
    geometry = StftGeometry.from_dict(block)
    nimg = snap.get("cur_nimg")
    data = {
        "format_version": FORMAT_VERSION,
        "G_ema": snap["G_ema"],
        "audio": dict(block),
        "pretrained": {
            "name": name,
            "notes": str(notes),
            "source_snapshot": source.name,
            "kimg": round(nimg / 1000, 3) if isinstance(nimg, int) else None,
            "training_set": Path(str((snap.get("training_set_kwargs") or {}).get("path", ""))).name or None,
            "decoder": LEARNED_METHOD if snap.get("decoder_model") is not None else default_method(geometry),
            "exported_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }
    if snap.get("decoder_model") is not None:
        data["decoder_model"] = snap["decoder_model"]
    if isinstance(nimg, int):
        data["cur_nimg"] = nimg       # tools that label a network by its training length read this
    try:
        check_plain_data(data)
        check_snapshot_values(data, dest)
    except (TypeError, SnapshotError) as e:
        raise PretrainedError(f"{source}: {e}") from None
    buffer = io.BytesIO()
    torch.save(data, buffer)
    payload = buffer.getvalue()
    if len(payload) > max_bytes:
        raise PretrainedError(f"{source}: the exported network would be {len(payload) / 2**20:.1f} MiB, "
                              f"over the {max_bytes / 2**20:.0f} MiB limit for a shipped network")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dest, payload)
    return dest
