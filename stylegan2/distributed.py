"""Process groups for data-parallel training: one process per GPU, on one machine or several.

Two ways in:

- ``--gpus N`` on one machine: :func:`launch` spawns N processes with
  ``torch.multiprocessing.spawn`` and a ``file://`` rendezvous in a temporary folder.
- ``torchrun`` (one or many machines): the ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR`` and ``MASTER_PORT`` environment variables are set; :func:`launch` joins the group
  with ``env://`` and runs the function in the current process.

Backend: NCCL when the process owns a CUDA device, gloo otherwise (CPU runs, tests). Parameters
are broadcast from rank 0 at start (:func:`broadcast_module`); gradients are summed with one
flattened all-reduce per phase and divided by the world size (:func:`all_reduce_grads`), the
StyleGAN3 scheme (its ``training/training_loop.py``; docs/references.md, StyleGAN3). Only rank 0
writes files (:func:`is_main`).
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Dict, Iterable, Optional

import torch
import torch.distributed as dist

from . import stats

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def under_torchrun() -> bool:
    """True when started by ``torchrun`` (its rank variables are in the environment)."""
    return all(v in os.environ for v in TORCHRUN_VARS)


def torchrun_world_size() -> Optional[int]:
    """``$WORLD_SIZE`` under torchrun, else None."""
    return int(os.environ["WORLD_SIZE"]) if under_torchrun() else None


def device_for(local_rank: int) -> torch.device:
    """The device of a process: ``cuda:<local_rank>`` when CUDA has that many devices, else the CPU."""
    if torch.cuda.is_available() and local_rank < torch.cuda.device_count():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    """Number of processes in the group (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on the one process that writes files and prints (global rank 0)."""
    return get_rank() == 0


def barrier() -> None:
    if is_initialized() and get_world_size() > 1:
        dist.barrier()


def _import_modules_that_capture_the_group() -> None:
    """Import torch modules that read ``group.WORLD`` into default arguments, while no group exists yet.

    ``torch.distributed.nn.functional`` (pulled in by ``torch._dynamo``, which ``torch.optim`` imports
    when the first optimizer is built) stores the default group in its functions' defaults at import
    time. Imported after the group is made, it keeps the group alive past ``destroy_process_group``;
    gloo's threads are then torn down during interpreter exit, which now and then aborts the process
    ("terminate called without an active exception", SIGABRT) after training has finished.
    """
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # a torch without dynamo does not pull those modules in either
        pass


def init_process_group(rank: int, world_size: int, init_method: str, device: torch.device) -> None:
    """Join the group (NCCL on CUDA, gloo on CPU) and tell :mod:`stylegan2.stats` where to reduce."""
    if world_size > 1:
        _import_modules_that_capture_the_group()
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size)
    stats.init_multiprocessing(rank, device if world_size > 1 else None)


def shutdown() -> None:
    """Leave the process group (safe to call without one)."""
    if is_initialized():
        dist.destroy_process_group()
    stats.init_multiprocessing(0, None)


def _spawned(rank: int, fn: Callable, world_size: int, init_file: str, kwargs: Dict[str, Any]) -> None:
    device = device_for(rank)
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    init_process_group(rank, world_size, f"file://{init_file}", device)
    try:
        fn(rank, **kwargs)
    finally:
        shutdown()


def launch(fn: Callable, world_size: int, kwargs: Optional[Dict[str, Any]] = None) -> None:
    """Run ``fn(rank, **kwargs)`` on every rank of a data-parallel group.

    Under torchrun: joins via ``env://`` and runs in this process (``world_size`` is ignored; the
    environment decides). Otherwise: ``world_size == 1`` calls ``fn`` directly; more spawns that
    many processes (``fn`` must be a module-level function, ``kwargs`` picklable).
    """
    kwargs = dict(kwargs or {})
    if under_torchrun():
        rank, world, local = (int(os.environ[v]) for v in TORCHRUN_VARS)
        init_process_group(rank, world, "env://", device_for(local))
        try:
            fn(rank, **kwargs)
        finally:
            shutdown()
        return
    if torch.cuda.is_available() and world_size > torch.cuda.device_count():
        raise ValueError(f"--gpus {world_size} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if world_size == 1:
        stats.init_multiprocessing(0, None)
        fn(0, **kwargs)
        return
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.abspath(os.path.join(tmp, ".torch_distributed_init"))
        torch.multiprocessing.spawn(_spawned, args=(fn, world_size, init_file, kwargs), nprocs=world_size)


def local_device() -> torch.device:
    """The device this rank should use (``LOCAL_RANK`` under torchrun, else the global rank)."""
    local = int(os.environ["LOCAL_RANK"]) if under_torchrun() else get_rank()
    return device_for(local)


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer of ``module`` from rank ``src`` to all ranks (no-op alone)."""
    if get_world_size() == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=src)


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op alone); returns it."""
    if get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def average_buffers_(module: torch.nn.Module, names: Optional[Iterable[str]] = None) -> None:
    """Average the floating-point buffers of ``module`` over ranks in place (no-op alone).

    Used for G's moving average of w (``w_avg``), which each rank updates from its own chunk;
    averaging keeps every rank, and so rank 0's snapshot, on the global-batch statistic.
    ``names`` limits it to those buffers (the training loop passes only the ones that change while
    training, so constant buffers such as resampling filters are not all-reduced every step).
    """
    if get_world_size() == 1:
        return
    wanted = None if names is None else set(names)
    buffers = [b for n, b in module.named_buffers() if b.is_floating_point() and (wanted is None or n in wanted)]
    if not buffers:
        return
    flat = torch.cat([b.detach().flatten() for b in buffers])
    dist.all_reduce(flat)
    flat /= get_world_size()
    offset = 0
    for b in buffers:
        b.copy_(flat[offset:offset + b.numel()].view_as(b))
        offset += b.numel()


def running_average_buffers(module: torch.nn.Module) -> list:
    """Names of ``module``'s buffers that training updates (the w moving average ``*w_avg``).

    Every other buffer of our networks (resampling filters, constant noise) is fixed at
    construction and broadcast once at start, so it never needs averaging.
    """
    return [n for n, b in module.named_buffers() if n.split(".")[-1] == "w_avg" and b.is_floating_point()]


def all_reduce_grads(params: Iterable[torch.nn.Parameter], clean: bool = True) -> Optional[torch.Tensor]:
    """Average the gradients of ``params`` over ranks with one flattened all-reduce.

    Parameters without a gradient count as zero (and get one), so all ranks reduce the same
    layout. ``clean`` replaces NaN by 0 and +-inf by +-1e5 afterwards, as upstream does, so one
    bad batch cannot poison Adam's moments. Returns a 0-d bool tensor on the gradients' device,
    True when any averaged gradient was NaN or infinite before cleaning (None without parameters);
    it is not read here, so no host sync: the training loop counts such steps on the device.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        return None
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
    world = get_world_size()
    if world > 1:
        dist.all_reduce(flat)
        flat /= world
    bad = ~torch.isfinite(flat).all()
    if clean:
        torch.nan_to_num(flat, nan=0.0, posinf=1e5, neginf=-1e5, out=flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n
    return bad
