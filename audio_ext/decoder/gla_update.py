"""One fused CPU pass for the update step of the learned decoder's fast Griffin-Lim.

Each iteration of :func:`audio_ext.decoder.griffin_lim.griffin_lim_stored` takes the consistent spectrum ``t``
(STFT of the current signal) and the previous one, and forms

    c = t - alpha * t_prev                      (fast Griffin-Lim momentum, alpha = m / (1 + m))
    target = S                                  (stored, even frames: the archive's magnitudes)
    target = S^(1-r) * |t|^r                    (predicted, odd frames: re-estimated)
    next = target * c / |c|                     (0 where c is 0, as torch.sgn)

In torch that is seven full passes over a 1025 x 2047 complex array, each reading the STFT's
frame-major layout against the magnitudes' bin-major one; together they cost more than the STFT
pair itself. Here it is one numba loop over the frame-major layout, split over threads by rows
(the compiled loop releases the GIL). Same numbers as the torch expression up to float32 rounding.
Used on the CPU when numba imports; :func:`available` says whether it does.
"""
from __future__ import annotations

import concurrent.futures
from typing import Callable, Optional

import numpy as np
import torch


def _update_rows(t, t_prev, S, out, alpha, reestimate, n_frames, lo, hi):  # compiled by numba
    """Rows ``lo..hi`` of the frame-major arrays ``[rows, bins]`` (row = clip * n_frames + frame), in
    float32 real arithmetic (complex abs would call hypot, several times slower)."""
    n_bins = t.shape[1]
    a32 = np.float32(alpha)
    r = np.float32(reestimate)
    r1 = np.float32(1.0) - r
    half = reestimate == 0.5
    zero = np.float32(0.0)
    for i in range(lo, hi):
        odd = reestimate > 0.0 and (i % n_frames) % 2 == 1
        for k in range(n_bins):
            zr, zi = t[i, k].real, t[i, k].imag
            cr = zr - a32 * t_prev[i, k].real
            ci = zi - a32 * t_prev[i, k].imag
            a2 = cr * cr + ci * ci
            s = S[i, k]
            if odd:
                cur = np.sqrt(zr * zr + zi * zi)
                if half:
                    s = np.sqrt(s * cur)
                else:
                    s = s ** r1 * cur ** r
            if a2 > zero:
                f = s / np.sqrt(a2)
                out[i, k] = complex(cr * f, ci * f)
            else:
                out[i, k] = zero
    return out


_COMPILED: Optional[Callable] = None
_TRIED = False


def _kernel() -> Optional[Callable]:
    """The numba-compiled :func:`_update_rows`, or None when numba cannot be imported."""
    global _COMPILED, _TRIED
    if not _TRIED:
        _TRIED = True
        try:
            import numba  # lazy: optional: compiled kernels when numba is installed
            _COMPILED = numba.njit(cache=True, nogil=True, fastmath=False)(_update_rows)
        except Exception:  # numba missing or broken: the torch expression is used instead
            _COMPILED = None
    return _COMPILED


def available(like: torch.Tensor) -> bool:
    """Whether the fused pass can run for tensors like ``like`` (on the CPU, complex64, numba present)."""
    return like.device.type == "cpu" and like.dtype == torch.complex64 and _kernel() is not None


class FusedUpdate:
    """The update step for one decode: ``S_fine [B, F, N]`` (float32, CPU) held frame-major, an output
    buffer reused across iterations, and a thread pool of ``torch.get_num_threads()`` workers."""

    def __init__(self, S_fine: torch.Tensor, reestimate: float, momentum: float) -> None:
        if not 0.0 <= reestimate <= 1.0:
            raise ValueError(f"reestimate must be in [0, 1], got {reestimate!r}")
        self.B, self.F, self.N = S_fine.shape
        self.S = S_fine.detach().to(torch.float32).transpose(-2, -1).contiguous().reshape(-1, self.F).numpy()
        self.out = torch.empty(self.B, self.N, self.F, dtype=torch.complex64)
        self.reestimate = float(reestimate)
        self.alpha = float(momentum) / (1.0 + float(momentum))
        rows = self.B * self.N
        workers = max(1, min(torch.get_num_threads(), rows // 64 or 1))
        step = -(-rows // workers)
        self.spans = [(lo, min(rows, lo + step)) for lo in range(0, rows, step)]
        self.pool = concurrent.futures.ThreadPoolExecutor(len(self.spans)) if len(self.spans) > 1 else None

    def __call__(self, t: torch.Tensor, t_prev: Optional[torch.Tensor]) -> torch.Tensor:
        """Next coefficients ``[B, F, N]`` (a bin-major view of the frame-major buffer) from the consistent
        spectrum ``t`` and the previous one (None in the first iteration: no momentum)."""
        kernel = _kernel()
        tt = _frame_major(t, self.F)
        tp = tt if t_prev is None else _frame_major(t_prev, self.F)
        alpha = 0.0 if t_prev is None else self.alpha
        out = self.out.view(-1, self.F).numpy()

        def run(span):
            kernel(tt, tp, self.S, out, alpha, self.reestimate, self.N, span[0], span[1])

        if self.pool is None:
            run(self.spans[0])
        else:
            list(self.pool.map(run, self.spans))
        return self.out.transpose(-2, -1)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


def _frame_major(t: torch.Tensor, n_bins: int) -> np.ndarray:
    """``[B, F, N]`` complex tensor -> ``[B*N, F]`` numpy array (a view when the memory already is frame-major,
    as torch.stft returns it)."""
    return t.transpose(-2, -1).contiguous().reshape(-1, n_bins).numpy()
