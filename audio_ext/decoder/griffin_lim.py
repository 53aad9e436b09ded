"""Griffin-Lim phase reconstruction and the STFT pair it runs on, in the archive geometry.

The archive keeps only ``|X|``, and at the thesis hop (n_fft/2, redundancy 2) phase retrieval is
the main loss of the round trip. :func:`griffin_lim` is Griffin & Lim (1984) alternating projections
with the momentum of fast Griffin-Lim (Perraudin, Balazs & Sondergaard 2013); ``momentum=0`` is the
classic algorithm. It runs in torch on the magnitude's device, batched over leading dimensions, so a
GPU decodes whole batches. :func:`griffin_lim_stored` is the same loop on the finer-hop STFT of the
learned method, with a re-estimated target (:func:`magnitude_target`). Starting phases come from
:mod:`audio_ext.decoder.pghi`; the named methods are in :mod:`audio_ext.decoder.methods`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Sequence, Union

import numpy as np
import torch

from audio_ext.core.geometry import StftGeometry
from audio_ext.core.stft import hann_window, stft
from audio_ext.decoder import gla_update

ArrayLike = Union[np.ndarray, torch.Tensor]

#: Where random phases come from: ``None`` (torch's global generator), one ``torch.Generator`` for the
#: whole batch, or a sequence with one entry per clip (flattened leading dimensions, C order), each a
#: ``torch.Generator`` or an integer seed. Per-clip entries make a clip's random start depend only on
#: its own entry, not on which other clips share the batch.
RandomSource = Union[None, torch.Generator, Sequence[Union[torch.Generator, int]]]

#: Time-frequency ratio of the Gaussian that best matches a Hann window of length L, as a
#: multiple of L^2 (Průša et al. 2017, Table I): lambda = 0.25645 * L^2 samples^2.
HANN_LAMBDA = 0.25645


# --- STFT pair in the archive geometry ----------------------------------------------------------

def _window(geometry: StftGeometry, like: torch.Tensor) -> torch.Tensor:
    return hann_window(geometry.n_fft, like)


def _stft(x: torch.Tensor, geometry: StftGeometry, window: torch.Tensor) -> torch.Tensor:
    """[B, T] -> complex [B, R+1, frames], centred frames with reflect padding (as the codec)."""
    return stft(x, geometry.n_fft, geometry.hop_length, pad_mode=geometry.pad_mode, window=window)


_ENVELOPES: Dict[tuple, torch.Tensor] = {}


def _envelope(geometry: StftGeometry, window: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Sum of squared windows at each sample of the overlap-add of ``n_frames`` frames (cached)."""
    key = (geometry.n_fft, geometry.hop_length, n_frames, window.dtype, str(window.device))
    env = _ENVELOPES.get(key)
    if env is None:
        k, hop = geometry.n_fft // geometry.hop_length, geometry.hop_length
        w2 = window.square().reshape(k, hop)
        env = torch.zeros(n_frames + k - 1, hop, dtype=window.dtype, device=window.device)
        for j in range(k):
            env[j:j + n_frames] += w2[j]
        env = env.reshape(-1)
        if len(_ENVELOPES) > 32:
            _ENVELOPES.clear()
        _ENVELOPES[key] = env
    return env


def _istft(spec: torch.Tensor, geometry: StftGeometry, window: torch.Tensor, length: int) -> torch.Tensor:
    """Least-squares inverse of :func:`_stft` (windowed overlap-add divided by the summed squared window).

    Complex [B, R+1, N] -> [B, length]; the same numbers as ``torch.istft(..., center=True)``, but since
    the hop divides n_fft the overlap-add is n_fft/hop shifted block sums, ~2.5x cheaper per call.
    """
    B, _, N = spec.shape
    n_fft, hop = geometry.n_fft, geometry.hop_length
    k = n_fft // hop
    frames = torch.fft.irfft(spec.transpose(-2, -1), n=n_fft) * window  # [B, N, n_fft]
    blocks = frames.reshape(B, N, k, hop)
    out = torch.zeros(B, N + k - 1, hop, dtype=frames.dtype, device=frames.device)
    for j in range(k):
        out[:, j:j + N] += blocks[:, :, j]
    start = n_fft // 2
    if start + length > out.shape[1] * hop:
        raise ValueError(f"{N} frames cannot give {length} samples")
    y = out.reshape(B, -1)[:, start:start + length]
    return y / _envelope(geometry, window, N)[start:start + length]


def _signal_length(geometry: StftGeometry, n_frames: int) -> int:
    """Samples of the clip whose centred STFT has ``n_frames`` frames (clip_samples for R+1 frames)."""
    return (n_frames - 1) * geometry.hop_length


def _as_mag(mag: ArrayLike, geometry: StftGeometry) -> tuple:
    """(tensor [B, R+1, N], leading shape, was_numpy) after validating the magnitude's shape."""
    was_numpy = isinstance(mag, np.ndarray)
    if was_numpy:
        t = torch.from_numpy(np.ascontiguousarray(mag))
    elif isinstance(mag, torch.Tensor):
        t = mag
    else:
        raise TypeError(f"magnitude must be a numpy array or a torch tensor, got {type(mag).__name__}")
    if t.is_complex() or not t.is_floating_point():
        raise TypeError(f"magnitude must be real floating point, got dtype {t.dtype}")
    if t.dim() < 2 or t.shape[-2] != geometry.n_bins or t.shape[-1] < 2:
        raise ValueError(f"magnitude shape {tuple(t.shape)} should be [..., {geometry.n_bins} bins, frames] "
                         f"for resolution {geometry.resolution}")
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    lead = t.shape[:-2]
    return t.reshape(-1, *t.shape[-2:]), lead, was_numpy


def _unit(z: torch.Tensor) -> torch.Tensor:
    """z / |z| with zeros mapped to 1 (phase 0)."""
    a = z.abs()
    return torch.where(a > 0, z / a.clamp_min(torch.finfo(a.dtype).tiny), torch.ones_like(z))


def _uniform(shape: tuple, source: RandomSource, dtype: torch.dtype, device: Union[str, torch.device]) -> torch.Tensor:
    """Uniform draws in [0, 1) of ``shape`` ``[B, ..]`` on ``device``, from ``source`` (see :data:`RandomSource`).

    With one generator the whole tensor is one draw. With a sequence, clip ``b`` gets
    ``torch.rand(shape[1:])`` from its own entry (an integer ``s`` becomes a generator on ``device``
    seeded with ``s``), so it equals what a batch of that clip alone would get from the same entry.
    """
    if source is None or isinstance(source, torch.Generator):
        drawn_on = source.device if source is not None else "cpu"
        return torch.rand(shape, generator=source, dtype=dtype, device=drawn_on).to(device)
    if isinstance(source, (str, bytes)) or not isinstance(source, Sequence):
        raise TypeError(f"generator must be None, a torch.Generator or a sequence of generators or seeds, "
                        f"got {type(source).__name__}")
    entries = list(source)
    if len(entries) != shape[0]:
        raise ValueError(f"{len(entries)} generators or seeds for a batch of {shape[0]} clips; give one per clip")
    parts = []
    for entry in entries:
        if isinstance(entry, torch.Generator):
            g = entry
        elif isinstance(entry, (int, np.integer)) and not isinstance(entry, bool):
            g = torch.Generator(device=device)
            g.manual_seed(int(entry))
        else:
            raise TypeError(f"per-clip random source must be a torch.Generator or an int seed, "
                            f"got {type(entry).__name__}")
        parts.append(torch.rand(shape[1:], generator=g, dtype=dtype, device=g.device).to(device))
    if not parts:
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.stack(parts)


# --- Griffin-Lim -----------------------------------------------------------------------------------

def _fgla(S: torch.Tensor, geometry: Any, c: torch.Tensor, n_iter: int, momentum: float, reestimate: float,
          fuse: bool) -> torch.Tensor:
    """``n_iter`` fast Griffin-Lim iterations from complex coefficients ``c [B, F, N]`` -> audio ``[B, T]``.

    Each iteration imposes ``S`` (``reestimate`` 0), or with ``reestimate`` > 0 the stored (even) frames'
    ``S`` and the odd frames re-estimated by :func:`magnitude_target`. On the CPU the update step runs as
    one fused pass (:mod:`audio_ext.decoder.gla_update`); ``fuse=False`` keeps the torch expression (same numbers
    up to float32 rounding).
    """
    window = _window(geometry, S)
    length = _signal_length(geometry, S.shape[-1])
    fused = gla_update.FusedUpdate(S, reestimate, momentum) if fuse and n_iter and gla_update.available(c) else None
    t_prev = None
    try:
        for _ in range(n_iter):
            t = _stft(_istft(c, geometry, window, length), geometry, window)
            if fused is not None:
                c = fused(t, t_prev if momentum else None)
            else:
                # t + alpha (t - t_prev) has the phase of t - alpha/(1+alpha) t_prev: one pass instead of three
                c = t if t_prev is None or momentum == 0 else torch.add(t, t_prev, alpha=-momentum / (1 + momentum))
                target = S if reestimate == 0 else magnitude_target(S, t, reestimate)
                c = target * torch.sgn(c)  # a coefficient that cancels exactly stays 0 for one iteration, as in librosa
            t_prev = t
        return _istft(c, geometry, window, length)
    finally:
        if fused is not None:
            fused.close()


def griffin_lim(mag: ArrayLike, geometry: StftGeometry, n_iter: int = 32, momentum: float = 0.99,
                init: Union[str, ArrayLike] = "random", generator: RandomSource = None, fuse: bool = True) -> ArrayLike:
    """Audio ``[.., (N-1) * hop]`` whose STFT magnitude approximates ``mag [.., R+1, N]``.

    Each of ``n_iter`` iterations is one inverse STFT and one STFT (the count librosa uses).
    ``momentum`` alpha extrapolates the consistent spectrum, ``c = t + alpha (t - t_prev)``, before the
    magnitude is imposed again (fast Griffin-Lim; 0 gives the classic algorithm, 0.99 the published
    setting). ``init`` is ``'random'`` (uniform phase, drawn from ``generator``: one generator, or one
    generator or seed per clip, see :data:`RandomSource`), ``'zeros'``, or a
    tensor/array of initial phases (radians) or of complex coefficients whose angle is used.
    Returns the same kind (numpy/torch) as ``mag``; tensors stay on their device. ``fuse=False`` keeps
    the update step in plain torch on the CPU too (otherwise one fused numba pass, ~2x faster per step).
    """
    if not isinstance(n_iter, int) or n_iter < 0:
        raise ValueError(f"griffin_lim: n_iter must be a non-negative integer, got {n_iter!r}")
    if not (0.0 <= momentum < 2.0):
        raise ValueError(f"griffin_lim: momentum must be in [0, 2), got {momentum!r}")
    S, lead, was_numpy = _as_mag(mag, geometry)
    cdtype = torch.complex128 if S.dtype == torch.float64 else torch.complex64
    if isinstance(init, str):
        if init == "random":
            u = _uniform(tuple(S.shape), generator, S.dtype, S.device)
            phase = torch.polar(torch.ones_like(S), 2 * math.pi * u)
        elif init == "zeros":
            phase = torch.ones_like(S, dtype=cdtype)
        else:
            raise ValueError(f"griffin_lim: init must be 'random', 'zeros' or an array of phases, got {init!r}")
    else:
        p = torch.as_tensor(init).to(S.device)
        if p.dim() < 2 or tuple(p.shape[-2:]) != tuple(S.shape[-2:]) or p.numel() != S.numel():
            raise ValueError(f"griffin_lim: init shape {tuple(p.shape)} does not match "
                             f"magnitude shape {tuple(lead) + tuple(S.shape[-2:])}")
        p = p.reshape(S.shape)
        phase = _unit(p.to(cdtype)) if p.is_complex() else torch.polar(torch.ones_like(S), p.to(S.dtype))
    y = _fgla(S, geometry, S * phase.to(cdtype), n_iter, momentum, 0.0, fuse)
    y = y.reshape(*lead, y.shape[-1])
    return y.detach().cpu().numpy() if was_numpy else y


@dataclasses.dataclass(frozen=True)
class HopGeometry:
    """The STFT layout phase retrieval needs (``n_fft``, ``hop_length``, bins), for hops that
    :class:`StftGeometry` does not describe (the hop/2 grid of the learned decoder)."""

    resolution: int
    n_fft: int
    hop_length: int
    pad_mode: str = "reflect"

    @property
    def n_bins(self) -> int:
        return self.resolution + 1


def fine_geometry(geometry: StftGeometry) -> HopGeometry:
    """The hop/2 grid of ``geometry``: same window and bins, twice the frames per second."""
    if geometry.hop_length % 2:
        raise ValueError(f"hop_length {geometry.hop_length} is odd; it has no hop/2 grid")
    return HopGeometry(geometry.resolution, geometry.n_fft, geometry.hop_length // 2, geometry.pad_mode)


#: How far the in-between frames' magnitudes move toward the consistent spectrum's in each iteration
#: of the learned decoder (0: the prediction is imposed as it is; 1: they are not constrained at all).
#: 0.5 measured ~0.1 dB better than 0 on held-out music (docs/audio.md).
REESTIMATE = 0.5


def magnitude_target(S_fine: torch.Tensor, consistent: torch.Tensor, reestimate: float = REESTIMATE) -> torch.Tensor:
    """Magnitudes imposed in one iteration of the learned decoder, ``[.., F, 2N-1]``.

    Even frames (the stored ones) are ``S_fine``'s, copied bit for bit; odd frames (predicted) are the
    geometric blend ``pred^(1-r) * |consistent|^r`` with ``r = reestimate``, i.e. the prediction
    re-estimated from what the current signal's STFT says.
    """
    if not 0.0 <= reestimate <= 1.0:
        raise ValueError(f"reestimate must be in [0, 1], got {reestimate!r}")
    T = S_fine.clone()
    if reestimate > 0:
        pred, cur = S_fine[..., 1::2], consistent[..., 1::2].abs().to(S_fine.dtype)
        if reestimate == 0.5:
            T[..., 1::2] = (pred * cur).sqrt_()  # the same blend, one root instead of two powers
        else:
            T[..., 1::2] = pred.pow(1 - reestimate) * cur.pow(reestimate)
    return T


def griffin_lim_stored(S_fine: torch.Tensor, fine: "HopGeometry", n_iter: int, momentum: float, init: torch.Tensor,
                       reestimate: float = REESTIMATE, fuse: bool = True) -> torch.Tensor:
    """Fast Griffin-Lim at hop/2 from complex ``init [B, F, 2N-1]``: the stored (even) frames' magnitudes
    are imposed exactly in every iteration, the predicted (odd) ones via :func:`magnitude_target`.

    On the CPU the update step runs as one fused pass (:mod:`audio_ext.decoder.gla_update`, ~3x faster per
    iteration); ``fuse=False`` forces the plain torch expression (same numbers up to float32 rounding).
    """
    cdtype = torch.complex128 if S_fine.dtype == torch.float64 else torch.complex64
    return _fgla(S_fine, fine, S_fine * _unit(init.to(cdtype)), n_iter, momentum, reestimate, fuse)
