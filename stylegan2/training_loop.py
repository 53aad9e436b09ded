"""The StyleGAN2(-ADA) training loop: phases, accumulation, EMA, ADA, ticks, logs, snapshots, resume.

One iteration shows ``batch`` real images to D (StyleGAN2-ADA ``training/training_loop.py``; docs/references.md):

- phases ``Gmain``, ``Greg`` (every ``G_reg_interval`` = 4 iterations), ``Dmain``, ``Dreg`` (every
  ``D_reg_interval`` = 16), each with its own fresh latents; a phase zeroes the gradients,
  accumulates ``rounds = batch / (batch_gpu * world)`` chunks of ``batch_gpu`` images, averages
  the gradients over ranks (NaN -> 0, +-inf -> +-1e5, as upstream) and steps Adam;
- a step whose losses or gradients held NaN/inf is counted (``Progress/nonfinite_steps``); after
  ``max_nonfinite`` consecutive ones :class:`TrainingDiverged` names the last good snapshot, and
  no snapshot of a NaN/inf state is ever written;
- ``G_ema`` follows G with half-life ``ema_kimg`` (ramped up to ``ema_rampup * cur_nimg``);
- with ``aug ada`` the augmentation probability p moves by the sign heuristic every 4 iterations.

Reproducibility by design: every chunk seeds torch's and numpy's generators from
``(seed, iteration, phase, global chunk index)``, and rank ``r`` loads the ``r``-th contiguous
block of each global batch from one seeded index stream. So N ranks compute exactly the chunks one
process would, a run with the same seed repeats itself, and a resumed run (the snapshot stores
the iteration counter, optimizer states, p, ADA state and ``pl_mean``; the index stream is
fast-forwarded) continues as if never stopped.

A tick every ``tick`` kimg prints one line and appends ``stats.jsonl``; every ``snap`` ticks
``fakesNNNNNN.png`` and ``network-snapshot-NNNNNN.pkl`` (NNNNNN = whole kimg; see
:func:`snapshot_tag` for the image-count names that keep short runs from overwriting) are written
and the metrics in ``metrics`` are computed. Only rank 0 writes files. The grids also go to
TensorBoard (``add_image``) when it is installed, and a caller-supplied ``snapshot_hook`` is handed
each fakes grid as it is written (``train.py`` uses it to decode a few fakes to audio; this package
stays free of audio): see :class:`SnapshotPreview`.

No host sync per step (issue 13.4): statistics stay on the device until a tick, the non-finite
counters are device tensors, and one small copy per check point (every ``ada_interval``
iterations and at every tick) reads the ADA sign sums, the counters and the stop flag together.

SIGINT / SIGTERM (:class:`StopRequest`) ask for a graceful stop: the ranks agree on it at the next
check point (an all-reduced flag; alone, at once), a final snapshot is written at the current image count, and
:class:`TrainingInterrupted` is raised; a second SIGINT aborts at once (``KeyboardInterrupt``).
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from . import distributed, stats
from .loss import StyleGAN2Loss, lazy_regularization_adam
from .misc import atomic_path, atomic_write_text


LOSS_REGEX = r"Loss/(G|D)/(loss|reg)"     # the losses whose NaN/inf marks a step as non-finite
ADA_SIGNS = "Loss/signs/real"             # sign(D(real)) reported by the loss, read by the ADA controller


class TrainingDiverged(RuntimeError):
    """A run of ``max_nonfinite`` consecutive steps had NaN/inf losses or gradients (or the weights
    became non-finite); training stops without writing the broken state, naming the last good snapshot."""


class SnapshotWriteError(RuntimeError):
    """A snapshot could not be written (e.g. disk full); nothing half-written is left and earlier
    snapshots are untouched. The message names the file, the cause and the last snapshot written."""


class TrainingInterrupted(RuntimeError):
    """A stop was requested (SIGINT/SIGTERM); the final snapshot is written and named in the message.

    Attributes: ``snapshot`` (path of the final snapshot), ``cur_nimg``, ``signum`` (the first
    signal received on this rank, or None when another rank asked).
    """

    def __init__(self, message: str, snapshot: Optional[str] = None, cur_nimg: int = 0,
                 signum: Optional[int] = None):
        super().__init__(message)
        self.snapshot, self.cur_nimg, self.signum = snapshot, cur_nimg, signum


class StopRequest:
    """SIGINT/SIGTERM handlers that turn the first signal into a flag and a second SIGINT into an abort.

    ``install()`` (main thread only; elsewhere it does nothing) replaces the handlers until
    ``uninstall()``. The first SIGINT or SIGTERM sets :attr:`signum`; the loop reads it every
    iteration and, with several ranks, all-reduces it at its check points (every ADA interval) so
    all ranks stop together (:meth:`agreed` does the same as a standalone call). A second SIGINT raises ``KeyboardInterrupt`` at once; further
    SIGTERMs are ignored (a scheduler that wants a hard stop sends SIGKILL; torchrun's agent sends
    SIGTERM after the terminal's SIGINT, which must not count as a second Ctrl-C).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, verbose: bool = True):
        self.signum: Optional[int] = None
        self.interrupts = 0
        self.verbose = verbose
        self._saved: Dict[int, Any] = {}

    def _handle(self, signum, frame):
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts >= 2:
                self.uninstall()
                raise KeyboardInterrupt("second interrupt: aborting without a snapshot")
        if self.signum is None:
            self.signum = signum
            if self.verbose:    # os.write: the interrupted code may be inside a write to the same stream
                os.write(2, f"\nReceived {signal.Signals(signum).name}: stopping after this iteration and "
                            f"writing a snapshot (Ctrl-C again to abort without one)\n".encode())

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved.clear()

    def agreed(self, device: torch.device, world: int) -> bool:
        """True on every rank when any rank received a stop signal (one all-reduce when world > 1)."""
        if world == 1:
            return self.signum is not None
        flag = torch.tensor([1.0 if self.signum is not None else 0.0], device=device)
        distributed.all_reduce_sum_(flag)
        return bool(flag.item() > 0)


# ------------------------------------------------------------------------------------------------
# Small pieces


def chunk_seed(seed: int, iteration: int, phase: int, chunk: int) -> int:
    """A 32-bit seed for one chunk of one phase of one iteration (independent of the rank layout)."""
    return int(np.random.SeedSequence([seed, iteration, phase, chunk]).generate_state(1)[0])


class BlockShard(torch.utils.data.Sampler):
    """Rank ``rank``'s contiguous block of every global batch of an index stream.

    The base sampler is the single-process stream (all ranks build the same one). Of each
    ``global_batch`` indices, rank ``r`` yields positions ``r * n .. (r + 1) * n - 1`` with
    ``n = global_batch / world``, so chunk ``j`` of the global batch is the same images whether it
    is processed by one process in round ``j`` or by rank ``j // rounds``. ``skip`` fast-forwards
    the stream by that many indices (exact resume).
    """

    def __init__(self, base, global_batch: int, rank: int, world: int, skip: int = 0):
        self.base, self.global_batch, self.rank, self.world, self.skip = base, global_batch, rank, world, skip

    def __iter__(self) -> Iterator[int]:
        per_rank = self.global_batch // self.world
        it = iter(self.base)
        for _ in range(self.skip):
            next(it)
        while True:
            block = [next(it) for _ in range(self.global_batch)]
            yield from block[self.rank * per_rank:(self.rank + 1) * per_rank]


class _Tee:
    """Copies everything written to a stream into a log file too (``log.txt``)."""

    def __init__(self, stream, file):
        self.stream, self.file = stream, file

    def write(self, text):
        self.stream.write(text)
        self.file.write(text)
        self.file.flush()

    def flush(self):
        self.stream.flush()
        self.file.flush()

    def isatty(self):
        return getattr(self.stream, "isatty", lambda: False)()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def run_metrics(names: List[str], G_ema, snapshot_path: Optional[Path], run_dir: Path,
                training_set_kwargs: dict, rank: int, world: int, device, audio=None,
                plugins: Sequence[str] = ()) -> Dict[str, tuple]:
    """Compute the registered metrics ``names`` for ``G_ema`` after a snapshot; no-op for an empty list.

    Imports :mod:`stylegan2.metrics.registry` lazily (it pulls in the detector code) and the metric
    ``plugins`` (modules that register more metrics); all ranks take part, rank 0 appends each result
    to ``metric-<name>.jsonl`` in the run dir. Returns ``{name: (headline value, higher_is_better)}``
    for the optional best-snapshot copy.
    """
    if not names:
        return {}
    from .metrics import registry
    registry.load_plugins(plugins)
    values = {}
    for name in names:
        result = registry.calc_metric(name, G=G_ema, dataset_kwargs=dict(training_set_kwargs),
                                      num_gpus=world, rank=rank, device=device, audio=audio)
        if rank == 0:
            registry.report_metric(result, run_dir=str(run_dir),
                                   snapshot_pkl=snapshot_path.name if snapshot_path else None)
        value = result.get("results", {}).get(result.get("key", name))
        if isinstance(value, (int, float)):
            values[name] = (float(value), bool(result.get("higher_is_better", False)))
    return values


def is_better(value: float, best: Optional[float], higher_is_better: bool) -> bool:
    """True when ``value`` beats ``best`` (None = nothing yet) in the metric's direction."""
    if best is None:
        return math.isfinite(value)
    return value > best if higher_is_better else value < best


def carried_best_record(snap: dict, resume_path: str, keep: Optional[str],
                        plugins: Sequence[str] = ()) -> Optional[dict]:
    """The best-snapshot record a run resumed from ``resume_path`` starts with (None: nothing to beat).

    A snapshot stores the best record as it stood when it was written (key ``best``); its own
    metric is computed just after, so the snapshot's line in its run dir's ``metric-<keep>.jsonl``
    (the last one naming it) is taken into account too. Records of another metric are ignored, and
    so are later snapshots of the old run: resuming an earlier snapshot forgets a later branch.
    """
    if not keep:
        return None
    best = snap.get("best")
    best = dict(best) if isinstance(best, dict) and best.get("metric") == keep and \
        isinstance(best.get("value"), (int, float)) else None
    path = Path(resume_path)
    if (path.parent / f"metric-{keep}.jsonl").is_file():
        from .metrics import registry
        try:
            registry.load_plugins(plugins)
            spec = registry.get_metric(keep)
        except Exception:           # an unknown metric: nothing in its log can be read back
            return best
        own = None
        for record in registry.read_metric_log(path.parent, keep):
            value = record.get("results", {}).get(spec.key)
            if record.get("snapshot_pkl") == path.name and isinstance(value, (int, float)):
                own = float(value)
        if own is not None and is_better(own, None if best is None else best["value"], spec.higher_is_better):
            best = dict(metric=keep, value=own, snapshot=path.name, kimg=int(snap.get("cur_nimg", 0)) / 1000,
                        run_dir=str(path.parent.resolve()), higher_is_better=bool(spec.higher_is_better))
    return best


class _GroupMismatch(ValueError):
    """The saved optimizer has another parameter layout (e.g. ``--freezed`` changed): moments restart."""


def check_optimizer_state(state: Any, opt: torch.optim.Optimizer, where: str) -> None:
    """Check a saved Adam ``state_dict`` against ``opt`` before loading it; one-line ``ValueError`` naming ``where``.

    ``torch.optim.Optimizer.load_state_dict`` accepts moments of any shape and only fails at the
    first step, deep inside training. Here every moment must be a finite tensor shaped like its
    parameter and every ``step`` a finite number. A different group layout raises
    :class:`_GroupMismatch` (the loop then starts the moments from zero with a warning, as for a
    changed ``--freezed``).
    """
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict) or \
            not isinstance(state.get("param_groups"), list):
        raise ValueError(f"{where}: not an optimizer state (needs 'state' and 'param_groups')")
    groups = state["param_groups"]
    if len(groups) != len(opt.param_groups) or any(
            not isinstance(g, dict) or not isinstance(g.get("params"), list) or len(g["params"]) != len(cur["params"])
            for g, cur in zip(groups, opt.param_groups)):
        raise _GroupMismatch("its parameter groups differ from this run's")
    params = {}
    for g, cur in zip(groups, opt.param_groups):
        params.update(zip(g["params"], cur["params"]))
    for key, entry in state["state"].items():
        if key not in params:
            raise ValueError(f"{where}: holds a state for parameter {key!r}, which none of its groups lists")
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: the state of parameter {key} is not a dict")
        param = params[key]
        for field, value in entry.items():
            if field == "step":
                number = value.reshape(-1)[0].item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
                if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number) \
                        or number < 0:
                    raise ValueError(f"{where}: parameter {key} has an invalid step count {value!r}")
                continue
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{where}: {field} of parameter {key} is a {type(value).__name__}, not a tensor")
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(f"{where}: {field} of parameter {key} has shape {list(value.shape)}, but the "
                                 f"network's parameter has {list(param.shape)}; use the run's --cfg/--cbase/--map")
            if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
                raise ValueError(f"{where}: {field} of parameter {key} holds NaN or infinite values")


def check_loop_state(snap: dict) -> None:
    """Check the loop's own resume fields of a snapshot: augment p, ADA state, counters (``ValueError``, one line).

    p and the ADA sums must be finite (p >= 0, count >= 0), the counters non-negative integers,
    so a crafted or damaged snapshot cannot carry NaN into the augmentation or the controller.
    """
    def number(value, what, minimum=0.0):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
            raise ValueError(f"{what} is {value!r}; expected a finite number >= {minimum:g}")

    def count(value, what):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{what} is {value!r}; expected an integer >= 0")
    for key in ("cur_nimg", "cur_tick", "batch_idx", "nonfinite_steps"):
        if key in snap:
            count(snap[key], key)
    augment = snap.get("augment")
    if augment is not None:
        if not isinstance(augment, dict):
            raise ValueError(f"augment is a {type(augment).__name__}, not a dict")
        number(augment.get("p"), "augment p")
    ada_stats = snap.get("ada_stats")
    if ada_stats is not None:
        if not isinstance(ada_stats, dict):
            raise ValueError(f"ada_stats is a {type(ada_stats).__name__}, not a dict")
        number(ada_stats.get("p"), "ada_stats p")
        number(ada_stats.get("sign_sum", 0.0), "ada_stats sign_sum", -math.inf)
        number(ada_stats.get("sign_count", 0.0), "ada_stats sign_count")
        count(ada_stats.get("iterations", 0), "ada_stats iterations")


def restore_rng_or_fail(snap_io, state: Any, resume: str) -> None:
    """Restore a snapshot's RNG state, or raise a one-line ``SnapshotError`` naming the file and the part.

    The state is checked in full before anything is restored, so a bad one changes nothing.
    """
    def fail(part: str):
        raise snap_io.SnapshotError(f"{resume}: its RNG state is unusable ({part}); the networks are fine: "
                                    f"remove the snapshot's 'rng' entry or start a new run") from None
    if not isinstance(state, dict):
        fail(f"a {type(state).__name__}, not a dict")
    torch_state, np_state, py_state = state.get("torch"), state.get("numpy"), state.get("python")
    if not isinstance(torch_state, torch.Tensor) or torch_state.dtype != torch.uint8 or \
            torch_state.shape != torch.get_rng_state().shape:
        fail("'torch' is not a CPU generator state")
    if not isinstance(np_state, dict) or not isinstance(np_state.get("keys"), torch.Tensor) or \
            np_state["keys"].numel() != 624 or not isinstance(np_state.get("pos"), int) or \
            np_state.get("bit_generator") != "MT19937":
        fail("'numpy' is not an MT19937 state")
    if not isinstance(py_state, dict) or not isinstance(py_state.get("internal"), torch.Tensor) or \
            py_state["internal"].numel() != 625 or not isinstance(py_state.get("version"), int):
        fail("'python' is not a random.getstate() state")
    cuda = state.get("cuda") or []
    if not isinstance(cuda, list) or any(not isinstance(c, torch.Tensor) or c.dtype != torch.uint8 for c in cuda):
        fail("'cuda' is not a list of generator states")
    saved = snap_io.capture_rng_state()
    try:
        snap_io.restore_rng_state(state)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        snap_io.restore_rng_state(saved)
        fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def snapshot_tag(cur_nimg: int, used: Dict[str, int], by_images: bool) -> tuple:
    """The NNNNNN of ``network-snapshot-NNNNNN.pkl`` / ``fakesNNNNNN.png`` for a snapshot at ``cur_nimg``.

    Whole kimg with 6 digits (docs/contract.md, "Network snapshot") until that name was already used in this run for a
    different image count (``used``: tag -> cur_nimg of what this run wrote); from then on
    (``by_images``) the image count with 9 digits, e.g. ``network-snapshot-000000008.pkl``. A 9-digit
    image count is never smaller than an earlier 6-digit kimg of the same run, so names stay in
    training order and ``--resume latest`` picks the newest. Returns ``(tag, by_images)``.
    """
    if not by_images:
        tag = f"{cur_nimg // 1000:06d}"
        if used.get(tag, cur_nimg) == cur_nimg:
            return tag, False
    return f"{cur_nimg:09d}", True


def _ema_beta(batch: int, cur_nimg: int, ema_kimg: float, ema_rampup: Optional[float]) -> float:
    """Per-step EMA decay so ``ema_kimg`` is a half-life in thousands of images (with optional ramp-up)."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """``p_ema <- beta * p_ema + (1 - beta) * p`` for parameters; buffers are copied verbatim."""
    with torch.no_grad():
        for p_ema, p in zip(G_ema.parameters(), G.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(G_ema.buffers(), G.buffers()):
            b_ema.copy_(b)


def _param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def next_run_dir(outdir: str, name: str) -> Path:
    """``<outdir>/<NNNNN>-<name>`` with NNNNN one above the largest run number already there."""
    outdir = Path(outdir)
    ids = []
    if outdir.is_dir():
        for entry in outdir.iterdir():
            head = entry.name.split("-", 1)[0]
            if entry.is_dir() and head.isdigit():
                ids.append(int(head))
    return outdir / f"{max(ids, default=-1) + 1:05d}-{name}"


def run_training(rank: int, *, outdir: str, run_name: str, **kwargs) -> Dict[str, Any]:
    """Entry point on every rank: rank 0 picks and creates the run dir, all ranks learn it, then train.

    Picking the run dir after the process group exists keeps several machines (torchrun) from
    racing for run numbers in a shared ``outdir``.
    """
    holder = [None]
    if rank == 0:
        run_dir = next_run_dir(outdir, run_name)
        run_dir.mkdir(parents=True, exist_ok=False)
        holder[0] = str(run_dir)
    if distributed.get_world_size() > 1:
        torch.distributed.broadcast_object_list(holder, src=0)
    return training_loop(rank, run_dir=holder[0], **kwargs)


# ------------------------------------------------------------------------------------------------
# The loop


class SnapshotPreview:
    """What a ``snapshot_hook`` gets each time rank 0 writes a fakes grid (``fakes_init``, ``fakesNNNNNN``).

    ``run_dir`` (Path), ``tag`` (``'_init'`` or the NNNNNN of the snapshot), ``images`` (the grid's
    G_ema images, float32 [N, C, H, W] in about [-1, 1], on the CPU, row-major grid order),
    ``grid_size`` (gw, gh), ``cur_nimg`` (images shown so far) and ``tb`` (the run's TensorBoard
    ``SummaryWriter``, or None when TensorBoard is not installed; the hook may add to it, the loop
    flushes and closes it).
    """

    def __init__(self, run_dir: Path, tag: str, images: torch.Tensor, grid_size, cur_nimg: int, tb=None):
        self.run_dir, self.tag, self.images = Path(run_dir), str(tag), images
        self.grid_size, self.cur_nimg, self.tb = tuple(grid_size), int(cur_nimg), tb


def _call_snapshot_hook(hook, preview: SnapshotPreview, say) -> None:
    """Run ``hook(preview)`` without touching the training's random state; a failing hook only warns
    (a preview must never cost a training run)."""
    if hook is None:
        return
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            hook(preview)
    except Exception as e:  # noqa: BLE001 - reported, training goes on
        say(f"Warning: snapshot hook failed for fakes{preview.tag}: {type(e).__name__}: {e}")
    finally:
        np.random.set_state(np_state)


def training_loop(rank: int = 0, *, run_dir: str, data: str, resume: Optional[str] = None,
                  progress: bool = True, snapshot_hook=None, snapshot_extra: Optional[Dict[str, Any]] = None,
                  metric_plugins: Sequence[str] = (), **opts) -> Dict[str, Any]:
    """Train with the resolved options ``opts`` (see :func:`stylegan2.presets.resolve_config`).

    ``run_dir``: output folder (created; rank 0 writes). ``data``: the dataset zip or folder.
    ``resume``: a snapshot to continue from exactly. ``snapshot_hook``: a picklable callable given a
    :class:`SnapshotPreview` on rank 0 whenever a fakes grid is written (None: nothing).
    ``snapshot_extra``: plain data ``{key: value}`` copied untouched into every snapshot under its own
    top-level keys (``train.py`` stores the archive's decoder model as ``decoder_model``); a key the
    loop writes itself, or a value that is not plain data, is a ValueError before training starts.
    ``metric_plugins``: modules that register metrics beyond the built-in image metrics (imported in
    every rank before ``metrics`` run; ``train.py`` names the audio layer's).
    Returns (on every rank) a summary dict with
    ``cur_nimg``, ``cur_tick``, ``batch_idx`` and ``snapshot`` (the last snapshot path written).
    """
    from .dataset import ImageFolderDataset
    from .sampler import InfiniteSampler
    from . import snapshot as snap_io
    from .augment import build_augment_pipe
    from .ops import backend

    snapshot_extra = check_snapshot_extra(snapshot_extra, snap_io)
    start_time = time.time()
    run_dir = Path(run_dir)
    world = distributed.get_world_size()
    device = distributed.local_device()
    is_main = rank == 0
    seed = int(opts["seed"])
    batch, batch_gpu = int(opts["batch"]), int(opts["batch_gpu"])
    if batch % (batch_gpu * world):
        raise ValueError(f"batch {batch} is not divisible by batch_gpu {batch_gpu} x {world} processes")
    rounds = batch // (batch_gpu * world)
    backend.set_mode(opts.get("ops", "auto"))
    stats.reset()          # collectors below must not see values from an earlier run in this process
    np.random.seed(seed * world + rank)
    torch.manual_seed(seed * world + rank)
    # Backend switches (as StyleGAN2-ADA sets them): set on every device (they only matter on CUDA, and are
    # harmless elsewhere) and restored on the way out, so one run in a process does not leak into the next.
    saved_backends = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
                      torch.backends.cudnn.allow_tf32)
    torch.backends.cudnn.benchmark = not bool(opts.get("nobench", False))
    torch.backends.cuda.matmul.allow_tf32 = bool(opts.get("allow_tf32", False))
    torch.backends.cudnn.allow_tf32 = bool(opts.get("allow_tf32", False))
    stopper = StopRequest(verbose=rank == 0).install()

    log_file = None
    saved_streams = (sys.stdout, sys.stderr)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(run_dir / "log.txt", "a", encoding="utf-8")
        sys.stdout, sys.stderr = _Tee(sys.stdout, log_file), _Tee(sys.stderr, log_file)
    try:
        return _train(rank, world, device, run_dir, data, resume, progress, opts, seed, batch, batch_gpu,
                      rounds, start_time, ImageFolderDataset, InfiniteSampler, snap_io, build_augment_pipe, stopper,
                      snapshot_hook=snapshot_hook, snapshot_extra=snapshot_extra, metric_plugins=tuple(metric_plugins))
    finally:
        stopper.uninstall()
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = saved_backends
        if log_file is not None:
            sys.stdout, sys.stderr = saved_streams
            log_file.close()


def _train(rank, world, device, run_dir, data, resume, progress, opts, seed, batch, batch_gpu, rounds,
           start_time, ImageFolderDataset, InfiniteSampler, snap_io, build_augment_pipe, stopper, snapshot_hook=None,
           snapshot_extra=None, metric_plugins=()):
    from . import networks
    from .grid import save_image_grid, setup_snapshot_image_grid
    from .presets import generator_kwargs, discriminator_kwargs

    is_main = rank == 0
    say = print if is_main else (lambda *a, **k: None)

    # ------------------------------------------------------------------ data
    training_set_kwargs = dict(path=str(data), resolution=int(opts["resolution"]), use_labels=bool(opts["cond"]),
                               max_size=opts.get("subset"), xflip=bool(opts["mirror"]), random_seed=seed)
    dataset = ImageFolderDataset(**training_set_kwargs)
    if opts["cond"] and not dataset.has_labels:
        raise ValueError(f"{data}: --cond needs labels in dataset.json, but it has none")
    c_dim = dataset.label_dim
    img_channels = dataset.num_channels
    say(f"Dataset: {dataset.path}: {len(dataset)} images, {img_channels} x {dataset.resolution} x "
        f"{dataset.resolution}, labels {c_dim}, audio block {'yes' if dataset.audio else 'no'}")

    # ------------------------------------------------------------------ networks and state
    G_kwargs = generator_kwargs(opts, c_dim, img_channels)
    D_kwargs = discriminator_kwargs(opts, c_dim, img_channels)
    G = networks.Generator(**G_kwargs).train().requires_grad_(False).to(device)
    D = networks.Discriminator(**D_kwargs).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    augment_pipe = build_augment_pipe(opts["aug"], opts["augpipe"], opts["p"])
    if augment_pipe is not None:
        augment_pipe = augment_pipe.train().requires_grad_(False).to(device)
    ada = None
    if opts["aug"] == "ada":
        from .ada import AdaController
        # The sign sums arrive already summed over ranks (the loop's check point), so no second reduce.
        ada = AdaController(target=opts["target"], interval=opts["ada_interval"], ada_kimg=opts["ada_kimg"],
                            batch_size=batch, p=opts["p"], reduce_fn=lambda t: t)

    loss = StyleGAN2Loss(G, D, augment_pipe=augment_pipe, r1_gamma=opts["gamma"],
                         style_mixing_prob=opts["style_mixing_prob"], pl_weight=opts["pl_weight"],
                         pl_batch_shrink=opts["pl_batch_shrink"], pl_decay=opts["pl_decay"])
    phases = []
    for name, module, lr, reg_interval in (("G", G, opts["glr"], opts["G_reg_interval"]),
                                           ("D", D, opts["dlr"], opts["D_reg_interval"])):
        lr_c, betas_c = lazy_regularization_adam(lr, opts["betas"], reg_interval)
        opt = torch.optim.Adam(module.parameters(), lr=lr_c, betas=betas_c, eps=opts["eps"])
        if reg_interval is None:
            phases.append(dict(name=name + "both", module=module, opt=opt, interval=1))
        else:
            phases.append(dict(name=name + "main", module=module, opt=opt, interval=1))
            phases.append(dict(name=name + "reg", module=module, opt=opt, interval=reg_interval))
    opt_G, opt_D = phases[0]["opt"], phases[-1]["opt"]

    cur_nimg, cur_tick, batch_idx = 0, 0, 0
    nonfinite_total = 0
    resumed_best: Optional[dict] = None
    if resume:
        snap = snap_io.load_snapshot(resume)
        for key, net in (("G", G), ("D", D), ("G_ema", G_ema)):
            try:
                net.load_state_dict(snap[key]["state_dict"], strict=True)
            except (KeyError, RuntimeError, TypeError) as e:
                raise snap_io.SnapshotError(f"{resume}: its {key} does not fit the configured network "
                                            f"({str(e).splitlines()[0]}); use the same --cfg/--cbase/--map") from None
        for opt, key in ((opt_G, "opt_G"), (opt_D, "opt_D")):
            if snap.get(key) is None:
                say(f"Warning: {resume} holds no {key}; its Adam moments start from zero")
            else:
                lrs = [(g["lr"], g["betas"]) for g in opt.param_groups]
                try:
                    check_optimizer_state(snap[key], opt, f"{resume}: {key}")
                    opt.load_state_dict(snap[key])
                except _GroupMismatch as e:     # e.g. --freezed changed which D parameters train
                    say(f"Warning: {resume}: {key} not restored ({e}); its Adam moments start from zero")
                    continue
                except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
                    raise snap_io.SnapshotError(str(e) if str(e).startswith(str(resume)) else
                                                f"{resume}: {key} is not a usable optimizer state "
                                                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
                for g, (lr_now, betas_now) in zip(opt.param_groups, lrs):   # current flags win
                    g["lr"], g["betas"] = lr_now, betas_now
        try:
            check_loop_state(snap)
        except ValueError as e:
            raise snap_io.SnapshotError(f"{resume}: {e}") from None
        cur_nimg = int(snap.get("cur_nimg", 0))
        cur_tick = int(snap.get("cur_tick", 0))
        batch_idx = int(snap.get("batch_idx", 0))
        if augment_pipe is not None and snap.get("augment"):
            augment_pipe.set_p(float(snap["augment"]["p"]))
        if ada is not None and snap.get("ada_stats") is not None:
            ada.load_state_dict(snap["ada_stats"])
        if snap.get("pl_mean") is not None:
            loss.load_state_dict({"pl_mean": snap["pl_mean"]})
        if snap.get("rng") is not None:
            # Training draws come from per-chunk seeds; this restores everything else (workers, user code).
            restore_rng_or_fail(snap_io, snap["rng"], resume)
        else:
            say(f"Warning: {resume} holds no RNG state; training draws are seeded per chunk, so the run "
                f"still continues exactly, but DataLoader worker seeds start fresh")
        nonfinite_total = int(snap.get("nonfinite_steps", 0) or 0)
        say(f"Resumed from {resume} at kimg {cur_nimg / 1000:.3f} (tick {cur_tick}, iteration {batch_idx})")
        resumed_best = carried_best_record(snap, resume, opts.get("keep_best"), metric_plugins)
    for module in (G, D, G_ema):
        distributed.broadcast_module(module)
    say(f"Generator {_param_count(G):,} parameters, discriminator {_param_count(D):,}; "
        f"{world} process(es) on {device}, batch {batch} = {world} x {rounds} rounds x {batch_gpu}")

    # ------------------------------------------------------------------ loader
    base = InfiniteSampler(dataset, rank=0, num_replicas=1, seed=seed)
    sampler = BlockShard(base, batch, rank, world, skip=cur_nimg)
    workers = int(opts.get("workers", 0))
    loader_kwargs = dict(num_workers=workers, pin_memory=device.type == "cuda")
    if workers > 0:
        loader_kwargs.update(prefetch_factor=2, persistent_workers=True)
    data_iter = iter(torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=batch_gpu, **loader_kwargs))

    # ------------------------------------------------------------------ run dir set-up
    grid, grid_reals, grid_labels = setup_snapshot_image_grid(dataset, random_seed=seed,
                                                              max_images=opts.get("grid_limit"))
    grid_n = grid[0] * grid[1]
    grid_z = torch.randn([grid_n, G.z_dim], generator=torch.Generator().manual_seed(seed)).to(device)
    grid_c = torch.from_numpy(grid_labels).to(device)

    def grid_fakes():
        with torch.no_grad():
            return torch.cat([G_ema(z, c, noise_mode="const").cpu() for z, c in
                              zip(grid_z.split(batch_gpu), grid_c.split(batch_gpu))])

    if is_main:
        options_record = dict(opts, run_dir=str(run_dir), data=str(data), resume=resume, world_size=world,
                              G_kwargs=G_kwargs, D_kwargs=D_kwargs, training_set_kwargs=training_set_kwargs)
        atomic_write_text(run_dir / "training_options.json", json.dumps(options_record, indent=2, default=str))
        save_image_grid(grid_reals, run_dir / "reals.png", drange=(0, 255), grid_size=grid)
    stats_file = open(run_dir / "stats.jsonl", "a", encoding="utf-8") if is_main else None
    tb = None
    if is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter
            tb = SummaryWriter(str(run_dir))
        except ImportError:
            pass

    def write_fakes(tag: str) -> None:
        """``fakes<tag>.png``, its TensorBoard image and the snapshot hook (rank 0 only)."""
        images = grid_fakes()
        save_image_grid(images, run_dir / f"fakes{tag}.png", drange=(-1, 1), grid_size=grid)
        if tb is not None:
            tb.add_image("fakes", _grid_for_tensorboard(images, grid), global_step=cur_nimg, dataformats="HWC")
        _call_snapshot_hook(snapshot_hook, SnapshotPreview(run_dir, tag, images, grid, cur_nimg, tb), say)
        if tb is not None:
            tb.flush()

    if is_main:
        if tb is not None and not resume:
            tb.add_image("reals", _grid_for_tensorboard(grid_reals / 127.5 - 1, grid), global_step=cur_nimg,
                         dataformats="HWC")
        if not resume:
            write_fakes("_init")

    # ------------------------------------------------------------------ main loop
    total_nimg = int(round(opts["kimg"] * 1000))
    tick_nimg = opts["tick"] * 1000
    snap_ticks = int(opts["snap"])
    max_nonfinite = int(opts.get("max_nonfinite", 50))
    check_every = int(opts.get("ada_interval", 4))
    tick_collector = stats.Collector()
    watch = stats.Collector(LOSS_REGEX)
    tick_start_nimg, tick_start_time, tick_start_cpu = cur_nimg, time.time(), time.process_time()
    maintenance_time = tick_start_time - start_time
    last_snapshot, last_snapshot_nimg, best = None, None, dict(resumed_best or {})
    stopping, snap_by_images, snap_due = False, False, False
    # Names this run may not reuse for another image count: its own, plus any already in run_dir.
    used_tags: Dict[str, int] = {m.group(1): -1 for m in (snap_io.SNAPSHOT_RE.match(f.name) for f in
                                 run_dir.glob("network-snapshot-*.pkl")) if m and len(m.group(1)) == 6}
    if is_main and best:
        _carry_best_into(run_dir, best, say)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bar = None
    from .progress import progress_bar

    def new_bar():
        return progress_bar(total=int(math.ceil(tick_nimg)), unit="img", desc=f"tick {cur_tick}", leave=False,
                            disable=not (progress and is_main), file=sys.__stderr__, dynamic_ncols=True)

    # Device-side counters (13.4: no host sync per step). A step is non-finite when a watched loss
    # or an averaged gradient was NaN/inf; streak = current run of such steps, window_max = the
    # longest run since the last check, steps_bad = non-finite steps since the last check. They are
    # read together with the ADA sign sums in one small copy at each check point (every
    # ``check_every`` iterations = the ADA interval, and at every tick).
    counters = torch.zeros([3], dtype=torch.float64, device=device)       # streak, window_max, steps_bad
    loss_nonfinite_prev = torch.zeros([], dtype=torch.float64, device=device)
    signs_prev = torch.zeros([2], dtype=torch.float64, device=device)     # cumulative [count, sum] handed to ADA
    changing_buffers = distributed.running_average_buffers(G)

    def check_point(stop_flag: bool) -> Dict[str, float]:
        """The one host sync of a check interval: ADA signs, non-finite counters, stop flag (all ranks)."""
        signs_now = stats.device_moments([ADA_SIGNS], device)[0, :2]
        vec = torch.cat([signs_now - signs_prev, counters,
                         torch.full([1], 1.0 if stop_flag else 0.0, dtype=torch.float64, device=device)])
        if world > 1:
            distributed.all_reduce_sum_(vec)
        values = vec.cpu().tolist()
        signs_prev.copy_(signs_now)
        counters[1:].zero_()
        counters[1].copy_(counters[0])
        return dict(sign_count=values[0], sign_sum=values[1], streak=values[2] / world,
                    window_max=values[3] / world, steps_bad=values[4] / world, stop=values[5] > 0)

    done = cur_nimg >= total_nimg
    first_tick_pending = not resume
    pending_timers: list = []
    try:
        while not done:
            chunks = []
            for _ in range(rounds):
                img, c = next(data_iter)
                chunks.append((img.to(device, non_blocking=True).to(torch.float32) / 127.5 - 1,
                               c.to(device, non_blocking=True)))

            step_bad = torch.zeros([], dtype=torch.bool, device=device)
            for phase_idx, phase in enumerate(phases):
                if batch_idx % phase["interval"]:
                    continue
                timer = _PhaseTimer(device)
                phase["module"].requires_grad_(True)
                phase["opt"].zero_grad(set_to_none=True)
                for k, (real_img, real_c) in enumerate(chunks):
                    s = chunk_seed(seed, batch_idx, phase_idx, rank * rounds + k)
                    torch.manual_seed(s)
                    gen_z = torch.randn([batch_gpu, G.z_dim], device=device)
                    if c_dim:
                        idx = np.random.RandomState(s).randint(len(dataset), size=batch_gpu)
                        gen_c = torch.from_numpy(np.stack([dataset.get_label(int(i)) for i in idx])).to(
                            device, non_blocking=True)
                    else:
                        gen_c = torch.zeros([batch_gpu, 0], device=device)
                    loss.accumulate_gradients(phase["name"], real_img, real_c, gen_z, gen_c,
                                              gain=phase["interval"] / rounds, cur_nimg=cur_nimg)
                loss.finish_phase(phase["name"], all_reduce=distributed.all_reduce_sum_)
                grads_bad = distributed.all_reduce_grads(phase["module"].parameters())
                if grads_bad is not None:
                    step_bad |= grads_bad
                phase["module"].requires_grad_(False)
                phase["opt"].step()
                pending_timers.append((phase["name"], timer.stop()))

            distributed.average_buffers_(G, changing_buffers)
            update_ema(G_ema, G, _ema_beta(batch, cur_nimg, opts["ema_kimg"], opts["ema_rampup"]))
            cur_nimg += batch
            batch_idx += 1
            # Non-finite bookkeeping, all on the device.
            loss_nonfinite = stats.device_moments(watch.names(), device)[:, 3:].sum()
            step_bad |= loss_nonfinite > loss_nonfinite_prev
            loss_nonfinite_prev = loss_nonfinite
            if world > 1:               # a loss can be non-finite on one rank only: agree per step (no sync)
                flag = step_bad.to(torch.float32)
                distributed.all_reduce_sum_(flag)
                step_bad = flag > 0
            counters[0].add_(1).mul_(step_bad)
            torch.maximum(counters[1], counters[0], out=counters[1])
            counters[2].add_(step_bad)

            if bar is None:
                bar = new_bar()
            bar.update(batch)
            done = cur_nimg >= total_nimg
            tick_due = done or first_tick_pending or cur_nimg >= tick_start_nimg + tick_nimg
            ada_due = ada is not None and (ada.iterations + 1) % ada.interval == 0
            local_stop = stopper.signum is not None
            if world == 1 and local_stop:
                tick_due = True
            if tick_due or ada_due or batch_idx % check_every == 0:
                seen = check_point(local_stop)
                nonfinite_total += int(round(seen["steps_bad"]))
                if ada is not None and seen["sign_count"] > 0:
                    ada.accumulate_sums(seen["sign_sum"], seen["sign_count"])
                stopping = seen["stop"] and not done
                if seen["window_max"] >= max_nonfinite:
                    raise TrainingDiverged(
                        f"{run_dir}: training stopped at kimg {cur_nimg / 1000:.3f} after {int(seen['window_max'])} "
                        f"consecutive steps with NaN/inf losses or gradients (--max-nonfinite {max_nonfinite}); "
                        f"last good snapshot: {last_snapshot or resume or 'none written yet'}; resume from it "
                        f"with a lower --lr or a higher --gamma")
                tick_due = tick_due or stopping
            if ada is not None:
                ada.step(augment_pipe)
            if not tick_due:
                continue
            first_tick_pending = False

            # -------------------------------------------------------------- tick
            bar.close()
            bar = None
            tick_end_time = time.time()
            kimg = cur_nimg / 1000
            sec_tick = tick_end_time - tick_start_time
            sec_kimg = sec_tick / max(cur_nimg - tick_start_nimg, 1) * 1000
            # CPU seconds of this process (all threads) per kimg: a measure of work that, unlike the
            # wall clock, does not grow when other jobs share the machine.
            cpu_kimg = (time.process_time() - tick_start_cpu) / max(cur_nimg - tick_start_nimg, 1) * 1000
            cpu_gb = _cpu_mem_gb()
            gpu_gb = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else 0.0
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            for name, t in pending_timers:       # read at the tick: CUDA events need no sync before
                stats.report0(f"Timing/{name}", t.seconds())
            pending_timers.clear()
            p_now = augment_pipe.p_value() if augment_pipe is not None else 0.0
            total_sec = tick_end_time - start_time
            for name, value in (("Progress/tick", cur_tick), ("Progress/kimg", kimg), ("Progress/augment", p_now),
                                ("Progress/nonfinite_steps", nonfinite_total),
                                ("Timing/total_sec", total_sec), ("Timing/sec_per_tick", sec_tick),
                                ("Timing/sec_per_kimg", sec_kimg), ("Timing/cpu_sec_per_kimg", cpu_kimg),
                                ("Timing/maintenance_sec", maintenance_time),
                                ("Timing/total_hours", total_sec / 3600), ("Timing/total_days", total_sec / 86400),
                                ("Resources/cpu_mem_gb", cpu_gb), ("Resources/peak_gpu_mem_gb", gpu_gb)):
                stats.report0(name, value)
            say(f"tick {cur_tick:<5d} kimg {kimg:<9.3f} time {_fmt_time(total_sec):<12s} sec/tick {sec_tick:<7.1f} "
                f"sec/kimg {sec_kimg:<8.2f} maintenance {maintenance_time:<6.1f} cpumem {cpu_gb:<6.2f} "
                f"gpumem {gpu_gb:<6.2f} augment {p_now:.3f}"
                + (f" nonfinite-steps {nonfinite_total}" if nonfinite_total else ""))
            tick_collector.update()
            tick_stats = tick_collector.as_dict()
            if is_main:
                stats_file.write(stats.jsonl_line(tick_stats))
                stats_file.flush()
                if tb is not None:
                    for name, value in stats.scalar_items(tick_stats):
                        tb.add_scalar(name, value, global_step=int(kimg * 1000))
                    tb.flush()

            maintenance_start = time.time()
            cur_tick += 1
            snap_due = snap_due or cur_tick % snap_ticks == 0
            if (done or stopping or snap_due) and last_snapshot_nimg != cur_nimg:
                # Never save a broken state: a regular snapshot waits while the last step was non-finite;
                # the final/stop snapshot needs finite weights, optimizer moments and pl_mean.
                finite = _state_is_finite([G, D, G_ema], [opt_G, opt_D], loss.pl_mean)
                if not finite or (seen["streak"] > 0 and not (done or stopping)):
                    if done or stopping or not finite:
                        raise TrainingDiverged(
                            f"{run_dir}: training stopped at kimg {cur_nimg / 1000:.3f}: the "
                            f"{'weights or optimizer state became' if not finite else 'last step was'} NaN/inf, "
                            f"so no snapshot of this state was written; last good snapshot: "
                            f"{last_snapshot or resume or 'none written yet'}")
                    say(f"Warning: snapshot at kimg {kimg:.3f} postponed to the next tick: the last step "
                        f"had NaN/inf losses or gradients")
                else:
                    snap_due = False
                    tag, snap_by_images = snapshot_tag(cur_nimg, used_tags, snap_by_images)
                    used_tags[tag] = cur_nimg
                    path = run_dir / f"network-snapshot-{tag}.pkl"
                    failure = None
                    if is_main:
                        target = run_dir / f"fakes{tag}.png"
                        try:
                            write_fakes(tag)
                            target = path
                            snap_io.save_snapshot(path, _snapshot_data(
                                snap_io, G, D, G_ema, opt_G, opt_D, cur_nimg, cur_tick, batch_idx, augment_pipe, ada,
                                loss, opts, training_set_kwargs, dataset, best or None, nonfinite_total, snapshot_extra))
                        except OSError as e:       # the temporary file is gone (atomic_path); name the target
                            failure = (f"{target}: cannot write the snapshot ({e.strerror or e}); nothing "
                                       f"half-written was left and earlier snapshots are intact "
                                       f"(last: {last_snapshot or resume or 'none yet'})")
                    if world > 1:           # every rank learns whether rank 0's write worked (and waits for it)
                        flag = torch.tensor([1.0 if failure else 0.0], device=device)
                        distributed.all_reduce_sum_(flag)
                        if flag.item() > 0 and failure is None:
                            failure = f"{path}: rank 0 could not write the snapshot"
                    if failure:
                        raise SnapshotWriteError(failure)
                    say(f"Saved {path}")
                    last_snapshot, last_snapshot_nimg = str(path), cur_nimg
                    # A stop snapshot skips the metrics (they can take many minutes); the resumed run's next
                    # regular snapshot is measured as usual.
                    values = {} if stopping else run_metrics(list(opts.get("metrics") or []), G_ema, path, run_dir,
                                                             training_set_kwargs, rank, world, device,
                                                             audio=dataset.audio, plugins=metric_plugins)
                    keep = opts.get("keep_best")
                    if is_main and keep in values and is_better(values[keep][0], best.get("value"), values[keep][1]):
                        best = dict(metric=keep, value=values[keep][0], snapshot=path.name, kimg=kimg,
                                    run_dir=str(run_dir.resolve()), higher_is_better=values[keep][1])
                        with atomic_path(run_dir / "best-snapshot.pkl") as tmp:
                            shutil.copyfile(path, tmp)
                        atomic_write_text(run_dir / "best.json", json.dumps(best, indent=2))
                        say(f"New best {keep} {values[keep][0]:.4g}: copied {path.name} to best-snapshot.pkl")
            if stopping:
                break
            tick_start_nimg, tick_start_time, tick_start_cpu = cur_nimg, time.time(), time.process_time()
            maintenance_time = tick_start_time - maintenance_start
    finally:
        if bar is not None:
            bar.close()
        if stats_file is not None:
            stats_file.close()
        if tb is not None:
            tb.close()
    if stopping:
        raise TrainingInterrupted(
            f"training stopped at kimg {cur_nimg / 1000:.3f}; snapshot {last_snapshot}; continue with "
            f"--resume latest (or --resume {last_snapshot})", snapshot=last_snapshot, cur_nimg=cur_nimg,
            signum=stopper.signum)
    say("Exiting...")
    return dict(cur_nimg=cur_nimg, cur_tick=cur_tick, batch_idx=batch_idx, snapshot=last_snapshot)


def _grid_for_tensorboard(images, grid) -> np.ndarray:
    """The snapshot grid as uint8 [H, W, C] (what the PNG holds) for ``SummaryWriter.add_image``."""
    from .grid import make_image_grid
    return make_image_grid(images, drange=(-1, 1), grid_size=grid)


def _carry_best_into(run_dir: Path, best: dict, say) -> None:
    """Start a resumed run's ``best.json`` (and ``best-snapshot.pkl``, when the file still exists) from ``best``."""
    source = Path(best.get("run_dir", "")) / str(best.get("snapshot", ""))
    if best.get("snapshot") and source.is_file():
        with atomic_path(run_dir / "best-snapshot.pkl") as tmp:
            shutil.copyfile(source, tmp)
        say(f"Best {best['metric']} so far {best['value']:.4g} ({source}): copied to best-snapshot.pkl")
    else:
        say(f"Best {best['metric']} so far {best['value']:.4g} ({source} is gone; only the value carries over)")
    atomic_write_text(run_dir / "best.json", json.dumps(best, indent=2))


def _state_is_finite(modules, optimizers, pl_mean: torch.Tensor) -> bool:
    """True when every parameter and buffer, every optimizer tensor and ``pl_mean`` is finite (one host sync)."""
    tensors = [t for m in modules for t in list(m.parameters()) + list(m.buffers()) if t.is_floating_point()]
    tensors += [v for opt in optimizers for st in opt.state.values() for v in st.values()
                if isinstance(v, torch.Tensor) and v.is_floating_point()]
    tensors.append(pl_mean)
    flags = torch.stack([torch.isfinite(t).all() for t in tensors if t.numel()])
    return bool(flags.all())


def _snapshot_data(snap_io, G, D, G_ema, opt_G, opt_D, cur_nimg, cur_tick, batch_idx, augment_pipe, ada, loss,
                   opts, training_set_kwargs, dataset, best=None, nonfinite_steps=0, extra=None) -> dict:
    """Everything needed to generate without the dataset and to resume exactly (docs/contract.md), as plain data,
    plus the caller's ``extra`` keys (see :func:`check_snapshot_extra`)."""
    def plain_opt(opt):
        state = opt.state_dict()
        for group in state["param_groups"]:
            group["betas"] = list(group["betas"])
        return state
    return dict(
        G=snap_io.network_record(G), D=snap_io.network_record(D), G_ema=snap_io.network_record(G_ema),
        opt_G=plain_opt(opt_G), opt_D=plain_opt(opt_D),
        cur_nimg=int(cur_nimg), cur_tick=int(cur_tick), batch_idx=int(batch_idx),
        augment=(dict(kwargs=dict(augment_pipe.init_kwargs), p=float(augment_pipe.p))
                 if augment_pipe is not None else None),
        # with the sign sums of the ADA interval in progress (handed over at the tick just before)

        ada_stats=ada.state_dict() if ada is not None else None,
        pl_mean=loss.pl_mean.detach().cpu().clone(),
        rng=snap_io.capture_rng_state(),
        training_options=json.loads(json.dumps(opts, default=str)),
        training_set_kwargs=dict(training_set_kwargs),
        audio=copy.deepcopy(dataset.audio),
        best=copy.deepcopy(best),        # the --keep-best record so far, carried over a resume
        nonfinite_steps=int(nonfinite_steps),   # steps with NaN/inf losses or gradients so far (stats)
        **(extra or {}),
    )


#: Top-level snapshot keys the loop writes itself; ``snapshot_extra`` may not use them.
LOOP_SNAPSHOT_KEYS = ("format_version", "G", "D", "G_ema", "opt_G", "opt_D", "cur_nimg", "cur_tick", "batch_idx",
                      "augment", "ada_stats", "pl_mean", "rng", "training_options", "training_set_kwargs", "audio",
                      "best", "nonfinite_steps")


def check_snapshot_extra(extra: Optional[Dict[str, Any]], snap_io=None) -> Dict[str, Any]:
    """``extra`` as a dict (``{}`` for None) after checking it can go into every snapshot unchanged:
    string keys the loop does not write itself, plain-data values. ValueError with one line otherwise,
    so a bad value fails before training rather than at the first snapshot, hours in."""
    if snap_io is None:
        from . import snapshot as snap_io
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise ValueError(f"snapshot_extra must be a dict, got {type(extra).__name__}")
    for key, value in extra.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"snapshot_extra key {key!r} is not a non-empty string")
        if key in LOOP_SNAPSHOT_KEYS:
            raise ValueError(f"snapshot_extra key {key!r} is one the training loop writes itself")
        try:
            snap_io.check_plain_data(value, key)
        except TypeError as e:
            raise ValueError(f"snapshot_extra: {e}") from None
    return dict(extra)


class _PhaseTimer:
    """Seconds spent in one phase: CUDA events on a GPU (no sync until read), the wall clock on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)
            self.start.record(torch.cuda.current_stream(device))
        else:
            self.start, self.end = time.perf_counter(), None

    def stop(self) -> "_PhaseTimer":
        if self.cuda:
            self.end.record()
        else:
            self.end = time.perf_counter()
        return self

    def seconds(self) -> float:
        if self.cuda:
            self.end.synchronize()
            return self.start.elapsed_time(self.end) / 1000
        return self.end - self.start


def _cpu_mem_gb() -> float:
    try:
        import psutil
        return psutil.Process(os.getpid()).memory_info().rss / 2 ** 30
    except ImportError:
        return 0.0


def _fmt_time(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s // 60 % 60:02d}m"
    return f"{s // 86400}d {s // 3600 % 24:02d}h"
