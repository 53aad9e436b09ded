"""The training loop end to end on CPU at 16x16 with the tiny preset.

A tiny PNG zip (with a dataset.json ``audio`` block) is written by the test. Runs are a handful of
iterations of batch 4: enough for ticks, grids, snapshots, exact resume, seed reproducibility
(non-finite steps: test_training_hardening.py), and a 2-process gloo run that must match a 1-process run with the same global batch.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import PIL.Image
import pytest
import torch
from archive_helpers import stat_lines, toy_audio_block, write_toy_archive
from click.testing import CliRunner

from stylegan2 import distributed, stats
from stylegan2 import training_loop as tl
from stylegan2.presets import resolve_config
from stylegan2.snapshot import find_latest_snapshot, load_snapshot

RES = 16
AUDIO = toy_audio_block(RES)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_toy_archive(tmp_path_factory.mktemp("data") / "stft.zip", RES, 12, {"audio": AUDIO, "clips": []})


def options(**overrides):
    # Fixed augmentation so that R1 is taken through the audio-safe pipe inside the loop.
    base = dict(batch=4, batch_gpu=4, tick=0.004, snap=1, kimg=0.008, workers=0, grid_limit=8, aug="fixed", p=0.3)
    base.update(overrides)
    return resolve_config("tiny", RES, 1, **base)


def run(archive, run_dir, resume=None, **overrides):
    return tl.training_loop(0, run_dir=str(run_dir), data=str(archive), resume=resume, progress=False,
                            **options(**overrides))


def loss_entries(record):
    return {k: v for k, v in record.items() if k.startswith("Loss/")}


def params(snapshot, key):
    return snapshot[key]["state_dict"]


def toy_metric_level(opts):
    """Mean pixel of 4 generated images: a stand-in metric that needs no detector."""
    with torch.no_grad():
        img = opts.G(torch.randn([4, opts.G.z_dim], generator=torch.Generator().manual_seed(0)),
                     torch.zeros([4, 0]), noise_mode="const")
    return {"level": float(img.mean())}


def test_smoke_run_writes_outputs_and_resume_continues_exactly(archive, tmp_path, monkeypatch):
    from stylegan2.metrics import registry
    registry.list_metrics()                      # load the plugins first, then add a toy metric
    monkeypatch.setitem(registry._REGISTRY, "toy_level",
                        registry.MetricSpec("toy_level", toy_metric_level, "level", True, "toy"))
    # Run A: 3 iterations of batch 4 straight. Run B: 2 iterations, then resumed (run C) for 1 more.
    a = run(archive, tmp_path / "a", kimg=0.012)
    b = run(archive, tmp_path / "b", kimg=0.008, metrics=["toy_level"], keep_best="toy_level")
    assert (a["cur_nimg"], b["cur_nimg"]) == (12, 8)
    for name in ("reals.png", "fakes_init.png", "fakes000000.png", "log.txt", "training_options.json",
                 "network-snapshot-000000.pkl"):
        assert (tmp_path / "b" / name).is_file(), name
    with PIL.Image.open(tmp_path / "b" / "fakes000000.png") as im:
        assert im.mode == "L" and im.size[1] % RES == 0
    # The second snapshot (8 images) does not overwrite the first (4 images): both are kimg 0, so the
    # second is named by its image count, and --resume latest's lookup finds it as the newest.
    assert load_snapshot(tmp_path / "b" / "network-snapshot-000000.pkl")["cur_nimg"] == 4
    assert b["snapshot"] == str(tmp_path / "b" / "network-snapshot-000000008.pkl")
    assert (tmp_path / "b" / "fakes000000008.png").is_file()
    assert find_latest_snapshot(tmp_path / "b") == tmp_path / "b" / "network-snapshot-000000008.pkl"
    lines = stat_lines(tmp_path / "b")
    assert [r["Progress/kimg"]["mean"] for r in lines] == [0.004, 0.008]     # tick 0 right after iteration 1
    assert {"Loss/G/loss", "Loss/D/loss", "Loss/r1_penalty", "Loss/pl_penalty", "Loss/signs/real"} <= set(lines[0])
    assert "tick 0" in (tmp_path / "b" / "log.txt").read_text()
    # The metric hook ran after each of the two snapshots; the better one was kept.
    records = [json.loads(l) for l in (tmp_path / "b" / "metric-toy_level.jsonl").read_text().splitlines()]
    assert [r["snapshot_pkl"] for r in records] == ["network-snapshot-000000.pkl", "network-snapshot-000000008.pkl"]
    best = json.loads((tmp_path / "b" / "best.json").read_text())
    assert best["value"] == max(r["results"]["level"] for r in records)
    assert load_snapshot(tmp_path / "b" / "best-snapshot.pkl")["cur_nimg"] == (4 if best["kimg"] == 0.004 else 8)

    snap_b = load_snapshot(b["snapshot"])
    assert snap_b["cur_nimg"] == 8 and snap_b["batch_idx"] == 2 and snap_b["audio"] == AUDIO
    assert snap_b["opt_G"]["state"] and float(snap_b["pl_mean"]) > 0
    assert snap_b["augment"]["p"] == pytest.approx(0.3) and snap_b["training_set_kwargs"]["path"] == str(archive)

    # Same seed: the first tick of two runs reports identical losses.
    assert loss_entries(stat_lines(tmp_path / "a")[0]) == loss_entries(lines[0])

    c = run(archive, tmp_path / "c", resume=b["snapshot"], kimg=0.012)
    assert c["cur_nimg"] == 12
    assert stat_lines(tmp_path / "c")[0]["Progress/kimg"]["mean"] == 0.012    # the kimg counter continued
    assert not (tmp_path / "c" / "fakes_init.png").exists()
    # Resumed == uninterrupted, bit for bit: networks, Adam moments, path-length mean.
    snap_a, snap_c = load_snapshot(a["snapshot"]), load_snapshot(c["snapshot"])
    assert snap_c["batch_idx"] == snap_a["batch_idx"] == 3
    for key in ("G", "D", "G_ema"):
        for name, tensor in params(snap_a, key).items():
            torch.testing.assert_close(params(snap_c, key)[name], tensor, rtol=0, atol=0, msg=f"{key}.{name}")
    for key in ("opt_G", "opt_D"):
        for idx, state in snap_a[key]["state"].items():
            for field, value in state.items():
                torch.testing.assert_close(snap_c[key]["state"][idx][field], value, rtol=0, atol=0)
    assert float(snap_c["pl_mean"]) == float(snap_a["pl_mean"])


def test_resume_from_a_snapshot_that_does_not_fit_names_the_file(archive, tmp_path):
    from stylegan2 import networks, snapshot
    from stylegan2.presets import discriminator_kwargs, generator_kwargs
    other = options(cbase=512)                                   # narrower networks than the run
    G = networks.Generator(**generator_kwargs(other, 0, 1))
    D = networks.Discriminator(**discriminator_kwargs(other, 0, 1))
    path = tmp_path / "network-snapshot-000004.pkl"
    snapshot.save_snapshot(path, dict(G=snapshot.network_record(G), D=snapshot.network_record(D),
                                      G_ema=snapshot.network_record(G), cur_nimg=4))
    with pytest.raises(snapshot.SnapshotError, match=r"network-snapshot-000004\.pkl: its G does not fit"):
        run(archive, tmp_path / "run", resume=str(path))
    assert not list((tmp_path / "run").glob("*.pkl"))


def test_ada_raises_p_by_its_step_when_d_is_overconfident_on_reals(archive, tmp_path, monkeypatch):
    class OverconfidentD(tl.StyleGAN2Loss):      # pretend D(real) > 0 almost always: r_t ~ 1 > target 0.6
        def accumulate_gradients(self, phase, *args, **kwargs):
            super().accumulate_gradients(phase, *args, **kwargs)
            if phase == "Dmain":
                stats.report("Loss/signs/real", torch.ones(1000))
    monkeypatch.setattr(tl, "StyleGAN2Loss", OverconfidentD)
    # Step = batch * interval / (ada_kimg * 1000) = 4 * 1 / 100 = 0.04 per iteration; 2 iterations.
    result = run(archive, tmp_path / "ada", aug="ada", p=None, ada_interval=1, ada_kimg=0.1, kimg=0.008)
    snap = load_snapshot(result["snapshot"])
    assert snap["augment"]["p"] == pytest.approx(0.08) and snap["ada_stats"]["p"] == pytest.approx(0.08)
    assert [r["Progress/augment"]["mean"] for r in stat_lines(tmp_path / "ada")] == pytest.approx([0.04, 0.08])


def test_block_shard_gives_each_rank_a_contiguous_block_of_the_global_batch():
    base = list(range(100))
    for world in (1, 2, 4):
        per_rank = [list(__import__("itertools").islice(iter(tl.BlockShard(base, 8, r, world, skip=3)), 16 // world))
                    for r in range(world)]
        merged = [i for batch in range(2) for r in range(world) for i in per_rank[r][batch * 8 // world:(batch + 1) * 8 // world]]
        assert merged == list(range(3, 19))


def test_run_dirs_are_numbered_one_above_the_largest_existing(tmp_path):
    assert tl.next_run_dir(tmp_path / "missing", "x").name == "00000-x"
    for name in ("00000-a", "00007-b", "notes", "00009"):
        (tmp_path / name).mkdir()
    (tmp_path / "00012-file").write_text("")           # files do not count, only run folders
    assert tl.next_run_dir(tmp_path, "stft-audio1024").name == "00010-stft-audio1024"


def test_ema_half_life_is_in_kimg():
    beta = tl._ema_beta(batch=32, cur_nimg=10 ** 6, ema_kimg=10, ema_rampup=None)
    assert beta ** (10_000 / 32) == pytest.approx(0.5)            # after ema_kimg, half the weight is left
    ramped = tl._ema_beta(batch=32, cur_nimg=1000, ema_kimg=10, ema_rampup=0.05)
    assert ramped ** (50 / 32) == pytest.approx(0.5)              # ramp-up: half-life 0.05 x images seen


def test_train_cli_dry_run_and_errors(archive, tmp_path):
    import train
    runner = CliRunner()
    res = runner.invoke(train.main, ["--outdir", str(tmp_path), "--data", str(archive), "--cfg", "tiny",
                                     "--gamma", "0.5", "--kimg", "0.5", "--freezed", "3", "--nobench",
                                     "--allow-tf32", "-n"])
    assert res.exit_code == 0, res.output
    assert "gamma              0.5" in res.output and "Dry run" in res.output
    for line in ("freezed            3", "nobench            True", "allow_tf32         True"):
        assert line in res.output
    assert not list(tmp_path.iterdir())                              # a dry run writes nothing
    res = runner.invoke(train.main, ["--outdir", str(tmp_path), "--data", str(archive), "--cfg", "tiny",
                                     "--batch", "8", "--batch-gpu", "3"])
    assert res.exit_code != 0 and "--batch 8 is not divisible by --gpus 1 x --batch-gpu 3" in res.output
    res = runner.invoke(train.main, ["--outdir", str(tmp_path), "--data", str(archive), "--resume", "latest"])
    assert res.exit_code != 0 and "--resume latest found no network-snapshot" in res.output
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a snapshot")
    res = runner.invoke(train.main, ["--outdir", str(tmp_path), "--data", str(archive), "--resume", str(bad)])
    assert res.exit_code != 0 and str(bad) in res.output


def _distributed_run(rank, archive, run_dir, opts):
    tl.training_loop(rank, run_dir=run_dir, data=archive, progress=False, **opts)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(archive, tmp_path):
    common = dict(batch=4, batch_gpu=2, mbstd_group=2, kimg=0.004, snap=1, workers=0, grid_limit=8)
    opts1 = resolve_config("tiny", RES, 1, **common)       # one process, two accumulation rounds
    opts2 = resolve_config("tiny", RES, 2, **common)       # two processes, one round each
    _distributed_run(0, str(archive), str(tmp_path / "one"), opts1)
    distributed.launch(_distributed_run, 2, dict(archive=str(archive), run_dir=str(tmp_path / "two"), opts=opts2))
    one = load_snapshot(tmp_path / "one" / "network-snapshot-000000.pkl")
    two = load_snapshot(tmp_path / "two" / "network-snapshot-000000.pkl")
    for key in ("G", "D"):
        for name, tensor in params(one, key).items():
            if name.endswith("w_avg"):
                # The moving average of w (only used for truncation) takes one step per forward
                # pass: two chained steps in one process, one averaged step over two ranks.
                continue
            torch.testing.assert_close(params(two, key)[name], tensor, rtol=1e-5, atol=1e-5, msg=f"{key}.{name}")
    assert float(two["pl_mean"]) == pytest.approx(float(one["pl_mean"]), rel=1e-5)
    assert one["opt_G"]["state"] and one["opt_D"]["state"]             # both networks took a step


def test_snapshot_names_are_whole_kimg_until_a_name_would_be_reused():
    used = {}
    names = []
    by_images = False
    for nimg in (200_000, 400_000, 400_032, 600_000, 600_000):   # a stop right after the 400-kimg snapshot
        tag, by_images = tl.snapshot_tag(nimg, used, by_images)
        used[tag] = nimg
        names.append(tag)
    assert names == ["000200", "000400", "000400032", "000600000", "000600000"]
    # Never two image counts under one name, and the numbers grow with training progress.
    assert len(set(used.values())) == len(used) == 4
    assert [int(n) for n in names] == sorted(int(n) for n in names)
    assert tl.snapshot_tag(4000, {"000004": -1}, False) == ("000004000", True)   # a name found on disk
    assert tl.snapshot_tag(4000, {"000004": 4000}, False) == ("000004", False)   # the same state again


def test_stop_request_first_signal_flags_second_interrupt_aborts():
    stop = tl.StopRequest().install()
    try:
        assert not stop.agreed(torch.device("cpu"), 1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.agreed(torch.device("cpu"), 1) and stop.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)                     # repeated SIGTERM: still a graceful stop
        os.kill(os.getpid(), signal.SIGINT)                      # first Ctrl-C: also graceful
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)                  # second Ctrl-C: abort now
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _train_cmd(archive, outdir, *extra):
    return [sys.executable, str(Path(__file__).resolve().parents[1] / "train.py"), "--outdir", str(outdir),
            "--data", str(archive), "--cfg", "tiny", "--batch", "4", "--batch-gpu", "4", "--tick", "0.004",
            "--workers", "0", "--no-progress", "--aug", "noaug", "--ops", "reference", *extra]


def test_sigint_writes_a_final_snapshot_and_resume_latest_continues(archive, tmp_path):
    out = tmp_path / "runs"
    log = open(tmp_path / "train.log", "w")
    proc = subprocess.Popen(_train_cmd(archive, out, "--kimg", "100", "--snap", "2"), stdout=log,
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        for _ in range(3000):                  # hang guard only: wait for the first regular snapshot
            if list(out.glob("*/network-snapshot-*.pkl")) or proc.poll() is not None:
                break
            time.sleep(0.1)
        first = sorted(out.glob("*/network-snapshot-*.pkl"))
        assert len(first) == 1, (tmp_path / "train.log").read_text()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "train.log").read_text()
    assert rc == 130, text
    stopped = [line for line in text.splitlines() if line.startswith("Stopped:")]
    assert len(stopped) == 1 and "--resume latest" in stopped[0], text
    assert "Traceback" not in text
    first_nimg = load_snapshot(first[0])["cur_nimg"]
    final = find_latest_snapshot(out)
    assert final != first[0] and final.parent == first[0].parent and str(final) in stopped[0]
    final_nimg = load_snapshot(final)["cur_nimg"]
    assert first_nimg == 8 and final_nimg > first_nimg and final_nimg % 4 == 0
    assert load_snapshot(first[0])["cur_nimg"] == first_nimg                  # not overwritten
    assert not list(out.glob("*/.network-snapshot-*"))                        # no temp file left behind

    # --resume latest picks the stop snapshot and continues its image count for one more iteration.
    import train
    res = CliRunner().invoke(train.main, _train_cmd(archive, out, "--kimg", str((final_nimg + 4) / 1000),
                                                    "--resume", "latest")[2:])
    assert res.exit_code == 0, res.output
    second = sorted(p for p in out.iterdir() if p.is_dir())[-1]
    assert f"Resumed from {final}" in (second / "log.txt").read_text()
    assert stat_lines(second)[0]["Progress/kimg"]["mean"] == pytest.approx((final_nimg + 4) / 1000)
    assert load_snapshot(find_latest_snapshot(out))["cur_nimg"] == final_nimg + 4


def _sequence_metric(values):
    def metric(opts):
        return {"level": values.pop(0)}
    return metric


def test_best_snapshot_record_carries_over_a_resume(archive, tmp_path, monkeypatch):
    from stylegan2.metrics import registry
    registry.list_metrics()
    values = [1.0, 5.0, 2.0]
    monkeypatch.setitem(registry._REGISTRY, "toy_seq",
                        registry.MetricSpec("toy_seq", _sequence_metric(values), "level", True, "toy"))
    keep = dict(metrics=["toy_seq"], keep_best="toy_seq")
    base = run(archive, tmp_path / "base", kimg=0.012, **keep)           # snapshots at 4, 8, 12 images
    assert json.loads((tmp_path / "base" / "best.json").read_text())["value"] == 5.0
    snap8, snap12 = tmp_path / "base" / "network-snapshot-000000008.pkl", Path(base["snapshot"])
    assert load_snapshot(snap12)["best"]["value"] == 5.0                 # stored in the snapshot
    assert load_snapshot(snap8)["best"]["value"] == 1.0                  # its own 5.0 came after it

    # From 12: the record stored in the snapshot (5.0 at 8 images) beats the resumed run's 3.0.
    values[:] = [3.0]
    run(archive, tmp_path / "from12", resume=str(snap12), kimg=0.016, **keep)
    best = json.loads((tmp_path / "from12" / "best.json").read_text())
    assert best["value"] == 5.0 and best["snapshot"] == snap8.name
    assert load_snapshot(tmp_path / "from12" / "best-snapshot.pkl")["cur_nimg"] == 8
    # From 8: its own metric (5.0) is read back from the old run's metric log.
    values[:] = [3.0]
    run(archive, tmp_path / "from8", resume=str(snap8), kimg=0.012, **keep)
    best = json.loads((tmp_path / "from8" / "best.json").read_text())
    assert best["value"] == 5.0 and load_snapshot(tmp_path / "from8" / "best-snapshot.pkl")["cur_nimg"] == 8
    # A better value after a resume still wins.
    values[:] = [7.0]
    run(archive, tmp_path / "better", resume=str(snap12), kimg=0.016, **keep)
    best = json.loads((tmp_path / "better" / "best.json").read_text())
    assert best["value"] == 7.0 and load_snapshot(tmp_path / "better" / "best-snapshot.pkl")["cur_nimg"] == 16


def test_patience_ends_the_run_when_the_kept_metric_stops_improving(archive, tmp_path, monkeypatch):
    from stylegan2.metrics import registry
    registry.list_metrics()
    # Snapshots every 4 images; the metric improves at 4 and 8 images, then never again.
    values = [1.0, 5.0, 2.0, 3.0, 4.0, 1.0, 0.0]
    monkeypatch.setitem(registry._REGISTRY, "toy_seq",
                        registry.MetricSpec("toy_seq", _sequence_metric(values), "level", True, "toy"))
    keep = dict(metrics=["toy_seq"], keep_best="toy_seq")
    result = run(archive, tmp_path / "p", kimg=0.028, patience=0.008, **keep)
    # Best at 8 images; 16 images is the first snapshot 8 images (0.008 kimg) later: the run ends there.
    assert result["cur_nimg"] == 16 and result["patience_ended"] is True
    assert values == [4.0, 1.0, 0.0]                     # three snapshots measured, no more
    log = (tmp_path / "p" / "log.txt").read_text()
    assert "No new best toy_seq for 0.008 kimg (best 5 at kimg 0.008" in log and "training ends at kimg 0.016" in log
    assert json.loads((tmp_path / "p" / "best.json").read_text())["value"] == 5.0
    # The count carries over a resume: the best record (8 images) travels in the snapshot.
    values[:] = [2.5]
    again = run(archive, tmp_path / "again", resume=result["snapshot"], kimg=0.028, patience=0.008, **keep)
    assert again["cur_nimg"] == 20 and again["patience_ended"] is True
    # Without --patience the same metric sequence trains to --kimg.
    values[:] = [1.0, 5.0, 2.0, 3.0]
    full = run(archive, tmp_path / "full", kimg=0.016, **keep)
    assert full["cur_nimg"] == 16 and full["patience_ended"] is False


def test_backend_flags_and_freeze_d_reach_the_loop(archive, tmp_path, monkeypatch):
    from stylegan2 import networks
    seen, initial = [], {}
    real_D = networks.Discriminator

    def recording_D(**kwargs):
        D = real_D(**kwargs)
        initial.update({k: v.clone() for k, v in D.state_dict().items()})
        return D

    class Probe(tl.StyleGAN2Loss):
        def accumulate_gradients(self, phase, *args, **kwargs):
            seen.append((torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
                         torch.backends.cudnn.allow_tf32))
            super().accumulate_gradients(phase, *args, **kwargs)
    monkeypatch.setattr(networks, "Discriminator", recording_D)
    monkeypatch.setattr(tl, "StyleGAN2Loss", Probe)
    before = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    result = run(archive, tmp_path / "on", allow_tf32=True, nobench=True, freezed=2, kimg=0.008)
    assert seen and set(seen) == {(False, True, True)}
    assert (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32) == before                   # restored after the run
    seen.clear()
    run(archive, tmp_path / "off", kimg=0.004)
    assert set(seen) == {(True, False, False)}                           # defaults: benchmark on, no TF32

    snap = load_snapshot(result["snapshot"])
    assert snap["D"]["init_kwargs"]["block_kwargs"] == {"freeze_layers": 2}
    after = params(snap, "D")
    frozen = ["b16.fromrgb.weight", "b16.fromrgb.bias", "b16.conv0.weight", "b16.conv0.bias"]
    for name in frozen:                                                  # the 2 layers nearest the image
        torch.testing.assert_close(after[name], initial[name], rtol=0, atol=0, msg=name)
    assert not torch.equal(after["b16.conv1.weight"], initial["b16.conv1.weight"])   # layer 3 trains
    assert snap["opt_D"]["state"] and len(snap["opt_D"]["param_groups"][0]["params"]) == \
        len(load_snapshot(Path(tmp_path / "off" / "network-snapshot-000000.pkl"))["opt_D"]["param_groups"][0]["params"]) - 4


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_two_ranks_together(archive, tmp_path):
    out = tmp_path / "runs"
    log = open(tmp_path / "train.log", "w")
    proc = subprocess.Popen(_train_cmd(archive, out, "--kimg", "100", "--snap", "2", "--gpus", "2",
                                       "--batch-gpu", "2", "--mbstd-group", "2"),
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        for _ in range(6000):                  # hang guard only
            if list(out.glob("*/network-snapshot-*.pkl")) or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert list(out.glob("*/network-snapshot-*.pkl")), (tmp_path / "train.log").read_text()
        proc.send_signal(signal.SIGTERM)       # to the launcher only: it passes the stop on to both ranks
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "train.log").read_text()
    assert rc == 143 and text.splitlines()[-1].startswith("Stopped:") and "--resume latest" in text.splitlines()[-1], text
    final = load_snapshot(find_latest_snapshot(out))
    assert final["cur_nimg"] > 8 and final["cur_nimg"] % 4 == 0
