"""gen_audio.py / audio_ext.generation.generate: from a snapshot to audio files, spectrograms, loops, walks and a page.

The snapshots are tiny randomly initialised generators written with stylegan2.snapshot.save_snapshot,
with audio blocks small enough that a clip decodes in milliseconds.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

networks = pytest.importorskip("stylegan2.networks", reason="stylegan2.networks has not landed yet")
snapshot = pytest.importorskip("stylegan2.snapshot")

from click.testing import CliRunner  # noqa: E402
from snapshot_helpers import tiny_audio_snapshot  # noqa: E402

import gen_audio  # noqa: E402
from audio_ext.core import audio_io  # noqa: E402
from audio_ext.decoder import methods  # noqa: E402
from audio_ext.generation import generate, synthesis  # noqa: E402

Z_DIM = 16


def make_snapshot(path: Path, resolution: int, sample_rate: int, bpm: float, c_dim: int = 0, seed: int = 0) -> Path:
    return tiny_audio_snapshot(path, resolution, width=Z_DIM, c_dim=c_dim, seed=seed, sample_rate=sample_rate,
                               target_bpm=bpm, cur_nimg=0)


@pytest.fixture(scope="module")
def snaps(tmp_path_factory):
    root = tmp_path_factory.mktemp("snapshots")
    return {
        # 32 x 32 at 44.1 kHz: 1024-sample clips, the real sample rate
        "basic": make_snapshot(root / "network-snapshot-000000.pkl", 32, 44100, 130.0),
        # 64 x 64 at 2048 Hz: 2 s clips at 240 BPM, i.e. 2 bars of 1 s, room for loops and walks
        "bars": make_snapshot(root / "bars.pkl", 64, 2048, 240.0, seed=1),
        "cond": make_snapshot(root / "cond.pkl", 32, 44100, 130.0, c_dim=3, seed=2),
    }


def run_cli(*args):
    return CliRunner().invoke(gen_audio.main, [str(a) for a in args], catch_exceptions=False)


def files_in(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def reference_image(snap: Path, seed: int, c=None, trunc=1.0) -> np.ndarray:
    """The generator's image for ``seed``, computed here independently of audio_ext.generation.generate."""
    nets = snapshot.build_networks(snapshot.load_snapshot(snap), names=["G_ema"])
    G = nets["G_ema"]
    z = torch.from_numpy(np.random.RandomState(seed).randn(G.z_dim)[None].astype(np.float32))
    c = torch.zeros(1, G.c_dim) if c is None else c
    with torch.no_grad():
        return G(z, c, truncation_psi=trunc, noise_mode="const", force_fp32=True)[0, 0].numpy()


# ------------------------------------------------------------------------------------------ files

BASIC_ARGS = ["--seeds", "0-2,7", "--trunc", "0.7", "--batch", "2"]


@pytest.fixture(scope="module")
def basic_run(snaps, tmp_path_factory):
    """One ordinary run shared by the tests that only read its files."""
    out = tmp_path_factory.mktemp("basic") / "out"
    result = run_cli("--network", snaps["basic"], *BASIC_ARGS, "--outdir", out)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_each_seed_gives_a_16_bit_clip_a_spectrogram_and_a_page_entry(basic_run):
    out, output = basic_run
    names = sorted(p.name for p in out.iterdir())
    expected = [f"seed{s:04d}-130bpm.wav" for s in (0, 1, 2, 7)] + [f"seed{s:04d}.png" for s in (0, 1, 2, 7)]
    assert names == sorted(expected + ["index.html"])
    for s in (0, 1, 2, 7):
        info = sf.info(str(out / f"seed{s:04d}-130bpm.wav"))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (44100, 1, "PCM_16", 32 * 32)
        with sf.SoundFile(str(out / f"seed{s:04d}-130bpm.wav")) as f:
            tags = f.copy_metadata()
        assert f"seed={s}" in tags["comment"] and "bpm=130" in tags["comment"] and "trunc=0.7" in tags["comment"]
        png = Image.open(out / f"seed{s:04d}.png")
        assert (png.mode, png.size) == ("L", (32, 32))
    page = (out / "index.html").read_text()
    assert page.count("<audio") == 4 and "network-snapshot-000000.pkl" in page
    assert "listening page" in output and str(out / "index.html") in output


def test_spectrogram_png_is_the_generator_image_row_0_highest_frequency(snaps, basic_run):
    out, _ = basic_run
    img = reference_image(snaps["basic"], 7, trunc=0.7)
    expected = np.clip(np.round((np.clip(img, -1, 1) + 1) * 127.5), 0, 255)
    png = np.asarray(Image.open(out / "seed0007.png")).astype(np.float64)
    assert np.max(np.abs(png - expected)) <= 1  # the generator's own orientation: row 0 = top = highest bin


def test_audio_is_the_phase_layer_decoding_of_the_generated_image(snaps, tmp_path):
    out = tmp_path / "out"
    assert run_cli("--network", snaps["basic"], "--seeds", "3", "--batch", "1", "--outdir", out).exit_code == 0
    block = snapshot.load_snapshot(snaps["basic"])["audio"]
    img = torch.from_numpy(np.clip(reference_image(snaps["basic"], 3), -1, 1))[None]
    g = torch.Generator().manual_seed(3)
    expected = methods.decode_audio(img, block, generator=g)[0].numpy().astype(np.float64)
    peak = np.max(np.abs(expected))
    if peak > audio_io.PEAK_LIMIT:
        expected *= audio_io.PEAK_LIMIT / peak
    audio, sr = sf.read(str(out / "seed0003-130bpm.wav"))
    assert sr == 44100
    np.testing.assert_allclose(audio, expected, atol=2 / 32768)


def test_flac_output(snaps, tmp_path):
    out = tmp_path / "out"
    assert run_cli("--network", snaps["basic"], "--seeds", "1", "--format", "flac", "--outdir", out).exit_code == 0
    info = sf.info(str(out / "seed0001-130bpm.flac"))
    assert (info.format, info.subtype, info.samplerate, info.frames) == ("FLAC", "PCM_16", 44100, 1024)
    assert "seed0001-130bpm.flac" in (out / "index.html").read_text()


def test_same_snapshot_seeds_and_options_give_identical_files(snaps, basic_run, tmp_path):
    first, _ = basic_run
    assert run_cli("--network", snaps["basic"], *BASIC_ARGS, "--outdir", tmp_path / "again").exit_code == 0
    a, b = files_in(first), files_in(tmp_path / "again")
    assert a == b and len(a) == 9
    # and the seed decides the clip: two seeds differ
    assert a["seed0000-130bpm.wav"] != a["seed0001-130bpm.wav"]


def test_random_noise_mode_is_seeded_and_independent_of_the_batch(snaps, tmp_path):
    base = ["--network", snaps["basic"], "--seeds", "0-2", "--noise-mode", "random"]
    assert run_cli(*base, "--batch", "1", "--outdir", tmp_path / "a").exit_code == 0
    assert run_cli(*base, "--batch", "3", "--outdir", tmp_path / "b").exit_code == 0
    assert files_in(tmp_path / "a") == files_in(tmp_path / "b")


def pcm(path: Path) -> np.ndarray:
    return sf.read(str(path), dtype="int16")[0].astype(np.int64)


def test_random_phase_follows_each_seed_whatever_the_batch(snaps, tmp_path):
    # fgla starts from random phase everywhere. Each seed's phase is drawn from its own generator, so a
    # seed's clip must not depend on which seeds share its batch. (Bit-identity across batch sizes is not
    # asserted: MKL's batched FFTs and the batched GEMMs of G round differently from their one-clip
    # forms, ~1e-7 relative, which moves an occasional sample by one 16-bit step; see docs/generation.md.)
    base = ["--network", snaps["basic"], "--seeds", "4,0-2", "--method", "fgla", "--iters", "4"]
    assert run_cli(*base, "--batch", "1", "--outdir", tmp_path / "one").exit_code == 0
    assert run_cli(*base, "--batch", "3", "--outdir", tmp_path / "three").exit_code == 0
    for s in (4, 0, 1, 2):
        a = pcm(tmp_path / "one" / f"seed{s:04d}-130bpm.wav")
        b = pcm(tmp_path / "three" / f"seed{s:04d}-130bpm.wav")
        assert a.shape == b.shape == (1024,) and np.abs(a).max() > 1000
        assert np.abs(a - b).max() <= 2, s  # round-off only
        assert np.mean(a != b) < 0.05, s
    # the same batch size gives byte-identical files, page included
    assert run_cli(*base, "--batch", "3", "--outdir", tmp_path / "again").exit_code == 0
    assert files_in(tmp_path / "three") == files_in(tmp_path / "again")
    # what the per-seed generators prevent: seed 1's image with another seed's random start (as when the
    # batch's first seed seeded the whole batch) is a different waveform, far beyond round-off
    img = torch.from_numpy(np.clip(reference_image(snaps["basic"], 1), -1, 1))[None]
    block = snapshot.load_snapshot(snaps["basic"])["audio"]
    own = synthesis.decode_images(img, block, "fgla", 4, torch.device("cpu"), seed=[1])
    other = synthesis.decode_images(img, block, "fgla", 4, torch.device("cpu"), seed=[0])
    assert np.abs(own - other).max() * 32768 > 100
    audio = pcm(tmp_path / "three" / "seed0001-130bpm.wav") / 32768
    np.testing.assert_allclose(audio, audio_io.limit_peak(own[0].astype(np.float64)), atol=3 / 32768)


def test_truncation_zero_gives_the_average_clip_for_every_seed(snaps, tmp_path):
    out = tmp_path / "out"
    assert run_cli("--network", snaps["basic"], "--seeds", "0,9", "--trunc", "0", "--outdir", out).exit_code == 0
    a = np.asarray(Image.open(out / "seed0000.png"))
    b = np.asarray(Image.open(out / "seed0009.png"))
    np.testing.assert_array_equal(a, b)  # psi = 0 collapses every w onto w_avg


def test_conditional_model_uses_the_class(snaps, tmp_path):
    out = tmp_path / "out"
    result = run_cli("--network", snaps["cond"], "--seeds", "4", "--class", "2", "--outdir", out)
    assert result.exit_code == 0, result.output
    c = torch.zeros(1, 3)
    c[0, 2] = 1
    expected = np.clip(np.round((np.clip(reference_image(snaps["cond"], 4, c=c), -1, 1) + 1) * 127.5), 0, 255)
    assert np.max(np.abs(np.asarray(Image.open(out / "seed0004.png")).astype(float) - expected)) <= 1
    assert "<dt>class</dt><dd>2</dd>" in (out / "index.html").read_text()


# ------------------------------------------------------------------------------------------ loops and walks

def bar_samples(bars, sr=2048, bpm=240.0):
    return round(bars * 4 * 60 * sr / bpm)


def test_loop_is_a_whole_number_of_bars_with_a_continuous_loop_point(snaps, tmp_path):
    common = ["--network", snaps["bars"], "--seeds", "11", "--batch", "1"]
    assert run_cli(*common, "--outdir", tmp_path / "full").exit_code == 0
    result = run_cli(*common, "--loop", "1", "--crossfade", "0.05", "--outdir", tmp_path / "loop")
    assert result.exit_code == 0, result.output
    full, sr = sf.read(str(tmp_path / "full" / "seed0011-240bpm.wav"))
    loop, sr_loop = sf.read(str(tmp_path / "loop" / "seed0011-loop1bar-240bpm.wav"))
    n, fade = bar_samples(1), round(0.05 * 2048)
    assert sr == sr_loop == 2048 and loop.size == n == 2048
    # Peak limiting may scale the two files differently; find the scale on the untouched middle part.
    mid = slice(fade, n)
    scale = np.dot(loop[mid], full[mid]) / np.dot(full[mid], full[mid])
    lsb = 1 / 32768
    np.testing.assert_allclose(loop[mid], scale * full[mid], atol=3 * lsb)
    # Wrapping around plays the clip's own continuation: loop[-1] -> loop[0] is full[n-1] -> full[n].
    assert abs(loop[0] - scale * full[n]) <= 3 * lsb
    wrap = abs(loop[0] - loop[-1])
    assert wrap == pytest.approx(abs(scale * (full[n] - full[n - 1])), abs=6 * lsb)


def test_loop_longer_than_the_clip_is_refused_before_anything_is_written(snaps, tmp_path):
    out = tmp_path / "out"
    result = run_cli("--network", snaps["bars"], "--seeds", "1", "--loop", "2", "--outdir", out)
    assert result.exit_code != 0
    assert "--loop 2" in result.output and "at most 1 whole bar" in result.output
    assert not out.exists()


def test_walk_joins_clips_on_the_bar_grid(snaps, tmp_path):
    net = ["--network", snaps["bars"], "--batch", "1"]
    assert run_cli(*net, "--seeds", "3,8", "--outdir", tmp_path / "clips").exit_code == 0
    result = run_cli(*net, "--walk", "3,8", "--walk-steps", "0", "--bars", "1", "--crossfade", "0",
                     "--outdir", tmp_path / "walk")
    assert result.exit_code == 0, result.output
    piece, sr = sf.read(str(tmp_path / "walk" / "walk-3-8-240bpm.wav"))
    n = bar_samples(1)
    assert piece.size == 2 * n and sr == 2048
    clips = [sf.read(str(tmp_path / "clips" / f"seed{s:04d}-240bpm.wav"))[0] for s in (3, 8)]
    # Bar k of the piece is the first bar of clip k, sample-aligned: the normalised correlation is ~1
    # (phase retrieval may differ in the last digits), while the other clip, or a shift by a few samples, is not.
    def corr(a, b):
        return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))

    for k, c in enumerate(clips):
        bar = piece[k * n:(k + 1) * n]
        assert corr(bar, c[:n]) > 0.99
        assert corr(bar, clips[1 - k][:n]) < 0.9
        assert corr(bar[3:], c[:n - 3]) < 0.9
    assert Image.open(tmp_path / "walk" / "walk-3-8.png").size[1] == 64
    assert "walk 3,8" in (tmp_path / "walk" / "index.html").read_text()


def test_walk_with_interpolation_steps_has_one_segment_per_clip(snaps, tmp_path):
    out = tmp_path / "walk"
    result = run_cli("--network", snaps["bars"], "--walk", "0,1", "--walk-steps", "2", "--bars", "1",
                     "--outdir", out)
    assert result.exit_code == 0, result.output
    info = sf.info(str(out / "walk-0-1-240bpm.wav"))
    n_clips = 1 * (2 + 1) + 1  # seed 0, two points in between, seed 1
    assert info.frames == bar_samples(n_clips)
    # the picture is the clips' frames side by side: one bar = sr / hop * (60 / bpm * 4) frames = 32
    assert Image.open(out / "walk-0-1.png").size == (32 * n_clips, 64)


def test_archive_without_target_tempo_gets_a_detected_tempo(tmp_path):
    import librosa
    snap = make_snapshot(tmp_path / "free-tempo.pkl", 64, 22050, None, seed=3)
    out = tmp_path / "out"
    assert run_cli("--network", snap, "--seeds", "0", "--outdir", out).exit_code == 0
    (wav,) = out.glob("seed0000-*bpm.wav")
    named = float(wav.name[len("seed0000-"):-len("bpm.wav")])
    audio, sr = sf.read(str(wav), dtype="float32")
    detected = float(np.atleast_1d(librosa.feature.tempo(y=audio, sr=sr))[0])
    assert named == pytest.approx(detected, rel=0.03)
    assert f"{named:g} BPM" in (out / "index.html").read_text()


# ------------------------------------------------------------------------------------------ bad input

def assert_clean_failure(result, out: Path, *fragments):
    assert result.exit_code != 0
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    error_lines = [line for line in lines if line.startswith("Error")]
    assert len(error_lines) == 1, result.output
    for fragment in fragments:
        assert fragment in error_lines[0], result.output
    assert not out.exists() or list(out.iterdir()) == []


def test_missing_snapshot(tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "nope.pkl"
    assert_clean_failure(run_cli("--network", missing, "--seeds", "0", "--outdir", out), out, str(missing),
                         "no such file")


@pytest.mark.parametrize("content", [b"", b"not a snapshot at all", b"PK\x03\x04garbage"])
def test_corrupt_snapshot(tmp_path, content):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(content)
    out = tmp_path / "out"
    assert_clean_failure(run_cli("--network", bad, "--seeds", "0", "--outdir", out), out, str(bad))


def test_truncated_snapshot(snaps, tmp_path):
    data = snaps["basic"].read_bytes()
    bad = tmp_path / "truncated.pkl"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert_clean_failure(run_cli("--network", bad, "--seeds", "0", "--outdir", out), out, str(bad))


def test_snapshot_without_audio_block(tmp_path):
    G = networks.Generator(z_dim=8, w_dim=8, img_resolution=8, img_channels=1, mapping_kwargs=dict(num_layers=1),
                           channel_base=64, channel_max=8)
    path = tmp_path / "images-only.pkl"
    snapshot.save_snapshot(path, {"G_ema": snapshot.network_record(G)})
    out = tmp_path / "out"
    assert_clean_failure(run_cli("--network", path, "--seeds", "0", "--outdir", out), out, str(path), "audio")


@pytest.mark.parametrize("spec", ["a-b", "3-1", "1,,2", "-4"])
def test_bad_seed_syntax(snaps, tmp_path, spec):
    out = tmp_path / "out"
    assert_clean_failure(run_cli("--network", snaps["basic"], "--seeds", spec, "--outdir", out), out, "--seeds")


def test_class_on_an_unconditional_model(snaps, tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(run_cli("--network", snaps["basic"], "--seeds", "0", "--class", "1", "--outdir", out),
                         out, "unconditional")


def test_conditional_model_needs_a_valid_class(snaps, tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(run_cli("--network", snaps["cond"], "--seeds", "0", "--outdir", out), out,
                         "pass --class 0..2")
    assert_clean_failure(run_cli("--network", snaps["cond"], "--seeds", "0", "--class", "3", "--outdir", out),
                         out, "out of range")


def test_nothing_to_generate(snaps, tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(run_cli("--network", snaps["basic"], "--outdir", out), out, "--seeds")


def test_unknown_phase_method(snaps, tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(run_cli("--network", snaps["basic"], "--seeds", "0", "--method", "magic", "--outdir", out),
                         out, "--method 'magic'")


def test_outdir_that_is_a_file_or_under_a_file(snaps, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        result = run_cli("--network", snaps["basic"], "--seeds", "0", "--outdir", out)
        assert result.exit_code != 0
        assert f"--outdir {out}" in result.output
    assert blocker.read_text() == "x"


def test_failure_midway_leaves_no_partial_output_and_keeps_old_files(snaps, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier run")
    real = synthesis.decode_images
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise synthesis.GenerateError("decoding failed: simulated")
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "decode_images", flaky)
    result = run_cli("--network", snaps["basic"], "--seeds", "0-3", "--batch", "2", "--outdir", out)
    assert result.exit_code != 0 and "simulated" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]

    calls.clear()
    fresh = tmp_path / "new" / "deeper"
    result = run_cli("--network", snaps["basic"], "--seeds", "0-3", "--batch", "2", "--outdir", fresh)
    assert result.exit_code != 0
    assert not (tmp_path / "new").exists()  # folders created for the run are removed again


def test_library_call_returns_the_written_paths(snaps, tmp_path):
    opts = generate.GenerateOptions(network=str(snaps["basic"]), outdir=str(tmp_path / "o"), seeds=[2, 4])
    result = generate.generate(opts, log=lambda *_: None)
    assert [p.name for p in result.audio] == ["seed0002-130bpm.wav", "seed0004-130bpm.wav"]
    assert all(p.is_file() for p in result.audio + result.images + [result.page])
    assert result.bpm == 130.0
    json.dumps([str(p) for p in result.audio])  # plain paths, usable by scripts


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_a_gpu(snaps, tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(run_cli("--network", snaps["basic"], "--seeds", "0", "--device", "cuda", "--outdir", out),
                         out, "no CUDA device")


@pytest.mark.gpu
def test_cuda_generation_matches_the_cpu_images(snaps, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    for device in ("cpu", "cuda"):
        assert run_cli("--network", snaps["basic"], "--seeds", "0-3", "--device", device,
                       "--outdir", tmp_path / device).exit_code == 0
    for s in range(4):
        a = np.asarray(Image.open(tmp_path / "cpu" / f"seed{s:04d}.png")).astype(int)
        b = np.asarray(Image.open(tmp_path / "cuda" / f"seed{s:04d}.png")).astype(int)
        assert np.max(np.abs(a - b)) <= 2  # fp16 in the top blocks on CUDA, fp32 on the CPU
        info = sf.info(str(tmp_path / "cuda" / f"seed{s:04d}-130bpm.wav"))
        assert (info.samplerate, info.frames) == (44100, 1024)
