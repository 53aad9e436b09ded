"""StyleGAN2 generator and discriminator: shapes, equalized lr, mapping, noise, parameter counts."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylegan2.networks import (
    Conv2dLayer,
    Discriminator,
    FullyConnectedLayer,
    Generator,
    MappingNetwork,
    MinibatchStdLayer,
    SynthesisNetwork,
)

SMALL = dict(channel_base=1024, channel_max=32)


def _g(res=16, img_channels=1, c_dim=0, **kw):
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=res, img_channels=img_channels,
                     mapping_kwargs=dict(num_layers=2), **{**SMALL, **kw})


def _d(res=16, img_channels=1, c_dim=0, **kw):
    torch.manual_seed(1)
    return Discriminator(c_dim=c_dim, img_resolution=res, img_channels=img_channels, mbstd_group_size=2,
                         mapping_kwargs=dict(num_layers=2), **{**SMALL, **kw})


def _count(net):
    return sum(p.numel() for p in net.parameters())


# ------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("res", [16, 32, 64])
@pytest.mark.parametrize("img_channels", [1, 3])
def test_generator_and_discriminator_shapes(res, img_channels):
    G, D = _g(res, img_channels), _d(res, img_channels)
    z = torch.randn(2, G.z_dim)
    img = G(z, None)
    assert img.shape == (2, img_channels, res, res) and img.dtype == torch.float32
    assert torch.isfinite(img).all()
    logits = D(img, None)
    assert logits.shape == (2, 1) and torch.isfinite(logits).all()


@pytest.mark.parametrize("res", [4, 8, 16, 64, 256, 1024])
def test_num_ws_is_two_per_resolution_doubling(res):
    with torch.device("meta"):
        G = Generator(z_dim=8, w_dim=8, img_resolution=res, img_channels=1, channel_base=2048, channel_max=8)
    assert G.num_ws == 2 * int(math.log2(res)) - 2
    assert G.mapping(torch.zeros(3, 8, device="meta"), None).shape == (3, G.num_ws, 8)


@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
def test_every_architecture_variant_builds_and_runs(architecture):
    G = _g(16, architecture=architecture)
    D = _d(16, architecture=architecture)
    img = G(torch.randn(2, G.z_dim), None)
    assert img.shape == (2, 1, 16, 16) and D(img, None).shape == (2, 1)
    assert G.num_ws == 6
    # Only the skip generator has a ToRGB per block; only the resnet variants have skip convs.
    assert hasattr(G.synthesis.b8, "torgb") == (architecture == "skip")
    assert hasattr(D.b16, "skip") == (architecture == "resnet")
    assert hasattr(D.b8, "fromrgb") == (architecture == "skip")


def test_conditional_networks_use_the_label():
    G, D = _g(16, c_dim=3), _d(16, c_dim=3)
    z = torch.randn(4, G.z_dim)
    c0 = F.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()
    c1 = F.one_hot(torch.tensor([1, 2, 0, 1]), 3).float()
    G.eval()
    img0 = G(z, c0, noise_mode="const")
    assert img0.shape == (4, 1, 16, 16)
    assert not torch.allclose(img0, G(z, c1, noise_mode="const"))
    logits = D(img0, c0)
    assert logits.shape == (4, 1)
    assert not torch.allclose(logits, D(img0, c1))
    with pytest.raises(ValueError, match=r"labels must be \[N, 3\]"):
        D(img0, None)


def test_wrong_image_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"images must be \[N, 1, 16, 16\], got \(2, 1, 32, 32\)"):
        _d(16)(torch.zeros(2, 1, 32, 32), None)
    with pytest.raises(ValueError, match="power of two"):
        Generator(z_dim=4, w_dim=4, img_resolution=48, img_channels=1)


# ------------------------------------------------------------------------------- equalized learning rate

def test_fully_connected_layer_scales_weights_at_run_time():
    torch.manual_seed(2)
    layer = FullyConnectedLayer(6, 4, lr_multiplier=0.01, bias_init=0.5)
    with torch.no_grad():
        layer.bias.copy_(torch.randn(4))
    x = torch.randn(5, 6)
    stored_w = layer.weight.detach().numpy().astype(np.float64)
    stored_b = layer.bias.detach().numpy().astype(np.float64)
    ref = x.numpy() @ (stored_w * 0.01 / np.sqrt(6)).T + stored_b * 0.01
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, rtol=1e-5, atol=1e-6)


def test_fully_connected_initialisation_is_unit_variance_after_scaling():
    torch.manual_seed(3)
    layer = FullyConnectedLayer(256, 512, lr_multiplier=0.01, bias_init=1)
    effective = layer.weight.detach() * layer.weight_gain * math.sqrt(256)
    assert float(effective.std()) == pytest.approx(1.0, abs=0.02)
    assert float(layer.weight.detach().std()) == pytest.approx(100.0, rel=0.02)  # stored N(0,1)/lr_mul
    assert torch.allclose(layer.bias * layer.bias_gain, torch.ones(512))


def test_conv_layer_applies_he_gain_activation_gain_and_clamp():
    torch.manual_seed(4)
    layer = Conv2dLayer(3, 5, kernel_size=3, activation="lrelu", conv_clamp=0.5)
    x = torch.randn(2, 3, 6, 6)
    w = layer.weight.detach() / math.sqrt(3 * 9)
    pre = F.conv2d(x.double(), w.double(), padding=1).numpy()
    ref = np.clip(np.where(pre >= 0, pre, 0.2 * pre) * np.sqrt(2) * 0.7, -0.5 * 0.7, 0.5 * 0.7)
    np.testing.assert_allclose(layer(x, gain=0.7).detach().numpy(), ref, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- mapping network

def test_mapping_normalises_z_by_its_second_moment():
    mapping = MappingNetwork(z_dim=8, c_dim=0, w_dim=8, num_ws=3, num_layers=2)
    z = torch.randn(4, 8)
    np.testing.assert_allclose(mapping(z, None).detach().numpy(), mapping(z * 37.0, None).detach().numpy(),
                               rtol=1e-5, atol=1e-6)


def test_w_avg_tracks_the_batch_mean_with_beta():
    mapping = MappingNetwork(z_dim=8, c_dim=0, w_dim=8, num_ws=3, num_layers=2, w_avg_beta=0.995)
    with torch.no_grad():
        mapping.w_avg.copy_(torch.randn(8))
    old = mapping.w_avg.clone().numpy()
    z = torch.randn(6, 8)
    w = mapping(z, None, update_emas=True)[:, 0].detach().numpy()
    expected = w.mean(axis=0) + 0.995 * (old - w.mean(axis=0))
    np.testing.assert_allclose(mapping.w_avg.numpy(), expected, rtol=1e-5, atol=1e-6)
    mapping(z, None)  # update_emas=False leaves it alone
    np.testing.assert_allclose(mapping.w_avg.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_truncation_psi_zero_gives_w_avg_and_cutoff_limits_it():
    mapping = MappingNetwork(z_dim=8, c_dim=0, w_dim=8, num_ws=5, num_layers=2)
    with torch.no_grad():
        mapping.w_avg.copy_(torch.randn(8))
    z = torch.randn(3, 8)
    w_full = mapping(z, None)
    w0 = mapping(z, None, truncation_psi=0)
    assert torch.allclose(w0, mapping.w_avg.expand(3, 5, 8))
    w_half = mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    assert torch.allclose(w_half[:, :2], 0.5 * (w_full[:, :2] + mapping.w_avg), atol=1e-6)
    assert torch.equal(w_half[:, 2:], w_full[:, 2:])


# ------------------------------------------------------------------------------- synthesis

def _set_noise_strength(G, value):
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(value)


def test_noise_starts_at_zero_strength_so_every_mode_agrees():
    G = _g(16).eval()
    ws = G.mapping(torch.randn(2, G.z_dim), None)
    ref = G.synthesis(ws, noise_mode="none")
    assert torch.allclose(G.synthesis(ws, noise_mode="random"), ref)
    assert torch.allclose(G.synthesis(ws, noise_mode="const"), ref)


def test_noise_modes_const_is_repeatable_and_none_differs_from_random():
    G = _g(16).eval()
    _set_noise_strength(G, 1.0)
    ws = G.mapping(torch.randn(2, G.z_dim), None)
    const_a, const_b = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
    assert torch.equal(const_a, const_b)
    rand_a, rand_b = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
    none = G.synthesis(ws, noise_mode="none")
    assert not torch.allclose(rand_a, rand_b)
    assert not torch.allclose(rand_a, none)
    assert torch.equal(none, G.synthesis(ws, noise_mode="none"))
    with pytest.raises(ValueError, match="noise_mode must be one of"):
        G.synthesis(ws, noise_mode="fresh")


def test_fused_and_non_fused_modulation_give_the_same_image():
    G = _g(16)
    _set_noise_strength(G, 0.3)
    ws = G.mapping(torch.randn(3, G.z_dim), None)
    a = G.synthesis(ws, noise_mode="const", fused_modconv=True)
    b = G.synthesis(ws, noise_mode="const", fused_modconv=False)
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_fp16_blocks_run_in_fp32_on_cpu():
    G16 = _g(16, num_fp16_res=2, conv_clamp=256)
    G32 = _g(16, conv_clamp=256)
    G32.load_state_dict(G16.state_dict())
    z = torch.randn(2, G16.z_dim)
    assert torch.equal(G16(z, None, noise_mode="none"), G32(z, None, noise_mode="none"))


def test_conv_clamp_bounds_every_torgb_output():
    # Each ToRGB output is clamped to +-conv_clamp and [1,3,3,1] upsampling (non-negative taps, each
    # polyphase component summing to 1) cannot grow the maximum, so |img| <= blocks * conv_clamp.
    G = _g(16, conv_clamp=1e-3)
    img = G(torch.randn(3, G.z_dim), None).detach()
    blocks = len(G.synthesis.block_resolutions)
    assert float(img.abs().max()) <= blocks * 1e-3 + 1e-9
    assert float(img.abs().max()) > 1e-3  # and the clamp is what bounds it, not a tiny output


def test_channel_formula_and_const_input():
    synthesis = SynthesisNetwork(w_dim=8, img_resolution=64, img_channels=1, channel_base=512, channel_max=64)
    widths = {res: getattr(synthesis, f"b{res}").conv1.weight.shape[0] for res in synthesis.block_resolutions}
    assert widths == {4: 64, 8: 64, 16: 32, 32: 16, 64: 8}
    assert synthesis.b4.const.shape == (64, 4, 4)


# ------------------------------------------------------------------------------- discriminator

def test_minibatch_stddev_matches_numpy():
    x = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    y = MinibatchStdLayer(group_size=3, num_channels=2)(x).numpy()
    assert y.shape == (6, 6, 3, 3)
    xn = x.numpy()
    for i in range(6):
        members = xn[i % 2::2]  # samples i, i+2, i+4 share a group
        for f in range(2):
            part = members[:, 2 * f:2 * f + 2]
            expected = np.sqrt(part.var(axis=0) + 1e-8).mean()
            np.testing.assert_allclose(y[i, 4 + f], expected, rtol=1e-6)
    np.testing.assert_array_equal(y[:, :4], xn)


def test_minibatch_group_must_divide_the_batch():
    with pytest.raises(ValueError, match="batch of 6 is not divisible by the group size 4"):
        MinibatchStdLayer(group_size=4)(torch.zeros(6, 2, 4, 4))


def test_freezing_discriminator_layers_turns_them_into_buffers():
    full = _count(_d(16))
    frozen = _d(16, block_kwargs=dict(freeze_layers=2))
    b16 = frozen.b16
    assert _count(frozen) == full - sum(t.numel() for t in
                                        [b16.fromrgb.weight, b16.fromrgb.bias, b16.conv0.weight, b16.conv0.bias])
    assert not isinstance(b16.conv0.weight, torch.nn.Parameter)
    assert isinstance(b16.conv1.weight, torch.nn.Parameter)


def test_regularisers_can_differentiate_through_input_gradients():
    # R1 needs d/dtheta of |dD/dx|^2 and path length needs d/dtheta of |J^T y|: second-order grads
    # through every op (bias_act, upfirdn2d, resampling and modulated convs, minibatch-stddev).
    G, D = _g(16).train(), _d(16)
    _set_noise_strength(G, 0.1)
    img = G(torch.randn(2, G.z_dim), None).detach().requires_grad_(True)
    (grad_x,) = torch.autograd.grad(D(img, None).sum(), img, create_graph=True)
    grad_x.square().sum().backward()
    assert float(D.b16.conv0.weight.grad.abs().sum()) > 0 and float(D.b4.fc.weight.grad.abs().sum()) > 0
    ws = G.mapping(torch.randn(2, G.z_dim), None).detach().requires_grad_(True)
    out = G.synthesis(ws)
    (grad_w,) = torch.autograd.grad((out * torch.randn_like(out)).sum(), ws, create_graph=True)
    grad_w.square().sum().sqrt().backward()
    assert float(G.synthesis.b16.conv0.weight.grad.abs().sum()) > 0
    assert float(G.synthesis.b8.conv1.affine.weight.grad.abs().sum()) > 0


# ------------------------------------------------------------------------------- rebuild and counts

def test_init_kwargs_are_plain_data_and_rebuild_identical_networks():
    G, D = _g(16, c_dim=2, num_fp16_res=1), _d(16, c_dim=2)
    for net in (G, D):
        kwargs = json.loads(json.dumps(net.init_kwargs))
        clone = type(net)(**kwargs)
        clone.load_state_dict(net.state_dict())
    G2 = Generator(**json.loads(json.dumps(G.init_kwargs)))
    G2.load_state_dict(G.state_dict())
    z, c = torch.randn(2, G.z_dim), torch.eye(2)
    assert torch.equal(G.eval()(z, c, noise_mode="const"), G2.eval()(z, c, noise_mode="const"))


# Upstream parameter counts, measured by instantiating the upstream classes (docs/references.md, StyleGAN2-ADA).
@pytest.mark.parametrize("res, cbase, mapping_layers, g_params, d_params", [
    (1024, 32768, 8, 30.36e6, 29.01e6),
    (1024, 32768, 2, 28.79e6, 29.01e6),
    (512, 32768, 2, 28.69e6, 28.98e6),
    (256, 16384, 2, 23.19e6, 24.00e6),
    (64, 16384, 2, 22.24e6, 23.41e6),
])
def test_parameter_counts_equal_upstream(res, cbase, mapping_layers, g_params, d_params):
    with torch.device("meta"):  # shapes only: no memory, no forward pass
        G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=1,
                      mapping_kwargs=dict(num_layers=mapping_layers), channel_base=cbase, channel_max=512)
        D = Discriminator(c_dim=0, img_resolution=res, img_channels=1, channel_base=cbase, channel_max=512)
    assert _count(G) == pytest.approx(g_params, abs=0.005e6)
    assert _count(D) == pytest.approx(d_params, abs=0.005e6)
    assert _count(G.mapping) == mapping_layers * (512 * 512 + 512)


# ------------------------------------------------------------------------------- CUDA (fp16 blocks)

@pytest.mark.gpu
def test_fp16_blocks_on_cuda_stay_close_to_fp32_and_support_double_backward():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    G = _g(32, num_fp16_res=2, conv_clamp=256).cuda().eval()
    D = _d(32, num_fp16_res=2, conv_clamp=256).cuda()
    z = torch.randn(4, G.z_dim, device="cuda")
    mixed = G(z, None, noise_mode="const")
    full = G(z, None, noise_mode="const", force_fp32=True)
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed).all()
    assert float((mixed - full).norm() / full.norm()) < 2e-2
    # R1-style penalty through fp16 discriminator blocks: gradient of a gradient.
    img = full.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(img, None).sum(), img, create_graph=True)
    grad.square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in D.parameters() if p.grad is not None)
