"""Issue 9, dataset side: nothing lost, nothing hangs, one line instead of a traceback.

Each test builds a tiny synthetic set (6 s loops, R = 64) and checks the exit status, the one-line
message, and that the source and any existing archive are byte-for-byte what they were, with no
temporary file left behind.
"""
import errno
import json
import os
import socket
import subprocess
import sys
import threading
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from audio_ext.core.synth import techno_loop
from audio_ext.dataset import build
from audio_ext.dataset.archive import (
    ArchiveError,
    ArchiveFiles,
    ArchiveWriter,
    png_size_cap,
    read_dataset_json,
    remove_stale_temps,
)
from audio_ext.dataset.worklock import WorkLock
from dataset_tool_audio import main

SR = 44100
SECONDS = 6.0
R = 64
FLAGS = ["--resolution", str(R), "--segment-seconds", str(SECONDS), "--stride-beats", "4", "--no-progress"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def music(tmp_path):
    root = tmp_path / "music"
    (root / "a").mkdir(parents=True)
    sf.write(root / "a" / "one.wav", techno_loop(126, SECONDS, sr=SR, seed=1, offset=0.1), SR)
    sf.write(root / "two.wav", techno_loop(132, SECONDS, sr=SR, seed=2, offset=0.05), SR)
    return root


@pytest.fixture()
def stats(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({"mean": -8.0, "std": 5.0}))
    return path


def tree(root):
    """Every path under ``root`` with its bytes (None for folders)."""
    root = Path(root)
    return sorted((str(p.relative_to(root)), None if p.is_dir() else p.read_bytes())
                  for p in root.rglob("*") if not p.is_symlink() and not p.is_fifo())


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result):
    """The single 'Error: ...' line of a failed run (and a check that there is exactly one, no traceback)."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


# --------------------------------------------------------------------------------------------- 1
@pytest.mark.parametrize("where", ["equal", "inside", "contains"])
def test_a_destination_overlapping_the_source_is_refused_and_nothing_is_deleted(tmp_path, music, stats, where):
    dest = {"equal": music, "inside": music / "a" / "stft", "contains": tmp_path}[where]
    before = tree(tmp_path)
    line = error_line(run("--source", music, "--dest", dest, "--overwrite", "--stats", stats, *FLAGS))
    assert {"equal": "is the source", "inside": "is inside the source", "contains": "contains the source"}[where] in line
    assert str(dest) in line
    assert tree(tmp_path) == before


def test_overwrite_refuses_a_folder_that_is_not_our_archive(tmp_path, music, stats):
    dest = tmp_path / "thesis"
    dest.mkdir()
    (dest / "chapter1.tex").write_text("years of work")
    before = tree(tmp_path)
    line = error_line(run("--source", music, "--dest", dest, "--overwrite", "--stats", stats, *FLAGS))
    assert f"{dest}: is a folder that is not an archive (no dataset.json)" in line
    assert tree(tmp_path) == before
    # A listed source inside an existing archive of ours would be deleted with it: refused too.
    arch = tmp_path / "arch"
    assert run("--source", music, "--dest", arch, "--stats", stats, *FLAGS).exit_code == 0
    listing = tmp_path / "list.txt"
    listing.write_text(f"{arch / 'dataset.json'}\n")
    before = tree(tmp_path)
    line = error_line(run("--source", listing, "--dest", arch, "--overwrite", "--stats", stats, *FLAGS))
    assert "contains the source" in line and tree(tmp_path) == before


def test_overwrite_replaces_our_own_zip_and_folder_archives(tmp_path, music, stats):
    for dest in (tmp_path / "a.zip", tmp_path / "folder"):
        assert run("--source", music, "--dest", dest, "--stats", stats, "--max-clips", "1", *FLAGS).exit_code == 0
        result = run("--source", music, "--dest", dest, "--overwrite", "--stats", stats, *FLAGS)
        assert result.exit_code == 0, result.output
        assert len(read_dataset_json(dest)["clips"]) > 1
    assert (tmp_path / "folder" / ".electrogan-archive").is_file()


# --------------------------------------------------------------------------------------------- 2, 11
def _build_in_thread(args, timeout=600):
    """Run the CLI in a daemon thread, so a build blocked on a FIFO fails the test instead of hanging it."""
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", run(*args)), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the build blocked"
    return box["result"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_symlink_loops_and_unreadable_files_are_skipped_with_the_right_reason(tmp_path, music, stats,
                                                                                    monkeypatch):
    os.mkfifo(music / "pipe.wav")
    os.symlink("loop.wav", music / "loop.wav")
    sf.write(music / "locked.wav", techno_loop(128, SECONDS, sr=SR, seed=3), SR)
    locked = str(music / "locked.wav")
    real_open = os.open

    def deny(path, flags, *args, **kwargs):  # chmod 000 does not stop root, so deny the open itself
        if os.fspath(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", locked)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    dest = tmp_path / "out.zip"
    # No --stats: the statistics pass must not open the FIFO either.
    result = _build_in_thread(["--source", music, "--dest", dest, "--stats-sample", "2", *FLAGS])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "skipped  pipe.wav: not a regular file (a FIFO)" in out
    assert "skipped  loop.wav: symlink loop" in out
    assert "skipped  locked.wav: permission denied" in out
    assert "System error" not in out and "no such file" not in out
    assert {c["source"] for c in read_dataset_json(dest)["clips"]} == {"a/one.wav", "two.wav"}


def test_the_audio_reader_names_permission_and_loop_problems(tmp_path, monkeypatch):
    from audio_ext.core.audio_io import AudioError, load_audio
    os.symlink("x.wav", tmp_path / "x.wav")
    with pytest.raises(AudioError, match=r"x\.wav: symlink loop$"):
        load_audio(tmp_path / "x.wav")
    sf.write(tmp_path / "ok.wav", np.zeros(100, np.float32), SR)
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: (_ for _ in ()).throw(PermissionError(errno.EACCES, "denied"))
                        if str(p).endswith("ok.wav") else real_open(p, *a, **k))
    with pytest.raises(AudioError, match=r"ok\.wav: permission denied$"):
        load_audio(tmp_path / "ok.wav")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads chmod-000 files; the monkeypatched test covers it")
def test_a_chmod_000_file_reads_as_permission_denied(tmp_path):
    from audio_ext.core.audio_io import AudioError, load_audio
    path = tmp_path / "secret.wav"
    sf.write(path, np.zeros(100, np.float32), SR)
    path.chmod(0)
    with pytest.raises(AudioError, match="secret.wav: permission denied"):
        load_audio(path)


# --------------------------------------------------------------------------------------------- 3
def test_temporaries_of_a_killed_run_are_removed_by_the_next_and_nothing_else(tmp_path, music, stats):
    dest = tmp_path / "stft.zip"
    img = np.zeros((R, R), np.uint8)
    # What a kill -9 leaves, made by the real writers: a zip being written, a half folder archive ...
    w = ArchiveWriter(dest)
    w.add(img)
    w._zip.fp.flush()
    folder_writer = ArchiveWriter(tmp_path / "stft.zip.partial" / "dummy")  # a folder-kind temp, inside work
    folder_writer.add(img)
    # ... a log and a statistics file being written, an atomic write inside the work folder.
    (tmp_path / ".stft.zip.log.k3j9x_2a.log.tmp").write_text("half a log")
    (tmp_path / ".stft.zip.stats.json.q0q0q0q0.json.tmp").write_text("{")
    (tmp_path / "stft.zip.partial" / ".0123abcd.png.zzzzzzzz.png.tmp").write_bytes(b"half a png")
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".stft.zip."))
    assert len(leftovers) == 3 and any(n.endswith(".zip.tmp") for n in leftovers)
    # Not ours (another archive's, or no random part): must survive.
    keep = [tmp_path / ".other.zip.abcdefgh.zip.tmp", tmp_path / "stft.zip.tmp", tmp_path / ".stft.zip.notes.tmp"]
    for p in keep:
        p.write_text("not yours")
    # (w and folder_writer stay referenced: collecting them would run their cleanup, which kill -9 does not.)
    result = run("--source", music, "--dest", dest, "--stats", stats, *FLAGS)
    assert result.exit_code == 0, result.output
    assert "removed 3 temporary file(s) left beside" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["music", "stats.json", "stft.zip", "stft.zip.log"] + [p.name for p in keep])
    assert all(p.read_text() == "not yours" for p in keep)


def test_a_folder_archive_moved_aside_by_a_killed_run_is_put_back(tmp_path):
    dest = tmp_path / "arch"
    with ArchiveWriter(dest) as w:
        w.add(np.zeros((8, 8), np.uint8))
        w.close({"resolution": 8})
    before = tree(dest)
    os.replace(dest, tmp_path / ".arch.old-4242")  # killed between the two renames of close()
    lines = []
    remove_stale_temps(dest, lines.append)
    assert tree(dest) == before and "restored the previous archive" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch"]


# --------------------------------------------------------------------------------------------- 4
def test_a_second_build_into_the_same_dest_says_who_holds_it(tmp_path, music, stats):
    dest = tmp_path / "stft.zip"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from audio_ext.dataset.worklock import WorkLock; "
         "l = WorkLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)", str(dest) + ".partial"],
        stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        line = error_line(run("--source", music, "--dest", dest, "--stats", stats, *FLAGS))
        assert f"in use by another build (pid {holder.pid} on host {socket.gethostname()}, started " in line
        assert not dest.exists() and (tmp_path / "stft.zip.partial" / "lock").is_file()
    finally:
        holder.kill()
        holder.wait()
    # The holder died without cleaning up (kill -9): its lock is taken over with a message.
    result = run("--source", music, "--dest", dest, "--stats", stats, *FLAGS)
    assert result.exit_code == 0, result.output
    assert f"taking over the lock of a build that is no longer running (pid {holder.pid}" in result.output
    assert not (tmp_path / "stft.zip.partial").exists()


def test_a_lock_from_another_host_is_never_taken_over(tmp_path, music, stats):
    dest = tmp_path / "stft.zip"
    work = tmp_path / "stft.zip.partial"
    work.mkdir()
    info = {"pid": 1, "host": "render-node-7", "started": "2026-01-01 00:00:00 UTC"}
    (work / "lock").write_text(json.dumps(info))
    line = error_line(run("--source", music, "--dest", dest, "--stats", stats, *FLAGS))
    assert "locked by a build on another host (pid 1 on host render-node-7" in line and str(work / "lock") in line
    assert json.loads((work / "lock").read_text()) == info


def test_the_lock_excludes_a_second_holder_in_the_same_process(tmp_path):
    with WorkLock(tmp_path / "w"):
        with pytest.raises(ArchiveError, match=rf"in use by another build \(pid {os.getpid()} "):
            WorkLock(tmp_path / "w").acquire()
    assert not (tmp_path / "w" / "lock").exists()
    WorkLock(tmp_path / "w").acquire().release()


# --------------------------------------------------------------------------------------------- 6
def _zip_with_member(path, name, size, declared=None):
    """A zip holding ``name`` = ``size`` zero bytes, deflated; ``declared`` rewrites the size it claims."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, bytes(size))
    if declared is not None:  # patch the uncompressed size in the local header and the central directory
        data = bytearray(path.read_bytes())
        true = size.to_bytes(4, "little")
        fake = declared.to_bytes(4, "little")
        cd = data.rfind(b"PK\x01\x02")
        assert data[22:26] == true and data[cd + 24:cd + 28] == true
        data[22:26] = fake
        data[cd + 24:cd + 28] = fake
        path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("declared", [None, 100])
def test_archive_members_are_read_with_a_size_cap(tmp_path, declared):
    arch = _zip_with_member(tmp_path / "bomb.zip", "00000/img00000000.png", 64 << 20, declared)
    assert arch.stat().st_size < 1 << 20
    cap = png_size_cap(32)
    tracemalloc.start()
    try:
        with ArchiveFiles(arch) as files:
            with pytest.raises((ArchiveError, zipfile.BadZipFile)) as e:
                files.read("00000/img00000000.png", cap)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # the 64 MiB member was never inflated (zipfile buffers a few 100 kB)
    if declared is None:
        assert f"{64 << 20} bytes, more than the {cap}" in str(e.value)


def test_decode_skips_an_oversized_image_and_refuses_a_huge_dataset_json(tmp_path):
    from archive_helpers import write_encoded_archive

    from audio_ext.__main__ import main as tools
    from audio_ext.core.geometry import StftGeometry
    g = StftGeometry(32, hop_length=16)
    arch = tmp_path / "a.zip"
    write_encoded_archive(arch, [techno_loop(124, g.clip_seconds + 0.1, seed=s)[:g.clip_samples] for s in (0, 1)], g)
    with zipfile.ZipFile(arch, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("00000/zz_bomb.png", bytes(32 << 20))
    out = tmp_path / "out"
    result = CliRunner().invoke(tools, ["decode", "--data", str(arch), "--clips", "0-2", "--outdir", str(out),
                                        "--method", "thesis", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"skipped clip 2: 00000/zz_bomb.png: {arch}:00000/zz_bomb.png: {32 << 20} bytes, more than the" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["clip000000.wav", "clip000001.wav"]
    big = _zip_with_member(tmp_path / "big.zip", "dataset.json", 8 << 20)
    with pytest.raises(ArchiveError, match=r"big\.zip:dataset\.json: 8388608 bytes, more than the"):
        read_dataset_json(big)


def test_the_training_dataset_reads_members_with_a_size_cap(tmp_path):
    import io

    import PIL.Image

    from stylegan2.dataset import DatasetError, ImageFolderDataset, image_size_cap
    arch = tmp_path / "d.zip"
    with zipfile.ZipFile(arch, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for i in range(2):
            buf = io.BytesIO()
            PIL.Image.fromarray(np.full((8, 8), i, np.uint8), mode="L").save(buf, format="PNG")
            z.writestr(f"{i}.png", buf.getvalue())
        z.writestr("9.png", bytes(16 << 20))
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        ds = ImageFolderDataset(arch)
    assert len(ds) == 2 and ds.skipped[0][0] == "9.png"
    assert f"more than the {image_size_cap(8, 8, 1)}" in ds.skipped[0][1]
    _zip_with_member(tmp_path / "j.zip", "dataset.json", 4 << 20)
    with zipfile.ZipFile(tmp_path / "j.zip", "a") as z:
        z.writestr("0.png", buf.getvalue())
    with pytest.raises(DatasetError, match=r"j\.zip:dataset\.json: 4194304 bytes, more than the"):
        ImageFolderDataset(tmp_path / "j.zip")


# --------------------------------------------------------------------------------------------- 2, 7 (decode)
def test_decode_range_parsing_is_bounded_by_the_archive_and_bad_outdir_or_device_is_one_line(tmp_path):
    from archive_helpers import write_encoded_archive

    from audio_ext.__main__ import main as tools
    from audio_ext.core.geometry import StftGeometry
    from audio_ext.core.seeds import parse_clip_range
    g = StftGeometry(32, hop_length=16)
    arch = tmp_path / "a.zip"
    write_encoded_archive(arch, [techno_loop(124, g.clip_seconds + 0.1, seed=s)[:g.clip_samples] for s in range(3)], g)
    with pytest.raises(ValueError, match=r"clip 3 is out of range \(the archive has 3 clips, 0-2\)"):
        parse_clip_range("0-1000000000000", count=3)  # expanded first, this would need terabytes
    assert parse_clip_range("2,0-1,1", count=3) == [2, 0, 1]

    def decode(*args):
        res = CliRunner().invoke(tools, ["decode", "--data", str(arch), "--method", "thesis", *map(str, args)])
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        lines = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
        assert len(lines) == 1, res.output
        return lines[0]

    assert "clip 3 is out of range (the archive has 3 clips, 0-2)" in decode(
        "--clips", "0-100000000000", "--outdir", tmp_path / "o1", "--device", "cpu")
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    assert f"{a_file}: --outdir is a file, not a folder" in decode("--outdir", a_file, "--device", "cpu")
    assert f"{a_file / 'sub'}: --outdir cannot be created ({a_file} is a file)" in decode(
        "--outdir", a_file / "sub", "--device", "cpu")
    assert "--device 'nonsense': not usable here" in decode("--outdir", tmp_path / "o2", "--device", "nonsense")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists() and a_file.read_text() == "x"


# --------------------------------------------------------------------------------------------- 7 (disk full)
def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("stage", ["archive", "work folder"])
def test_a_full_disk_is_one_line_naming_the_destination_and_loses_nothing(tmp_path, music, stats, monkeypatch, stage):
    dest = tmp_path / "stft.zip"
    assert run("--source", music, "--dest", dest, "--stats", stats, "--max-clips", "1", *FLAGS).exit_code == 0
    old = dest.read_bytes()
    source_before = tree(music)
    if stage == "archive":
        monkeypatch.setattr(ArchiveWriter, "_write", _enospc)
    else:
        monkeypatch.setattr(build, "png_bytes", _enospc)
    line = error_line(run("--source", music, "--dest", dest, "--overwrite", "--stats", stats, *FLAGS))
    assert line.startswith(f"Error: {dest}: cannot write: No space left on device") and "nothing was written" in line
    assert dest.read_bytes() == old and tree(music) == source_before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # A disk-full file is not cached as failed: once there is room, the same command builds everything.
    monkeypatch.undo()
    result = run("--source", music, "--dest", dest, "--overwrite", "--stats", stats, *FLAGS)
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.output and len(read_dataset_json(dest)["clips"]) > 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("flag", ["--source", "--stats", "--labels"])
def test_a_fifo_given_as_source_list_statistics_or_labels_is_refused_not_waited_on(tmp_path, music, stats, flag):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    args = {"--source": ["--source", fifo, "--stats", stats], "--stats": ["--source", music, "--stats", fifo],
            "--labels": ["--source", music, "--stats", stats, "--labels", fifo]}[flag]
    result = _build_in_thread([*args, "--dest", tmp_path / "x.zip", *FLAGS])
    line = error_line(result)
    assert str(fifo) in line and "not a regular file (a FIFO)" in line
    assert not (tmp_path / "x.zip").exists()


def test_a_lock_naming_a_live_process_but_not_held_is_not_taken_over(tmp_path):
    """The kernel lock is free but the recorded pid runs (a reused pid): refuse, and say what to delete."""
    work = tmp_path / "w"
    work.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (work / "lock").write_text(json.dumps({"pid": live.pid, "host": socket.gethostname(), "started": "x"}))
        with pytest.raises(ArchiveError, match=rf"names a running process \(pid {live.pid} .*delete .*lock$"):
            WorkLock(work).acquire()
    finally:
        live.kill()
        live.wait()
    assert json.loads((work / "lock").read_text())["pid"] == live.pid


@pytest.mark.parametrize("dest_name", ["stft.zip", "stft_folder"])
def test_kill_9_while_assembling_then_the_same_command_cleans_up_and_gives_the_same_archive(tmp_path, music, stats,
                                                                                           dest_name):
    """A real SIGKILL in the middle of writing the archive (after its first clip), then a rerun."""
    dest = tmp_path / dest_name
    args = ["--source", str(music), "--dest", str(dest), "--stats", str(stats), *FLAGS]
    killer = ("import os, signal, sys\n"
              "import audio_ext.dataset.archive as a\n"
              "real = a.ArchiveWriter.add_png\n"
              "def add_then_die(self, *args, **kwargs):\n"
              "    real(self, *args, **kwargs)\n"
              "    if self.kind == 'zip':\n"
              "        self._zip.fp.flush()\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              "a.ArchiveWriter.add_png = add_then_die\n"
              "from dataset_tool_audio import main\n"
              "main(sys.argv[1:])\n")
    proc = subprocess.Popen([sys.executable, "-c", killer, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == -9, err
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{dest_name}.")]
    assert len(leftovers) == 1 and not dest.exists()
    assert json.loads((tmp_path / f"{dest_name}.partial" / "lock").read_text())["pid"] == proc.pid
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "removed 1 temporary file(s)" in result.output and "taking over the lock" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["music", "stats.json", dest_name, f"{dest_name}.log"])
    fresh = tmp_path / "fresh" / dest_name
    assert run("--source", music, "--dest", fresh, "--stats", stats, *FLAGS).exit_code == 0
    if dest_name.endswith(".zip"):
        assert dest.read_bytes() == fresh.read_bytes()
    else:
        assert tree(dest) == tree(fresh)
