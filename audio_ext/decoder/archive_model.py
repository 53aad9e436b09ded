"""The decoder model that belongs to an archive: ``<archive stem>.decoder.pt`` beside it.

``dataset_tool_audio.py --train-decoder`` writes it (``stft.zip`` -> ``stft.decoder.pt``; an archive
folder ``stft/`` -> ``stft.decoder.pt`` beside the folder; :func:`decoder_path_for_archive`
is the one naming rule). Two readers find it through :func:`side_model_path`:

* ``train.py --data stft.zip`` stores it in every snapshot (the snapshot key ``decoder_model``; a
  run continued with ``--resume`` keeps the model its snapshot carries instead, so one run never
  switches decoders because this file changed);
* ``python -m audio_ext decode --data stft.zip`` decodes the archive's clips with it.

When an archive is decoded the model is chosen by this precedence: ``--decoder-model FILE`` (or
``none``: no learned decoder) > the file beside the archive > ``$ELECTROGAN_DECODER_MODEL`` > the
shipped model (:mod:`audio_ext.decoder.frame_model`); pages and logs label it ``archive: stft.decoder.pt``. A file
beside the archive, or a named one, that cannot be read or was trained for another geometry is a
one-line :class:`~audio_ext.decoder.frame_model.ModelError` naming the file, raised before anything is decoded:
it is never passed over for another model.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Tuple, Union

from audio_ext.core.geometry import StftGeometry
from audio_ext.decoder import frame_model
from audio_ext.decoder.model_choice import SOURCE_ARCHIVE, DecoderChoice, choose_decoder_model, is_no_model
from audio_ext.decoder.model_file import check_model_payload, read_model_file

PathLike = Union[str, Path]


def decoder_path_for_archive(dest: PathLike) -> Path:
    """Where the dataset tool stores an archive's own decoder model: ``stft.zip`` -> ``stft.decoder.pt``."""
    dest = Path(dest)
    stem = dest.name[:-4] if dest.name.lower().endswith(".zip") else dest.name
    return dest.with_name(f"{stem}.decoder.pt")


def side_model_path(data: PathLike) -> Optional[Path]:
    """Where the decoder model of archive ``data`` (a zip or an archive folder) lies, whether or not it
    exists: ``stft.zip`` -> ``stft.decoder.pt``, ``runs/stft/`` -> ``runs/stft.decoder.pt``.

    ``.`` and ``..`` are made absolute first, so the folder's own name gives the stem; None for a
    path without a name (the file-system root), which has no place beside it.
    """
    path = Path(data)
    if path.name in ("", ".", ".."):
        path = Path(os.path.abspath(path))
        if not path.name:
            return None
    return decoder_path_for_archive(path)


def check_model_for(payload: Any, geometry: StftGeometry, where: PathLike) -> dict:
    """``payload`` once it is a frame-interpolation model dict trained for ``geometry`` whose weights fit
    the configuration it declares; ModelError (one line, naming ``where``) otherwise. For a model read
    from a file and for the one a snapshot carries (``where`` = ``'<snapshot>: decoder_model'``)."""
    payload = check_model_payload(payload, where)
    frame_model.check_geometry(frame_model.model_geometry(payload, where), geometry, where)
    frame_model.build_model(payload, where)
    return payload


def read_model_for(path: PathLike, geometry: StftGeometry) -> dict:
    """The plain-data dict of model file ``path`` (read with ``weights_only=True``) once it is known to
    decode ``geometry`` (:func:`check_model_for`); ModelError (one line, naming ``path``) otherwise."""
    return check_model_for(read_model_file(path), geometry, path)


def find_side_model(data: PathLike, geometry: StftGeometry) -> Optional[Tuple[Path, dict]]:
    """``(path, model dict)`` of the decoder model beside archive ``data``, checked for ``geometry``
    (:func:`read_model_for`); None when there is no such file.

    Something at that path that is not a readable model of that geometry (a folder, a dangling link,
    a truncated or foreign file, another resolution) is a one-line ModelError naming it.
    """
    path = side_model_path(data)
    if path is None or not (path.exists() or path.is_symlink()):
        return None
    hint = "it lies beside the archive, so it is used by default; --decoder-model FILE or none overrides it"
    if not path.is_file():
        raise frame_model.ModelError(f"{path}: not a decoder model file ({hint})")
    try:
        return path, read_model_for(path, geometry)
    except frame_model.ModelError as e:
        raise frame_model.ModelError(f"{e} ({hint})") from None


def archive_decoder_choice(data: PathLike, geometry: StftGeometry,
                           decoder_model: Optional[PathLike] = None) -> DecoderChoice:
    """The decoder model for the clips of archive ``data`` (of ``geometry``): ``decoder_model`` when given
    (a file; ``'none'``: no learned decoder), else the model beside the archive (:func:`find_side_model`)
    when there is one, else the environment's or the shipped one (:func:`choose_decoder_model`). Its
    ``label`` reads ``'archive: stft.decoder.pt'`` for the side file.

    A named or side file that cannot be used for ``geometry`` is a one-line ModelError (a named one
    prefixed ``--decoder-model:``). An env or shipped model of another geometry is not an error: the
    classic decoder is the default then, as everywhere else.
    """
    if decoder_model is None:
        found = find_side_model(data, geometry)
        if found is None:
            return choose_decoder_model()
        return choose_decoder_model(carried=found[1], where=str(found[0]), source=SOURCE_ARCHIVE)
    if not is_no_model(decoder_model):
        try:
            read_model_for(decoder_model, geometry)
        except frame_model.ModelError as e:
            raise frame_model.ModelError(f"--decoder-model: {e}") from None
    return choose_decoder_model(flag=decoder_model)


def run_decoder_model(data: PathLike, block: Optional[dict], flag: Optional[PathLike] = None,
                      resumed: Optional[Tuple[str, Optional[dict]]] = None) -> Tuple[Optional[str], Optional[dict]]:
    """(description, plain-data dict) of the decoder model that the snapshots of a training run on
    archive ``data`` (its audio ``block``) carry; the dict is None when they carry none (the description
    then says why, or is None when there is nothing to say).

    The precedence of :func:`~audio_ext.decoder.model_choice.choose_decoder_model` without its fallbacks
    (a snapshot never carries the environment's or the shipped model): ``flag`` (``--decoder-model``;
    ``'none'``: no model) > the carried model, which is the resumed snapshot's (``resumed`` = (snapshot
    path, its ``decoder_model`` or None): a resumed run never switches decoders because the file beside
    the archive changed) or else :func:`find_side_model`'s. Every model must fit ``block``: a mismatch
    is a one-line ModelError now, not a snapshot that generation cannot use.
    """
    if flag is not None and is_no_model(flag):
        return None, None
    geometry = StftGeometry.from_dict(block) if block else None
    if flag is None and resumed is not None:
        path, payload = resumed
        side = side_model_path(data)
        switch = (f"; {side} beside --data is not read: --decoder-model {side} switches to it"
                  if side is not None and side.exists() else "")
        if payload is None:
            return (f"none: {path} carries none and the resumed run keeps that{switch}" if switch else None), None
        where = f"{path}: decoder_model"
        if geometry is None:
            raise frame_model.ModelError(f"{where}: {data} has no audio block, so a decoder model has nothing to decode")
        check_model_for(payload, geometry, where)
        return f"the resumed snapshot's (kept on resume{switch})", payload
    if flag is None:
        side = side_model_path(data)
        if side is None or not (side.exists() or side.is_symlink()):
            return None, None
        if geometry is None:
            raise frame_model.ModelError(f"{side} (found beside --data): {data} has no audio block, so a decoder "
                                         f"model has nothing to decode")
        found = find_side_model(data, geometry)
        return str(found[0]), found[1]
    if geometry is None:
        raise frame_model.ModelError(f"--decoder-model {flag}: {data} has no audio block, so a decoder model has "
                                     f"nothing to decode")
    try:
        return str(flag), read_model_for(flag, geometry)
    except (frame_model.ModelError, ValueError) as e:
        raise frame_model.ModelError(f"--decoder-model {flag}: {e}") from None
