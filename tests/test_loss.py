"""StyleGAN2 loss: each term equals an independent computation on tiny toy networks.

The toy G and D follow the network interface (``mapping``/``synthesis``/``num_ws``, ``D(img, c)``)
and are smooth (tanh/softplus) so that the second derivatives R1 and path length need are non-zero.
References are written independently: by hand with softplus, with per-sample autograd loops,
with explicit Jacobians, and with finite differences.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from stylegan2 import stats
from stylegan2.loss import StyleGAN2Loss, lazy_regularization_adam

RES, NUM_WS, Z, W = 8, 4, 6, 5


class ToyMapping(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(Z, W)
        self.calls = []

    def forward(self, z, c, update_emas=False):
        self.calls.append(update_emas)
        w = torch.tanh(self.fc(z))
        return w.unsqueeze(1).repeat(1, NUM_WS, 1)


class ToySynthesis(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(NUM_WS * W, RES * RES)

    def forward(self, ws):
        return torch.tanh(self.fc(ws.flatten(1))).view(-1, 1, RES, RES)


class ToyG(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mapping = ToyMapping()
        self.synthesis = ToySynthesis()
        self.num_ws, self.z_dim, self.c_dim = NUM_WS, Z, 0


class ToyD(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 3, padding=1)
        self.fc = torch.nn.Linear(3 * RES * RES, 1)

    def forward(self, img, c):
        return self.fc(F.softplus(self.conv(img)).flatten(1))


def make(seed=0, **kwargs):
    torch.manual_seed(seed)
    G, D = ToyG().double(), ToyD().double()
    kwargs.setdefault("style_mixing_prob", 0.0)
    return G, D, StyleGAN2Loss(G, D, **kwargs)


def batch(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(n, 1, RES, RES, generator=g, dtype=torch.float64) * 2 - 1
    z = torch.randn(n, Z, generator=g, dtype=torch.float64)
    c = torch.zeros(n, 0, dtype=torch.float64)
    return real, c, z, c


def grads(module):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


def reference_grads(module, scalar):
    return list(torch.autograd.grad(scalar, list(module.parameters()), allow_unused=True))


def assert_all_close(got, want, **tol):
    for g, w in zip(got, want):
        w = torch.zeros_like(g) if w is None else w
        torch.testing.assert_close(g, w, **tol)


def test_generator_main_loss_is_softplus_of_negated_fake_logits():
    G, D, loss = make()
    real, rc, z, c = batch()
    stats.reset()
    collector = stats.Collector("Loss/.*")
    loss.accumulate_gradients("Gmain", real, rc, z, c, gain=3.0, cur_nimg=0)
    collector.update()

    logits = D(G.synthesis(G.mapping(z, c)), c)
    by_hand = torch.log1p(torch.exp(-logits))            # softplus(-x) written out
    assert_all_close(grads(G), reference_grads(G, by_hand.mean() * 3.0))
    assert collector.mean("Loss/G/loss") == pytest.approx(float(by_hand.mean().detach()), rel=1e-12)
    assert collector.num("Loss/G/loss") == 4


def test_discriminator_main_loss_is_softplus_of_fake_plus_softplus_of_negated_real():
    G, D, loss = make()
    real, rc, z, c = batch()
    for p in G.parameters():
        p.requires_grad_(False)
    stats.reset()
    collector = stats.Collector()
    loss.accumulate_gradients("Dmain", real, rc, z, c, gain=1.0, cur_nimg=0)
    collector.update()

    fake_logits = D(G.synthesis(G.mapping(z, c)), c)
    real_logits = D(real, rc)
    by_hand = torch.log1p(torch.exp(fake_logits)) + torch.log1p(torch.exp(-real_logits))
    assert_all_close(grads(D), reference_grads(D, by_hand.mean()))
    assert collector.mean("Loss/D/loss") == pytest.approx(float(by_hand.mean().detach()), rel=1e-12)
    assert collector.mean("Loss/signs/real") == pytest.approx(float(real_logits.detach().sign().mean()))
    # The fake pass of the D phase is the one that updates the mapping network's moving averages.
    assert True in G.mapping.calls


def test_r1_penalty_matches_finite_differences_and_per_sample_autograd():
    G, D, loss = make(r1_gamma=7.0)
    real, rc, z, c = batch(n=3)
    stats.reset()
    collector = stats.Collector("Loss/r1_penalty")
    loss.accumulate_gradients("Dreg", real, rc, z, c, gain=16.0, cur_nimg=0)
    collector.update()

    # Penalty value: squared input-gradient norm of D per sample, by central finite differences.
    eps = 1e-6
    fd_penalties = []
    for i in range(real.shape[0]):
        x = real[i:i + 1]
        steps = torch.eye(x.numel(), dtype=x.dtype).view(-1, *x.shape[1:]) * eps   # one image per pixel
        c_rep = rc[:1].expand(steps.shape[0], -1)
        g = (D(x + steps, c_rep) - D(x - steps, c_rep)).detach().flatten() / (2 * eps)
        fd_penalties.append(float(g.square().sum()))
    assert collector.mean("Loss/r1_penalty") == pytest.approx(sum(fd_penalties) / 3, rel=1e-6)

    # Parameter gradient: per-sample autograd of (gamma / 2) * |dD/dx|^2, averaged, times the gain.
    total = 0
    for i in range(real.shape[0]):
        x = real[i:i + 1].clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(D(x, rc[:1]).sum(), x, create_graph=True)
        total = total + 7.0 / 2 * gx.square().sum()
    assert_all_close(grads(D), reference_grads(D, total / 3 * 16.0))


def test_r1_is_taken_through_the_augmentation_with_respect_to_unaugmented_reals():
    scale = 2.5
    G, D, loss = make(augment_pipe=lambda x: x * scale + 0.1)
    real, rc, z, c = batch(n=2)
    stats.reset()
    collector = stats.Collector("Loss/r1_penalty")
    loss.accumulate_gradients("Dreg", real, rc, z, c, gain=1.0, cur_nimg=0)
    collector.update()
    want = []
    for i in range(2):
        y = (real[i:i + 1] * scale + 0.1).requires_grad_(True)
        (gy,) = torch.autograd.grad(D(y, rc[:1]).sum(), y)
        want.append(float((gy * scale).square().sum()))  # chain rule through the augmentation
    assert collector.mean("Loss/r1_penalty") == pytest.approx(sum(want) / 2, rel=1e-10)


def test_path_length_penalty_matches_explicit_jacobian_and_pl_mean_update():
    G, D, loss = make(pl_weight=2.0, pl_batch_shrink=2, pl_decay=0.01)
    real, rc, z, c = batch(n=4)
    loss.pl_mean.fill_(0.3)
    torch.manual_seed(123)
    loss.accumulate_gradients("Greg", real, rc, z, c, gain=4.0, cur_nimg=0)
    got = grads(G)

    # Independent: y drawn with the same seed; a_i = |J_i^T y_i| / sqrt(num_ws) from the full Jacobian.
    torch.manual_seed(123)
    n = 2
    y = torch.randn(n, 1, RES, RES, dtype=torch.float64) / math.sqrt(RES * RES)
    total, lengths = 0, []
    for i in range(n):
        ws = G.mapping(z[i:i + 1], c[i:i + 1])
        jac = torch.autograd.functional.jacobian(lambda w: G.synthesis(w), ws, create_graph=True)
        jac = jac.reshape(RES * RES, NUM_WS * W)
        g = (jac.T @ y[i].flatten()).view(NUM_WS, W)
        a = torch.sqrt(g.square().sum(dim=1).mean())
        lengths.append(float(a.detach()))
        total = total + 2.0 * (a - 0.3) ** 2
    assert_all_close(got, reference_grads(G, total / n * 4.0))

    loss.finish_phase("Greg")
    assert float(loss.pl_mean) == pytest.approx(0.3 + 0.01 * (sum(lengths) / n - 0.3), rel=1e-6)
    # pl_mean survives a state_dict round trip, which is what the snapshot stores.
    state = loss.state_dict()
    _, _, other = make()
    other.load_state_dict(state)
    assert float(other.pl_mean) == float(loss.pl_mean)


def test_pl_mean_update_is_the_same_however_the_batch_is_split_over_ranks():
    real, rc, z, c = batch(n=8)
    _, _, one = make()                                # one rank, two accumulation rounds
    for seed, sl in ((5, slice(0, 4)), (6, slice(4, 8))):
        torch.manual_seed(seed)
        one.accumulate_gradients("Greg", real[sl], rc[sl], z[sl], c[sl], gain=0.5, cur_nimg=0)
    one.finish_phase("Greg")

    ranks = [make()[2], make()[2]]                    # two ranks, one round each
    for loss, seed, sl in ((ranks[0], 5, slice(0, 4)), (ranks[1], 6, slice(4, 8))):
        torch.manual_seed(seed)
        loss.accumulate_gradients("Greg", real[sl], rc[sl], z[sl], c[sl], gain=1.0, cur_nimg=0)
    sums = [torch.stack([l._pl_sum, l._pl_num]).clone() for l in ranks]

    def fake_all_reduce(t):                           # what torch.distributed.all_reduce(SUM) does
        t.copy_(sums[0] + sums[1])
    for loss in ranks:
        loss.finish_phase("Greg", all_reduce=fake_all_reduce)
    assert float(one.pl_mean) > 0
    for loss in ranks:
        assert float(loss.pl_mean) == pytest.approx(float(one.pl_mean), rel=1e-12)


def test_style_mixing_keeps_ws_before_the_cutoff_and_takes_the_rest_from_new_latents():
    G, D, loss = make(style_mixing_prob=1.0)
    z = torch.randn(3, Z, dtype=torch.float64)
    c = torch.zeros(3, 0, dtype=torch.float64)
    ws = G.mapping(z, c)
    cutoffs = set()
    for seed in range(40):
        torch.manual_seed(seed)
        mixed = loss.style_mix(ws, z, c)
        same = [bool(torch.equal(mixed[:, i], ws[:, i])) for i in range(NUM_WS)]
        cutoff = same.index(False)
        assert all(same[:cutoff]) and not any(same[cutoff:])
        cutoffs.add(cutoff)
    assert cutoffs == set(range(1, NUM_WS))     # uniform in [1, num_ws): all values occur
    loss.style_mixing_prob = 0.0
    assert torch.equal(loss.style_mix(ws, z, c), ws)


def test_lazy_regularization_adam_correction():
    lr, betas = lazy_regularization_adam(0.002, (0.0, 0.99), 4)
    assert lr == pytest.approx(0.0016)
    assert betas[0] == 0.0 and betas[1] == pytest.approx(0.99199, abs=1e-5)   # StyleGAN2-ADA training/loss.py
    lr, betas = lazy_regularization_adam(0.002, (0.0, 0.99), 16)
    assert lr / 0.002 == pytest.approx(0.9412, abs=1e-4) and betas[1] == pytest.approx(0.99059, abs=1e-5)
    assert lazy_regularization_adam(0.001, (0.5, 0.9), None) == (0.001, (0.5, 0.9))


def test_unknown_phase_is_a_clear_error():
    G, D, loss = make()
    real, rc, z, c = batch()
    with pytest.raises(ValueError, match="unknown loss phase 'Gfoo'"):
        loss.accumulate_gradients("Gfoo", real, rc, z, c, gain=1.0, cur_nimg=0)
