"""The metric registry: metrics by name, ``calc_metric`` to run one, ``report_metric`` to log it.

A metric is a function ``fn(opts: MetricOptions) -> dict`` of named numbers, registered with
:func:`register`. Built-in image metrics live in :mod:`.image_metrics` (:data:`PLUGINS`, imported on
first lookup). This is the plug-in point for other layers: a module that registers its metrics on
import is named to :func:`load_plugins` by whoever composes the layers (the command lines, or the
training loop's ``metric_plugins`` argument in every rank); this package names none of them.
Each result is one JSON line appended to ``metric-<name>.jsonl`` in the run folder, which is what
``train.py --metrics`` writes at every snapshot and what a "best snapshot" choice reads.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import torch

from .options import MetricOptions

#: This package's own metric modules, imported on first lookup.
PLUGINS: List[str] = ["stylegan2.metrics.image_metrics"]


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """A registered metric: ``key`` is its headline number in the results, ``higher_is_better`` its direction."""
    name: str
    fn: Callable[[MetricOptions], Dict[str, float]]
    key: str
    higher_is_better: bool
    description: str


_REGISTRY: Dict[str, MetricSpec] = {}
_plugins_loaded = False


def register(name: Optional[str] = None, key: Optional[str] = None, higher_is_better: bool = False,
             description: str = ""):
    """Decorator: register ``fn(opts) -> dict`` under ``name`` (default: the function's name)."""
    def wrap(fn):
        metric = name or fn.__name__
        _REGISTRY[metric] = MetricSpec(metric, fn, key or metric, higher_is_better,
                                       description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn
    return wrap


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in PLUGINS:
        importlib.import_module(module)


def load_plugins(modules: Iterable[str]) -> List[str]:
    """Import each named module, which registers its metrics on import; return the names now registered.

    Importing twice does nothing more, so every rank and every command may call it with the same list.
    A module that cannot be imported is an error naming it (a plug-in asked for must not vanish quietly).
    """
    _load_plugins()
    for module in modules:
        if not isinstance(module, str) or not module:
            raise ValueError(f"metric plug-in {module!r} is not a module name")
        importlib.import_module(module)
    return sorted(_REGISTRY)


def list_metrics() -> List[str]:
    """Sorted names of all registered metrics."""
    _load_plugins()
    return sorted(_REGISTRY)


def is_valid_metric(name: str) -> bool:
    """True when ``name`` is registered."""
    _load_plugins()
    return name in _REGISTRY


def get_metric(name: str) -> MetricSpec:
    """The spec of ``name``; an error listing the valid names otherwise."""
    _load_plugins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown metric '{name}'; valid metrics: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def calc_metric(name: str, G: Optional[torch.nn.Module] = None, dataset_kwargs: Optional[dict] = None,
                dataset: Any = None, device: Union[str, torch.device] = "cpu",
                detector_path: Optional[Union[str, os.PathLike]] = None, num_gpus: int = 1, rank: int = 0,
                progress=None, **options) -> dict:
    """Run metric ``name`` and return ``{'results': {...}, 'metric', 'total_time', 'num_gpus', ...}``.

    Extra ``options`` go to :class:`MetricOptions` (``G_kwargs``, ``num_gen``, ``max_real``,
    ``pr_detector_path``, ``audio``, ``seed``, ``batch_size``, ``cache``, ``cache_dir``).
    """
    spec = get_metric(name)
    opts = MetricOptions(G=G, dataset=dataset, dataset_kwargs=dataset_kwargs, device=device,
                         detector_path=detector_path, num_gpus=num_gpus, rank=rank, progress=progress, **options)
    start = time.time()
    results = spec.fn(opts)
    total = time.time() - start
    return dict(results={k: float(v) if isinstance(v, (int, float)) else v for k, v in results.items()},
                metric=name, key=spec.key, higher_is_better=spec.higher_is_better,
                total_time=total, total_time_str=_format_time(total), num_gpus=num_gpus,
                num_gen=opts.num_gen, max_real=opts.max_real, seed=opts.seed)


def _format_time(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h {s // 60 % 60:02d}m {s % 60:02d}s" if s >= 3600 else \
        (f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{seconds:.1f}s")


def report_metric(result: dict, run_dir: Optional[Union[str, os.PathLike]], snapshot_pkl: Optional[str] = None) -> dict:
    """Append ``result`` (plus snapshot name and a UTC timestamp) as one JSON line to
    ``run_dir/metric-<name>.jsonl``; return the record. ``run_dir=None`` only returns it."""
    record = dict(result, snapshot_pkl=None if snapshot_pkl is None else os.path.basename(str(snapshot_pkl)),
                  timestamp=time.time())
    if run_dir is not None:
        append_metric_record(record, run_dir)
    return record


def append_metric_record(record: dict, run_dir: Union[str, os.PathLike]) -> Path:
    """Append ``record`` as one JSON line to ``run_dir/metric-<metric>.jsonl``; return the file's path.

    Raises OSError when the folder cannot be written (read-only, full): callers that have already
    shown the value decide whether that is fatal.
    """
    path = Path(run_dir) / f"metric-{record['metric']}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:  # appending one line is atomic enough for a log
        f.write(json.dumps(record, sort_keys=True) + "\n")
    return path


def read_metric_log(run_dir: Union[str, os.PathLike], name: str) -> List[dict]:
    """All records of ``metric-<name>.jsonl`` in order; malformed lines are skipped."""
    path = Path(run_dir) / f"metric-{name}.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def best_record(run_dir: Union[str, os.PathLike], name: str) -> Optional[dict]:
    """The logged record with the best headline value of metric ``name`` (None when nothing is logged)."""
    spec = get_metric(name)
    records = [r for r in read_metric_log(run_dir, name) if isinstance(r.get("results", {}).get(spec.key), (int, float))]
    if not records:
        return None
    pick = max if spec.higher_is_better else min
    return pick(records, key=lambda r: r["results"][spec.key])
