"""Audio files in and out: decode, resample, mix to mono, read in segments.

Every room reads audio through here, so that all of them accept the same files and report a bad
file the same way (:class:`AudioError`, one line naming the file). Rates in Hz, times in seconds.
"""
from __future__ import annotations

import errno
import io
import math
import os
import stat
import warnings
from pathlib import Path
from typing import Container, Dict, Iterator, Optional, Tuple

import numpy as np
import soundfile as sf

from stylegan2.misc import atomic_write_bytes

SEGMENT_SECONDS = 60.0
#: Peak level (full scale = 1) that louder generated audio is scaled down to before 16-bit conversion.
PEAK_LIMIT = 0.99
#: The largest 16-bit sample as a fraction of full scale: the peak of a decoded archive clip.
FULL_SCALE = 32767 / 32768


#: Extensions read as audio when a folder is scanned (case-insensitive).
AUDIO_EXTENSIONS = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff",
                              ".aifc", ".m4a", ".aac", ".wma", ".w64", ".rf64", ".caf", ".au", ".snd"})


class AudioError(ValueError):
    """A file cannot be used as audio; the message names the file and the problem on one line."""


# ---------------------------------------------------------------------------------------------
# Decoding and resampling
# ---------------------------------------------------------------------------------------------

def resample(audio: np.ndarray, orig_sr: int, sr: int) -> np.ndarray:
    """Resample mono float audio from ``orig_sr`` to ``sr`` Hz with a high-quality resampler.

    Uses soxr's HQ setting through librosa when the ``soxr`` package is present (librosa >= 0.10
    ships it), else scipy's polyphase ``resample_poly`` with a Kaiser window (beta 8.6).
    """
    orig_sr, sr = int(orig_sr), int(sr)
    if orig_sr == sr or audio.size == 0:
        return audio.astype(np.float32, copy=False)
    try:
        import librosa  # lazy: heavy: ~1 s to import (numba JIT); only this path needs it
        import soxr  # noqa: F401
        return librosa.resample(audio, orig_sr=orig_sr, target_sr=sr, res_type="soxr_hq").astype(np.float32)
    except ImportError:
        from scipy.signal import resample_poly  # lazy: scipy.signal costs ~0.3 s to import; only this path needs it
        g = math.gcd(orig_sr, sr)
        return resample_poly(audio, sr // g, orig_sr // g, window=("kaiser", 8.6)).astype(np.float32)


def _to_mono(block: np.ndarray) -> np.ndarray:
    return block.mean(axis=1) if block.ndim == 2 else block


def _check_samples(path, audio: np.ndarray) -> np.ndarray:
    if audio.size == 0:
        raise AudioError(f"{path}: contains no audio samples")
    if not np.isfinite(audio).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    return audio


def audio_file_problem(path) -> Optional[str]:
    """Why ``path`` cannot be opened as an audio file, in a few words, or None when it can.

    Checked before any decoder touches the file, because decoders word these cases badly
    (libsndfile says "System error" for a permission problem, ``is_file`` says "no such file" for
    a symlink loop) or block: opening a FIFO for reading waits for a writer forever. Only regular
    files (after following symlinks) are accepted; the open test is non-blocking.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop"
        if e.errno in (errno.EACCES, errno.EPERM):
            return "permission denied"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return "no such file"
        return f"cannot access ({e.strerror or e})"
    if not stat.S_ISREG(st.st_mode):
        for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                           (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
            if test(st.st_mode):
                return f"not a regular file ({kind})"
        return "not a regular file"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            return "permission denied"
        if e.errno == errno.ELOOP:
            return "symlink loop"
        return f"cannot open ({e.strerror or e})"
    os.close(fd)
    return None


def _check_file(path) -> None:
    """Raise :class:`AudioError` naming ``path`` when :func:`audio_file_problem` finds one."""
    problem = audio_file_problem(path)
    if problem is not None:
        raise AudioError(f"{path}: {problem}")


def audio_duration(path) -> float:
    """Duration of the file in seconds as the container reports it (0.0 when unknown or unusable)."""
    if audio_file_problem(path) is not None:
        return 0.0
    try:
        info = sf.info(str(path))
        return float(info.frames) / info.samplerate if info.samplerate else 0.0
    except Exception:
        try:
            import librosa  # lazy: heavy: ~1 s to import (numba JIT); only this path needs it
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return float(librosa.get_duration(path=str(path)))
        except Exception:
            return 0.0


def _librosa_load(path, sr: int, first_error: Optional[BaseException] = None) -> np.ndarray:
    """Fallback decoder: librosa.load (audioread/ffmpeg for formats libsndfile lacks).

    When it fails too, the error names soundfile's complaint (``first_error``), which is usually
    the informative one ("Format not recognised"), not audioread's "NoBackendError".
    """
    if Path(path).stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        import librosa  # lazy: heavy: ~1 s to import (numba JIT); only this path needs it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y, _ = librosa.load(str(path), sr=sr, mono=True, res_type="soxr_hq" if _has_soxr() else "polyphase")
    except Exception as e:  # audioread raises its own NoBackendError, not an OSError
        raise AudioError(f"{path}: not a readable audio file ({_short(first_error or e)})") from None
    return np.asarray(y, dtype=np.float32)


def _has_soxr() -> bool:
    try:
        import soxr  # noqa: F401
        return True
    except ImportError:
        return False


def _short(e: BaseException) -> str:
    """One line from an exception; libsndfile's own text without the "Error opening 'path':" prefix."""
    text = getattr(e, "error_string", None) or str(e)
    lines = text.strip().splitlines()
    return (lines[0].rstrip(".") if lines else type(e).__name__)[:200]


def load_audio(path, sr: int = 44100) -> np.ndarray:
    """Decode a whole file to float32 mono at ``sr`` Hz (channels averaged).

    soundfile (libsndfile: WAV, FLAC, OGG, MP3 from 1.1) is tried first, then librosa/audioread.
    Raises :class:`AudioError` for missing, unreadable, empty or non-finite audio.
    """
    path = Path(path)
    _check_file(path)
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
        audio = resample(_to_mono(data), file_sr, sr)
    except AudioError:
        raise
    except Exception as e:
        audio = _librosa_load(path, sr, e)
    return _check_samples(path, audio)


def iter_segments(path, sr: int = 44100, segment_seconds: float = SEGMENT_SECONDS,
                  only: Optional[Container[int]] = None) -> Iterator[Tuple[float, np.ndarray]]:
    """Yield ``(start_s, audio)`` for consecutive segments of a file, decoding one at a time.

    Streaming keeps memory at one segment even for a two-hour set (a whole set at 44.1 kHz would
    be over a gigabyte of float32). The last segment may be shorter. Each segment is resampled on
    its own; the few milliseconds of edge effect at segment borders do not matter because every
    segment is tracked and cut independently. Raises :class:`AudioError` as :func:`load_audio`.
    """
    path = Path(path)
    _check_file(path)
    if segment_seconds <= 0:
        raise ValueError(f"segment_seconds must be positive, got {segment_seconds!r}")
    try:
        f, first_error = sf.SoundFile(str(path)), None
    except Exception as e:
        f, first_error = None, e
    if f is None:  # libsndfile cannot open it: decode it whole with the fallback, then cut
        audio = _check_samples(path, _librosa_load(path, sr, first_error))
        n = int(round(segment_seconds * sr))
        for j, i in enumerate(range(0, audio.size, n)):
            if only is None or j in only:
                yield i / sr, audio[i:i + n]
        return
    with f:
        file_sr = f.samplerate
        n = int(round(segment_seconds * file_sr))
        start, any_samples, index = 0, False, -1
        total = f.frames
        while True:
            index += 1
            if only is not None and index not in only and f.seekable() and total > 0:
                if start + n >= total:
                    break
                start += n
                f.seek(start)
                any_samples = True
                continue
            try:
                block = f.read(n, dtype="float32", always_2d=True)
            except Exception as e:
                raise AudioError(f"{path}: decoding failed after {start / file_sr:.1f} s ({_short(e)})") from None
            if block.shape[0] == 0:
                break
            any_samples = True
            if only is None or index in only:
                yield start / file_sr, _check_samples(path, resample(_to_mono(block), file_sr, sr))
            start += block.shape[0]
            if block.shape[0] < n:
                break
        if not any_samples:
            raise AudioError(f"{path}: contains no audio samples")


def limit_peak(audio: np.ndarray, peak: float = PEAK_LIMIT) -> np.ndarray:
    """Scale down as a whole (never up, never clipped) so that ``max |audio| <= peak``: 16-bit files
    must not clip, and clipping would add distortion that is not in the reconstruction."""
    m = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio * (peak / m) if m > peak else audio


def write_audio(path, audio: np.ndarray, sample_rate: int, fmt: str = "wav", tags: Optional[Dict[str, str]] = None,
                peak: float = PEAK_LIMIT) -> None:
    """Mono 16-bit PCM WAV or FLAC with text tags (RIFF INFO / Vorbis comments via libsndfile).

    The one audio writer of the project: peaks above ``peak`` are scaled down (:func:`limit_peak`, in
    float64); the file is encoded in memory and written atomically, so a full disk is an OSError naming
    the file and never leaves half a file behind.
    """
    pcm = limit_peak(np.asarray(audio, np.float64), peak).astype(np.float32)
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=int(sample_rate), channels=1, subtype="PCM_16", format=fmt.upper()) as f:
        for key, value in (tags or {}).items():
            setattr(f, key, value)
        f.write(pcm)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:        # name the file asked for, not the temporary one beside it
        raise OSError(e.errno, e.strerror, str(path)) from None
