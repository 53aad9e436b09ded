"""The audio-safe augmentation: identity at p=0, exact transforms, nothing moves along frequency,
masks are silence, and every transform is twice differentiable (R1 is taken through it)."""
import pytest
import torch

from stylegan2.augment import (
    AUGMENT_PRESETS,
    AugmentPipe,
    build_augment_pipe,
    freq_mask,
    scale_dynamic_range,
    spectral_tilt,
    tilt_profile,
    time_mask,
    time_shift,
)

TRANSFORMS = ["xint", "gain", "contrast", "tilt", "noise", "time_mask", "freq_mask"]
NOISE_FREE = ["xint", "gain", "contrast", "tilt", "time_mask", "freq_mask"]


def _pipe(*names, p=1.0, **kwargs):
    pipe = AugmentPipe(**{n: 1 for n in names}, **kwargs)
    pipe.p.fill_(p)
    return pipe


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _images(n=4, c=1, h=16, w=16, seed=0, dtype=torch.float32):
    return torch.rand(n, c, h, w, generator=_gen(seed), dtype=dtype) * 2 - 1


def test_p_is_a_zero_dim_buffer_saved_in_state_dict():
    pipe = AugmentPipe.from_preset("audio")
    assert pipe.p.shape == () and float(pipe.p) == 0
    pipe.p.copy_(torch.tensor(0.3))
    assert "p" in pipe.state_dict() and float(pipe.state_dict()["p"]) == pytest.approx(0.3)


@pytest.mark.parametrize("preset", sorted(AUGMENT_PRESETS))
def test_p_zero_is_exact_identity(preset):
    x = _images()
    assert torch.equal(AugmentPipe.from_preset(preset)(x, generator=_gen()), x)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_p_one_changes_the_images(name):
    x = _images(n=8, h=32, w=32)
    y = _pipe(name, xint_max=0.5, time_mask_max=0.5, freq_mask_max=0.5)(x, generator=_gen(1))
    changed = (y != x).flatten(1).any(dim=1)
    # A draw can be a no-op by chance (shift 0, empty stripe); with these draws most images change.
    assert changed.float().mean() >= 0.5


def test_firing_probability_is_strength_times_p():
    x = torch.zeros(4000, 1, 4, 4)
    for strength, p in [(1, 0.5), (0.5, 1.0), (1, 0.1)]:
        pipe = AugmentPipe(gain=strength)
        pipe.p.fill_(p)
        fired = (pipe(x, generator=_gen(2)) != 0).flatten(1).any(dim=1).float().mean()
        assert abs(float(fired) - strength * p) < 0.04  # binomial sd <= 0.008


def test_time_shift_is_exactly_torch_roll_along_time():
    x = _images(n=3)
    shifts = torch.tensor([0, 5, -3])
    y = time_shift(x, shifts)
    for i, s in enumerate(shifts.tolist()):
        assert torch.equal(y[i], torch.roll(x[i], s, dims=-1))


def test_pipe_time_shift_rolls_within_the_allowed_range():
    x = _images(n=16, w=32)
    y = _pipe("xint", xint_max=0.125)(x, generator=_gen(3))
    seen = set()
    for i in range(16):
        matches = [s for s in range(-4, 5) if torch.equal(y[i], torch.roll(x[i], s, dims=-1))]
        assert matches, f"image {i} is not a roll of at most 4 columns"
        seen.add(matches[0])
    assert len(seen) > 2


def test_gain_contrast_tilt_match_their_formulas():
    x = _images(n=2, h=8, w=4, dtype=torch.float64)
    c = torch.tensor([2.0, 0.5], dtype=torch.float64)
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(scale_dynamic_range(x, c), m + (x - m) * c.view(-1, 1, 1, 1))
    profile = tilt_profile(8, dtype=torch.float64)
    # -1 at DC (last row), +1 at the highest row, monotone, and linear in log2(bin + 1)
    assert profile[-1] == -1 and profile[0] == 1 and bool((profile[:-1] > profile[1:]).all())
    bins = torch.arange(7, -1, -1, dtype=torch.float64)
    torch.testing.assert_close(profile, 2 * torch.log2(bins + 1) / 3 - 1)
    s = torch.tensor([0.3, -0.1], dtype=torch.float64)
    torch.testing.assert_close(spectral_tilt(x, s) - x, (s.view(-1, 1, 1, 1) * profile.view(1, 1, -1, 1)).expand_as(x))


def test_masks_are_exact_silence_stripes():
    x = _images(n=2, h=8, w=8)
    y = time_mask(x, torch.tensor([2, 0]), torch.tensor([3, 0]))
    assert torch.equal(y[0, :, :, 2:5], torch.full((1, 8, 3), -1.0))
    assert torch.equal(y[0, :, :, :2], x[0, :, :, :2]) and torch.equal(y[0, :, :, 5:], x[0, :, :, 5:])
    assert torch.equal(y[1], x[1])
    y = freq_mask(x, torch.tensor([7, 1]), torch.tensor([1, 2]))
    assert torch.equal(y[0, :, 7], torch.full((1, 8), -1.0)) and torch.equal(y[0, :, :7], x[0, :, :7])
    assert torch.equal(y[1, :, 1:3], torch.full((1, 2, 8), -1.0))


@pytest.mark.parametrize("name, axis", [("time_mask", 3), ("freq_mask", 2)])
def test_pipe_masks_are_contiguous_minus_one_stripes(name, axis):
    x = _images(n=32, h=32, w=32) * 0.5  # never exactly -1 before masking
    y = _pipe(name, time_mask_max=0.25, freq_mask_max=0.25)(x, generator=_gen(4))
    for i in range(32):
        silent = (y[i] == -1)
        lines = silent.all(dim=(0, 1) if axis == 3 else (0, 2))  # fully silent columns / rows
        assert torch.equal(silent.any(dim=(0, 1) if axis == 3 else (0, 2)), lines)
        idx = lines.nonzero().flatten()
        if idx.numel():
            assert idx.numel() <= 8 and idx[-1] - idx[0] + 1 == idx.numel()
        assert torch.equal(y[i][~silent], x[i][~silent])


@pytest.mark.parametrize("name", ["xint", "gain", "contrast", "tilt"])
def test_bright_row_stays_the_brightest_row(name):
    x = torch.full((8, 1, 32, 16), -0.8)
    x[:, :, 11] = 0.9  # one loud partial at row 11
    y = _pipe(name)(x, generator=_gen(5))
    assert bool((y.mean(dim=3).argmax(dim=2) == 11).all())


@pytest.mark.parametrize("name", ["xint", "gain", "contrast"])
def test_row_constant_image_keeps_its_row_profile_ordering(name):
    rows = torch.linspace(-0.9, 0.9, 16)[torch.randperm(16, generator=_gen(6))]
    x = rows.view(1, 1, 16, 1).expand(8, 1, 16, 16).contiguous()
    y = _pipe(name)(x, generator=_gen(7))
    for i in range(8):
        assert torch.equal(y[i, 0].argsort(dim=0), x[i, 0].argsort(dim=0))


@pytest.mark.parametrize("name", NOISE_FREE)
def test_no_transform_moves_content_along_frequency(name):
    """d out[row y] / d in is concentrated on input row y: nothing leaks between frequency bins."""
    h = 8
    x = _images(n=2, h=h, w=8, dtype=torch.float64).requires_grad_(True)
    pipe = _pipe(name, time_mask_max=0.5, freq_mask_max=0.5)
    for y_row in range(h):
        out = pipe(x, generator=_gen(8))  # same draws for every row
        (grad,) = torch.autograd.grad(out[:, :, y_row].sum(), x)
        mass = grad.abs().sum(dim=(1, 3))  # [N, H]: gradient mass per input row
        for i in range(2):
            if mass[i, y_row] == 0:  # row silenced by a frequency mask: nothing flows at all
                assert name == "freq_mask" and mass[i].max() == 0
                continue
            others = torch.cat([mass[i, :y_row], mass[i, y_row + 1:]])
            assert others.max() < 0.25 * mass[i, y_row]


@pytest.mark.parametrize("name", TRANSFORMS)
def test_each_transform_is_twice_differentiable(name):
    x = _images(n=2, h=4, w=4, dtype=torch.float64).requires_grad_(True)
    pipe = _pipe(name, xint_max=0.5, time_mask_max=0.5, freq_mask_max=0.5)
    fn = lambda t: pipe(t, generator=_gen(9))  # noqa: E731  fixed draws for every evaluation
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_r1_through_the_full_pipe_matches_finite_differences():
    """The second derivative R1 needs: d/dtheta of |d D(aug(x)) / dx|^2 with a tiny linear 'D'."""
    x = _images(n=2, h=4, w=4, dtype=torch.float64)
    theta = torch.randn(1, 1, 4, 4, generator=_gen(10), dtype=torch.float64).requires_grad_(True)
    pipe = _pipe(*NOISE_FREE, "noise")

    def r1(th):
        xr = x.clone().requires_grad_(True)
        score = ((pipe(xr, generator=_gen(11)) * th) ** 2).sum()
        (g,) = torch.autograd.grad(score, xr, create_graph=True)
        return g.square().sum()

    assert torch.autograd.gradcheck(r1, (theta,))


def test_presets_and_aug_modes():
    assert build_augment_pipe("noaug") is None
    pipe = build_augment_pipe("fixed", preset="audio-nomask", p=0.25)
    assert float(pipe.p) == 0.25 and pipe.time_mask == 0 and pipe.xint == 1
    assert {k for k, v in AugmentPipe.from_preset("audio").init_kwargs.items()
            if v == 1 and not k.endswith(("_std", "_max"))} == set(TRANSFORMS)
    with pytest.raises(ValueError, match="unknown --aug mode 'bgc'"):
        build_augment_pipe("bgc")
    with pytest.raises(ValueError, match="unknown augment preset 'bgcfnc'"):
        AugmentPipe.from_preset("bgcfnc")
    with pytest.raises(ValueError, match="xint_max is a fraction"):
        AugmentPipe(xint=1, xint_max=2)
    with pytest.raises(ValueError, match="NCHW"):
        _pipe("gain")(torch.zeros(4, 4))


def test_never_flips_rotates_or_scales():
    """There is no knob for them: the pipe's parameters are the audio-safe ones only."""
    forbidden = {"xflip", "rotate90", "rotate", "scale", "aniso", "xfrac", "lumaflip", "hue", "saturation",
                 "imgfilter", "cutout", "yint"}
    assert not forbidden & set(AugmentPipe().init_kwargs)
    with pytest.raises(TypeError):
        AugmentPipe(xflip=1)


@pytest.mark.gpu
def test_transforms_on_cuda_match_cpu_and_backprop_twice():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    x = _images(n=3, h=16, w=16, dtype=torch.float64)
    xc = x.cuda()
    shifts, start, width = torch.tensor([1, -4, 7]), torch.tensor([0, 3, 9]), torch.tensor([2, 0, 5])
    slope, factor = torch.tensor([0.2, -0.1, 0.0], dtype=torch.float64), torch.tensor([1.5, 0.7, 1.0], dtype=torch.float64)
    for fn, args in [(time_shift, (shifts,)), (time_mask, (start, width)), (freq_mask, (start, width)),
                     (spectral_tilt, (slope,)), (scale_dynamic_range, (factor,))]:
        torch.testing.assert_close(fn(xc, *(a.cuda() for a in args)).cpu(), fn(x, *args))
    pipe = _pipe(*TRANSFORMS).cuda()
    xr = xc.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(pipe(xr).square().sum(), xr, create_graph=True)
    g.square().sum().backward()
    assert xr.grad is not None and torch.isfinite(xr.grad).all()
