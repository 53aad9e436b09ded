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
    sr, bpm = 2000, 120.0
    bar = loops.bars_to_samples(1, sr, bpm)
    clip = np.sin(np.arange(bar + 50) * 0.01).astype(np.float32)       # a bar + 25 ms: its one-bar loop, repeated
    out = card.bar_loop(clip, sr, bpm, 4)
    unit = loops.loop_clip(clip, sr, bpm, 1, 0.02)
    assert len(out) == loops.bars_to_samples(4, sr, bpm)
    np.testing.assert_array_equal(out, np.tile(unit, 4))
    long = np.random.default_rng(0).standard_normal(5 * bar).astype(np.float32)
    np.testing.assert_array_equal(card.bar_loop(long, sr, bpm, 4), loops.loop_clip(long, sr, bpm, 4, 0.02))


def test_card_runs_on_a_tiny_stand_in(tmp_path, monkeypatch):
    geom = StftGeometry(64, sample_rate=2193)          # 4096 samples: one bar at 130 BPM + 21 ms
    clips = np.stack([techno_loop(130, 2.0, sr=2193, seed=s, offset=0.0)[: geom.clip_samples] for s in range(12)])
    sources = [f"track{s % 3}.flac" for s in range(12)]
    block = write_encoded_archive(tmp_path / "stft.zip", clips, geom, target_bpm=130, sources=sources)[0]
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
    # The held-out-track floor: 3 tracks, the default 5 seeded splits and their mean.
    assert "Floor by held-out tracks" in text and "the 3 tracks are dealt" in text
    split_rows = [row.split("|") for row in rows if row.split("|")[1].strip() in {"0", "1", "2", "3", "4", "mean"}]
    assert len(split_rows) == 6
    mean = split_rows[-1]
    floors, ours = [float(r[3]) for r in split_rows[:-1]], [float(r[4]) for r in split_rows[:-1]]
    assert float(mean[3]) == pytest.approx(np.mean(floors), rel=1e-3)
    fid_b = [float(r[9]) for r in split_rows[:-1]]               # FID columns (toy detector, 6 clips a half)
    assert all(f >= 0 for f in fid_b) and float(mean[9]) == pytest.approx(np.mean(fid_b), rel=1e-3)
    clips = min(int(r[2]) for r in split_rows[:-1])              # the smallest half (3 tracks of 4 clips)
    assert f"FID: the first {clips} clips of each half, and the first {clips} of the fakes above." in text
    assert float(mean[5]) == pytest.approx(np.mean(ours) / np.mean(floors), rel=1e-2)
    target = next(row for row in rows if row.startswith("| SFD vs floor of halves from different tracks"))
    per_split = [float(r[5]) for r in split_rows[:-1]]
    assert float(target.split("|")[3]) == pytest.approx(np.median(per_split), rel=1e-2)
    assert next(row for row in rows if row.startswith("| SFD vs floor of clip-random")).split("|")[4].strip() == "–"


def test_track_splits_share_no_track_and_balance_the_clips():
    sources = ["a"] * 40 + ["b"] * 10 + ["c"] * 25 + ["d"] * 30 + ["e"] * 15
    splits = card.track_splits(sources, 1000, seed=0, splits=4)
    assert len(splits) == 4
    for a, b in splits:
        tracks_a, tracks_b = {sources[i] for i in a}, {sources[i] for i in b}
        assert not tracks_a & tracks_b and tracks_a | tracks_b <= set("abcde")
        assert len(a) == len(b) == len(set(a)) and len(a) >= 40          # min of the halves' clips, all distinct
    assert len({tuple(sorted({sources[i] for i in a})) for a, _ in splits}) > 1     # the splits differ
    again = card.track_splits(sources, 1000, seed=0, splits=4)
    assert all((x == y).all() and (u == v).all() for (x, u), (y, v) in zip(splits, again))   # seeded
    assert [len(a) for a, _ in card.track_splits(sources, 20, seed=0, splits=2)] == [20, 20]
    assert card.track_splits(["only"] * 9, 10, seed=0, splits=3) == []


def test_heldout_floor_is_the_distance_between_the_halves():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((40, 3))
    feats[20:, 0] += 2.0                                   # half B is shifted on feature 0
    feats[:, 2] = np.abs(feats[:, 2]) + 1.0                # the onset column, positive
    a, b = np.arange(20), np.arange(20, 40)
    copy_of_a = feats[a] + 1e-9
    rows = card.heldout_floor(feats, [(a, b)], {"copy": copy_of_a, "b": feats[b]}, onset_col=2)
    split, n, floor, sfd, onset_b, onset = rows[0]
    assert (split, n) == (0, 20)
    assert sfd["b"] == pytest.approx(floor) and floor > 1.0       # B against A is the floor
    assert sfd["copy"] == pytest.approx(0.0, abs=1e-6)            # A's own features: no distance
    assert onset["copy"] == pytest.approx(1.0) and onset_b == pytest.approx(feats[b, 2].mean() / feats[a, 2].mean())


def test_grid_share_tolerates_a_step_that_is_not_a_whole_number_of_frames():
    per_step = 60 / 130 / 4 * 8775 / 128          # electro128: 7.91 frames per 16th note
    early = impulse_images([7, 15, 23, 31])       # every hit less than a frame before the boundary
    assert card.grid_share(early, per_step) == pytest.approx(1.0)
    assert card.grid_share(impulse_images([3, 11, 19]), per_step) == pytest.approx(0.0)
