"""The archive format (docs/contract.md): PNG layout, dataset.json, atomic publication, sources, shards, labels."""
import json
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from audio_ext.core.geometry import StftGeometry
from audio_ext.core.running_stats import RunningStats
from audio_ext.dataset.archive import ArchiveError, ArchiveWriter, clip_name, read_audio_block, read_dataset_json
from audio_ext.dataset.sources import Source, gather_sources, in_shard, read_labels
from audio_ext.dataset.statistics import load_stats

R = 16


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, R, R), dtype=np.uint8)


def _block():
    return StftGeometry(R).audio_block(mean=-5.0, std=3.0, target_bpm=130)


def test_clip_names_put_at_most_1000_files_per_folder():
    assert clip_name(0) == "00000/img00000000.png"
    assert clip_name(999) == "00000/img00000999.png"
    assert clip_name(1000) == "00001/img00001000.png"
    assert clip_name(123456) == "00123/img00123456.png"


@pytest.mark.parametrize("dest_name", ["out.zip", "out_folder"])
def test_writer_stores_greyscale_pngs_and_dataset_json(tmp_path, dest_name):
    images = _images(3)
    dest = tmp_path / dest_name
    with ArchiveWriter(dest) as w:
        for i, im in enumerate(images):
            w.add(im, {"source": f"s{i}.wav", "clip_start_s": float(i)}, label=i % 2)
        w.close(_block(), {"slicing": {"stretcher": "phase-vocoder"}})
    def read(name):
        if dest.suffix == ".zip":
            with zipfile.ZipFile(dest) as z:
                return z.read(name)
        return (dest / name).read_bytes()
    import io
    for i, im in enumerate(images):
        png = Image.open(io.BytesIO(read(clip_name(i))))
        assert png.mode == "L" and png.size == (R, R)
        np.testing.assert_array_equal(np.asarray(png), im)
    meta = json.loads(read("dataset.json"))
    assert meta["labels"] == [[clip_name(0), 0], [clip_name(1), 1], [clip_name(2), 0]]
    assert meta["audio"] == _block()
    assert [c["file"] for c in meta["clips"]] == [clip_name(i) for i in range(3)]
    assert meta["clips"][2] == {"file": clip_name(2), "source": "s2.wav", "clip_start_s": 2.0}
    assert meta["slicing"] == {"stretcher": "phase-vocoder"}
    assert read_audio_block(dest) == _block()


def test_zip_entries_are_stored_with_a_fixed_date_so_bytes_repeat(tmp_path):
    for name in ("a.zip", "b.zip"):
        with ArchiveWriter(tmp_path / name) as w:
            for im in _images(2):
                w.add(im)
            w.close(_block())
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())


def test_more_than_1000_clips_open_a_second_folder(tmp_path):
    with ArchiveWriter(tmp_path / "big.zip") as w:
        for im in np.zeros((1001, 4, 4), dtype=np.uint8):
            w.add(im)
        w.close(StftGeometry(4).audio_block(0.0, 1.0, 130))
    with zipfile.ZipFile(tmp_path / "big.zip") as z:
        folders = {n.split("/")[0] for n in z.namelist() if n.endswith(".png")}
    assert folders == {"00000", "00001"}


@pytest.mark.parametrize("dest_name", ["crash.zip", "crash_folder"])
def test_a_crash_while_writing_leaves_nothing_at_dest(tmp_path, dest_name):
    with pytest.raises(RuntimeError):
        with ArchiveWriter(tmp_path / dest_name) as w:
            w.add(_images(1)[0])
            raise RuntimeError("disk full")
    assert os.listdir(tmp_path) == []


def _write_archive(dest, n=1):
    with ArchiveWriter(dest, overwrite=True) as w:
        for im in _images(n):
            w.add(im)
        w.close(_block())


def test_existing_dest_is_refused_unless_overwrite(tmp_path):
    dest = tmp_path / "d.zip"
    _write_archive(dest, 2)
    with pytest.raises(ArchiveError, match=r"d\.zip: already exists; pass --overwrite"):
        ArchiveWriter(dest)
    _write_archive(dest, 1)
    assert len(read_dataset_json(dest)["clips"]) == 1
    folder = tmp_path / "f"
    _write_archive(folder, 2)
    assert sorted(p.name for p in folder.iterdir()) == [".electrogan-archive", "00000", "dataset.json"]
    _write_archive(folder, 1)
    assert [p.name for p in (folder / "00000").iterdir()] == ["img00000000.png"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _tree(root):
    return sorted((str(p.relative_to(root)), p.read_bytes() if p.is_file() else None) for p in root.rglob("*"))


@pytest.mark.parametrize("case", ["foreign zip", "zip of images", "plain folder", "archive plus a user file",
                                  "foreign dataset.json", "marker plus a user file"])
def test_overwrite_replaces_only_archives_of_ours_and_deletes_nothing_else(tmp_path, case):
    if "zip" in case:
        dest = tmp_path / "d.zip"
        if case == "foreign zip":
            dest.write_bytes(b"my thesis, not a zip")
        else:
            with zipfile.ZipFile(dest, "w") as z:
                z.writestr("dataset.json", json.dumps({"labels": None}))
                z.writestr("a.png", b"x")
    else:
        dest = tmp_path / "f"
        if case == "plain folder":
            dest.mkdir()
            (dest / "song.wav").write_bytes(b"precious")
        elif case == "foreign dataset.json":
            dest.mkdir()
            (dest / "dataset.json").write_text(json.dumps({"labels": None}))
        else:
            _write_archive(dest, 1)
            if case == "marker plus a user file":
                (dest / "dataset.json").unlink()
            (dest / "00000" / "notes.txt").write_text("mine")
    before = _tree(tmp_path)
    with pytest.raises(ArchiveError) as e:
        ArchiveWriter(dest, overwrite=True)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(dest)) and "refusing to touch it" in msg
    assert _tree(tmp_path) == before


def test_overwrite_accepts_old_folder_archives_without_the_marker_and_empty_folders(tmp_path):
    old = tmp_path / "old"
    _write_archive(old, 2)
    (old / ".electrogan-archive").unlink()  # as written before the marker existed
    _write_archive(old, 1)
    assert (old / ".electrogan-archive").is_file() and len(read_dataset_json(old)["clips"]) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    _write_archive(empty, 1)
    assert len(read_dataset_json(empty)["clips"]) == 1


@pytest.mark.parametrize("where", ["equal", "inside", "contains"])
def test_a_destination_overlapping_the_source_is_refused(tmp_path, where):
    from audio_ext.dataset.archive import check_destination
    src = tmp_path / "music"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.wav").write_bytes(b"RIFF")
    dest = {"equal": src, "inside": src / "sub" / "stft.zip", "contains": tmp_path}[where]
    before = _tree(tmp_path)
    with pytest.raises(ArchiveError, match={"equal": "is the source", "inside": "is inside the source",
                                            "contains": "contains the source"}[where]):
        check_destination(dest, overwrite=True, sources=[src])
    assert _tree(tmp_path) == before


def test_labels_on_some_clips_only_is_an_error(tmp_path):
    w = ArchiveWriter(tmp_path / "l.zip")
    w.add(_images(1)[0], label=1)
    w.add(_images(1)[0])
    with pytest.raises(ArchiveError, match="1 clip\\(s\\) have no label"):
        w.close(_block())
    assert not (tmp_path / "l.zip").exists()


def test_reading_bad_archives_gives_one_line_errors(tmp_path):
    with pytest.raises(ArchiveError, match="nope.zip: no such folder or zip archive"):
        read_dataset_json(tmp_path / "nope.zip")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(ArchiveError, match="junk.zip: not a zip archive"):
        read_dataset_json(tmp_path / "junk.zip")
    with zipfile.ZipFile(tmp_path / "plain.zip", "w") as z:
        z.writestr("dataset.json", json.dumps({"labels": None}))
    with pytest.raises(ArchiveError, match="plain.zip: dataset.json has no 'audio' block"):
        read_audio_block(tmp_path / "plain.zip")
    with zipfile.ZipFile(tmp_path / "odd.zip", "w") as z:
        z.writestr("dataset.json", json.dumps({"audio": {**_block(), "n_fft": 999}}))
    with pytest.raises(ArchiveError, match="odd.zip: .*n_fft"):
        read_audio_block(tmp_path / "odd.zip")


def test_gather_sources_walks_folders_sorted_and_reports_non_audio(tmp_path):
    for rel in ["b/2.mp3", "a/1.WAV", "a/sub/3.flac", "a/cover.jpg", ".hidden/4.wav", "a/.DS_Store", "0.ogg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found, ignored = gather_sources(tmp_path)
    assert [s.name for s in found] == ["0.ogg", "a/1.WAV", "a/sub/3.flac", "b/2.mp3"]
    assert ignored == [("a/cover.jpg", "not an audio file extension")]


def test_gather_sources_reads_a_list_file(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"")
    lst = tmp_path / "list.txt"
    lst.write_text(f"# my sets\nx.wav\n\n{tmp_path / 'missing.mp3'}\nx.wav\n")
    found, _ = gather_sources(lst)
    # Duplicates and comments dropped; relative entries resolved against the list's folder; sorted by name.
    assert [(s.name, s.path) for s in found] == [(str(tmp_path / "missing.mp3"), tmp_path / "missing.mp3"),
                                                 ("x.wav", tmp_path / "x.wav")]
    with pytest.raises(ArchiveError, match="nothere: no such folder or list file"):
        gather_sources(tmp_path / "nothere")


def test_shards_partition_the_sources():
    names = [f"set{i:03d}.mp3" for i in range(200)]
    shards = [[n for n in names if in_shard(n, (i, 3))] for i in range(3)]
    assert sorted(sum(shards, [])) == names
    assert all(30 < len(s) < 110 for s in shards)  # a hash split, roughly even


def test_labels_from_folders_and_from_csv(tmp_path):
    srcs = [Source(tmp_path / n, n) for n in ["techno/a.wav", "house/b.wav", "house/c.wav", "loose.wav"]]
    labels, names = read_labels("folders", srcs)
    assert names == ["house", "techno"]
    assert labels == {"techno/a.wav": 1, "house/b.wav": 0, "house/c.wav": 0}
    csv_path = tmp_path / "genres.csv"
    csv_path.write_text("file,label\ntechno/a.wav,techno\nhouse/b.wav,house\n")
    labels, names = read_labels(str(csv_path), srcs)
    assert names == ["house", "techno"] and labels == {"techno/a.wav": 1, "house/b.wav": 0}
    csv_path.write_text("techno/a.wav,2\nhouse/b.wav,0\n")
    labels, names = read_labels(str(csv_path), srcs)
    assert labels == {"techno/a.wav": 2, "house/b.wav": 0} and names == ["0", "1", "2"]
    csv_path.write_text("techno/a.wav\n")
    with pytest.raises(ArchiveError, match="genres.csv: row 1 is not 'file,label'"):
        read_labels(str(csv_path), srcs)


def test_statistics_files_in_every_accepted_form(tmp_path):
    rs = RunningStats().update(np.array([1.0, 2.0, 3.0, 4.0]))
    (tmp_path / "rs.json").write_text(json.dumps(rs.to_dict()))
    mean, std, _ = load_stats(tmp_path / "rs.json")
    assert mean == pytest.approx(2.5) and std == pytest.approx(np.std([1, 2, 3, 4]))
    (tmp_path / "dataset.json").write_text(json.dumps({"audio": _block()}))
    assert load_stats(tmp_path / "dataset.json")[:2] == (-5.0, 3.0)
    (tmp_path / "bad.json").write_text(json.dumps({"mean": 1.0, "std": 0.0}))
    with pytest.raises(ArchiveError, match="bad.json: statistics must have .* positive std"):
        load_stats(tmp_path / "bad.json")
    with pytest.raises(ArchiveError, match="none.json: no such statistics file"):
        load_stats(tmp_path / "none.json")


def test_dataset_json_has_one_record_per_line_and_round_trips(tmp_path):
    odd = "näme\udcff.wav"  # a name with an undecodable byte, as os.listdir gives it
    with ArchiveWriter(tmp_path / "j.zip") as w:
        for i, im in enumerate(_images(3)):
            w.add(im, {"source": odd if i == 1 else f"{i}.wav", "clip_start_s": i * 0.5}, label=i)
        w.close(_block(), {"slicing": {"stride_beats": 8}})
    with zipfile.ZipFile(tmp_path / "j.zip") as z:
        text = z.read("dataset.json").decode("ascii")
    lines = text.splitlines()
    assert sum('"file":' in line for line in lines) == 3
    meta = json.loads(text)
    assert meta["clips"][1]["source"] == odd and meta["labels"][2] == [clip_name(2), 2]
    assert meta["audio"] == _block() and meta["slicing"] == {"stride_beats": 8}
