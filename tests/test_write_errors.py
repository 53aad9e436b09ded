"""A full or read-only disk is one line at the writing layer, never a library's own exception
(issue 22, item 18): torch's zip writer and libsndfile hide the OSError; these tests use a real
256 kB tmpfs where mounting is allowed and a simulated ENOSPC/EROFS at the lowest write call
everywhere."""
import errno

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from survey_helpers import tiny_archive

from audio_ext.__main__ import main as cli
from stylegan2 import misc
from stylegan2 import snapshot as snap_io


def test_a_snapshot_on_a_full_disk_is_an_oserror_naming_the_file(full_disk):
    path = full_disk / "network-snapshot-000004.pkl"
    with pytest.raises(OSError) as e:
        snap_io.save_snapshot(path, {"G_ema": None, "weights": torch.zeros(100_000), "cur_nimg": 4})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]     # no temporary file left


class _FailingFile:
    """A binary file whose writes fail with ``code`` after ``budget`` bytes (a disk filling up)."""

    def __init__(self, f, code, budget=100):
        self.f, self.code, self.left = f, code, budget

    def write(self, data):
        if len(data) > self.left:
            raise OSError(self.code, "simulated")
        self.left -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_snapshot_write_that_fails_midway_is_the_oserror(tmp_path, monkeypatch, code):
    real_open = open

    def failing_open(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        return _FailingFile(f, code) if "w" in mode else f

    for module in (misc, snap_io):          # whichever module opens the file for torch.save
        monkeypatch.setattr(module, "open", failing_open, raising=False)
    path = tmp_path / "snap.pkl"
    with pytest.raises(OSError) as e:
        snap_io.save_snapshot(path, {"weights": torch.zeros(10_000), "cur_nimg": 0})
    assert e.value.errno == code and e.value.filename == str(path)
    assert list(tmp_path.iterdir()) == []


def test_decode_onto_a_full_disk_is_one_line(tmp_path, full_disk):
    data = tiny_archive(tmp_path / "a.zip", n=2)
    r = CliRunner().invoke(cli, ["decode", "--data", str(data), "--clips", "0", "--outdir", str(full_disk / "wav"),
                                 "--method", "pghi", "--device", "cpu", "--decoder-model", "none"])
    assert r.exit_code == 1, r.output
    last = r.output.strip().splitlines()[-1]
    assert last == f"Error: --outdir {full_disk / 'wav'}: cannot write ({full_disk / 'wav' / 'clip000000.wav'}: " \
                   f"No space left on device)", r.output
    assert not list((full_disk / "wav").iterdir())


def test_decode_into_a_read_only_folder_is_one_line(tmp_path, monkeypatch):
    """EROFS at the lowest write call (os.open of the temporary file): root ignores permission bits."""
    import os
    data = tiny_archive(tmp_path / "a.zip", n=2)
    out = tmp_path / "wav"
    real = os.open

    def read_only(path, flags, *a, **k):
        if str(path).startswith(str(out)) and flags & os.O_WRONLY:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", read_only)
    r = CliRunner().invoke(cli, ["decode", "--data", str(data), "--clips", "0", "--outdir", str(out),
                                 "--method", "pghi", "--device", "cpu", "--decoder-model", "none"])
    monkeypatch.undo()
    assert r.exit_code == 1 and "Read-only file system" in r.output.strip().splitlines()[-1], r.output


def test_wav_bytes_round_trip_and_a_full_disk(full_disk, tmp_path):
    import soundfile as sf

    from audio_ext.core.audio_io import FULL_SCALE, write_audio
    y = np.sin(np.arange(4410) / 10.0).astype(np.float32) * 0.5
    write_audio(tmp_path / "a.wav", y, 44100, peak=FULL_SCALE)
    back, sr = sf.read(tmp_path / "a.wav", dtype="float32")
    assert sr == 44100 and np.max(np.abs(back - y)) <= 1 / 32768
    with pytest.raises(OSError) as e:
        write_audio(full_disk / "a.wav", np.zeros(400_000), 44100)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(full_disk / "a.wav")
