"""Test helper: a tiny stft.zip of encoded clips, written without the slicing pipeline."""
import io
import json
import zipfile

import numpy as np
import PIL.Image

from audio_ext.codec import audio_to_logpower, encode


def write_encoded_archive(path, clips, geometry, target_bpm=130):
    """Encode ``clips`` [N, clip_samples] with statistics of their own and zip them with a dataset.json.

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
        z.writestr("dataset.json", json.dumps({"labels": None, "audio": block}))
    return block, images
