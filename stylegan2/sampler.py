"""An endless, seeded, rank-sharded index stream for GAN training (no epochs).

Training is measured in images shown (kimg), not epochs, so the sampler never stops. It starts
from one seeded permutation and, after every step, swaps the item just visited with a random one
from the trailing window behind it (``window_size`` of the dataset), which keeps reshuffling the
order continuously. Swaps stay within the current pass, so every pass of ``len(dataset)`` steps
still visits each item exactly once (no repeats within a pass, unlike a window that wraps). All ranks generate the same global stream from the same seed; rank ``r`` of
``n`` yields positions ``r, r + n, r + 2n, ...`` of it, so the ranks together see exactly what a
single process would see with the whole batch.
"""
from __future__ import annotations

from typing import Iterator, Sized

import numpy as np
import torch


class InfiniteSampler(torch.utils.data.Sampler):
    """Yield dataset indices forever: seeded shuffle, rolling-window reshuffle, rank sharding."""

    def __init__(self, dataset: Sized, rank: int = 0, num_replicas: int = 1, shuffle: bool = True,
                 seed: int = 0, window_size: float = 0.5):
        if len(dataset) <= 0:
            raise ValueError("InfiniteSampler: the dataset is empty")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"InfiniteSampler: rank {rank} is not in [0, {num_replicas})")
        if not 0 <= window_size <= 1:
            raise ValueError(f"InfiniteSampler: window_size {window_size} is not in [0, 1]")
        self.dataset = dataset
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        order = list(range(n))
        rnd = None
        window = 0
        if self.shuffle:
            rnd = np.random.RandomState(self.seed)
            perm = np.arange(n)
            rnd.shuffle(perm)
            order = perm.tolist()  # a Python list: element swaps are ~10x cheaper than on an array
            window = int(np.rint(n * self.window_size))
        draws: list = []
        step = 0
        while True:
            pos = step % n
            if step % self.num_replicas == self.rank:
                yield order[pos]
            if window >= 2:
                if not draws:
                    draws = rnd.randint(window, size=4096).tolist()[::-1]  # drawn in blocks for speed
                other = max(pos - draws.pop(), 0)
                order[pos], order[other] = order[other], order[pos]
            step += 1
