"""``--cfg`` presets and their resolution into one validated, JSON-serialisable option dict.

Upstream values (StyleGAN2-ADA ``train.py``; docs/references.md) for ``auto``, ``stylegan2`` and
``paper256/512/1024``; audio presets after the thesis (docs/references.md, Thesis: 1 channel, lr 0.001,
gamma 10, no augmentation, no mirroring, fmaps 1, 8 mapping layers, EMA 10 kimg, batch 32);
and ``tiny``, a few-thousand-parameter model for CPU demos and tests.

``resolve_config(cfg, resolution, gpus, **overrides)`` applies a preset, then the overrides (a
value of ``None`` means "not given"), derives what depends on them (``batch_gpu``, the ``auto``
formulas) and validates the result with one-line errors that name the flag to change.
Backend switches (``allow_tf32``, ``nobench``) and freeze-D (``freezed``) default off, as upstream.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict

# Per-preset values; None means "derive" (the auto formulas, or derive_batch_gpu for batch_gpu).
# ref_gpus: the GPU count the preset was tuned for; batch_gpu is at most batch // ref_gpus by default (but at
# least one minibatch-stddev group), so fewer GPUs accumulate gradients over several rounds instead.
PRESETS: Dict[str, Dict[str, Any]] = {
    "auto": dict(ref_gpus=None, kimg=25000, batch=None, mbstd_group=None, cbase=None, lr=None, gamma=None,
                 ema_kimg=None, ema_rampup=0.05, map=2, aug="ada"),
    "stylegan2": dict(ref_gpus=8, kimg=25000, batch=32, mbstd_group=4, cbase=32768, lr=0.002, gamma=10,
                      ema_kimg=10, ema_rampup=None, map=8, aug="ada"),
    "paper256": dict(ref_gpus=8, kimg=25000, batch=64, mbstd_group=8, cbase=16384, lr=0.0025, gamma=1,
                     ema_kimg=20, ema_rampup=None, map=8, aug="ada"),
    "paper512": dict(ref_gpus=8, kimg=25000, batch=64, mbstd_group=8, cbase=32768, lr=0.0025, gamma=0.5,
                     ema_kimg=20, ema_rampup=None, map=8, aug="ada"),
    "paper1024": dict(ref_gpus=8, kimg=25000, batch=32, mbstd_group=4, cbase=32768, lr=0.002, gamma=2,
                      ema_kimg=10, ema_rampup=None, map=8, aug="ada"),
    # The thesis's best run ("Conf A"): lr 0.001, gamma 10 at 1024; one RTX 3090, batch 32 by accumulation.
    "audio1024": dict(ref_gpus=8, kimg=25000, batch=32, mbstd_group=4, cbase=32768, lr=0.001, gamma=10,
                      ema_kimg=10, ema_rampup=None, map=8, aug="noaug"),
    # Smaller geometries: gamma scaled with resolution squared (SG3 docs/configs.md guidance).
    "audio512": dict(ref_gpus=4, kimg=25000, batch=32, mbstd_group=4, cbase=32768, lr=0.001, gamma=2.5,
                     ema_kimg=10, ema_rampup=None, map=8, aug="noaug"),
    "audio256": dict(ref_gpus=2, kimg=25000, batch=32, mbstd_group=4, cbase=16384, lr=0.001, gamma=0.625,
                     ema_kimg=10, ema_rampup=None, map=8, aug="noaug"),
    # CPU-sized: ~0.2 M parameters at 32x32, fp32, short ticks; gamma from the auto formula.
    "tiny": dict(ref_gpus=2, kimg=20, batch=8, mbstd_group=4, cbase=1024, cmax=64, z_dim=64, w_dim=64,
                 lr=0.002, gamma=None, ema_kimg=None, ema_rampup=0.05, map=2, aug="noaug", tick=1, snap=5,
                 fp32=True, workers=0, grid_limit=32),
    # The shipped network electro128 (docs/pretrained.md): tiny widened to ~1 M G parameters at R = 128.
    "cpu128": dict(ref_gpus=1, kimg=1000, batch=8, mbstd_group=4, cbase=2048, cmax=128, z_dim=64, w_dim=64,
                   lr=0.002, gamma=None, ema_kimg=None, ema_rampup=0.05, map=2, aug="noaug", tick=0.5, snap=5,
                   fp32=True, workers=0, grid_limit=32),
}

# Defaults common to every preset (StyleGAN2-ADA train.py and training_loop.py; docs/references.md).
COMMON: Dict[str, Any] = dict(
    z_dim=512, w_dim=512, cmax=512, num_fp16_res=4, conv_clamp=256, fp32=False,
    betas=(0.0, 0.99), eps=1e-8, glr=None, dlr=None, batch_gpu=None,
    style_mixing_prob=0.9, pl_weight=2.0, pl_batch_shrink=2, pl_decay=0.01,
    G_reg_interval=4, D_reg_interval=16,
    tick=4.0, snap=50, p=None, target=0.6, ada_interval=4, ada_kimg=500, augpipe="audio",
    mirror=False, cond=False, subset=None, metrics=[], seed=0, workers=None, ops="auto", keep_best=None, patience=None,
    grid_limit=None, allow_tf32=False, nobench=False, freezed=0, max_nonfinite=50,
)
DEFAULT_WORKERS = 3     # DataLoader workers when --workers is not given (at most the usable CPU count)

AUG_MODES = ("ada", "noaug", "fixed")


class ConfigError(ValueError):
    """A preset or flag combination that cannot train; the message names the flag to change."""


def auto_values(resolution: int, gpus: int) -> Dict[str, Any]:
    """The ``--cfg auto`` formulas of StyleGAN2-ADA (its ``train.py``) for a resolution and GPU count.

    ``batch = max(min(gpus * min(4096 // res, 32), 64), gpus)``, ``mbstd = min(batch // gpus, 4)``,
    channel base ``32768 if res >= 512 else 16384``, ``lr = 0.002 if res >= 1024 else 0.0025``,
    ``gamma = 0.0002 * res^2 / batch``, EMA half-life ``batch * 10 / 32`` kimg.
    """
    batch = max(min(gpus * min(4096 // resolution, 32), 64), gpus)
    return dict(batch=batch, mbstd_group=min(batch // gpus, 4),
                cbase=32768 if resolution >= 512 else 16384,
                lr=0.002 if resolution >= 1024 else 0.0025,
                gamma=0.0002 * resolution ** 2 / batch,
                ema_kimg=batch * 10 / 32)


def _fail(msg: str):
    raise ConfigError(msg)


def usable_cpus() -> int:
    """CPUs this process may run on: the scheduler affinity where the OS has one, else ``os.cpu_count()``."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


def _divisors(n: int) -> list:
    """The divisors of ``n`` in increasing order (O(sqrt(n)))."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def derive_batch_gpu(batch: int, gpus: int, ref_gpus: int, mbstd_group: int, mbstd_given: bool):
    """The per-GPU batch (and minibatch-stddev group) when ``--batch-gpu`` is not given.

    ``batch_gpu`` must divide the per-GPU batch ``batch / gpus`` and be a multiple of the mbstd
    group. Among those, take the largest that is <= the preset's reference ``batch / ref_gpus``
    (so a preset tuned for 8 GPUs accumulates on fewer instead of using more memory); when the
    reference is smaller than the group, the smallest valid one (the group itself). A group that
    the user did not give is lowered to the largest divisor of the per-GPU batch that is <= the
    preset's group (so a per-GPU batch smaller than the group becomes one whole group). Returns
    ``(batch_gpu, mbstd_group)``; ``batch_gpu`` None when nothing fits (the user's group; the
    validation then names it).
    """
    per_gpu = batch // gpus
    if per_gpu < 1:
        return None, mbstd_group
    if not mbstd_given and per_gpu % mbstd_group:
        mbstd_group = max(d for d in _divisors(per_gpu) if d <= mbstd_group)
    valid = [d for d in _divisors(per_gpu) if d % mbstd_group == 0]
    if not valid:
        return None, mbstd_group
    ref = max(batch // max(ref_gpus, 1), 1)
    below = [d for d in valid if d <= ref]
    return (max(below) if below else min(valid)), mbstd_group


def resolve_config(cfg: str, resolution: int, gpus: int = 1, **overrides) -> Dict[str, Any]:
    """Full training options for preset ``cfg`` at ``resolution`` (pixels) on ``gpus`` processes.

    ``overrides`` use the option names of the returned dict (``batch``, ``batch_gpu``, ``lr``,
    ``glr``, ``dlr``, ``gamma``, ``kimg``, ``map``, ``cbase``, ``cmax``, ``aug``, ``p``, ...); ``None``
    values are ignored. Raises :class:`ConfigError` with a one-line message for invalid combinations.
    """
    if cfg not in PRESETS:
        _fail(f"unknown --cfg {cfg!r}; choose one of {', '.join(PRESETS)}")
    if not isinstance(resolution, int) or resolution < 4 or resolution & (resolution - 1):
        _fail(f"resolution must be a power of two >= 4; got {resolution!r}")
    if not isinstance(gpus, int) or gpus < 1:
        _fail(f"--gpus must be a positive integer; got {gpus!r}")
    known = set(COMMON) | set(PRESETS["auto"]) | set(PRESETS["tiny"])
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        _fail(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known - {'ref_gpus'}))}")
    given = {k: v for k, v in overrides.items() if v is not None}

    opts: Dict[str, Any] = dict(COMMON)
    opts.update({k: v for k, v in PRESETS[cfg].items()})
    opts.update(given)
    opts["cfg"], opts["resolution"], opts["gpus"] = cfg, resolution, gpus

    if cfg == "auto":
        derived = auto_values(resolution, gpus)
        opts["ref_gpus"] = gpus
        if "batch" in given:        # the formulas that depend on the batch follow the chosen batch
            derived.update(mbstd_group=min(max(given["batch"] // gpus, 1), 4),
                           gamma=0.0002 * resolution ** 2 / given["batch"], ema_kimg=given["batch"] * 10 / 32)
        for k, v in derived.items():
            if k not in given:
                opts[k] = v
    if opts["gamma"] is None:
        opts["gamma"] = 0.0002 * resolution ** 2 / opts["batch"]
    if opts["ema_kimg"] is None:
        opts["ema_kimg"] = opts["batch"] * 10 / 32
    if opts["batch_gpu"] is None and isinstance(opts["batch"], int) and isinstance(opts["mbstd_group"], int) \
            and opts["batch"] >= 1 and opts["mbstd_group"] >= 1 and opts["batch"] % gpus == 0:
        derived_bg, opts["mbstd_group"] = derive_batch_gpu(opts["batch"], gpus, opts["ref_gpus"], opts["mbstd_group"],
                                                           mbstd_given="mbstd_group" in given)
        opts["batch_gpu"] = derived_bg if derived_bg is not None else max(opts["batch"] // gpus, 1)
    elif opts["batch_gpu"] is None and isinstance(opts["batch"], int):
        opts["batch_gpu"] = max(opts["batch"] // gpus, 1)      # the validation names what does not fit
    elif "mbstd_group" not in given and isinstance(opts["batch_gpu"], int) and opts["batch_gpu"] >= 1 \
            and isinstance(opts["mbstd_group"], int) and opts["mbstd_group"] >= 1 \
            and opts["batch_gpu"] % opts["mbstd_group"]:
        # --batch-gpu given, the group from the preset: the group follows (largest divisor <= preset's).
        opts["mbstd_group"] = max(d for d in _divisors(opts["batch_gpu"]) if d <= opts["mbstd_group"])
    if opts["workers"] is None:
        opts["workers"] = min(DEFAULT_WORKERS, usable_cpus())
    lr = opts.pop("lr")
    opts["glr"] = float(opts["glr"] if opts["glr"] is not None else lr)
    opts["dlr"] = float(opts["dlr"] if opts["dlr"] is not None else lr)
    if opts["fp32"]:
        opts["num_fp16_res"], opts["conv_clamp"] = 0, None
    if opts["aug"] == "fixed" and opts["p"] is None:
        _fail("--aug fixed needs --p (the fixed augmentation probability)")
    if opts["p"] is not None and opts["aug"] != "fixed":
        _fail(f"--p only applies to --aug fixed; got --aug {opts['aug']}")
    opts["p"] = float(opts["p"] or 0.0)
    if isinstance(opts["metrics"], str):
        opts["metrics"] = [m for m in opts["metrics"].split(",") if m and m != "none"]
    opts["metrics"] = list(opts["metrics"])
    opts["betas"] = [float(b) for b in opts["betas"]]
    opts["kimg"] = float(opts["kimg"])
    opts["tick"] = float(opts["tick"])
    _validate(opts)
    return dict(sorted(opts.items()))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate(o: Dict[str, Any]) -> None:
    gpus, batch, bg, mbstd = o["gpus"], o["batch"], o["batch_gpu"], o["mbstd_group"]
    for key in ("batch", "batch_gpu", "mbstd_group", "map", "cbase", "cmax", "z_dim", "w_dim", "snap",
                "pl_batch_shrink", "ada_interval"):
        if not isinstance(o[key], int) or isinstance(o[key], bool) or o[key] < 1:
            _fail(f"--{key.replace('_', '-')} must be a positive integer; got {o[key]!r}")
    if batch % gpus:
        _fail(f"--batch {batch} is not divisible by --gpus {gpus}")
    if bg > batch // gpus:
        _fail(f"--batch-gpu {bg} is larger than --batch {batch} / --gpus {gpus} = {batch // gpus}")
    if batch % (gpus * bg):
        _fail(f"--batch {batch} is not divisible by --gpus {gpus} x --batch-gpu {bg} = {gpus * bg}")
    if bg < mbstd:
        _fail(f"--batch-gpu {bg} is smaller than the minibatch-stddev group {mbstd}; raise --batch-gpu "
              f"or lower --mbstd-group")
    if bg % mbstd:
        _fail(f"--batch-gpu {bg} is not divisible by the minibatch-stddev group {mbstd}")
    for key in ("glr", "dlr", "kimg", "tick"):
        if not _is_number(o[key]) or not o[key] > 0 or not math.isfinite(o[key]):
            _fail(f"--{key} must be a positive number (finite); got {o[key]!r}")
    if not _is_number(o["gamma"]) or not 0 <= o["gamma"] < math.inf:
        _fail(f"invalid --gamma: --gamma must be >= 0 and finite (the R1 weight); got {o['gamma']!r}")
    if not _is_number(o["ema_kimg"]) or not 0 < o["ema_kimg"] < math.inf:
        _fail(f"ema_kimg must be a finite number > 0; got {o['ema_kimg']!r}")
    if o["ema_rampup"] is not None and (not _is_number(o["ema_rampup"]) or not 0 < o["ema_rampup"] < math.inf):
        _fail(f"ema_rampup must be None or a finite number > 0; got {o['ema_rampup']!r}")
    if not isinstance(o["seed"], int) or isinstance(o["seed"], bool) or not 0 <= o["seed"] < 2 ** 32:
        _fail(f"--seed must be an integer from 0 to 4294967295 (2**32 - 1); got {o['seed']!r}")
    if not _is_number(o["ada_kimg"]) or not 0 < o["ada_kimg"] < math.inf:
        _fail(f"ada_kimg must be a finite number > 0; got {o['ada_kimg']!r}")
    betas = o["betas"]
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)):
        _fail(f"betas must be two numbers in [0, 1); got {betas!r}")
    if not _is_number(o["eps"]) or not 0 < o["eps"] < math.inf:
        _fail(f"eps must be a finite number > 0; got {o['eps']!r}")
    for key in ("style_mixing_prob", "pl_decay"):
        if not _is_number(o[key]) or not 0 <= o[key] <= 1:
            _fail(f"{key} must be a number in [0, 1]; got {o[key]!r}")
    if not _is_number(o["pl_weight"]) or not 0 <= o["pl_weight"] < math.inf:
        _fail(f"pl_weight must be a finite number >= 0; got {o['pl_weight']!r}")
    if not isinstance(o["max_nonfinite"], int) or isinstance(o["max_nonfinite"], bool) or o["max_nonfinite"] < 1:
        _fail(f"--max-nonfinite must be a positive integer (consecutive NaN/inf steps before stopping); "
              f"got {o['max_nonfinite']!r}")
    if not isinstance(o["workers"], int) or isinstance(o["workers"], bool) or o["workers"] < 0:
        _fail(f"--workers must be an integer >= 0; got {o['workers']!r}")
    if o["grid_limit"] is not None and (not isinstance(o["grid_limit"], int) or o["grid_limit"] < 1):
        _fail(f"grid_limit must be None or a positive integer; got {o['grid_limit']!r}")
    res = o["resolution"]
    if min(o["cbase"] // res, o["cmax"]) < 1:
        _fail(f"--cbase {o['cbase']} gives no channels at resolution {res} (channels = cbase / resolution, "
              f"at most cmax); use --cbase >= {res}")
    if o["aug"] not in AUG_MODES:
        _fail(f"--aug must be one of {', '.join(AUG_MODES)}; got {o['aug']!r}")
    if not _is_number(o["p"]) or not 0 <= o["p"] <= 1:
        _fail(f"--p must be in [0, 1]; got {o['p']!r}")
    if not _is_number(o["target"]) or not 0 < o["target"] <= 1:
        _fail(f"--target must be in (0, 1]; got {o['target']!r}")
    if o["subset"] is not None and (not isinstance(o["subset"], int) or o["subset"] < 1):
        _fail(f"--subset must be a positive integer; got {o['subset']!r}")
    from .augment import AUGMENT_PRESETS
    if o["augpipe"] not in AUGMENT_PRESETS:
        _fail(f"--augpipe must be one of {', '.join(AUGMENT_PRESETS)}; got {o['augpipe']!r}")
    if o["keep_best"] is not None and o["keep_best"] not in o["metrics"]:
        _fail(f"--keep-best {o['keep_best']} is not among --metrics {','.join(o['metrics']) or 'none'}")
    if o["patience"] is not None:
        if not _is_number(o["patience"]) or not 0 < o["patience"] < math.inf:
            _fail(f"--patience must be a positive number of kimg (finite); got {o['patience']!r}")
        if o["keep_best"] is None:
            _fail("--patience needs --keep-best: it counts the kimg since that metric last improved")
    if o["ops"] not in ("auto", "reference", "cuda"):
        _fail(f"--ops must be auto, reference or cuda; got {o['ops']!r}")
    if not isinstance(o["freezed"], int) or isinstance(o["freezed"], bool) or o["freezed"] < 0:
        _fail(f"--freezed must be an integer >= 0; got {o['freezed']!r}")
    for key in ("allow_tf32", "nobench"):
        if not isinstance(o[key], bool):
            _fail(f"--{key.replace('_', '-')} must be true or false; got {o[key]!r}")
    for key in ("G_reg_interval", "D_reg_interval"):
        if o[key] is not None and (not isinstance(o[key], int) or o[key] < 1):
            _fail(f"{key} must be a positive integer or None; got {o[key]!r}")


def generator_kwargs(opts: Dict[str, Any], c_dim: int, img_channels: int) -> Dict[str, Any]:
    """Constructor kwargs of :class:`stylegan2.networks.Generator` for resolved options."""
    return dict(z_dim=opts["z_dim"], c_dim=c_dim, w_dim=opts["w_dim"], img_resolution=opts["resolution"],
                img_channels=img_channels, mapping_kwargs=dict(num_layers=opts["map"]),
                channel_base=opts["cbase"], channel_max=opts["cmax"],
                num_fp16_res=opts["num_fp16_res"], conv_clamp=opts["conv_clamp"])


def discriminator_kwargs(opts: Dict[str, Any], c_dim: int, img_channels: int) -> Dict[str, Any]:
    """Constructor kwargs of :class:`stylegan2.networks.Discriminator` for resolved options.

    ``freezed`` N > 0 (freeze-D) freezes D's first N layers counted from the input (the highest
    resolutions) through ``block_kwargs=dict(freeze_layers=N)``; 0 leaves the kwargs as before.
    """
    kwargs = dict(c_dim=c_dim, img_resolution=opts["resolution"], img_channels=img_channels,
                  channel_base=opts["cbase"], channel_max=opts["cmax"],
                  num_fp16_res=opts["num_fp16_res"], conv_clamp=opts["conv_clamp"],
                  mbstd_group_size=opts["mbstd_group"])
    if opts.get("freezed", 0):
        kwargs["block_kwargs"] = dict(freeze_layers=int(opts["freezed"]))
    return kwargs


def describe(opts: Dict[str, Any]) -> str:
    """The options as aligned ``name  value`` lines, for printing at start-up."""
    width = max(len(k) for k in opts)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in opts.items())
