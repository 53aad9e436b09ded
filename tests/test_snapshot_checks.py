"""Snapshots are checked at load: non-regular files, non-finite values, damaged counters, declared sizes.

Each damaged snapshot is refused with one line naming the file and the field, by the library
(load_snapshot / build_networks), by gen_audio.py (nothing written) and by train.py --resume.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import gen_audio
from audio_ext.core.geometry import StftGeometry
from stylegan2 import networks
from stylegan2 import snapshot as snap_io
from stylegan2.presets import PRESETS, discriminator_kwargs, generator_kwargs, resolve_config
from stylegan2.snapshot import SnapshotError, build_networks, load_snapshot, network_record, save_snapshot

ROOT = Path(__file__).resolve().parents[1]
RES = 32


def tiny_generator(resolution=RES, seed=0):
    torch.manual_seed(seed)
    return networks.Generator(z_dim=8, w_dim=8, img_resolution=resolution, img_channels=1,
                              mapping_kwargs=dict(num_layers=1), channel_base=256, channel_max=8)


@pytest.fixture(scope="module")
def healthy():
    """The parts of a healthy snapshot: G_ema, an Adam state, counters, pl_mean, an audio block."""
    G = tiny_generator()
    opt = torch.optim.Adam(G.parameters(), lr=1e-3)
    sum(p.sum() for p in G.parameters()).backward()
    opt.step()
    return {"G_ema": network_record(G), "opt_G": opt.state_dict(), "cur_nimg": 4000, "cur_tick": 2, "batch_idx": 125,
            "pl_mean": torch.tensor(0.25), "augment": {"kwargs": {}, "p": 0.1},
            "audio": StftGeometry(RES).audio_block(mean=-6.0, std=3.0, target_bpm=130.0)}


def damaged(healthy, what):
    """A deep enough copy of ``healthy`` with one field damaged; returns (snapshot, words of the message)."""
    snap = {k: v for k, v in healthy.items()}
    snap["G_ema"] = dict(healthy["G_ema"], state_dict=dict(healthy["G_ema"]["state_dict"]))
    if what == "nan weight":
        key = "synthesis.b8.conv0.weight"
        snap["G_ema"]["state_dict"][key] = snap["G_ema"]["state_dict"][key].clone().index_fill_(0, torch.tensor([1]), float("nan"))
        return snap, ["G_ema", key, "NaN or inf"]
    if what == "inf weight":
        key = "mapping.fc0.bias"
        snap["G_ema"]["state_dict"][key] = torch.full_like(snap["G_ema"]["state_dict"][key], float("inf"))
        return snap, ["G_ema", key, "NaN or inf"]
    if what == "nan optimizer":
        state = {k: dict(v) for k, v in healthy["opt_G"]["state"].items()}
        state[0]["exp_avg_sq"] = torch.full_like(state[0]["exp_avg_sq"], float("nan"))
        snap["opt_G"] = dict(healthy["opt_G"], state=state)
        return snap, ["opt_G", "exp_avg_sq"]
    if what == "nan pl_mean":
        snap["pl_mean"] = torch.tensor(float("nan"))
        return snap, ["pl_mean nan"]
    if what == "inf pl_mean":
        snap["pl_mean"] = torch.tensor(float("inf"))
        return snap, ["pl_mean inf"]
    if what == "negative cur_nimg":
        snap["cur_nimg"] = -1000
        return snap, ["cur_nimg -1000"]
    if what == "absurd cur_nimg":
        snap["cur_nimg"] = 10**18
        return snap, ["cur_nimg 1000000000000000000"]
    if what == "float cur_nimg":
        snap["cur_nimg"] = float("nan")
        return snap, ["cur_nimg nan", "not an integer"]
    if what == "negative batch_idx":
        snap["batch_idx"] = -5
        return snap, ["batch_idx -5"]
    if what == "negative p":
        snap["augment"] = {"kwargs": {}, "p": -0.5}
        return snap, ["augment.p -0.5"]
    if what == "nan p":
        snap["ada_stats"] = {"p": float("nan")}
        return snap, ["ada_stats.p nan"]
    raise AssertionError(what)


CASES = ["nan weight", "inf weight", "nan optimizer", "nan pl_mean", "inf pl_mean", "negative cur_nimg",
         "absurd cur_nimg", "float cur_nimg", "negative batch_idx", "negative p", "nan p"]


def test_ada_p_above_one_is_a_valid_strength_not_damage(healthy, tmp_path):
    """ADA's controller has no upper clamp on p (upstream neither); a long run's snapshot must resume."""
    healthy["augment"] = {"kwargs": {}, "p": 1.3}
    save_snapshot(tmp_path / "strong.pkl", healthy)
    assert load_snapshot(tmp_path / "strong.pkl")["augment"]["p"] == 1.3


def test_a_healthy_snapshot_loads(healthy, tmp_path):
    save_snapshot(tmp_path / "ok.pkl", healthy)
    data = load_snapshot(tmp_path / "ok.pkl")
    assert data["cur_nimg"] == 4000 and float(data["pl_mean"]) == 0.25


@pytest.mark.parametrize("what", CASES)
def test_damaged_values_are_refused_at_load_naming_file_and_field(healthy, tmp_path, what):
    snap, words = damaged(healthy, what)
    path = tmp_path / "damaged.pkl"
    save_snapshot(path, snap)
    with pytest.raises(SnapshotError) as info:
        load_snapshot(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for w in words:
        assert w in message, message


def one_error_line(output):
    lines = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


@pytest.mark.parametrize("what", ["nan weight", "inf pl_mean", "negative cur_nimg"])
def test_gen_audio_refuses_damaged_snapshots_and_writes_nothing(healthy, tmp_path, what):
    snap, words = damaged(healthy, what)
    path = tmp_path / "damaged.pkl"
    save_snapshot(path, snap)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier")
    res = CliRunner().invoke(gen_audio.main, ["--network", str(path), "--seeds", "0", "--outdir", str(out)])
    assert res.exit_code == 1
    line = one_error_line(res.output)
    assert str(path) in line and all(w in line for w in words)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "earlier"


def test_train_resume_refuses_a_damaged_snapshot(healthy, tmp_path):
    import numpy as np
    from archive_helpers import write_encoded_archive

    import train
    from audio_ext.core.synth import techno_loop
    geom = StftGeometry(RES)
    archive = tmp_path / "stft.zip"
    write_encoded_archive(archive, np.stack([techno_loop(130, 0.1, seed=s)[: geom.clip_samples] for s in range(4)]),
                          geom)
    for what in ("nan pl_mean", "negative cur_nimg"):
        snap, words = damaged(healthy, what)
        path = tmp_path / f"{what.replace(' ', '-')}.pkl"
        save_snapshot(path, snap)
        res = CliRunner().invoke(train.main, ["--outdir", str(tmp_path / "runs"), "--data", str(archive), "--cfg",
                                              "tiny", "--resume", str(path), "-n"])
        assert res.exit_code == 1
        line = one_error_line(res.output)
        assert str(path) in line and all(w in line for w in words)
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------- not a file

def test_fifo_and_devices_are_refused_at_once(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    fifo = tmp_path / "snap.pkl"
    os.mkfifo(fifo)
    # In a subprocess with a timeout: before the fix, opening the FIFO waited for a writer forever.
    out = tmp_path / "out"
    code = ("import sys; from stylegan2.snapshot import load_snapshot, SnapshotError\n"
            "for p in sys.argv[1:]:\n"
            "    try: load_snapshot(p)\n"
            "    except SnapshotError as e: print(e)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code, str(fifo), "/dev/zero", str(tmp_path)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=env)
    lines = done.stdout.splitlines()
    assert lines == [f"{fifo}: is a FIFO (named pipe), not a snapshot file", "/dev/zero: is a device, not a snapshot file",
                     f"{tmp_path}: is a directory, not a snapshot file"], done.stdout + done.stderr
    done = subprocess.run([sys.executable, str(ROOT / "gen_audio.py"), "--network", str(fifo), "--seeds", "0",
                           "--outdir", str(out)], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"Error: {fifo}: is a FIFO (named pipe), not a snapshot file"]
    assert not out.exists()


# ------------------------------------------------------------------------------------- declared sizes

def claims(healthy, **kwargs):
    """The healthy generator record, its init_kwargs changed to declare another network."""
    record = dict(healthy["G_ema"], init_kwargs=dict(healthy["G_ema"]["init_kwargs"], **kwargs))
    return {"G_ema": record}


@pytest.mark.parametrize("kwargs, words", [
    (dict(img_resolution=2**14), "init_kwargs.img_resolution 16384 is not an integer in 0..8192"),
    (dict(img_resolution=48), "init_kwargs.img_resolution 48 is not a power of two"),
    (dict(z_dim=-1), "init_kwargs.z_dim -1"),
    (dict(w_dim=2**40), "init_kwargs.w_dim 1099511627776"),
    (dict(mapping_kwargs=dict(num_layers=10**6)), "init_kwargs.mapping_kwargs.num_layers 1000000"),
    (dict(img_channels="1"), "init_kwargs.img_channels '1'"),
])
def test_declared_sizes_beyond_sane_bounds_are_refused(healthy, kwargs, words):
    with pytest.raises(SnapshotError) as info:
        build_networks(claims(healthy, **kwargs), names=["G_ema"])
    assert words in str(info.value) and "'G_ema'" in str(info.value)


def test_a_large_declared_network_is_compared_with_the_stored_shapes_before_it_is_built(healthy, monkeypatch):
    # Record on which device every Generator is constructed: the claim (8192 x 8192, within the bounds)
    # must be refused after a shapes-only build on torch's meta device, never built for real.
    devices = []
    real = networks.Generator

    class Recording(real):
        def __init__(self, *args, **kwargs):
            devices.append(torch.empty(0).device.type)
            super().__init__(*args, **kwargs)

    monkeypatch.setitem(snap_io._ALLOWED_CLASSES, "stylegan2.networks.Generator", lambda: Recording)
    with pytest.raises(SnapshotError) as info:
        build_networks(claims(healthy, img_resolution=8192, channel_base=2**19), names=["G_ema"])
    message = str(info.value)
    assert "state_dict does not fit" in message and "missing" in message and "synthesis.b64" in message
    assert devices == ["meta"]
    # a record within the ordinary sizes (every preset) is built for real straight away, no meta pass
    # (its first use costs about 0.9 CPU s), and its shapes are compared before the weights are loaded:
    # a stored tensor of another shape than declared is named with both shapes
    devices.clear()
    with pytest.raises(SnapshotError, match=r"mapping\.fc0\.weight is stored as \[8, 8\], its init_kwargs declare \[8, 16\]"):
        build_networks(claims(healthy, z_dim=16), names=["G_ema"])
    assert devices == ["cpu"]
    devices.clear()
    G = build_networks(healthy, names=["G_ema"])["G_ema"]
    assert devices == ["cpu"]
    assert G(torch.zeros(1, 8), torch.zeros(1, 0)).shape == (1, 1, RES, RES)
    # one size beyond the ordinary ones sends a record through the meta pass again
    devices.clear()
    with pytest.raises(SnapshotError, match="missing"):
        build_networks(claims(healthy, img_resolution=2048, channel_base=32768), names=["G_ema"])
    assert devices == ["meta"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_at_1024_is_within_the_ordinary_sizes_which_stay_inside_the_hard_limits(preset):
    assert set(snap_io.ORDINARY_SIZES) == set(snap_io.SIZE_LIMITS)
    assert all(snap_io.ORDINARY_SIZES[k] <= snap_io.SIZE_LIMITS[k] for k in snap_io.ORDINARY_SIZES)
    opts = resolve_config(preset, 1024, 1)
    for kwargs in (generator_kwargs(opts, 0, 1), discriminator_kwargs(opts, 0, 1)):
        assert snap_io._within_ordinary_sizes(kwargs)
    assert not snap_io._within_ordinary_sizes(dict(generator_kwargs(opts, 0, 1), img_resolution=2048))


def test_a_compressed_zip_that_unpacks_to_far_more_than_its_size_is_refused(tmp_path):
    import zipfile
    good = tmp_path / "good.pkl"
    save_snapshot(good, {"cur_nimg": 0, "w": torch.zeros(8)})
    bomb = tmp_path / "bomb.pkl"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            z.writestr(info.filename, src.read(info.filename))
        z.writestr("good/data/padding", bytes(64 * 2**20))           # 64 MiB of zeros in about 64 KB
    assert bomb.stat().st_size < 2**20
    with pytest.raises(SnapshotError, match=r"bomb\.pkl: its members unpack to [0-9,]+ bytes from a [0-9,]+-byte file"):
        load_snapshot(bomb)
    # the same members deflated without the padding are still a loadable snapshot
    small = tmp_path / "deflated.pkl"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(small, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            z.writestr(info.filename, src.read(info.filename))
    assert load_snapshot(small)["cur_nimg"] == 0


@pytest.mark.parametrize("values, dtype", [
    ([1.0, -2.0, 3.5], torch.float32), ([1.0, float("nan")], torch.float32), ([float("inf"), -float("inf")], torch.float32),
    ([3e38, 3e38, 3e38], torch.float32),           # finite values whose sum overflows
    ([60000.0, 60000.0], torch.float16), ([60000.0, float("inf")], torch.float16),
    ([1e30, -float("inf")], torch.float64), ([0.5, -0.25], torch.bfloat16),
])
def test_the_fast_finiteness_check_agrees_with_isfinite(values, dtype):
    t = torch.tensor(values, dtype=dtype)
    assert snap_io._all_finite(t) == bool(torch.isfinite(t).all())
