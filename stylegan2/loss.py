"""The StyleGAN2 loss: non-saturating logistic GAN loss, lazy R1, path-length regularisation, style mixing.

Formulas (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN", and
StyleGAN2-ADA's ``training/loss.py``; docs/references.md, StyleGAN2):

- G main: ``softplus(-D(aug(G(z))))``; D main: ``softplus(D(aug(G(z)))) + softplus(-D(aug(x)))``.
- R1: ``(gamma / 2) * sum_{C,H,W} (d sum D(aug(x)) / d x)^2`` per real image, the gradient taken
  w.r.t. the *un-augmented* image ``x`` (so augmentations must be twice differentiable).
- Path length: on ``batch // pl_batch_shrink`` samples, ``a = sqrt(mean_ws sum_wdim g^2)`` with
  ``g = d sum(img * y) / d ws``, ``y ~ N(0, 1) / sqrt(H * W)``; penalty ``pl_weight * (a - pl_mean)^2``.
- Style mixing: with probability ``style_mixing_prob`` one cutoff per minibatch, uniform in
  ``[1, num_ws)``; the ws from the cutoff on come from a second z.

Lazy regularisation is done by the caller: it runs the ``*reg`` phases every k iterations with
``gain = k``, and corrects Adam with :func:`lazy_regularization_adam`.

One deliberate difference from upstream: ``pl_mean`` (the running mean path length) is updated
once per ``Greg`` phase, by :meth:`StyleGAN2Loss.finish_phase`, with the mean over the whole global
batch (all accumulation rounds and ranks), and the penalty within a phase uses the value from the
start of the phase. Upstream updates it per rank and per round, so its value depends on how the
batch is split over GPUs; ours does not, which makes N-GPU and 1-GPU runs agree and resume exact.
With decay 0.01 the one-phase lag changes the penalty by well under 1 %.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from . import stats

PHASES = ("Gmain", "Greg", "Gboth", "Dmain", "Dreg", "Dboth")


def lazy_regularization_adam(lr: float, betas: Sequence[float], reg_interval: Optional[int]) -> Tuple[float, tuple]:
    """Adam learning rate and betas corrected for a regulariser evaluated every ``reg_interval`` steps.

    With lazy regularisation one optimiser step in ``k`` is an extra regularisation step, so the
    main steps' lr and momenta are scaled by ``k / (k + 1)`` as in the StyleGAN2 paper (Appendix
    B): ``lr * c`` and ``beta ** c``. ``None`` or 0 means no lazy regularisation (unchanged values).
    """
    if not reg_interval:
        return float(lr), tuple(float(b) for b in betas)
    if reg_interval < 1:
        raise ValueError(f"reg_interval must be a positive integer or None; got {reg_interval!r}")
    c = reg_interval / (reg_interval + 1)
    return float(lr) * c, tuple(float(b) ** c for b in betas)


class StyleGAN2Loss:
    """Computes the losses of one phase on one chunk of the batch and backpropagates them.

    ``G`` must provide ``mapping(z, c, update_emas=...)``, ``synthesis(ws)`` and ``num_ws``; ``D`` is
    called as ``D(img, c) -> logits [N, 1]``. ``augment_pipe`` (or None) is applied to every image D
    sees. ``pl_mean`` is a 0-d float32 tensor kept in :meth:`state_dict` so that resume is exact.
    """

    def __init__(self, G, D, augment_pipe=None, r1_gamma: float = 10, style_mixing_prob: float = 0.9,
                 pl_weight: float = 2, pl_batch_shrink: int = 2, pl_decay: float = 0.01):
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.r1_gamma = float(r1_gamma)
        self.style_mixing_prob = float(style_mixing_prob)
        self.pl_weight = float(pl_weight)
        self.pl_batch_shrink = int(pl_batch_shrink)
        self.pl_decay = float(pl_decay)
        if self.pl_batch_shrink < 1:
            raise ValueError(f"pl_batch_shrink must be >= 1; got {pl_batch_shrink}")
        device = next(iter(G.parameters())).device
        self.pl_mean = torch.zeros([], dtype=torch.float32, device=device)
        self._pl_sum = torch.zeros([], dtype=torch.float64, device=device)
        self._pl_num = torch.zeros([], dtype=torch.float64, device=device)

    # ---------------------------------------------------------------- state for snapshots / resume
    def state_dict(self) -> dict:
        """Plain-tensor state that a snapshot stores: the running path-length mean."""
        return {"pl_mean": self.pl_mean.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output."""
        self.pl_mean.copy_(torch.as_tensor(state["pl_mean"], dtype=torch.float32))

    # ---------------------------------------------------------------- network evaluation
    def style_mix(self, ws: torch.Tensor, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Replace ``ws[:, cutoff:]`` with the ws of fresh latents, one cutoff per minibatch."""
        num_ws = ws.shape[1]
        if self.style_mixing_prob <= 0 or num_ws < 2:
            return ws
        cutoff = int(torch.randint(1, num_ws, [], device="cpu"))
        if float(torch.rand([], device="cpu")) >= self.style_mixing_prob:
            return ws
        ws2 = self.G.mapping(torch.randn_like(z), c, update_emas=False)
        return torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)

    def run_G(self, z: torch.Tensor, c: torch.Tensor, update_emas: bool = False):
        """Generate images and the ws they came from (with style mixing)."""
        ws = self.G.mapping(z, c, update_emas=update_emas)
        ws = self.style_mix(ws, z, c)
        img = self.G.synthesis(ws)
        return img, ws

    def run_D(self, img: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Discriminator logits of (augmented) images."""
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c)

    # ---------------------------------------------------------------- one phase, one chunk
    def accumulate_gradients(self, phase: str, real_img: torch.Tensor, real_c: torch.Tensor,
                             gen_z: torch.Tensor, gen_c: torch.Tensor, gain: float, cur_nimg: int) -> None:
        """Backpropagate the loss of ``phase`` on this chunk, scaled by ``gain``; grads accumulate.

        ``phase`` is one of Gmain, Greg, Gboth, Dmain, Dreg, Dboth. ``real_img`` is NCHW float in
        about [-1, 1]. ``gain`` carries both the lazy-regularisation interval and, in the training
        loop, ``1 / rounds`` so that the accumulated gradient is the mean over the global batch.
        ``cur_nimg`` (images shown so far) is accepted for interface compatibility (schedules).
        """
        if phase not in PHASES:
            raise ValueError(f"unknown loss phase {phase!r}; expected one of {', '.join(PHASES)}")
        do_Gmain = phase in ("Gmain", "Gboth")
        do_Dmain = phase in ("Dmain", "Dboth")
        do_Gpl = phase in ("Greg", "Gboth") and self.pl_weight != 0
        do_Dr1 = phase in ("Dreg", "Dboth") and self.r1_gamma != 0

        if do_Gmain:
            gen_img, _ = self.run_G(gen_z, gen_c)
            gen_logits = self.run_D(gen_img, gen_c)
            stats.report("Loss/scores/fake", gen_logits)
            stats.report("Loss/signs/fake", gen_logits.sign())
            loss_G = F.softplus(-gen_logits)
            stats.report("Loss/G/loss", loss_G)
            loss_G.mean().mul(gain).backward()

        if do_Gpl:
            self._accumulate_path_length(gen_z, gen_c, gain)

        if do_Dmain:
            with torch.no_grad():
                gen_img, _ = self.run_G(gen_z, gen_c, update_emas=True)
            gen_logits = self.run_D(gen_img, gen_c)
            stats.report("Loss/scores/fake", gen_logits)
            stats.report("Loss/signs/fake", gen_logits.sign())
            loss_Dgen = F.softplus(gen_logits)
            loss_Dgen.mean().mul(gain).backward()

        if do_Dmain or do_Dr1:
            real = real_img.detach().requires_grad_(do_Dr1)
            real_logits = self.run_D(real, real_c)
            stats.report("Loss/scores/real", real_logits)
            stats.report("Loss/signs/real", real_logits.sign())
            total = torch.zeros_like(real_logits)
            if do_Dmain:
                loss_Dreal = F.softplus(-real_logits)
                stats.report("Loss/D/loss", loss_Dgen + loss_Dreal)
                total = total + loss_Dreal
            if do_Dr1:
                (r1_grads,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
                r1_penalty = r1_grads.square().sum(dim=[1, 2, 3])
                stats.report("Loss/r1_penalty", r1_penalty)
                loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
                stats.report("Loss/D/reg", loss_Dr1)
                total = total + loss_Dr1.unsqueeze(1)
            total.mean().mul(gain).backward()

    def _accumulate_path_length(self, gen_z, gen_c, gain):
        """Path-length penalty on ``batch // pl_batch_shrink`` samples against the phase-start pl_mean."""
        n = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
        img, ws = self.run_G(gen_z[:n], gen_c[:n])
        noise = torch.randn_like(img) / np.sqrt(img.shape[2] * img.shape[3])
        (grads,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grads.square().sum(dim=2).mean(dim=1).sqrt()
        self._pl_sum += lengths.detach().double().sum()
        self._pl_num += lengths.shape[0]
        penalty = (lengths - self.pl_mean).square()
        stats.report("Loss/pl_penalty", penalty)
        loss_pl = penalty * self.pl_weight
        stats.report("Loss/G/reg", loss_pl)
        loss_pl.mean().mul(gain).backward()

    def finish_phase(self, phase: str, all_reduce: Optional[Callable[[torch.Tensor], None]] = None) -> None:
        """Close a phase after all its chunks: update ``pl_mean`` from the whole batch's path lengths.

        ``all_reduce`` (in-place sum across ranks, or None) merges the per-rank sums, so every rank
        ends with the same ``pl_mean``: ``pl_mean += pl_decay * (mean(a) - pl_mean)``; a non-finite
        ``mean(a)`` leaves it unchanged. No host sync.
        """
        if phase not in ("Greg", "Gboth"):
            return
        acc = torch.stack([self._pl_sum, self._pl_num])
        if all_reduce is not None:
            all_reduce(acc)
        # Decided on the device (no host sync). Without path lengths this phase, or when they were
        # NaN/inf (one bad step), pl_mean stays as it is, so one bad step cannot poison every later one.
        batch_mean = (acc[0] / acc[1].clamp(min=1)).to(self.pl_mean.dtype)
        keep = (acc[1] > 0) & torch.isfinite(batch_mean)
        self.pl_mean.copy_(torch.where(keep, self.pl_mean.lerp(batch_mean, self.pl_decay), self.pl_mean))
        self._pl_sum.zero_()
        self._pl_num.zero_()
