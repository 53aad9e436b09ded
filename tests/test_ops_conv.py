"""conv2d_resample and modulated_conv2d against compositions of plain torch ops."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylegan2.ops.conv2d_resample import conv2d_resample
from stylegan2.ops.modulated_conv import modulated_conv2d
from stylegan2.ops.upfirdn2d import setup_filter

TAPS = [1, 3, 3, 1]


def _randn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _fir(x, taps, gain):
    """Depthwise true convolution ('valid') with the separable filter taps/sum(taps) * sqrt(gain) per axis."""
    h = torch.tensor(taps, dtype=x.dtype)
    h = (h / h.sum()).flip(0) * gain ** 0.5
    c = x.shape[1]
    x = F.conv2d(x, h.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, h.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _upsample_then_conv(x, w, up, pad, groups=1, flip_weight=True):
    """Definition of up-conv: zero insertion, one padding (user + filter), FIR (gain up^2), valid conv."""
    n, c, h, wd = x.shape
    z = torch.zeros(n, c, h * up, wd * up, dtype=x.dtype)
    z[:, :, ::up, ::up] = x
    fp0, fp1 = (len(TAPS) + up - 1) // 2, (len(TAPS) - up) // 2
    z = F.pad(z, [pad + fp0, pad + fp1, pad + fp0, pad + fp1])
    z = _fir(z, TAPS, up * up)
    return F.conv2d(z, w if flip_weight else w.flip([2, 3]), groups=groups)


def _conv_then_downsample(x, w, down, pad, groups=1, flip_weight=True):
    """Definition of down-conv: one padding (user + filter), valid conv, FIR, keep every down-th pixel."""
    fp0, fp1 = (len(TAPS) - down + 1) // 2, (len(TAPS) - down) // 2
    x = F.pad(x, [pad + fp0, pad + fp1, pad + fp0, pad + fp1])
    x = F.conv2d(x, w if flip_weight else w.flip([2, 3]), groups=groups)
    return _fir(x, TAPS, 1)[:, :, ::down, ::down]


@pytest.mark.parametrize("k, pad, groups, flip_weight", [(3, 1, 1, True), (3, 1, 2, False), (1, 0, 1, True),
                                                         (1, 0, 2, False), (4, 2, 1, True)])
def test_upsampling_conv_equals_upsample_then_conv(k, pad, groups, flip_weight):
    x = _randn(2, 4, 5, 6, seed=1)
    w = _randn(6, 4 // groups, k, k, seed=2)
    y = conv2d_resample(x, w, f=setup_filter(TAPS).double(), up=2, padding=pad, groups=groups,
                        flip_weight=flip_weight)
    ref = _upsample_then_conv(x, w, 2, pad, groups, flip_weight)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("k, pad, groups, flip_weight", [(3, 1, 1, True), (3, 1, 2, False), (1, 0, 1, True),
                                                         (1, 0, 2, True), (4, 1, 1, False)])
def test_downsampling_conv_equals_conv_then_downsample(k, pad, groups, flip_weight):
    x = _randn(2, 4, 8, 10, seed=3)
    w = _randn(6, 4 // groups, k, k, seed=4)
    y = conv2d_resample(x, w, f=setup_filter(TAPS).double(), down=2, padding=pad, groups=groups,
                        flip_weight=flip_weight)
    ref = _conv_then_downsample(x, w, 2, pad, groups, flip_weight)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-10, atol=1e-10)


def test_same_size_conv_is_plain_conv2d_and_flip_weight_false_convolves():
    x = _randn(1, 3, 6, 6, seed=5)
    w = _randn(2, 3, 3, 3, seed=6)
    np.testing.assert_allclose(conv2d_resample(x, w, padding=1).numpy(), F.conv2d(x, w, padding=1).numpy(),
                               rtol=1e-12, atol=1e-12)
    y = conv2d_resample(x, w, padding=(1, 0, 2, 1), flip_weight=False)
    ref = F.conv2d(F.pad(x, [1, 0, 2, 1]), w.flip([2, 3]))
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)


def test_upsampling_with_cropping_padding_still_follows_the_definition():
    x = _randn(1, 2, 5, 5, seed=7)
    w = _randn(3, 2, 3, 3, seed=8)
    y = conv2d_resample(x, w, f=setup_filter(TAPS).double(), up=2, padding=-2)
    n, c, h, wd = x.shape
    z = torch.zeros(n, c, 2 * h, 2 * wd, dtype=x.dtype)
    z[:, :, ::2, ::2] = x
    z = _fir(F.pad(z, [-2 + 2, -2 + 1, -2 + 2, -2 + 1]), TAPS, 4)
    np.testing.assert_allclose(y.numpy(), F.conv2d(z, w).numpy(), rtol=1e-10, atol=1e-10)


def test_resampling_conv_has_second_derivatives():
    x = _randn(1, 2, 3, 3, seed=9).requires_grad_(True)
    w = _randn(2, 2, 3, 3, seed=10).requires_grad_(True)
    f = setup_filter(TAPS).double()
    assert torch.autograd.gradgradcheck(lambda x, w: conv2d_resample(x, w, f=f, up=2, padding=1), (x, w))


def test_mismatched_channels_are_a_clear_error():
    with pytest.raises(ValueError, match="does not fit input with 3 channels"):
        conv2d_resample(torch.zeros(1, 3, 4, 4), torch.zeros(2, 2, 3, 3))


# ---------------------------------------------------------------- modulated convolution

def _modconv_by_definition(x, weight, styles, demodulate):
    """Per sample: w' = weight * s (input channels), optionally divided by its L2 norm per output channel."""
    out = []
    for n in range(x.shape[0]):
        wn = weight * styles[n].view(1, -1, 1, 1)
        if demodulate:
            wn = wn / (wn.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        out.append(F.conv2d(x[n:n + 1], wn, padding=weight.shape[-1] // 2))
    return torch.cat(out)


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("fused", [True, False])
def test_modulated_conv_matches_the_per_sample_definition(demodulate, fused):
    x = _randn(3, 4, 6, 6, seed=11)
    weight = _randn(5, 4, 3, 3, seed=12)
    styles = _randn(3, 4, seed=13) + 1
    y = modulated_conv2d(x, weight, styles, padding=1, demodulate=demodulate, fused_modconv=fused)
    ref = _modconv_by_definition(x, weight, styles, demodulate)
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("up", [1, 2])
def test_fused_and_non_fused_agree_with_noise_and_resampling(up):
    x = _randn(2, 3, 5, 5, seed=14)
    weight = _randn(4, 3, 3, 3, seed=15)
    styles = _randn(2, 3, seed=16)
    noise = _randn(2, 1, 5 * up, 5 * up, seed=17)
    kw = dict(noise=noise, up=up, padding=1, resample_filter=setup_filter(TAPS).double(), flip_weight=(up == 1))
    fused = modulated_conv2d(x, weight, styles, fused_modconv=True, **kw)
    unfused = modulated_conv2d(x, weight, styles, fused_modconv=False, **kw)
    assert fused.shape == (2, 4, 5 * up, 5 * up)
    np.testing.assert_allclose(fused.numpy(), unfused.numpy(), rtol=1e-10, atol=1e-10)


def test_demodulated_effective_weights_have_unit_norm_per_output_channel():
    # The effective per-sample weight is recovered by feeding unit impulses through the fused conv.
    weight = _randn(3, 2, 3, 3, seed=18) * 5
    styles = _randn(2, 2, seed=19) * 3
    # Build inputs that place a 1 at each (channel, tap) position of a 3x3 window.
    impulses = torch.zeros(2 * 9, 2, 3, 3, dtype=torch.float64)
    for i in range(2 * 9):
        impulses[i].view(-1)[i] = 1
    for n in range(2):
        y = modulated_conv2d(impulses, weight, styles[n].expand(18, 2), padding=0)  # [18, 3, 1, 1]
        effective = y[:, :, 0, 0].T  # [out, in*kh*kw]
        np.testing.assert_allclose(effective.norm(dim=1).numpy(), 1.0, rtol=1e-6)


@pytest.mark.parametrize("fused", [True, False])
def test_float16_is_guarded_against_overflow(fused):
    # Weight * style reaches 1e6 here, far beyond float16's 65504; the guard must rescale first.
    x = _randn(2, 3, 4, 4, seed=20)
    weight = _randn(4, 3, 3, 3, seed=21) * 1e3
    styles = _randn(2, 3, seed=22) * 1e3
    ref = modulated_conv2d(x, weight, styles, padding=1)
    y = modulated_conv2d(x.half(), weight.half(), styles.half(), padding=1, fused_modconv=fused)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    np.testing.assert_allclose(y.double().numpy(), ref.numpy(), rtol=2e-2, atol=2e-2)
