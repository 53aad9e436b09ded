"""Host syncs in the training loop (issue 13.4): statistics, ADA's p and non-finite checks stay on the device.

On the CPU the pieces that run every step are checked not to read tensors back to the host: the
sync-prone Python entry points (``Tensor.item``/``cpu``/``tolist``/``__float__``/``__bool__``...)
are counted while they run. On a GPU (``@pytest.mark.gpu``) a tiny ADA run is watched with
``torch.cuda.set_sync_debug_mode('warn')``: in the steady state (between ticks) there may be at
most one synchronizing call per ADA interval (the loop's check point).
"""
import contextlib
import warnings

import pytest
import torch

from stylegan2 import distributed, stats
from stylegan2.ada import AdaController
from stylegan2.augment import build_augment_pipe
from stylegan2.loss import StyleGAN2Loss

READS = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")


@contextlib.contextmanager
def counted_reads():
    """Count calls of the Tensor methods that copy a value to the host (a sync on a GPU)."""
    calls = []
    saved = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name, fn):
        def counting(self, *args, **kwargs):
            calls.append(name)
            return fn(self, *args, **kwargs)
        return counting
    try:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, wrap(name, fn))
        yield calls
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def test_the_read_counter_sees_host_reads():
    x = torch.ones(3)
    with counted_reads() as calls:
        float(x.sum())
        x.sum().item()
        bool(x.all())
    assert calls == ["__float__", "item", "__bool__"]


def test_stats_report_reads_nothing_back():
    stats.reset()
    with counted_reads() as calls:
        for i in range(5):
            stats.report("Loss/x", torch.randn(7) * i)
            stats.report("Loss/y", torch.tensor([float("nan"), 1.0]))
        moments = stats.device_moments(["Loss/x", "Loss/y", "never"])
    assert calls == []
    assert moments.shape == (3, stats.NUM_MOMENTS) and moments[0, 0] == 35 and moments[1, 3] == 5
    # Reading happens in Collector.update: once for all names, not once per name.
    c = stats.Collector()
    with counted_reads() as calls:
        c.update()
    assert calls.count("cpu") == 1


def test_stats_windows_after_a_nan_are_clean_again():
    stats.reset()
    c = stats.Collector()
    stats.report("v", torch.tensor([1.0, float("nan"), 3.0]))
    c.update()
    assert c.num("v") == 3 and c.nonfinite("v") == 1
    assert torch.isnan(torch.tensor(c.mean("v"))) and torch.isnan(torch.tensor(c.std("v")))
    stats.report("v", torch.tensor([2.0, 4.0]))
    c.update()
    assert (c.num("v"), c.mean("v"), c.std("v"), c.nonfinite("v")) == (2, 3.0, 1.0, 0)
    stats.report("v", torch.tensor([float("inf"), 1.0]))
    c.update()
    assert c.mean("v") == float("inf")
    stats.report("v", torch.tensor([float("inf"), float("-inf")]))
    c.update()
    assert torch.isnan(torch.tensor(c.mean("v")))


def test_augment_pipe_reads_p_only_when_it_changed_behind_its_back():
    pipe = build_augment_pipe("ada", "audio", 0.0)
    images = torch.randn(4, 1, 16, 16)
    pipe.set_p(0.5)
    with counted_reads() as calls:
        pipe(images)
        pipe(images)
    assert "__float__" not in calls and "item" not in calls
    pipe.p.fill_(0.25)                               # changed in place without set_p: read once, then cached
    with counted_reads() as calls:
        pipe(images)
        pipe(images)
    assert calls.count("__float__") == 1 and pipe.p_value() == 0.25
    # The ADA controller hands its p over without reading the pipe's buffer.
    ada = AdaController(target=0.6, interval=1, ada_kimg=0.1, batch_size=4)
    ada.accumulate_sums(10.0, 10.0)
    ada.step(pipe)
    with counted_reads() as calls:
        value = pipe.p_value()
    assert calls == [] and value == pytest.approx(0.04) and float(pipe.p) == pytest.approx(0.04)


def test_path_length_mean_and_gradient_averaging_stay_on_the_device():
    class TinyG(torch.nn.Module):
        num_ws = 2

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3))
    loss = StyleGAN2Loss(TinyG(), torch.nn.Identity())
    loss._pl_sum += 6.0
    loss._pl_num += 3.0
    with counted_reads() as calls:
        loss.finish_phase("Greg")
        loss.finish_phase("Greg")                    # nothing accumulated: pl_mean stays
    assert calls == []
    assert float(loss.pl_mean) == pytest.approx(0.01 * 2.0)
    loss._pl_sum += float("nan")
    loss._pl_num += 1.0
    loss.finish_phase("Greg")                        # a NaN batch does not poison pl_mean
    assert float(loss.pl_mean) == pytest.approx(0.02)
    p = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.tensor([1.0, float("nan"), float("inf"), 2.0])
    with counted_reads() as calls:
        bad = distributed.all_reduce_grads([p])
    assert calls == []
    assert bool(bad) and p.grad.tolist() == [1.0, 0.0, 1e5, 2.0]
    p.grad = torch.ones(4)
    assert not bool(distributed.all_reduce_grads([p]))


@pytest.mark.gpu
def test_steady_state_training_has_at_most_one_sync_per_ada_interval(tmp_path, monkeypatch):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from test_training_hardening import RES, write_archive

    from stylegan2 import training_loop as tl
    from stylegan2.presets import resolve_config

    # Calibrate: each synchronizing call must produce one recorded warning, else counting is meaningless.
    with warnings.catch_warnings(record=True) as calib:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            x = torch.ones(2, device="cuda")
            x.sum().item()
            x.cpu()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert sum("synchroniz" in str(w.message) for w in calib) == 2, [str(w.message) for w in calib]

    class Overconfident(tl.StyleGAN2Loss):       # D(real) > 0 by decree: p rises every interval (augment active)
        def accumulate_gradients(self, phase, *args, **kwargs):
            super().accumulate_gradients(phase, *args, **kwargs)
            if phase == "Dmain":
                stats.report(tl.ADA_SIGNS, torch.ones(64, device="cuda"))
    monkeypatch.setattr(tl, "StyleGAN2Loss", Overconfident)

    START, WINDOW, INTERVAL, BATCH = 4, 16, 4, 4      # window: iterations 5..20, no tick inside
    seen, window = [0], {}
    original = tl.update_ema

    def watched_update_ema(G_ema, G, beta):
        original(G_ema, G, beta)
        seen[0] += 1
        if seen[0] == START:
            torch.cuda.synchronize()
            window["first"] = len(records)
            torch.cuda.set_sync_debug_mode("warn")
        elif seen[0] == START + WINDOW:
            torch.cuda.set_sync_debug_mode(0)
            window["last"] = len(records)
    monkeypatch.setattr(tl, "update_ema", watched_update_ema)

    total = (START + WINDOW + 2) * BATCH
    opts = resolve_config("tiny", RES, 1, batch=BATCH, batch_gpu=BATCH, kimg=total / 1000, tick=total / 1000,
                          snap=1000, workers=0, grid_limit=8, aug="ada", ada_interval=INTERVAL, ada_kimg=0.1,
                          ops="reference")
    data = write_archive(tmp_path / "stft.zip")
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        try:
            result = tl.training_loop(0, run_dir=str(tmp_path / "run"), data=str(data), progress=False, **opts)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert result["cur_nimg"] == total and "last" in window
    syncs = [w for w in records[window["first"]:window["last"]] if "synchroniz" in str(w.message)]
    where = sorted({f"{w.filename}:{w.lineno}" for w in syncs})
    assert 1 <= len(syncs) <= WINDOW // INTERVAL, (len(syncs), where)
    from stylegan2.snapshot import load_snapshot
    snap = load_snapshot(result["snapshot"])
    assert snap["augment"]["p"] > 0                   # the augmentations were really running


def test_steady_state_loop_reads_only_at_its_check_points(tmp_path, monkeypatch):
    """CPU stand-in for the GPU test: between ticks, our code reads tensors back only where it must.

    Every host read (``item``, ``cpu``, ``__float__``, ...) made from a line of ``stylegan2/`` while
    the loop runs steady-state iterations is recorded by call site. Allowed: the loop's check point
    (once per ADA interval), the ADA controller's update on its own CPU sums (and the float32
    rounding of the new p on the host), and the style-mixing draws, which come from a CPU
    generator by design. Anything else would be a host sync per step
    on a GPU.
    """
    import sys
    from pathlib import Path

    from test_training_hardening import RES, write_archive

    from stylegan2 import training_loop as tl
    from stylegan2.presets import resolve_config

    package = str(Path(tl.__file__).parent)
    START, WINDOW, INTERVAL, BATCH = 4, 16, 4, 4
    sites, state = [], {"on": False, "iteration": 0}
    saved = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name, fn):
        def recording(self, *args, **kwargs):
            if state["on"]:
                frame = sys._getframe(1)
                if frame.f_code.co_filename.startswith(package):
                    sites.append((Path(frame.f_code.co_filename).name, frame.f_code.co_name, name))
            return fn(self, *args, **kwargs)
        return recording
    original = tl.update_ema

    def watched_update_ema(G_ema, G, beta):
        original(G_ema, G, beta)
        state["iteration"] += 1
        state["on"] = START <= state["iteration"] < START + WINDOW
    monkeypatch.setattr(tl, "update_ema", watched_update_ema)
    for name, fn in saved.items():
        monkeypatch.setattr(torch.Tensor, name, wrap(name, fn))

    total = (START + WINDOW + 2) * BATCH
    opts = resolve_config("tiny", RES, 1, batch=BATCH, batch_gpu=BATCH, kimg=total / 1000, tick=total / 1000,
                          snap=1000, workers=0, grid_limit=8, aug="ada", ada_interval=INTERVAL, ada_kimg=0.1)
    result = tl.training_loop(0, run_dir=str(tmp_path / "run"), data=str(write_archive(tmp_path / "d.zip")),
                              progress=False, **opts)
    assert result["cur_nimg"] == total
    allowed = {("training_loop.py", "check_point"),                  # the one read per interval
               ("ada.py", "step"), ("ada.py", "<genexpr>"),              # the controller's CPU-side sums
               ("augment.py", "set_p"),                                  # rounding p to float32 on the host
               ("loss.py", "style_mix")}                                 # CPU generator by design
    unexpected = sorted({s for s in sites if s[:2] not in allowed})
    assert unexpected == [], unexpected
    # Each check point copies one small tensor to the host (.cpu(), the sync) and unpacks the copy.
    reads = [s[2] for s in sites if s[:2] == ("training_loop.py", "check_point")]
    assert reads == ["cpu", "tolist"] * (len(reads) // 2)
    assert 1 <= reads.count("cpu") <= WINDOW // INTERVAL
