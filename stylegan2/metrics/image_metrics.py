"""FID, KID and precision/recall on detector features, under their StyleGAN2-ADA names.

``*_full`` compares against every real image (no mirroring); 50k generated images. The ``1k``
variants (1,000 generated vs at most 1,000 reals) are for smoke tests and demos only; their values
are biased upward relative to 50k and not comparable with published numbers.
"""
from __future__ import annotations

from .detector import INCEPTION_URL, VGG16_URL, load_detector
from .features import FeatureExtractor, dataset_feature_stats, generator_feature_stats
from .frechet import frechet_distance
from .kernel_distance import kernel_inception_distance
from .options import MetricOptions
from .precision_recall import precision_recall
from .registry import register


def detector_extractor(opts: MetricOptions, spec=None, default_url: str = INCEPTION_URL) -> FeatureExtractor:
    """Wrap a loaded TorchScript detector as a feature extractor named after its file and md5."""
    det = load_detector(opts.detector_path if spec is None else spec, device=opts.device,
                        default_url=default_url, num_gpus=opts.num_gpus, rank=opts.rank,
                        progress=lambda done, total: opts.report("download", done, total or done))
    return FeatureExtractor(name=det.name, identity=f"{det.name}:{det.identity}", fn=det.features)


def _counts(opts: MetricOptions, num_gen: int, max_real):
    return (opts.num_gen if opts.num_gen is not None else num_gen,
            opts.max_real if opts.max_real is not None else max_real)


def compute_fid(opts: MetricOptions, num_gen: int, max_real=None) -> float:
    """FID of ``num_gen`` fakes against (up to ``max_real``) reals on Inception pool3 features."""
    num_gen, max_real = _counts(opts, num_gen, max_real)
    ext = detector_extractor(opts)
    mu_r, sigma_r = dataset_feature_stats(opts, ext, max_items=max_real, capture_mean_cov=True).get_mean_cov()
    mu_g, sigma_g = generator_feature_stats(opts, ext, num_gen, capture_mean_cov=True).get_mean_cov()
    return frechet_distance(mu_g, sigma_g, mu_r, sigma_r)


def compute_kid(opts: MetricOptions, num_gen: int, max_real, num_subsets: int = 100,
                max_subset_size: int = 1000) -> float:
    """KID of ``num_gen`` fakes against up to ``max_real`` reals on Inception pool3 features."""
    num_gen, max_real = _counts(opts, num_gen, max_real)
    ext = detector_extractor(opts)
    real = dataset_feature_stats(opts, ext, max_items=max_real, capture_all=True).get_all()
    gen = generator_feature_stats(opts, ext, num_gen, capture_all=True).get_all()
    return kernel_inception_distance(real, gen, num_subsets=num_subsets, max_subset_size=max_subset_size,
                                     seed=opts.seed)


def compute_pr(opts: MetricOptions, num_gen: int, max_real, k: int = 3) -> dict:
    """Precision and recall (k-NN manifolds) on VGG16 features, or Inception's when asked.

    ``opts.pr_detector_path``: a VGG16 file or URL; None downloads the published VGG16 file;
    the string ``"inception"`` reuses the FID detector (documented as not comparable with papers).
    """
    num_gen, max_real = _counts(opts, num_gen, max_real)
    if str(opts.pr_detector_path) == "inception":
        ext = detector_extractor(opts)
    else:
        ext = detector_extractor(opts, spec=opts.pr_detector_path, default_url=VGG16_URL)
    real = dataset_feature_stats(opts, ext, max_items=max_real, capture_all=True).get_all()
    gen = generator_feature_stats(opts, ext, num_gen, capture_all=True).get_all()
    precision, recall = precision_recall(real, gen, k=k, device=opts.device)
    return dict(precision=precision, recall=recall)


@register(key="fid50k_full")
def fid50k_full(opts):
    """FID: 50k generated vs all real images (Inception-v3 pool3); the thesis reports 3.21."""
    return dict(fid50k_full=compute_fid(opts, num_gen=50000, max_real=None))


@register(key="kid50k_full")
def kid50k_full(opts):
    """KID: 50k generated vs up to 1M reals, 100 subsets of 1000 (Inception-v3 pool3)."""
    return dict(kid50k_full=compute_kid(opts, num_gen=50000, max_real=1000000))


@register(key="pr50k3_full_precision", higher_is_better=True)
def pr50k3_full(opts):
    """Precision/recall, k=3: 50k generated vs up to 200k reals (VGG16 features)."""
    r = compute_pr(opts, num_gen=50000, max_real=200000, k=3)
    return dict(pr50k3_full_precision=r["precision"], pr50k3_full_recall=r["recall"])


@register(key="fid1k")
def fid1k(opts):
    """FID: 1k generated vs up to 1k reals; a quick trend indicator, not comparable with fid50k_full."""
    return dict(fid1k=compute_fid(opts, num_gen=1000, max_real=1000))


@register(key="kid1k")
def kid1k(opts):
    """KID: 1k generated vs up to 1k reals, 100 subsets; quick check only."""
    return dict(kid1k=compute_kid(opts, num_gen=1000, max_real=1000))


@register(key="pr1k3_precision", higher_is_better=True)
def pr1k3(opts):
    """Precision/recall, k=3: 1k generated vs up to 1k reals; quick check only."""
    r = compute_pr(opts, num_gen=1000, max_real=1000, k=3)
    return dict(pr1k3_precision=r["precision"], pr1k3_recall=r["recall"])
