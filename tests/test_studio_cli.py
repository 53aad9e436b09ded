"""``python -m audio_ext studio``: one-line errors for bad networks, a warning off localhost, a clean Ctrl-C
that removes every session file."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from click.testing import CliRunner
from studio_helpers import studio_snapshot

from audio_ext.__main__ import main
from audio_ext.core.geometry import StftGeometry

REPO = Path(__file__).resolve().parents[1]


def _studio(*args):
    return CliRunner().invoke(main, ["studio", *map(str, args)])


def test_no_network_is_a_one_line_error_where_no_network_is_shipped(monkeypatch, tmp_path):
    from audio_ext.generation import pretrained
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path)          # an installation without electro128
    r = _studio()
    assert r.exit_code == 1 and "--network PKL is required" in r.output and len(r.output.strip().splitlines()) == 1


def test_crafted_file_and_another_geometry_are_one_line_errors(tmp_path):
    crafted = tmp_path / "crafted.pkl"
    crafted.write_bytes(b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR." + os.urandom(64))
    r = _studio("--network", crafted)
    assert r.exit_code == 1 and "crafted.pkl" in r.output and len(r.output.strip().splitlines()) == 1
    # a generator of 64 x 64 images with the audio block of a 128 x 128 archive
    from stylegan2 import networks, snapshot
    G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=64, img_channels=1,
                           mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=16)
    block = StftGeometry(128, sample_rate=8000).audio_block(mean=-6.0, std=3.0, target_bpm=240.0)
    other = tmp_path / "other.pkl"
    snapshot.save_snapshot(other, {"G_ema": snapshot.network_record(G), "audio": block, "cur_nimg": 0})
    r = _studio("--network", other)
    assert r.exit_code == 1 and "other.pkl: generator resolution 64 does not match the audio block's 128" in r.output


def test_ctrl_c_stops_cleanly_and_removes_session_files(tmp_path):
    snap = studio_snapshot(tmp_path / "net.pkl")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "audio_ext", "studio", "--network", str(snap), "--port", "0",
                             "--host", "127.0.0.2"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not any("http://" in line for line in lines):
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        assert lines[0].startswith("Warning: listening on 127.0.0.2")
        url = next(line for line in lines if "http://" in line).split()[2]
        req = urllib.request.Request(url + "api/jobs", data=json.dumps({"kind": "seeds", "seeds": [1]}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 202
        time.sleep(0.5)
        assert any(tmp.rglob("*")), "the session folder exists while the app runs"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped" in out and "Traceback" not in out
    assert list(tmp.iterdir()) == []


def test_default_network_is_the_shipped_electro128_when_installed(monkeypatch):
    from audio_ext.generation import pretrained
    from audio_ext.studio.engine import default_network
    monkeypatch.setattr(pretrained, "known_names", lambda folder=None: [])
    assert default_network() is None
    monkeypatch.setattr(pretrained, "known_names", lambda folder=None: ["other", "electro128"])
    assert default_network() == "pretrained:electro128"
