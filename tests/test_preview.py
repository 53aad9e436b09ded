"""Hearing training: the loop's snapshot hook, audio_ext.generation.preview.AudioPreview, TensorBoard audio/images.

Tiny runs (16 x 16, tiny preset, a few iterations) on a toy archive with an audio block.
"""
import io

import numpy as np
import PIL.Image
import pytest
import soundfile as sf
import torch
from archive_helpers import toy_audio_block, write_toy_archive

from audio_ext.decoder import methods
from audio_ext.generation.preview import AudioPreview
from stylegan2 import training_loop as tl
from stylegan2.presets import resolve_config
from stylegan2.snapshot import load_snapshot

RES = 16
AUDIO = toy_audio_block(RES)
CLIP = RES * RES  # samples per clip (hop = R)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_toy_archive(tmp_path_factory.mktemp("data") / "stft.zip", RES, 8, {"audio": AUDIO})


def run(archive, run_dir, hook):
    opts = resolve_config("tiny", RES, 1, batch=4, batch_gpu=4, tick=0.004, snap=1, kimg=0.008, workers=0,
                          grid_limit=8)
    return tl.training_loop(0, run_dir=str(run_dir), data=str(archive), progress=False, snapshot_hook=hook, **opts)


def test_preview_writes_wavs_and_does_not_change_training(archive, tmp_path):
    with_hook = run(archive, tmp_path / "a", AudioPreview(AUDIO, clips=3, gap_s=0.01))
    without = run(archive, tmp_path / "b", None)
    gap = int(round(0.01 * 44100))
    wavs = sorted(p.name for p in (tmp_path / "a").glob("fakes*.wav"))
    pngs = sorted(p.name[:-4] + ".wav" for p in (tmp_path / "a").glob("fakes*.png"))
    assert wavs == pngs and "fakes_init.wav" in wavs and len(wavs) == 3   # init + 2 snapshots
    audio, sr = sf.read(tmp_path / "a" / "fakes_init.wav")
    assert sr == 44100 and audio.shape == (3 * CLIP + 2 * gap,)
    assert np.abs(audio[:CLIP]).max() > 0 and not np.any(audio[CLIP:CLIP + gap])  # clip, then the silence
    assert not list((tmp_path / "b").glob("*.wav"))
    # The hook runs outside the training's random state: both runs end bit-identical.
    a, b = load_snapshot(with_hook["snapshot"]), load_snapshot(without["snapshot"])
    for k, v in a["G_ema"]["state_dict"].items():
        assert torch.equal(v, b["G_ema"]["state_dict"][k]), k


def test_failing_hook_only_warns(archive, tmp_path, capsys):
    def broken(preview):
        raise RuntimeError("no speakers")
    result = run(archive, tmp_path / "c", broken)
    assert result["cur_nimg"] == 8
    assert "Warning: snapshot hook failed for fakes_init: RuntimeError: no speakers" in capsys.readouterr().out


def test_preview_decodes_what_the_hook_is_given():
    images = torch.rand(5, 1, RES, RES) * 2 - 1
    preview = AudioPreview(AUDIO, clips=2)
    pass
    expect = np.stack([methods.decode_audio(images[i:i + 1, 0], AUDIO, generator=[torch.Generator().manual_seed(i)])[0]
                       for i in range(2)])
    np.testing.assert_allclose(preview.decode(images), expect, rtol=1e-4, atol=1e-4)  # batched FFT rounding
    with pytest.raises(ValueError, match="clips must be >= 1"):
        AudioPreview(AUDIO, clips=0)
    with pytest.raises(ValueError):
        AudioPreview(dict(AUDIO, std=-1.0))


def test_tensorboard_events_hold_audio_and_grids(archive, tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard is not installed: the loop writes no event files "
                                              "(pip install tensorboard to run this test)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run(archive, tmp_path / "tb", AudioPreview(AUDIO, clips=2))
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"audio": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"fakes/audio/0", "fakes/audio/1"} <= set(tags["audio"])
    assert {"fakes", "reals"} <= set(tags["images"])
    clips = events.Audio("fakes/audio/0")
    assert [c.step for c in clips] == [0, 4, 8]          # init, then the two snapshots (images shown)
    assert all(c.sample_rate == 44100 for c in clips)
    decoded, sr = sf.read(io.BytesIO(clips[-1].encoded_audio_string))
    assert sr == 44100 and decoded.shape[0] == CLIP
    grid = events.Images("fakes")[0]
    with PIL.Image.open(io.BytesIO(grid.encoded_image_string)) as im:
        assert im.size == (4 * RES, 2 * RES)              # 8 images: 4 x 2, near-square


def test_train_cli_hands_the_loop_an_audio_preview(archive, tmp_path):
    from click.testing import CliRunner

    import train
    args = ["--outdir", str(tmp_path), "--data", str(archive), "--cfg", "tiny", "--kimg", "0.004", "--batch", "4",
            "--batch-gpu", "4", "--tick", "0.004", "--snap", "1", "--no-progress"]
    res = CliRunner().invoke(train.main, args + ["--preview-clips", "2"])
    assert res.exit_code == 0, res.output
    (run_dir,) = tmp_path.iterdir()
    audio, sr = sf.read(run_dir / "fakes000000.wav")
    assert sr == 44100 and audio.shape == (2 * CLIP + int(round(0.25 * 44100)),)
    res = CliRunner().invoke(train.main, args + ["--preview-clips", "0"])
    assert res.exit_code == 0, res.output
    (second,) = [p for p in tmp_path.iterdir() if p != run_dir]
    assert (second / "fakes000000.png").is_file() and not list(second.glob("*.wav"))
