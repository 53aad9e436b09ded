"""The shipped network's recipe at tiny scale: synthetic loops instead of the fetch, a few training
steps, the export, then ``--network pretrained:NAME`` plays the exported file; a rerun skips every
stage that is done."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from click.testing import CliRunner

import gen_audio
from audio_ext.generation import pretrained
from stylegan2 import snapshot

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--synthetic", "2", "--synthetic-seconds", "5", "--resolution", "32", "--sample-rate", "2218",
        "--kimg", "0.008", "--name", "tinyrecipe", "--train-flag=--workers=0", "--train-flag=--cbase=64",
        "--train-flag=--cmax=16", "--train-flag=--preview-clips=0", "--train-flag=--tick=0.008"]


def run_recipe(work: Path, shipped: Path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "recipes" / "pretrained.py"), "--work", str(work),
                           "--export-dir", str(shipped), *TINY], cwd=ROOT, env=env, capture_output=True, text=True)


def test_tiny_recipe_trains_exports_and_plays(tmp_path, monkeypatch):
    work, shipped = tmp_path / "work", tmp_path / "shipped"
    r = run_recipe(work, shipped)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    exported = shipped / "tinyrecipe.pt"
    data = snapshot.load_snapshot(exported)
    assert set(data) == {"format_version", "G_ema", "audio", "pretrained", "cur_nimg"}
    assert data["audio"]["resolution"] == 32 and data["audio"]["sample_rate"] == 2218
    assert data["audio"]["target_bpm"] == 130.0
    assert "synthetic music, seed 0" in data["pretrained"]["notes"]
    assert data["pretrained"]["kimg"] >= 0.008 and data["pretrained"]["training_set"] == "tinyrecipe.zip"

    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", shipped)
    out = tmp_path / "gen"
    g = CliRunner().invoke(gen_audio.main, ["--network", "pretrained:tinyrecipe", "--seeds", "0-1",
                                            "--outdir", str(out)])
    assert g.exit_code == 0, g.output
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 2
    audio, sr = sf.read(wavs[0])
    assert sr == 2218 and len(audio) > 0 and np.isfinite(audio).all()

    archive = work / "tinyrecipe.zip"
    stamp = archive.stat().st_mtime_ns
    runs = sorted(p.name for p in (work / "runs").iterdir())
    again = run_recipe(work, shipped)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "exists: not rebuilt" in again.stderr and "already trained to" in again.stderr
    assert archive.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (work / "runs").iterdir()) == runs
    assert snapshot.load_snapshot(exported)["G_ema"]["init_kwargs"] == data["G_ema"]["init_kwargs"]


def test_a_fresh_work_folder_continues_a_committed_training_state(tmp_path):
    first = tmp_path / "first"
    r = run_recipe(first, tmp_path / "shipped1")
    assert r.returncode == 0, r.stderr[-2000:]
    state = snapshot.find_latest_snapshot(first / "runs")
    start_nimg = int(snapshot.load_snapshot(state)["cur_nimg"])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = [sys.executable, str(ROOT / "recipes" / "pretrained.py"), "--work", str(tmp_path / "second"),
            "--export-dir", str(tmp_path / "shipped2"), *TINY]
    longer = [a if a != "0.008" else "0.016" for a in args]          # --kimg 0.016: train on from 0.008
    r = subprocess.run([*longer, "--checkpoint", str(state)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"continuing the committed training state {state}" in r.stderr
    assert f"Resumed from {state} at kimg {start_nimg / 1000:.3f}" in r.stdout + r.stderr
    latest = snapshot.find_latest_snapshot(tmp_path / "second" / "runs")
    assert snapshot.load_snapshot(latest)["cur_nimg"] >= 16                      # trained on from the state
    assert (tmp_path / "shipped2" / "tinyrecipe.pt").is_file()

    missing = subprocess.run([*longer[:3], str(tmp_path / "third"), *longer[4:], "--checkpoint",
                              str(tmp_path / "nope.pkl")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert missing.returncode != 0
    assert "nope.pkl: --checkpoint is not a file" in missing.stderr
    assert not (tmp_path / "third").exists()                       # refused before anything is fetched or built


def _recipe_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("recipe_pretrained", ROOT / "recipes" / "pretrained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lr_schedule_parses_rates_until_kimg_and_refuses_malformed_ones():
    recipe = _recipe_module()
    assert recipe.parse_lr_schedule("0.002@73,0.001") == [(0.002, 73.0), (0.001, float("inf"))]
    assert recipe.parse_lr_schedule("0.0025") == [(0.0025, float("inf"))]
    assert recipe.parse_lr_schedule(recipe.LR_SCHEDULE)[0] == (0.002, 73.0)      # what electro128 trained with
    for text, message in [("0.002@73", "the last has none"), ("0.002,0.001", "needs @KIMG"),
                          ("fast@73,0.001", "is not LR@KIMG"), ("0.002@73,0.001@50,0.0005", "must grow"),
                          ("-1@10,0.001", "not a positive number"), ("0.002@0,0.001", "must grow")]:
        try:
            recipe.parse_lr_schedule(text)
        except ValueError as e:
            assert message in str(e) and text in str(e), (text, str(e))
        else:
            raise AssertionError(f"{text!r} was accepted")


def test_recipe_trains_one_run_per_rate_and_stops_when_more_training_stopped_helping(tmp_path):
    work, shipped = tmp_path / "work", tmp_path / "shipped"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    base = [sys.executable, str(ROOT / "recipes" / "pretrained.py"), "--work", str(work), "--export-dir", str(shipped),
            *[a if a != "0.008" else "0.016" for a in TINY]]
    r = subprocess.run([*base, "--lr-schedule", "0.002@0.008,0.001"], cwd=ROOT, env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    runs = sorted(p for p in (work / "runs").iterdir() if p.is_dir())
    assert len(runs) == 2                                            # one train.py run per rate
    import json
    first, second = (json.loads((p / "training_options.json").read_text()) for p in runs)
    assert (first["glr"], first["dlr"], first["kimg"]) == (0.002, 0.002, 0.008)
    assert (second["glr"], second["dlr"], second["kimg"]) == (0.001, 0.001, 0.016)
    assert second["patience"] == 50.0
    assert snapshot.load_snapshot(snapshot.find_latest_snapshot(work / "runs"))["cur_nimg"] == 16

    # best.json says sfd1k last improved at kimg 0: with --patience 0.016 a longer --kimg trains no more.
    best = runs[-1] / "best.json"
    assert best.is_file()
    record = json.loads(best.read_text())
    best.write_text(json.dumps(dict(record, kimg=0.0)))
    recipe = _recipe_module()
    assert recipe.kimg_since_best(runs[-1], 16) == 0.016
    (shipped / "tinyrecipe.pt").unlink()
    longer = [a if a != "0.016" else "1" for a in base]
    r = subprocess.run([*longer, "--patience", "0.016"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no new best sfd1k for 0.016 kimg (--patience 0.016): more training stopped helping at 0.016 kimg" \
        in r.stderr
    assert sorted(p for p in (work / "runs").iterdir() if p.is_dir()) == runs      # no new run
    assert (shipped / "tinyrecipe.pt").is_file()                                    # the export still ran

    bad = subprocess.run([*base, "--lr-schedule", "x"], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "--lr-schedule 'x'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_gpu_script_trains_for_its_budget_then_exports_and_brings_back_the_runs(tmp_path):
    work, dest = tmp_path / "work", tmp_path / "out"
    first = run_recipe(work, tmp_path / "shipped")                 # the archive (and a first run), as on a CPU
    assert first.returncode == 0, first.stderr[-2000:]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PRETRAINED_GPU_ALLOW_CPU="1", GPU_PYTHON=sys.executable,
               PRETRAINED_GPU_SECONDS="40", PRETRAINED_WORK=str(work), PRETRAINED_NAME="tinyrecipe", OUT=str(dest),
               PRETRAINED_GPU_SNAP="1")
    endless = [a if a != "0.008" else "1000" for a in TINY]           # only the time budget can end it
    r = subprocess.run(["bash", str(ROOT / "recipes" / "pretrained_gpu.sh"), *endless], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "stopped by signal 15: no further training; exporting the best snapshot so far" in log
    assert (dest / "shipped" / "tinyrecipe.pt").is_file()
    runs = sorted((dest / "runs").iterdir())
    assert [p.name for p in runs] == sorted(p.name for p in (work / "runs").iterdir())
    newest = runs[-1]
    assert "Stopped: training stopped at kimg" in log                   # train.py's stop snapshot
    kept = sorted(p.name for p in newest.glob("network-snapshot-*.pkl"))
    assert len(kept) == 1 and kept[0] == sorted(p.name for p in (work / "runs" / newest.name).glob(
        "network-snapshot-*.pkl"))[-1]                                # only the last snapshot comes back
    assert snapshot.load_snapshot(newest / kept[0])["cur_nimg"] > 8   # it trained on past the first run

    missing = subprocess.run(["bash", str(ROOT / "recipes" / "pretrained_gpu.sh")], cwd=tmp_path,
                             env=dict(env, PRETRAINED_WORK=str(tmp_path / "nowhere")), capture_output=True, text=True)
    assert missing.returncode == 2
    soon = subprocess.run(["bash", str(ROOT / "recipes" / "pretrained_gpu.sh")], cwd=tmp_path,
                          env=dict(env, PRETRAINED_GPU_SECONDS="soon"), capture_output=True, text=True)
    assert soon.returncode == 2
    assert soon.stdout.strip() == "pretrained-gpu: PRETRAINED_GPU_SECONDS=soon is not a whole number of seconds > 0"
    assert missing.stdout.strip() == (f"pretrained-gpu: {tmp_path / 'nowhere'}/tinyrecipe.zip: no such archive; build "
                                      f"it with make pretrained (or set PRETRAINED_WORK)")


def test_export_takes_the_best_snapshot_and_never_a_worse_one_when_the_best_is_elsewhere(tmp_path):
    import json
    recipe = _recipe_module()
    run = tmp_path / "00001-x"
    run.mkdir()
    assert recipe.export_source(run) == (None, f"{run}: no snapshot to export")
    for tag in ("000010", "000012"):
        (run / f"network-snapshot-{tag}.pkl").write_bytes(b"")
    assert recipe.export_source(run) == (run / "network-snapshot-000012.pkl", "")       # no metric kept: newest
    # Resumed from a committed state whose best snapshot stayed on the machine that trained it.
    (run / "best.json").write_text(json.dumps({"metric": "sfd1k", "value": 3.1607, "snapshot": "network-snapshot-000072.pkl",
                                               "kimg": 72.584, "run_dir": "/elsewhere"}))
    source, why = recipe.export_source(run)
    assert source is None and why == ("keep: the best sfd1k so far (3.161 at kimg 72.584, network-snapshot-000072.pkl) "
                                      "is not on this machine and nothing trained here beat it: the existing export "
                                      "is kept")
    (run / "best-snapshot.pkl").write_bytes(b"")                      # a snapshot here beat it
    assert recipe.export_source(run) == (run / "best-snapshot.pkl", "")


def test_a_committed_state_that_stopped_helping_trains_nothing_and_keeps_the_export(tmp_path):
    first = tmp_path / "first"
    r = run_recipe(first, tmp_path / "shipped1")
    assert r.returncode == 0, r.stderr[-2000:]
    state = snapshot.load_snapshot(snapshot.find_latest_snapshot(first / "runs"))
    state["best"] = {"metric": "sfd1k", "value": 1.0, "snapshot": "network-snapshot-000000.pkl", "kimg": 0.0,
                     "run_dir": "/elsewhere", "higher_is_better": False}
    done = tmp_path / "done.pkl"
    snapshot.save_snapshot(done, state)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = [sys.executable, str(ROOT / "recipes" / "pretrained.py"), "--work", str(tmp_path / "second"),
            "--export-dir", str(tmp_path / "shipped2"), *[a if a != "0.008" else "1" for a in TINY]]
    r = subprocess.run([*args, "--checkpoint", str(done), "--patience", "0.008"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{done}: no new best sfd1k for 0.008 kimg (--patience 0.008): more training stopped helping" in r.stderr
    assert "is the best snapshot of that training: kept" in r.stderr
    assert not any((tmp_path / "second" / "runs").glob("*")) and not (tmp_path / "shipped2").exists()
