"""gen_audio.py beyond seeds (issue 10): projected latents, walks mixing seeds and projections, slerp in
Z, variations, style mixing grids and --bpm.

Tiny randomly initialised generators; the references are computed here by hand with G.mapping and
G.synthesis, independently of audio_ext.generation.generate.
"""
import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from PIL import Image
from snapshot_helpers import tiny_audio_snapshot, tiny_generator

import gen_audio
from audio_ext.core.synth import techno_loop
from audio_ext.generation import latents, loops, mixing, retempo
from audio_ext.generation.metrics import detect_tempo
from audio_ext.generation.synthesis import image_to_png_array
from stylegan2 import networks, snapshot


def make_snapshot(path, resolution, sample_rate, bpm, seed=0):
    G = tiny_generator(resolution, seed=seed)
    G.mapping.w_avg.copy_(torch.randn(16) * 0.1)   # a non-zero tracked mean, as a trained network has
    return tiny_audio_snapshot(path, resolution, G=G, sample_rate=sample_rate, target_bpm=bpm, cur_nimg=0)


@pytest.fixture(scope="module")
def snaps(tmp_path_factory):
    root = tmp_path_factory.mktemp("snaps")
    return {"basic": make_snapshot(root / "basic.pkl", 32, 44100, 130.0),
            # 64 x 64 at 2048 Hz: 2 s clips at 240 BPM = 2 bars of 1 s, room for loops and walks
            "bars": make_snapshot(root / "bars.pkl", 64, 2048, 240.0, seed=1)}


def load_G(path):
    return snapshot.build_networks(snapshot.load_snapshot(path), names=["G_ema"])["G_ema"]


def w_of(G, seed):
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim).astype(np.float32))
    with torch.no_grad():
        return G.mapping(z, torch.zeros(1, 0))[0]


def png_of(G, ws):
    with torch.no_grad():
        img = G.synthesis(ws[None], noise_mode="const", force_fp32=True)[0, 0].clamp(-1, 1)
    return image_to_png_array(img.numpy())


def cli(*args):
    return CliRunner().invoke(gen_audio.main, [str(a) for a in args], catch_exceptions=False)


# ---------------------------------------------------------------------------------------- walks

def test_slerp_endpoints_and_norm():
    rng = np.random.RandomState(0)
    a, b = (torch.from_numpy(rng.randn(64).astype(np.float32)) for _ in range(2))
    assert torch.equal(latents.slerp(a, b, 0.0), a) and torch.equal(latents.slerp(a, b, 1.0), b)
    omega = np.arccos(np.dot(a.numpy(), b.numpy()) / np.linalg.norm(a.numpy()) / np.linalg.norm(b.numpy()))
    t = 0.3
    expect = (np.sin((1 - t) * omega) * a.numpy().astype(np.float64) + np.sin(t * omega) * b.numpy()) / np.sin(omega)
    np.testing.assert_allclose(latents.slerp(a, b, t).numpy(), expect, rtol=1e-5)
    # Orthogonal unit vectors: the slerp midpoint stays on the sphere, the straight line does not.
    x, y = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert float(latents.slerp(x, y, 0.5).norm()) == pytest.approx(1.0)
    assert float(torch.lerp(x, y, 0.5).norm()) == pytest.approx(2 ** -0.5)


def test_walk_path_in_z_ends_on_the_seeds(snaps):
    G = load_G(snaps["basic"])
    c = torch.zeros(1, 0)
    path = latents.walk_path(G, [3, 8], c, 1.0, 1, "z", "cpu")
    assert path.shape == (3, G.num_ws, G.w_dim)
    assert torch.equal(path[0], w_of(G, 3)) and torch.equal(path[-1], w_of(G, 8))   # slerp endpoints = the seeds
    z3, z8 = latents.seed_z(3, 16), latents.seed_z(8, 16)
    with torch.no_grad():
        mid = G.mapping(latents.slerp(z3, z8, 0.5)[None], c)[0]
    torch.testing.assert_close(path[1], mid)
    w_path = latents.walk_path(G, [3, 8], c, 1.0, 1, "w", "cpu")
    torch.testing.assert_close(w_path[1], torch.lerp(w_of(G, 3), w_of(G, 8), 0.5))
    assert not torch.allclose(path[1], w_path[1])


def test_parse_walk():
    P = latents.Projected
    assert latents.parse_walk("proj:a/projected_w.npz,5,9-11") == [P("a/projected_w.npz"), 5, 9, 10, 11]
    assert latents.parse_walk(" 1 , proj: x.npz ") == [1, P("x.npz")]
    for bad, msg in (("", "empty"), ("1,,2", "empty item"), ("proj:", "needs a file"), ("3-1", "backwards"),
                     ("x", "not a non-negative integer")):
        with pytest.raises(latents.SeedSyntaxError, match=msg):
            latents.parse_walk(bad)
    assert latents.walk_label([P("me/projected_w.npz"), 5]) == "walk-proj_me-5"


# ------------------------------------------------------------------------------ projected latents

@pytest.fixture
def projected(snaps, tmp_path):
    """A projected_w.npz holding seed 4's w, in the [1, num_ws, w_dim] layout project_audio.py writes."""
    G = load_G(snaps["bars"])
    path = tmp_path / "me" / "projected_w.npz"
    path.parent.mkdir()
    np.savez(path, w=w_of(G, 4).numpy()[None], w_plus=np.array(False))
    return path


def test_projected_w_renders_the_latent(snaps, projected, tmp_path):
    out = tmp_path / "out"
    res = cli("--network", snaps["bars"], "--projected-w", projected, "--seeds", "4", "--outdir", out)
    assert res.exit_code == 0, res.output
    G = load_G(snaps["bars"])
    mine = np.asarray(Image.open(out / "proj-me.png"))
    np.testing.assert_array_equal(mine, png_of(G, w_of(G, 4)))
    np.testing.assert_array_equal(mine, np.asarray(Image.open(out / "seed0004.png")))   # the same point as seed 4
    assert (out / "proj-me-240bpm.wav").is_file()


def test_variations_around_a_projection(snaps, projected, tmp_path):
    G = load_G(snaps["bars"])
    res = cli("--network", snaps["bars"], "--projected-w", projected, "--variations", "3", "--spread", "0.5",
              "--batch", "1", "--outdir", tmp_path / "v")   # one w per pass: bit-equal to the reference
    assert res.exit_code == 0, res.output
    for k in range(3):
        with torch.no_grad():
            w_k = w_of(G, 4) + 0.5 * (w_of(G, k) - G.mapping.w_avg[None])
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "v" / f"proj-me-var{k:02d}.png")), png_of(G, w_k))
    res = cli("--network", snaps["bars"], "--projected-w", projected, "--variations", "2", "--spread", "0",
              "--outdir", tmp_path / "v0")
    for k in range(2):   # spread 0: every variation is the projection itself
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "v0" / f"proj-me-var{k:02d}.png")),
                                      png_of(G, w_of(G, 4)))


def test_walk_from_a_projection_to_a_seed(snaps, projected, tmp_path):
    out = tmp_path / "walk"
    res = cli("--network", snaps["bars"], "--walk", f"proj:{projected},5", "--walk-steps", "1", "--bars", "1",
              "--loop", "1", "--crossfade", "0", "--outdir", out)
    assert res.exit_code == 0, res.output
    piece, sr = sf.read(out / "walk-proj_me-5-240bpm.wav")
    assert sr == 2048 and piece.shape == (3 * loops.bars_to_samples(1, 2048, 240.0),)   # 3 clips x 1 bar
    G = load_G(snaps["bars"])
    strip = np.asarray(Image.open(out / "walk-proj_me-5.png"))
    frames = 2048 // 64   # one bar (1 s) of 64-sample hops: 32 frames
    np.testing.assert_array_equal(strip[:, :frames], png_of(G, w_of(G, 4))[:, :frames])
    np.testing.assert_array_equal(strip[:, -frames:], png_of(G, w_of(G, 5))[:, :frames])


def test_projected_w_errors(snaps, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, w=np.zeros((1, 3, 16), np.float32))
    res = CliRunner().invoke(gen_audio.main, ["--network", str(snaps["bars"]), "--projected-w", str(bad),
                                              "--outdir", str(tmp_path / "o")])
    assert res.exit_code != 0 and "bad.npz: w has shape [3, 16], this network needs [10, 16]" in res.output
    res = CliRunner().invoke(gen_audio.main, ["--network", str(snaps["bars"]), "--projected-w",
                                              str(tmp_path / "none.npz"), "--outdir", str(tmp_path / "o")])
    assert res.exit_code != 0 and "none.npz: no such file" in res.output
    res = CliRunner().invoke(gen_audio.main, ["--network", str(snaps["bars"]), "--seeds", "1", "--variations", "2",
                                              "--outdir", str(tmp_path / "o")])
    assert res.exit_code != 0 and "--variations N needs" in res.output
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------- style mixing

def test_mixed_cell_equals_a_hand_built_w_mix(snaps, tmp_path):
    out = tmp_path / "mix"
    res = cli("--network", snaps["basic"], "--mix-rows", "1,2", "--mix-cols", "3,4,5", "--mix-styles", "0-2",
              "--batch", "1", "--outdir", out)   # one w per pass: bit-equal to the hand-built reference
    assert res.exit_code == 0, res.output
    G = load_G(snaps["basic"])
    cells = {}
    for r in (1, 2):
        for c in (3, 4, 5):
            w = w_of(G, r).clone()
            w[0:3] = w_of(G, c)[0:3]          # the column seed's w in layers 0-2, the row seed's elsewhere
            cells[r, c] = png_of(G, w)
            np.testing.assert_array_equal(np.asarray(Image.open(out / f"mix-r{r}-c{c}.png")), cells[r, c])
            assert (out / f"mix-r{r}-c{c}-130bpm.wav").is_file()
    assert not np.array_equal(cells[1, 3], cells[1, 4])
    grid = np.asarray(Image.open(out / "mix-grid.png"))
    assert grid.shape == (3 * 32, 4 * 32)
    np.testing.assert_array_equal(grid[32:64, 64:96], cells[1, 4])            # row 1, column 2 = seeds 1 and 4
    np.testing.assert_array_equal(grid[0:32, 32:64], png_of(G, w_of(G, 3)))   # column header: seed 3
    np.testing.assert_array_equal(grid[64:96, 0:32], png_of(G, w_of(G, 2)))   # row header: seed 2
    page = (out / "index.html").read_text()
    assert '<table class="grid">' in page and page.count("<audio") == 2 + 3 + 6
    assert 'src="mix-r2-c5-130bpm.wav"' in page and 'src="mix-r2-c5.png"' in page


def test_mix_helpers_and_errors(snaps, tmp_path):
    assert mixing.parse_layers("0-2,5,1", 8) == [0, 1, 2, 5]
    with pytest.raises(ValueError, match="layer 8 does not exist; this network has layers 0-7"):
        mixing.parse_layers("0-9", 8)
    row, col = torch.zeros(4, 2), torch.ones(4, 2)
    assert mixing.mix_ws(row, col, [1, 3])[:, 0].tolist() == [0, 1, 0, 1]
    res = CliRunner().invoke(gen_audio.main, ["--network", str(snaps["basic"]), "--mix-rows", "1",
                                              "--outdir", str(tmp_path / "o")])
    assert res.exit_code != 0 and "needs both --mix-rows and --mix-cols" in res.output
    res = CliRunner().invoke(gen_audio.main, ["--network", str(snaps["basic"]), "--mix-rows", "1", "--mix-cols", "2",
                                              "--mix-styles", "0-40", "--outdir", str(tmp_path / "o")])
    assert res.exit_code != 0 and "--mix-styles '0-40': layer" in res.output


# ------------------------------------------------------------------------------------------ tempo

@pytest.mark.parametrize("bpm", [120.0, 142.0])
def test_change_tempo_gives_the_stated_length_and_detected_tempo(bpm):
    sr = 22050
    x = techno_loop(130.0, 12.0, sr=sr, seed=2)
    y = retempo.change_tempo(x, sr, 130.0, bpm)
    assert y.shape == (round(x.size * 130.0 / bpm),) and y.dtype == np.float32
    assert detect_tempo(x, sr) == pytest.approx(130.0, abs=1.0)
    assert detect_tempo(y, sr) == pytest.approx(bpm, abs=1.0)     # the project's tempo detector


def test_bpm_flag_names_tags_and_cuts_whole_bars_at_the_new_tempo(snaps, tmp_path):
    out = tmp_path / "bpm"
    res = cli("--network", snaps["bars"], "--seeds", "1", "--loop", "1", "--bpm", "200", "--outdir", out)
    assert res.exit_code == 0, res.output
    audio, sr = sf.read(out / "seed0001-loop1bar-200bpm.wav")
    assert audio.shape == (loops.bars_to_samples(1, 2048, 200.0),)          # one bar at 200 BPM: 2458 samples
    assert "bpm=200" in sf.info(str(out / "seed0001-loop1bar-200bpm.wav")).extra_info or \
        "bpm=200" in (sf.SoundFile(str(out / "seed0001-loop1bar-200bpm.wav")).comment or "")
    res = cli("--network", snaps["bars"], "--seeds", "2", "--bpm", "180", "--outdir", tmp_path / "plain")
    audio, _ = sf.read(tmp_path / "plain" / "seed0002-180bpm.wav")
    assert audio.shape == (round(64 * 64 * 240 / 180),)                    # the whole clip, stretched
    res = CliRunner().invoke(gen_audio.main, ["--network", str(snaps["bars"]), "--seeds", "1", "--bpm", "1000",
                                              "--outdir", str(tmp_path / "o")])
    assert res.exit_code != 0 and "--bpm must be a tempo between" in res.output
    # 2 s at 240 BPM stretched to 120 BPM is 4 s: one bar of 2 s with room for the crossfade; 3 bars are
    # that bar's seamless loop three times, on the 120 BPM grid.
    res = CliRunner().invoke(gen_audio.main, ["--network", str(snaps["bars"]), "--seeds", "1", "--bpm", "120",
                                              "--loop", "3", "--outdir", str(tmp_path / "o")])
    assert res.exit_code == 0 and "--loop 3: clip holds 1 bar; looped 3x to 3 bars" in res.output
    audio, _ = sf.read(tmp_path / "o" / "seed0001-loop3bar-120bpm.wav")
    assert audio.shape == (loops.bars_to_samples(3, 2048, 120.0),)
    # 2 s at 240 BPM stretched to 300 BPM is 1.6 s: one bar of 0.8 s and a 0.9 s crossfade do not fit; the
    # one-line refusal names the geometry.
    res = CliRunner().invoke(gen_audio.main, ["--network", str(snaps["bars"]), "--seeds", "1", "--bpm", "300",
                                              "--loop", "1", "--crossfade", "0.9", "--outdir", str(tmp_path / "p")])
    assert res.exit_code != 0 and "(64 frames of hop 64 at 2048 Hz) at 300 BPM holds at most 0 whole bars" in res.output


@pytest.mark.parametrize("resolution", [32, 64, 128, 1024])
def test_layer_groups_cover_every_w_once(resolution):
    from benchmarks.layer_control import layer_groups
    G = networks.Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=resolution, img_channels=1,
                           mapping_kwargs=dict(num_layers=1), channel_base=4 * resolution, channel_max=4)
    groups = layer_groups(resolution)
    flat = [i for layers in groups.values() for i in layers]
    assert sorted(flat) == list(range(G.num_ws))
    assert groups["coarse (4-8)"] == [0, 1, 2] and groups["middle (16-32)"][0] == 3
