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

import dataclasses
import heapq
import math
from typing import Any, Callable, Dict, Mapping, Optional, Union

import numpy as np
import torch

from .codec import AudioCodec, decode_magnitude
from .geometry import StftGeometry

ArrayLike = Union[np.ndarray, torch.Tensor]

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


def _istft(spec: torch.Tensor, geometry: StftGeometry, window: torch.Tensor, length: int) -> torch.Tensor:
    """Least-squares inverse (weighted overlap-add) of :func:`_stft`; complex [B, R+1, N] -> [B, length]."""
    return torch.istft(spec, n_fft=geometry.n_fft, hop_length=geometry.hop_length, win_length=geometry.n_fft,
                       window=window, center=True, length=length)


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


# --- Griffin-Lim -----------------------------------------------------------------------------------

def griffin_lim(mag: ArrayLike, geometry: StftGeometry, n_iter: int = 32, momentum: float = 0.99,
                init: Union[str, ArrayLike] = "random", generator: Optional[torch.Generator] = None) -> ArrayLike:
    """Audio ``[.., (N-1) * hop]`` whose STFT magnitude approximates ``mag [.., R+1, N]``.

    Each of ``n_iter`` iterations is one inverse STFT and one STFT (the count librosa uses).
    ``momentum`` alpha extrapolates the consistent spectrum, ``c = t + alpha (t - t_prev)``, before the
    magnitude is imposed again (fast Griffin-Lim; 0 gives the classic algorithm, 0.99 the published
    setting). ``init`` is ``'random'`` (uniform phase, drawn with ``generator``), ``'zeros'``, or a
    tensor/array of initial phases (radians) or of complex coefficients whose angle is used.
    Returns the same kind (numpy/torch) as ``mag``; tensors stay on their device.
    """
    if not isinstance(n_iter, int) or n_iter < 0:
        raise ValueError(f"griffin_lim: n_iter must be a non-negative integer, got {n_iter!r}")
    if not (0.0 <= momentum < 2.0):
        raise ValueError(f"griffin_lim: momentum must be in [0, 2), got {momentum!r}")
    S, lead, was_numpy = _as_mag(mag, geometry)
    cdtype = torch.complex128 if S.dtype == torch.float64 else torch.complex64
    if isinstance(init, str):
        if init == "random":
            u = torch.rand(S.shape, generator=generator, dtype=S.dtype,
                           device=generator.device if generator is not None else "cpu").to(S.device)
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
    window = _window(geometry, S)
    length = _signal_length(geometry, S.shape[-1])
    c = S * phase.to(cdtype)
    t_prev = None
    for _ in range(n_iter):
        t = _stft(_istft(c, geometry, window, length), geometry, window)
        c = t if t_prev is None or momentum == 0 else t + momentum * (t - t_prev)
        t_prev = t
        c = S * _unit(c)
    y = _istft(c, geometry, window, length)
    y = y.reshape(*lead, length)
    return y.detach().cpu().numpy() if was_numpy else y


# --- PGHI ------------------------------------------------------------------------------------------

def _phase_derivatives(mag: np.ndarray, geometry: StftGeometry, tol: float) -> tuple:
    """Per-frame and per-bin phase increments (radians) of one magnitude ``[R+1, N]`` (float64).

    With s = ln|X| and the Gaussian equivalent lambda = 0.25645 L^2 (L = n_fft samples), hop a and
    M = n_fft bins per cycle, the phase-locked (window-centred) STFT of a Gaussian satisfies
    d(phi)/dt = 2 pi m / M + (M / lambda) ds/dm per sample and d(phi)/dm = -(lambda / (a M)) ds/dn
    (Průša et al. 2017). torch/librosa frames start n_fft/2 before their centre, which multiplies
    bin m by (-1)^m: the per-bin increment gains -pi.
    """
    a, M = geometry.hop_length, geometry.n_fft
    lam = HANN_LAMBDA * M * M
    peak = float(mag.max())
    floor = peak * tol if peak > 0 else 1.0
    s = np.log(np.maximum(mag, floor))
    ds_dm = np.zeros_like(s)
    ds_dm[1:-1] = (s[2:] - s[:-2]) / 2  # DC and Nyquist: 0 by the symmetry of a real signal's spectrum
    ds_dn = np.gradient(s, axis=1) if s.shape[1] > 1 else np.zeros_like(s)
    m = np.arange(s.shape[0], dtype=np.float64)[:, None]
    dphi_t = a * (2 * np.pi * m / M + (M / lam) * ds_dm)
    dphi_f = -(lam / (a * M)) * ds_dn - np.pi
    return dphi_t, dphi_f


def _integrate_python(mag, dphi_t, dphi_f, phase, done):
    """Heap integration (Průša et al. 2017, Algorithm 1) in plain Python; used when numba is missing."""
    F, N = mag.shape
    order = np.argsort(-mag, axis=None, kind="stable")
    pos = 0
    heap: list = []
    remaining = int((~done).sum())
    while remaining > 0:
        if not heap:
            while done.flat[order[pos]]:
                pos += 1
            i = int(order[pos])
            m, n = divmod(i, N)
            done[m, n] = True
            phase[m, n] = 0.0
            remaining -= 1
            heapq.heappush(heap, (-mag[m, n], m, n))
        _, m, n = heapq.heappop(heap)
        p = phase[m, n]
        for mm, nn, inc in ((m, n + 1, 1), (m, n - 1, -1), (m + 1, n, 2), (m - 1, n, -2)):
            if 0 <= mm < F and 0 <= nn < N and not done[mm, nn]:
                if inc == 1:
                    phase[mm, nn] = p + 0.5 * (dphi_t[m, n] + dphi_t[mm, nn])
                elif inc == -1:
                    phase[mm, nn] = p - 0.5 * (dphi_t[m, n] + dphi_t[mm, nn])
                elif inc == 2:
                    phase[mm, nn] = p + 0.5 * (dphi_f[m, n] + dphi_f[mm, nn])
                else:
                    phase[mm, nn] = p - 0.5 * (dphi_f[m, n] + dphi_f[mm, nn])
                done[mm, nn] = True
                remaining -= 1
                heapq.heappush(heap, (-mag[mm, nn], mm, nn))
    return phase


def _integrate_numba_source(mag, dphi_t, dphi_f, phase, done):  # pragma: no cover - compiled by numba
    """The same algorithm as :func:`_integrate_python` with an explicit binary max-heap on arrays."""
    F, N = mag.shape
    total = F * N
    order = np.argsort(-mag.reshape(-1), kind="mergesort")
    heap_key = np.empty(total, dtype=np.float64)
    heap_idx = np.empty(total, dtype=np.int64)
    size = 0
    pos = 0
    remaining = 0
    for m in range(F):
        for n in range(N):
            if not done[m, n]:
                remaining += 1
    while remaining > 0:
        if size == 0:
            while done[order[pos] // N, order[pos] % N]:
                pos += 1
            i = order[pos]
            m = i // N
            n = i % N
            done[m, n] = True
            phase[m, n] = 0.0
            remaining -= 1
            heap_key[0] = mag[m, n]
            heap_idx[0] = i
            size = 1
        # pop the loudest coefficient
        top = heap_idx[0]
        size -= 1
        if size > 0:
            key = heap_key[size]
            idx = heap_idx[size]
            j = 0
            while True:
                c = 2 * j + 1
                if c >= size:
                    break
                if c + 1 < size and heap_key[c + 1] > heap_key[c]:
                    c += 1
                if heap_key[c] <= key:
                    break
                heap_key[j] = heap_key[c]
                heap_idx[j] = heap_idx[c]
                j = c
            heap_key[j] = key
            heap_idx[j] = idx
        m = top // N
        n = top - m * N
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
            # push
            key = mag[mm, nn]
            j = size
            size += 1
            while j > 0:
                parent = (j - 1) // 2
                if heap_key[parent] >= key:
                    break
                heap_key[j] = heap_key[parent]
                heap_idx[j] = heap_idx[parent]
                j = parent
            heap_key[j] = key
            heap_idx[j] = mm * N + nn
    return phase


_INTEGRATOR: Optional[Callable] = None


def _integrator() -> Callable:
    """The numba-compiled heap integration when numba imports (a librosa dependency), else plain Python."""
    global _INTEGRATOR
    if _INTEGRATOR is None:
        try:
            import numba
            _INTEGRATOR = numba.njit(cache=True, nogil=True)(_integrate_numba_source)
        except Exception:  # numba missing or broken: the pure-Python heap gives the same phases
            _INTEGRATOR = _integrate_python
    return _INTEGRATOR


def pghi(mag: ArrayLike, geometry: StftGeometry, tol: float = 1e-5,
         generator: Optional[torch.Generator] = None, backend: str = "auto") -> ArrayLike:
    """Phase estimate for ``mag [.., R+1, N]``: complex coefficients ``mag * exp(i phi)`` of the same kind.

    Coefficients quieter than ``tol`` times the clip's loudest get a random phase (drawn with
    ``generator``); the rest are integrated from the phase gradients of :func:`_phase_derivatives`,
    always extending from the loudest coefficient already known. ``backend`` 'auto' uses numba when
    available, 'python' forces the pure-Python heap (same result, slower). Runs on the CPU; tensors
    on a GPU are copied there and back.
    """
    if not (0 < tol < 1):
        raise ValueError(f"pghi: tol must be in (0, 1), got {tol!r}")
    S, lead, was_numpy = _as_mag(mag, geometry)
    integrate = _integrate_python if backend == "python" else _integrator()
    if backend not in ("auto", "python"):
        raise ValueError(f"pghi: backend must be 'auto' or 'python', got {backend!r}")
    mags = S.detach().to("cpu", torch.float64).numpy()
    rand = torch.rand(mags.shape, generator=generator, dtype=torch.float64,
                      device=generator.device if generator is not None else "cpu").cpu().numpy()
    phases = np.empty_like(mags)
    for b in range(mags.shape[0]):
        m = np.ascontiguousarray(mags[b])
        dphi_t, dphi_f = _phase_derivatives(m, geometry, tol)
        phase = 2 * np.pi * rand[b]
        done = m <= tol * m.max() if m.max() > 0 else np.ones(m.shape, dtype=bool)
        phases[b] = integrate(m, dphi_t, dphi_f, phase, done)
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


METHODS: Dict[str, PhaseMethod] = {m.name: m for m in (
    PhaseMethod("thesis", "Griffin-Lim from random phase, no momentum, 10 iterations (the thesis decoder)",
                10, _run_gla(0.0)),
    PhaseMethod("gla", "classic Griffin-Lim from random phase (momentum 0)", 32, _run_gla(0.0)),
    PhaseMethod("fgla", "fast Griffin-Lim from random phase, momentum 0.99", 32, _run_gla(0.99)),
    PhaseMethod("pghi", "phase-gradient heuristic integration alone (no iterations)", 0, _run_pghi_gla(0.0)),
    PhaseMethod("pghi+fgla", "PGHI start, then fast Griffin-Lim with momentum 0.5", 10, _run_pghi_gla(0.5)),
    PhaseMethod("pghi+fgla99", "PGHI start, then fast Griffin-Lim with momentum 0.99", 10, _run_pghi_gla(0.99)),
)}

#: The method :func:`reconstruct` and :func:`decode_audio` use unless told otherwise (best measured
#: quality per second on the benchmark in docs/audio.md).
DEFAULT_METHOD = "pghi+fgla"


def reconstruct(mag: ArrayLike, geometry: StftGeometry, method: str = DEFAULT_METHOD, n_iter: Optional[int] = None,
                generator: Optional[torch.Generator] = None) -> ArrayLike:
    """Audio ``[.., (N-1) * hop]`` from magnitudes ``[.., R+1, N]`` with a named method of :data:`METHODS`.

    ``n_iter`` overrides the method's default number of Griffin-Lim iterations ('pghi' with
    ``n_iter > 0`` continues with momentum-0 iterations).
    """
    if method not in METHODS:
        raise ValueError(f"unknown phase reconstruction method {method!r}; known: {', '.join(METHODS)}")
    spec = METHODS[method]
    iters = spec.default_iters if n_iter is None else n_iter
    if not isinstance(iters, int) or iters < 0:
        raise ValueError(f"n_iter must be a non-negative integer, got {n_iter!r}")
    return spec.run(mag, geometry, iters, generator)


def decode_audio(image: ArrayLike, audio_block: Union[Mapping[str, Any], AudioCodec], method: str = DEFAULT_METHOD,
                 n_iter: Optional[int] = None, device: Union[str, torch.device, None] = None,
                 generator: Optional[torch.Generator] = None) -> ArrayLike:
    """Images ``[.., R, R]`` (uint8 archive images or float generator output in [-1, 1]) to float32 clips.

    ``audio_block`` is the ``audio`` block of dataset.json or of a snapshot (or an :class:`AudioCodec`).
    The result has ``clip_samples`` samples per image; numpy in gives numpy out, a tensor gives a
    tensor on ``device`` (default: the image's device).
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
