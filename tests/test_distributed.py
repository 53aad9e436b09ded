"""Data-parallel plumbing on CPU with gloo: spawn, broadcast, gradient averaging, merged statistics.

Two real processes are spawned once (file:// rendezvous); each writes what it observed to a file
and the test compares that with what a single process computes directly.
"""
import json
import math
import os

import numpy as np
import pytest
import torch

from stylegan2 import distributed, stats


def _worker(rank, outdir):
    torch.manual_seed(100 + rank)                      # ranks start with different weights
    net = torch.nn.Linear(3, 2)
    distributed.broadcast_module(net)                  # ...and end up with rank 0's
    x = torch.arange(6, dtype=torch.float32).view(2, 3) + rank
    net(x).square().sum().backward()
    if rank == 1:
        net.bias.grad[0] = float("nan")                # one rank's bad value is cleaned after the sum
    distributed.all_reduce_grads(net.parameters())
    holder = torch.nn.Module()
    holder.register_buffer("w_avg", torch.full([3], float(rank + 1)))   # 1 on rank 0, 2 on rank 1
    holder.register_buffer("count", torch.tensor([rank], dtype=torch.int64))  # integers are left alone
    distributed.average_buffers_(holder)
    stats.reset()
    stats.report("v", torch.tensor([1.0, 2.0, 3.0]) * (rank + 1))
    stats.report0("only0", 5.0)
    collector = stats.Collector()
    collector.update()
    result = dict(rank=rank, world=distributed.get_world_size(),
                  weight=net.weight.tolist(), bias=net.bias.tolist(),
                  wgrad=net.weight.grad.tolist(), bgrad=net.bias.grad.tolist(), stats=collector.as_dict(),
                  w_avg=holder.w_avg.tolist(), count=holder.count.tolist())
    (outdir / f"rank{rank}.json").write_text(json.dumps(result))


def test_two_gloo_processes_broadcast_average_gradients_and_merge_stats(tmp_path):
    distributed.launch(_worker, 2, dict(outdir=tmp_path))
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["weight"] == r1["weight"] and r0["bias"] == r1["bias"]
    assert r0["wgrad"] == r1["wgrad"] and r0["bgrad"] == r1["bgrad"]

    # Independent single-process reference: rank 0's initial weights, gradient of each rank's batch, averaged.
    torch.manual_seed(100)
    net = torch.nn.Linear(3, 2)
    assert np.allclose(r0["weight"], net.weight.tolist())
    grads = []
    for rank in (0, 1):
        net.zero_grad()
        x = torch.arange(6, dtype=torch.float32).view(2, 3) + rank
        net(x).square().sum().backward()
        grads.append((net.weight.grad.clone(), net.bias.grad.clone()))
    np.testing.assert_allclose(r0["wgrad"], ((grads[0][0] + grads[1][0]) / 2).numpy(), rtol=1e-6)
    assert r0["bgrad"][0] == 0.0                                             # NaN -> 0 after averaging
    assert r0["bgrad"][1] == pytest.approx(float((grads[0][1][1] + grads[1][1][1]) / 2), rel=1e-6)

    assert r0["w_avg"] == r1["w_avg"] == [1.5, 1.5, 1.5]
    assert (r0["count"], r1["count"]) == ([0], [1])

    values = np.array([1, 2, 3, 2, 4, 6], dtype=np.float64)                 # both ranks' reports
    for r in (r0, r1):
        assert r["stats"]["v"]["num"] == 6
        assert r["stats"]["v"]["mean"] == pytest.approx(values.mean())
        assert r["stats"]["v"]["std"] == pytest.approx(values.std())
        assert r["stats"]["only0"] == {"num": 1, "mean": 5.0, "std": 0.0}


def _gloo_threads() -> list:
    """Names of this process's threads that belong to gloo (Linux names them in /proc)."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/comm") as f:
            names.append(f.read().strip())
    return [n for n in names if "gloo" in n]


def _leaving_worker(rank, outdir):
    before = _gloo_threads()
    torch.optim.Adam(torch.nn.Linear(2, 2).parameters())   # the first optimizer imports torch._dynamo
    distributed.all_reduce_sum_(torch.ones(1))
    distributed.shutdown()
    (outdir / f"rank{rank}.json").write_text(json.dumps(dict(before=before, after=_gloo_threads())))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="thread names are read from Linux's /proc")
def test_leaving_the_group_stops_gloo_threads_even_after_building_an_optimizer(tmp_path):
    # A group kept alive past destroy_process_group is torn down at interpreter exit, where gloo
    # aborts now and then (SIGABRT after a finished run); leaving must really release it.
    distributed.launch(_leaving_worker, 2, dict(outdir=tmp_path))
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen["before"], "gloo runs threads while the group exists"
        assert seen["after"] == [], f"rank {rank} still runs {seen['after']} after leaving the group"


def test_single_process_gradient_cleaning_replaces_nan_and_inf():
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([float("nan"), float("inf"), -float("inf"), 2.0])
    q = torch.nn.Parameter(torch.zeros(2))                                   # no gradient yet
    distributed.all_reduce_grads([p, q])
    assert p.grad.tolist() == [0.0, 1e5, -1e5, 2.0] and q.grad.tolist() == [0.0, 0.0]


def test_collector_reports_only_the_window_since_its_last_update():
    stats.reset()
    c = stats.Collector("Loss/.*")
    stats.report("Loss/a", torch.tensor([1.0, 3.0]))
    stats.report("Other", 7.0)
    c.update()
    assert c.as_dict() == {"Loss/a": {"num": 2, "mean": 2.0, "std": 1.0}}
    stats.report("Loss/a", 10.0)
    c.update()
    assert c.num("Loss/a") == 1 and c.mean("Loss/a") == 10.0
    c.update()
    assert c.as_dict() == {} and math.isnan(c.mean("Loss/a"))
    line = json.loads(stats.jsonl_line({"x": {"num": 1, "mean": 2.0, "std": 0.0}}, timestamp=12.5))
    assert line == {"x": {"num": 1, "mean": 2.0, "std": 0.0}, "timestamp": 12.5}
