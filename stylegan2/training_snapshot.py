"""What happens at a training snapshot: its name, its contents, the checks before writing, metrics, the best copy.

The snapshot format itself (plain data, safe loading) is :mod:`stylegan2.snapshot`; this module decides
what the training loop puts into it (:func:`snapshot_data`, :data:`LOOP_SNAPSHOT_KEYS` plus the
caller's ``snapshot_extra``), under which name (:func:`snapshot_tag`), and what follows it (metrics,
``best-snapshot.pkl``, the preview hook).
"""
from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from .misc import atomic_path, atomic_write_text


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



def snapshot_data(snap_io, G, D, G_ema, opt_G, opt_D, cur_nimg, cur_tick, batch_idx, augment_pipe, ada, loss,
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



def state_is_finite(modules, optimizers, pl_mean: torch.Tensor) -> bool:
    """True when every parameter and buffer, every optimizer tensor and ``pl_mean`` is finite (one host sync)."""
    tensors = [t for m in modules for t in list(m.parameters()) + list(m.buffers()) if t.is_floating_point()]
    tensors += [v for opt in optimizers for st in opt.state.values() for v in st.values()
                if isinstance(v, torch.Tensor) and v.is_floating_point()]
    tensors.append(pl_mean)
    flags = torch.stack([torch.isfinite(t).all() for t in tensors if t.numel()])
    return bool(flags.all())



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



def carry_best_into(run_dir: Path, best: dict, say) -> None:
    """Start a resumed run's ``best.json`` (and ``best-snapshot.pkl``, when the file still exists) from ``best``."""
    source = Path(best.get("run_dir", "")) / str(best.get("snapshot", ""))
    if best.get("snapshot") and source.is_file():
        with atomic_path(run_dir / "best-snapshot.pkl") as tmp:
            shutil.copyfile(source, tmp)
        say(f"Best {best['metric']} so far {best['value']:.4g} ({source}): copied to best-snapshot.pkl")
    else:
        say(f"Best {best['metric']} so far {best['value']:.4g} ({source} is gone; only the value carries over)")
    atomic_write_text(run_dir / "best.json", json.dumps(best, indent=2))



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


def call_snapshot_hook(hook, preview: SnapshotPreview, say) -> None:
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



def grid_for_tensorboard(images, grid) -> np.ndarray:
    """The snapshot grid as uint8 [H, W, C] (what the PNG holds) for ``SummaryWriter.add_image``."""
    from .grid import make_image_grid
    return make_image_grid(images, drange=(-1, 1), grid_size=grid)

