"""Everything a metric needs to run: the generator, the real data, the device, the detector, limits.

One :class:`MetricOptions` is built by :func:`stylegan2.metrics.registry.calc_metric` and handed to
every metric function, so metrics (image metrics here, others in the modules given to ``registry.load_plugins``) share
one way to reach the dataset, generate images and report progress.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Optional, Union

import torch

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


@dataclasses.dataclass
class MetricOptions:
    """Inputs of one metric evaluation.

    ``G``: generator called as ``G(z, c, **G_kwargs)`` returning NCHW float images in about [-1, 1].
    ``dataset`` or ``dataset_kwargs`` (``ImageFolderDataset`` arguments; opened lazily).
    ``detector_path`` / ``pr_detector_path``: local file or URL; None = the published default.
    ``num_gen`` / ``max_real``: override the metric's generated / real sample counts (for small runs).
    ``audio``: the archive's ``audio`` block (STFT geometry); defaults to ``dataset.audio``.
    ``seed``: fixes latents and subsets, so two evaluations of one snapshot agree exactly.
    ``cache``: reuse dataset statistics cached by archive content (``cache_dir`` or the default).
    """
    G: Optional[torch.nn.Module] = None
    G_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    dataset: Any = None
    dataset_kwargs: Optional[Dict[str, Any]] = None
    device: Union[str, torch.device] = "cpu"
    num_gpus: int = 1
    rank: int = 0
    detector_path: Optional[Union[str, os.PathLike]] = None
    pr_detector_path: Optional[Union[str, os.PathLike]] = None
    num_gen: Optional[int] = None
    max_real: Optional[int] = None
    batch_size: int = 32
    audio: Optional[Dict[str, Any]] = None
    seed: int = 0
    cache: bool = True
    cache_dir: Optional[Union[str, os.PathLike]] = None
    progress: Optional[ProgressFn] = None

    def __post_init__(self):
        self.device = torch.device(self.device)
        if not 0 <= self.rank < self.num_gpus:
            raise ValueError(f"metric options: rank {self.rank} is outside 0..{self.num_gpus - 1}")

    def get_dataset(self):
        """The real data, opened from ``dataset_kwargs`` on first use (any ``class_name`` key is ignored)."""
        if self.dataset is None:
            if self.dataset_kwargs is None:
                raise ValueError("metric options: this metric needs real data; give dataset or dataset_kwargs")
            from ..dataset import ImageFolderDataset
            kwargs = {k: v for k, v in self.dataset_kwargs.items() if k != "class_name"}
            self.dataset = ImageFolderDataset(**kwargs)
        return self.dataset

    def get_audio(self) -> Dict[str, Any]:
        """The ``audio`` block: given explicitly, else the dataset's; an error when neither has one."""
        if self.audio is None:
            try:
                self.audio = getattr(self.get_dataset(), "audio", None)
            except ValueError:
                self.audio = None
        if not self.audio:
            raise ValueError("metric options: this audio metric needs an 'audio' block (STFT geometry) "
                             "from the snapshot or the dataset")
        return self.audio

    def report(self, stage: str, done: int, total: int) -> None:
        """Forward progress to the caller's callback (rank 0 only)."""
        if self.progress is not None and self.rank == 0:
            self.progress(stage, done, total)

    @property
    def distributed(self) -> bool:
        return self.num_gpus > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()
