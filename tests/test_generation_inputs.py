"""Generation and projection check their inputs before the work, and hold --batch clips at a time
(issue 22, items 13-17 and 21-23)."""
import io
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from snapshot_helpers import tiny_audio_snapshot

import gen_audio
from audio_ext.generation import generate as gen
from audio_ext.generation import latents
from stylegan2 import snapshot


def make_snapshot(path, resolution, sample_rate, bpm):
    return tiny_audio_snapshot(path, resolution, sample_rate=sample_rate, target_bpm=bpm, cur_nimg=0)


@pytest.fixture(scope="module")
def snaps(tmp_path_factory):
    root = tmp_path_factory.mktemp("snaps")
    # 64 x 64 at 2048 Hz: 2 s clips at 240 BPM (2 bars), room for walks of 1 bar per clip
    return {"basic": make_snapshot(root / "basic.pkl", 32, 44100, 130.0),
            "bars": make_snapshot(root / "bars.pkl", 64, 2048, 240.0)}


def cli(*args):
    return CliRunner().invoke(gen_audio.main, [str(a) for a in args])


def one_error(res, *words):
    assert res.exit_code == 1, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("Error: ") and all(w in line for w in words), res.output
    return line


class WorkStarted(Exception):
    pass


def no_work(*a, **k):
    raise WorkStarted("the work started before the input was checked")


# --- 13, 21: --projected-w is judged by its header; a device is named as one, under the right flag ---------

def npz_with_header(path, shape, body=b""):
    """An npz whose w.npy header declares ``shape`` (float32) but holds only ``body``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("w.npy", buf.getvalue() + body)
    return path


def test_projected_w_shape_comes_from_the_header_before_any_data_is_read(snaps, tmp_path, monkeypatch):
    big = npz_with_header(tmp_path / "big.npz", (1, 16384, 16384))     # declares 1 GiB, holds nothing
    reads = []
    real = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: reads.append(1) or real(*a, **k))
    with pytest.raises(ValueError, match=r"big.npz: w has shape \[16384, 16384\], this network needs \[10, 16\]"):
        latents.load_projected_w(big, 10, 16)
    assert reads == []
    objects = npz_with_header(tmp_path / "obj.npz", (10, 16))
    with zipfile.ZipFile(objects, "w") as z:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": (10, 16)})
        z.writestr("w.npy", buf.getvalue())
    with pytest.raises(ValueError, match="obj.npz: w holds object, not floating-point numbers"):
        latents.load_projected_w(objects, 10, 16)
    good = tmp_path / "good.npz"
    w = np.random.RandomState(0).randn(1, 10, 16).astype(np.float32)
    np.savez_compressed(good, w=w, w_plus=np.array(False))
    np.testing.assert_array_equal(latents.load_projected_w(good, 10, 16).numpy(), w[0])


def test_a_walk_through_dev_zero_names_the_device_and_the_walk_flag(snaps, tmp_path):
    res = cli("--network", snaps["bars"], "--walk", "proj:/dev/zero,1", "--outdir", tmp_path / "o")
    one_error(res, "--walk proj:/dev/zero: is a device, not a projected_w.npz file")
    res = cli("--network", snaps["bars"], "--walk", f"proj:{tmp_path},1", "--outdir", tmp_path / "o")
    one_error(res, f"--walk proj:{tmp_path}: is a folder")
    res = cli("--network", snaps["bars"], "--projected-w", "/dev/zero", "--outdir", tmp_path / "o")
    one_error(res, "--projected-w /dev/zero: is a device")
    assert not (tmp_path / "o").exists()


# --- 14: a walk's one file has a bounded name --------------------------------------------------------------

def test_a_walk_of_long_seeds_writes_a_file_with_a_bounded_name(snaps, tmp_path):
    res = cli("--network", snaps["bars"], "--walk", "4000000000-4000000024", "--walk-steps", "0", "--bars", "1",
              "--crossfade", "0", "--outdir", tmp_path / "o")
    assert res.exit_code == 0, res.output
    wavs = list((tmp_path / "o").glob("walk-*.wav"))
    assert len(wavs) == 1 and len(wavs[0].name) <= 140 and wavs[0].name.startswith("walk-4000000000-4000000001-")
    other = gen._safe_stem(latents.walk_label(list(range(4000000000, 4000000025))[::-1]))
    assert other != wavs[0].name.rsplit("-", 1)[0] and len(other) <= gen.MAX_STEM   # distinct walks, distinct names


# --- 15: grids are capped before anything is loaded or rendered --------------------------------------------

def test_a_huge_mixing_grid_is_refused_before_the_snapshot_is_loaded(snaps, tmp_path, monkeypatch):
    monkeypatch.setattr(gen, "load_generator", no_work)
    res = cli("--network", snaps["basic"], "--mix-rows", "0-999999", "--mix-cols", "0-999999", "--outdir", tmp_path / "o")
    one_error(res, "--mix-rows x --mix-cols: 1000000 x 1000000 cells, more than 1000000 clips")
    res = cli("--network", snaps["basic"], "--projected-w", tmp_path / "w.npz", "--variations", "2000000",
              "--outdir", tmp_path / "o")
    one_error(res, "--variations 2000000: more than 1000000 clips")
    res = cli("--network", snaps["basic"], "--walk", "0-9999", "--walk-steps", "3", "--outdir", tmp_path / "o")
    one_error(res, "more than 10000 clips in one piece")


def test_a_grid_image_too_large_is_refused_before_rendering(snaps, tmp_path, monkeypatch):
    monkeypatch.setattr(gen, "synthesize", no_work)
    res = cli("--network", snaps["basic"], "--mix-rows", "0-599", "--mix-cols", "0-599", "--outdir", tmp_path / "o")
    one_error(res, "600 x 600 cells of 32 px make a grid image of 369,869,824 pixels, more than 268,435,456")
    assert not (tmp_path / "o").exists()


# --- 16: --variations and grids hold --batch clips at a time ------------------------------------------------

def test_variations_and_grids_decode_batch_clips_at_a_time(snaps, tmp_path, monkeypatch):
    sizes = []
    real = gen.decode_images

    def spy(images, *a, **k):
        sizes.append(int(images.shape[0]))
        return real(images, *a, **k)

    monkeypatch.setattr(gen, "decode_images", spy)
    G = snapshot.build_networks(snapshot.load_snapshot(snaps["bars"]), names=["G_ema"])["G_ema"]
    proj = tmp_path / "me.npz"
    with torch.no_grad():
        w = G.mapping(torch.randn(1, 16), torch.zeros(1, 0))
    np.savez(proj, w=w.numpy())
    res = cli("--network", snaps["bars"], "--projected-w", proj, "--variations", "5", "--batch", "2",
              "--outdir", tmp_path / "v")
    assert res.exit_code == 0, res.output
    assert sizes == [2, 2, 1] and len(list((tmp_path / "v").glob("*var0[0-4]*.wav"))) == 5
    sizes.clear()
    res = cli("--network", snaps["basic"], "--mix-rows", "1,2", "--mix-cols", "3,4", "--batch", "3",
              "--outdir", tmp_path / "m")
    assert res.exit_code == 0, res.output
    assert sizes == [3, 3, 2]          # 2 rows + 2 columns + 4 cells = 8 clips


def test_batched_variations_equal_one_at_a_time(snaps, tmp_path):
    G = snapshot.build_networks(snapshot.load_snapshot(snaps["bars"]), names=["G_ema"])["G_ema"]
    w = torch.randn(G.num_ws, G.w_dim)
    whole = latents.variations(G, w, 5, 0.5, "cpu")
    parts = torch.cat([latents.variations(G, w, 2, 0.5, "cpu", start=0), latents.variations(G, w, 3, 0.5, "cpu", start=2)])
    assert torch.equal(whole, parts)


# --- 22: repeated mixing seeds ------------------------------------------------------------------------------

def test_repeated_mix_seeds_report_the_files_really_written(snaps, tmp_path):
    res = cli("--network", snaps["basic"], "--mix-rows", "1,1", "--mix-cols", "2", "--outdir", tmp_path / "o")
    assert res.exit_code == 0, res.output
    wavs = sorted(p.name for p in (tmp_path / "o").glob("*.wav"))
    assert len(wavs) == 3 and "wrote 3 audio file(s)" in res.output, (wavs, res.output)


# --- 23: --spread ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("spread", ["1e30", "10.5", "inf"])
def test_spread_is_bounded(snaps, tmp_path, spread):
    res = cli("--network", snaps["bars"], "--projected-w", tmp_path / "w.npz", "--variations", "2", "--spread", spread,
              "--outdir", tmp_path / "o")
    one_error(res, "--spread must be a number in 0..10")


# --- 17: project_audio.py checks --outdir before the search --------------------------------------------------

def test_projection_checks_outdir_before_any_work(snaps, tmp_path, monkeypatch):
    from audio_ext.generation import audio_projection as projection
    monkeypatch.setattr(projection, "load_generator", no_work)
    target = tmp_path / "t.wav"
    target.write_bytes(b"RIFF")
    outdir = tmp_path / "out"
    outdir.write_text("a file")
    with pytest.raises(projection.ProjectionError, match=f"--outdir {outdir}: exists and is not a folder"):
        projection.run_projection(projection.ProjectOptions(network=str(snaps["basic"]), target=str(target),
                                                            outdir=str(outdir), steps=1), log=lambda m: None)
    with pytest.raises(projection.ProjectionError, match=r"cannot be created \(.*out is a file\)"):
        projection.run_projection(projection.ProjectOptions(network=str(snaps["basic"]), target=str(target),
                                                            outdir=str(outdir / "sub"), steps=1), log=lambda m: None)
