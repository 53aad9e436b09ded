"""Test helpers: tiny stft.zip archives (encoded clips, or toy spectrograms for training-loop tests)."""
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image

from audio_ext.core.codec import audio_to_logpower, encode


def write_encoded_archive(path, clips, geometry, target_bpm=130, sources=None):
    """Encode ``clips`` [N, clip_samples] with statistics of their own and zip them with a dataset.json
    (with ``sources``, one track name per clip, in its ``clips`` records as the dataset tool writes them).

    Returns ``(audio_block, uint8 images)``.
    """
    clips = np.asarray(clips, dtype=np.float64)
    v = audio_to_logpower(clips, geometry)
    block = geometry.audio_block(float(v.mean()), float(v.std()), target_bpm=target_bpm)
    images = encode(clips, geometry, block["mean"], block["std"])
    with zipfile.ZipFile(path, "w") as z:
        for i, img in enumerate(images):
            buf = io.BytesIO()
            PIL.Image.fromarray(img, mode="L").save(buf, format="PNG")
            z.writestr(f"00000/clip{i:05d}.png", buf.getvalue())
        meta = {"labels": None, "audio": block}
        if sources is not None:
            meta["clips"] = [{"file": f"00000/clip{i:05d}.png", "source": src} for i, src in enumerate(sources)]
        z.writestr("dataset.json", json.dumps(meta))
    return block, images


def toy_audio_block(resolution):
    """A valid ``audio`` block for toy archives of ``resolution`` (hop = R, 44.1 kHz, 130 BPM)."""
    return {"sample_rate": 44100, "resolution": resolution, "n_fft": 2 * resolution, "hop_length": resolution,
            "window": "hann", "center": True, "eps": 1e-10, "mean": -3.0, "std": 4.0, "clip_sigma": 3.0,
            "target_bpm": 130, "format_version": 1}


def stat_lines(run_dir):
    """The records of a training run's ``stats.jsonl``, in order."""
    return [json.loads(line) for line in (Path(run_dir) / "stats.jsonl").read_text().splitlines()]


def write_toy_archive(path, resolution, n, meta, labels=None):
    """A zip of ``n`` toy spectrograms (level falling towards the bottom rows, plus seeded noise) and a
    dataset.json of ``{"labels": ..., **meta}``; ``labels`` is None or one label per image. Returns ``path``.

    No codec involved: for training-loop tests, which need images, not audio."""
    rng = np.random.RandomState(0)
    names = [f"00000/img{i:08d}.png" for i in range(n)]
    with zipfile.ZipFile(path, "w") as z:
        for name in names:
            img = np.clip(np.linspace(60, 200, resolution)[:, None] + rng.randn(resolution, resolution) * 30,
                          0, 255).astype(np.uint8)
            buf = io.BytesIO()
            PIL.Image.fromarray(img, "L").save(buf, format="PNG")
            z.writestr(name, buf.getvalue())
        table = None if labels is None else [[name, lab] for name, lab in zip(names, labels)]
        z.writestr("dataset.json", json.dumps({"labels": table, **meta}))
    return path
