"""Fused bias + activation + gain + clamp: ``y = clamp(gain * act(x + b), -clamp, +clamp)``.

Every StyleGAN2 layer ends with this step (StyleGAN2-ADA ``torch_utils/ops/bias_act.py``;
docs/references.md). The reference path below is plain PyTorch and therefore differentiable to any order
(R1 and path-length regularisation need the second derivative). A CUDA kernel may replace it through
:mod:`stylegan2.ops.backend`; both must agree with the definitions in :data:`activation_funcs`.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F

from . import backend


class ActivationSpec(NamedTuple):
    """One activation function and the defaults a layer uses with it.

    ``func(x, alpha)`` is the element-wise activation; ``def_alpha`` its default shape parameter
    (only ``lrelu`` uses one: the negative slope); ``def_gain`` the default output gain that keeps
    the signal variance roughly constant (He-style, sqrt(2) for rectifiers); ``grad_uses_y`` tells
    a kernel that the derivative can be computed from the output ``y`` alone (so ``x`` need not be
    kept for backward); ``has_2nd_grad`` whether the second derivative is non-zero anywhere;
    ``cuda_idx`` the activation's number in the CUDA kernel.
    """

    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float
    def_gain: float
    grad_uses_y: bool
    has_2nd_grad: bool
    cuda_idx: int


def _selu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.selu(x)


activation_funcs = {
    "linear": ActivationSpec(lambda x, alpha: x, 0.0, 1.0, True, False, 1),
    "relu": ActivationSpec(lambda x, alpha: F.relu(x), 0.0, math.sqrt(2), True, False, 2),
    "lrelu": ActivationSpec(lambda x, alpha: F.leaky_relu(x, alpha), 0.2, math.sqrt(2), True, False, 3),
    "tanh": ActivationSpec(lambda x, alpha: torch.tanh(x), 0.0, 1.0, True, True, 4),
    "sigmoid": ActivationSpec(lambda x, alpha: torch.sigmoid(x), 0.0, 1.0, True, True, 5),
    "elu": ActivationSpec(lambda x, alpha: F.elu(x), 0.0, 1.0, True, True, 6),
    "selu": ActivationSpec(_selu, 0.0, 1.0, True, True, 7),
    "softplus": ActivationSpec(lambda x, alpha: F.softplus(x), 0.0, 1.0, True, True, 8),
    "swish": ActivationSpec(lambda x, alpha: x * torch.sigmoid(x), 0.0, math.sqrt(2), False, True, 9),
}


def resolve_params(act: str, alpha: Optional[float], gain: Optional[float], clamp: Optional[float]):
    """Check ``act`` and fill in defaults: returns ``(spec, alpha, gain, clamp)`` as floats (clamp -1 = off)."""
    if act not in activation_funcs:
        raise ValueError(f"bias_act: unknown activation {act!r}; expected one of {', '.join(activation_funcs)}")
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return spec, alpha, gain, clamp


def bias_act(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl=None):
    """Add bias ``b`` (1-D, broadcast along axis ``dim`` of ``x``), apply ``act``, scale by ``gain``, clamp.

    ``alpha`` and ``gain`` default to the activation's own values (:data:`activation_funcs`);
    ``clamp`` (None = off) bounds the output to ``[-clamp, +clamp]`` and zeroes the gradient where
    it bites. ``impl='ref'`` forces the PyTorch reference path. Returns a tensor shaped like ``x``.
    """
    if impl != 'ref' and backend.kernels_for('bias_act', x) is not None:
        from .bias_act_cuda import bias_act_cuda
        return bias_act_cuda(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    return _bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


def check_bias(x: torch.Tensor, b: torch.Tensor, dim: int) -> None:
    """Raise a clear ValueError unless ``b`` is a 1-D tensor as long as axis ``dim`` of ``x``."""
    if not isinstance(b, torch.Tensor) or b.ndim != 1:
        raise ValueError("bias_act: b must be a 1-D tensor")
    if not 0 <= dim < x.ndim or x.shape[dim] != b.shape[0]:
        raise ValueError(f"bias_act: bias of length {b.shape[0]} does not match axis {dim} of x "
                         f"with shape {tuple(x.shape)}")


def _bias_act_ref(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None):
    """Reference path: the four steps as separate PyTorch ops (any-order differentiable)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"bias_act: x must be a tensor, got {type(x).__name__}")
    spec, alpha, gain, clamp = resolve_params(act, alpha, gain, clamp)
    if b is not None:
        check_bias(x, b, dim)
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape).to(x.dtype)
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x
