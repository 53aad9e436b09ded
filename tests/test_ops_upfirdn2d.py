"""upfirdn2d: zero-insert, pad (or crop), FIR-filter, decimate; compared with scipy and a naive loop."""
import numpy as np
import pytest
import scipy.signal
import torch

from stylegan2.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d


def _naive_1d(x, h, up, down, p0, p1, flip=False):
    """One axis, by the definition: zero insertion, pad/crop, true convolution ('valid'), decimate."""
    z = np.zeros(len(x) * up)
    z[::up] = x
    z = np.concatenate([np.zeros(max(p0, 0)), z, np.zeros(max(p1, 0))])
    z = z[max(-p0, 0):len(z) - max(-p1, 0)]
    kernel = h[::-1] if flip else h
    return np.convolve(z, kernel, mode="valid")[::down]


def _naive_2d(img, f2d, up, down, pad, flip=False, gain=1.0):
    """A literal loop over output pixels for a 2-D (non-separable) filter; img is [H, W]."""
    (ux, uy), (dx, dy) = up, down
    px0, px1, py0, py1 = pad
    h, w = img.shape
    big = np.zeros((h * uy, w * ux))
    big[::uy, ::ux] = img
    padded = np.zeros((h * uy + max(py0, 0) + max(py1, 0), w * ux + max(px0, 0) + max(px1, 0)))
    padded[max(py0, 0):max(py0, 0) + h * uy, max(px0, 0):max(px0, 0) + w * ux] = big
    padded = padded[max(-py0, 0):padded.shape[0] - max(-py1, 0), max(-px0, 0):padded.shape[1] - max(-px1, 0)]
    fh, fw = f2d.shape
    k = f2d if flip else f2d[::-1, ::-1]  # correlation with the reversed filter = convolution
    out = np.zeros((padded.shape[0] - fh + 1, padded.shape[1] - fw + 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = np.sum(padded[i:i + fh, j:j + fw] * k)
    return out[::dy, ::dx] * gain


def _image(seed, shape=(2, 3, 7, 9)):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape))


# (filter taps, up, down, padding (px0, px1, py0, py1), flip)
SEPARABLE_CASES = [
    ([1, 3, 3, 1], 2, 1, (2, 1, 2, 1), False),
    ([1, 3, 3, 1], 1, 2, (1, 1, 1, 1), False),
    ([1, 2, 4, 1, 5], 3, 2, (0, 3, 4, 1), True),
    ([0.5, 1.0, -0.25], 1, 1, (-1, 2, 1, -2), False),   # negative padding crops
    ([1, 3, 3, 1], (2, 1), (1, 2), (3, -1, 0, 2), False),  # different factors per axis
    (np.arange(1, 9), 2, 2, (4, 3, 4, 3), False),       # 8 taps: kept separable by setup_filter
]


@pytest.mark.parametrize("taps, up, down, pad, flip", SEPARABLE_CASES)
def test_separable_filters_match_a_per_axis_reference(taps, up, down, pad, flip):
    x = _image(0)
    f = setup_filter(taps, normalize=False)
    y = upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip).numpy()
    ux, uy = (up, up) if np.isscalar(up) else up
    dx, dy = (down, down) if np.isscalar(down) else down
    h = np.asarray(taps, dtype=np.float64)
    ref = np.apply_along_axis(_naive_1d, 3, x.numpy(), h, ux, dx, pad[0], pad[1], flip)
    ref = np.apply_along_axis(_naive_1d, 2, ref, h, uy, dy, pad[2], pad[3], flip)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("up, down", [(1, 1), (2, 1), (1, 2), (3, 2), (2, 3)])
def test_full_convolution_padding_equals_scipy_upfirdn(up, down):
    # scipy.signal.upfirdn = zero insertion + full convolution + decimation; in upfirdn2d terms the
    # padding is (len(h) - 1) in front and (len(h) - up) behind.
    h = np.array([1.0, -2.0, 3.0, 0.5, 0.25])
    x = _image(1, shape=(1, 2, 6, 5))
    pad = (len(h) - 1, len(h) - up)
    f = setup_filter(h, normalize=False, separable=True)
    y = upfirdn2d(x, f, up=up, down=down, padding=(pad[0], pad[1], pad[0], pad[1])).numpy()
    ref = scipy.signal.upfirdn(h, x.numpy(), up=up, down=down, axis=3)
    ref = scipy.signal.upfirdn(h, ref, up=up, down=down, axis=2)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("up, down, pad, flip, gain", [
    ((1, 1), (1, 1), (1, 1, 1, 1), False, 1.0),
    ((2, 2), (1, 1), (2, 1, 1, 2), True, 4.0),
    ((1, 1), (2, 2), (0, 1, 2, -1), False, 0.5),
    ((2, 1), (1, 3), (-1, 2, 3, 0), True, 2.0),
])
def test_2d_filters_match_a_naive_loop(up, down, pad, flip, gain):
    x = _image(2, shape=(1, 2, 5, 6))
    f2d = np.random.default_rng(3).standard_normal((3, 4))  # deliberately non-symmetric
    f = torch.from_numpy(f2d).float()
    y = upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain).numpy()
    for c in range(x.shape[1]):
        ref = _naive_2d(x[0, c].numpy(), f2d, up, down, pad, flip, gain)
        np.testing.assert_allclose(y[0, c], ref, rtol=1e-5, atol=1e-5)


def test_setup_filter_normalises_and_builds_the_outer_product():
    f = setup_filter([1, 3, 3, 1])
    np.testing.assert_allclose(f.numpy(), np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64)
    assert setup_filter(list(range(1, 9))).ndim == 1  # long filters stay separable
    fg = setup_filter([1, 2, 1], gain=4)
    assert float(fg.sum()) == pytest.approx(4.0)
    fs = setup_filter([1, 2, 1, 5], gain=9, separable=True)
    assert float(fs.sum()) == pytest.approx(3.0)  # sqrt(gain) per pass
    np.testing.assert_allclose(setup_filter([1, 2, 5], flip_filter=True).numpy(),
                               np.outer([5, 2, 1], [5, 2, 1]) / 64)


@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 1], np.hanning(10)[1:-1]])
def test_resampling_keeps_a_constant_image_constant(taps):
    f = setup_filter(taps)
    x = torch.full((1, 2, 16, 16), 0.7, dtype=torch.float64)
    up = upsample2d(x, f)
    down = downsample2d(x, f)
    same = filter2d(x, f)
    assert up.shape == (1, 2, 32, 32) and down.shape == (1, 2, 8, 8) and same.shape == x.shape
    # Away from the zero-padded border (one filter length) the DC level is exact.
    m = len(taps)
    np.testing.assert_allclose(up[..., m:-m, m:-m].numpy(), 0.7, rtol=1e-6)
    np.testing.assert_allclose(down[..., m // 2:-(m // 2), m // 2:-(m // 2)].numpy(), 0.7, rtol=1e-6)
    np.testing.assert_allclose(same[..., m:-m, m:-m].numpy(), 0.7, rtol=1e-6)


def test_gradients_of_first_and_second_order():
    f = setup_filter([1, 3, 3, 1]).double()
    x = _image(4, shape=(1, 1, 3, 4)).requires_grad_(True)
    fn = lambda x: upfirdn2d(x, f, up=2, down=1, padding=(2, 1, 1, 2)).square()  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    fn_down = lambda x: downsample2d(x, f).square()  # noqa: E731
    assert torch.autograd.gradgradcheck(fn_down, (x,))


def test_impossible_padding_is_a_clear_error():
    with pytest.raises(ValueError, match="leaves no output"):
        upfirdn2d(torch.zeros(1, 1, 4, 4), setup_filter([1, 1]), padding=-4)


def test_bad_padding_spec_is_a_clear_error():
    with pytest.raises(ValueError, match="padding must be"):
        upfirdn2d(torch.zeros(1, 1, 4, 4), None, padding=(1, 2, 3))
