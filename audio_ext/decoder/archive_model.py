"""The decoder model that belongs to an archive: ``<archive stem>.decoder.pt`` beside it.

``dataset_tool_audio.py --train-decoder`` writes it (``stft.zip`` -> ``stft.decoder.pt``; an archive
folder ``stft/`` -> ``stft.decoder.pt`` beside the folder; :func:`audio_ext.decoder.frame_training.decoder_path_for_archive`
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

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Tuple, Union

from audio_ext.core.geometry import StftGeometry
from audio_ext.decoder import frame_model

PathLike = Union[str, Path]


def side_model_path(data: PathLike) -> Optional[Path]:
    """Where the decoder model of archive ``data`` (a zip or an archive folder) lies, whether or not it
    exists: ``stft.zip`` -> ``stft.decoder.pt``, ``runs/stft/`` -> ``runs/stft.decoder.pt``.

    ``.`` and ``..`` are made absolute first, so the folder's own name gives the stem; None for a
    path without a name (the file-system root), which has no place beside it.
    """
    from audio_ext.decoder.frame_training import decoder_path_for_archive
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
    payload = frame_model.check_payload(payload, where)
    frame_model.check_geometry(frame_model.model_geometry(payload, where), geometry, where)
    frame_model.build_model(payload, where)
    return payload


def read_model_for(path: PathLike, geometry: StftGeometry) -> dict:
    """The plain-data dict of model file ``path`` (read with ``weights_only=True``) once it is known to
    decode ``geometry`` (:func:`check_model_for`); ModelError (one line, naming ``path``) otherwise."""
    return check_model_for(frame_model.read_payload(path), geometry, path)


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


@contextlib.contextmanager
def archive_decoder_models(data: PathLike, geometry: StftGeometry,
                           decoder_model: Optional[PathLike] = None) -> Iterator[Optional[str]]:
    """Within the block, ``learned+pghi+fgla`` decodes the clips of archive ``data`` (of ``geometry``)
    with ``decoder_model`` when given (a file; ``'none'``: no learned decoder), else the model beside
    the archive (:func:`find_side_model`) when there is one, else the env/shipped choice; the previous
    choice comes back afterwards. Yields the label of the model in use (``'archive: stft.decoder.pt'``)
    or None when there is none.

    A named or side file that cannot be used for ``geometry`` is a one-line ModelError on entering
    (a named one prefixed ``--decoder-model:``). An env or shipped model of another geometry is not
    an error: the classic decoder is the default then, as everywhere else.
    """
    if decoder_model is None:
        found = find_side_model(data, geometry)
        ctx = (frame_model.decoder_models(snapshot=found[1], where=str(found[0]), source=frame_model.SOURCE_ARCHIVE)
               if found else frame_model.decoder_models())
    elif frame_model.is_no_model(decoder_model):
        ctx = frame_model.decoder_models(path=frame_model.NO_MODEL)
    else:
        try:
            read_model_for(decoder_model, geometry)
        except frame_model.ModelError as e:
            raise frame_model.ModelError(f"--decoder-model: {e}") from None
        ctx = frame_model.decoder_models(path=decoder_model)
    with ctx:
        yield frame_model.model_label()
