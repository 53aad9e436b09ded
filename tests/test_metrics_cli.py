"""calc_metrics.py end to end: a tiny random snapshot, a small archive, a toy TorchScript detector."""
import json
import re

import numpy as np
import pytest
from archive_helpers import write_encoded_archive
from click.testing import CliRunner
from snapshot_helpers import tiny_generator

import calc_metrics
from audio_ext.core.geometry import StftGeometry
from audio_ext.core.synth import techno_loop
from stylegan2 import snapshot
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
    G = tiny_generator(RES, width=8, mapping_layers=1)
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


def test_a_log_that_cannot_be_written_is_a_warning_after_the_value(world, monkeypatch, tmp_path):
    # The run folder refuses the log (metric-fid1k.jsonl is a folder: unwritable even for root); the
    # value must still be printed, the failure be one warning line, and the exit status 0.
    run = tmp_path / "run"
    run.mkdir()
    snap = run / "network-snapshot-000000.pkl"
    snap.write_bytes(world["snap"].read_bytes())
    (run / "metric-fid1k.jsonl").mkdir()
    r = run_cli(world, monkeypatch, "--network", snap, "--metrics", "fid1k", "--detector", world["detector"],
                "--num-gen", 8, "--device", "cpu")
    assert r.exit_code == 0, r.output
    lines = [l.strip() for l in re.split(r"[\r\n]", r.output) if l.strip()]
    value = [i for i, l in enumerate(lines) if re.match(r"fid1k [0-9.e+-]+ ", l)]
    warning = [i for i, l in enumerate(lines) if l.startswith("Warning: fid1k was computed but not logged")]
    assert len(value) == 1 and len(warning) == 1 and value[0] < warning[0], r.output
    assert str(run / "metric-fid1k.jsonl") in lines[warning[0]]
    assert "Traceback" not in r.output and list((run / "metric-fid1k.jsonl").iterdir()) == []


@pytest.mark.parametrize("stored, words", [
    (["not", "a", "dict"], "training_set_kwargs is a list, not a dict"),
    ({"path": 5}, "training_set_kwargs.path is 5, expected str"),
    ({"path": "{data}", "resolution": "32"}, "training_set_kwargs.resolution is '32', expected int or None"),
    ({"path": "{data}", "use_labels": "yes"}, "training_set_kwargs.use_labels is 'yes', expected bool"),
    ({"path": "{data}", "max_size": -4}, "training_set_kwargs.max_size is -4, expected >= 0"),
])
def test_odd_training_set_kwargs_give_one_line_naming_the_key(world, monkeypatch, tmp_path, stored, words):
    snap = snapshot.load_snapshot(world["snap"])
    if isinstance(stored, dict):
        stored = {k: (v.format(data=world["data"]) if isinstance(v, str) else v) for k, v in stored.items()}
    snap["training_set_kwargs"] = stored
    odd = tmp_path / "odd.pkl"
    snapshot.save_snapshot(odd, snap)
    r = run_cli(world, monkeypatch, "--network", odd, "--metrics", "sfd1k", "--num-gen", 4, "--device", "cpu",
                "--no-report")
    assert r.exit_code == 1
    errors = [l for l in r.output.splitlines() if l.startswith("Error")]
    assert len(errors) == 1 and str(odd) in errors[0] and words in errors[0], r.output
    assert "Traceback" not in r.output


def test_a_snapshot_with_an_absurd_audio_block_is_refused_before_any_metric(world, monkeypatch, tmp_path):
    snap = snapshot.load_snapshot(world["snap"])
    snap["audio"] = dict(snap["audio"], mean=float("nan"))
    odd = tmp_path / "nan-mean.pkl"
    snapshot.save_snapshot(odd, snap)
    computed = []
    real = calc_metrics.evaluate_snapshot.__globals__["registry"].calc_metric
    monkeypatch.setattr(calc_metrics.evaluate_snapshot.__globals__["registry"], "calc_metric",
                        lambda *a, **k: computed.append(1) or real(*a, **k))
    r = run_cli(world, monkeypatch, "--network", odd, "--metrics", "fid1k,sfd1k", "--detector", world["detector"],
                "--num-gen", 4, "--device", "cpu")
    assert r.exit_code == 1 and computed == []
    errors = [l for l in r.output.splitlines() if l.startswith("Error")]
    assert errors == [f"Error: {odd}: audio block mean nan is not a finite number"], r.output
    assert not list(tmp_path.glob("metric-*.jsonl"))
