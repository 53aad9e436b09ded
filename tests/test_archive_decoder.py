"""`python -m audio_ext decode` picks up the archive's own decoder model (issue 11).

Precedence under test: --decoder-model FILE (or none) > <archive stem>.decoder.pt beside the archive >
$ELECTROGAN_DECODER_MODEL > shipped. Models are tiny FrameInterpNets with random heads, so two seeds
decode audibly different clips; the "shipped" model is a tiny stand-in for this geometry (monkeypatch).
"""
import os
import shutil
import zipfile

import numpy as np
import pytest
import soundfile as sf
from archive_helpers import write_encoded_archive
from click.testing import CliRunner
from decoder_helpers import shipped_stand_in, tiny_model_file

from audio_ext.__main__ import main
from audio_ext.core.geometry import StftGeometry
from audio_ext.core.synth import techno_loop
from audio_ext.decoder import archive_model, frame_model
from audio_ext.decoder.decode_archive import decode_clips
from audio_ext.decoder.frame_training import decoder_path_for_archive
from audio_ext.decoder.model_choice import choose_decoder_model

G = StftGeometry(32, hop_length=16)


def model_file(path, geometry=G, seed=0):
    return tiny_model_file(path, geometry, seed)


@pytest.fixture()
def shipped(tmp_path, monkeypatch):
    """A stand-in for the shipped model that fits G, and no $ELECTROGAN_DECODER_MODEL."""
    yield from shipped_stand_in(tmp_path, monkeypatch, G)


@pytest.fixture()
def archive(tmp_path):
    clips = [techno_loop(124, G.clip_seconds + 0.05, seed=s, parts=("kick", "hat", "bass"))[:G.clip_samples]
             for s in range(2)]
    path = tmp_path / "data" / "stft.zip"
    path.parent.mkdir()
    write_encoded_archive(path, clips, G)
    return path


def decode(data, outdir, *extra):
    """(audio of clips 0-1 stacked, the command's output) of a successful decode."""
    res = CliRunner().invoke(main, ["decode", "--data", str(data), "--clips", "0-1", "--outdir", str(outdir),
                                    "--device", "cpu", *map(str, extra)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    audio = np.stack([sf.read(str(outdir / f"clip{i:06d}.wav"), dtype="int16")[0] for i in (0, 1)])
    return audio, res.output


def failure(data, outdir, *extra):
    """The one line of a failed decode; nothing may have been written."""
    res = CliRunner().invoke(main, ["decode", "--data", str(data), "--clips", "0-1", "--outdir", str(outdir),
                                    "--device", "cpu", *map(str, extra)])
    assert res.exit_code != 0, res.output
    assert not outdir.exists(), res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    return lines[0]


def differ(a, b):
    """Audibly different 16-bit clips (two models make differences of thousands of LSBs)."""
    return np.abs(a.astype(int) - b.astype(int)).max() > 100


def test_the_file_beside_an_archive_is_where_the_dataset_tool_writes_it(tmp_path, monkeypatch):
    zpath = tmp_path / "runs" / "stft.zip"
    assert archive_model.side_model_path(zpath) == tmp_path / "runs" / "stft.decoder.pt"
    assert archive_model.side_model_path(zpath) == decoder_path_for_archive(zpath)   # the writer's rule
    assert archive_model.side_model_path(tmp_path / "STFT.ZIP").name == "STFT.decoder.pt"
    assert archive_model.side_model_path(f"{tmp_path / 'stft'}{os.sep}") == tmp_path / "stft.decoder.pt"
    (tmp_path / "stft").mkdir()
    monkeypatch.chdir(tmp_path / "stft")
    assert archive_model.side_model_path(".") == tmp_path / "stft.decoder.pt"     # the folder's own name
    assert archive_model.side_model_path("..").name == f"{tmp_path.name}.decoder.pt"
    assert archive_model.side_model_path(os.sep) is None


def test_decode_uses_the_archives_own_model_and_says_so(archive, tmp_path, shipped):
    plain, out = decode(archive, tmp_path / "shipped")
    assert "decoder: learned+pghi+fgla[shipped: shipped_r32.pt]" in out

    beside = model_file(archive.parent / "stft.decoder.pt", seed=1)
    own, out = decode(archive, tmp_path / "own")
    assert "decoder: learned+pghi+fgla[archive: stft.decoder.pt]" in out
    assert differ(own, plain)
    # the same file named with --decoder-model gives the same audio bit for bit: the label is not all that changed
    named, out = decode(archive, tmp_path / "named", "--decoder-model", beside)
    assert "decoder: learned+pghi+fgla[file: stft.decoder.pt]" in out
    np.testing.assert_array_equal(named, own)

    # an archive folder: stft/ -> stft.decoder.pt beside the folder
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "folder")
    shutil.copy(beside, tmp_path / "folder.decoder.pt")
    folder, out = decode(tmp_path / "folder", tmp_path / "from-folder")
    assert "decoder: learned+pghi+fgla[archive: folder.decoder.pt]" in out
    np.testing.assert_array_equal(folder, own)
    assert choose_decoder_model().label == "shipped: shipped_r32.pt"          # nothing left behind in the process


def test_decode_precedence_named_file_then_archive_then_env_then_shipped(archive, tmp_path, shipped, monkeypatch):
    plain, _ = decode(archive, tmp_path / "shipped")
    env = model_file(tmp_path / "env.pt", seed=5)
    monkeypatch.setenv(frame_model.MODEL_ENV, str(env))
    from_env, out = decode(archive, tmp_path / "env")
    assert "[file: env.pt]" in out and differ(from_env, plain)

    model_file(archive.parent / "stft.decoder.pt", seed=1)
    own, out = decode(archive, tmp_path / "own")                      # the archive's model beats the env's
    assert "[archive: stft.decoder.pt]" in out and differ(own, from_env) and differ(own, plain)
    over, out = decode(archive, tmp_path / "over", "--decoder-model", shipped)   # a named file beats both
    assert "[file: shipped_r32.pt]" in out
    np.testing.assert_array_equal(over, plain)
    assert choose_decoder_model().label == "file: env.pt"


def test_decoder_model_none_turns_the_learned_decoder_off_even_with_a_file_beside(archive, tmp_path, shipped):
    (archive.parent / "stft.decoder.pt").write_bytes(b"not a model")    # not even read
    off, out = decode(archive, tmp_path / "off", "--decoder-model", "none")
    assert "decoder: pghi+fgla\n" in out
    classic, _ = decode(archive, tmp_path / "classic", "--decoder-model", "None", "--method", "pghi+fgla")
    np.testing.assert_array_equal(off, classic)
    line = failure(archive, tmp_path / "asked", "--decoder-model", "none", "--method", "learned+pghi+fgla")
    assert "learned decoder is turned off" in line
    assert choose_decoder_model().label == "shipped: shipped_r32.pt"


@pytest.mark.parametrize("kind", ["geometry", "garbage", "folder"])
def test_a_side_file_that_cannot_decode_the_archive_is_one_line_naming_it(archive, tmp_path, shipped, kind):
    side = archive.parent / "stft.decoder.pt"
    if kind == "geometry":
        model_file(side, StftGeometry(32, hop_length=32))
        why = "decoder model was trained for another geometry: hop_length 32 (model) vs 16 (audio)"
    elif kind == "garbage":
        side.write_bytes(b"garbage")
        why = "not a loadable decoder model"
    else:
        side.mkdir()
        why = "not a decoder model file"
    line = failure(archive, tmp_path / "out")
    assert line.startswith(f"Error: {side}: {why}"), line
    assert "--decoder-model FILE or none overrides it" in line
    # never a silent fallback, also not when a classic method is asked for: the choice is checked first
    assert why in failure(archive, tmp_path / "out", "--method", "pghi+fgla")
    # a model named on the command line replaces it
    _, out = decode(archive, tmp_path / "named", "--decoder-model", shipped)
    assert "[file: shipped_r32.pt]" in out
    assert choose_decoder_model().label == "shipped: shipped_r32.pt"


def test_a_named_model_of_another_geometry_is_refused_not_passed_over(archive, tmp_path, shipped):
    wrong = model_file(tmp_path / "r64.pt", StftGeometry(64))
    line = failure(archive, tmp_path / "out", "--decoder-model", wrong)
    assert line.startswith(f"Error: --decoder-model: {wrong}: decoder model was trained for another geometry"), line
    assert "resolution 64 (model) vs 32 (audio)" in line
    assert "decoder model file not found" in failure(archive, tmp_path / "out", "--decoder-model", tmp_path / "no.pt")


def test_decode_clips_library_call_takes_the_same_choice(archive, tmp_path, shipped):
    model_file(archive.parent / "stft.decoder.pt", seed=1)
    logs = []
    written, skipped = decode_clips(archive, [1], tmp_path / "lib", device="cpu", log=logs.append)
    assert [p.name for p in written] == ["clip000001.wav"] and not skipped
    assert logs[0] == "decoder: learned+pghi+fgla[archive: stft.decoder.pt]"
    logs.clear()
    decode_clips(archive, [1], tmp_path / "lib2", device="cpu", log=logs.append, decoder_model="none")
    assert logs[0] == "decoder: pghi+fgla"
    with pytest.raises(frame_model.ModelError, match="another geometry"):
        decode_clips(archive, [0], tmp_path / "lib3", device="cpu", decoder_model=str(model_file(
            tmp_path / "r64.pt", StftGeometry(64))))
    assert not (tmp_path / "lib3").exists()
