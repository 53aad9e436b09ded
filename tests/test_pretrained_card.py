"""benchmarks/pretrained_card.py: its grid and loop helpers against hand-made cases, and the whole card on a
tiny stand-in network (small counts, a toy detector) written to a scratch markdown file."""
import numpy as np
import pytest
import torch
from archive_helpers import write_encoded_archive
from click.testing import CliRunner

from audio_ext.core.geometry import StftGeometry
from audio_ext.core.synth import techno_loop
from audio_ext.generation import loops, pretrained
from benchmarks import pretrained_card as card
from stylegan2 import networks, snapshot
from stylegan2.metrics.toy_detector import write_toy_detector


def impulse_images(frames, resolution=64, n=3):
    """uint8 images whose every bin jumps from 0 to 255 at the given frames and falls back after one frame."""
    x = np.zeros((n, resolution, resolution), np.uint8)
    for f in frames:
        x[:, :, f] = 255
    return x


def test_grid_share_counts_onsets_near_step_boundaries():
    on_grid = impulse_images([8, 16, 24, 32, 40])
    assert card.grid_share(on_grid, 8.0) == pytest.approx(1.0)
    off_grid = impulse_images([4, 12, 20, 28, 36])
    assert card.grid_share(off_grid, 8.0) == pytest.approx(0.0)
    mixed = impulse_images([8, 12])          # one hit on the grid, one off it: half the flux
    assert card.grid_share(mixed, 8.0) == pytest.approx(0.5)
    steps = card.mean_steps(on_grid, 8.0)
    assert steps.sum() == pytest.approx(1.0) and len(steps) == 7


def test_bar_loop_repeats_a_one_bar_clip_and_loops_a_longer_one():
    from audio_ext.generation.showcase import bar_unit
    sr, bpm = 2000, 120.0
    bar = loops.bars_to_samples(1, sr, bpm)
    clip = np.sin(np.arange(bar - 1) * 0.01).astype(np.float32)        # a bar minus one sample: repeated
    out = card.bar_loop(clip, sr, bpm, 4)
    unit = bar_unit(clip, sr, bpm)
    assert len(out) == loops.bars_to_samples(4, sr, bpm)
    np.testing.assert_array_equal(out[: len(unit)], unit)
    np.testing.assert_array_equal(out[len(unit): 2 * len(unit)], unit)
    long = np.random.default_rng(0).standard_normal(5 * bar).astype(np.float32)
    np.testing.assert_array_equal(card.bar_loop(long, sr, bpm, 4), loops.loop_clip(long, sr, bpm, 4, 0.02))


def test_card_runs_on_a_tiny_stand_in(tmp_path, monkeypatch):
    geom = StftGeometry(64, sample_rate=2218)          # 4096 samples: one bar at 130 BPM
    clips = np.stack([techno_loop(130, 2.0, sr=2218, seed=s, offset=0.0)[: geom.clip_samples] for s in range(12)])
    block = write_encoded_archive(tmp_path / "stft.zip", clips, geom, target_bpm=130)[0]
    torch.manual_seed(0)
    G = networks.Generator(z_dim=8, w_dim=8, img_resolution=64, img_channels=1, mapping_kwargs=dict(num_layers=1),
                           channel_base=256, channel_max=8)
    snap = tmp_path / "network-snapshot-000000.pkl"
    snapshot.save_snapshot(snap, {"G_ema": snapshot.network_record(G), "audio": block, "cur_nimg": 0})
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "shipped")
    pretrained.export_pretrained(snap, "standin", notes="not trained")
    doc = tmp_path / "bench.md"
    doc.write_text("# Benchmarks\n\nother text\n")
    r = CliRunner().invoke(card.main, ["--network", "pretrained:standin", "--data", str(tmp_path / "stft.zip"),
                                       "--num", "6", "--fid-num", "6", "--seeds", "2", "--bars", "2",
                                       "--detector", write_toy_detector(tmp_path / "toy.pt"), "--doc", str(doc)])
    assert r.exit_code == 0, r.output
    text = doc.read_text()
    assert "other text" in text and "<!-- begin pretrained_card -->" in text and "Targets (issue 19)" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    names = [row.split("|")[1].strip() for row in rows]
    assert {"reals A (reference)", "reals B (floor)", "trained (0 kimg)", "untrained control"} <= set(names)
    floor = next(row for row in rows if row.startswith("| reals B (floor)")).split("|")
    assert float(floor[4]) > 0 and float(floor[5]) == pytest.approx(1.0)     # the floor's SFD / floor is 1


def test_grid_share_tolerates_a_step_a_hair_longer_than_eight_frames():
    per_step = 60 / 130 / 4 * 8875 / 128          # electro128: 8.0003 frames per 16th note
    early = impulse_images([7, 15, 23, 31])       # every hit one frame before the boundary
    assert card.grid_share(early, per_step) == pytest.approx(1.0)
    assert card.grid_share(impulse_images([3, 11, 19]), per_step) == pytest.approx(0.0)
