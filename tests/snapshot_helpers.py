"""The one tiny generator snapshot of the tests: random weights, an audio block, seconds to build on a CPU."""
from pathlib import Path

import torch

from audio_ext.core.geometry import StftGeometry
from stylegan2 import networks, snapshot


def tiny_generator(resolution: int = 32, width: int = 16, mapping_layers: int = 2, c_dim: int = 0, seed: int = 0):
    """A randomly initialised generator (``torch.manual_seed(seed)``): z_dim = w_dim = channels = ``width``."""
    torch.manual_seed(seed)
    return networks.Generator(z_dim=width, c_dim=c_dim, w_dim=width, img_resolution=resolution, img_channels=1,
                              mapping_kwargs=dict(num_layers=mapping_layers), channel_base=256, channel_max=width)


def tiny_audio_snapshot(path: Path, resolution: int = 32, *, width: int = 16, mapping_layers: int = 2, c_dim: int = 0,
                        seed: int = 0, sample_rate: int = 44100, mean: float = -6.0, std: float = 3.0,
                        target_bpm: float = 130.0, block: dict = None, G=None, **extra) -> Path:
    """Write a snapshot of :func:`tiny_generator` (or ``G``) with the audio block of ``resolution`` at
    ``sample_rate`` (or ``block``) and the keys in ``extra`` (e.g. ``cur_nimg=0``, ``decoder_model=...``)."""
    if G is None:
        G = tiny_generator(resolution, width, mapping_layers, c_dim, seed)
    if block is None:
        block = StftGeometry(resolution, sample_rate=sample_rate).audio_block(mean=mean, std=std, target_bpm=target_bpm)
    snapshot.save_snapshot(path, {"G_ema": snapshot.network_record(G), "audio": block, **extra})
    return path
