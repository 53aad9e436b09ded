"""The demo's first stage: a shipped network's bar loops and walk (audio_ext/generation/showcase.py), and
the clear skip while no network is shipped."""
import numpy as np
import soundfile as sf
import torch

import demo
from audio_ext.core.geometry import StftGeometry
from audio_ext.generation import loops, pretrained, showcase
from stylegan2 import networks, snapshot


def export_stand_in(tmp_path, monkeypatch):
    """A random 64 x 64 network at 2218 Hz (one 1.85 s clip = one bar at 130 BPM), shipped as 'electro128'."""
    torch.manual_seed(0)
    G = networks.Generator(z_dim=8, w_dim=8, img_resolution=64, img_channels=1, mapping_kwargs=dict(num_layers=1),
                           channel_base=256, channel_max=8)
    block = StftGeometry(64, sample_rate=2218).audio_block(mean=-6.0, std=3.0, target_bpm=130.0)
    snap = tmp_path / "snap.pkl"
    snapshot.save_snapshot(snap, {"G_ema": snapshot.network_record(G), "audio": block, "cur_nimg": 0})
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "shipped")
    pretrained.export_pretrained(snap, "electro128", notes="a random stand-in, not trained")


def test_bar_unit_is_a_seamless_loop_and_repeats_to_whole_bars():
    sr, bpm = 2218, 130.0
    bar = loops.bars_to_samples(1, sr, bpm)
    clip = np.sin(2 * np.pi * 55 * np.arange(bar - 1) / sr).astype(np.float32)   # a bar minus one sample
    unit = showcase.bar_unit(clip, sr, bpm)
    fade = int(round(showcase.CROSSFADE_S * sr))
    assert len(unit) == len(clip) - fade
    np.testing.assert_array_equal(unit[fade:], clip[fade:len(unit)])          # untouched after the crossfade
    eight = showcase.repeat_to_bars(unit, sr, bpm, 8)
    assert len(eight) == loops.bars_to_samples(8, sr, bpm)
    np.testing.assert_array_equal(eight[len(unit):2 * len(unit)], unit)
    jump = np.abs(np.diff(np.concatenate([unit, unit[:1]]))).max()              # the wrap is no larger a step
    assert jump <= np.abs(np.diff(clip)).max() * 1.5                             # than the signal's own steps


def test_showcase_writes_loops_and_walks_at_two_tempi(tmp_path, monkeypatch):
    export_stand_in(tmp_path, monkeypatch)
    entries = showcase.render_showcase("pretrained:electro128", tmp_path / "out", seeds=[0, 1, 2], bars=4,
                                       walk_bars=5, other_bpm=120.0, log=lambda m: None)
    names = sorted(e.audio for e in entries)
    assert names == sorted([f"seed{s:04d}-loop4bar-{t}bpm.wav" for s in (0, 1, 2) for t in (130, 120)]
                           + ["walk-5bar-130bpm.wav", "walk-5bar-120bpm.wav"])
    loop, sr = sf.read(tmp_path / "out" / "seed0001-loop4bar-130bpm.wav")
    assert sr == 2218 and len(loop) == loops.bars_to_samples(4, sr, 130.0)
    walk, _ = sf.read(tmp_path / "out" / "walk-5bar-130bpm.wav")
    assert len(walk) == loops.bars_to_samples(5, sr, 130.0)
    slow, _ = sf.read(tmp_path / "out" / "seed0001-loop4bar-120bpm.wav")
    assert abs(len(slow) / len(loop) - 130 / 120) < 0.01


def test_demo_stage_plays_the_shipped_network_or_says_why_not(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "none")
    assert demo.shipped(tmp_path / "demo", "electro128", 120.0) is None
    assert "skipped: pretrained:electro128: unknown shipped network" in capsys.readouterr().out
    export_stand_in(tmp_path, monkeypatch)
    page = demo.shipped(tmp_path / "demo", "electro128", 120.0)
    assert page is not None and page.name == "index.html"
    html = page.read_text()
    assert html.count("loop8bar") >= 16 and "walk-16bar-130bpm.wav" in html
