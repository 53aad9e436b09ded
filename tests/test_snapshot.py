"""Snapshots are plain data: they round-trip exactly, refuse anything that is not, and never run code."""
import os
import pickle
import random

import numpy as np
import pytest
import torch

from stylegan2.snapshot import (
    FORMAT_VERSION,
    SnapshotError,
    build_networks,
    capture_rng_state,
    find_latest_snapshot,
    load_snapshot,
    network_record,
    register_network_class,
    restore_rng_state,
    save_snapshot,
    unregister_network_class,
)


class TinyNet(torch.nn.Module):
    """A stand-in network with constructor kwargs, a parameter and a buffer."""

    def __init__(self, width, depth=1, note="x"):
        super().__init__()
        self.init_kwargs = dict(width=width, depth=depth, note=note)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(depth))
        self.register_buffer("w_avg", torch.zeros(width))


@pytest.fixture
def tiny_registered():
    name = register_network_class(TinyNet)
    yield name
    unregister_network_class(name)


def _full_snapshot(tiny_registered):
    torch.manual_seed(0)
    G, D = TinyNet(3, depth=2), TinyNet(4)
    G.w_avg.fill_(0.25)
    opt = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99))
    loss = sum(p.sum() for p in G.parameters())
    loss.backward()
    opt.step()
    return G, D, opt, {
        "G": network_record(G), "D": network_record(D), "G_ema": network_record(G),
        "opt_G": opt.state_dict(), "cur_nimg": 123456, "cur_tick": 7, "batch_idx": 42,
        "augment": {"kwargs": {"xint": 1, "gain": 1}, "p": 0.125},
        "pl_mean": torch.tensor(0.5), "rng": capture_rng_state(),
        "training_options": {"lr": 0.001, "gamma": 10.0, "metrics": []},
        "audio": {"sample_rate": 44100, "resolution": 64, "mean": -3.5, "std": 2.0, "window": "hann"},
    }


def test_round_trip_preserves_every_value(tmp_path, tiny_registered):
    G, D, opt, data = _full_snapshot(tiny_registered)
    path = tmp_path / "network-snapshot-000123.pkl"
    save_snapshot(path, data)
    loaded = load_snapshot(path)
    assert loaded["format_version"] == FORMAT_VERSION
    assert loaded["cur_nimg"] == 123456 and loaded["batch_idx"] == 42
    assert loaded["audio"] == data["audio"]
    assert loaded["augment"] == data["augment"]
    for k, v in G.state_dict().items():
        assert torch.equal(loaded["G"]["state_dict"][k], v)
    assert loaded["G"]["init_kwargs"] == {"width": 3, "depth": 2, "note": "x"}
    # Adam moments survive: a restored optimizer holds the same exp_avg_sq tensors
    opt2 = torch.optim.Adam(TinyNet(3, depth=2).parameters(), lr=1)
    opt2.load_state_dict(loaded["opt_G"])
    assert opt2.param_groups[0]["betas"] == (0.0, 0.99)
    for i, st in opt.state_dict()["state"].items():
        assert torch.equal(opt2.state_dict()["state"][i]["exp_avg_sq"], st["exp_avg_sq"])
    assert not [p for p in tmp_path.iterdir() if p.name != path.name]  # no temp file left


def test_build_networks_rebuilds_registered_class(tmp_path, tiny_registered):
    G, D, _, data = _full_snapshot(tiny_registered)
    save_snapshot(tmp_path / "s.pkl", data)
    nets = build_networks(load_snapshot(tmp_path / "s.pkl"))
    assert set(nets) == {"G", "D", "G_ema"}
    assert isinstance(nets["G"], TinyNet) and len(nets["G"].layers) == 2
    assert torch.equal(nets["G"].w_avg, torch.full((3,), 0.25))
    assert not nets["G"].training
    assert all(not p.requires_grad for p in nets["G_ema"].parameters())
    only = build_networks(data, names=["G_ema"])
    assert list(only) == ["G_ema"]


def test_build_networks_refuses_unlisted_class(tiny_registered):
    record = network_record(TinyNet(2))
    record["class"] = "os.system"
    with pytest.raises(SnapshotError, match="'G'.*'os.system'.*not an allowed network class"):
        build_networks({"format_version": 1, "G": record})


def test_build_networks_reports_shape_mismatch(tiny_registered):
    record = network_record(TinyNet(2))
    record["init_kwargs"]["width"] = 3
    with pytest.raises(SnapshotError, match="'D' state_dict does not fit"):
        build_networks({"format_version": 1, "D": record})


def test_build_networks_missing_record():
    with pytest.raises(SnapshotError, match="no 'G_ema' network record"):
        build_networks({"format_version": 1}, names=["G_ema"])
    with pytest.raises(SnapshotError, match="no network record"):
        build_networks({"format_version": 1})


@pytest.mark.parametrize("bad, where", [
    ({"G": torch.nn.Linear(2, 2)}, "snapshot.G: torch.nn.modules.linear.Linear is not plain data"),
    ({"opt": {"state": {"m": np.zeros(3)}}}, "snapshot.opt.state.m: numpy.ndarray is not plain data"),
    ({"x": [1, {2, 3}]}, r"snapshot.x\[1\]: builtins.set"),
    ({"x": np.float32(1)}, "snapshot.x: numpy.float32"),
])
def test_save_refuses_non_plain_data_and_writes_nothing(tmp_path, bad, where):
    path = tmp_path / "s.pkl"
    with pytest.raises(TypeError, match=where):
        save_snapshot(path, bad)
    assert list(tmp_path.iterdir()) == []


def test_save_keeps_old_file_when_validation_fails(tmp_path):
    path = tmp_path / "s.pkl"
    save_snapshot(path, {"cur_nimg": 1})
    with pytest.raises(TypeError):
        save_snapshot(path, {"cur_nimg": 2, "bad": object()})
    assert load_snapshot(path)["cur_nimg"] == 1


class _RunsCode:
    """Unpickling this would create a marker file: the attack a safe loader must refuse."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _OpensFile:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("payload", [_RunsCode, _OpensFile])
def test_load_refuses_torch_save_that_runs_code(tmp_path, payload):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    torch.save({"format_version": 1, "G": payload(marker)}, path)
    with pytest.raises(SnapshotError, match=r"evil\.pkl: refused to load.*code"):
        load_snapshot(path)
    assert not marker.exists()


def test_load_refuses_raw_pickle_that_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"format_version": 1, "x": _RunsCode(marker)}, protocol=2))
    with pytest.raises(SnapshotError, match=r"evil\.pkl: refused to load.*code"):
        load_snapshot(path)
    assert not marker.exists()


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(SnapshotError, match=r"missing\.pkl: no such file"):
        load_snapshot(tmp_path / "missing.pkl")

    good = tmp_path / "good.pkl"
    save_snapshot(good, {"cur_nimg": 5, "w": torch.randn(1000)})
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(SnapshotError, match=r"truncated\.pkl: truncated or corrupt"):
        load_snapshot(truncated)

    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"this is not a snapshot at all")
    with pytest.raises(SnapshotError, match=r"garbage\.pkl: not a network snapshot \(neither a torch zip file nor a pickle\)"):
        load_snapshot(garbage)

    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(SnapshotError, match=r"empty\.pkl: empty file, not a snapshot"):
        load_snapshot(empty)

    plain = tmp_path / "plain.pkl"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(SnapshotError, match=r"plain\.pkl: not an ElectroGAN network snapshot"):
        load_snapshot(plain)

    future = tmp_path / "future.pkl"
    torch.save({"format_version": FORMAT_VERSION + 1}, future)
    with pytest.raises(SnapshotError, match=rf"future\.pkl: unsupported format_version {FORMAT_VERSION + 1}"):
        load_snapshot(future)


def test_rng_state_round_trip_through_a_snapshot(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in the legacy numpy state
    save_snapshot(tmp_path / "s.pkl", {"rng": capture_rng_state()})
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    restore_rng_state(load_snapshot(tmp_path / "s.pkl")["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


def test_find_latest_snapshot(tmp_path):
    assert find_latest_snapshot(tmp_path / "nothing") is None
    assert find_latest_snapshot(tmp_path) is None
    run0, run1 = tmp_path / "00000-stft-tiny", tmp_path / "00001-stft-tiny"
    for i, (folder, kimg) in enumerate([(run0, 0), (run0, 200), (run1, 200), (run1, 400)]):
        folder.mkdir(exist_ok=True)
        f = folder / f"network-snapshot-{kimg:06d}.pkl"
        f.write_bytes(b"x")
        os.utime(f, (1000 + i, 1000 + i))
    (run1 / ".network-snapshot-000600.pkl.12345.tmp").write_bytes(b"partial")
    (run1 / "network-snapshot-000600.pkl.bak").write_bytes(b"other")
    assert find_latest_snapshot(tmp_path) == run1 / "network-snapshot-000400.pkl"
    # A newer write in an older run dir wins: newest means most recently written.
    os.utime(run0 / "network-snapshot-000200.pkl", (2000, 2000))
    assert find_latest_snapshot(tmp_path) == run0 / "network-snapshot-000200.pkl"


def test_real_networks_round_trip(tmp_path):
    networks = pytest.importorskip("stylegan2.networks")
    torch.manual_seed(0)
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=1,
                           mapping_kwargs={"num_layers": 2}, channel_base=64, channel_max=16)
    D = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=1, channel_base=64, channel_max=16)
    save_snapshot(tmp_path / "s.pkl", {"G": network_record(G), "D": network_record(D),
                                       "G_ema": network_record(G)})
    nets = build_networks(load_snapshot(tmp_path / "s.pkl"))
    z = torch.randn(2, 8)
    c = torch.zeros(2, 0)
    G.eval()
    with torch.no_grad():
        a = G(z, c, noise_mode="const")
        b = nets["G_ema"](z, c, noise_mode="const")
        assert torch.equal(a, b)
        assert torch.equal(D(a, c), nets["D"](a, c))


@pytest.mark.gpu
def test_cuda_tensors_load_on_cpu_and_build_on_cuda(tmp_path, tiny_registered):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    net = TinyNet(3).cuda()
    data = {"G_ema": network_record(net), "pl_mean": torch.tensor(1.0, device="cuda")}
    save_snapshot(tmp_path / "s.pkl", data)
    loaded = load_snapshot(tmp_path / "s.pkl")
    assert loaded["pl_mean"].device.type == "cpu"
    built = build_networks(loaded, device="cuda")["G_ema"]
    assert next(built.parameters()).device.type == "cuda"
    for k, v in net.state_dict().items():
        assert torch.equal(built.state_dict()[k], v)
