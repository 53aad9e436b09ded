"""stylegan2.projector: the generic image-to-latent search (no audio here).

A tiny randomly initialised generator (32 x 32, 16 channels) makes the target itself, so the target
is an image the network can produce exactly and the search must close most of the distance.
"""
import math

import numpy as np
import pytest
import torch

from stylegan2 import networks
from stylegan2.projector import (
    learning_rate,
    multi_scale_distance,
    noise_buffers,
    noise_regularization,
    project,
    w_statistics,
)


def tiny_generator(seed=0, resolution=32):
    torch.manual_seed(seed)
    return networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=resolution, img_channels=1,
                              mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=16).eval()


def seed_target(G, seed=5):
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim).astype(np.float32))
    with torch.no_grad():
        ws = G.mapping(z, torch.zeros(1, 0))
        return ws[0], G.synthesis(ws, noise_mode="const", force_fp32=True)[0]


@pytest.fixture(scope="module")
def G():
    return tiny_generator()


@pytest.mark.parametrize("w_plus", [False, True])
def test_projection_closes_most_of_the_distance_to_a_reachable_image(G, w_plus):
    _, target = seed_target(G)
    before = {k: v.clone() for k, v in noise_buffers(G).items()}
    result = project(G, target, num_steps=60, w_plus=w_plus, w_avg_samples=500, seed=1)
    # Stated share: at least 80 % of the start -> target distance closed in 60 steps (about 94 % measured).
    assert result.closed_share >= 0.80, (result.start_distance, result.final_distance)
    assert result.ws.shape == (G.num_ws, G.w_dim)
    if not w_plus:
        assert torch.equal(result.ws, result.ws[:1].expand_as(result.ws))   # one w for every layer
    else:
        assert not torch.equal(result.ws[0], result.ws[-1])
    assert len(result.history) == 60 and result.history[-1]["lr"] < result.history[10]["lr"]
    # The reported image is what the generator makes for the reported latent and noise maps.
    G2 = tiny_generator()
    for name, buf in noise_buffers(G2).items():
        buf.copy_(result.noise[name])
    with torch.no_grad():
        again = G2.synthesis(result.ws[None], noise_mode="const", force_fp32=True)[0]
    torch.testing.assert_close(again, result.image, atol=1e-5, rtol=1e-5)
    assert float(multi_scale_distance(result.image[None], target[None])[0]) == pytest.approx(result.final_distance, rel=1e-5)
    # The caller's generator is untouched; the optimised noise maps are normalised.
    for k, v in noise_buffers(G).items():
        assert torch.equal(v, before[k])
    for v in result.noise.values():
        assert abs(float(v.mean())) < 1e-4 and float(v.square().mean()) == pytest.approx(1.0, rel=1e-3)


def test_start_distance_is_the_distance_at_w_avg(G):
    _, target = seed_target(G)
    result = project(G, target, num_steps=1, w_avg_samples=300)
    w_avg, _ = w_statistics(G, 300)
    with torch.no_grad():
        start = G.synthesis(w_avg[None, None].repeat(1, G.num_ws, 1), noise_mode="const", force_fp32=True)
    assert result.start_distance == pytest.approx(float(multi_scale_distance(start, target[None])[0]), rel=1e-6)


def test_extra_loss_terms_are_added_and_reported(G):
    _, target = seed_target(G)
    calls = []

    def extra(images, tgt):
        calls.append(images.shape)
        return {"mean": (images.mean() - tgt.mean()).square() * 10}

    result = project(G, target, num_steps=3, w_avg_samples=200, extra_loss=extra, regularize_noise_weight=0)
    assert calls == [(1, 1, 32, 32)] * 3
    h = result.history[0]
    assert h["loss"] == pytest.approx(h["distance"] + h["mean"], rel=1e-5)


def test_multi_scale_distance_against_a_loop():
    rng = np.random.RandomState(0)
    a, b = rng.randn(2, 1, 32, 32), rng.randn(1, 1, 32, 32)
    expect = []
    for n in range(2):
        terms, x, y = [], a[n, 0], b[0, 0]
        while True:
            terms.append(np.mean((x - y) ** 2))
            if x.shape[0] // 2 < 8:
                break
            x = x.reshape(x.shape[0] // 2, 2, -1, 2).mean(axis=(1, 3))
            y = y.reshape(y.shape[0] // 2, 2, -1, 2).mean(axis=(1, 3))
        assert len(terms) == 3                                   # 32, 16, 8
        expect.append(np.mean(terms))
    got = multi_scale_distance(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), expect, rtol=1e-6)  # computed in float32


def test_noise_regularization_against_a_loop():
    rng = np.random.RandomState(1)
    maps = [rng.randn(16, 16), rng.randn(4, 4)]

    def naive(n):
        total = 0.0
        while True:
            h, w = n.shape
            across = np.mean([n[i, j] * n[i, (j - 1) % w] for i in range(h) for j in range(w)])
            down = np.mean([n[i, j] * n[(i - 1) % h, j] for i in range(h) for j in range(w)])
            total += across ** 2 + down ** 2
            if h <= 8:
                return total
            n = n.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    got = noise_regularization([torch.tensor(m) for m in maps])
    assert float(got) == pytest.approx(sum(naive(m) for m in maps), rel=1e-6)
    # A smooth map (one value repeated over 2 x 2 blocks) is penalised far more than white noise.
    smooth = torch.tensor(np.kron(rng.randn(8, 8), np.ones((2, 2))))
    assert float(noise_regularization([smooth])) > 10 * float(noise_regularization([torch.tensor(maps[0])]))


def test_learning_rate_schedule():
    assert learning_rate(0, 1000) == 0.0                                  # linear ramp-up from 0 ...
    assert learning_rate(25, 1000) == pytest.approx(0.05)                 # ... over the first 5 %
    assert learning_rate(500, 1000) == pytest.approx(0.1)
    assert learning_rate(875, 1000) == pytest.approx(0.1 * (0.5 - 0.5 * math.cos(0.5 * math.pi)))  # cosine ramp-down
    assert learning_rate(999, 1000) < 0.001


def test_bad_target_shape_and_steps(G):
    with pytest.raises(ValueError, match=r"target has shape \[1, 16, 16\], the generator makes \[1, 32, 32\]"):
        project(G, torch.zeros(1, 16, 16), num_steps=1, w_avg_samples=10)
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        project(G, torch.zeros(1, 32, 32), num_steps=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_projection_on_cuda_closes_the_distance_like_on_the_cpu():
    G = tiny_generator()
    _, target = seed_target(G)
    cpu = project(G, target, num_steps=60, w_avg_samples=500, seed=1)
    gpu = project(G.cuda(), target.cuda(), num_steps=60, w_avg_samples=500, seed=1, device="cuda")
    assert gpu.closed_share >= 0.80
    assert gpu.ws.device.type == "cpu" and gpu.image.device.type == "cpu"
    assert gpu.start_distance == pytest.approx(cpu.start_distance, rel=1e-3)
