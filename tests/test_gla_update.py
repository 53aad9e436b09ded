"""The fused update step of the learned decoder's Griffin-Lim equals the torch expression it replaces."""
import numpy as np
import pytest
import torch

from audio_ext.core.geometry import StftGeometry
from audio_ext.decoder import gla_update, griffin_lim, pghi

pytestmark = pytest.mark.skipif(not gla_update.available(torch.zeros(1, dtype=torch.complex64)),
                                reason="numba not importable: the torch expression is used")


def naive_update(S, t, t_prev, momentum, r):
    """Per-element loop in float64/complex128: the definition in the module docstring."""
    S, t = S.double().numpy(), t.to(torch.complex128).numpy()
    tp = t if t_prev is None else t_prev.to(torch.complex128).numpy()
    alpha = 0.0 if t_prev is None else momentum / (1 + momentum)
    out = np.zeros_like(t)
    B, F, N = t.shape
    for b in range(B):
        for k in range(F):
            for n in range(N):
                c = t[b, k, n] - alpha * tp[b, k, n]
                s = S[b, k, n]
                if n % 2 == 1:
                    s = s ** (1 - r) * abs(t[b, k, n]) ** r
                out[b, k, n] = 0 if c == 0 else c * s / abs(c)
    return out


@pytest.mark.parametrize("r", [0.0, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("first", [True, False])
def test_fused_update_matches_a_naive_loop(r, first):
    g = torch.Generator().manual_seed(1)
    B, F, N = 2, 9, 7
    S = torch.rand(B, F, N, generator=g) * 4
    t = torch.polar(torch.rand(B, F, N, generator=g) * 3, torch.rand(B, F, N, generator=g) * 6.3)
    t[0, 3, 2] = 0  # a zero coefficient stays zero (torch.sgn(0) = 0)
    t_prev = None if first else torch.polar(torch.rand(B, F, N, generator=g), torch.rand(B, F, N, generator=g) * 6.3)
    if not first:
        t_prev[0, 3, 2] = 0
    fused = gla_update.FusedUpdate(S, r, momentum=0.5)
    try:
        got = fused(t, t_prev).numpy()
    finally:
        fused.close()
    want = naive_update(S, t, t_prev, 0.5, r)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    assert got[0, 3, 2] == 0
    # stored (even) frames get exactly the stored magnitudes, up to float32 rounding
    np.testing.assert_allclose(np.abs(got[..., 0::2]), S[..., 0::2].numpy() * (np.abs(want[..., 0::2]) > 0), rtol=1e-6)


def test_fused_and_torch_griffin_lim_agree_on_a_whole_decode():
    geometry = StftGeometry(64)
    fine = griffin_lim.fine_geometry(geometry)
    g = torch.Generator().manual_seed(3)
    y = torch.randn(2, (2 * geometry.n_frames - 2) * fine.hop_length, generator=g)
    S = griffin_lim._stft(y, fine, griffin_lim._window(fine, y)).abs()
    init = pghi.pghi(S, fine, generator=torch.Generator().manual_seed(0))
    for momentum, r in ((0.5, 0.5), (0.0, 0.3), (0.99, 1.0)):
        a = griffin_lim.griffin_lim_stored(S, fine, 6, momentum, init, reestimate=r, fuse=False)
        b = griffin_lim.griffin_lim_stored(S, fine, 6, momentum, init, reestimate=r, fuse=True)
        assert float((a - b).norm() / a.norm()) < 1e-5


def test_threads_split_rows_without_gaps(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    S = torch.rand(1, 5, 301)
    fused = gla_update.FusedUpdate(S, 0.5, 0.5)
    try:
        spans = fused.spans
        assert spans[0][0] == 0 and spans[-1][1] == 301 and len(spans) == 3
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    finally:
        fused.close()


def test_classic_griffin_lim_fused_equals_torch():
    geometry = StftGeometry(64)
    g = torch.Generator().manual_seed(5)
    y = torch.randn(3, geometry.clip_samples, generator=g)
    S = griffin_lim._stft(y, geometry, griffin_lim._window(geometry, y)).abs()
    for momentum in (0.0, 0.5, 0.99):
        a = griffin_lim.griffin_lim(S, geometry, n_iter=8, momentum=momentum, init="zeros", fuse=False)
        b = griffin_lim.griffin_lim(S, geometry, n_iter=8, momentum=momentum, init="zeros", fuse=True)
        assert float((a - b).norm() / a.norm()) < 1e-5
