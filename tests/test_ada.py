"""The ADA controller raises p when D is overconfident on reals, lowers it otherwise, by exact steps."""
import pytest
import torch

from stylegan2.ada import AdaController
from stylegan2.augment import AugmentPipe


def _logits(n, frac_positive, seed=0):
    """n real logits of which round(frac_positive * n) are positive."""
    k = round(frac_positive * n)
    values = torch.rand(n, generator=torch.Generator().manual_seed(seed)) + 0.1
    values[k:] *= -1
    return values.view(n, 1)


def _run(ctrl, frac_positive, iterations, pipe=None):
    for i in range(iterations):
        ctrl.accumulate(_logits(16, frac_positive, seed=i))
        ctrl.step(pipe)


def test_step_size_is_batch_times_interval_over_ada_kimg():
    ctrl = AdaController(target=0.6, interval=4, ada_kimg=500, batch_size=32)
    assert ctrl.step_size == 32 * 4 / 500_000
    _run(ctrl, 1.0, 4)
    assert ctrl.p == 32 * 4 / 500_000 and ctrl.rt == 1.0


def test_p_moves_up_when_d_is_overconfident_on_reals():
    ctrl = AdaController(batch_size=64, interval=4, ada_kimg=100)
    _run(ctrl, 0.95, 40)  # r_t = 0.9 > 0.6 on every update
    assert ctrl.p == pytest.approx(10 * 64 * 4 / 100_000)


def test_p_moves_down_and_never_below_zero():
    ctrl = AdaController(batch_size=64, interval=4, ada_kimg=100, p=3 * 64 * 4 / 100_000)
    _run(ctrl, 0.5, 12)  # r_t = 0 < 0.6
    assert ctrl.p == pytest.approx(0, abs=1e-15)
    _run(ctrl, 0.5, 40)
    assert ctrl.p == 0.0


def test_updates_only_every_interval_iterations_and_sets_the_pipe():
    pipe = AugmentPipe(gain=1)
    ctrl = AdaController(interval=3, batch_size=8, ada_kimg=1)
    for i in range(1, 7):
        ctrl.accumulate(torch.ones(8, 1))
        updated = ctrl.step(pipe)
        assert updated == (i % 3 == 0)
    assert ctrl.p == pytest.approx(2 * 8 * 3 / 1000)
    assert float(pipe.p) == pytest.approx(ctrl.p)


def test_signs_not_magnitudes_decide():
    # One huge positive logit against three tiny negatives: mean logit > 0, but r_t = -0.5.
    ctrl = AdaController(interval=1, batch_size=4, p=0.5)
    ctrl.accumulate(torch.tensor([100.0, -0.01, -0.01, -0.01]))
    ctrl.step()
    assert ctrl.rt == -0.5 and ctrl.p < 0.5


def test_all_reduced_sums_across_ranks_match_one_process():
    """Two ranks whose (sum, count) are summed see the same p as one rank seeing all logits."""
    batches = [_logits(8, f, seed=i) for i, f in enumerate([0.9, 0.2, 0.7, 0.6, 1.0, 0.1, 0.3, 0.8])]
    single = AdaController(interval=2, batch_size=16, ada_kimg=1)
    for b0, b1 in zip(batches[::2], batches[1::2]):
        single.accumulate(torch.cat([b0, b1]))
        single.step()

    ranks = [AdaController(interval=2, batch_size=16, ada_kimg=1) for _ in range(2)]
    for b0, b1 in zip(batches[::2], batches[1::2]):
        ranks[0].accumulate(b0)
        ranks[1].accumulate(b1)
        # emulate all_reduce(SUM): each rank's reduce returns the sum of both ranks' stats
        pending = [torch.tensor([c._sum, c._count], dtype=torch.float64) for c in ranks]
        for ctrl in ranks:
            ctrl.reduce_fn = lambda stats, pending=pending: pending[0] + pending[1]
            ctrl.step()
    assert ranks[0].p == ranks[1].p == pytest.approx(single.p)
    assert ranks[0].rt == pytest.approx(single.rt)


def test_state_dict_round_trip_resumes_mid_interval():
    a = AdaController(interval=4, batch_size=32)
    _run(a, 0.9, 6)  # one update done, two iterations of the next interval pending
    b = AdaController(interval=4, batch_size=32)
    b.load_state_dict(a.state_dict())
    for ctrl in (a, b):
        _run(ctrl, 0.9, 2)
    assert a.p == b.p == 2 * a.step_size and a.iterations == b.iterations == 8


def test_accumulate_sums_is_equivalent_to_accumulate():
    a, b = AdaController(interval=1), AdaController(interval=1)
    logits = _logits(10, 0.8)
    a.accumulate(logits)
    b.accumulate_sums(float(torch.sign(logits).sum()), logits.numel())
    a.step(), b.step()
    assert a.rt == b.rt == pytest.approx(0.6) and a.p == b.p == 0.0


def test_kimg_alias_and_argument_checks():
    assert AdaController(kimg=100, batch_size=10, interval=1).step_size == 10 / 100_000
    with pytest.raises(ValueError, match="target"):
        AdaController(target=1.5)
    with pytest.raises(ValueError, match="interval"):
        AdaController(interval=0)
