"""Hearing an archive clip: the source audio it was cut from, and its round trip through the codec.

:func:`original_clip` cuts the source exactly as the dataset tool did: at the clip record's
``clip_start_s`` (source seconds), stretched by its ``stretch_ratio`` with phase resets on the same
beats (``source_bpm``, ``first_beat_s``), so the original and the archive image line up sample for
sample (correlation above 0.95 with the tool's own clip, tests/test_survey_make.py).
:func:`write_pairs` writes, for the first clips of each source, the original next to the decoded
image with its spectrogram and returns the listening-page entries (``make demo`` uses it).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from audio_ext.core.audio_io import FULL_SCALE, load_audio, resample, write_audio
from audio_ext.dataset.archive import read_dataset_json
from audio_ext.dataset.archive_images import ArchiveImages
from audio_ext.dataset.stretch import time_stretch
from audio_ext.decoder import methods
from audio_ext.decoder.archive_model import archive_decoder_choice
from audio_ext.decoder.model_choice import DecoderChoice
from audio_ext.generation.page import ClipEntry
from audio_ext.survey.loudness import normalise_set


class OriginalError(ValueError):
    """The original of a clip cannot be cut (record incomplete, source too short); one line."""


def _read_excerpt(path: Path, start_s: float, seconds: float, sr: int) -> np.ndarray:
    """Mono float32 audio of ``path`` from ``start_s`` for ``seconds`` (source time), at ``sr`` Hz."""

    try:
        with sf.SoundFile(str(path)) as f:
            f.seek(min(int(round(start_s * f.samplerate)), f.frames))
            block = f.read(int(math.ceil(seconds * f.samplerate)), dtype="float32", always_2d=True)
            file_sr = f.samplerate
        return resample(block.mean(axis=1), file_sr, sr)
    except (RuntimeError, sf.LibsndfileError):  # a format libsndfile cannot seek (e.g. mp3): load it whole
        audio = load_audio(path, sr)
        a = int(round(start_s * sr))
        return audio[a:a + int(math.ceil(seconds * sr))]


def original_clip(path: Path, record: dict, sr: int, clip_samples: int, stretcher: str = "auto",
                  margin_s: float = 0.5) -> np.ndarray:
    """The source audio of one archive clip: ``clip_samples`` at ``sr`` Hz, cut where the clip record
    says (``clip_start_s``, source seconds) and stretched by its ``stretch_ratio``.

    ``margin_s`` of context either side is stretched too and then cut off, so the stretcher's edge
    effects stay outside the clip.
    """
    try:
        ratio = float(record["stretch_ratio"])
        start = float(record["clip_start_s"])
    except (KeyError, TypeError, ValueError):
        raise OriginalError(f"clip record {record.get('file', '?')} lacks clip_start_s or stretch_ratio") from None
    a0 = max(0.0, start - margin_s)
    seconds = (start - a0) + clip_samples / sr / ratio + margin_s
    audio = _read_excerpt(path, a0, seconds, sr)
    # the dataset tool's stretcher resets phases on the tracked beats; give it the same beats
    beats: Sequence[float] = ()
    if all(k in record for k in ("source_bpm", "first_beat_s", "segment_start_s")):
        period = 60.0 / float(record["source_bpm"])
        first = float(record["segment_start_s"]) + float(record["first_beat_s"]) - a0
        first -= math.floor(first / period) * period
        beats = first + period * np.arange(int(seconds / period) + 1)
    stretched, _ = time_stretch(audio, sr, ratio, stretcher, beats=beats)
    off = int(round((start - a0) * sr * ratio))
    clip = stretched[off:off + clip_samples]
    if clip.size < clip_samples * 0.99:
        raise OriginalError(f"{path}: the source ends before the clip at {start:.2f} s does "
                            f"(is this the audio the archive was built from?)")
    return np.pad(clip, (0, clip_samples - clip.size)).astype(np.float32)


def decoder_name(method: Optional[str], geometry=None, decoder: Optional[DecoderChoice] = None) -> str:
    """The name of the decoder used: ``method`` (checked) or the audio layer's default for ``geometry``.

    With ``method=None`` the decoding calls pass no method at all, so whatever the library makes
    its default (e.g. a learned decoder when a model for the geometry is installed) is what
    listeners hear; the name comes from ``methods.default_method(geometry)``.
    """
    if method is None:
        return methods.default_method(geometry, decoder)
    if method not in methods.METHODS:
        raise ValueError(f"--method {method!r} is not a decoder; known: {', '.join(methods.METHODS)}")
    return method


def write_pairs(data, source, outdir, per_source: int = 1, method: Optional[str] = None, subdir: str = "full",
                log: Callable[[str], None] = print) -> List[ClipEntry]:
    """For the first ``per_source`` clips of every source file of archive ``data``: write the original
    (cut from the ``source`` folder) and the round trip through the codec and the decoder ``method``
    (None: the library's default) as 16-bit WAVs, plus the archive image as PNG, into
    ``outdir/subdir``; return page entries (paths relative to ``outdir``), original first.

    Both clips of a pair are brought to one RMS level (:func:`audio_ext.survey.loudness.normalise_set`;
    the codec's 3-sigma clipping makes the round trip a few dB quieter), so level does not decide
    the comparison. The round trip decodes with the archive's own model (``stft.decoder.pt`` beside
    it) when it has one, as ``python -m audio_ext decode`` does (audio_ext.decoder.archive_model); one that
    cannot decode the archive is a ModelError naming it, raised before anything is written.
    """
    kwargs = {} if method is None else {"method": method}  # None: whatever the library's default is
    archive = ArchiveImages(data)
    try:
        decoder = archive_decoder_choice(data, archive.codec.geometry)
        records = read_dataset_json(data).get("clips") or []
        by_file = {r.get("file"): r for r in records if isinstance(r, dict)}
        g = archive.codec.geometry
        method = decoder_name(method, g, decoder)
        label = methods.describe_method(method, g, decoder)     # the learned one says which model: [archive: stft.decoder.pt]
        taken: dict = {}
        entries: List[ClipEntry] = []
        folder = Path(outdir) / subdir
        folder.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(archive.images):
            rec = by_file.get(name, {})
            src = rec.get("source")
            if src is None or taken.get(src, 0) >= per_source:
                continue
            taken[src] = taken.get(src, 0) + 1
            stem = Path(src).stem + (f"-{taken[src]}" if per_source > 1 else "")
            image = np.array(archive.load(i))
            log(f"{src} at {float(rec['clip_start_s']):.2f} s: original and round trip ({method})")
            original = original_clip(Path(source) / src, rec, g.sample_rate, g.clip_samples)
            y = methods.decode_audio(image, archive.codec, generator=[torch.Generator().manual_seed(i)], decoder=decoder,
                                     **kwargs)
            original, roundtrip = normalise_set([original, np.asarray(y).reshape(-1)], target_dbfs=-18.0)[0]
            write_audio(folder / f"{stem}-original.wav", original, g.sample_rate, peak=FULL_SCALE)
            write_audio(folder / f"{stem}-roundtrip.wav", roundtrip, g.sample_rate, peak=FULL_SCALE)
            Image.fromarray(image, mode="L").save(folder / f"{stem}.png")
            seconds = g.clip_samples / g.sample_rate
            bpm = float(rec["source_bpm"]) / float(rec["stretch_ratio"]) if "source_bpm" in rec else None
            common = dict(image=f"{subdir}/{stem}.png", bpm=bpm, seconds=seconds)
            entries.append(ClipEntry(title=f"{src}: original", audio=f"{subdir}/{stem}-original.wav",
                                     kind=f"source at {float(rec['clip_start_s']):.2f} s, stretched "
                                          f"x{float(rec['stretch_ratio']):.4f} as in the archive", **common))
            entries.append(ClipEntry(title=f"{src}: codec + {method}", audio=f"{subdir}/{stem}-roundtrip.wav",
                                     kind=f"archive image (R={g.resolution}) decoded with {label}", **common))
        return entries
    finally:
        archive.close()
