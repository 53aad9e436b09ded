"""Snapshots carry the archive's decoder model (issue 11): train.py stores it, gen_audio.py uses it.

Precedence under test: --decoder-model FILE > the snapshot's model > $ELECTROGAN_DECODER_MODEL > shipped.
The models are tiny FrameInterpNets with random (distinguishable) heads; the "shipped" model is a
tiny one too, put in place of the real file with monkeypatch so that it fits the 32 x 32 snapshots.
"""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from archive_helpers import toy_audio_block, write_toy_archive
from click.testing import CliRunner
from decoder_helpers import shipped_stand_in, tiny_model_payload
from snapshot_helpers import tiny_audio_snapshot

import gen_audio
import train
from audio_ext.core.geometry import StftGeometry
from audio_ext.decoder import frame_model
from audio_ext.decoder.model_choice import choose_decoder_model
from stylegan2 import snapshot
from stylegan2.training_loop import check_snapshot_extra

RES = 32
GEOM = StftGeometry(RES)      # 44.1 kHz, hop = R: the geometry of the snapshots below


def model_payload(geometry, seed):
    return tiny_model_payload(geometry, seed, training={"sources": ["loop.wav"]})


def model_file(path, geometry=GEOM, seed=0):
    frame_model.save_model(path, model_payload(geometry, seed))
    return path


def assert_same_plain_data(a, b, where="root"):
    """Equal structure, equal scalars and bit-identical tensors (dtype, shape and every bit)."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert a.numpy().tobytes() == b.numpy().tobytes(), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same_plain_data(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_plain_data(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


# --- train.py -------------------------------------------------------------------------------------------

@pytest.fixture()
def archive(tmp_path):
    return write_toy_archive(tmp_path / "stft.zip", RES, 8, {"audio": toy_audio_block(RES), "clips": []})


def train_args(archive, outdir, *extra):
    return ["--outdir", str(outdir), "--data", str(archive), "--cfg", "tiny", "--batch", "4", "--batch-gpu", "4",
            "--kimg", "0.008", "--tick", "0.004", "--snap", "1", "--workers", "0", "--no-progress", "--aug", "noaug",
            "--ops", "reference", "--preview-clips", "0", *extra]


def test_train_stores_the_model_beside_the_archive_bit_identically_in_every_snapshot(archive, tmp_path):
    beside = model_file(tmp_path / "stft.decoder.pt")        # what dataset_tool_audio.py --train-decoder writes
    res = CliRunner().invoke(train.main, train_args(archive, tmp_path / "runs"))
    assert res.exit_code == 0, res.output
    assert f"decoder model  {beside} (stored in every snapshot)" in res.output
    snaps = sorted((tmp_path / "runs").glob("*/network-snapshot-*.pkl"))
    assert len(snaps) == 2                                    # one per tick of 4 images
    want = torch.load(beside, map_location="cpu", weights_only=True)
    for path in snaps:
        assert_same_plain_data(snapshot.load_snapshot(path)["decoder_model"], want)

    # --decoder-model none: the file beside the archive is ignored, the snapshots carry no model
    res = CliRunner().invoke(train.main, train_args(archive, tmp_path / "none", "--decoder-model", "none"))
    assert res.exit_code == 0, res.output
    assert "decoder model" not in res.output
    for path in (tmp_path / "none").glob("*/network-snapshot-*.pkl"):
        assert "decoder_model" not in snapshot.load_snapshot(path)


def test_train_refuses_a_model_of_another_geometry_before_training(archive, tmp_path):
    model_file(tmp_path / "stft.decoder.pt", StftGeometry(64))        # beside the archive, for R = 64
    res = CliRunner().invoke(train.main, train_args(archive, tmp_path / "runs"))
    assert res.exit_code != 0
    msg = res.output.strip().splitlines()
    assert len(msg) == 1 and "stft.decoder.pt" in msg[0] and "another geometry" in msg[0], res.output
    assert "resolution 64 (model) vs 32 (audio)" in msg[0]
    assert not (tmp_path / "runs").exists()                              # nothing started

    # an explicit file that fits beats the one beside the archive; a missing one is named
    good = model_file(tmp_path / "mine.pt", seed=3)
    res = CliRunner().invoke(train.main, train_args(archive, tmp_path / "runs", "--decoder-model", str(good),
                                                    "--dry-run"))
    assert res.exit_code == 0 and f"decoder model  {good}" in res.output, res.output
    res = CliRunner().invoke(train.main, train_args(archive, tmp_path / "runs", "--decoder-model",
                                                    str(tmp_path / "nope.pt"), "--dry-run"))
    assert res.exit_code != 0 and "--decoder-model" in res.output and "nope.pt: decoder model file not found" in res.output


def test_train_refuses_a_model_for_an_archive_without_audio(tmp_path):
    images = write_toy_archive(tmp_path / "faces.zip", RES, 4, {})
    res = CliRunner().invoke(train.main, train_args(images, tmp_path / "runs", "--decoder-model",
                                                    str(model_file(tmp_path / "m.pt")), "--dry-run"))
    assert res.exit_code != 0 and "has no audio block" in res.output


def snapshots_of(outdir):
    return sorted(Path(outdir).glob("*/network-snapshot-*.pkl"))


def test_a_resumed_run_keeps_the_model_its_snapshot_carries_unless_one_is_named(archive, tmp_path):
    beside = model_file(tmp_path / "stft.decoder.pt", seed=0)
    first = torch.load(beside, map_location="cpu", weights_only=True)
    res = CliRunner().invoke(train.main, train_args(archive, tmp_path / "runs"))
    assert res.exit_code == 0, res.output
    model_file(beside, seed=4)                      # the file beside the archive changes between the runs
    second = torch.load(beside, map_location="cpu", weights_only=True)
    assert not torch.equal(first["state_dict"]["head.weight"], second["state_dict"]["head.weight"])

    # --resume latest without --decoder-model: the new snapshots carry the resumed one's model, not the new file
    res = CliRunner().invoke(train.main, train_args(archive, tmp_path / "runs", "--resume", "latest",
                                                    "--kimg", "0.016"))
    assert res.exit_code == 0, res.output
    assert "(kept on resume;" in res.output and f"{beside} beside --data is not read" in res.output, res.output
    new = [p for p in snapshots_of(tmp_path / "runs") if p.parent.name.startswith("00001-")]
    assert new, res.output
    for path in new:
        assert_same_plain_data(snapshot.load_snapshot(path)["decoder_model"], first)

    # --decoder-model named on resume: that model, from the first new snapshot on
    resume = str(new[-1])
    res = CliRunner().invoke(train.main, train_args(archive, tmp_path / "named", "--resume", resume, "--kimg", "0.024",
                                                    "--decoder-model", str(beside)))
    assert res.exit_code == 0, res.output
    named = snapshots_of(tmp_path / "named")
    assert named
    for path in named:
        assert_same_plain_data(snapshot.load_snapshot(path)["decoder_model"], second)


def test_a_resumed_run_without_a_model_keeps_none_and_a_bad_carried_model_is_refused(archive, tmp_path):
    res = CliRunner().invoke(train.main, train_args(archive, tmp_path / "runs", "--decoder-model", "none"))
    assert res.exit_code == 0, res.output
    beside = model_file(tmp_path / "stft.decoder.pt")           # appears after the first run
    res = CliRunner().invoke(train.main, train_args(archive, tmp_path / "runs", "--resume", "latest",
                                                    "--kimg", "0.016"))
    assert res.exit_code == 0, res.output
    assert "carries none and the resumed run keeps that" in res.output and f"--decoder-model {beside}" in res.output
    new = [p for p in snapshots_of(tmp_path / "runs") if p.parent.name.startswith("00001-")]
    assert new and all("decoder_model" not in snapshot.load_snapshot(p) for p in new)

    # a snapshot that carries a model of another geometry: one line naming the snapshot, nothing started
    snap = snapshot.load_snapshot(new[-1])
    snap["decoder_model"] = model_payload(StftGeometry(64), 0)
    wrong = tmp_path / "wrong" / "network-snapshot-000016.pkl"
    wrong.parent.mkdir()
    snapshot.save_snapshot(wrong, snap)
    res = CliRunner().invoke(train.main, train_args(archive, tmp_path / "again", "--resume", str(wrong)))
    assert res.exit_code != 0
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and f"{wrong}: decoder_model" in lines[0] and "another geometry" in lines[0], res.output
    assert not (tmp_path / "again").exists()
    # ... unless --decoder-model replaces it
    res = CliRunner().invoke(train.main, train_args(archive, tmp_path / "again", "--resume", str(wrong),
                                                    "--decoder-model", str(beside), "--dry-run"))
    assert res.exit_code == 0 and f"decoder model  {beside} (stored in every snapshot)" in res.output, res.output


def test_loop_refuses_extra_keys_it_writes_itself_or_non_plain_values():
    payload = model_payload(GEOM, 0)
    assert check_snapshot_extra({"decoder_model": payload}) == {"decoder_model": payload}
    assert check_snapshot_extra(None) == {}
    with pytest.raises(ValueError, match="'audio' is one the training loop writes itself"):
        check_snapshot_extra({"audio": {}})
    with pytest.raises(ValueError, match=r"decoder_model\.w: numpy.ndarray is not plain data"):
        check_snapshot_extra({"decoder_model": {"w": np.zeros(3)}})


# --- the loader ------------------------------------------------------------------------------------------

class Smuggled:
    """Not plain data: pickled by reference, so loading it would import this module."""

    def __init__(self):
        self.x = 1


def raw_snapshot(path, decoder_model):
    """A snapshot written with torch.save directly, past save_snapshot's own check (as an attacker would)."""
    torch.save({"format_version": 1, "audio": GEOM.audio_block(-6.0, 3.0), "decoder_model": decoder_model}, path)
    return path


@pytest.mark.parametrize("value, why", [
    (torch.Size([2, 3]), r"decoder_model\.config: torch\.Size is not plain data"),
    (torch.float16, r"decoder_model\.config: torch\.dtype is not plain data"),
    (Smuggled(), r"refused to load: the file contains pickled code or objects other than plain data"),
])
def test_loader_refuses_a_decoder_model_that_is_not_plain_data(tmp_path, value, why):
    payload = model_payload(GEOM, 0)
    payload["config"] = value
    path = raw_snapshot(tmp_path / "snap.pkl", payload)
    with pytest.raises(snapshot.SnapshotError, match=why):
        snapshot.load_snapshot(path)
    # the same file with plain data in that place loads
    payload["config"] = {"width": 4}
    assert snapshot.load_snapshot(raw_snapshot(tmp_path / "ok.pkl", payload))["decoder_model"]["config"] == {"width": 4}


# --- generation ------------------------------------------------------------------------------------------

@pytest.fixture()
def shipped(tmp_path, monkeypatch):
    """A tiny stand-in for the shipped model (it fits R = 32) and no $ELECTROGAN_DECODER_MODEL."""
    yield from shipped_stand_in(tmp_path, monkeypatch, GEOM)


def write_snapshot(path, decoder_model=None):
    extra = {} if decoder_model is None else {"decoder_model": decoder_model}
    return tiny_audio_snapshot(path, RES, cur_nimg=0, **extra)


def generate(network, outdir, *extra):
    """(audio of seed 3, the page's text) from gen_audio.py."""
    res = CliRunner().invoke(gen_audio.main, ["--network", str(network), "--seeds", "3", "--outdir", str(outdir),
                                              "--device", "cpu", *map(str, extra)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    audio, _ = sf.read(str(Path(outdir) / "seed0003-130bpm.wav"), dtype="int16")
    return audio, (Path(outdir) / "index.html").read_text()


def test_generation_decodes_with_the_snapshots_model_unless_a_file_is_named(tmp_path, shipped, monkeypatch):
    mine = model_file(tmp_path / "mine.pt", seed=1)
    with_model = write_snapshot(tmp_path / "network-snapshot-000008.pkl",
                                torch.load(mine, map_location="cpu", weights_only=True))
    old = write_snapshot(tmp_path / "old.pkl")       # same generator, written before issue 11: no model

    a_snap, page = generate(with_model, tmp_path / "a")
    assert "learned+pghi+fgla[snapshot: network-snapshot-000008.pkl]" in page
    a_old, page = generate(old, tmp_path / "b")
    assert "learned+pghi+fgla[shipped: shipped_r32.pt]" in page
    assert np.abs(a_snap.astype(int) - a_old).max() > 100       # the two models make audibly different clips

    # the same model named with --decoder-model gives the snapshot's audio bit for bit
    a_file, page = generate(old, tmp_path / "c", "--decoder-model", mine)
    assert "learned+pghi+fgla[file: mine.pt]" in page
    np.testing.assert_array_equal(a_file, a_snap)
    # --decoder-model beats the snapshot's model
    a_over, _ = generate(with_model, tmp_path / "d", "--decoder-model", shipped)
    np.testing.assert_array_equal(a_over, a_old)
    # the snapshot's model beats $ELECTROGAN_DECODER_MODEL, which beats the shipped one
    monkeypatch.setenv(frame_model.MODEL_ENV, str(model_file(tmp_path / "env.pt", seed=5)))
    np.testing.assert_array_equal(generate(with_model, tmp_path / "e")[0], a_snap)
    a_env, page = generate(old, tmp_path / "f")
    assert "learned+pghi+fgla[file: env.pt]" in page and np.abs(a_env.astype(int) - a_old).max() > 100
    monkeypatch.delenv(frame_model.MODEL_ENV)
    # a run leaves no model behind for the next caller in the process
    assert choose_decoder_model().label == "shipped: shipped_r32.pt"


def test_generation_with_decoder_model_none_uses_the_classic_decoder(tmp_path, shipped):
    mine = model_file(tmp_path / "mine.pt", seed=1)
    with_model = write_snapshot(tmp_path / "network-snapshot-000008.pkl",
                                torch.load(mine, map_location="cpu", weights_only=True))
    torch.manual_seed(0)
    off, page = generate(with_model, tmp_path / "off", "--decoder-model", "none")
    assert "learned+pghi+fgla" not in page and "pghi+fgla" in page
    torch.manual_seed(0)
    classic, _ = generate(with_model, tmp_path / "classic", "--method", "pghi+fgla")
    np.testing.assert_array_equal(off, classic)
    res = CliRunner().invoke(gen_audio.main, ["--network", str(with_model), "--seeds", "3", "--outdir",
                                              str(tmp_path / "asked"), "--decoder-model", "none",
                                              "--method", "learned+pghi+fgla"])
    assert res.exit_code != 0 and "learned decoder is turned off" in res.output, res.output
    assert not (tmp_path / "asked").exists()
    assert choose_decoder_model().label == "shipped: shipped_r32.pt"


@pytest.mark.parametrize("where", ["snapshot", "file"])
def test_generation_refuses_a_model_of_another_geometry(tmp_path, shipped, where):
    wrong = model_file(tmp_path / "r64.pt", StftGeometry(64))
    if where == "snapshot":
        net = write_snapshot(tmp_path / "snap.pkl", torch.load(wrong, map_location="cpu", weights_only=True))
        extra = []
    else:
        net, extra = write_snapshot(tmp_path / "snap.pkl"), ["--decoder-model", wrong]
    res = CliRunner().invoke(gen_audio.main, ["--network", str(net), "--seeds", "1", "--outdir",
                                              str(tmp_path / "out"), *map(str, extra)])
    assert res.exit_code != 0
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "another geometry" in lines[0] and "resolution 64 (model) vs 32 (audio)" in lines[0]
    assert ("snap.pkl: decoder_model" if where == "snapshot" else "--decoder-model") in lines[0]
    assert not (tmp_path / "out").exists()
    assert choose_decoder_model().label == "shipped: shipped_r32.pt"


def test_training_previews_decode_with_the_model_the_snapshots_carry(shipped):
    from audio_ext.generation.preview import AudioPreview
    from audio_ext.generation.synthesis import decode_images
    block = GEOM.audio_block(mean=-6.0, std=3.0)
    payload = model_payload(GEOM, 1)
    torch.manual_seed(0)
    images = torch.rand(2, 1, RES, RES) * 2 - 1
    got = AudioPreview(block, clips=2, decoder_model=payload).decode(images)
    want = decode_images(images[:, 0], block, None, None, torch.device("cpu"), seed=[0, 1],
                         decoder=choose_decoder_model(carried=payload))
    np.testing.assert_array_equal(got, want)
    plain = AudioPreview(block, clips=2).decode(images)            # the shipped stand-in
    assert np.abs(plain - got).max() > 1e-3
    assert choose_decoder_model().label == "shipped: shipped_r32.pt"
    with pytest.raises(frame_model.ModelError, match="audio preview decoder_model: model file has no 'config' entry"):
        AudioPreview(block, decoder_model={k: v for k, v in payload.items() if k != "config"})


def test_survey_clips_of_a_snapshot_decode_with_its_model(tmp_path, shipped, monkeypatch):
    from audio_ext.survey.make import SurveyOptions, _generated_clips
    mine = model_file(tmp_path / "mine.pt", seed=1)
    with_model = write_snapshot(tmp_path / "a" / "network-snapshot-000000.pkl",
                                torch.load(mine, map_location="cpu", weights_only=True))
    old = write_snapshot(tmp_path / "b" / "network-snapshot-000000.pkl")

    def clips(net):
        opts = SurveyOptions(outdir=str(tmp_path / "out"), clips_per_condition=2, networks=[str(net)])
        return np.stack([c.audio for c in _generated_clips(opts, np.random.default_rng(0), 2, lambda m: None)])

    a, b = clips(with_model), clips(old)
    assert np.abs(a - b).max() > 1e-3                      # old snapshot: the shipped stand-in
    monkeypatch.setenv(frame_model.MODEL_ENV, str(mine))
    np.testing.assert_array_equal(clips(old), a)           # the same model from a file: the same clips
    monkeypatch.delenv(frame_model.MODEL_ENV)
    assert choose_decoder_model().label == "shipped: shipped_r32.pt"


def test_projection_decodes_with_the_snapshots_model(tmp_path, shipped, monkeypatch):
    import project_audio
    from audio_ext.core.synth import techno_loop
    track = tmp_path / "loop.flac"
    sf.write(track, techno_loop(126.0, 4.0, sr=44100, seed=3), 44100)
    mine = model_file(tmp_path / "mine.pt", seed=1)
    with_model = write_snapshot(tmp_path / "network-snapshot-000000.pkl",
                                torch.load(mine, map_location="cpu", weights_only=True))
    old = write_snapshot(tmp_path / "old.pkl")

    def target_wav(net, out):
        res = CliRunner().invoke(project_audio.main, ["--network", str(net), "--target", str(track), "--outdir",
                                                      str(tmp_path / out), "--steps", "1", "--no-progress"])
        assert res.exit_code == 0, res.output
        return sf.read(str(tmp_path / out / "target.wav"), dtype="int16")[0]

    a, b = target_wav(with_model, "a"), target_wav(old, "b")
    assert np.abs(a.astype(int) - b).max() > 100          # the target clip through two different models
    monkeypatch.setenv(frame_model.MODEL_ENV, str(mine))
    np.testing.assert_array_equal(target_wav(old, "c"), a)

    wrong = write_snapshot(tmp_path / "wrong.pkl", model_payload(StftGeometry(64), 0))
    res = CliRunner().invoke(project_audio.main, ["--network", str(wrong), "--target", str(track), "--outdir",
                                                  str(tmp_path / "d"), "--steps", "1", "--no-progress"])
    assert res.exit_code != 0 and "wrong.pkl: decoder_model" in res.output and "another geometry" in res.output
    assert not (tmp_path / "d").exists()
