"""`python -m audio_ext decode` turns archive images back into WAVs and fails clearly on bad input."""
import io
import json
import os
import zipfile

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from PIL import Image

from audio_ext.__main__ import main
from audio_ext.core.codec import encode
from audio_ext.core.geometry import StftGeometry
from audio_ext.core.seeds import parse_clip_range
from audio_ext.core.synth import techno_loop
from audio_ext.decoder.quality import spectral_convergence_db

G = StftGeometry(32, hop_length=16)
MEAN, STD = -6.0, 4.0


def clips(n=3):
    return [techno_loop(124, G.clip_seconds + 0.05, seed=s, parts=("kick", "hat", "bass"))[:G.clip_samples]
            for s in range(n)]


def png_bytes(img):
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def build_archive(path, audio, corrupt=()):
    """A tiny stft.zip laid out as docs/contract.md says; names listed out of order to test the sorting."""
    meta = {"labels": None, "audio": G.audio_block(MEAN, STD, target_bpm=130), "clips": []}
    with zipfile.ZipFile(path, "w") as z:
        for i in reversed(range(len(audio))):
            name = f"00000/img{i:08d}.png"
            data = b"not a png" if i in corrupt else png_bytes(encode(audio[i], G, MEAN, STD))
            z.writestr(name, data)
            meta["clips"].append({"file": name, "start_s": float(i)})
        z.writestr("dataset.json", json.dumps(meta))
    return path


def run(*args):
    return CliRunner().invoke(main, ["decode", *map(str, args)])


def test_clip_ranges_follow_the_seeds_convention():
    assert parse_clip_range("0-4") == [0, 1, 2, 3, 4]
    assert parse_clip_range("7") == [7]
    assert parse_clip_range("0,2,5-6,2") == [0, 2, 5, 6]
    for bad in ("4-1", "a-b", "-3", ""):
        with pytest.raises(ValueError, match="bad clip range"):
            parse_clip_range(bad)


def test_decodes_the_requested_clips_of_a_zip_into_16bit_wavs(tmp_path):
    audio = clips()
    data = build_archive(tmp_path / "stft.zip", audio)
    res = run("--data", data, "--clips", "0,2", "--outdir", tmp_path / "out", "--method", "pghi+fgla")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip000000.wav", "clip000002.wav"]
    for i in (0, 2):
        info = sf.info(tmp_path / "out" / f"clip{i:06d}.wav")
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (44100, 1, "PCM_16", G.clip_samples)
        y, _ = sf.read(tmp_path / "out" / f"clip{i:06d}.wav")
        # clip 2 of the sorted archive is the third clip we encoded, not a neighbour
        own = spectral_convergence_db(audio[i], y, n_fft=64, hop=8)[0]
        other = spectral_convergence_db(audio[1], y, n_fft=64, hop=8)[0]
        assert own < -6 and own < other - 3


def test_reads_an_archive_folder_too(tmp_path):
    zpath = build_archive(tmp_path / "stft.zip", clips(2))
    with zipfile.ZipFile(zpath) as z:
        z.extractall(tmp_path / "folder")
    res = run("--data", tmp_path / "folder", "--clips", "1", "--outdir", tmp_path / "out", "--iters", "2")
    assert res.exit_code == 0, res.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip000001.wav"]


def test_a_corrupt_image_is_skipped_and_reported(tmp_path):
    data = build_archive(tmp_path / "stft.zip", clips(3), corrupt={1})
    res = run("--data", data, "--clips", "0-2", "--outdir", tmp_path / "out", "--method", "thesis")
    assert res.exit_code == 0, res.output
    assert "skipped clip 1: 00000/img00000001.png: unreadable PNG" in res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip000000.wav", "clip000002.wav"]


@pytest.mark.parametrize("args, message", [
    (("--clips", "0-9"), "clip 3 is out of range (the archive has 3 clips"),
    (("--clips", "x"), "bad clip range 'x'"),
    (("--method", "magic"), "'magic' is not one of"),
])
def test_bad_ranges_and_options_fail_with_one_clear_line(tmp_path, args, message):
    data = build_archive(tmp_path / "stft.zip", clips(3))
    res = run("--data", data, "--outdir", tmp_path / "out", *args)
    assert res.exit_code != 0
    assert message in res.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_or_foreign_archives_are_named_in_the_error(tmp_path):
    res = run("--data", tmp_path / "nope.zip", "--outdir", tmp_path / "out")
    assert res.exit_code != 0 and f"{tmp_path / 'nope.zip'}: archive not found" in res.output
    plain = tmp_path / "images.zip"
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("dataset.json", json.dumps({"labels": None}))
        z.writestr("a.png", png_bytes(np.zeros((32, 32), np.uint8)))
    res = run("--data", plain, "--outdir", tmp_path / "out")
    assert res.exit_code != 0 and "has no 'audio' block" in res.output
    (tmp_path / "junk.zip").write_bytes(b"garbage")
    res = run("--data", tmp_path / "junk.zip", "--outdir", tmp_path / "out")
    assert res.exit_code != 0 and "not a readable zip archive" in res.output


def test_loud_reconstructions_are_scaled_down_not_clipped(tmp_path):
    from audio_ext.core.audio_io import FULL_SCALE, write_audio
    t = np.arange(4410) / 44100
    loud = 1.6 * np.sin(2 * np.pi * 441 * t)
    write_audio(tmp_path / "loud.wav", loud, 44100, peak=FULL_SCALE)
    y, sr = sf.read(tmp_path / "loud.wav")
    assert sr == 44100 and np.abs(y).max() <= 1.0
    # the shape survives: a scaled sine, no flattened tops
    np.testing.assert_allclose(y, loud / np.abs(loud).max() * np.abs(y).max(), atol=2 / 32768)
    assert os.listdir(tmp_path) == ["loud.wav"]


def test_a_clip_decodes_to_the_same_file_on_every_run_and_in_any_batch(tmp_path):
    """Random phases (PGHI's quiet bins, random starts) are seeded by the clip index, not torch's global RNG."""
    import torch
    data = build_archive(tmp_path / "stft.zip", clips(3))
    for k, (batch, method) in enumerate([("3", "pghi+fgla"), ("1", "pghi+fgla"), ("2", "pghi+fgla"), ("3", "fgla")]):
        torch.manual_seed(k)                     # a different global RNG state each time
        res = run("--data", data, "--clips", "0-2", "--outdir", tmp_path / f"out{k}", "--batch", batch,
                  "--method", method, "--device", "cpu")
        assert res.exit_code == 0, res.output
    files = {k: [(tmp_path / f"out{k}" / f"clip{i:06d}.wav").read_bytes() for i in range(3)] for k in range(4)}
    assert files[0] == files[1] == files[2]
    # random-start Griffin-Lim: per clip its own seed, so the clips differ from each other's starts yet repeat
    torch.manual_seed(99)
    res = run("--data", data, "--clips", "2", "--outdir", tmp_path / "again", "--method", "fgla", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "again" / "clip000002.wav").read_bytes() == files[3][2]
