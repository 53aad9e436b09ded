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
