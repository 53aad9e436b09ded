"""calc_metrics.py end to end: a tiny random snapshot, a small archive, a toy TorchScript detector."""
import re
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import calc_metrics
from archive_helpers import write_encoded_archive
from audio_ext.geometry import StftGeometry
from audio_ext.synth import techno_loop
from stylegan2 import networks, snapshot
from stylegan2.metrics.toy_detector import write_toy_detector

RES = 32
GEOM = StftGeometry(RES)


def write_archive(path, n=16):
    clips = np.stack([techno_loop(130, 0.1, seed=s, offset=s * 0.003)[: GEOM.clip_samples] for s in range(n)])
    return write_encoded_archive(path, clips, GEOM)[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("calc")
    data = root / "stft.zip"
    block = write_archive(data)
    torch.manual_seed(0)
    G = networks.Generator(z_dim=8, w_dim=8, img_resolution=RES, img_channels=1, mapping_kwargs=dict(num_layers=1),
                           channel_base=256, channel_max=8)
    run = root / "run"
    snap = run / "network-snapshot-000000.pkl"
    snapshot.save_snapshot(snap, {"G_ema": snapshot.network_record(G), "audio": block,
                                  "training_set_kwargs": {"path": str(data), "resolution": RES, "use_labels": False,
                                                          "max_size": 4, "xflip": False}})
    orphan = root / "orphan.pkl"
    snapshot.save_snapshot(orphan, {"G_ema": snapshot.network_record(G), "audio": block})
    return dict(data=data, snap=snap, run=run, orphan=orphan, detector=write_toy_detector(root / "toy.pt"),
                cache=root / "cache")


def run_cli(world, monkeypatch, *args):
    monkeypatch.setenv("ELECTROGAN_CACHE", str(world["cache"]))
    return CliRunner().invoke(calc_metrics.main, [str(a) for a in args])


def test_metrics_are_printed_and_logged_beside_the_snapshot(world, monkeypatch):
    r = run_cli(world, monkeypatch, "--network", world["snap"], "--metrics", "fid1k,sfd1k", "--detector",
                world["detector"], "--num-gen", 12, "--device", "cpu", "--batch", 5)
    assert r.exit_code == 0, r.output
    lines = [l.strip() for l in re.split(r"[\r\n]", r.output) if l.strip().startswith(("fid1k ", "sfd1k "))]  # progress bars use \r
    assert len(lines) == 2
    fid = json.loads((world["run"] / "metric-fid1k.jsonl").read_text().splitlines()[-1])
    assert fid["snapshot_pkl"] == "network-snapshot-000000.pkl" and fid["results"]["fid1k"] > 0
    sfd = json.loads((world["run"] / "metric-sfd1k.jsonl").read_text().splitlines()[-1])
    assert set(sfd["results"]) >= {"sfd1k", "silence_share_real", "silence_share_gen"}
    assert 0 <= sfd["results"]["silence_share_real"] <= 1


def test_json_output_and_determinism(world, monkeypatch):
    args = ("--network", world["snap"], "--metrics", "fid1k", "--detector", world["detector"], "--num-gen", 8,
            "--device", "cpu", "--json", "--no-report")
    a, b = run_cli(world, monkeypatch, *args), run_cli(world, monkeypatch, *args)
    assert a.exit_code == 0, a.output
    ra, rb = json.loads(a.output.strip().splitlines()[-1]), json.loads(b.output.strip().splitlines()[-1])
    assert ra["results"] == rb["results"]
    # the full set is used even though training ran on a 4-image subset (max_size is dropped)
    assert ra["max_real"] is None


def test_data_option_replaces_the_stored_training_set(world, monkeypatch):
    r = run_cli(world, monkeypatch, "--network", world["orphan"], "--metrics", "sfd1k", "--data", world["data"],
                "--num-gen", 8, "--device", "cpu", "--no-report")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("args, message", [
    (("--network", "{tmp}/missing.pkl", "--metrics", "fid1k"), "missing.pkl: no such file"),
    (("--network", "{snap}", "--metrics", "fid5k"), "unknown metric 'fid5k'"),
    (("--network", "{orphan}", "--metrics", "sfd1k"), "does not name its training set; pass --data"),
    (("--network", "{snap}", "--metrics", "fid1k", "--data", "{tmp}/nope.zip"), "nope.zip: no such dataset"),
    (("--network", "{snap}", "--metrics", "fid1k", "--detector", "{tmp}/bad.pt"), "bad.pt: not a loadable TorchScript"),
])
def test_bad_input_gives_one_line_errors(world, monkeypatch, tmp_path, args, message):
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    fill = dict(tmp=tmp_path, snap=world["snap"], orphan=world["orphan"])
    r = run_cli(world, monkeypatch, *[a.format(**fill) for a in args], "--num-gen", 4, "--device", "cpu", "--no-report")
    assert r.exit_code != 0
    assert message in r.output
    assert "Traceback" not in r.output
