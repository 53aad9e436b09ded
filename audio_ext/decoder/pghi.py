"""Phase-gradient heuristic integration (Prusa, Balazs & Sondergaard, IEEE/ACM TASLP 25(5), 2017).

Phase derivatives are estimated from the log-magnitude as if the Hann window were a Gaussian of
equal time-frequency spread and integrated outward from the loudest coefficients: non-iterative,
and a far better start for Griffin-Lim than random phase.
"""
from __future__ import annotations

import concurrent.futures
import math
import os
from typing import Optional

import numpy as np
import torch

from audio_ext.core.geometry import StftGeometry
from audio_ext.decoder.griffin_lim import HANN_LAMBDA, ArrayLike, RandomSource, _as_mag, _uniform

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
            import numba  # lazy: optional: compiled kernels when numba is installed
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
