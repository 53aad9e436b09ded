"""Evaluate registered metrics on a saved snapshot: what ``calc_metrics.py`` runs.

The generator is the snapshot's ``G_ema`` (or ``G``); the real data is ``data`` or, by default, the
``training_set_kwargs`` stored in the snapshot, always the whole set (``max_size`` dropped) and
without mirroring unless asked. Each result is printed by the caller and appended to
``metric-<name>.jsonl`` beside the snapshot.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

import torch

from . import registry

PathLike = Union[str, os.PathLike]


class EvaluationError(Exception):
    """The evaluation cannot start; the message names the file or option and the problem."""


def _device(name: str, rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise EvaluationError("--device cuda: no CUDA device is available (use --device cpu)")
        return torch.device("cuda", rank)
    if name != "cpu":
        raise EvaluationError(f"--device {name!r} is not one of auto, cpu, cuda")
    return torch.device("cpu")


def prepare(network: PathLike, metrics: Sequence[str], data: Optional[PathLike] = None, mirror: bool = False,
            check: Optional[Callable[[dict], None]] = None, plugins: Sequence[str] = ()):
    """Check metric names, load the snapshot and work out the dataset kwargs; return (snapshot, G record name, kwargs).

    ``check(snapshot)`` may refuse the loaded snapshot with a ValueError (the caller's own checks,
    e.g. of its ``audio`` block, which this layer knows nothing about); it becomes an EvaluationError
    naming ``network``. ``plugins``: modules that register more metrics (:func:`registry.load_plugins`).
    """
    from ..snapshot import SnapshotError, load_snapshot
    if not metrics:
        raise EvaluationError("--metrics: give at least one metric")
    registry.load_plugins(plugins)
    for name in metrics:
        if not registry.is_valid_metric(name):
            raise EvaluationError(f"--metrics: unknown metric '{name}'; valid: {', '.join(registry.list_metrics())}")
    try:
        snap = load_snapshot(network)
    except SnapshotError as e:
        raise EvaluationError(str(e)) from None
    gname = "G_ema" if snap.get("G_ema") is not None else "G"
    if snap.get(gname) is None:
        raise EvaluationError(f"{network}: snapshot holds no generator (G_ema or G)")
    if check is not None:
        try:
            check(snap)
        except ValueError as e:
            raise EvaluationError(f"{network}: {e}") from None
    stored = _stored_dataset_kwargs(network, snap.get("training_set_kwargs"), need_path=data is None)
    if data is not None:
        if not Path(data).exists():
            raise EvaluationError(f"{data}: no such dataset (zip or folder)")
        kwargs = dict(path=str(data))
        if "use_labels" in stored:
            kwargs["use_labels"] = stored["use_labels"]
    else:
        if not Path(stored["path"]).exists():
            raise EvaluationError(f"{network}: its training set {stored['path']} is missing; pass --data")
        kwargs = {k: v for k, v in stored.items() if k not in ("max_size", "class_name")}
    kwargs["xflip"] = bool(mirror)
    return snap, gname, kwargs


#: The dataset options a snapshot's ``training_set_kwargs`` may hold (``ImageFolderDataset``'s
#: arguments) and the types each accepts; other keys are ignored.
_DATASET_OPTIONS = {"path": (str,), "resolution": (int, type(None)), "use_labels": (bool,),
                    "max_size": (int, type(None)), "xflip": (bool,), "random_seed": (int,),
                    "name": (str, type(None)), "class_name": (str, type(None))}


def _stored_dataset_kwargs(network: PathLike, stored, need_path: bool) -> dict:
    """The usable dataset options of a snapshot's ``training_set_kwargs``, each type-checked.

    The snapshot is data from a file: a value of the wrong type is refused with one line naming the
    snapshot and the key (pass ``--data`` to evaluate against another set); unknown keys are dropped.
    """
    if stored is None:
        stored = {}
    if not isinstance(stored, dict):
        raise EvaluationError(f"{network}: training_set_kwargs is a {type(stored).__name__}, not a dict; "
                              f"pass --data")
    kwargs = {}
    for key, types in _DATASET_OPTIONS.items():
        if key not in stored:
            continue
        value = stored[key]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            expected = " or ".join("None" if t is type(None) else t.__name__ for t in types)
            raise EvaluationError(f"{network}: training_set_kwargs.{key} is {value!r}, expected {expected}; "
                                  f"pass --data")
        if key in ("resolution", "max_size", "random_seed") and value is not None and value < 0:
            raise EvaluationError(f"{network}: training_set_kwargs.{key} is {value!r}, expected >= 0; pass --data")
        kwargs[key] = value
    if need_path and not kwargs.get("path"):
        raise EvaluationError(f"{network}: snapshot does not name its training set; pass --data")
    return kwargs


def _run(rank: int, network: str, metrics: List[str], data, mirror: bool, device: str, num_gpus: int,
         detector, pr_detector, num_gen, max_real, batch_size: int, seed: int, report: bool,
         progress: Optional[Callable] = None, echo: Optional[Callable[[dict], None]] = None,
         prepared=None, plugins: Sequence[str] = ()) -> List[dict]:
    from ..snapshot import SnapshotError, build_networks
    registry.load_plugins(plugins)      # a spawned rank starts with only the built-in metrics
    snap, gname, dataset_kwargs = prepared or prepare(network, metrics, data, mirror, plugins=plugins)
    dev = _device(device, rank)
    try:
        G = build_networks(snap, device=dev, names=[gname])[gname]
    except SnapshotError as e:
        raise EvaluationError(f"{network}: {e}") from None
    records = []
    for name in metrics:
        result = registry.calc_metric(name, G=G, dataset_kwargs=dataset_kwargs, device=dev, detector_path=detector,
                                      num_gpus=num_gpus, rank=rank, progress=progress,
                                      pr_detector_path=pr_detector, num_gen=num_gen, max_real=max_real,
                                      batch_size=batch_size, seed=seed, audio=snap.get("audio"))
        if rank == 0:
            record = registry.report_metric(result, None, snapshot_pkl=network)
            records.append(record)
            if echo is not None:   # shown first: a log that cannot be written must not cost the value
                echo(record)
            if report:
                try:
                    registry.append_metric_record(record, Path(network).parent)
                except OSError as e:
                    log = Path(network).parent / f"metric-{name}.jsonl"
                    _warn(f"Warning: {name} was computed but not logged: {log}: {e.strerror or e}")
    return records


def _warn(message: str) -> None:
    """One line on stderr (a module-level function: it works the same in spawned ranks)."""
    print(message, file=sys.stderr, flush=True)


def _spawned(rank: int, **kwargs) -> None:
    _run(rank, **kwargs)


def evaluate_snapshot(network: PathLike, metrics: Sequence[str], data: Optional[PathLike] = None, gpus: int = 1,
                      detector: Optional[str] = None, pr_detector: Optional[str] = None, mirror: bool = False,
                      device: str = "auto", num_gen: Optional[int] = None, max_real: Optional[int] = None,
                      batch_size: int = 32, seed: int = 0, report: bool = True,
                      progress: Optional[Callable] = None, echo: Optional[Callable[[dict], None]] = None,
                      check: Optional[Callable[[dict], None]] = None, plugins: Sequence[str] = ()) -> List[dict]:
    """Compute ``metrics`` for the snapshot ``network``; return the records (also appended as JSON lines).

    ``plugins``: modules that register metrics beyond the built-in image metrics (the audio layer's).

    With ``gpus > 1`` one process per GPU is spawned (``stylegan2.distributed.launch``); rank 0
    reports through ``echo`` and the log files, and the returned list is empty.
    """
    metrics = list(metrics)
    plugins = list(plugins)
    prepared = prepare(network, metrics, data, mirror, check, plugins)  # fail fast, before spawning anything
    kwargs = dict(network=str(network), metrics=metrics, data=data, mirror=mirror, device=device, num_gpus=gpus,
                  detector=detector, pr_detector=pr_detector, num_gen=num_gen, max_real=max_real,
                  batch_size=batch_size, seed=seed, report=report, plugins=plugins)
    if gpus == 1:
        return _run(0, progress=progress, echo=echo, prepared=prepared, **kwargs)
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if torch.cuda.device_count() < gpus:
            raise EvaluationError(f"--gpus {gpus}: only {torch.cuda.device_count()} CUDA device(s) visible")
    from .. import distributed
    distributed.launch(_spawned, gpus, dict(kwargs, echo=echo))
    return []
