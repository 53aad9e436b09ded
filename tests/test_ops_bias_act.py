"""bias_act: y = clamp(gain * act(x + b), +-clamp), with first and second derivatives."""
import math

import numpy as np
import pytest
import torch

from stylegan2.ops.bias_act import activation_funcs, bias_act

# Independent numpy definitions of every activation (alpha only matters for lrelu).
NUMPY_ACTS = {
    "linear": lambda x, a: x,
    "relu": lambda x, a: np.maximum(x, 0),
    "lrelu": lambda x, a: np.where(x >= 0, x, a * x),
    "tanh": lambda x, a: np.tanh(x),
    "sigmoid": lambda x, a: 1 / (1 + np.exp(-x)),
    "elu": lambda x, a: np.where(x > 0, x, np.expm1(x)),
    "selu": lambda x, a: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x)),
    "softplus": lambda x, a: np.log1p(np.exp(x)),
    "swish": lambda x, a: x / (1 + np.exp(-x)),
}
EXPECTED_GAIN = {"linear": 1, "relu": math.sqrt(2), "lrelu": math.sqrt(2), "tanh": 1, "sigmoid": 1,
                 "elu": 1, "selu": 1, "softplus": 1, "swish": math.sqrt(2)}


def _data(seed=0, shape=(3, 5, 4, 2), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype) * 2
    b = torch.randn(shape[1], generator=g, dtype=dtype)
    return x, b


def test_every_activation_is_listed_with_upstream_defaults():
    assert set(activation_funcs) == set(NUMPY_ACTS)
    for name, spec in activation_funcs.items():
        assert spec.def_gain == pytest.approx(EXPECTED_GAIN[name])
    assert activation_funcs["lrelu"].def_alpha == pytest.approx(0.2)
    assert not activation_funcs["swish"].grad_uses_y


@pytest.mark.parametrize("act", sorted(NUMPY_ACTS))
def test_values_match_numpy_with_default_alpha_and_gain(act):
    x, b = _data()
    y = bias_act(x, b, act=act).numpy()
    xn = x.numpy() + b.numpy()[None, :, None, None]
    ref = NUMPY_ACTS[act](xn, 0.2) * EXPECTED_GAIN[act]
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_bias_follows_the_chosen_axis():
    x, _ = _data()
    b = torch.arange(x.shape[3], dtype=x.dtype)
    y = bias_act(x, b, dim=3, act="linear")
    np.testing.assert_allclose(y.numpy(), x.numpy() + np.arange(x.shape[3]), rtol=0, atol=1e-12)


def test_explicit_alpha_gain_and_clamp():
    x, b = _data()
    y = bias_act(x, b, act="lrelu", alpha=0.1, gain=3.0, clamp=1.5).numpy()
    xn = x.numpy() + b.numpy()[None, :, None, None]
    ref = np.clip(3.0 * np.where(xn >= 0, xn, 0.1 * xn), -1.5, 1.5)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    assert np.abs(y).max() == pytest.approx(1.5)  # the clamp actually bit


def test_no_bias_no_activation_is_identity():
    x, _ = _data()
    assert torch.equal(bias_act(x), x)


def test_clamp_zeroes_the_gradient_where_it_bites():
    x = torch.tensor([[-3.0, -0.5, 0.5, 3.0]], dtype=torch.float64, requires_grad=True)
    y = bias_act(x, act="linear", clamp=1.0)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert grad.tolist() == [[0.0, 1.0, 1.0, 0.0]]


@pytest.mark.parametrize("act", ["linear", "lrelu", "tanh", "sigmoid", "elu", "softplus", "swish"])
def test_first_and_second_derivatives_gradcheck(act):
    x, b = _data(seed=1, shape=(2, 3, 2, 2))
    # Keep values away from the kink at 0 so finite differences are valid for lrelu/elu.
    x = torch.where(x.abs() < 0.1, x + 0.3, x)
    x.requires_grad_(True)
    b = (b * 0).requires_grad_(True)
    fn = lambda x, b: bias_act(x, b, act=act, gain=1.3, clamp=100)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown activation 'gelu2'"):
        bias_act(torch.zeros(2, 2), act="gelu2")


def test_bias_of_the_wrong_length_is_a_clear_error():
    with pytest.raises(ValueError, match="does not match axis 1"):
        bias_act(torch.zeros(2, 3), torch.zeros(4))
