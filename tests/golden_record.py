"""Record what the command lines produce, so that a refactor can prove it changed nothing (issue 21).

    python tests/golden_record.py > tests/golden.json      # run with the code whose behaviour is the reference

Everything goes through the command lines (``dataset_tool_audio.py``, ``train.py``, ``gen_audio.py``,
``python -m audio_ext decode``) in subprocesses, never through library imports, so the same script
measures the code before and after a move of modules. Recorded: the sha256 of an archive built from
synthetic techno loops (``audio_ext/synth.py``), the names of the keys of a snapshot trained on it, the
sha256 of every WAV that ``gen_audio.py`` and ``decode`` write for fixed seeds and clips, and the
``--help`` text of every command. ``tests/test_golden.py`` runs :func:`record` again and compares.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Every command line and sub-command whose ``--help`` text is part of the contract.
HELP_COMMANDS = [
    ["train.py"], ["gen_audio.py"], ["project_audio.py"], ["calc_metrics.py"], ["dataset_tool_audio.py"],
    ["demo.py"], ["-m", "audio_ext"], ["-m", "audio_ext", "decode"], ["-m", "audio_ext", "train-decoder"],
    ["-m", "audio_ext", "survey"], ["-m", "audio_ext", "survey", "make"], ["-m", "audio_ext", "survey", "serve"],
    ["-m", "audio_ext", "survey", "score"],
]

# Two sources at different tempi, so that tracking, stretching and cutting all do real work.
_SOURCES = """
import sys, soundfile as sf
try:
    from audio_ext.core.synth import techno_loop
except ImportError:      # the layout before issue 21
    from audio_ext.synth import techno_loop
sr = 44100
sf.write(sys.argv[1] + '/a.wav', techno_loop(126.0, 12.0, sr=sr, seed=1), sr, subtype='PCM_16')
sf.write(sys.argv[1] + '/b.flac', techno_loop(134.0, 12.0, sr=sr, seed=2, swing=0.1), sr, subtype='PCM_16')
"""

# A randomly initialised 32 x 32 generator with a fixed seed and an audio block: generation without training.
_SNAPSHOT = """
import sys, torch
from stylegan2 import networks, snapshot
torch.manual_seed(7)
G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=1,
                       mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=16)
block = {'sample_rate': 44100, 'resolution': 32, 'n_fft': 64, 'hop_length': 32, 'eps': 1e-10,
         'clip_sigma': 3.0, 'mean': -6.0, 'std': 3.0, 'target_bpm': 130.0}
snapshot.save_snapshot(sys.argv[1], {'G_ema': snapshot.network_record(G), 'audio': block, 'cur_nimg': 0})
"""

# The names (not the values) of a snapshot's keys, nested one level into dicts.
_KEYS = """
import json, sys
from stylegan2.snapshot import load_snapshot
data = load_snapshot(sys.argv[1])
print(json.dumps({k: sorted(v) if isinstance(v, dict) else None for k, v in sorted(data.items())}))
"""


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="100", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONHASHSEED="0", ELECTROGAN_OPS="reference")
    env.pop("ELECTROGAN_DECODER_MODEL", None)
    return env


def _run(args, cwd) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digests(folder: Path, pattern: str = "*.wav") -> dict:
    return {p.relative_to(folder).as_posix(): _sha(p) for p in sorted(folder.rglob(pattern))}


def record_help() -> dict:
    """``--help`` text of every command, keyed by its command line."""
    return {" ".join(cmd): _run([*(str(ROOT / c) if c.endswith(".py") else c for c in cmd), "--help"], ROOT)
            for cmd in HELP_COMMANDS}


def record_outputs(work: Path) -> dict:
    """Build, train, generate and decode in ``work``; digests of what each step wrote."""
    src = work / "src"
    src.mkdir()
    _run(["-c", _SOURCES, str(src)], ROOT)
    archive = work / "stft.zip"
    _run([str(ROOT / "dataset_tool_audio.py"), "--source", str(src), "--dest", str(archive), "--resolution", "32",
          "--segment-seconds", "6", "--no-progress", "--stretcher", "phase-vocoder"], work)
    out = {"archive": _sha(archive)}

    runs = work / "runs"
    _run([str(ROOT / "train.py"), "--outdir", str(runs), "--data", str(archive), "--cfg", "tiny", "--batch", "4",
          "--batch-gpu", "4", "--kimg", "0.004", "--tick", "0.004", "--snap", "1", "--workers", "0", "--no-progress",
          "--aug", "noaug", "--ops", "reference", "--preview-clips", "0", "--decoder-model", "none"], work)
    snaps = sorted(runs.rglob("network-snapshot-*.pkl"))
    out["snapshot_keys"] = json.loads(_run(["-c", _KEYS, str(snaps[-1])], ROOT))

    snap = work / "tiny.pkl"
    _run(["-c", _SNAPSHOT, str(snap)], ROOT)
    for name, extra in [("gen", ["--seeds", "0-2"]),
                        ("gen_bpm", ["--seeds", "3,4", "--bpm", "120", "--method", "fgla", "--iters", "8"]),
                        ("gen_noise", ["--seeds", "5", "--noise-mode", "random", "--format", "flac"]),
                        ("gen_mix", ["--mix-rows", "1,2", "--mix-cols", "3", "--mix-styles", "0-1"])]:
        _run([str(ROOT / "gen_audio.py"), "--network", str(snap), "--outdir", str(work / name), "--device", "cpu",
              *extra], work)
        out[name] = _digests(work / name, "*.[wf][al][va]*")
    _run(["-m", "audio_ext", "decode", "--data", str(archive), "--clips", "0-2", "--outdir", str(work / "decoded")], ROOT)
    out["decode"] = _digests(work / "decoded")
    return out


def record() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return {"outputs": record_outputs(Path(tmp)), "help": record_help()}


if __name__ == "__main__":
    json.dump(record(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
