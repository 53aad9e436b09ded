"""Metric features across two gloo processes: each rank takes every other item, the rows are gathered."""
import io
import json
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from stylegan2 import distributed
from stylegan2.dataset import ImageFolderDataset
from stylegan2.metrics.features import FeatureExtractor, dataset_feature_stats, generator_feature_stats
from stylegan2.metrics.options import MetricOptions


def pixel_stats(images):
    x = images.float().flatten(1)
    return torch.stack([x.mean(1), x.std(1), x.max(1).values], dim=1)


EXTRACTOR = FeatureExtractor("pixels", "pixels-v1", pixel_stats)


class TinyG(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.z_dim, self.c_dim = 4, 0

    def forward(self, z, c, **kwargs):
        return torch.tanh(z.sum(1)).reshape(-1, 1, 1, 1).expand(-1, 1, 8, 8)


def write_zip(path, n=7):
    with zipfile.ZipFile(path, "w") as z:
        for i in range(n):
            buf = io.BytesIO()
            PIL.Image.fromarray(np.random.default_rng(i).integers(0, 256, (8, 8), dtype=np.uint8)).save(buf, "PNG")
            z.writestr(f"{i}.png", buf.getvalue())
    return str(path)


def _worker(rank, data, outdir):
    opts = MetricOptions(G=TinyG(), dataset_kwargs=dict(path=data), num_gpus=2, rank=rank, batch_size=2,
                         cache_dir=str(outdir / "cache"))
    real = dataset_feature_stats(opts, EXTRACTOR, capture_all=True, capture_mean_cov=True)
    gen = generator_feature_stats(opts, EXTRACTOR, num_gen=5, capture_all=True)
    mean, cov = real.get_mean_cov()
    (outdir / f"rank{rank}.json").write_text(json.dumps(dict(
        real_rows=real.get_all().tolist(), mean=mean.tolist(), cov=cov.tolist(), gen_rows=gen.get_all().tolist())))


@pytest.mark.slow  # spawns two Python processes (~10 s on 2 cores)
def test_two_ranks_see_every_item_once_and_agree(tmp_path):
    data = write_zip(tmp_path / "set.zip")
    distributed.launch(_worker, 2, dict(data=data, outdir=tmp_path))
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1

    single = pixel_stats(torch.from_numpy(np.stack([ImageFolderDataset(data)[i][0] for i in range(7)]))).double().numpy()
    np.testing.assert_allclose(sorted(map(tuple, r0["real_rows"])), sorted(map(tuple, single)), rtol=1e-6)
    np.testing.assert_allclose(r0["mean"], single.mean(0), rtol=1e-6)
    np.testing.assert_allclose(r0["cov"], np.cov(single, rowvar=False, bias=True), rtol=1e-5, atol=1e-6)
    assert len(r0["gen_rows"]) == 5  # 3 per rank, trimmed to the number asked for
    assert len({tuple(r) for r in r0["gen_rows"]}) == 5  # ranks draw different latents
    assert len(list((tmp_path / "cache" / "gan-metrics").iterdir())) == 1  # written once, by rank 0
