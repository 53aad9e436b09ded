"""Streaming statistics merged from chunks and workers equal one-pass numpy statistics."""
import json
import math

import numpy as np
import pytest
import torch

from audio_ext.core.running_stats import RunningStats


def chunks(seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    shapes = [(7,), (3, 5), (1,), (2, 4, 6), (0,), (100,)]
    return [offset + rng.standard_normal(s) * rng.uniform(0.5, 4.0) + rng.uniform(-3, 3) for s in shapes]


def reference(parts):
    everything = np.concatenate([p.reshape(-1) for p in parts])
    return everything.size, everything.mean(), everything.std()


@pytest.mark.parametrize("offset", [0.0, -20.0, 1e4])
def test_updates_with_chunks_of_any_shape_equal_one_pass_numpy(offset):
    parts = chunks(offset=offset)
    s = RunningStats()
    for p in parts:
        s.update(p)
    n, mean, std = reference(parts)
    assert s.count == n
    assert s.mean == pytest.approx(mean, rel=1e-10, abs=1e-10)
    assert s.std == pytest.approx(std, rel=1e-10)


def test_merging_workers_in_any_grouping_equals_one_pass():
    parts = chunks(seed=1) + chunks(seed=2)
    workers = [RunningStats().update(p) for p in parts]
    left = RunningStats()
    for w in workers:
        left.merge(w)
    # a tree of merges, as machines combining their workers' results would do
    pairs = [RunningStats().merge(a).merge(b) for a, b in zip(workers[::2], workers[1::2])]
    tree = RunningStats().merge(RunningStats().merge(pairs[0]).merge(pairs[1]))
    for p in pairs[2:]:
        tree.merge(p)
    n, mean, std = reference(parts)
    for s in (left, tree):
        assert s.count == n
        assert s.mean == pytest.approx(mean, rel=1e-10)
        assert s.std == pytest.approx(std, rel=1e-10)


def test_torch_tensors_count_like_numpy_arrays():
    x = np.random.default_rng(3).standard_normal((4, 16, 16)).astype(np.float32)
    a = RunningStats().update(x)
    b = RunningStats().update(torch.from_numpy(x))
    assert a.count == b.count == x.size
    assert b.mean == pytest.approx(a.mean, rel=1e-12) and b.std == pytest.approx(a.std, rel=1e-12)
    assert a.std == pytest.approx(x.astype(np.float64).std(), rel=1e-10)


def test_round_trip_through_json_then_keep_accumulating():
    parts = chunks(seed=4)
    s = RunningStats().update(parts[0]).update(parts[1])
    restored = RunningStats.from_dict(json.loads(json.dumps(s.to_dict())))
    for p in parts[2:]:
        restored.update(p)
    n, mean, std = reference(parts)
    assert restored.count == n and restored.std == pytest.approx(std, rel=1e-10)
    assert restored.mean == pytest.approx(mean, rel=1e-10)


def test_empty_and_invalid_input():
    s = RunningStats()
    assert math.isnan(s.mean) and math.isnan(s.std)
    s.update(np.zeros((0, 3)))
    assert s.count == 0
    assert RunningStats.from_dict(json.loads(json.dumps(s.to_dict()))).count == 0
    with pytest.raises(ValueError, match="NaN or infinity"):
        s.update(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="missing key"):
        RunningStats.from_dict({"count": 3})
    with pytest.raises(TypeError, match="RunningStats"):
        s.merge({"count": 1})
