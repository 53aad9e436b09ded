"""gen_audio.py answers absurd input with one line, a non-zero exit and an untouched --outdir.

Each case was a traceback or a hang before: a snapshot whose audio block holds a tempo of 1e300
(whole-bar arithmetic looped forever), NaN/inf/negative tempi, a sample rate of 2**40, an absurd
mean; flags --trunc 1e300, --crossfade 1e308 and --seeds with unicode digits.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from snapshot_helpers import tiny_audio_snapshot

import gen_audio
from audio_ext.core.geometry import StftGeometry

ROOT = Path(__file__).resolve().parents[1]


def write_snapshot(path, **audio_changes):
    block = StftGeometry(32).audio_block(mean=-6.0, std=3.0, target_bpm=130.0)
    block.update(audio_changes)
    return tiny_audio_snapshot(path, 32, width=8, mapping_layers=1, block=block)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_snapshot(tmp_path_factory.mktemp("snap") / "good.pkl")


@pytest.fixture
def outdir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.wav").write_bytes(b"RIFF earlier run")
    return out


def assert_refused(result, out, *words, exit_code=1):
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    for w in words:
        assert w in errors[0], result.output
    assert sorted(p.name for p in out.iterdir()) == ["earlier.wav"]
    assert (out / "earlier.wav").read_bytes() == b"RIFF earlier run"


def run(*args):
    return CliRunner().invoke(gen_audio.main, [str(a) for a in args])


def test_a_tempo_of_1e300_is_refused_at_once_instead_of_looping(tmp_path, outdir):
    snap = write_snapshot(tmp_path / "fast.pkl", target_bpm=1e300)
    # A subprocess with a timeout: before the fix this run never ended (--loop needs whole bars).
    done = subprocess.run([sys.executable, str(ROOT / "gen_audio.py"), "--network", str(snap), "--seeds", "0",
                           "--loop", "1", "--outdir", str(outdir)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"Error: {snap}: audio block target_bpm 1e+300 is outside 20..1000 BPM"], done.stderr
    assert sorted(p.name for p in outdir.iterdir()) == ["earlier.wav"]


@pytest.mark.parametrize("change, words", [
    (dict(target_bpm=float("nan")), "target_bpm nan"),
    (dict(target_bpm=float("inf")), "target_bpm inf"),
    (dict(target_bpm=-130.0), "target_bpm -130.0"),
    (dict(sample_rate=2**40), "sample_rate 1099511627776"),
    (dict(mean=1e6), "mean 1000000.0"),
    (dict(mean=float("nan")), "mean nan"),
    (dict(std=float("inf")), "std inf"),
    (dict(clip_sigma=1e300), "clip_sigma 1e+300"),
])
def test_absurd_audio_blocks_are_refused_naming_snapshot_and_field(tmp_path, outdir, change, words):
    snap = write_snapshot(tmp_path / "odd.pkl", **change)
    assert_refused(run("--network", snap, "--seeds", "0", "--outdir", outdir), outdir, str(snap), words)


@pytest.mark.parametrize("args, words", [
    (("--trunc", "1e300"), "--trunc 1e+300"),
    (("--trunc", "nan"), "--trunc nan"),
    (("--crossfade", "1e308"), "--crossfade 1e+308"),
    (("--loop", "1", "--crossfade", "inf"), "--crossfade inf"),
])
def test_absurd_flag_values_are_refused_naming_the_flag(good, outdir, args, words):
    assert_refused(run("--network", good, "--seeds", "0", *args, "--outdir", outdir), outdir, words)


@pytest.mark.parametrize("spec", ["²", "0-²", "٣", "1,²"])
def test_unicode_digits_in_seeds_are_a_usage_error(good, outdir, spec):
    result = run("--network", good, "--seeds", spec, "--outdir", outdir)
    assert_refused(result, outdir, "--seeds", repr(spec), exit_code=2)
    result = run("--network", good, "--walk", spec, "--outdir", outdir)
    assert_refused(result, outdir, "--walk", exit_code=2)


def test_the_good_snapshot_still_generates(good, outdir):
    result = run("--network", good, "--seeds", "0", "--trunc", "-2.5", "--outdir", outdir)
    assert result.exit_code == 0, result.output
    assert (outdir / "seed0000-130bpm.wav").is_file() and (outdir / "earlier.wav").is_file()
