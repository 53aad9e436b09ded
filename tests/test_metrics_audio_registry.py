"""Audio metrics through the registry: tempo fidelity on decoded archive clips and on a generator's output."""
import io
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from archive_helpers import write_encoded_archive

from audio_ext.core.geometry import StftGeometry
from audio_ext.core.synth import techno_loop
from audio_ext.plugins import METRIC_MODULES
from stylegan2.metrics import registry


@pytest.fixture(autouse=True)
def audio_metrics():
    registry.load_plugins(METRIC_MODULES)     # the audio layer's metrics join the registry, as the CLIs do


def write_archive(path, geometry, tempi):
    clips = np.stack([techno_loop(bpm, geometry.clip_seconds + 0.1, seed=i)[: geometry.clip_samples]
                      for i, bpm in enumerate(tempi)])
    return write_encoded_archive(path, clips, geometry)


class ReplayG(torch.nn.Module):
    """A 'generator' that plays back given uint8 images in order, as float images in [-1, 1]."""
    def __init__(self, images):
        super().__init__()
        self.images = torch.from_numpy(images).float()[:, None] / 127.5 - 1
        self.z_dim, self.c_dim, self.next = 4, 0, 0

    def forward(self, z, c, **kwargs):
        idx = [(self.next + i) % len(self.images) for i in range(z.shape[0])]
        self.next += z.shape[0]
        return self.images[idx]


@pytest.mark.slow
def test_tempo_fidelity_of_archive_and_of_a_generator_replaying_it(tmp_path):
    geometry = StftGeometry(512)  # 5.94 s clips at 44.1 kHz
    block, images = write_archive(tmp_path / "stft.zip", geometry, [130, 130, 110, 130])
    real = registry.calc_metric("tempo_fidelity_real", dataset_kwargs=dict(path=str(tmp_path / "stft.zip")),
                                max_real=4, batch_size=2, cache=False)
    assert real["results"]["tempo_fidelity_real"] == pytest.approx(0.75)
    gen = registry.calc_metric("tempo_fidelity", G=ReplayG(images), audio=block, num_gen=4, batch_size=2)
    assert gen["results"]["tempo_fidelity"] == pytest.approx(0.75)
    assert abs(gen["results"]["tempo_median_bpm"] - 130) < 1.5


def test_sfd_of_a_generator_replaying_the_archive_is_near_zero(tmp_path):
    geometry = StftGeometry(64)
    block, images = write_archive(tmp_path / "stft.zip", geometry, [130 + i for i in range(-10, 10)])
    common = dict(dataset_kwargs=dict(path=str(tmp_path / "stft.zip")), num_gen=20, cache_dir=str(tmp_path / "c"))
    same = registry.calc_metric("sfd1k", G=ReplayG(images), **common)["results"]
    assert abs(same["sfd1k"]) < 1e-6
    assert same["silence_share_real"] == pytest.approx(same["silence_share_gen"])
    flipped = registry.calc_metric("sfd1k", G=ReplayG(images[:, ::-1].copy()), **common)["results"]
    assert flipped["sfd1k"] > 1.0  # upside-down spectra: energy in the wrong bands


def test_audio_metrics_need_an_audio_block(tmp_path):
    with zipfile.ZipFile(tmp_path / "plain.zip", "w") as z:
        buf = io.BytesIO()
        PIL.Image.fromarray(np.zeros((16, 16), np.uint8)).save(buf, format="PNG")
        z.writestr("a.png", buf.getvalue())
    with pytest.raises(ValueError, match="needs an 'audio' block"):
        registry.calc_metric("sfd1k", G=ReplayG(np.zeros((1, 16, 16), np.uint8)),
                             dataset_kwargs=dict(path=str(tmp_path / "plain.zip")), num_gen=2)
