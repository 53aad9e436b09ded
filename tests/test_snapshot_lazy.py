"""Reading only part of a snapshot: generation maps the file and touches G_ema and the audio block alone.

A training snapshot is mostly G, D and two Adam states that generation never uses. Here such a
snapshot has a small real G_ema beside ~100 MB of other tensors; the lazy read must not read those
(measured by the tensors checked and by the resident memory a process gains), must give the same
G_ema as a full read, and must keep every safety check on what it returns.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stylegan2 import networks
from stylegan2 import snapshot as snap_io
from stylegan2.snapshot import SnapshotError, build_networks, load_snapshot, network_record, save_snapshot

ROOT = Path(__file__).resolve().parent.parent
BULK = 8 * 2 ** 20          # float32 elements per bulk tensor: 32 MiB each, 96 MiB beside G_ema

AUDIO = {"sample_rate": 44100, "resolution": 16, "n_fft": 32, "hop_length": 16, "window": "hann",
         "center": True, "eps": 1e-10, "mean": -5.0, "std": 4.0, "clip_sigma": 3.0, "target_bpm": 130.0,
         "format_version": 1}


def small_generator() -> torch.nn.Module:
    torch.manual_seed(0)
    return networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=1,
                              mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=32)


def training_snapshot(path: Path, G_ema: torch.nn.Module, bulk: int = BULK, **damage) -> Path:
    """A snapshot laid out as the training loop writes one: the bulk is in G, D and the optimizer states."""
    torch.manual_seed(1)
    record = network_record(G_ema)
    big = lambda: torch.randn(bulk)        # noqa: E731 - one fresh tensor per use
    data = dict(
        G={**record, "state_dict": {**record["state_dict"], "bulk": big()}},
        D={"class": "stylegan2.networks.Discriminator", "init_kwargs": {}, "state_dict": {"w": big()}},
        G_ema=record,
        opt_G={"state": {0: {"step": torch.tensor(10.0), "exp_avg": big()}}, "param_groups": []},
        opt_D={"state": {0: {"step": torch.tensor(10.0), "exp_avg_sq": torch.rand(bulk)}}, "param_groups": []},
        cur_nimg=4000, cur_tick=1, batch_idx=125, pl_mean=torch.tensor(0.5), audio=dict(AUDIO),
        decoder_model={"weights": torch.ones(3)},
    )
    for key, fn in damage.items():
        fn(data)
    save_snapshot(path, data)
    return path


@pytest.fixture(scope="module")
def big_snapshot(tmp_path_factory):
    G = small_generator()
    return training_snapshot(tmp_path_factory.mktemp("lazy") / "network-snapshot-000004.pkl", G), G


def test_only_the_requested_keys_come_back_and_build_the_same_generator(big_snapshot):
    path, G = big_snapshot
    part = load_snapshot(path, keys=("G_ema", "audio", "decoder_model"))
    assert sorted(part) == ["G_ema", "audio", "decoder_model", "format_version"]
    full = load_snapshot(path)
    G_part = build_networks(part, names=["G_ema"])["G_ema"]
    G_full = build_networks(full, names=["G_ema"])["G_ema"]
    for (name, a), (_, b) in zip(G_part.state_dict().items(), G_full.state_dict().items()):
        assert torch.equal(a, b), name
    z = torch.randn([2, 16], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        image = G_part(z, None, noise_mode="const")
        assert torch.equal(image, G_full(z, None, noise_mode="const"))
        assert torch.allclose(image, G.eval()(z, None, noise_mode="const"), atol=1e-5)
    assert part["audio"] == AUDIO and torch.equal(part["decoder_model"]["weights"], torch.ones(3))


def test_values_are_checked_only_on_the_tensors_that_are_read(big_snapshot, monkeypatch):
    path, G = big_snapshot
    checked = []
    real = snap_io._all_finite
    monkeypatch.setattr(snap_io, "_all_finite", lambda t: checked.append(t.numel()) or real(t))
    load_snapshot(path, keys=("G_ema", "audio"))
    g_ema = sum(t.numel() for t in G.state_dict().values() if t.is_floating_point() and t.numel())
    assert sum(checked) == g_ema
    checked.clear()
    load_snapshot(path)
    assert sum(checked) > 4 * BULK      # the full read checks the bulk too


def _resident_growth(path: Path, keys) -> int:
    """Bytes of resident memory a fresh process gains by loading ``path`` (and building G_ema) and keeping it."""
    code = f"""
import json, os, sys
sys.path.insert(0, {str(ROOT / "tests")!r})
from test_snapshot_lazy import small_generator
from stylegan2.snapshot import build_networks, load_snapshot, network_record
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
build_networks({{"G_ema": network_record(small_generator())}})     # warm up torch's own first-use allocations
before = rss()
snap = load_snapshot({str(path)!r}, keys={keys!r})
G = build_networks(snap, names=["G_ema"])["G_ema"]
print(json.dumps(rss() - before))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc to read resident memory")
def test_the_lazy_read_leaves_the_bulk_on_disk(big_snapshot):
    path, _ = big_snapshot
    full = _resident_growth(path, None)
    lazy = _resident_growth(path, ("G_ema", "audio", "decoder_model"))
    assert full > 3 * BULK * 4 * 0.8       # the full read holds G, D and both Adam states in memory
    assert lazy < 0.1 * full, (lazy, full)


def test_a_snapshot_without_G_ema_gives_G(tmp_path):
    G = small_generator()
    path = tmp_path / "s.pkl"
    save_snapshot(path, dict(G=network_record(G), audio=dict(AUDIO)))
    part = load_snapshot(path, keys=("G_ema", "audio"))
    assert sorted(part) == ["G", "audio", "format_version"]


def test_damage_in_what_is_read_is_refused_and_in_the_rest_left_to_a_full_read(tmp_path):
    G = small_generator()

    def nan_in(key, name):
        def damage(data):
            data[key] = {**data[key], "state_dict": dict(data[key]["state_dict"])}
            data[key]["state_dict"][name] = torch.full_like(data[key]["state_dict"][name], float("nan"))
        return damage
    some_weight = next(k for k, v in G.state_dict().items() if v.is_floating_point())
    bad_ema = training_snapshot(tmp_path / "ema.pkl", G, bulk=64, d=nan_in("G_ema", some_weight))
    with pytest.raises(SnapshotError, match=rf"^{tmp_path}/ema.pkl: G_ema weight {some_weight} holds NaN"):
        load_snapshot(bad_ema, keys=("G_ema", "audio"))
    bad_d = training_snapshot(tmp_path / "d.pkl", G, bulk=64, d=nan_in("D", "w"))
    assert "G_ema" in load_snapshot(bad_d, keys=("G_ema", "audio"))      # generation never reads D
    with pytest.raises(SnapshotError, match="D weight w holds NaN"):
        load_snapshot(bad_d)                                             # resuming does


def test_scalars_are_checked_for_every_key_even_in_a_partial_read(tmp_path):
    def negative(data):
        data["cur_nimg"] = -5
    path = training_snapshot(tmp_path / "s.pkl", small_generator(), bulk=64, n=negative)
    with pytest.raises(SnapshotError, match="cur_nimg -5 is outside"):
        load_snapshot(path, keys=("G_ema", "audio"))


def test_a_partial_read_refuses_what_is_not_plain_data_anywhere_in_the_file(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))
    path = tmp_path / "evil.pkl"
    torch.save({"format_version": 1, "G_ema": {"x": torch.ones(2)}, "opt_D": Payload()}, path)
    with pytest.raises(SnapshotError, match="refused to load: the file contains pickled code"):
        load_snapshot(path, keys=("G_ema",))
    sized = tmp_path / "size.pkl"
    torch.save({"format_version": 1, "G_ema": {"x": torch.ones(2)}, "opt_D": {"shape": torch.Size([2])}}, sized)
    with pytest.raises(SnapshotError, match=r"refused to load: .*opt_D\.shape"):
        load_snapshot(sized, keys=("G_ema",))


def test_a_partial_read_of_a_damaged_or_odd_file_is_one_line_naming_it(tmp_path, big_snapshot):
    path, _ = big_snapshot
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(path.read_bytes()[: 3 * 2 ** 20])
    with pytest.raises(SnapshotError, match=rf"^{truncated}: truncated or corrupt"):
        load_snapshot(truncated, keys=("G_ema",))
    fifo = tmp_path / "fifo.pkl"
    os.mkfifo(fifo)
    with pytest.raises(SnapshotError, match="is a FIFO"):
        load_snapshot(fifo, keys=("G_ema",))
    raw = tmp_path / "raw.pkl"              # a bare pickle is no torch file, mapped or not
    raw.write_bytes(pickle.dumps({"format_version": 1, "audio": dict(AUDIO)}, protocol=2))
    with pytest.raises(SnapshotError, match=rf"^{raw}: truncated or corrupt"):
        load_snapshot(raw, keys=("audio",))
