"""Phase reconstruction: turn the STFT magnitudes of decoded images back into audio.

The archive keeps only ``|X|``, and at the thesis hop (n_fft/2, redundancy 2) phase retrieval is
the main loss of the round trip. Three building blocks, all batched over leading dimensions:

* :func:`griffin_lim` — Griffin & Lim (1984) alternating projections, with the momentum of fast
  Griffin-Lim (Perraudin, Balazs & Søndergaard 2013); ``momentum=0`` is the classic algorithm.
  Runs in torch on the magnitude's device, so a GPU decodes whole batches.
* :func:`pghi` — phase-gradient heuristic integration (Průša, Balazs & Søndergaard, IEEE/ACM TASLP
  25(5), 2017): phase derivatives estimated from the log-magnitude as if the Hann window were a
  Gaussian of equal time-frequency spread, integrated outward from the loudest coefficients.
  Non-iterative and a far better start for Griffin-Lim than random phase.
* :func:`reconstruct` with the named :data:`METHODS`; :func:`decode_audio` goes from archive or
  generator images straight to audio.

Quality helpers (:func:`spectral_convergence_db`, :func:`log_spectral_distance`) measure a
reconstruction against the original audio in a separate, finer reference STFT, because the analysis
STFT itself rewards satisfying fewer constraints (see docs/audio.md).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from . import gla_update
from .codec import AudioCodec, decode_magnitude
from .geometry import StftGeometry

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
    dtype = torch.float64 if like.dtype in (torch.float64, torch.complex128) else torch.float32
    return torch.hann_window(geometry.n_fft, periodic=True, dtype=dtype, device=like.device)


def _stft(x: torch.Tensor, geometry: StftGeometry, window: torch.Tensor) -> torch.Tensor:
    """[B, T] -> complex [B, R+1, frames], centred frames with reflect padding (as the codec)."""
    return torch.stft(x, n_fft=geometry.n_fft, hop_length=geometry.hop_length, win_length=geometry.n_fft,
                      window=window, center=True, pad_mode=geometry.pad_mode, return_complex=True)


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
    one fused pass (:mod:`audio_ext.gla_update`); ``fuse=False`` keeps the torch expression (same numbers
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


# --- PGHI ------------------------------------------------------------------------------------------

def _phase_derivatives(mag: np.ndarray, geometry: StftGeometry, tol: float, peak: Optional[float] = None) -> tuple:
    """Per-frame and per-bin phase increments (radians) of one magnitude ``[R+1, N]`` (float64); ln|X| is
    floored at ``tol`` times ``peak`` (default: the loudest of ``mag``).

    With s = ln|X| and the Gaussian equivalent lambda = 0.25645 L^2 (L = n_fft samples), hop a and
    M = n_fft bins per cycle, the phase-locked (window-centred) STFT of a Gaussian satisfies
    d(phi)/dt = 2 pi m / M + (M / lambda) ds/dm per sample and d(phi)/dm = -(lambda / (a M)) ds/dn
    (Průša et al. 2017). torch/librosa frames start n_fft/2 before their centre, which multiplies
    bin m by (-1)^m: the per-bin increment gains -pi.
    """
    a, M = geometry.hop_length, geometry.n_fft
    lam = HANN_LAMBDA * M * M
    peak = float(mag.max()) if peak is None else float(peak)
    floor = peak * tol if peak > 0 else 1.0
    s = np.log(np.maximum(mag, floor))
    ds_dm = np.zeros_like(s)
    ds_dm[1:-1] = (s[2:] - s[:-2]) / 2  # DC and Nyquist: 0 by the symmetry of a real signal's spectrum
    ds_dn = np.gradient(s, axis=1) if s.shape[1] > 1 else np.zeros_like(s)
    m = np.arange(s.shape[0], dtype=np.float64)[:, None]
    dphi_t = a * (2 * np.pi * m / M + (M / lam) * ds_dm)
    dphi_f = -(lam / (a * M)) * ds_dn - np.pi
    return dphi_t, dphi_f


#: Loudness levels of the bucket queue that orders the integration (see :func:`_integrate`).
N_LEVELS = 4096


def _integrate(levels, order, dphi_t, dphi_f, phase, done, n_levels):  # compiled by numba when available
    """Heap integration of Průša et al. 2017 (Algorithm 1) with a bucket queue instead of a heap.

    ``levels`` (flat, C order) is each coefficient's log-magnitude quantised to ``n_levels`` steps;
    ``order`` lists the coefficients loudest level first. The loudest known coefficient is always
    expanded next: its four neighbours in time and frequency get their phase by trapezoidal
    integration of ``dphi_t`` (radians per frame) or ``dphi_f`` (radians per bin). When the queue
    runs dry, the loudest untouched coefficient starts a new island with phase 0. Within one level
    the last pushed comes first. Every operation is O(1), so a 1025 x 1025 clip takes ~0.1 s compiled.
    ``phase`` is filled in place where ``done`` is False and returned.
    """
    F, N = phase.shape
    head = np.full(n_levels, -1, dtype=np.int32)  # 32-bit links: half the memory traffic of the queue
    nxt = np.empty(F * N, dtype=np.int32)
    top = -1
    size = 0
    pos = 0
    remaining = 0
    for m in range(F):
        for n in range(N):
            if not done[m, n]:
                remaining += 1
    while remaining > 0:
        if size == 0:  # start a new island at the loudest coefficient not yet reached
            while done[order[pos] // N, order[pos] % N]:
                pos += 1
            i = order[pos]
            done[i // N, i % N] = True
            phase[i // N, i % N] = 0.0
            remaining -= 1
            lev = levels[i]
            nxt[i] = head[lev]
            head[lev] = i
            size += 1
            if lev > top:
                top = lev
        while head[top] < 0:
            top -= 1
        i = head[top]
        head[top] = nxt[i]
        size -= 1
        m = i // N
        n = i - m * N
        p = phase[m, n]
        for k in range(4):
            if k == 0:
                mm, nn = m, n + 1
            elif k == 1:
                mm, nn = m, n - 1
            elif k == 2:
                mm, nn = m + 1, n
            else:
                mm, nn = m - 1, n
            if mm < 0 or mm >= F or nn < 0 or nn >= N or done[mm, nn]:
                continue
            if k == 0:
                phase[mm, nn] = p + 0.5 * (dphi_t[m, n] + dphi_t[mm, nn])
            elif k == 1:
                phase[mm, nn] = p - 0.5 * (dphi_t[m, n] + dphi_t[mm, nn])
            elif k == 2:
                phase[mm, nn] = p + 0.5 * (dphi_f[m, n] + dphi_f[mm, nn])
            else:
                phase[mm, nn] = p - 0.5 * (dphi_f[m, n] + dphi_f[mm, nn])
            done[mm, nn] = True
            remaining -= 1
            j = mm * N + nn
            lev = levels[j]
            nxt[j] = head[lev]
            head[lev] = j
            size += 1
            if lev > top:
                top = lev
    return phase


def _order_by_level(levels, n_levels):  # compiled by numba when available
    """Flat indices of ``levels`` (int16 in [0, n_levels)) loudest level first, ties in index order:
    ``np.argsort(-levels, kind='stable')`` as an O(n) counting sort (int32)."""
    count = np.zeros(n_levels + 1, dtype=np.int64)
    for i in range(levels.size):
        count[n_levels - 1 - levels[i] + 1] += 1
    for k in range(n_levels):
        count[k + 1] += count[k]
    order = np.empty(levels.size, dtype=np.int32)
    for i in range(levels.size):
        k = n_levels - 1 - levels[i]
        order[count[k]] = i
        count[k] += 1
    return order


def _argsort_levels(levels, n_levels):
    """The uncompiled stand-in for :func:`_order_by_level` (numpy's stable sort, same result)."""
    return np.argsort(-levels, kind="stable").astype(np.int32)


_COMPILED: Optional[tuple] = None


def _integrator(backend: str = "auto") -> tuple:
    """(integrate, order) functions: numba-compiled :func:`_integrate` and :func:`_order_by_level` (numba
    comes with librosa); the uncompiled integration and numpy's sort for ``backend='python'`` or when numba
    cannot be imported (identical phases, ~100x slower)."""
    global _COMPILED
    if backend == "python":
        return _integrate, _argsort_levels
    if _COMPILED is None:
        try:
            import numba
            _COMPILED = (numba.njit(cache=True, nogil=True)(_integrate),
                         numba.njit(cache=True, nogil=True)(_order_by_level))
        except Exception:  # numba missing or broken
            _COMPILED = (_integrate, _argsort_levels)
    return _COMPILED


#: Longest stretch of frames PGHI integrates as one piece; longer clips are cut into equal segments that
#: are integrated independently, in parallel threads (a cut is like the start of a new island: on real music,
#: 2 segments of a 1025- or 2047-frame clip changed the decoded SC by < 0.03 dB, docs/audio.md).
PGHI_SEGMENT_FRAMES = 1024


def pghi(mag: ArrayLike, geometry: StftGeometry, tol: float = 1e-5,
         generator: RandomSource = None, backend: str = "auto",
         segment_frames: Optional[int] = PGHI_SEGMENT_FRAMES) -> ArrayLike:
    """Phase estimate for ``mag [.., R+1, N]``: complex coefficients ``mag * exp(i phi)`` of the same kind.

    Coefficients quieter than ``tol`` times the clip's loudest get a random phase (drawn from
    ``generator``, which may hold one generator or seed per clip: :data:`RandomSource`); the rest are integrated from the phase gradients of :func:`_phase_derivatives`,
    always extending from the loudest coefficient already known (to within 1/N_LEVELS of the clip's
    log-magnitude range). Clips longer than ``segment_frames`` are cut into ceil(N / segment_frames)
    equal segments integrated independently (None: never cut); the result depends only on the input,
    not on the number of threads. ``backend`` 'auto' uses numba when available, 'python' the uncompiled
    function (same result, slower). Runs on the CPU (tensors on a GPU are copied there and back), the
    clips and segments of a batch in parallel threads.
    """
    if not (0 < tol < 1):
        raise ValueError(f"pghi: tol must be in (0, 1), got {tol!r}")
    if backend not in ("auto", "python"):
        raise ValueError(f"pghi: backend must be 'auto' or 'python', got {backend!r}")
    if segment_frames is not None and (not isinstance(segment_frames, int) or segment_frames < 2):
        raise ValueError(f"pghi: segment_frames must be an integer >= 2 or None, got {segment_frames!r}")
    S, lead, was_numpy = _as_mag(mag, geometry)
    integrate, order_by_level = _integrator(backend)
    mags = S.detach().to("cpu", torch.float64).numpy()
    rand = _uniform(mags.shape, generator, torch.float64, S.device).cpu().numpy()
    phases = np.empty_like(mags)
    N = mags.shape[-1]
    n_seg = 1 if segment_frames is None else -(-N // segment_frames)
    cuts = [round(j * N / n_seg) for j in range(n_seg + 1)]
    peaks = mags.reshape(mags.shape[0], -1).max(axis=1)

    def one(task: tuple) -> None:
        b, start, stop = task
        m = np.ascontiguousarray(mags[b, :, start:stop])
        phase = np.ascontiguousarray(2 * np.pi * rand[b, :, start:stop])
        peak = float(peaks[b])  # the clip's loudest, so every segment floors and quantises alike
        if peak <= 0:  # silence: any phase will do
            phases[b, :, start:stop] = phase
            return
        dphi_t, dphi_f = _phase_derivatives(m, geometry, tol, peak)
        done = m <= tol * peak
        # quantise ln|X| over [ln(tol * peak), ln(peak)] to N_LEVELS levels, ordered by a counting sort in O(n)
        span = -math.log(tol)
        lev = np.log(np.maximum(m, tol * peak) / peak) / span + 1.0
        levels = np.clip(np.floor(lev * (N_LEVELS - 1)), 0, N_LEVELS - 1).astype(np.int16).reshape(-1)
        order = order_by_level(levels, N_LEVELS)
        phases[b, :, start:stop] = integrate(levels, order, np.ascontiguousarray(dphi_t),
                                             np.ascontiguousarray(dphi_f), phase, np.ascontiguousarray(done), N_LEVELS)

    tasks = [(b, a, e) for b in range(mags.shape[0]) for a, e in zip(cuts, cuts[1:])]
    workers = min(len(tasks), os.cpu_count() or 1)
    if workers > 1 and integrate is not _integrate:  # the compiled integration releases the GIL
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, tasks))
    else:
        for task in tasks:
            one(task)
    ph = torch.from_numpy(phases).to(device=S.device, dtype=S.dtype)
    out = torch.polar(S, ph).reshape(*lead, *S.shape[-2:])
    return out.detach().cpu().numpy() if was_numpy else out


# --- named methods ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PhaseMethod:
    """A named reconstruction recipe: ``run(mag, geometry, n_iter, generator) -> audio tensor``."""

    name: str
    description: str
    default_iters: int
    run: Callable[..., torch.Tensor]


def _run_gla(momentum: float):
    def run(S, geometry, n_iter, generator):
        return griffin_lim(S, geometry, n_iter=n_iter, momentum=momentum, init="random", generator=generator)
    return run


def _run_pghi_gla(momentum: float):
    def run(S, geometry, n_iter, generator):
        start = pghi(S, geometry, generator=generator)
        return griffin_lim(S, geometry, n_iter=n_iter, momentum=momentum, init=start)
    return run


#: Name of the learned decoder: predicted in-between frames, then PGHI and fast Griffin-Lim at hop/2.
LEARNED_METHOD = "learned+pghi+fgla"


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


def learned_magnitude(S: torch.Tensor, geometry: StftGeometry) -> torch.Tensor:
    """Magnitudes ``[B, R+1, N]`` at hop ``a`` -> ``[B, R+1, 2N-1]`` at hop ``a/2`` with the decoder model.

    The stored frames land at the even indices bit for bit (they are copied, never recomputed);
    the odd ones are the model's prediction. ModelError when no model fits ``geometry``.
    """
    from . import interp
    return interp.upsample_magnitude(S, geometry, interp.model_for(geometry))


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

    On the CPU the update step runs as one fused pass (:mod:`audio_ext.gla_update`, ~3x faster per
    iteration); ``fuse=False`` forces the plain torch expression (same numbers up to float32 rounding).
    """
    cdtype = torch.complex128 if S_fine.dtype == torch.float64 else torch.complex64
    return _fgla(S_fine, fine, S_fine * _unit(init.to(cdtype)), n_iter, momentum, reestimate, fuse)


def _run_learned(momentum: float):
    def run(S, geometry, n_iter, generator):
        M, lead, was_numpy = _as_mag(S, geometry)
        fine = fine_geometry(geometry)
        S_fine = learned_magnitude(M, geometry)
        start = pghi(S_fine, fine, generator=generator)
        y = griffin_lim_stored(S_fine, fine, n_iter, momentum, start)
        y = y.reshape(*lead, y.shape[-1])
        return y.detach().cpu().numpy() if was_numpy else y
    return run


METHODS: Dict[str, PhaseMethod] = {m.name: m for m in (
    PhaseMethod("thesis", "Griffin-Lim from random phase, no momentum, 10 iterations (the thesis decoder)",
                10, _run_gla(0.0)),
    PhaseMethod("gla", "classic Griffin-Lim from random phase (momentum 0)", 32, _run_gla(0.0)),
    PhaseMethod("fgla", "fast Griffin-Lim from random phase, momentum 0.99", 32, _run_gla(0.99)),
    PhaseMethod("pghi", "phase-gradient heuristic integration alone (no iterations)", 0, _run_pghi_gla(0.0)),
    PhaseMethod("pghi+fgla", "PGHI start, then fast Griffin-Lim with momentum 0.5", 10, _run_pghi_gla(0.5)),
    PhaseMethod("pghi+fgla99", "PGHI start, then fast Griffin-Lim with momentum 0.99", 10, _run_pghi_gla(0.99)),
    PhaseMethod(LEARNED_METHOD, "in-between frames predicted by the decoder model (audio_ext.interp), then PGHI and "
                "fast Griffin-Lim (momentum 0.5) at hop/2, stored frames' magnitudes kept exactly, predicted ones re-estimated",
                10, _run_learned(0.5)),
)}

#: The classic method: the default wherever no decoder model fits the geometry (best measured
#: quality per second without a model, docs/audio.md).
DEFAULT_METHOD = "pghi+fgla"


def default_method(geometry: Optional[StftGeometry] = None) -> str:
    """The decoder used when none is named: :data:`LEARNED_METHOD` when a decoder model for
    ``geometry`` is available (audio_ext.interp.model_for), else :data:`DEFAULT_METHOD`."""
    if geometry is not None:
        from . import interp
        if interp.available_for(geometry):
            return LEARNED_METHOD
    return DEFAULT_METHOD


def describe_method(method: str, geometry: StftGeometry) -> str:
    """``method`` as the page and file tags show it: the learned one says which model, e.g.
    ``learned+pghi+fgla[shipped: frame_interp_r1024_h1024.pt]``, ``[file: m.pt]`` or
    ``[snapshot: network-snapshot-000200.pkl]`` (audio_ext.interp.model_label)."""
    if method == LEARNED_METHOD:
        from . import interp
        try:
            interp.model_for(geometry)
            return f"{method}[{interp.model_label()}]"
        except interp.ModelError:
            return f"{method}[no model]"
    return method


def reconstruct(mag: ArrayLike, geometry: StftGeometry, method: Optional[str] = None, n_iter: Optional[int] = None,
                generator: RandomSource = None) -> ArrayLike:
    """Audio ``[.., (N-1) * hop]`` from magnitudes ``[.., R+1, N]`` with a named method of :data:`METHODS`.

    ``method`` None is :func:`default_method` for ``geometry``. ``n_iter`` overrides the method's
    default number of Griffin-Lim iterations ('pghi' with
    ``n_iter > 0`` continues with momentum-0 iterations). Random starts come from ``generator``
    (:data:`RandomSource`); with one entry per clip each clip's audio depends only on its own entry,
    so a clip decodes to the same audio whatever batch it is part of.
    """
    if method is None:
        method = default_method(geometry)
    if method not in METHODS:
        raise ValueError(f"unknown phase reconstruction method {method!r}; known: {', '.join(METHODS)}")
    spec = METHODS[method]
    iters = spec.default_iters if n_iter is None else n_iter
    if not isinstance(iters, int) or iters < 0:
        raise ValueError(f"n_iter must be a non-negative integer, got {n_iter!r}")
    return spec.run(mag, geometry, iters, generator)


def decode_audio(image: ArrayLike, audio_block: Union[Mapping[str, Any], AudioCodec], method: Optional[str] = None,
                 n_iter: Optional[int] = None, device: Union[str, torch.device, None] = None,
                 generator: RandomSource = None) -> ArrayLike:
    """Images ``[.., R, R]`` (uint8 archive images or float generator output in [-1, 1]) to float32 clips.

    ``audio_block`` is the ``audio`` block of dataset.json or of a snapshot (or an :class:`AudioCodec`).
    The result has ``clip_samples`` samples per image; numpy in gives numpy out, a tensor gives a
    tensor on ``device`` (default: the image's device). ``method`` None is :func:`default_method` of the
    geometry (the learned decoder when a model fits it). ``generator`` is passed to :func:`reconstruct`
    (one generator, or one generator or seed per image: :data:`RandomSource`).
    """
    codec = audio_block if isinstance(audio_block, AudioCodec) else AudioCodec.from_audio_block(audio_block)
    g = codec.geometry
    was_numpy = isinstance(image, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(image)) if was_numpy else image
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"image must be a numpy array or a torch tensor, got {type(image).__name__}")
    if device is not None:
        t = t.to(device)
    mag = decode_magnitude(t, g, codec.mean, codec.std)
    y = reconstruct(mag, g, method=method, n_iter=n_iter, generator=generator).to(torch.float32)
    return y.cpu().numpy() if was_numpy else y


# --- quality measures ------------------------------------------------------------------------------

def _ref_mag(x: ArrayLike, n_fft: int, hop: int) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x).to(torch.float64)
    t = t.reshape(-1, t.shape[-1])
    w = torch.hann_window(n_fft, periodic=True, dtype=torch.float64, device=t.device)
    return torch.stft(t, n_fft, hop, window=w, center=True, pad_mode="reflect", return_complex=True).abs()


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
