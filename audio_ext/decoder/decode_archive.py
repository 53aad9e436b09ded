"""Archive clips back to audio files: what ``python -m audio_ext decode`` does.

The images of an archive go through the codec and a phase-reconstruction method into 16-bit WAVs,
one per clip (``clip000042.wav``), to hear what the network is trained on. The decoder model is the
archive's own (``stft.decoder.pt`` beside it) unless the caller names another or ``none``
(:func:`audio_ext.decoder.archive_model.archive_decoder_choice`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from audio_ext.core.audio_io import FULL_SCALE, write_audio
from audio_ext.core.device import resolve_device
from audio_ext.core.seeds import parse_clip_range
from audio_ext.core.writable import creation_problem
from audio_ext.dataset.archive import ArchiveError
from audio_ext.dataset.archive_images import ArchiveImages
from audio_ext.decoder.archive_model import archive_decoder_choice
from audio_ext.decoder.methods import LEARNED_METHOD, METHODS, decode_audio, default_method, describe_method
from audio_ext.decoder.model_choice import DecoderChoice


def check_outdir(outdir) -> Path:
    """``outdir`` as a Path; ValueError naming it when it is a file or could not be created or written.

    Nothing is created here (the first WAV creates the folder), so a failed command leaves nothing.
    """
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise ValueError(f"{outdir}: --outdir is a file, not a folder")
    problem = creation_problem(outdir)
    if problem:
        raise ValueError(f"{outdir}: --outdir {problem}")
    return outdir


def decode_clips(data, clips: Union[str, Sequence[int]], outdir, method: Optional[str] = None, n_iter: Optional[int] = None,
                 device: Optional[str] = None, batch_size: int = 8,
                 log: Callable[[str], None] = print,
                 decoder_model: Optional[str] = None) -> Tuple[List[Path], Dict[str, str]]:
    """Decode the given clip indices of archive ``data`` into ``outdir``; returns (written paths, skipped name -> why).

    ``clips`` is a list of indices or a range text as ``--clips`` takes it (checked against the
    archive's size before it is expanded). ``decoder_model``: the model file of ``learned+pghi+fgla``,
    ``'none'`` for no learned decoder, or None: the archive's own ``<stem>.decoder.pt`` beside it
    when there is one, else ``$ELECTROGAN_DECODER_MODEL``, else the shipped model
    (:func:`audio_ext.decoder.archive_model.archive_decoder_choice`). Raises :class:`ArchiveError` for an
    unusable archive or an index past its last clip, :class:`audio_ext.decoder.frame_model.ModelError` for a named
    or side model that cannot decode this archive (before anything is written), ValueError for an
    unusable ``device`` or ``outdir``.
    """
    if method is not None and method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    dev = str(resolve_device(device))
    outdir = check_outdir(outdir)
    archive = ArchiveImages(data)
    try:
        if isinstance(clips, str):
            try:
                clips = parse_clip_range(clips, len(archive))
            except ValueError as e:
                raise ArchiveError(f"{archive.path}: {e}") from None
        bad = [i for i in clips if i >= len(archive)]
        if bad:
            raise ArchiveError(f"{archive.path}: clip {bad[0]} is out of range (the archive has {len(archive)} clips, "
                               f"0-{len(archive) - 1})")
        written: List[Path] = []
        skipped: Dict[str, str] = {}
        decoder = archive_decoder_choice(data, archive.codec.geometry, decoder_model)
        _decode_batches(archive, clips, outdir, method, n_iter, dev, batch_size, log, written, skipped, decoder)
        return written, skipped
    finally:
        archive.close()


def _decode_batches(archive: "ArchiveImages", clips: Sequence[int], outdir: Path, method: Optional[str],
                    n_iter: Optional[int], dev: str, batch_size: int, log: Callable[[str], None],
                    written: List[Path], skipped: Dict[str, str], decoder: DecoderChoice) -> None:
    """decode_clips' work once the decoder model is chosen: the clips in batches, WAVs written as they
    come (``written`` and ``skipped`` grow in place, so a failure midway keeps what was done)."""
    sr = archive.codec.geometry.sample_rate
    method = method or default_method(archive.codec.geometry, decoder)
    if method == LEARNED_METHOD:
        decoder.model_for(archive.codec.geometry)   # asked for without a model that fits: one line, before anything
    log(f"decoder: {describe_method(method, archive.codec.geometry, decoder)}")
    for start in range(0, len(clips), max(1, batch_size)):
        batch_idx, images = [], []
        for i in clips[start:start + batch_size]:
            try:
                images.append(archive.load(i))
                batch_idx.append(i)
            except ValueError as e:
                skipped[archive.images[i]] = str(e)
                log(f"skipped clip {i}: {e}")
        if not images:
            continue
        # random phases (PGHI's bins below its tolerance, random starts) seeded by the clip index: a clip
        # decodes to the same file on every run, whatever batch it shares
        audio = decode_audio(torch.from_numpy(np.stack(images)), archive.codec, method=method, n_iter=n_iter,
                             device=dev, generator=list(batch_idx), decoder=decoder).cpu().numpy()
        for i, y in zip(batch_idx, audio):
            path = outdir / f"clip{i:06d}.wav"
            write_audio(path, y, sr, peak=FULL_SCALE)
            written.append(path)
            log(f"wrote {path} ({archive.images[i]})")
