"""16-bit PCM WAV files written so that a failed write is an ordinary ``OSError``.

libsndfile reports a full disk as ``LibsndfileError`` ("System error" or an empty message), which
no caller recognises as a write error. Here the file is encoded in memory first (a clip is a few
MB) and written with Python's own file calls through :func:`stylegan2.misc.atomic_write_bytes`,
so a full disk, a read-only folder or a path under a file is an ``OSError`` with its ``errno``
and file name, and the destination holds either the complete new file or what it held before.
"""
from __future__ import annotations

import io

import numpy as np

from stylegan2.misc import PathLike, atomic_write_bytes


def pcm16_wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """A mono 16-bit PCM WAV of ``audio`` (float, full scale 1.0; clipped to the 16-bit range), no tags."""
    import soundfile as sf
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(audio, np.float32), -1.0, 32767 / 32768), int(sample_rate),
             subtype="PCM_16", format="WAV")
    return buf.getvalue()


def write_pcm16_wav(path: PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write :func:`pcm16_wav_bytes` to ``path`` atomically; a failed write raises ``OSError``."""
    atomic_write_bytes(path, pcm16_wav_bytes(audio, sample_rate))
