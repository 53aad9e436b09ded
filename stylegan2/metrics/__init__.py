"""Quality metrics for generators: Fréchet/kernel distances and precision/recall on detector features.

The math lives in one file per concept (``feature_stats``, ``frechet``, ``kernel_distance``,
``precision_recall``); ``detector`` fetches and runs the feature network (``toy_detector`` is an
offline stand-in for tests), ``dataset_cache`` keys dataset statistics by archive content,
``options`` and ``features`` feed real and generated images to a feature extractor,
``image_metrics`` defines FID/KID/PR, ``registry`` names the metrics (``fid50k_full`` ...) that
``calc_metrics.py`` and the training loop call, and ``evaluate`` scores a saved snapshot.
"""
from .feature_stats import FeatureStats
from .frechet import frechet_distance
from .kernel_distance import kernel_inception_distance
from .precision_recall import precision_recall

__all__ = ["FeatureStats", "frechet_distance", "kernel_inception_distance", "precision_recall"]
