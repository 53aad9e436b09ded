"""Hear training as it goes: decode a few of each snapshot's fakes to audio.

``train.py`` hands the training loop an :class:`AudioPreview` as its ``snapshot_hook`` when the
archive has an ``audio`` block. Each time the loop writes ``fakes_init.png`` or ``fakesNNNNNN.png``
it calls the preview with the grid's images, which then writes

- ``fakesNNNNNN.wav``: the first ``clips`` images of the grid (the top-left ones, in row order)
  decoded with the archive's codec and the default phase reconstruction (with the archive's own
  decoder model when ``train.py`` found one, as the snapshots carry it), one after the other with
  ``gap_s`` seconds of silence between them (16-bit PCM at the archive's sample rate), and
- when TensorBoard is installed, one ``add_audio`` entry per clip (tags ``fakes/audio/0`` ...) at the
  snapshot's image count, beside the loop's own ``add_image`` of the grid.

Decoding is seeded per clip (clip k with seed k), so the same snapshot always sounds the same.
The loop runs the hook on rank 0 only, outside the training's random state.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch

from audio_ext.core.audio_io import limit_peak, write_audio
from audio_ext.core.codec import AudioCodec
from audio_ext.decoder.model_choice import choose_decoder_model
from audio_ext.decoder.model_file import check_model_payload
from audio_ext.generation.synthesis import decode_images

#: Fakes decoded per snapshot by default (at 1024 x 1024: 4 x 23.78 s of audio).
DEFAULT_CLIPS = 4


class AudioPreview:
    """A picklable snapshot hook (see the module docstring): ``AudioPreview(audio_block)(preview)``.

    ``audio_block``: the archive's ``audio`` block (docs/contract.md). ``clips``: images decoded per
    snapshot. ``gap_s``: seconds of silence between clips in the WAV. ``method``/``n_iter``: phase
    reconstruction (None = the audio layer's default). ``decoder_model``: the model file's dict that the
    snapshots carry (``train.py``), used for ``learned+pghi+fgla`` so the previews sound like what
    ``gen_audio.py`` will make from those snapshots (None = the env/shipped model).
    """

    def __init__(self, audio_block: dict, clips: int = DEFAULT_CLIPS, gap_s: float = 0.25,
                 method: Optional[str] = None, n_iter: Optional[int] = None, decoder_model: Optional[dict] = None):
        AudioCodec(audio_block)  # fail at start-up, not at the first snapshot
        if clips < 1:
            raise ValueError(f"audio preview: clips must be >= 1, got {clips}")
        self.audio_block, self.clips, self.gap_s = dict(audio_block), int(clips), float(gap_s)
        self.method, self.n_iter = method, n_iter
        self.decoder_model = decoder_model
        if decoder_model is not None:
            check_model_payload(decoder_model, "audio preview decoder_model")

    def decode(self, images: torch.Tensor) -> np.ndarray:
        """Audio ``[n, samples]`` float32 of the first ``clips`` of ``images`` [N, 1, R, R] in [-1, 1]."""
        imgs = images[:self.clips, 0].detach().to("cpu", torch.float32).clamp(-1, 1)
        decoder = choose_decoder_model(carried=self.decoder_model, where="archive")
        return decode_images(imgs, self.audio_block, self.method, self.n_iter, torch.device("cpu"),
                             seed=list(range(imgs.shape[0])), decoder=decoder)

    def __call__(self, preview) -> None:
        sr = int(self.audio_block["sample_rate"])
        clips = self.decode(preview.images)
        gap = np.zeros(int(round(self.gap_s * sr)), np.float32)
        pieces = []
        for k, clip in enumerate(clips):
            pieces += [clip, gap] if k + 1 < len(clips) else [clip]
        write_audio(os.path.join(str(preview.run_dir), f"fakes{preview.tag}.wav"), np.concatenate(pieces), sr)
        if preview.tb is not None:
            for k, clip in enumerate(clips):
                level = limit_peak(clip.astype(np.float64)).astype(np.float32)
                preview.tb.add_audio(f"fakes/audio/{k}", torch.from_numpy(level)[None], global_step=preview.cur_nimg,
                                     sample_rate=sr)
