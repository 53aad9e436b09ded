"""Projection: find the latent (and noise) for which a generator reproduces a given image.

The optimisation of the StyleGAN2 paper (Karras et al. 2020, section 5 and appendix D), with a
download-free image distance in place of LPIPS:

- start from ``w_avg`` (the mean of ``w_avg_samples`` mapped seeded z) and the generator's constant
  noise maps; optimise one w broadcast to every layer (the paper) or one w per layer (``w_plus``,
  "W+"), together with the noise maps;
- Adam (betas 0.9, 0.999) with the paper's learning-rate schedule: cosine ramp-down over the last
  ``lr_rampdown`` (25 %) of the steps, linear ramp-up over the first ``lr_rampup`` (5 %), peak
  ``initial_lr`` (0.1);
- ramped Gaussian noise added to w: ``w_std * initial_noise_factor * max(0, 1 - t / noise_ramp_length)^2``
  (0.05 and 0.75 in the paper), which helps the search leave the start early on;
- noise regularisation (weight ``regularize_noise_weight``, 1e5 in the paper): for every noise map
  and its 2x average-pooled versions down to 8 x 8, the squared autocorrelation at one pixel
  across and one down (:func:`noise_regularization`), so the maps cannot carry the image; after
  every step each map is renormalised to mean 0, variance 1.

The loss is :func:`multi_scale_distance` (mean squared pixel difference at full resolution and at
2x, 4x ... average-pooled versions down to ``min_size``) plus whatever ``extra_loss(images, target)``
adds (the audio layer adds spectral terms). Nothing here knows that the images are spectrograms.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F


@dataclasses.dataclass
class ProjectionResult:
    """What :func:`project` found.

    ``ws``: the final latent, float32 ``[num_ws, w_dim]`` (one row repeated unless ``w_plus``);
    ``noise``: the optimised noise maps by buffer name; ``image``: the generator's image for them
    ``[C, H, W]``; ``start_distance`` / ``final_distance``: :func:`multi_scale_distance` to the
    target at ``w_avg`` with the constant noise, and at the result; ``history``: one dict per step
    (``step``, ``loss``, ``distance``, ``noise_reg``, ``lr`` and the extra terms).
    """

    ws: torch.Tensor
    noise: Dict[str, torch.Tensor]
    image: torch.Tensor
    start_distance: float
    final_distance: float
    history: List[Dict[str, float]]
    w_plus: bool

    @property
    def closed_share(self) -> float:
        """Share of the start -> target distance closed: ``1 - final / start`` (1 = reached the target)."""
        return 1.0 - self.final_distance / self.start_distance if self.start_distance > 0 else 1.0


def multi_scale_distance(images: torch.Tensor, target: torch.Tensor, min_size: int = 8) -> torch.Tensor:
    """Mean over scales of the mean squared difference, per image: ``[N]``.

    Scales: the full ``H x W`` and repeated 2x average pooling while the side stays >= ``min_size``.
    Coarse scales weigh the overall layout as much as the fine detail, as a perceptual distance
    would, without a downloaded network.
    """
    a, b = images.float(), target.float().expand_as(images)
    terms = []
    while True:
        terms.append((a - b).square().mean(dim=(1, 2, 3)))
        if min(a.shape[-2:]) // 2 < min_size:
            break
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return torch.stack(terms).mean(dim=0)


def noise_regularization(noise_maps) -> torch.Tensor:
    """Sum over maps and scales of the squared one-pixel autocorrelations (horizontal and vertical).

    Each map (``[H, W]``) is taken at full size and then 2x average-pooled until it is 8 x 8 or
    smaller, as in the StyleGAN2 paper's projector; a map of white unit noise scores about 0.
    """
    noise_maps = list(noise_maps)
    total = torch.zeros([], device=noise_maps[0].device if noise_maps else "cpu")
    for buf in noise_maps:
        n = buf[None, None]
        while True:
            total = total + (n * torch.roll(n, shifts=1, dims=3)).mean().square()
            total = total + (n * torch.roll(n, shifts=1, dims=2)).mean().square()
            if n.shape[2] <= 8:
                break
            n = F.avg_pool2d(n, kernel_size=2)
    return total


def learning_rate(step: int, num_steps: int, initial_lr: float = 0.1, lr_rampdown: float = 0.25,
                  lr_rampup: float = 0.05) -> float:
    """The paper's schedule at ``step`` of ``num_steps``: cosine ramp-down at the end, linear ramp-up at the start."""
    t = step / num_steps
    ramp = min(1.0, (1.0 - t) / lr_rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp = ramp * min(1.0, t / lr_rampup)
    return initial_lr * ramp


def noise_buffers(G) -> Dict[str, torch.Tensor]:
    """The synthesis network's constant noise maps by buffer name (what ``noise_mode='const'`` uses)."""
    return {name: buf for name, buf in G.synthesis.named_buffers() if name.endswith("noise_const")}


def w_statistics(G, samples: int = 10000, seed: int = 123456, device="cpu", c=None):
    """``(w_avg [w_dim], w_std scalar)`` of the mapping of ``samples`` seeded standard-normal z.

    ``w_std = sqrt(mean ||w - w_avg||^2)``, the scale of the ramped w noise. Computed rather than read
    from ``G.mapping.w_avg`` so it holds for any snapshot (the tracked mean lags early in training).
    """
    z = torch.from_numpy(np.random.RandomState(seed).randn(samples, G.z_dim).astype(np.float32)).to(device)
    c = torch.zeros(samples, G.c_dim, device=device) if c is None else c.expand(samples, -1)
    with torch.no_grad():
        w = torch.cat([G.mapping(zc, cc)[:, 0] for zc, cc in zip(z.split(1000), c.split(1000))]).float()
    w_avg = w.mean(dim=0)
    return w_avg, float((w - w_avg).square().sum(dim=1).mean().sqrt())


def project(G, target: torch.Tensor, *, num_steps: int = 1000, w_plus: bool = False, seed: int = 0,
            initial_lr: float = 0.1, lr_rampdown: float = 0.25, lr_rampup: float = 0.05,
            initial_noise_factor: float = 0.05, noise_ramp_length: float = 0.75,
            regularize_noise_weight: float = 1e5, w_avg_samples: int = 10000, min_size: int = 8,
            extra_loss: Optional[Callable[[torch.Tensor, torch.Tensor], Dict[str, torch.Tensor]]] = None,
            c: Optional[torch.Tensor] = None, device="cpu",
            callback: Optional[Callable[[Dict[str, float]], None]] = None) -> ProjectionResult:
    """Optimise w (or W+) and the noise maps so that ``G.synthesis`` reproduces ``target`` (see the module docstring).

    ``target``: ``[C, H, W]`` float in the generator's range (about [-1, 1]). ``extra_loss(images,
    target)`` returns named scalar loss terms added to the distance (each reported in the history).
    ``seed`` fixes the ramped w noise. ``c``: a label ``[1, c_dim]`` for conditional models.
    ``callback`` is called with each step's history entry (progress bars). ``G`` is not modified: a
    copy is optimised.
    """
    if num_steps < 1:
        raise ValueError(f"projection: num_steps must be >= 1, got {num_steps}")
    device = torch.device(device)
    G = copy.deepcopy(G).eval().requires_grad_(False).to(device)
    target = target.to(device, torch.float32)
    expect = (G.img_channels, G.img_resolution, G.img_resolution)
    if tuple(target.shape) != expect:
        raise ValueError(f"projection: target has shape {list(target.shape)}, the generator makes {list(expect)}")
    target = target[None]
    w_avg, w_std = w_statistics(G, w_avg_samples, device=device, c=c)
    num_ws = int(G.num_ws)
    start = w_avg[None, None].repeat(1, num_ws if w_plus else 1, 1)
    w_opt = start.clone().requires_grad_(True)
    bufs = noise_buffers(G)
    force_fp32 = device.type != "cuda"

    def render(ws):
        return G.synthesis(ws.expand(-1, num_ws, -1) if not w_plus else ws, noise_mode="const", force_fp32=force_fp32)

    with torch.no_grad():
        start_distance = float(multi_scale_distance(render(start), target, min_size)[0])
    optimizer = torch.optim.Adam([w_opt] + list(bufs.values()), betas=(0.9, 0.999), lr=initial_lr)
    for buf in bufs.values():
        buf.requires_grad_(True)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    history: List[Dict[str, float]] = []
    for step in range(num_steps):
        lr = learning_rate(step, num_steps, initial_lr, lr_rampdown, lr_rampup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        t = step / num_steps
        w_noise_scale = w_std * initial_noise_factor * max(0.0, 1.0 - t / noise_ramp_length) ** 2
        w_noise = torch.randn(w_opt.shape, generator=gen, device=device) * w_noise_scale
        images = render(w_opt + w_noise)
        distance = multi_scale_distance(images, target, min_size)[0]
        reg = noise_regularization(list(bufs.values())).to(device)
        loss = distance + reg * regularize_noise_weight
        entry = {"step": step, "lr": lr, "distance": distance.item(), "noise_reg": reg.item()}
        if extra_loss is not None:
            for name, value in extra_loss(images, target).items():
                loss = loss + value
                entry[name] = value.item()
        entry["loss"] = loss.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for buf in bufs.values():
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()
        history.append(entry)
        if callback is not None:
            callback(entry)
    with torch.no_grad():
        ws = w_opt.detach().expand(-1, num_ws, -1) if not w_plus else w_opt.detach()
        image = render(w_opt.detach())
        final_distance = float(multi_scale_distance(image, target, min_size)[0])
    return ProjectionResult(ws=ws[0].cpu().clone(), noise={k: v.detach().cpu().clone() for k, v in bufs.items()},
                            image=image[0].cpu(), start_distance=start_distance, final_distance=final_distance,
                            history=history, w_plus=bool(w_plus))
