"""Training under hostile input (issue 9, training side): bad steps, odd snapshots, full disks, bad flags.

Each test asserts the one-line message, the exit status (for the CLI) and that nothing was lost:
earlier snapshots load unchanged, no half-written file is left, no snapshot of a broken state is
written. Tiny 32x32 archives, the ``tiny`` preset on the CPU, a handful of iterations each.
"""
import errno
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from archive_helpers import stat_lines, toy_audio_block, write_toy_archive
from click.testing import CliRunner

from stylegan2 import snapshot as snap_io
from stylegan2 import stats
from stylegan2 import training_loop as tl
from stylegan2.presets import ConfigError, resolve_config

RES = 32
AUDIO = toy_audio_block(RES)


def write_archive(path, labels=None, n=8):
    """A zip of ``n`` noisy grey images with a dataset.json (labels: None or a list per image)."""
    return write_toy_archive(path, RES, n, {"audio": AUDIO, "clips": []}, labels=labels)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_archive(tmp_path_factory.mktemp("data") / "stft.zip")


def options(**overrides):
    base = dict(batch=4, batch_gpu=4, tick=0.004, snap=1, kimg=0.008, workers=0, grid_limit=8, aug="noaug")
    base.update(overrides)
    return resolve_config("tiny", RES, 1, **base)


def run(archive, run_dir, resume=None, **overrides):
    return tl.training_loop(0, run_dir=str(run_dir), data=str(archive), resume=resume, progress=False,
                            **options(**overrides))


def leftovers(folder):
    """Temporary files an interrupted atomic write would leave (``.name.XXXX.tmp``)."""
    return [p.name for p in Path(folder).iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]


def assert_same_networks(a, b):
    for key in ("G", "D", "G_ema"):
        for name, tensor in a[key]["state_dict"].items():
            torch.testing.assert_close(b[key]["state_dict"][name], tensor, rtol=0, atol=0, msg=f"{key}.{name}")


def train_cli(args):
    import train
    return CliRunner().invoke(train.main, [str(a) for a in args])


def cli_args(archive, outdir, *extra):
    return ["--outdir", outdir, "--data", archive, "--cfg", "tiny", "--batch", "4", "--batch-gpu", "4",
            "--tick", "0.004", "--snap", "1", "--workers", "0", "--no-progress", "--aug", "noaug", *extra]


def error_line(result):
    """The CLI's error output must be one line, without a traceback."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


# ------------------------------------------------------------------------------------------------
# Item 5: one bad step is survived and counted; a run of them stops with the last good snapshot.


def poisoned_loss(bad_from_nimg, bad_until_nimg=None, grads=True):
    """A loss whose D phase has NaN gradients (and a NaN loss) for iterations starting in [from, until)."""
    class Poisoned(tl.StyleGAN2Loss):
        def accumulate_gradients(self, phase, *args, **kwargs):
            super().accumulate_gradients(phase, *args, **kwargs)
            nimg = kwargs["cur_nimg"]
            if phase == "Dmain" and nimg >= bad_from_nimg and (bad_until_nimg is None or nimg < bad_until_nimg):
                stats.report("Loss/D/loss", float("nan"))
                if grads:
                    for p in self.D.parameters():
                        if p.grad is not None:
                            p.grad.fill_(float("nan"))
    return Poisoned


def test_one_nonfinite_step_is_zeroed_counted_and_training_goes_on(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(tl, "StyleGAN2Loss", poisoned_loss(4, 8))          # iteration 2 of 3 is bad
    result = run(archive, tmp_path / "run", kimg=0.012)
    assert result["cur_nimg"] == 12
    lines = stat_lines(tmp_path / "run")
    assert [r["Progress/nonfinite_steps"]["mean"] for r in lines] == [0, 1, 1]
    # The bad window's D loss shows the NaN; the next window is clean again (stats are not poisoned).
    assert np.isnan(lines[1]["Loss/D/loss"]["mean"]) and np.isfinite(lines[2]["Loss/D/loss"]["mean"])
    snap = snap_io.load_snapshot(result["snapshot"])
    assert snap["nonfinite_steps"] == 1
    for key in ("G", "D", "G_ema"):          # NaN gradients were zeroed: nothing non-finite reached the weights
        assert all(torch.isfinite(t).all() for t in snap[key]["state_dict"].values())
    for state in snap["opt_D"]["state"].values():
        assert torch.isfinite(state["exp_avg"]).all() and torch.isfinite(state["exp_avg_sq"]).all()
    # Postponed while the last step was bad: the iteration-2 snapshot waits for a clean step.
    assert "snapshot at kimg 0.008 postponed" in (tmp_path / "run" / "log.txt").read_text()


def test_a_run_of_nonfinite_steps_stops_with_the_last_good_snapshot(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(tl, "StyleGAN2Loss", poisoned_loss(4))              # every iteration from the 2nd on
    with pytest.raises(tl.TrainingDiverged) as info:
        run(archive, tmp_path / "run", kimg=0.04, max_nonfinite=3)
    message = str(info.value)
    good = tmp_path / "run" / "network-snapshot-000000.pkl"
    assert "\n" not in message and "after 3 consecutive steps with NaN/inf losses or gradients" in message
    assert "--max-nonfinite 3" in message and f"last good snapshot: {good}" in message
    assert "kimg 0.016" in message                         # iterations 2, 3, 4 bad: stops after the 4th
    # Only the snapshot before the bad run exists; it holds the state after iteration 1.
    assert sorted(p.name for p in (tmp_path / "run").glob("network-snapshot-*.pkl")) == [good.name]
    assert snap_io.load_snapshot(good)["cur_nimg"] == 4 and not leftovers(tmp_path / "run")


def test_max_nonfinite_reaches_the_cli_with_one_line_and_status_1(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(tl, "StyleGAN2Loss", poisoned_loss(0))
    res = train_cli(cli_args(archive, tmp_path / "out", "--kimg", "0.02", "--max-nonfinite", "2"))
    assert res.exit_code == 1
    line = error_line(res)
    assert "2 consecutive steps with NaN/inf" in line and "last good snapshot: none written yet" in line
    assert not list((tmp_path / "out").glob("*/network-snapshot-*.pkl"))
    res = train_cli(cli_args(archive, tmp_path / "out", "--max-nonfinite", "0", "-n"))
    assert res.exit_code == 2 and "--max-nonfinite" in res.output


def test_the_state_check_refuses_nan_weights_optimizer_moments_and_pl_mean():
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 2)).sum().backward()
    opt.step()
    assert tl._state_is_finite([net], [opt], torch.zeros([]))
    assert not tl._state_is_finite([net], [opt], torch.tensor(float("nan")))
    next(iter(opt.state.values()))["exp_avg"][0] = float("inf")
    assert not tl._state_is_finite([net], [opt], torch.zeros([]))


# ------------------------------------------------------------------------------------------------
# Item 7: resume with an odd RNG state or optimizer state; --cbase 1; a huge class label; disk full.


@pytest.fixture(scope="module")
def good_snapshot(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("good")
    return Path(run(archive, out / "run", kimg=0.004)["snapshot"])


def altered(good_snapshot, tmp_path, change):
    data = snap_io.load_snapshot(good_snapshot)
    change(data)
    path = tmp_path / "network-snapshot-000004.pkl"
    snap_io.save_snapshot(path, data)
    return path


# Regexes: where load_snapshot's value checks refuse the same field first, their wording counts too.
@pytest.mark.parametrize("change, expected", [
    (lambda d: d.__setitem__("rng", {"torch": "nonsense"}), re.escape("its RNG state is unusable ('torch' is not a CPU")),
    (lambda d: d["rng"].pop("numpy"), re.escape("its RNG state is unusable ('numpy' is not an MT19937 state)")),
    (lambda d: d["rng"]["python"].__setitem__("internal", torch.zeros(3, dtype=torch.int64)),
     re.escape("its RNG state is unusable ('python'")),
    (lambda d: d["opt_G"]["state"][0].__setitem__("exp_avg", torch.zeros(3)),
     re.escape("opt_G: exp_avg of parameter 0 has shape [3], but the network's parameter has")),
    (lambda d: d["opt_D"]["state"][1].__setitem__("exp_avg_sq", torch.full_like(d["opt_D"]["state"][1]["exp_avg_sq"],
                                                                                 float("nan"))),
     r"opt_D\b.*exp_avg_sq.* holds NaN"),
    (lambda d: d["opt_G"]["state"][0].__setitem__("step", torch.tensor(-5.0)), "invalid step count"),
    (lambda d: d.__setitem__("opt_D", {"state": 3}), "opt_D: not an optimizer state"),
    (lambda d: d.__setitem__("augment", {"kwargs": {}, "p": float("nan")}), r"augment.p\b.*\bnan\b"),
    (lambda d: d.__setitem__("ada_stats", {"p": 0.1, "sign_count": -4.0}), "ada_stats sign_count is -4.0"),
    (lambda d: d.__setitem__("batch_idx", 2.5), r"batch_idx\b.*2\.5.*integer"),
])
def test_resume_with_an_odd_rng_or_optimizer_state_is_one_line(archive, good_snapshot, tmp_path, change, expected):
    bad = altered(good_snapshot, tmp_path, change)
    before = bad.read_bytes()
    res = train_cli(cli_args(archive, tmp_path / "out", "--kimg", "0.008", "--resume", bad))
    assert res.exit_code == 1
    line = error_line(res)
    assert str(bad) in line and re.search(expected, line), line
    assert bad.read_bytes() == before                                  # the input is untouched
    assert not list((tmp_path / "out").glob("*/network-snapshot-*.pkl"))


def test_resume_without_rng_state_warns_and_continues(archive, good_snapshot, tmp_path):
    path = altered(good_snapshot, tmp_path, lambda d: d.pop("rng"))
    result = run(archive, tmp_path / "run", resume=str(path), kimg=0.008)
    assert result["cur_nimg"] == 8
    assert "holds no RNG state" in (tmp_path / "run" / "log.txt").read_text()


def test_cbase_too_small_for_the_resolution_is_refused(archive, tmp_path):
    res = train_cli(cli_args(archive, tmp_path / "out", "--cbase", "1"))
    assert res.exit_code == 1
    assert "--cbase 1 gives no channels at resolution 32" in error_line(res)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("label, expected", [
    (10 ** 30, "class label 1000000000000000000000000000000 for 00000/img00000003.png is too large"),
    (70000, "class label 70000 for 00000/img00000003.png is too large"),
])
def test_huge_class_label_with_cond_is_refused(tmp_path, label, expected):
    data = write_archive(tmp_path / "labels.zip", labels=[0, 1, 2, label, 0, 1, 2, 0])
    res = train_cli(cli_args(data, tmp_path / "out", "--cond"))
    assert res.exit_code == 1
    line = error_line(res)
    assert "labels.zip" in line and expected in line, line


def test_disk_full_while_saving_a_snapshot_keeps_the_earlier_ones(archive, tmp_path, monkeypatch):
    real_save = torch.save
    calls = []

    def save_until_full(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) >= 2:                      # the second snapshot: a partial write, then ENOSPC
            f.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(snap_io.torch, "save", save_until_full)
    res = train_cli(cli_args(archive, tmp_path / "out", "--kimg", "0.012"))
    assert res.exit_code == 1
    line = error_line(res)
    run_dir = next((tmp_path / "out").iterdir())
    first = run_dir / "network-snapshot-000000.pkl"
    assert "No space left on device" in line and "cannot write the snapshot" in line
    assert f"last: {first}" in line and "network-snapshot-000000008.pkl" in line
    monkeypatch.setattr(snap_io.torch, "save", real_save)
    assert snap_io.load_snapshot(first)["cur_nimg"] == 4                   # the earlier snapshot is intact
    assert sorted(p.name for p in run_dir.glob("network-snapshot-*")) == [first.name]
    assert not leftovers(run_dir)


# ------------------------------------------------------------------------------------------------
# Item 8: presets derive a per-GPU batch they accept; workers at most the usable CPUs.


@pytest.mark.parametrize("cfg, batch, gpus, batch_gpu, mbstd", [
    ("stylegan2", 8, 1, 4, 4),      # reference 8 / 8 GPUs = 1 < group 4: the group itself
    ("audio1024", 16, 1, 4, 4),
    ("stylegan2", 32, 1, 4, 4),     # the preset as tuned: 32 / 8
    ("stylegan2", 64, 2, 8, 4),     # reference 64 / 8 = 8 divides the per-GPU 32
    ("stylegan2", 2, 1, 2, 2),      # per-GPU batch below the preset's group: one whole group
    ("stylegan2", 6, 1, 3, 3),      # 6 is not a multiple of 4: the largest group dividing it
    ("paper256", 24, 1, 8, 8),      # reference 3 < group 8: the group
    ("audio256", 32, 1, 16, 4),     # reference 32 / 2 GPUs
])
def test_presets_derive_a_per_gpu_batch_that_passes_their_own_checks(cfg, batch, gpus, batch_gpu, mbstd):
    opts = resolve_config(cfg, 64, gpus, batch=batch)
    assert (opts["batch_gpu"], opts["mbstd_group"]) == (batch_gpu, mbstd)
    assert batch % (gpus * opts["batch_gpu"]) == 0 and opts["batch_gpu"] % opts["mbstd_group"] == 0


def test_a_preset_group_follows_a_given_batch_gpu():
    opts = resolve_config("stylegan2", 64, 1, batch=8, batch_gpu=2)
    assert (opts["batch_gpu"], opts["mbstd_group"]) == (2, 2)
    assert resolve_config("stylegan2", 64, 1, batch=16, batch_gpu=8)["mbstd_group"] == 4   # fits: unchanged


def test_values_the_user_gave_are_still_rejected():
    with pytest.raises(ConfigError, match="--batch-gpu 1 is smaller than the minibatch-stddev group 4"):
        resolve_config("stylegan2", 64, 1, batch=8, batch_gpu=1, mbstd_group=4)
    with pytest.raises(ConfigError, match="--batch 8 is not divisible by --gpus 1 x --batch-gpu 3"):
        resolve_config("stylegan2", 64, 1, batch=8, batch_gpu=3)
    with pytest.raises(ConfigError, match="--batch-gpu 2 is smaller than the minibatch-stddev group 4"):
        resolve_config("stylegan2", 64, 1, batch=2, mbstd_group=4)


def test_cli_stylegan2_batch_8_on_one_gpu_is_accepted(archive, tmp_path):
    res = train_cli(["--outdir", tmp_path, "--data", archive, "--cfg", "stylegan2", "--batch", "8", "-n"])
    assert res.exit_code == 0, res.output
    assert "batch_gpu          4" in res.output


def test_default_workers_are_at_most_the_usable_cpus(monkeypatch):
    from stylegan2 import presets
    monkeypatch.setattr(presets.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert resolve_config("stylegan2", 64, 1)["workers"] == 2
    assert resolve_config("stylegan2", 64, 1, workers=5)["workers"] == 5       # given: kept
    monkeypatch.setattr(presets.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert resolve_config("stylegan2", 64, 1)["workers"] == 3


# ------------------------------------------------------------------------------------------------
# Item 9: a resume in the middle of an ADA interval equals the uninterrupted run, bit for bit.


def test_ada_resume_mid_interval_is_bit_exact(archive, tmp_path, monkeypatch):
    # D's signs on reals are made lopsided per iteration so that the interval's r_t depends on all of
    # them: iterations 1-2 strongly positive, 3-4 mildly negative. r_t over all four > target (p rises);
    # over 3-4 only < target (p would stay at 0). Dropping the first half at the resume changes p.
    class Lopsided(tl.StyleGAN2Loss):
        def accumulate_gradients(self, phase, *args, **kwargs):
            super().accumulate_gradients(phase, *args, **kwargs)
            if phase == "Dmain":
                first_half = kwargs["cur_nimg"] % 16 < 8
                stats.report(tl.ADA_SIGNS, torch.ones(400) if first_half else -torch.ones(100))
    monkeypatch.setattr(tl, "StyleGAN2Loss", Lopsided)
    ada = dict(aug="ada", p=None, ada_interval=4, ada_kimg=0.1, snap=1)
    a = run(archive, tmp_path / "a", kimg=0.024, **ada)                 # 6 iterations straight
    b = run(archive, tmp_path / "b", kimg=0.008, **ada)                 # 2 iterations: mid-interval
    mid = snap_io.load_snapshot(b["snapshot"])
    assert mid["ada_stats"]["iterations"] == 2 and mid["ada_stats"]["sign_count"] > 0
    c = run(archive, tmp_path / "c", resume=b["snapshot"], kimg=0.024, **ada)
    snap_a, snap_c = snap_io.load_snapshot(a["snapshot"]), snap_io.load_snapshot(c["snapshot"])
    assert snap_a["augment"]["p"] > 0                                    # p did move in the first interval
    assert snap_c["augment"]["p"] == snap_a["augment"]["p"] and snap_c["ada_stats"] == snap_a["ada_stats"]
    assert_same_networks(snap_a, snap_c)
    for key in ("opt_G", "opt_D"):
        for idx, state in snap_a[key]["state"].items():
            for field, value in state.items():
                torch.testing.assert_close(snap_c[key]["state"][idx][field], value, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# Item 11: the message names the real cause.


def test_nan_labels_name_the_file_not_the_learning_rate(tmp_path):
    data = write_archive(tmp_path / "nanlabels.zip", labels=[[0.5, 1.0]] * 3 + [[float("nan"), 1.0]] + [[0.0, 0.0]] * 4)
    res = train_cli(cli_args(data, tmp_path / "out", "--cond"))
    assert res.exit_code == 1
    line = error_line(res)
    assert "nanlabels.zip" in line and "non-finite labels" in line and "00000/img00000003.png" in line
    assert "--lr" not in line and "--gamma" not in line


@pytest.mark.parametrize("flags, expected", [
    (["--gamma", "inf"], "invalid --gamma: --gamma must be >= 0 and finite"),
    (["--gamma", "nan"], "invalid --gamma: --gamma must be >= 0 and finite"),
    (["--seed", "-1"], "--seed must be an integer from 0 to 4294967295"),
    (["--seed", str(2 ** 32)], "--seed must be an integer from 0 to 4294967295"),
    (["--lr", "inf"], "--glr must be a positive number (finite); got inf"),
    (["--kimg", "nan"], "--kimg must be a positive number (finite); got nan"),
    (["--tick", "inf"], "--tick must be a positive number (finite); got inf"),
])
def test_numeric_flags_are_validated_up_front(archive, tmp_path, flags, expected):
    res = train_cli(cli_args(archive, tmp_path / "out", *flags))
    assert res.exit_code == 1
    line = error_line(res)
    assert expected in line and "lower --lr" not in line, line
    assert not (tmp_path / "out").exists()


def _rank_with_a_nan_loss_on_rank_1(rank, archive, run_dir, opts):
    # Only rank 1's loss is NaN (its gradients stay finite): the ranks must still agree on the streak.
    if rank == 1:
        tl.StyleGAN2Loss = poisoned_loss(0, grads=False)
    try:
        tl.training_loop(rank, run_dir=run_dir, data=archive, progress=False, **opts)
    except tl.TrainingDiverged as e:       # each rank records that it stopped by itself, and why
        (Path(run_dir).parent / f"rank{rank}.txt").write_text(str(e))
        raise


@pytest.mark.slow
def test_two_ranks_agree_on_a_run_of_nonfinite_steps_seen_by_one(archive, tmp_path):
    from stylegan2 import distributed
    opts = resolve_config("tiny", RES, 2, batch=4, batch_gpu=2, mbstd_group=2, tick=0.004, snap=1, kimg=0.04,
                          workers=0, grid_limit=8, aug="noaug", max_nonfinite=3)
    with pytest.raises(Exception) as info:       # torch.multiprocessing.ProcessRaisedException
        distributed.launch(_rank_with_a_nan_loss_on_rank_1, 2,
                           dict(archive=str(archive), run_dir=str(tmp_path / "run"), opts=opts))
    assert "TrainingDiverged" in str(info.value) and "after 3 consecutive steps" in str(info.value)
    for rank in (0, 1):                    # rank 0 saw only finite losses, yet stopped at the same step
        assert "training stopped at kimg 0.012 after 3 consecutive steps" in (tmp_path / f"rank{rank}.txt").read_text()
    assert not list((tmp_path / "run").glob("network-snapshot-*.pkl"))     # every step was bad
