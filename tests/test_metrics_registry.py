"""Metric registry: calc_metric runs FID/KID/PR end to end, report_metric logs JSON lines, best_record picks."""
import io
import json
import zipfile

import numpy as np
import PIL.Image
import pytest
import scipy.linalg
import torch

from stylegan2.metrics import registry
from stylegan2.metrics.toy_detector import ToyDetector, write_toy_detector

RES = 16


class StandInG(torch.nn.Module):
    """Smallest generator with the G(z, c, truncation_psi, noise_mode) convention; records its outputs."""
    def __init__(self, z_dim=8, scale=1.0):
        super().__init__()
        self.z_dim, self.c_dim, self.img_resolution, self.img_channels = z_dim, 0, RES, 1
        self.proj = torch.nn.Linear(z_dim, RES * RES)
        torch.nn.init.normal_(self.proj.weight, std=scale)
        self.outputs = []

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, noise_mode="random", force_fp32=False):
        img = torch.tanh(self.proj(z)).reshape(-1, 1, RES, RES)
        self.outputs.append(img)
        return img


def write_zip(path, n, seed=0):
    with zipfile.ZipFile(path, "w") as z:
        for i in range(n):
            img = np.random.default_rng([seed, i]).integers(0, 256, (RES, RES), dtype=np.uint8)
            buf = io.BytesIO()
            PIL.Image.fromarray(img).save(buf, format="PNG")
            z.writestr(f"00000/img{i:05d}.png", buf.getvalue())
        z.writestr("dataset.json", json.dumps({"labels": None}))
    return str(path)


@pytest.fixture
def setup(tmp_path):
    return dict(data=write_zip(tmp_path / "set.zip", 24), detector=write_toy_detector(tmp_path / "toy.pt"),
                cache_dir=str(tmp_path / "cache"))


def reference_fid(real_u8, fake_u8):
    """FID from scratch: toy features, numpy population covariance, scipy sqrtm."""
    det = ToyDetector()
    with torch.no_grad():
        fr = det(real_u8.repeat(1, 3, 1, 1), return_features=True).double().numpy()
        fg = det(fake_u8.repeat(1, 3, 1, 1), return_features=True).double().numpy()
    mr, mg = fr.mean(0), fg.mean(0)
    sr, sg = np.cov(fr, rowvar=False, bias=True), np.cov(fg, rowvar=False, bias=True)
    root = scipy.linalg.sqrtm(sg @ sr).real
    return np.sum((mr - mg) ** 2) + np.trace(sr + sg - 2 * root)


def test_fid_matches_reference_on_what_g_produced(setup):
    G = StandInG()
    r = registry.calc_metric("fid1k", G=G, dataset_kwargs=dict(path=setup["data"]), detector_path=setup["detector"],
                             num_gen=20, batch_size=6, cache_dir=setup["cache_dir"])
    fakes = torch.cat(G.outputs)
    assert fakes.shape == (20, 1, RES, RES)
    fake_u8 = (fakes * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    with zipfile.ZipFile(setup["data"]) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        real = np.stack([np.asarray(PIL.Image.open(io.BytesIO(z.read(n)))) for n in names])[:, None]
    assert r["results"]["fid1k"] == pytest.approx(reference_fid(torch.from_numpy(real), fake_u8), rel=1e-4)
    assert r["metric"] == "fid1k" and r["key"] == "fid1k" and r["higher_is_better"] is False


def test_same_seed_same_value_and_better_generator_scores_better(setup):
    common = dict(dataset_kwargs=dict(path=setup["data"]), detector_path=setup["detector"], num_gen=24,
                  cache_dir=setup["cache_dir"])
    noisy = StandInG(scale=3.0)  # saturated tanh: near-binary noise, roughly like the uniform-noise data
    a = registry.calc_metric("fid1k", G=noisy, **common)["results"]["fid1k"]
    b = registry.calc_metric("fid1k", G=noisy, **common)["results"]["fid1k"]
    assert a == b
    flat = StandInG(scale=0.0)  # every image mid-grey: nothing like the uniform-noise data
    c = registry.calc_metric("fid1k", G=flat, **common)["results"]["fid1k"]
    assert c > a


def test_kid_and_pr_run_with_overrides(setup):
    common = dict(G=StandInG(), dataset_kwargs=dict(path=setup["data"]), detector_path=setup["detector"],
                  num_gen=16, max_real=12, cache_dir=setup["cache_dir"])
    kid = registry.calc_metric("kid1k", **common)
    assert np.isfinite(kid["results"]["kid1k"])
    pr = registry.calc_metric("pr1k3", pr_detector_path="inception", **common)
    assert 0.0 <= pr["results"]["pr1k3_precision"] <= 1.0 and 0.0 <= pr["results"]["pr1k3_recall"] <= 1.0
    assert pr["higher_is_better"] is True


def test_report_appends_json_lines_and_best_record_follows_direction(tmp_path):
    for value, snap in [(9.0, "a.pkl"), (3.0, "b.pkl"), (5.0, "c.pkl")]:
        result = dict(results={"fid50k_full": value}, metric="fid50k_full", key="fid50k_full")
        registry.report_metric(result, tmp_path, snapshot_pkl=f"/runs/x/{snap}")
    lines = (tmp_path / "metric-fid50k_full.jsonl").read_text().splitlines()
    assert [json.loads(l)["snapshot_pkl"] for l in lines] == ["a.pkl", "b.pkl", "c.pkl"]
    assert registry.best_record(tmp_path, "fid50k_full")["snapshot_pkl"] == "b.pkl"


def test_unknown_metric_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown metric 'fid5k'.*fid50k_full"):
        registry.calc_metric("fid5k")


def test_registry_is_open_to_new_metrics():
    @registry.register(name="_test_constant", higher_is_better=True)
    def constant(opts):
        return {"_test_constant": 42}
    try:
        assert "_test_constant" in registry.list_metrics()
        assert registry.calc_metric("_test_constant")["results"] == {"_test_constant": 42.0}
    finally:
        registry._REGISTRY.pop("_test_constant")


def test_standard_metrics_are_registered():
    for name in ("fid50k_full", "kid50k_full", "pr50k3_full"):
        assert registry.is_valid_metric(name)
