"""One validator for every audio block, archive or snapshot: each field against its physical range.

A damaged or crafted block (a tempo of 1e300, a NaN mean, a sample rate of 2**40) is refused where it
is read, with one line naming the field and the value: by the validator, by the archive reader, by
train.py before training starts, by gen_audio.py before anything is built or written, and by decode.
"""
import json
import math
import zipfile

import numpy as np
import pytest
from archive_helpers import write_encoded_archive
from click.testing import CliRunner

from audio_ext.core.geometry import AudioBlockError, StftGeometry, logpower_range, validate_audio_block
from audio_ext.core.synth import techno_loop
from audio_ext.dataset.archive import ArchiveError, read_audio_block

R = 32
GEOM = StftGeometry(R)


def good_block():
    return GEOM.audio_block(mean=-6.0, std=3.0, target_bpm=130.0)


# (field, bad value, words the message must hold). Every one is finite-looking JSON a file could carry.
BAD_FIELDS = [
    ("target_bpm", 1e300, "target_bpm"),
    ("target_bpm", float("nan"), "target_bpm"),
    ("target_bpm", float("inf"), "target_bpm"),
    ("target_bpm", -120.0, "target_bpm"),
    ("target_bpm", 0, "target_bpm"),
    ("target_bpm", "130", "target_bpm"),
    ("sample_rate", 2**40, "sample_rate"),
    ("sample_rate", 0, "sample_rate"),
    ("sample_rate", 44100.5, "sample_rate"),
    ("resolution", 2**14, "resolution"),
    ("resolution", 48, "resolution"),
    ("hop_length", 7, "hop_length"),
    ("n_fft", 4096, "n_fft"),
    ("mean", float("nan"), "mean"),
    ("mean", float("inf"), "mean"),
    ("mean", 1e6, "mean"),
    ("mean", -1e6, "mean"),
    ("mean", True, "mean"),
    ("std", 0.0, "std"),
    ("std", -3.0, "std"),
    ("std", float("nan"), "std"),
    ("std", 1e9, "std"),
    ("clip_sigma", float("inf"), "clip_sigma"),
    ("clip_sigma", 1e300, "clip_sigma"),
    ("clip_sigma", 0.0, "clip_sigma"),
    ("eps", 0.0, "eps"),
    ("eps", 1e300, "eps"),
    ("eps", float("nan"), "eps"),
]


def test_a_written_block_passes_unchanged():
    block = good_block()
    assert validate_audio_block(block) is block
    assert validate_audio_block({**block, "target_bpm": None})["target_bpm"] is None  # archives built without stretching


@pytest.mark.parametrize("field, value, words", BAD_FIELDS)
def test_each_field_out_of_range_is_refused_naming_it(field, value, words):
    with pytest.raises(AudioBlockError) as info:
        validate_audio_block({**good_block(), field: value})
    message = str(info.value)
    assert words in message and "\n" not in message
    assert repr(value) in message


@pytest.mark.parametrize("missing", ["mean", "std", "sample_rate", "resolution"])
def test_missing_fields_are_named(missing):
    block = good_block()
    del block[missing]
    with pytest.raises(AudioBlockError, match=missing):
        validate_audio_block(block)


def test_mean_and_std_ranges_follow_the_physics_of_ln_power():
    # A Hann window of n_fft = 2R samples sums to R, so |X| <= R for audio in [-1, 1]: check that bound
    # against a real full-scale signal, then that real statistics sit inside the accepted range.
    lo, hi = logpower_range(GEOM)
    assert lo == pytest.approx(math.log(GEOM.eps)) and hi == pytest.approx(math.log(R**2 + GEOM.eps))
    from audio_ext.core.codec import audio_to_logpower
    loud = np.ones(GEOM.clip_samples)                       # DC at full scale: the largest |X| there is
    assert float(audio_to_logpower(loud, GEOM).max()) == pytest.approx(hi, abs=1e-6)
    clips = np.stack([techno_loop(130, 0.1, seed=s)[: GEOM.clip_samples] for s in range(4)])
    v = audio_to_logpower(clips, GEOM)
    validate_audio_block(GEOM.audio_block(float(v.mean()), float(v.std()), 130.0))
    assert lo <= float(v.mean()) <= hi


def write_archive(path, **change):
    clips = np.stack([techno_loop(130, 0.1, seed=s)[: GEOM.clip_samples] for s in range(4)])
    write_encoded_archive(path, clips, GEOM)
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    meta = json.loads(files["dataset.json"])
    meta["audio"].update(change)
    files["dataset.json"] = json.dumps(meta).encode()       # json writes NaN as NaN, as Python's reader accepts
    with zipfile.ZipFile(path, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    return path


def test_archive_reader_refuses_a_nan_mean(tmp_path):
    path = write_archive(tmp_path / "nan.zip", mean=float("nan"))
    with pytest.raises(ArchiveError) as info:
        read_audio_block(path)
    assert str(path) in str(info.value) and "mean nan" in str(info.value)


def test_train_refuses_an_archive_with_a_nan_mean_before_training(tmp_path):
    import train
    path = write_archive(tmp_path / "nan.zip", mean=float("nan"))
    out = tmp_path / "runs"
    res = CliRunner().invoke(train.main, ["--outdir", str(out), "--data", str(path), "--cfg", "tiny", "-n"])
    assert res.exit_code == 1, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and str(path) in errors[0] and "mean nan" in errors[0], res.output
    assert "Traceback" not in res.output and not out.exists()
    good = write_archive(tmp_path / "good.zip")            # the same archive with its real block trains
    res = CliRunner().invoke(train.main, ["--outdir", str(out), "--data", str(good), "--cfg", "tiny", "-n"])
    assert res.exit_code == 0, res.output


def test_decode_refuses_an_archive_with_an_absurd_tempo(tmp_path):
    from audio_ext.__main__ import main as audio_main
    path = write_archive(tmp_path / "fast.zip", target_bpm=1e300)
    out = tmp_path / "wavs"
    res = CliRunner().invoke(audio_main, ["decode", "--data", str(path), "--outdir", str(out), "--clips", "0"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "target_bpm 1e+300" in res.output and str(path) in res.output
    assert not out.exists()
