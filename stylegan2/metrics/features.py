"""Feature statistics of real and generated images, shared by every metric that compares the two.

A :class:`FeatureExtractor` maps a uint8 NCHW batch to [N, D] features (a TorchScript detector for
FID/KID/PR, hand-crafted spectrogram features for the audio metrics). Real statistics are cached by
archive content (:mod:`.dataset_cache`); generated images come from ``G`` with seeded latents.
With several processes each rank handles every ``num_gpus``-th item and the rows are gathered.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable, Iterator

import numpy as np
import torch

from .dataset_cache import cached_stats
from .feature_stats import FeatureStats
from .options import MetricOptions


@dataclasses.dataclass
class FeatureExtractor:
    """``fn(images_uint8_nchw) -> [N, D]``; ``name`` is file-system friendly, ``identity`` names the exact
    weights or algorithm version (it is part of the dataset-statistics cache key)."""
    name: str
    identity: str
    fn: Callable[[torch.Tensor], torch.Tensor]


def _gather(stats: FeatureStats, opts: MetricOptions) -> FeatureStats:
    """Merge the statistics of all ranks (in rank order); a no-op for one process."""
    if not opts.distributed:
        return stats
    parts = [None] * opts.num_gpus
    torch.distributed.all_gather_object(parts, stats.to_dict())
    merged = FeatureStats(capture_all=stats.capture_all, capture_mean_cov=stats.capture_mean_cov,
                          max_items=stats.max_items)
    for part in parts:
        merged.merge(FeatureStats.from_dict(part))
    return merged


def real_items(dataset, max_items=None, seed: int = 0) -> np.ndarray:
    """Indices of the real items a metric uses: all of them, or a fixed random subset of ``max_items``."""
    n = len(dataset)
    if max_items is None or max_items >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:max_items])


def _items_signature(dataset, items: np.ndarray) -> str:
    """Hash of which files (and mirrorings) the items are, so subsets of one archive get their own cache."""
    h = hashlib.sha256()
    details = getattr(dataset, "get_details", None)
    for i in items:
        d = details(int(i)) if details is not None else {"idx": int(i)}
        h.update(f"{d.get('fname', d.get('idx', i))}\0{int(bool(d.get('xflip', False)))}\n".encode("utf-8"))
    return h.hexdigest()


def iterate_real(opts: MetricOptions, items: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
    """This rank's share of ``items`` as uint8 NCHW tensors on the metric device."""
    dataset = opts.get_dataset()
    mine = items[opts.rank::opts.num_gpus]
    opts.report("real", 0, len(items))
    for start in range(0, len(mine), batch_size):
        batch = [dataset[int(i)] for i in mine[start:start + batch_size]]
        images = np.stack([b[0] if isinstance(b, tuple) else b for b in batch])
        yield torch.from_numpy(images).to(opts.device)
        opts.report("real", min(start + batch_size, len(mine)) * opts.num_gpus, len(items))


def dataset_feature_stats(opts: MetricOptions, extractor: FeatureExtractor, max_items=None,
                          capture_all: bool = False, capture_mean_cov: bool = False) -> FeatureStats:
    """Statistics of ``extractor`` features over the real data (or a seeded subset), cached by content."""
    dataset = opts.get_dataset()
    items = real_items(dataset, max_items, seed=opts.seed)

    def compute() -> FeatureStats:
        stats = FeatureStats(capture_all=capture_all, capture_mean_cov=capture_mean_cov)
        for images in iterate_real(opts, items, opts.batch_size):
            stats.append(extractor.fn(images))
        return _gather(stats, opts)

    path = getattr(dataset, "path", None)
    if not opts.cache or path is None:
        return compute()
    return cached_stats(compute, path, getattr(dataset, "name", "dataset"), _items_signature(dataset, items),
                        extractor.name, extractor.identity,
                        dict(capture_all=capture_all, capture_mean_cov=capture_mean_cov),
                        root=opts.cache_dir, write=opts.rank == 0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in about [-1, 1] to uint8 pixels: ``clamp(x * 127.5 + 128, 0, 255)`` (upstream's rounding)."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def iterate_generated(opts: MetricOptions, num_gen: int, batch_size: int) -> Iterator[torch.Tensor]:
    """This rank's share of ``num_gen`` generated images as uint8 NCHW tensors, from seeded latents.

    Latents come from a CPU generator seeded with (seed, rank), and labels (conditional G) are drawn
    from the dataset's labels with the same seed, so repeated evaluations see identical images.
    """
    G = opts.G
    if G is None:
        raise ValueError("metric options: this metric needs a generator G")
    per_rank = -(-num_gen // opts.num_gpus)
    gen = torch.Generator().manual_seed(opts.seed * 1000 + opts.rank)
    rng = np.random.default_rng([opts.seed, opts.rank])
    c_dim = int(getattr(G, "c_dim", 0))
    dataset = opts.get_dataset() if c_dim > 0 else None
    done = 0
    opts.report("generated", 0, num_gen)
    while done < per_rank:
        n = min(batch_size, per_rank - done)
        z = torch.randn([n, G.z_dim], generator=gen).to(opts.device)
        if c_dim > 0:
            c = np.stack([dataset.get_label(int(i)) for i in rng.integers(0, len(dataset), n)])
            c = torch.from_numpy(c).to(opts.device)
        else:
            c = torch.zeros([n, 0], device=opts.device)
        with torch.no_grad():
            images = G(z, c, **opts.G_kwargs)
        yield to_uint8(images)
        done += n
        opts.report("generated", done * opts.num_gpus, num_gen)


def generator_feature_stats(opts: MetricOptions, extractor: FeatureExtractor, num_gen: int,
                            capture_all: bool = False, capture_mean_cov: bool = False) -> FeatureStats:
    """Statistics of ``extractor`` features over ``num_gen`` generated images (all ranks together)."""
    stats = FeatureStats(capture_all=capture_all, capture_mean_cov=capture_mean_cov)
    for images in iterate_generated(opts, num_gen, opts.batch_size):
        stats.append(extractor.fn(images))
    stats = _gather(stats, opts)
    if stats.num_items > num_gen:  # ranks round up; keep exactly num_gen rows when they were kept
        trimmed = FeatureStats(capture_all=capture_all, capture_mean_cov=capture_mean_cov, max_items=num_gen)
        if capture_all:
            trimmed.append(stats.get_all())
            return trimmed
    return stats
