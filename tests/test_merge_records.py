"""dataset_tool_audio.py --merge copies only PNGs that lie inside each archive (issue 22, item 19)."""
import json
import zipfile

import pytest
from archive_helpers import toy_audio_block, write_toy_archive
from click.testing import CliRunner

from dataset_tool_audio import main


@pytest.fixture()
def shard(tmp_path):
    """A folder archive of two toy clips with clip records, as --merge reads it."""
    z = write_toy_archive(tmp_path / "t.zip", 16, 2, {"audio": toy_audio_block(16)})
    folder = tmp_path / "shard"
    with zipfile.ZipFile(z) as f:
        f.extractall(folder)
    (folder / ".electrogan-archive").write_text("")
    return folder


def set_records(folder, files):
    meta = json.loads((folder / "dataset.json").read_text())
    meta["clips"] = [{"file": f, "source": "x.wav"} for f in files]
    (folder / "dataset.json").write_text(json.dumps(meta))


def merge(tmp_path, folder):
    return CliRunner().invoke(main, ["--merge", str(folder), "--dest", str(tmp_path / "merged.zip")])


def test_a_clean_shard_merges(tmp_path, shard):
    set_records(shard, ["00000/img00000000.png", "00000/img00000001.png"])
    r = merge(tmp_path, shard)
    assert r.exit_code == 0, r.output
    with zipfile.ZipFile(tmp_path / "merged.zip") as z:
        assert sorted(n for n in z.namelist() if n.endswith(".png")) == ["00000/img00000000.png", "00000/img00000001.png"]


@pytest.mark.parametrize("name,why", [
    ("../../../../../../etc/passwd", "is not the name of a PNG in the archive"),
    ("/etc/passwd", "is not the name of a PNG in the archive"),
    ("00000/../../secret.png", "is not the name of a PNG in the archive"),
    ("dataset.json", "is not the name of a PNG in the archive"),
    ("00000/missing.png", "is not in the archive"),
    (7, "is not the name of a PNG"),
])
def test_records_naming_files_outside_or_not_pngs_are_refused(tmp_path, shard, name, why):
    (tmp_path / "secret.png").write_text("root:x:0:0")
    set_records(shard, ["00000/img00000000.png", name])
    r = merge(tmp_path, shard)
    assert r.exit_code == 1 and why in r.output, r.output
    assert not (tmp_path / "merged.zip").exists()


def test_a_symlink_out_of_the_folder_and_a_fake_png_are_refused(tmp_path, shard):
    (tmp_path / "secret.txt").write_text("root:x:0:0")
    (shard / "00000" / "img00000009.png").symlink_to(tmp_path / "secret.txt")
    set_records(shard, ["00000/img00000000.png", "00000/img00000009.png"])
    r = merge(tmp_path, shard)
    assert r.exit_code == 1 and "leads outside the archive folder" in r.output, r.output
    (shard / "00000" / "img00000009.png").unlink()
    (shard / "00000" / "img00000009.png").write_text("root:x:0:0")
    r = merge(tmp_path, shard)
    assert r.exit_code == 1 and "clip 00000/img00000009.png is not a PNG image" in r.output, r.output
    assert not (tmp_path / "merged.zip").exists()
