"""The ADA probability controller: raise p when D is overconfident on reals, lower it otherwise.

Karras et al. 2020 (arXiv 2006.06676, section 3) measure overfitting with ``r_t = E[sign(D(x_real))]``:
near 0 when D cannot tell reals from fakes, near 1 when it has memorised the training set. Every
``interval`` iterations p moves by ``sign(r_t - target) * batch_size * interval / (ada_kimg * 1000)`` --
so p can change by at most 1 per ``ada_kimg`` thousand real images -- and is clamped at 0
(docs/references.md, StyleGAN2-ADA; target 0.6, interval 4, ada_kimg 500, or 100 when resuming). p has
no upper clamp: the firing probability of each transform saturates at 1 on its own.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch


def _default_reduce(stats: torch.Tensor) -> torch.Tensor:
    """Sum ``stats`` over all ranks when torch.distributed is running; identity otherwise."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(stats, op=torch.distributed.ReduceOp.SUM)
    return stats


class AdaController:
    """Accumulate ``sign(D(real))`` and step the augmentation probability ``p`` every ``interval`` iterations.

    ``batch_size`` is the global batch (all ranks). ``reduce_fn`` sums the local ``[sign_sum, count]``
    tensor across ranks (default: an all-reduce when torch.distributed is initialised), so every rank
    computes the same p. ``kimg`` is accepted as another name for ``ada_kimg``.
    """

    def __init__(self, target: float = 0.6, interval: int = 4, ada_kimg: float = 500,
                 batch_size: int = 32, p: float = 0.0, device: Optional[torch.device] = None,
                 reduce_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 kimg: Optional[float] = None):
        if kimg is not None:
            ada_kimg = kimg
        if not 0 <= target <= 1:
            raise ValueError(f"AdaController: target {target} is not in [0, 1]")
        if int(interval) != interval or interval < 1:
            raise ValueError(f"AdaController: interval must be a positive integer, got {interval}")
        if ada_kimg <= 0 or batch_size < 1:
            raise ValueError(f"AdaController: ada_kimg ({ada_kimg}) and batch_size ({batch_size}) must be positive")
        if p < 0:
            raise ValueError(f"AdaController: p must be >= 0, got {p}")
        self.target = float(target)
        self.interval = int(interval)
        self.ada_kimg = float(ada_kimg)
        self.batch_size = int(batch_size)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.reduce_fn = reduce_fn or _default_reduce
        self.p = float(p)
        self.rt: Optional[float] = None  # the last r_t used for an update (for logs)
        self.iterations = 0
        self._sum = 0.0
        self._count = 0.0

    @property
    def step_size(self) -> float:
        """How far one update moves p: ``batch_size * interval / (ada_kimg * 1000)``."""
        return self.batch_size * self.interval / (self.ada_kimg * 1000)

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Record D's raw outputs on (augmented) reals of this rank; only their signs count."""
        signs = torch.sign(real_logits.detach().to(torch.float64))
        self._sum += float(signs.sum())
        self._count += signs.numel()

    def accumulate_sums(self, sign_sum: float, count: float) -> None:
        """Record a pre-summed ``sum(sign(D(real)))`` over ``count`` outputs (e.g. from the stats module)."""
        self._sum += float(sign_sum)
        self._count += float(count)

    def step(self, augment_pipe: Optional[torch.nn.Module] = None) -> bool:
        """Call once per training iteration; every ``interval``-th call updates p and returns True.

        The new p is copied into ``augment_pipe.p`` when a pipe is given. All ranks must call this
        together (the update sums the statistics of every rank).
        """
        self.iterations += 1
        if self.iterations % self.interval != 0:
            return False
        stats = torch.tensor([self._sum, self._count], dtype=torch.float64, device=self.device)
        stats = self.reduce_fn(stats)
        total, count = (float(v) for v in stats.cpu())
        self._sum, self._count = 0.0, 0.0
        if count <= 0:
            return False
        self.rt = total / count
        direction = (self.rt > self.target) - (self.rt < self.target)  # sign(r_t - target)
        self.p = max(self.p + direction * self.step_size, 0.0)
        if augment_pipe is not None:     # a fill from the host: no device sync (AugmentPipe.set_p)
            if hasattr(augment_pipe, "set_p"):
                augment_pipe.set_p(self.p)
            else:
                augment_pipe.p.fill_(self.p)
        return True

    def state_dict(self) -> dict:
        """Plain data for a snapshot: p, the pending sums and the iteration phase (not the settings).

        ``sign_sum``/``sign_count`` are the statistics of the interval in progress, so a run resumed
        mid-interval moves p exactly as the uninterrupted run would (the training loop hands over
        the signs it has gathered in this interval before saving, see ``training_loop``).
        """
        return {"p": self.p, "rt": self.rt, "iterations": self.iterations,
                "sign_sum": self._sum, "sign_count": self._count,
                "target": self.target, "interval": self.interval, "ada_kimg": self.ada_kimg}

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`; target, interval and ada_kimg stay as constructed
        (upstream lowers ada_kimg to 100 on resume)."""
        self.p = float(state["p"])
        self.rt = state.get("rt")
        self.iterations = int(state.get("iterations", 0))
        self._sum = float(state.get("sign_sum", 0.0))
        self._count = float(state.get("sign_count", 0.0))
