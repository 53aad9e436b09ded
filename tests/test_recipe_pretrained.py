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
