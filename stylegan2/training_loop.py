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

The run is a sequence of steps on one object (:class:`_Training`): build the data and the
networks, resume (:mod:`stylegan2.resume`), open the loader and the outputs, then iterate, keep the
books at check points, tick, and snapshot (:mod:`stylegan2.training_snapshot`). The run folder and
its log are :mod:`stylegan2.run_dir`; stop signals :mod:`stylegan2.stop_request`.

SIGINT / SIGTERM (:class:`StopRequest`) ask for a graceful stop: the ranks agree on it at the next
check point (an all-reduced flag; alone, at once), a final snapshot is written at the current image count, and
:class:`TrainingInterrupted` is raised; a second SIGINT aborts at once (``KeyboardInterrupt``).
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence

import numpy as np
import torch

from . import distributed, stats
from .loss import StyleGAN2Loss, lazy_regularization_adam
from .misc import atomic_path, atomic_write_text
from .progress import progress_bar

# The steps' own concepts live in their modules; their names stay importable from here for callers.
from .resume import (  # noqa: F401
    _GroupMismatch,
    carried_best_record,
    check_loop_state,
    check_optimizer_state,
    restore_rng_or_fail,
    restore_training_state,
)
from .run_dir import console_logged_to, next_run_dir
from .stop_request import StopRequest
from .training_snapshot import (  # noqa: F401
    LOOP_SNAPSHOT_KEYS,
    SnapshotPreview,
    call_snapshot_hook,
    carry_best_into,
    check_snapshot_extra,
    grid_for_tensorboard,
    is_better,
    run_metrics,
    snapshot_data,
    snapshot_tag,
    state_is_finite,
)

_state_is_finite = state_is_finite      # the name the tests and older callers use


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
    ``cur_nimg``, ``cur_tick``, ``batch_idx``, ``snapshot`` (the last snapshot path written) and
    ``patience_ended`` (True when ``patience`` ended the run before ``kimg``).
    """
    from . import snapshot as snap_io
    from .ops import backend

    snapshot_extra = check_snapshot_extra(snapshot_extra, snap_io)
    start_time = time.time()
    run_dir = Path(run_dir)
    world = distributed.get_world_size()
    seed = int(opts["seed"])
    batch, batch_gpu = int(opts["batch"]), int(opts["batch_gpu"])
    if batch % (batch_gpu * world):
        raise ValueError(f"batch {batch} is not divisible by batch_gpu {batch_gpu} x {world} processes")
    backend.set_mode(opts.get("ops", "auto"))
    stats.reset()          # collectors below must not see values from an earlier run in this process
    np.random.seed(seed * world + rank)
    torch.manual_seed(seed * world + rank)
    stopper = StopRequest(verbose=rank == 0).install()
    try:
        with _backend_switches(opts), console_logged_to(run_dir, enabled=rank == 0):
            run = _Training(rank, world, run_dir, data, resume, progress, opts, start_time, stopper,
                            snapshot_hook, snapshot_extra, tuple(metric_plugins))
            return run.train()
    finally:
        stopper.uninstall()


@contextlib.contextmanager
def _backend_switches(opts: Dict[str, Any]):
    """cuDNN benchmark and TF32 as the options say, as StyleGAN2-ADA sets them, restored on the way out.

    Set on every device (they only matter on CUDA and are harmless elsewhere), and put back afterwards
    so that one run in a process does not leak into the next.
    """
    saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cudnn.benchmark = not bool(opts.get("nobench", False))
    torch.backends.cuda.matmul.allow_tf32 = bool(opts.get("allow_tf32", False))
    torch.backends.cudnn.allow_tf32 = bool(opts.get("allow_tf32", False))
    try:
        yield
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = saved


class _Training:
    """One run on one rank: the state its steps share, and the steps, each one screen long.

    :meth:`train` calls them in order: :meth:`build_data`, :meth:`build_networks`, :meth:`resume_from`,
    :meth:`open_loader`, :meth:`open_outputs`, then per iteration :meth:`iteration` and
    :meth:`bookkeeping` (stop signals, ADA and non-finite checks), per tick :meth:`tick`, and at a
    snapshot :meth:`snapshot`. The order of the steps is the order of every random draw, so a run
    repeats itself and a resumed run continues exactly.
    """

    def __init__(self, rank, world, run_dir, data, resume, progress, opts, start_time, stopper,
                 snapshot_hook, snapshot_extra, metric_plugins):
        from . import snapshot as snap_io
        self.snap_io = snap_io
        self.rank, self.world, self.device = rank, world, distributed.local_device()
        self.run_dir, self.data, self.resume, self.progress, self.opts = run_dir, data, resume, progress, opts
        self.start_time, self.stopper = start_time, stopper
        self.snapshot_hook, self.snapshot_extra, self.metric_plugins = snapshot_hook, snapshot_extra, metric_plugins
        self.is_main = rank == 0
        self.say = print if self.is_main else (lambda *a, **k: None)
        self.seed = int(opts["seed"])
        self.batch, self.batch_gpu = int(opts["batch"]), int(opts["batch_gpu"])
        self.rounds = self.batch // (self.batch_gpu * world)
        self.cur_nimg = self.cur_tick = self.batch_idx = self.nonfinite_total = 0
        self.resumed_best: Optional[dict] = None
        self.stats_file = self.tb = self.bar = None

    def train(self) -> Dict[str, Any]:
        """All steps in order; the run's summary, or TrainingInterrupted after a stop snapshot."""
        self.build_data()
        self.build_networks()
        if self.resume:
            self.resume_from(self.resume)
        for module in (self.G, self.D, self.G_ema):
            distributed.broadcast_module(module)
        self.say(f"Generator {_param_count(self.G):,} parameters, discriminator {_param_count(self.D):,}; "
                 f"{self.world} process(es) on {self.device}, batch {self.batch} = {self.world} x {self.rounds} "
                 f"rounds x {self.batch_gpu}")
        self.open_loader()
        try:
            self.open_outputs()
            self.run_loop()
        finally:
            self.close_outputs()
        if self.stopping:
            raise TrainingInterrupted(
                f"training stopped at kimg {self.cur_nimg / 1000:.3f}; snapshot {self.last_snapshot}; continue "
                f"with --resume latest (or --resume {self.last_snapshot})", snapshot=self.last_snapshot,
                cur_nimg=self.cur_nimg, signum=self.stopper.signum)
        self.say("Exiting...")
        return dict(cur_nimg=self.cur_nimg, cur_tick=self.cur_tick, batch_idx=self.batch_idx,
                    snapshot=self.last_snapshot, patience_ended=self.patience_ended)

    # -------------------------------------------------------------------------------- set-up steps

    def build_data(self) -> None:
        """The training set, as a snapshot will describe it (``training_set_kwargs``)."""
        from .dataset import ImageFolderDataset
        opts, data = self.opts, self.data
        self.training_set_kwargs = dict(path=str(data), resolution=int(opts["resolution"]),
                                        use_labels=bool(opts["cond"]), max_size=opts.get("subset"),
                                        xflip=bool(opts["mirror"]), random_seed=self.seed)
        self.dataset = dataset = ImageFolderDataset(**self.training_set_kwargs)
        if opts["cond"] and not dataset.has_labels:
            raise ValueError(f"{data}: --cond needs labels in dataset.json, but it has none")
        self.c_dim, self.img_channels = dataset.label_dim, dataset.num_channels
        self.say(f"Dataset: {dataset.path}: {len(dataset)} images, {self.img_channels} x {dataset.resolution} x "
                 f"{dataset.resolution}, labels {self.c_dim}, audio block {'yes' if dataset.audio else 'no'}")

    def build_networks(self) -> None:
        """G, D, G_ema, the augment pipe and its ADA controller, the loss, and the phases with their Adams."""
        from . import networks
        from .augment import build_augment_pipe
        from .presets import discriminator_kwargs, generator_kwargs
        opts, device = self.opts, self.device
        self.G_kwargs = generator_kwargs(opts, self.c_dim, self.img_channels)
        self.D_kwargs = discriminator_kwargs(opts, self.c_dim, self.img_channels)
        self.G = networks.Generator(**self.G_kwargs).train().requires_grad_(False).to(device)
        self.D = networks.Discriminator(**self.D_kwargs).train().requires_grad_(False).to(device)
        self.G_ema = copy.deepcopy(self.G).eval()
        self.augment_pipe = build_augment_pipe(opts["aug"], opts["augpipe"], opts["p"])
        if self.augment_pipe is not None:
            self.augment_pipe = self.augment_pipe.train().requires_grad_(False).to(device)
        self.ada = None
        if opts["aug"] == "ada":
            from .ada import AdaController
            # The sign sums arrive already summed over ranks (the loop's check point), so no second reduce.
            self.ada = AdaController(target=opts["target"], interval=opts["ada_interval"], ada_kimg=opts["ada_kimg"],
                                     batch_size=self.batch, p=opts["p"], reduce_fn=lambda t: t)
        self.loss = StyleGAN2Loss(self.G, self.D, augment_pipe=self.augment_pipe, r1_gamma=opts["gamma"],
                                  style_mixing_prob=opts["style_mixing_prob"], pl_weight=opts["pl_weight"],
                                  pl_batch_shrink=opts["pl_batch_shrink"], pl_decay=opts["pl_decay"])
        self.phases = []
        for name, module, lr, reg_interval in (("G", self.G, opts["glr"], opts["G_reg_interval"]),
                                               ("D", self.D, opts["dlr"], opts["D_reg_interval"])):
            lr_c, betas_c = lazy_regularization_adam(lr, opts["betas"], reg_interval)
            opt = torch.optim.Adam(module.parameters(), lr=lr_c, betas=betas_c, eps=opts["eps"])
            if reg_interval is None:
                self.phases.append(dict(name=name + "both", module=module, opt=opt, interval=1))
            else:
                self.phases.append(dict(name=name + "main", module=module, opt=opt, interval=1))
                self.phases.append(dict(name=name + "reg", module=module, opt=opt, interval=reg_interval))
        self.opt_G, self.opt_D = self.phases[0]["opt"], self.phases[-1]["opt"]

    def resume_from(self, resume: str) -> None:
        """Load the snapshot ``resume``, check every part and put it back (:mod:`stylegan2.resume`)."""
        snap = self.snap_io.load_snapshot(resume)
        counters = restore_training_state(
            self.snap_io, snap, resume, dict(G=self.G, D=self.D, G_ema=self.G_ema),
            dict(opt_G=self.opt_G, opt_D=self.opt_D), self.augment_pipe, self.ada, self.loss, self.say)
        self.cur_nimg, self.cur_tick = counters["cur_nimg"], counters["cur_tick"]
        self.batch_idx, self.nonfinite_total = counters["batch_idx"], counters["nonfinite_steps"]
        self.say(f"Resumed from {resume} at kimg {self.cur_nimg / 1000:.3f} (tick {self.cur_tick}, "
                 f"iteration {self.batch_idx})")
        self.resumed_best = carried_best_record(snap, resume, self.opts.get("keep_best"), self.metric_plugins)

    def open_loader(self) -> None:
        """This rank's block of every global batch, fast-forwarded past the images already shown."""
        from .sampler import InfiniteSampler
        base = InfiniteSampler(self.dataset, rank=0, num_replicas=1, seed=self.seed)
        sampler = BlockShard(base, self.batch, self.rank, self.world, skip=self.cur_nimg)
        workers = int(self.opts.get("workers", 0))
        loader_kwargs = dict(num_workers=workers, pin_memory=self.device.type == "cuda")
        if workers > 0:
            loader_kwargs.update(prefetch_factor=2, persistent_workers=True)
        self.data_iter = iter(torch.utils.data.DataLoader(self.dataset, sampler=sampler, batch_size=self.batch_gpu,
                                                          **loader_kwargs))

    def open_outputs(self) -> None:
        """The snapshot grid, ``training_options.json``, ``reals.png``, ``stats.jsonl``, TensorBoard, first fakes."""
        from .grid import save_image_grid, setup_snapshot_image_grid
        run_dir, device = self.run_dir, self.device
        self.grid, grid_reals, grid_labels = setup_snapshot_image_grid(self.dataset, random_seed=self.seed,
                                                                       max_images=self.opts.get("grid_limit"))
        grid_n = self.grid[0] * self.grid[1]
        self.grid_z = torch.randn([grid_n, self.G.z_dim], generator=torch.Generator().manual_seed(self.seed)).to(device)
        self.grid_c = torch.from_numpy(grid_labels).to(device)
        if self.is_main:
            options_record = dict(self.opts, run_dir=str(run_dir), data=str(self.data), resume=self.resume,
                                  world_size=self.world, G_kwargs=self.G_kwargs, D_kwargs=self.D_kwargs,
                                  training_set_kwargs=self.training_set_kwargs)
            atomic_write_text(run_dir / "training_options.json", json.dumps(options_record, indent=2, default=str))
            save_image_grid(grid_reals, run_dir / "reals.png", drange=(0, 255), grid_size=self.grid)
            self.stats_file = open(run_dir / "stats.jsonl", "a", encoding="utf-8")
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(run_dir))
            except ImportError:
                pass
            if self.tb is not None and not self.resume:
                self.tb.add_image("reals", grid_for_tensorboard(grid_reals / 127.5 - 1, self.grid),
                                  global_step=self.cur_nimg, dataformats="HWC")
            if not self.resume:
                self.write_fakes("_init")

    def close_outputs(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.stats_file is not None:
            self.stats_file.close()
        if self.tb is not None:
            self.tb.close()

    def write_fakes(self, tag: str) -> None:
        """``fakes<tag>.png``, its TensorBoard image and the snapshot hook (rank 0 only)."""
        from .grid import save_image_grid
        with torch.no_grad():
            images = torch.cat([self.G_ema(z, c, noise_mode="const").cpu() for z, c in
                                zip(self.grid_z.split(self.batch_gpu), self.grid_c.split(self.batch_gpu))])
        save_image_grid(images, self.run_dir / f"fakes{tag}.png", drange=(-1, 1), grid_size=self.grid)
        if self.tb is not None:
            self.tb.add_image("fakes", grid_for_tensorboard(images, self.grid), global_step=self.cur_nimg,
                              dataformats="HWC")
        call_snapshot_hook(self.snapshot_hook,
                           SnapshotPreview(self.run_dir, tag, images, self.grid, self.cur_nimg, self.tb), self.say)
        if self.tb is not None:
            self.tb.flush()

    # -------------------------------------------------------------------------------- the loop

    def run_loop(self) -> None:
        """Iterations until ``kimg`` is reached or a stop is agreed; a tick (and maybe a snapshot) when due."""
        opts, device = self.opts, self.device
        self.total_nimg = int(round(opts["kimg"] * 1000))
        self.tick_nimg = opts["tick"] * 1000
        self.max_nonfinite = int(opts.get("max_nonfinite", 50))
        self.check_every = int(opts.get("ada_interval", 4))
        self.tick_collector = stats.Collector()
        self.watch = stats.Collector(LOSS_REGEX)
        self.tick_start_nimg, self.tick_start_time, self.tick_start_cpu = \
            self.cur_nimg, time.time(), time.process_time()
        self.maintenance_time = self.tick_start_time - self.start_time
        self.last_snapshot, self.last_snapshot_nimg, self.best = None, None, dict(self.resumed_best or {})
        self.stopping, self.snap_by_images, self.snap_due, self.patience_ended = False, False, False, False
        # Names this run may not reuse for another image count: its own, plus any already in run_dir.
        self.used_tags: Dict[str, int] = {m.group(1): -1 for m in (self.snap_io.SNAPSHOT_RE.match(f.name) for f in
                                          self.run_dir.glob("network-snapshot-*.pkl")) if m and len(m.group(1)) == 6}
        if self.is_main and self.best:
            carry_best_into(self.run_dir, self.best, self.say)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # Device-side counters (13.4: no host sync per step). A step is non-finite when a watched loss
        # or an averaged gradient was NaN/inf; streak = current run of such steps, window_max = the
        # longest run since the last check, steps_bad = non-finite steps since the last check. They are
        # read together with the ADA sign sums in one small copy at each check point (every
        # ``check_every`` iterations = the ADA interval, and at every tick).
        self.counters = torch.zeros([3], dtype=torch.float64, device=device)     # streak, window_max, steps_bad
        self.loss_nonfinite_prev = torch.zeros([], dtype=torch.float64, device=device)
        self.signs_prev = torch.zeros([2], dtype=torch.float64, device=device)   # cumulative [count, sum] for ADA
        self.changing_buffers = distributed.running_average_buffers(self.G)
        self.done = self.cur_nimg >= self.total_nimg
        self.first_tick_pending = not self.resume
        self.pending_timers: list = []
        while not self.done:
            self.iteration()
            if not self.bookkeeping():
                continue
            self.first_tick_pending = False
            self.tick()
            maintenance_start = time.time()
            self.cur_tick += 1
            self.snap_due = self.snap_due or self.cur_tick % int(opts["snap"]) == 0
            if (self.done or self.stopping or self.snap_due) and self.last_snapshot_nimg != self.cur_nimg:
                self.snapshot()
            if self.stopping:
                break
            self.tick_start_nimg, self.tick_start_time, self.tick_start_cpu = \
                self.cur_nimg, time.time(), time.process_time()
            self.maintenance_time = self.tick_start_time - maintenance_start

    def iteration(self) -> None:
        """One global batch: every due phase over ``rounds`` chunks, the EMA, and the non-finite counters."""
        device, rounds = self.device, self.rounds
        chunks = []
        for _ in range(rounds):
            img, c = next(self.data_iter)
            chunks.append((img.to(device, non_blocking=True).to(torch.float32) / 127.5 - 1,
                           c.to(device, non_blocking=True)))
        step_bad = torch.zeros([], dtype=torch.bool, device=device)
        for phase_idx, phase in enumerate(self.phases):
            if self.batch_idx % phase["interval"]:
                continue
            timer = _PhaseTimer(device)
            phase["module"].requires_grad_(True)
            phase["opt"].zero_grad(set_to_none=True)
            for k, (real_img, real_c) in enumerate(chunks):
                gen_z, gen_c = self.latents(phase_idx, self.rank * rounds + k)
                self.loss.accumulate_gradients(phase["name"], real_img, real_c, gen_z, gen_c,
                                               gain=phase["interval"] / rounds, cur_nimg=self.cur_nimg)
            self.loss.finish_phase(phase["name"], all_reduce=distributed.all_reduce_sum_)
            grads_bad = distributed.all_reduce_grads(phase["module"].parameters())
            if grads_bad is not None:
                step_bad |= grads_bad
            phase["module"].requires_grad_(False)
            phase["opt"].step()
            self.pending_timers.append((phase["name"], timer.stop()))
        distributed.average_buffers_(self.G, self.changing_buffers)
        update_ema(self.G_ema, self.G, _ema_beta(self.batch, self.cur_nimg, self.opts["ema_kimg"],
                                                 self.opts["ema_rampup"]))
        self.cur_nimg += self.batch
        self.batch_idx += 1
        # Non-finite bookkeeping, all on the device.
        loss_nonfinite = stats.device_moments(self.watch.names(), device)[:, 3:].sum()
        step_bad |= loss_nonfinite > self.loss_nonfinite_prev
        self.loss_nonfinite_prev = loss_nonfinite
        if self.world > 1:          # a loss can be non-finite on one rank only: agree per step (no sync)
            flag = step_bad.to(torch.float32)
            distributed.all_reduce_sum_(flag)
            step_bad = flag > 0
        self.counters[0].add_(1).mul_(step_bad)
        torch.maximum(self.counters[1], self.counters[0], out=self.counters[1])
        self.counters[2].add_(step_bad)

    def latents(self, phase_idx: int, chunk: int):
        """The seeded ``(gen_z, gen_c)`` of one chunk of one phase (independent of the rank layout)."""
        s = chunk_seed(self.seed, self.batch_idx, phase_idx, chunk)
        torch.manual_seed(s)
        gen_z = torch.randn([self.batch_gpu, self.G.z_dim], device=self.device)
        if not self.c_dim:
            return gen_z, torch.zeros([self.batch_gpu, 0], device=self.device)
        idx = np.random.RandomState(s).randint(len(self.dataset), size=self.batch_gpu)
        labels = np.stack([self.dataset.get_label(int(i)) for i in idx])
        return gen_z, torch.from_numpy(labels).to(self.device, non_blocking=True)

    def bookkeeping(self) -> bool:
        """The progress bar, stop signals, and at a check point ADA sums and the non-finite streak; True: tick now."""
        if self.bar is None:
            self.bar = progress_bar(total=int(math.ceil(self.tick_nimg)), unit="img", desc=f"tick {self.cur_tick}",
                                    leave=False, disable=not (self.progress and self.is_main), file=sys.__stderr__,
                                    dynamic_ncols=True)
        self.bar.update(self.batch)
        ada = self.ada
        self.done = self.cur_nimg >= self.total_nimg
        tick_due = self.done or self.first_tick_pending or self.cur_nimg >= self.tick_start_nimg + self.tick_nimg
        ada_due = ada is not None and (ada.iterations + 1) % ada.interval == 0
        local_stop = self.stopper.signum is not None
        if self.world == 1 and local_stop:
            tick_due = True
        if tick_due or ada_due or self.batch_idx % self.check_every == 0:
            self.seen = seen = self.check_point(local_stop)
            self.nonfinite_total += int(round(seen["steps_bad"]))
            if ada is not None and seen["sign_count"] > 0:
                ada.accumulate_sums(seen["sign_sum"], seen["sign_count"])
            self.stopping = seen["stop"] and not self.done
            if seen["window_max"] >= self.max_nonfinite:
                raise TrainingDiverged(
                    f"{self.run_dir}: training stopped at kimg {self.cur_nimg / 1000:.3f} after "
                    f"{int(seen['window_max'])} consecutive steps with NaN/inf losses or gradients (--max-nonfinite "
                    f"{self.max_nonfinite}); last good snapshot: {self.last_good()}; resume from it with a lower "
                    f"--lr or a higher --gamma")
            tick_due = tick_due or self.stopping
        if ada is not None:
            ada.step(self.augment_pipe)
        return tick_due

    def check_point(self, stop_flag: bool) -> Dict[str, float]:
        """The one host sync of a check interval: ADA signs, non-finite counters, stop flag (all ranks)."""
        device, world, counters = self.device, self.world, self.counters
        signs_now = stats.device_moments([ADA_SIGNS], device)[0, :2]
        vec = torch.cat([signs_now - self.signs_prev, counters,
                         torch.full([1], 1.0 if stop_flag else 0.0, dtype=torch.float64, device=device)])
        if world > 1:
            distributed.all_reduce_sum_(vec)
        values = vec.cpu().tolist()
        self.signs_prev.copy_(signs_now)
        counters[1:].zero_()
        counters[1].copy_(counters[0])
        return dict(sign_count=values[0], sign_sum=values[1], streak=values[2] / world,
                    window_max=values[3] / world, steps_bad=values[4] / world, stop=values[5] > 0)

    def last_good(self) -> str:
        return self.last_snapshot or self.resume or "none written yet"

    # -------------------------------------------------------------------------------- ticks and snapshots

    def tick(self) -> None:
        """The tick line, its statistics in ``stats.jsonl`` and TensorBoard; timers and peak memory reset."""
        self.bar.close()
        self.bar = None
        device, nimg = self.device, max(self.cur_nimg - self.tick_start_nimg, 1)
        tick_end_time = time.time()
        kimg = self.cur_nimg / 1000
        sec_tick = tick_end_time - self.tick_start_time
        sec_kimg = sec_tick / nimg * 1000
        # CPU seconds of this process (all threads) per kimg: a measure of work that, unlike the
        # wall clock, does not grow when other jobs share the machine.
        cpu_kimg = (time.process_time() - self.tick_start_cpu) / nimg * 1000
        cpu_gb = _cpu_mem_gb()
        gpu_gb = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else 0.0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for name, t in self.pending_timers:       # read at the tick: CUDA events need no sync before
            stats.report0(f"Timing/{name}", t.seconds())
        self.pending_timers.clear()
        p_now = self.augment_pipe.p_value() if self.augment_pipe is not None else 0.0
        total_sec = tick_end_time - self.start_time
        for name, value in (("Progress/tick", self.cur_tick), ("Progress/kimg", kimg), ("Progress/augment", p_now),
                            ("Progress/nonfinite_steps", self.nonfinite_total),
                            ("Timing/total_sec", total_sec), ("Timing/sec_per_tick", sec_tick),
                            ("Timing/sec_per_kimg", sec_kimg), ("Timing/cpu_sec_per_kimg", cpu_kimg),
                            ("Timing/maintenance_sec", self.maintenance_time),
                            ("Timing/total_hours", total_sec / 3600), ("Timing/total_days", total_sec / 86400),
                            ("Resources/cpu_mem_gb", cpu_gb), ("Resources/peak_gpu_mem_gb", gpu_gb)):
            stats.report0(name, value)
        self.say(f"tick {self.cur_tick:<5d} kimg {kimg:<9.3f} time {_fmt_time(total_sec):<12s} sec/tick "
                 f"{sec_tick:<7.1f} sec/kimg {sec_kimg:<8.2f} maintenance {self.maintenance_time:<6.1f} cpumem "
                 f"{cpu_gb:<6.2f} gpumem {gpu_gb:<6.2f} augment {p_now:.3f}"
                 + (f" nonfinite-steps {self.nonfinite_total}" if self.nonfinite_total else ""))
        self.tick_collector.update()
        tick_stats = self.tick_collector.as_dict()
        if self.is_main:
            self.stats_file.write(stats.jsonl_line(tick_stats))
            self.stats_file.flush()
            if self.tb is not None:
                for name, value in stats.scalar_items(tick_stats):
                    self.tb.add_scalar(name, value, global_step=int(kimg * 1000))
                self.tb.flush()

    def snapshot(self) -> None:
        """Write a snapshot of a finite state (or postpone a regular one after a NaN step), then measure it.

        Never saves a broken state: a regular snapshot waits while the last step was non-finite; the
        final or stop snapshot needs finite weights, optimizer moments and ``pl_mean``.
        """
        finite = state_is_finite([self.G, self.D, self.G_ema], [self.opt_G, self.opt_D], self.loss.pl_mean)
        final = self.done or self.stopping
        if not finite or (self.seen["streak"] > 0 and not final):
            if final or not finite:
                raise TrainingDiverged(
                    f"{self.run_dir}: training stopped at kimg {self.cur_nimg / 1000:.3f}: the "
                    f"{'weights or optimizer state became' if not finite else 'last step was'} NaN/inf, "
                    f"so no snapshot of this state was written; last good snapshot: {self.last_good()}")
            self.say(f"Warning: snapshot at kimg {self.cur_nimg / 1000:.3f} postponed to the next tick: the last "
                     f"step had NaN/inf losses or gradients")
            return
        self.snap_due = False
        tag, self.snap_by_images = snapshot_tag(self.cur_nimg, self.used_tags, self.snap_by_images)
        self.used_tags[tag] = self.cur_nimg
        path = self.run_dir / f"network-snapshot-{tag}.pkl"
        self.write_snapshot(tag, path)
        self.say(f"Saved {path}")
        self.last_snapshot, self.last_snapshot_nimg = str(path), self.cur_nimg
        # A stop snapshot skips the metrics (they can take many minutes); the resumed run's next
        # regular snapshot is measured as usual.
        if not self.stopping:
            self.keep_best(path, run_metrics(list(self.opts.get("metrics") or []), self.G_ema, path, self.run_dir,
                                             self.training_set_kwargs, self.rank, self.world, self.device,
                                             audio=self.dataset.audio, plugins=self.metric_plugins))
            if not self.done and self.patience_ran_out():
                self.done = self.patience_ended = True

    def patience_ran_out(self) -> bool:
        """With ``--patience KIMG``: True (on every rank) once the ``--keep-best`` metric has not improved for
        ``KIMG`` thousand images; the run then ends as if ``--kimg`` were reached, after saying why."""
        patience = self.opts.get("patience")
        if not patience:
            return False
        best_kimg = self.best.get("kimg")
        stale = self.cur_nimg / 1000 - best_kimg if isinstance(best_kimg, (int, float)) else None
        ran_out = self.is_main and stale is not None and stale >= patience - 1e-9
        if self.world > 1:          # only rank 0 measures; all ranks must leave the loop together
            flag = torch.tensor([1.0 if ran_out else 0.0], device=self.device)
            distributed.all_reduce_sum_(flag)
            ran_out = flag.item() > 0
        if ran_out and self.is_main:
            self.say(f"No new best {self.best['metric']} for {stale:g} kimg (best {self.best['value']:.4g} at kimg "
                     f"{best_kimg:g}, {self.best.get('snapshot')}; --patience {patience:g}): training ends at kimg "
                     f"{self.cur_nimg / 1000:.3f}")
        return ran_out

    def write_snapshot(self, tag: str, path: Path) -> None:
        """Rank 0 writes the fakes grid and the snapshot; every rank learns whether that worked."""
        failure = None
        if self.is_main:
            target = self.run_dir / f"fakes{tag}.png"
            try:
                self.write_fakes(tag)
                target = path
                self.snap_io.save_snapshot(path, snapshot_data(
                    self.snap_io, self.G, self.D, self.G_ema, self.opt_G, self.opt_D, self.cur_nimg, self.cur_tick,
                    self.batch_idx, self.augment_pipe, self.ada, self.loss, self.opts, self.training_set_kwargs,
                    self.dataset, self.best or None, self.nonfinite_total, self.snapshot_extra))
            except OSError as e:       # the temporary file is gone (atomic_path); name the target
                last = self.last_snapshot or self.resume or "none yet"
                failure = (f"{target}: cannot write the snapshot ({e.strerror or e}); nothing half-written was "
                           f"left and earlier snapshots are intact (last: {last})")
        if self.world > 1:           # every rank learns whether rank 0's write worked (and waits for it)
            flag = torch.tensor([1.0 if failure else 0.0], device=self.device)
            distributed.all_reduce_sum_(flag)
            if flag.item() > 0 and failure is None:
                failure = f"{path}: rank 0 could not write the snapshot"
        if failure:
            raise SnapshotWriteError(failure)

    def keep_best(self, path: Path, values: Dict[str, tuple]) -> None:
        """With ``--keep-best``: copy a snapshot that beats the best so far to ``best-snapshot.pkl`` (rank 0)."""
        keep, best = self.opts.get("keep_best"), self.best
        if not (self.is_main and keep in values and is_better(values[keep][0], best.get("value"), values[keep][1])):
            return
        self.best = dict(metric=keep, value=values[keep][0], snapshot=path.name, kimg=self.cur_nimg / 1000,
                         run_dir=str(self.run_dir.resolve()), higher_is_better=values[keep][1])
        with atomic_path(self.run_dir / "best-snapshot.pkl") as tmp:
            shutil.copyfile(path, tmp)
        atomic_write_text(self.run_dir / "best.json", json.dumps(self.best, indent=2))
        self.say(f"New best {keep} {values[keep][0]:.4g}: copied {path.name} to best-snapshot.pkl")


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

