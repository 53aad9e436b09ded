"""How close a reconstruction is to the original audio, in a separate finer reference STFT.

The analysis STFT itself rewards satisfying fewer constraints, so both measures use their own
(n_fft=2048, hop=256 by default; see docs/audio.md). Results in dB.
"""
from __future__ import annotations

import numpy as np
import torch

from audio_ext.core.stft import stft
from audio_ext.decoder.griffin_lim import ArrayLike

# --- quality measures ------------------------------------------------------------------------------

def _ref_mag(x: ArrayLike, n_fft: int, hop: int) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x).to(torch.float64)
    t = t.reshape(-1, t.shape[-1])
    return stft(t, n_fft, hop).abs()


def _scaled_pair(reference: ArrayLike, estimate: ArrayLike, n_fft: int, hop: int) -> tuple:
    R = _ref_mag(reference, n_fft, hop)
    E = _ref_mag(estimate, n_fft, hop)
    if R.shape != E.shape:
        raise ValueError(f"reference and estimate differ in shape: {tuple(R.shape)} vs {tuple(E.shape)}")
    dims = (-2, -1)
    gain = (R * E).sum(dims, keepdim=True) / (E * E).sum(dims, keepdim=True).clamp_min(1e-300)
    return R, gain * E


def spectral_convergence_db(reference: ArrayLike, estimate: ArrayLike, n_fft: int = 2048, hop: int = 256) -> np.ndarray:
    """Scale-invariant spectral convergence per clip in dB (lower is better), in a reference STFT.

    ``20 log10(|| |R| - g |E| ||_F / || |R| ||_F)`` with Hann STFT magnitudes of ``n_fft`` samples and
    hop ``hop`` (defaults: the fixed 2048/256 reference), and ``g`` the least-squares gain, so a
    louder or quieter reconstruction is not penalised. Inputs ``[.., T]``; returns one value per clip.
    """
    R, E = _scaled_pair(reference, estimate, n_fft, hop)
    num = torch.linalg.vector_norm(R - E, dim=(-2, -1))
    den = torch.linalg.vector_norm(R, dim=(-2, -1)).clamp_min(1e-300)
    return (20 * torch.log10(num / den)).cpu().numpy()


def log_spectral_distance(reference: ArrayLike, estimate: ArrayLike, n_fft: int = 2048, hop: int = 256,
                          floor_db: float = -100.0) -> np.ndarray:
    """Log-spectral distance per clip in dB: the RMS over bins of ``10 log10(P_ref / P_est)``, averaged
    over frames, after the least-squares gain; powers are floored ``floor_db`` below the reference peak."""
    R, E = _scaled_pair(reference, estimate, n_fft, hop)
    P, Q = R.square(), E.square()
    floor = P.amax(dim=(-2, -1), keepdim=True) * 10 ** (floor_db / 10)
    d = 10 * torch.log10(torch.maximum(P, floor) / torch.maximum(Q, floor))
    return d.square().mean(dim=-2).sqrt().mean(dim=-1).cpu().numpy()
