"""The generator's inference fast path (stylegan2/ops/fused_inference.py) against the reference layers."""
import pytest
import torch

from stylegan2.networks import Generator, SynthesisLayer, ToRGBLayer
from stylegan2.ops import fused_inference


@pytest.fixture
def reference_mode():
    """Run a block of code on the reference path, then restore the fast path."""
    fused_inference.set_enabled(False)
    yield
    fused_inference.set_enabled(None)


def _both(fn):
    """fn() on the reference path and on the fast path (with autograd off), as a pair."""
    with torch.no_grad():
        fused_inference.set_enabled(False)
        try:
            ref = fn()
        finally:
            fused_inference.set_enabled(True)
        try:
            fast = fn()
        finally:
            fused_inference.set_enabled(None)
    return ref, fast


def _close(a, b, rtol=2e-5):
    """Equal up to float32 rounding relative to the tensor's scale."""
    scale = float(a.abs().max())
    err = float((a - b).abs().max())
    assert err <= rtol * max(scale, 1e-6), f"max |diff| {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("noise_mode", ["const", "random", "none"])
@pytest.mark.parametrize("conv_clamp", [None, 0.5])
def test_synthesis_layer_matches_reference(up, batch, noise_mode, conv_clamp):
    torch.manual_seed(1)
    res = 16
    layer = SynthesisLayer(8, 6, w_dim=12, resolution=res, up=up, conv_clamp=conv_clamp).eval()
    with torch.no_grad():
        layer.noise_strength.fill_(0.7)
        layer.bias.normal_()
    x = torch.randn(batch, 8, res // up, res // up)
    w = torch.randn(batch, 12)

    def run():
        torch.manual_seed(5)  # the same random noise on both paths
        return layer(x, w, noise_mode=noise_mode, gain=0.8)

    ref, fast = _both(run)
    assert fast.shape == ref.shape == (batch, 6, res, res)
    _close(ref, fast)
    if conv_clamp is not None:
        assert float(fast.abs().max()) <= conv_clamp * 0.8 + 1e-6
        assert float(ref.abs().max()) == pytest.approx(conv_clamp * 0.8)  # the clamp bites in this test


def test_torgb_matches_reference():
    torch.manual_seed(2)
    layer = ToRGBLayer(8, 1, w_dim=12, conv_clamp=0.3).eval()
    with torch.no_grad():
        layer.bias.fill_(0.1)
    x, w = torch.randn(2, 8, 16, 16), torch.randn(2, 12)
    ref, fast = _both(lambda: layer(x, w))
    _close(ref, fast)


def test_generator_image_matches_reference():
    torch.manual_seed(3)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=1,
                  mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=32, conv_clamp=256).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or name.endswith("bias"):
                p.normal_(0, 0.3)
    z = torch.randn(2, 16)
    ref, fast = _both(lambda: G(z, None, noise_mode="const"))
    assert fast.shape == (2, 1, 32, 32)
    _close(ref, fast, rtol=1e-4)


def test_fast_path_only_without_autograd():
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        assert fused_inference.applies(x, "lrelu")
        assert not fused_inference.applies(x, "tanh")          # gain does not commute with tanh
        assert not fused_inference.applies(x.double(), "lrelu")
    assert not fused_inference.applies(x, "lrelu")            # autograd on: the reference path


def test_training_path_keeps_second_derivatives():
    """With autograd on the layer still supports double backward (R1 / path-length regularisation)."""
    torch.manual_seed(4)
    layer = SynthesisLayer(4, 4, w_dim=8, resolution=8, up=2)
    x = torch.randn(1, 4, 4, 4, requires_grad=True)
    y = layer(x, torch.randn(1, 8), noise_mode="const")
    (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    g.square().sum().backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()


def test_switch_and_environment(monkeypatch, reference_mode):
    assert not fused_inference.is_enabled()
    fused_inference.set_enabled(None)
    monkeypatch.setenv(fused_inference.ENV_VAR, "0")
    assert not fused_inference.is_enabled()
    monkeypatch.setenv(fused_inference.ENV_VAR, "1")
    assert fused_inference.is_enabled()


@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 1, 1, 4, 2]])
def test_upsample2d_as_transposed_conv(taps):
    from stylegan2.ops.upfirdn2d import setup_filter, upsample2d
    f = setup_filter(taps)
    x = torch.randn(2, 3, 7, 9)
    ref = upsample2d(x, f)
    fast = fused_inference.upsample2d(x, f)
    assert fast.shape == ref.shape == (2, 3, 14, 18)
    _close(ref, fast)


def test_generator_uses_the_fast_layers(monkeypatch):
    """The equality test above is only meaningful if the fast path really ran: count its calls."""
    calls = []
    real = fused_inference.modulated_layer
    monkeypatch.setattr(fused_inference, "modulated_layer", lambda *a, **k: calls.append(1) or real(*a, **k))
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=1,
                  mapping_kwargs=dict(num_layers=1), channel_base=64, channel_max=16).eval()
    with torch.no_grad():
        G(torch.randn(1, 8), None, noise_mode="const")
    assert len(calls) == G.synthesis.num_ws + 2  # every conv layer and every ToRGB (3 blocks: 5 convs + 3 ToRGB)
    calls.clear()
    G(torch.randn(1, 8), None, noise_mode="const")  # autograd on: reference path
    assert calls == []


@pytest.mark.skipif(not fused_inference.bf16_supported(), reason="this CPU has no oneDNN bf16 kernels")
def test_bf16_blocks_run_in_bfloat16_and_stay_close():
    torch.manual_seed(6)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=1, num_fp16_res=2,
                  mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=32, conv_clamp=256).eval()
    z = torch.randn(1, 16)
    seen = []
    real = fused_inference.modulated_layer

    def spy(x, *a, **k):
        seen.append(x.dtype)
        return real(x, *a, **k)

    with torch.no_grad():
        fused_inference.set_enabled(True)
        full = G(z, None, noise_mode="const", force_fp32=True)
        fused_inference.set_enabled(True, torch.bfloat16)
        fused_inference.modulated_layer = spy
        try:
            low = G(z, None, noise_mode="const", force_fp32=True)
        finally:
            fused_inference.modulated_layer = real
            fused_inference.set_enabled(None)
    assert low.dtype == torch.float32
    assert torch.bfloat16 in seen and torch.float32 in seen  # the two top resolutions only
    rel = float((low - full).norm() / full.norm())
    assert 0 < rel < 0.05


def test_dense_layer_cache_follows_in_place_updates():
    """The cached scaled weight must not outlive an optimizer step (an in-place update under no_grad)."""
    from stylegan2.networks import FullyConnectedLayer
    torch.manual_seed(7)
    fc = FullyConnectedLayer(6, 4, activation="lrelu", lr_multiplier=0.01, bias_init=0.5)
    x = torch.randn(3, 6)
    for _ in range(2):
        ref, fast = _both(lambda: fc(x))
        _close(ref, fast)
        with torch.no_grad():
            fc.weight.add_(torch.randn_like(fc.weight))
            fc.bias.mul_(-3.0)
    ref2, fast2 = _both(lambda: fc(x))
    _close(ref2, fast2)
    assert not torch.allclose(fast, fast2)
