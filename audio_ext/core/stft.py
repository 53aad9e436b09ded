"""The short-time Fourier transforms of the project, each spelled out once.

:func:`stft` is the torch STFT with a periodic Hann window that the codec, the decoders, the frame
model and the quality measures share (batched, on the input's device, in its precision).

:func:`stft_hann` is ``librosa.stft`` with a Hann window, bit for bit, in the layout that makes it fast (issue 13).

The beat tracker takes two STFTs of every one-minute segment (n_fft 2048 at hops of 512 and 256
samples: thousands of frames). librosa computes each frame's FFT along the strided axis of an
(n_fft, frames) view and in blocks, multiplies by a float64 window, transforms in float64 and
stores complex64. Doing the same steps on contiguous rows (frames, n_fft) gives the same numbers
and is several times faster; ``n_bins`` keeps only the lowest bins (the kick salience needs the
38 below 800 Hz, not 1025), which saves the float64 -> complex64 cast and every later pass over the
rest. Padding: zeros, ``n_fft // 2`` on both sides (librosa >= 0.10's ``center=True``,
``pad_mode='constant'``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch


def hann_window(n_fft: int, like: torch.Tensor) -> torch.Tensor:
    """Periodic Hann window of ``n_fft`` samples on ``like``'s device: float64 for float64 or complex128
    input, else float32."""
    dtype = torch.float64 if like.dtype in (torch.float64, torch.complex128) else torch.float32
    return torch.hann_window(n_fft, periodic=True, dtype=dtype, device=like.device)


def stft(x: torch.Tensor, n_fft: int, hop_length: int, center: bool = True, pad_mode: str = "reflect",
         window: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Complex STFT ``[.., n_fft // 2 + 1, frames]`` of ``x`` ``[.., T]`` (a periodic Hann window of
    ``n_fft`` samples, :func:`hann_window`, unless ``window`` is given). ``center=True`` pads ``n_fft // 2``
    samples on both sides with ``pad_mode`` (reflect: the codec's choice, docs/contract.md)."""
    if window is None:
        window = hann_window(n_fft, x)
    return torch.stft(x, n_fft=n_fft, hop_length=hop_length, win_length=n_fft, window=window, center=center,
                      pad_mode=pad_mode, return_complex=True)


def stft_hann(audio: np.ndarray, n_fft: int = 2048, hop_length: int = 512,
              n_bins: Optional[int] = None) -> np.ndarray:
    """Complex64 STFT ``[bins, frames]`` of float32 mono ``audio``, equal to ``librosa.stft(audio, n_fft=n_fft,
    hop_length=hop_length)`` (periodic Hann window, centred frames, zero padding) in its first ``n_bins`` rows.

    ``n_bins`` defaults to all ``n_fft // 2 + 1``. The result is a transposed view of a C-ordered
    array, so its strides match librosa's Fortran-ordered output (later BLAS calls see the same layout).
    """
    import librosa  # lazy: heavy: ~1 s to import (numba JIT); only this path needs it
    y = np.asarray(audio, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"stft_hann: expected mono audio (1-D), got shape {y.shape}")
    half = n_fft // 2
    if y.size < n_fft:  # librosa warns and pads; keep its exact behaviour for the odd short input
        out = librosa.stft(y, n_fft=n_fft, hop_length=hop_length)
        return out if n_bins is None else out[:n_bins]
    n_bins = half + 1 if n_bins is None else int(n_bins)
    window = librosa.filters.get_window("hann", n_fft, fftbins=True)  # float64, as librosa uses it
    padded = np.pad(y, (half, half), mode="constant")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    n_frames = frames.shape[0]
    out = np.empty((n_frames, n_bins), dtype=np.complex64)
    block = max(1, (1 << 24) // (n_fft * 8))  # ~16 MB of float64 frames at a time
    for s in range(0, n_frames, block):
        spec = np.fft.rfft(window * frames[s:s + block], axis=1)
        out[s:s + block] = spec[:, :n_bins]
    return out.T
