"""Resuming a run exactly: check every part of a snapshot against the configured run, then restore it.

A snapshot is data from a file; each part (networks, Adam moments, loop counters, augment p, ADA state,
path-length mean, RNG states, the best-snapshot record) is checked before it is put back, and a bad
one is a one-line :class:`~stylegan2.snapshot.SnapshotError` naming the file and the part.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .training_snapshot import is_better


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



def restore_training_state(snap_io, snap: dict, resume: str, nets: dict, optimizers: dict, augment_pipe, ada,
                           loss, say) -> dict:
    """Put a loaded snapshot ``snap`` (read from ``resume``) back into the run being built.

    ``nets``: ``{'G': .., 'D': .., 'G_ema': ..}``; ``optimizers``: ``{'opt_G': .., 'opt_D': ..}``. Networks
    must fit exactly; Adam moments are checked first (a different group layout, e.g. a changed
    ``--freezed``, restarts them with a warning) and keep this run's learning rates and betas; then
    the loop's counters, augment p, ADA state, ``pl_mean`` and RNG states. Returns the counters
    ``{'cur_nimg', 'cur_tick', 'batch_idx', 'nonfinite_steps'}``.
    """
    for key, net in nets.items():
        try:
            net.load_state_dict(snap[key]["state_dict"], strict=True)
        except (KeyError, RuntimeError, TypeError) as e:
            raise snap_io.SnapshotError(f"{resume}: its {key} does not fit the configured network "
                                        f"({str(e).splitlines()[0]}); use the same --cfg/--cbase/--map") from None
    for key, opt in optimizers.items():
        restore_optimizer(snap_io, snap.get(key), opt, f"{resume}: {key}", key, resume, say)
    try:
        check_loop_state(snap)
    except ValueError as e:
        raise snap_io.SnapshotError(f"{resume}: {e}") from None
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
    return dict(cur_nimg=int(snap.get("cur_nimg", 0)), cur_tick=int(snap.get("cur_tick", 0)),
                batch_idx=int(snap.get("batch_idx", 0)), nonfinite_steps=int(snap.get("nonfinite_steps", 0) or 0))


def restore_optimizer(snap_io, state: Any, opt: torch.optim.Optimizer, where: str, key: str, resume: str,
                      say) -> None:
    """Load a saved Adam ``state`` into ``opt`` after :func:`check_optimizer_state`; this run's lr and betas win.

    No state, or one with another parameter-group layout, leaves the moments at zero with a warning.
    """
    if state is None:
        say(f"Warning: {resume} holds no {key}; its Adam moments start from zero")
        return
    lrs = [(g["lr"], g["betas"]) for g in opt.param_groups]
    try:
        check_optimizer_state(state, opt, where)
        opt.load_state_dict(state)
    except _GroupMismatch as e:     # e.g. --freezed changed which D parameters train
        say(f"Warning: {resume}: {key} not restored ({e}); its Adam moments start from zero")
        return
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise snap_io.SnapshotError(str(e) if str(e).startswith(str(resume)) else
                                    f"{resume}: {key} is not a usable optimizer state "
                                    f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    for g, (lr_now, betas_now) in zip(opt.param_groups, lrs):   # current flags win
        g["lr"], g["betas"] = lr_now, betas_now
