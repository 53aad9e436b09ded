"""Our CUDA kernels equal the reference ops: forward, first and second order gradients.

GPU tests (``make gpu-check``) compare against the pure-PyTorch reference evaluated in float64 on
the same inputs. Stated tolerances (absolute, on values of order 1):

- float64: 1e-10 (the kernels accumulate in double; only summation order differs)
- float32: 2e-5
- float16: 2e-2 for bias_act, 5e-2 for upfirdn2d (one or two half-precision roundings of values up
  to ~4; the kernels round once, the reference after every step)

plus ``gradcheck``/``gradgradcheck`` of the kernels themselves in float64, which needs no reference,
and a seeded 64x64 tiny-preset training run whose per-iteration losses with the kernels equal those
with the reference ops within ``TRAIN_RTOL``/``TRAIN_ATOL`` (fp32).
The adjoint padding formula used by the upfirdn2d backward is also checked on CPU with the
reference op, so it is verified on every machine.
"""

import pytest
import torch

from stylegan2.ops import backend
from stylegan2.ops.bias_act import _bias_act_ref, activation_funcs
from stylegan2.ops.upfirdn2d import _upfirdn2d_ref
from stylegan2.ops.upfirdn2d_cuda import _axis_grad_padding

TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-2}
UPFIRDN_TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 5e-2}
LAYOUTS = ("contiguous", "channels_last")

# (up, down, padding (px0, px1, py0, py1), filter shape: (taps,) separable or (h, w), flip, gain)
UPFIRDN_CASES = [
    ((1, 1), (1, 1), (1, 2, 1, 2), (4, 4), False, 1.0),     # filter2d with [1,3,3,1]
    ((2, 2), (1, 1), (2, 1, 2, 1), (4, 4), False, 4.0),     # upsample2d
    ((1, 1), (2, 2), (1, 1, 1, 1), (4, 4), False, 1.0),     # downsample2d
    ((2, 1), (1, 2), (3, -1, 0, 2), (3, 5), True, 2.0),     # per-axis factors, a crop, correlation
    ((1, 1), (1, 1), (-2, -1, -1, -3), (1, 1), False, 1.0),  # pure crop
    ((3, 2), (2, 3), (4, 2, 1, 5), (5, 7), False, 0.5),     # general factors -> general kernel
    ((2, 2), (1, 1), (6, 5, 6, 5), (12,), False, 4.0),      # separable 12-tap
    ((1, 1), (2, 2), (13, 13, 14, 14), (27, 30), True, 1.0),  # large 2-D filter -> general kernel
]


def _layout(x, layout):
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x.contiguous()


# ---------------------------------------------------------------------------------------------
# CPU: the adjoint used by the upfirdn2d backward


@pytest.mark.parametrize("up,down,padding,fshape,flip,gain", UPFIRDN_CASES)
def test_upfirdn2d_backward_padding_gives_the_adjoint(up, down, padding, fshape, flip, gain):
    """<U x, y> = <x, U* y> with U* = upfirdn2d(up<->down, flipped filter, recomputed padding)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64, generator=gen)
    f = torch.randn(*fshape, dtype=torch.float64, generator=gen)
    f2 = f if f.ndim == 2 else torch.outer(f, f)
    y = _upfirdn2d_ref(x, f2, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    g = torch.randn(y.shape, dtype=torch.float64, generator=gen)
    gx = _axis_grad_padding(x.shape[3], y.shape[3], up[0], down[0], f2.shape[1], padding[0])
    gy = _axis_grad_padding(x.shape[2], y.shape[2], up[1], down[1], f2.shape[0], padding[2])
    adj = _upfirdn2d_ref(g, f2, up=down, down=up, padding=(gx[0], gx[1], gy[0], gy[1]), flip_filter=not flip,
                         gain=gain)
    assert adj.shape == x.shape
    assert torch.allclose((y * g).sum(), (x * adj).sum(), rtol=1e-12, atol=1e-10)
    # and it is the true gradient (autograd of the reference, an independent route)
    xr = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(_upfirdn2d_ref(xr, f2, up=up, down=down, padding=padding, flip_filter=flip,
                                                 gain=gain), xr, g)
    assert torch.allclose(adj, auto, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# GPU


@pytest.fixture
def cuda_kernels():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    backend.set_mode("cuda")  # a kernel that does not build is a failure here, not a fallback
    yield torch.device("cuda")
    backend.set_mode(None)


def _bias_act_case(device, dtype, layout, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, 6, 7, generator=gen, dtype=torch.float64) * 2
    b = torch.randn(5, generator=gen, dtype=torch.float64)
    return _layout(x.to(device, dtype), layout), b.to(device, dtype)


def _second_order(out, inputs):
    """Gradients of ``out.sum()`` w.r.t. ``inputs``; None where ``out`` does not depend on them."""
    if not out.requires_grad:
        return [None] * len(inputs)
    return torch.autograd.grad(out.sum(), inputs, allow_unused=True)


@pytest.mark.gpu
@pytest.mark.parametrize("act", list(activation_funcs))
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("clamp", [None, 0.7])
def test_bias_act_forward_and_gradients_match_the_reference(cuda_kernels, act, dtype, layout, clamp):
    from stylegan2.ops.bias_act_cuda import bias_act_cuda
    x, b = _bias_act_case(cuda_kernels, dtype, layout)
    x.requires_grad_(True)
    b.requires_grad_(True)
    y = bias_act_cuda(x, b, dim=1, act=act, clamp=clamp)
    assert y.dtype == dtype and y.stride() == x.stride()

    x64 = x.detach().double().requires_grad_(True)
    b64 = b.detach().double().requires_grad_(True)
    y64 = _bias_act_ref(x64, b64, dim=1, act=act, clamp=clamp)
    tol = TOL[dtype]
    torch.testing.assert_close(y.double(), y64, atol=tol, rtol=tol)

    dy = torch.randn_like(y64)
    dx, db = torch.autograd.grad(y, [x, b], dy.to(dtype), create_graph=True)
    dx64, db64 = torch.autograd.grad(y64, [x64, b64], dy, create_graph=True)
    # the clamp edge (|y| exactly at clamp) is a measure-zero set; random data does not hit it
    torch.testing.assert_close(dx.double(), dx64, atol=tol * 4, rtol=tol)
    torch.testing.assert_close(db.double(), db64, atol=tol * 100, rtol=tol * 10)

    w = torch.randn_like(dx64)
    ddx, ddb = _second_order(dx * w.to(dtype), [x, b])
    ddx64, ddb64 = _second_order(dx64 * w, [x64, b64])
    as64 = lambda g, like: g.double() if g is not None else torch.zeros_like(like)
    torch.testing.assert_close(as64(ddx, x64), as64(ddx64, x64), atol=tol * 8, rtol=tol * 2)
    torch.testing.assert_close(as64(ddb, b64), as64(ddb64, b64), atol=tol * 200, rtol=tol * 10)


@pytest.mark.gpu
@pytest.mark.parametrize("act", list(activation_funcs))
def test_bias_act_kernel_passes_gradcheck_and_gradgradcheck(cuda_kernels, act):
    from stylegan2.ops.bias_act_cuda import bias_act_cuda
    x, b = _bias_act_case(cuda_kernels, torch.float64, "contiguous", seed=3)
    x = x[:2, :, :3, :3].contiguous().requires_grad_(True)
    b = b.requires_grad_(True)
    fn = lambda x, b: bias_act_cuda(x, b, dim=1, act=act, gain=1.3)
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.gpu
@pytest.mark.parametrize("dim,shape", [(0, (7,)), (1, (4, 9)), (2, (2, 3, 5, 4)), (3, (2, 3, 4, 6))])
def test_bias_act_bias_axis_follows_dim(cuda_kernels, dim, shape):
    from stylegan2.ops.bias_act_cuda import bias_act_cuda
    x = torch.randn(shape, dtype=torch.float64, device=cuda_kernels)
    b = torch.randn(shape[dim], dtype=torch.float64, device=cuda_kernels)
    torch.testing.assert_close(bias_act_cuda(x, b, dim=dim, act="lrelu"),
                               _bias_act_ref(x, b, dim=dim, act="lrelu"), atol=1e-12, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("act", ["lrelu", "swish"])
def test_bias_act_accepts_strided_inputs_broadcast_gradients_and_single_channels(cuda_kernels, act):
    """Non-dense views are copied, a sum()'s stride-0 gradient is materialised in the right layout,
    and a length-1 channel axis (whose stride is arbitrary in channels_last) still finds its bias."""
    from stylegan2.ops.bias_act_cuda import bias_act_cuda
    base = torch.randn(2, 4, 6, 10, dtype=torch.float64, device=cuda_kernels)
    for x in (base[:, :, :, ::2], base[:, :1].contiguous(memory_format=torch.channels_last)):
        x = x.detach().requires_grad_(True)
        b = torch.randn(x.shape[1], dtype=torch.float64, device=cuda_kernels, requires_grad=True)
        bias_act_cuda(x, b, act=act, clamp=0.9).sum().backward()
        x64 = x.detach().clone().requires_grad_(True)
        b64 = b.detach().clone().requires_grad_(True)
        _bias_act_ref(x64, b64, act=act, clamp=0.9).sum().backward()
        torch.testing.assert_close(x.grad, x64.grad, atol=1e-10, rtol=0)
        torch.testing.assert_close(b.grad, b64.grad, atol=1e-10, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("act", ["linear", "lrelu", "tanh"])
def test_bias_act_half_precision_clamp_blocks_the_gradient_where_it_bites(cuda_kernels, act):
    """In float16 the clamp value itself is rounded (0.7 -> 0.69971); clamped outputs still stop
    the gradient, as in the reference."""
    from stylegan2.ops.bias_act_cuda import bias_act_cuda
    x = torch.tensor([-3.0, -0.3, 0.0, 0.3, 3.0], device=cuda_kernels, dtype=torch.float16).reshape(1, 5)
    x.requires_grad_(True)
    bias_act_cuda(x, None, act=act, gain=1.0, clamp=0.7).sum().backward()
    x64 = x.detach().double().requires_grad_(True)
    _bias_act_ref(x64, None, act=act, gain=1.0, clamp=0.7).sum().backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, atol=2e-3, rtol=2e-3)
    # Where the unclamped output passes the clamp, the gradient is exactly zero (lrelu(-3) = -0.6 does not).
    unclamped = _bias_act_ref(x.detach().double(), None, act=act, gain=1.0)
    bites = unclamped.abs() > 0.7
    assert bool(bites[0, 4]) and bool(bites[0, 0]) == (act != "lrelu")
    assert torch.all(x.grad[bites] == 0)


@pytest.mark.gpu
@pytest.mark.parametrize("clamp", [None, 0.5])
def test_bias_act_linear_output_may_be_updated_in_place_when_no_reference_is_kept(cuda_kernels, clamp):
    """The networks' residual adds ``y.add_(x)`` onto a linear skip output: without a clamp the kernel keeps
    no tensor for backward, so that in-place update must not break the gradient; with a clamp the output is
    the reference and autograd must still catch the misuse."""
    from stylegan2.ops.bias_act_cuda import bias_act_cuda
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4, device=cuda_kernels, requires_grad=True)
    y = bias_act_cuda(x, None, act="linear", gain=0.5, clamp=clamp)
    y.add_(torch.ones_like(y))
    if clamp is None:
        y.sum().backward()
        torch.testing.assert_close(x.grad, torch.full_like(x, 0.5))
    else:
        with pytest.raises(RuntimeError, match="inplace"):
            y.sum().backward()


@pytest.mark.gpu
def test_public_bias_act_uses_the_kernel_for_cuda_tensors(cuda_kernels, monkeypatch):
    from stylegan2.ops import bias_act as op
    calls = []
    monkeypatch.setattr(op, "_bias_act_ref", lambda *a, **k: calls.append(1))
    x = torch.randn(2, 4, 3, 3, device=cuda_kernels)
    y = op.bias_act(x, torch.zeros(4, device=cuda_kernels), act="relu")
    assert calls == []
    torch.testing.assert_close(y, torch.relu(x) * 2 ** 0.5, atol=1e-6, rtol=1e-6)


def _upfirdn_case(device, dtype, layout, fshape, seed=0, shape=(2, 3, 13, 10)):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    f = torch.rand(*fshape, generator=gen, dtype=torch.float64) + 0.1
    f = f / f.sum() * (len(fshape) if len(fshape) == 1 else 1)
    return _layout(x.to(device, dtype), layout), f.to(device, torch.float32 if dtype != torch.float64 else dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("up,down,padding,fshape,flip,gain", UPFIRDN_CASES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_upfirdn2d_forward_and_gradients_match_the_reference(cuda_kernels, up, down, padding, fshape, flip, gain,
                                                             dtype, layout):
    from stylegan2.ops.upfirdn2d_cuda import upfirdn2d_cuda
    x, f = _upfirdn_case(cuda_kernels, dtype, layout, fshape)
    x.requires_grad_(True)
    y = upfirdn2d_cuda(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    x64 = x.detach().double().requires_grad_(True)
    y64 = _upfirdn2d_ref(x64, f.double(), up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    tol = UPFIRDN_TOL[dtype]
    assert y.shape == y64.shape and y.dtype == dtype
    torch.testing.assert_close(y.double(), y64, atol=tol, rtol=tol)

    dy64 = torch.randn_like(y64).requires_grad_(True)
    dy = dy64.detach().to(dtype).requires_grad_(True)
    (dx,) = torch.autograd.grad(y, x, dy, create_graph=True)
    (dx64,) = torch.autograd.grad(y64, x64, dy64, create_graph=True)
    torch.testing.assert_close(dx.double(), dx64, atol=tol * 2, rtol=tol)
    # second order: the backward pass is itself differentiated (w.r.t. the incoming gradient)
    w64 = torch.randn_like(dx64)
    (ddy,) = torch.autograd.grad((dx * w64.to(dtype)).sum(), dy)
    (ddy64,) = torch.autograd.grad((dx64 * w64).sum(), dy64)
    torch.testing.assert_close(ddy.double(), ddy64, atol=tol * 2, rtol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("up,down,padding,fshape,flip,gain", UPFIRDN_CASES)
def test_upfirdn2d_tiled_and_general_kernels_agree(cuda_kernels, up, down, padding, fshape, flip, gain):
    from stylegan2.ops import plugin
    ext = plugin.load("upfirdn2d", cuda_kernels)
    x, f = _upfirdn_case(cuda_kernels, torch.float32, "contiguous", fshape, shape=(2, 3, 70, 45))
    f2 = f if f.ndim == 2 else torch.outer(f, f)
    args = (x, f2, up[0], up[1], down[0], down[1], *padding, flip, gain)
    tiled, _ = ext.upfirdn2d(*args, True)
    general, used_tiled = ext.upfirdn2d(*args, False)
    assert used_tiled == 0
    torch.testing.assert_close(tiled, general, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("up,down,padding,fshape,flip,gain", UPFIRDN_CASES[:4] + UPFIRDN_CASES[5:7])
def test_upfirdn2d_kernel_passes_gradcheck_and_gradgradcheck(cuda_kernels, up, down, padding, fshape, flip, gain):
    from stylegan2.ops.upfirdn2d_cuda import upfirdn2d_cuda
    x, f = _upfirdn_case(cuda_kernels, torch.float64, "contiguous", fshape, shape=(1, 2, 6, 5))
    x.requires_grad_(True)
    fn = lambda x: upfirdn2d_cuda(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.gpu
def test_upfirdn2d_handles_many_channel_images(cuda_kernels):
    """More than 65535 channel images (the grid's z limit) are all processed."""
    from stylegan2.ops.upfirdn2d_cuda import upfirdn2d_cuda
    x = torch.randn(70000, 1, 4, 4, device=cuda_kernels)
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], device=cuda_kernels)
    f = torch.outer(f, f) / 64
    torch.testing.assert_close(upfirdn2d_cuda(x, f, up=(2, 2), padding=(2, 1, 2, 1), gain=4.0),
                               _upfirdn2d_ref(x, f, up=(2, 2), down=(1, 1), padding=(2, 1, 2, 1), gain=4.0),
                               atol=2e-5, rtol=2e-5)


# ---------------------------------------------------------------------------------------------
# GPU: a short 64x64 training run gives the same losses with and without the kernels (issue 5)

TRAIN_RES = 64
TRAIN_ITERS = 4          # iteration 0 also runs the G path-length and D R1 regularisers
TRAIN_BATCH = 4
#: Stated fp32 tolerance for the per-iteration losses: relative 1e-3 (absolute 1e-6 for values near 0,
#: such as the R1 term of an untrained D, ~1e-5). Kernels and reference differ in summation order
#: (~1e-7..1e-6 relative per op, see TOL); a few Adam steps carry that into the weights and the
#: regularisers' second-order gradients amplify it, but far less than 1e-3. TF32 and cuDNN autotuning
#: are off in both runs, so they are not a source of difference.
TRAIN_RTOL, TRAIN_ATOL = 1e-3, 1e-6


def _training_archive(path, res=TRAIN_RES, n=8):
    """A tiny STFT-style PNG zip with a dataset.json audio block (as tests/test_training.py makes)."""
    import io
    import json
    import zipfile

    import numpy as np
    import PIL.Image

    audio = {"sample_rate": 44100, "resolution": res, "n_fft": 2 * res, "hop_length": res, "window": "hann",
             "center": True, "eps": 1e-10, "mean": -3.0, "std": 4.0, "clip_sigma": 3.0, "target_bpm": 130,
             "format_version": 1}
    rng = np.random.RandomState(0)
    with zipfile.ZipFile(path, "w") as z:
        for i in range(n):
            img = np.clip(np.linspace(60, 200, res)[:, None] + rng.randn(res, res) * 30, 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            PIL.Image.fromarray(img, "L").save(buf, format="PNG")
            z.writestr(f"00000/img{i:08d}.png", buf.getvalue())
        z.writestr("dataset.json", json.dumps({"labels": None, "audio": audio, "clips": []}))
    return path


def _training_losses(archive, run_dir, ops):
    """Per-iteration ``Loss/...`` means of a short tiny-preset run with ``ops`` ('reference' or 'cuda').

    One tick per iteration (``tick`` = one batch), so every ``stats.jsonl`` line is one iteration.
    """
    import json

    from stylegan2 import training_loop as tl
    from stylegan2.presets import resolve_config

    opts = resolve_config("tiny", TRAIN_RES, 1, batch=TRAIN_BATCH, batch_gpu=TRAIN_BATCH, seed=3, workers=0,
                          tick=TRAIN_BATCH / 1000, snap=1000, kimg=TRAIN_ITERS * TRAIN_BATCH / 1000,
                          grid_limit=4, ops=ops, nobench=True, allow_tf32=False)
    tl.training_loop(0, run_dir=str(run_dir), data=str(archive), progress=False, **opts)
    lines = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    return [{k: v["mean"] for k, v in rec.items() if k.startswith("Loss/")} for rec in lines]


@pytest.mark.gpu
def test_training_losses_agree_with_and_without_kernels(tmp_path, monkeypatch):
    """Issue 5: the same seeded 64x64 run, reference ops vs CUDA kernels, same per-iteration losses."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    archive = _training_archive(tmp_path / "stft.zip")
    try:
        monkeypatch.setenv("ELECTROGAN_OPS", "reference")
        backend.set_mode("reference")
        ref = _training_losses(archive, tmp_path / "reference", "reference")
        monkeypatch.setenv("ELECTROGAN_OPS", "cuda")
        backend.set_mode("cuda")  # a kernel that does not build fails the test instead of falling back
        ker = _training_losses(archive, tmp_path / "kernels", "cuda")
    finally:
        backend.set_mode(None)
    assert len(ref) == len(ker) >= TRAIN_ITERS
    for i, (a, b) in enumerate(zip(ref, ker)):
        assert a.keys() == b.keys() and {"Loss/G/loss", "Loss/D/loss"} <= a.keys(), i
        for key in a:
            if key.startswith("Loss/signs/"):
                continue  # means of sign(logit): discrete, a logit within round-off of 0 may flip
            assert b[key] == pytest.approx(a[key], rel=TRAIN_RTOL, abs=TRAIN_ATOL), (i, key)
    # the comparison is not vacuous: the runs trained (losses move) and both regularisers ran
    assert any(ref[i]["Loss/G/loss"] != ref[0]["Loss/G/loss"] for i in range(1, len(ref)))
    assert any("Loss/G/reg" in r for r in ref) and any("Loss/D/reg" in r for r in ref)
