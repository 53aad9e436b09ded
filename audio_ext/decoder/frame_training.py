"""Training of the frame-interpolation model (:mod:`audio_ext.decoder.frame_model`) on a folder of audio.

Each step draws ``batch`` random crops of ``(P + 1) * hop`` samples (``P = patch_frames`` stored
frames) from the sources, each at a random gain between ``-18`` and ``+6`` dB, optionally a random
band of ``patch_bins`` bins, and makes training pairs on the fly (:func:`interp.training_pairs`):
the hop/2 STFT's even frames through the codec's 8-bit round trip as input, its odd frames as
target. The codec statistics (mean, std of ln power) are those of the sources, as the dataset tool
would compute them. Loss: L1 in ln power weighted by magnitude (:func:`interp.loss_weights`).
Adam, learning rate with a cosine decay to 5 % over ``steps``.

Fine-tuning: ``init`` names a model file (same geometry and architecture) whose weights start the
run instead of fresh ones, e.g. the shipped model trained further on new music on a CPU.
With ``validation`` clips, every checkpoint also measures the held-out error on fixed validation
crops and writes the best model so far (no optimizer state) to :func:`best_path` of the output.

Deterministic for a given ``seed``: the crops of step ``k`` come from ``numpy.random.default_rng([seed, k])``,
so a resumed run draws what an uninterrupted one would. Checkpoints go to the output file itself
(atomically, every ``checkpoint_every`` steps and at the end); a model file with training state
resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from audio_ext.core.device import resolve_device
from audio_ext.core.geometry import StftGeometry
from audio_ext.core.stft import stft
from audio_ext.core.synth import techno_loop
from audio_ext.dataset.archive_images import ArchiveImages
from audio_ext.dataset.sources import gather_sources
from audio_ext.decoder import frame_model
from audio_ext.decoder.archive_model import decoder_path_for_archive
from audio_ext.decoder.model_file import read_model_file
from stylegan2.progress import progress_bar


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters of one training run (stored in the model file)."""

    steps: int = 2000
    batch: int = 8
    patch_frames: int = 32
    patch_bins: Optional[int] = None
    lr: float = 2e-3
    seed: int = 0
    checkpoint_every: int = 100
    arch: str = "small"
    #: file name of a model whose weights start the run (fine-tuning); None: fresh weights
    init: Optional[str] = None
    #: training objective (interp.LOSSES): 'sc' squared spectral convergence, 'wl1' magnitude-weighted L1 in ln power
    loss: str = "sc"


#: Network sizes (FrameInterpNet arguments). 'small' is the shipped default; bigger ones cost more CPU time per clip.
ARCHS = {
    "tiny": dict(width=4, body_width=16, n_blocks=2, dilations=(1, 2), down=8),
    "small": dict(width=8, body_width=32, n_blocks=4, dilations=(1, 2, 4, 8), down=8),
    "medium": dict(width=8, body_width=32, n_blocks=4, dilations=(1, 2, 4, 8), down=4),
    "large": dict(width=16, body_width=48, n_blocks=6, dilations=(1, 2, 4, 8, 1, 2), down=8),
}


_LOSS_NAMES = {"sc": "squared spectral convergence", "wl1": "weighted L1, ln power"}


def find_audio(folder: Union[str, Path]) -> List[Path]:
    """The audio files under ``folder``, found as the dataset tool finds them
    (:func:`audio_ext.dataset.sources.gather_sources`: every audio extension, hidden files passed over)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--source {folder}: not a folder")
    return [s.path for s in gather_sources(folder)[0]]


def load_sources(paths: Sequence[Path], sample_rate: int, min_samples: int,
                 log: Callable[[str], None] = print) -> Tuple[List[np.ndarray], List[str]]:
    """Mono float32 audio at ``sample_rate`` of each readable file at least ``min_samples`` long; (audio, names)."""
    import librosa  # lazy: heavy: ~1 s to import (numba JIT); only this path needs it
    out, names = [], []
    for p in paths:
        try:
            y, _ = librosa.load(str(p), sr=sample_rate, mono=True)
        except Exception as e:  # undecodable file: say so, go on
            log(f"skipped {p}: unreadable ({type(e).__name__})")
            continue
        if y.size < min_samples:
            log(f"skipped {p}: shorter than one training crop ({y.size / sample_rate:.2f} s)")
            continue
        out.append(np.ascontiguousarray(y, dtype=np.float32))
        names.append(p.name)
    return out, names


def synthetic_sources(n: int, seconds: float, sample_rate: int, seed: int = 0) -> List[np.ndarray]:
    """``n`` synthetic techno loops (audio_ext.core.synth) at tempi 118..146 BPM with varied parts."""
    rng = np.random.default_rng(seed)
    part_sets = [("kick", "hat", "bass", "chord"), ("kick", "hat", "bass", "chord", "noise"),
                 ("kick", "bass", "offbass"), ("hat", "chord", "bass")]
    out = []
    for i in range(n):
        bpm = float(rng.uniform(118, 146))
        out.append(techno_loop(bpm, seconds, sr=sample_rate, seed=int(rng.integers(1 << 30)),
                               swing=float(rng.uniform(0, 0.3)), parts=part_sets[i % len(part_sets)]))
    return out


def source_stats(sources: Sequence[np.ndarray], geometry: StftGeometry) -> dict:
    """Mean and std of ln power over all hop-R STFT cells (bins 0..R-1) of the sources: the codec statistics."""
    n, s, s2 = 0, 0.0, 0.0
    for y in sources:
        X = stft(torch.from_numpy(y), geometry.n_fft, geometry.hop_length)[:geometry.resolution]
        v = (X.real.square() + X.imag.square() + geometry.eps).log().to(torch.float64)
        n += v.numel()
        s += float(v.sum())
        s2 += float(v.square().sum())
    mean = s / n
    return {"mean": mean, "std": math.sqrt(max(s2 / n - mean * mean, 1e-12))}


class CropSampler:
    """Random training crops from a list of sources, drawn deterministically per (seed, step)."""

    def __init__(self, sources: Sequence[np.ndarray], crop: int, device: torch.device) -> None:
        lengths = np.array([y.size for y in sources], dtype=np.int64)
        if not len(sources) or (lengths < crop).all():
            raise ValueError(f"no source holds a whole crop of {crop} samples")
        self.sources = [torch.from_numpy(y).to(device) for y in sources]
        self.lengths = lengths
        self.crop = crop
        ok = lengths >= crop
        self.p = np.where(ok, lengths - crop + 1, 0).astype(np.float64)
        self.p /= self.p.sum()  # pick a source in proportion to its usable length

    def draw(self, seed: int, step: int, batch: int, gain_db: Tuple[float, float] = (-18.0, 6.0)) -> torch.Tensor:
        rng = np.random.default_rng([seed, step])
        which = rng.choice(len(self.sources), size=batch, p=self.p)
        crops = []
        for i in which:
            start = int(rng.integers(0, self.lengths[i] - self.crop + 1))
            g = 10 ** (rng.uniform(*gain_db) / 20)
            crops.append(self.sources[i][start:start + self.crop] * g)
        return torch.stack(crops)


def _band(x: torch.Tensor, y: torch.Tensor, bins: Optional[int], rng: np.random.Generator) -> tuple:
    if bins is None or bins >= x.shape[-2]:
        return x, y
    lo = int(rng.integers(0, x.shape[-2] - bins + 1))
    return x[..., lo:lo + bins, :], y[..., lo:lo + bins, :]


def evaluate(model: frame_model.FrameInterpNet, sampler: CropSampler, geometry: StftGeometry, stats: dict,
             n_batches: int = 4, batch: int = 8, seed: int = 12345, loss: str = "sc") -> dict:
    """The training objective ``loss`` of the model and of the geometric-mean baseline on fixed crops."""
    model.eval()
    tot_m = tot_b = 0.0
    with torch.no_grad():
        for k in range(n_batches):
            x, y = frame_model.training_pairs(sampler.draw(seed, k, batch), geometry, stats["mean"], stats["std"])
            tot_m += float(frame_model.training_loss(model(x), y, geometry, loss))
            tot_b += float(frame_model.training_loss(frame_model.interpolation_baseline(x), y, geometry, loss))
    return {"model": tot_m / n_batches, "baseline": tot_b / n_batches}


def stored_config(state: dict) -> dict:
    """The TrainConfig of a model file's ``training`` entry, with fields it predates at their old values
    (files written before ``loss`` existed were trained with 'wl1'), so such runs still resume."""
    return dict({"loss": "wl1"}, **state.get("config", {}))


def best_path(out: Union[str, Path]) -> Path:
    """Where :func:`train_decoder` keeps the checkpoint with the lowest validation error: ``m.pt`` -> ``m.best.pt``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.best{out.suffix or '.pt'}")


def init_weights(model: frame_model.FrameInterpNet, path: Union[str, Path], geometry: StftGeometry) -> None:
    """Load the weights of the model file ``path`` into ``model``; ValueError (one line) if its
    geometry or architecture differs."""
    payload = read_model_file(path)
    frame_model.check_geometry(frame_model.model_geometry(payload, path), geometry, path)
    if dict(payload["config"]) != dict(model.config):
        raise ValueError(f"--init {path}: model has architecture {payload['config']}, not {model.config}; "
                         f"pick the matching --arch")
    model.load_state_dict(frame_model.build_model(payload, path).state_dict())


def train_decoder(sources: Sequence[np.ndarray], out: Union[str, Path], geometry: StftGeometry,
                  config: TrainConfig, device: Union[str, torch.device] = "cpu",
                  source_names: Sequence[str] = (), validation: Sequence[np.ndarray] = (),
                  log: Callable[[str], None] = print, progress: bool = True,
                  validation_names: Sequence[str] = ()) -> dict:
    """Train (or resume) a model on ``sources`` and write it to ``out``; returns a summary dict.

    ``validation`` clips (never trained on) give the held-out error at the end; without them a
    fixed set of training crops does. ``source_names`` and ``validation_names`` are recorded in the
    model file (``training.sources``, ``training.validation_sources``), so benchmarks can leave
    those files out.
    """
    device = torch.device(device)
    out = Path(out)
    crop = (config.patch_frames + 1) * geometry.hop_length
    sampler = CropSampler(sources, crop, device)
    stats = source_stats(sources, geometry)
    torch.manual_seed(config.seed)
    if config.arch not in ARCHS:
        raise ValueError(f"unknown architecture {config.arch!r}; known: {', '.join(ARCHS)}")
    if config.loss not in frame_model.LOSSES:
        raise ValueError(f"unknown training loss {config.loss!r}; known: {', '.join(frame_model.LOSSES)}")
    model = frame_model.FrameInterpNet(**ARCHS[config.arch]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    start, seconds_before = 0, 0.0
    history: List[list] = []
    if config.init and not out.exists():
        init_weights(model, config.init, geometry)
        model.to(device)
    if out.exists():
        payload = read_model_file(out)
        frame_model.check_geometry(frame_model.model_geometry(payload, out), geometry, out)
        state = payload.get("training", {})
        if dict(stored_config(state), steps=None) != dict(dataclasses.asdict(config), steps=None):
            raise ValueError(f"--out {out}: exists and was trained with other settings; choose another --out "
                             f"or the same settings to resume")
        model.load_state_dict(payload["state_dict"])
        model.to(device)
        if "optimizer" in payload:
            opt.load_state_dict(payload["optimizer"])
        start = int(state.get("step", 0))
        seconds_before = float(state.get("seconds", 0.0))
        stats = dict(payload["stats"])
        history = [list(h) for h in state.get("val_history", [])]
        if start >= config.steps:
            log(f"{out}: already trained for {start} steps (asked for {config.steps}); nothing to do")
            return {"steps": start, "resumed": True}
        log(f"resuming {out} at step {start} of {config.steps}")

    def lr_at(step: int) -> float:
        return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / max(config.steps, 1))))

    def save(step: int, seconds: float, extra: Optional[dict] = None) -> None:
        training = {"step": step, "seconds": seconds, "config": dataclasses.asdict(config),
                    "sources": list(source_names), "validation_sources": list(validation_names),
                    "device": str(device), "val_history": history}
        training.update(extra or {})
        payload = frame_model.model_payload(model, geometry, stats, training)
        payload["optimizer"] = opt.state_dict()
        frame_model.save_model(out, payload)

    held = list(validation)
    eval_sampler = CropSampler(held, crop, device) if held else sampler

    def validate(step: int, seconds: float) -> None:
        """Held-out error at a checkpoint; the best model so far goes to best_path(out)."""
        r = evaluate(model, eval_sampler, geometry, stats, n_batches=2, loss=config.loss)
        best = min((h[1] for h in history), default=math.inf)
        history.append([step, r["model"], r["baseline"]])
        log(f"step {step}: validation error {r['model']:.4f} (interpolation {r['baseline']:.4f})")
        if r["model"] < best:
            payload = frame_model.model_payload(model, geometry, stats, {
                "step": step, "seconds": seconds, "config": dataclasses.asdict(config), "sources": list(source_names),
                "validation_sources": list(validation_names), "device": str(device), "val_history": history,
                "best_of_run": str(out)})
            frame_model.save_model(best_path(out), payload)

    t0 = time.perf_counter()
    bar = progress_bar(range(start, config.steps), initial=start, total=config.steps, desc="train-decoder",
                       disable=not progress, unit="step")
    avg = None
    for step in bar:
        model.train()
        rng = np.random.default_rng([config.seed, step, 1])
        x, y = frame_model.training_pairs(sampler.draw(config.seed, step, config.batch), geometry, stats["mean"],
                                     stats["std"])
        x, y = _band(x, y, config.patch_bins, rng)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = frame_model.training_loss(model(x), y, geometry, config.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss = float(loss.detach())
        avg = loss if avg is None else 0.98 * avg + 0.02 * loss
        bar.set_postfix(loss=f"{avg:.4f}", refresh=False)  # drawn with the bar's own (log-rate) redraws
        if (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
            if held:
                validate(step + 1, seconds_before + time.perf_counter() - t0)
            save(step + 1, seconds_before + time.perf_counter() - t0)
    bar.close()
    seconds = seconds_before + time.perf_counter() - t0
    if held:
        validate(config.steps, seconds)
    result = evaluate(model, eval_sampler, geometry, stats, loss=config.loss)
    summary = {"steps": config.steps, "seconds": seconds, "held_out": bool(held), "loss": config.loss,
               "val_loss": result["model"], "val_loss_baseline": result["baseline"]}
    save(config.steps, seconds, {"result": summary})
    log(f"trained {config.steps} steps in {seconds:.0f} s on {device}; "
        f"{'held-out' if held else 'training'} in-between-frame error ({_LOSS_NAMES[config.loss]}) "
        f"{result['model']:.4f} vs {result['baseline']:.4f} for interpolation "
        f"({100 * (result['model'] / max(result['baseline'], 1e-12) - 1):+.1f} %); wrote {out}")
    return summary


def train_for_archive(source: Union[str, Path], dest: Union[str, Path], steps: int = 2000, seed: int = 0,
                      device: Optional[str] = None, log: Callable[[str], None] = print, progress: bool = True) -> Path:
    """Train a decoder model on the audio an archive was built from, in the archive's geometry.

    Reads the geometry from ``dest``'s dataset.json, the files from ``source`` (as the dataset tool
    gathers them), and writes :func:`decoder_path_for_archive` (resumable like ``train-decoder``).
    """
    archive = ArchiveImages(dest)
    try:
        geometry = archive.codec.geometry
    finally:
        archive.close()
    files, _ = gather_sources(source)
    config = TrainConfig(steps=steps, seed=seed)
    crop = (config.patch_frames + 1) * geometry.hop_length
    sources, names = load_sources([f.path for f in files], geometry.sample_rate, crop, log=log)
    if not sources:
        raise ValueError(f"--train-decoder: no source file of {source} is long enough to train on")
    out = decoder_path_for_archive(dest)
    dev = str(resolve_device(device))
    log(f"training the archive's decoder model on {len(sources)} file(s), {steps} steps on {dev} -> {out}")
    train_decoder(sources, out, geometry, config, device=dev, source_names=names, log=log, progress=progress)
    return out
