"""All-or-nothing output: publish() and gen_audio.py leave every new file or exactly the old folder.

Failures are injected where they happen in life: os.replace failing on the k-th move (every k), a
disk filling up while files are written (ENOSPC), SIGTERM sent to a real gen_audio.py process, and
a staging folder left by a process killed with SIGKILL.
"""
import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from snapshot_helpers import tiny_audio_snapshot

import gen_audio
from audio_ext.generation import generate, publish, synthesis

ROOT = Path(__file__).resolve().parents[1]


def tree(folder: Path) -> dict:
    """name -> sha256 of every entry directly in ``folder`` (folders marked as such)."""
    return {p.name: ("<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.iterdir())}


def staging_left(folder: Path) -> list:
    return [p.name for p in folder.iterdir() if p.name.startswith(publish.STAGING_PREFIX)]


def fail_replace_on(monkeypatch, k, then_all=False, only=None):
    """Make os.replace fail with EIO on its k-th call (counting calls that ``only`` accepts), and after
    it every call when ``then_all``; returns the list of (src, dst) calls seen."""
    real = os.replace
    calls = []

    def flaky(src, dst, *args, **kwargs):
        if only is None or only(Path(src), Path(dst)):
            calls.append((Path(src), Path(dst)))
            if len(calls) == k or (then_all and len(calls) > k):
                raise OSError(errno.EIO, "Input/output error (simulated)", str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", flaky)
    return calls


def make_folders(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name, text in (("a.wav", "old a"), ("b.png", "old b"), ("keep.txt", "untouched")):
        (out / name).write_text(text)
    staging = publish.make_staging(out)
    for name, text in (("a.wav", "new a"), ("b.png", "new b"), ("c.wav", "new c"), ("index.html", "new page")):
        (staging / name).write_text(text)
    return out, staging


def test_publish_moves_every_file_and_keeps_others(tmp_path):
    out, staging = make_folders(tmp_path)
    published = publish.publish(staging, out)
    assert sorted(p.name for p in published) == ["a.wav", "b.png", "c.wav", "index.html"]
    assert {n: (out / n).read_text() for n in ("a.wav", "b.png", "c.wav", "index.html", "keep.txt")} == {
        "a.wav": "new a", "b.png": "new b", "c.wav": "new c", "index.html": "new page", "keep.txt": "untouched"}


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_a_move_failing_at_any_point_restores_the_old_folder(tmp_path, monkeypatch, k):
    out, staging = make_folders(tmp_path)
    before = {n: v for n, v in tree(out).items() if n != staging.name}
    calls = fail_replace_on(monkeypatch, k)
    with pytest.raises(publish.PublishError) as info:
        publish.publish(staging, out)
    assert len([c for c in calls if c[1].parent == out]) >= k        # the failure really came mid-way
    assert "restored" in str(info.value) and "simulated" in str(info.value) and not info.value.keep_staging
    assert {n: v for n, v in tree(out).items() if n != staging.name} == before


def test_when_even_the_roll_back_fails_the_old_files_are_kept_and_named(tmp_path, monkeypatch):
    out, staging = make_folders(tmp_path)
    fail_replace_on(monkeypatch, 3, then_all=True)                    # two moved, then the disk dies
    with pytest.raises(publish.PublishError) as info:
        publish.publish(staging, out)
    assert info.value.keep_staging and str(staging / publish.BACKUP_NAME) in str(info.value)
    # every old version still exists: in place, or in the named backup folder
    for name, old in (("a.wav", "old a"), ("b.png", "old b")):
        where = [p.read_text() for p in (out / name, staging / publish.BACKUP_NAME / name) if p.exists()]
        assert old in where
    assert (out / "keep.txt").read_text() == "untouched"


def test_a_folder_in_the_way_is_refused_before_anything_changes(tmp_path):
    out, staging = make_folders(tmp_path)
    (out / "c.wav").mkdir()
    before = tree(out)
    with pytest.raises(publish.PublishError, match="c.wav is a folder there"):
        publish.publish(staging, out)
    assert tree(out) == before


def test_stale_staging_folders_of_dead_processes_are_removed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                                       # a pid that no longer runs
    stale = out / f"{publish.STAGING_PREFIX}{publish._host()}-{dead.pid}-abc_12"
    (stale / publish.BACKUP_NAME).mkdir(parents=True)
    (stale / "seed0000.wav").write_text("half")
    live = out / f"{publish.STAGING_PREFIX}{publish._host()}-{os.getppid()}-xyz"   # a running process
    other_host = out / f"{publish.STAGING_PREFIX}elsewhere-{dead.pid}-xyz"
    live.mkdir(), other_host.mkdir()
    assert publish.remove_stale_staging(out) == ([stale], [])
    assert not stale.exists() and live.exists() and other_host.exists()


def test_a_run_killed_while_publishing_keeps_the_only_copies_of_old_files(tmp_path, monkeypatch):
    out, staging = make_folders(tmp_path)
    real = os.replace
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    calls = []

    def killed_after_first_move(src, dst, *args, **kwargs):   # SIGKILL cannot be caught: no roll-back
        calls.append(dst)
        if len(calls) == 2:
            raise SystemExit("killed")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(publish, "_roll_back", lambda *a: [])
    monkeypatch.setattr(os, "replace", killed_after_first_move)
    with pytest.raises(SystemExit):
        publish.publish(staging, out)
    monkeypatch.undo()
    left = staging.rename(out / f"{publish.STAGING_PREFIX}{publish._host()}-{dead.pid}-abc")   # as if by that pid
    assert (out / "a.wav").read_text() == "new a"                # replaced before the "kill"
    removed, kept = publish.remove_stale_staging(out)
    assert removed == [] and kept == [left]
    assert (left / publish.BACKUP_NAME / "a.wav").read_text() == "old a"   # the only copy is still there
    # once the old file is back in place the folder holds nothing unique and goes
    (out / "a.wav").write_text("old a")
    assert publish.remove_stale_staging(out) == ([left], [])


# ------------------------------------------------------------------------------------------ gen_audio.py

@pytest.fixture(scope="module")
def snap(tmp_path_factory):
    path = tmp_path_factory.mktemp("snap") / "network-snapshot-000000.pkl"
    return tiny_audio_snapshot(path, 32, width=8, mapping_layers=1)


@pytest.fixture
def earlier_run(snap, tmp_path):
    """An output folder holding an earlier run of seeds 0-1 and a file of the user's."""
    out = tmp_path / "out"
    res = CliRunner().invoke(gen_audio.main, ["--network", str(snap), "--seeds", "0-1", "--trunc", "0.5",
                                              "--outdir", str(out)])
    assert res.exit_code == 0, res.output
    (out / "notes.txt").write_text("mine")
    return out


def one_error_line(output):
    lines = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_gen_audio_move_failing_midway_leaves_the_earlier_run_intact(snap, earlier_run, monkeypatch):
    before = tree(earlier_run)
    # the 3rd move from the staging folder into --outdir fails (seeds 0-3 replace 4 of the old files)
    calls = fail_replace_on(monkeypatch, 3, only=lambda src, dst: src.parent.name.startswith(publish.STAGING_PREFIX)
                            and dst.parent == earlier_run)
    res = CliRunner().invoke(gen_audio.main, ["--network", str(snap), "--seeds", "0-3", "--outdir", str(earlier_run)])
    assert res.exit_code == 1
    line = one_error_line(res.output)
    assert f"--outdir {earlier_run}" in line and "restored" in line
    assert len(calls) >= 3
    assert tree(earlier_run) == before and not staging_left(earlier_run)


def test_gen_audio_disk_full_while_writing_is_one_line_and_changes_nothing(snap, earlier_run, monkeypatch):
    before = tree(earlier_run)
    real = synthesis.save_png
    count = []

    def full_disk(path, image):
        count.append(path)
        if len(count) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, image)

    monkeypatch.setattr(generate, "save_png", full_disk)
    res = CliRunner().invoke(gen_audio.main, ["--network", str(snap), "--seeds", "0-3", "--outdir", str(earlier_run)])
    assert res.exit_code == 1
    line = one_error_line(res.output)
    assert "seed0001.png" in line and "No space left on device" in line and f"--outdir {earlier_run}" in line
    assert tree(earlier_run) == before and not staging_left(earlier_run)


def test_gen_audio_audio_writes_go_through_python_io(snap, earlier_run, monkeypatch):
    # A full disk while the WAV bytes are written surfaces as an OSError naming the file (not a libsndfile error).
    import builtins
    real_open = builtins.open

    def full_open(file, mode="r", *args, **kwargs):
        if "w" in mode and "seed0002-130bpm.wav" in str(file):     # the file or its temporary twin
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, mode, *args, **kwargs)

    before = tree(earlier_run)
    monkeypatch.setattr(builtins, "open", full_open)
    res = CliRunner().invoke(gen_audio.main, ["--network", str(snap), "--seeds", "0-3", "--outdir", str(earlier_run)])
    monkeypatch.undo()
    assert res.exit_code == 1
    assert "seed0002-130bpm.wav (No space left on device)" in one_error_line(res.output)
    assert tree(earlier_run) == before and not staging_left(earlier_run)


def test_sigterm_mid_run_removes_the_staging_folder_and_changes_nothing(snap, earlier_run):
    before = tree(earlier_run)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(ROOT / "gen_audio.py"), "--network", str(snap), "--seeds", "0-100000",
                             "--outdir", str(earlier_run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=earlier_run.parent)
    try:
        for _ in range(1200):          # hang guard only: wait until the run has staged some files
            staged = [p for d in earlier_run.glob(publish.STAGING_PREFIX + "*") for p in d.glob("*.wav")]
            if len(staged) >= 2 or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "Stopped: SIGTERM received; nothing was changed in --outdir"
    assert "Traceback" not in err
    assert tree(earlier_run) == before and not staging_left(earlier_run)


def test_a_signal_during_publishing_waits_until_the_folder_is_complete(tmp_path, monkeypatch):
    out, staging = make_folders(tmp_path)
    real = os.replace
    sent = []

    def replace_then_signal(src, dst, *args, **kwargs):
        real(src, dst, *args, **kwargs)
        if not sent:                                   # SIGTERM arrives after the first move
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "replace", replace_then_signal)
    with publish.stop_on_signals():
        with pytest.raises(publish.Interrupted) as info:
            publish.publish(staging, out)
    assert info.value.completed and info.value.signum == signal.SIGTERM
    assert {n: (out / n).read_text() for n in ("a.wav", "b.png", "c.wav", "index.html")} == {
        "a.wav": "new a", "b.png": "new b", "c.wav": "new c", "index.html": "new page"}
