"""audio_ext.generation.audio_projection and project_audio.py: the target through the dataset tool's path, the spectral
loss terms, and a whole projection from the command line on a tiny snapshot.

The source is a synthetic techno loop (audio_ext.core.synth) at a known tempo, so the beat the target
clip must start on is known.
"""
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from PIL import Image
from snapshot_helpers import tiny_audio_snapshot

from audio_ext.core import codec
from audio_ext.core.geometry import StftGeometry
from audio_ext.core.synth import techno_loop
from audio_ext.dataset.cut import SliceParams, slice_track
from audio_ext.generation.audio_projection import ProjectionError, SpectralLoss, band_matrix, prepare_target

SR = 44100
BPM = 126.0


@pytest.fixture(scope="module")
def track(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "loop126.flac"
    sf.write(path, techno_loop(BPM, 20.0, sr=SR, seed=3, offset=0.1), SR)
    return path


@pytest.fixture(scope="module")
def snap(tmp_path_factory):
    block = StftGeometry(32, sample_rate=SR).audio_block(mean=-7.5, std=6.3, target_bpm=130.0)
    path = tmp_path_factory.mktemp("snap") / "network-snapshot-000000.pkl"
    return tiny_audio_snapshot(path, 32, block=block, cur_nimg=0), block


def test_target_is_the_dataset_tools_clip_on_the_first_beat_after_start(track, snap):
    _, block = snap
    clip = prepare_target(track, block, start_s=5.0)
    geometry = StftGeometry.from_dict(block)
    # The dataset tool's own clips with a one-beat stride: the target is the first that starts at or after 5 s.
    clips, records, _ = slice_track(track, geometry, SliceParams(target_bpm=130.0, stride_beats=1.0))
    k = next(i for i, r in enumerate(records) if r["clip_start_s"] >= 5.0)
    np.testing.assert_array_equal(clip.audio, clips[k])
    assert clip.record == records[k]
    # It starts on a beat of the source (offset 0.1 s, 126 BPM), within one beat after --start.
    beat = 60.0 / BPM
    start = clip.record["clip_start_s"]
    assert 5.0 <= start < 5.0 + beat + 0.01
    assert abs((start - 0.1) / beat - round((start - 0.1) / beat)) * beat < 0.01
    assert clip.record["source_bpm"] == pytest.approx(BPM, abs=0.05)
    np.testing.assert_array_equal(clip.image, codec.encode(clips[k], geometry, block["mean"], block["std"]))
    assert clip.image.dtype == np.uint8 and clip.image.shape == (32, 32)


def test_target_errors(track, snap, tmp_path):
    _, block = snap
    with pytest.raises(ProjectionError, match=r"--start 25 s is past the end"):
        prepare_target(track, block, start_s=25.0)
    with pytest.raises(ProjectionError, match=r"no clip at or after --start 19.99 s"):
        prepare_target(track, block, start_s=19.99)
    with pytest.raises(ProjectionError, match="--start must be a non-negative"):
        prepare_target(track, block, start_s=-1)
    with pytest.raises(ProjectionError, match="no target_bpm"):
        prepare_target(track, dict(block, target_bpm=None))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(ProjectionError, match="--target .*bad.wav"):
        prepare_target(bad, block)


def test_spectral_terms_against_numpy():
    rng = np.random.RandomState(0)
    images = rng.uniform(-1, 1, (2, 1, 32, 32))
    target = rng.uniform(-1, 1, (1, 1, 32, 32))
    loss = SpectralLoss(32, bands=8, band_weight=2.0, onset_weight=3.0)
    m = band_matrix(32, 8).numpy()

    def bands(x):  # rows: row 0 is the highest bin; bins from DC upwards, averaged over time then per band
        level = x[0, ::-1].mean(axis=1)
        return np.array([level[row > 0].mean() for row in m])

    def onset(x):
        d = np.diff(x[0], axis=1)
        return np.maximum(d, 0).mean(axis=0)

    expect_band = 2.0 * np.mean([(bands(i) - bands(target[0])) ** 2 for i in images])
    expect_onset = 3.0 * np.mean([(onset(i) - onset(target[0])) ** 2 for i in images])
    got = loss(torch.tensor(images, dtype=torch.float32), torch.tensor(target, dtype=torch.float32))
    assert float(got["band"]) == pytest.approx(expect_band, rel=1e-4)
    assert float(got["onset"]) == pytest.approx(expect_onset, rel=1e-4)
    assert set(SpectralLoss(32, onset_weight=0)(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32))) == {"band"}


def test_band_matrix_covers_every_bin_once():
    for r, b in ((4, 16), (32, 16), (256, 16), (1024, 16)):
        m = band_matrix(r, b).numpy()
        assert m.shape == (min(r, b), r)
        assert np.all((m > 0).sum(axis=0) == 1)                 # each bin in exactly one band
        np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)
        first = [int(np.argmax(row > 0)) for row in m]
        assert first == sorted(first) and first[0] == 0         # bands ordered from DC upwards


def test_project_audio_cli_writes_everything(track, snap, tmp_path):
    import project_audio
    path, block = snap
    out = tmp_path / "proj"
    res = CliRunner().invoke(project_audio.main, ["--network", str(path), "--target", str(track), "--start", "2",
                                                  "--outdir", str(out), "--steps", "20", "--seed", "3",
                                                  "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "% closed" in res.output and "final image distance" in res.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["compare.png", "index.html", "loss.png", "projected.png", "projected.wav", "projected_w.npz",
                     "projection.json", "target.png", "target.wav"]
    data = np.load(out / "projected_w.npz")
    assert data["w"].shape == (1, 8, 16) and not bool(data["w_plus"])     # 32 x 32: 8 ws of 16
    assert any(k.startswith("noise/") for k in data.files)
    numbers = json.loads((out / "projection.json").read_text())
    assert numbers["final_distance"] < numbers["start_distance"]
    assert numbers["closed_share"] == pytest.approx(1 - numbers["final_distance"] / numbers["start_distance"])
    for wav in ("target.wav", "projected.wav"):
        audio, sr = sf.read(out / wav)
        assert sr == SR and audio.shape == (32 * 32,)
    with Image.open(out / "compare.png") as im:
        assert im.size == (2 * 32 + 4, 32)
    with Image.open(out / "loss.png") as im:
        assert im.mode == "RGB"
    # target.png is the encoded target clip itself.
    clip = prepare_target(track, block, start_s=2.0)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "target.png")), clip.image)
    page = (out / "index.html").read_text()
    assert 'src="target.wav"' in page and 'src="projected.wav"' in page


def test_project_audio_cli_errors(track, snap, tmp_path):
    import project_audio
    path, _ = snap
    run = lambda *a: CliRunner().invoke(project_audio.main, [str(x) for x in a])
    res = run("--network", path, "--target", tmp_path / "missing.wav", "--outdir", tmp_path / "o")
    assert res.exit_code != 0 and "--target" in res.output and "no such file" in res.output
    res = run("--network", tmp_path / "none.pkl", "--target", track, "--outdir", tmp_path / "o")
    assert res.exit_code != 0 and "none.pkl" in res.output
    res = run("--network", path, "--target", track, "--outdir", tmp_path / "o", "--start", "100", "--steps", "1")
    assert res.exit_code != 0 and "past the end" in res.output
    assert not (tmp_path / "o").exists()                       # nothing written on failure
