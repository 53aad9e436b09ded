"""Autograd wrapper around our fused ``bias_act`` CUDA kernel (first and second order gradients).

The kernel (``cuda/bias_act.cu``) has three modes: 0 = forward, 1 = first derivative, 2 = second
derivative (see ``cuda/bias_act.h``). With ``z = x + b`` and ``y = clamp(gain * f(z))``:

- backward of the forward:        ``dz = dy * gain * f'(z) * m`` (mode 1; m = 0 where the clamp bit)
- backward of that backward:      w.r.t. ``dy`` it is mode 1 again (linear in dy); w.r.t. ``z`` it is
  ``ddz * dy * gain * f''(z) * m`` (mode 2).

For linear/relu/lrelu with ``gain > 0`` and ``alpha >= 0`` the slope follows from the sign of ``y``,
so only the output is kept for backward (``f'' = 0`` there); every other activation keeps ``x``.
Third and higher derivatives are not provided (StyleGAN2's R1 and path-length terms need two).
Callers go through :func:`stylegan2.ops.bias_act.bias_act`, which sends CUDA tensors here when
:func:`stylegan2.ops.backend.kernels_for` returns the extension.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import plugin
from .bias_act import activation_funcs, check_bias, resolve_params


def _dense_like(t: torch.Tensor, like: Optional[torch.Tensor]) -> torch.Tensor:
    """``t`` with exactly ``like``'s strides (the kernel walks both as the same flat memory); ``t`` made
    dense when there is no reference to follow."""
    if like is None:
        return _dense(t)
    if t.stride() == like.stride():
        return t
    return torch.empty_like(like).copy_(t)


def _dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself if contiguous or channels_last (any dense layout), else a contiguous copy."""
    if x.ndim == 0 or x.is_contiguous() or (x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return x
    return x.contiguous()


def _reduce_to_bias(dz: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum a gradient over every axis except ``dim`` (the bias gradient)."""
    axes = [a for a in range(dz.ndim) if a != dim]
    return dz.sum(dim=axes) if axes else dz


class _Setup:
    """Resolved, hashable parameters of one bias_act call (shared by the two Functions)."""

    def __init__(self, dim: int, act: str, alpha: float, gain: float, clamp: float):
        spec = activation_funcs[act]
        self.dim, self.act, self.alpha, self.gain, self.clamp = dim, act, alpha, gain, clamp
        self.code = spec.cuda_idx
        self.ref_is_y = act in ("linear", "relu", "lrelu") and gain > 0 and alpha >= 0
        # Linear without a clamp has the constant slope ``gain``: keep no tensor at all, so callers may
        # update the output in place (the networks' residual ``y.add_(x)``) without breaking backward.
        self.needs_ref = not (act == "linear" and clamp < 0)
        self.has_2nd_grad = spec.has_2nd_grad

    def run(self, x, b, x_ref, y_ref, grad: int) -> torch.Tensor:
        ext = plugin.load("bias_act", x.device)
        return ext.bias_act(x, b, x_ref, y_ref, grad, self.dim, self.code, self.alpha, self.gain, self.clamp)


class _BiasActFunction(torch.autograd.Function):
    """y = clamp(gain * f(x + b)); keeps x (and b) or y for the backward pass."""

    @staticmethod
    def forward(ctx, x, b, setup: _Setup):
        x = _dense(x)
        y = setup.run(x, b, None, None, 0)
        ctx.setup = setup
        ctx.x_shape = x.shape
        if not setup.needs_ref:
            ctx.save_for_backward(None, None, None)
        elif setup.ref_is_y:
            ctx.save_for_backward(None, None, y)
        else:
            ctx.save_for_backward(x, b, None)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, b, y = ctx.saved_tensors
        setup = ctx.setup
        dz = _BiasActGradFunction.apply(dy, x, b, y, setup)
        dx = dz if ctx.needs_input_grad[0] else None
        db = _reduce_to_bias(dz, setup.dim) if ctx.needs_input_grad[1] else None
        return dx, db, None


class _BiasActGradFunction(torch.autograd.Function):
    """dz = dy * gain * f'(z) * m, itself differentiable once more (for R1 / path length)."""

    @staticmethod
    def forward(ctx, dy, x, b, y, setup: _Setup):
        ref = y if setup.ref_is_y else x
        dy = _dense_like(dy, ref)
        dz = setup.run(dy, b if x is not None else None, x, y, 1)
        ctx.setup = setup
        ctx.save_for_backward(dy, x, b, y)
        return dz

    @staticmethod
    def backward(ctx, ddz):
        dy, x, b, y = ctx.saved_tensors
        setup = ctx.setup
        d_dy = d_x = d_b = None
        if ctx.needs_input_grad[0]:
            d_dy = _BiasActGradFunction.apply(ddz, x, b, y, setup)
        if (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]) and setup.has_2nd_grad and not setup.ref_is_y:
            d_z = setup.run(_dense_like(ddz * dy, x), b, x, None, 2)
            d_x = d_z if ctx.needs_input_grad[1] else None
            d_b = _reduce_to_bias(d_z, setup.dim) if ctx.needs_input_grad[2] else None
        # With a y reference the slope is piecewise constant, so nothing flows back into y.
        return d_dy, d_x, d_b, None, None


def bias_act_cuda(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = "linear",
                  alpha: Optional[float] = None, gain: Optional[float] = None,
                  clamp: Optional[float] = None) -> torch.Tensor:
    """Same contract as :func:`stylegan2.ops.bias_act.bias_act`, computed by one fused CUDA kernel."""
    if not isinstance(x, torch.Tensor) or x.device.type != "cuda":
        raise ValueError("bias_act_cuda: x must be a CUDA tensor")
    _, alpha, gain, clamp = resolve_params(act, alpha, gain, clamp)
    if b is not None:
        check_bias(x, b, dim)
        b = b.to(device=x.device, dtype=x.dtype).contiguous()
    setup = _Setup(dim, act, alpha, gain, clamp)
    return _BiasActFunction.apply(x, b, setup)
