"""What a shipped network sounds like in half a minute: bar loops and a beat-joined walk on one page.

``make demo`` starts with this (before its train-from-scratch part): ``seeds`` seeds as ``bars``-bar
loops and one walk of ``walk_bars`` bars through them, at the network's tempo and at ``other_bpm``.
A network whose clips hold a single bar (electro128: 1.846 s at 130 BPM) cannot be cut into longer
loops, so each clip becomes a seamless one-bar loop (:func:`loops.make_seamless_loop` with a short
crossfade from the clip's own continuation) that is then repeated; the loop is ``crossfade_s``
shorter than an exact bar (5 ms: 0.3 % faster than the network's tempo).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from audio_ext.generation import loops

#: Crossfade of the one-bar loop point, seconds.
CROSSFADE_S = 0.005


def bar_unit(clip: np.ndarray, sr: int, bpm: float, crossfade_s: float = CROSSFADE_S) -> np.ndarray:
    """The longest seamless loop of whole bars in ``clip`` (at least one bar, then ``crossfade_s`` short)."""
    n_fade = int(round(crossfade_s * sr))
    held = loops.whole_bars(len(clip) - n_fade, sr, bpm) if len(clip) > n_fade else 0
    length = loops.bars_to_samples(held, sr, bpm) if held else len(clip) - n_fade
    if length < loops.bars_to_samples(1, sr, bpm) * 0.98:
        raise ValueError(f"a clip of {len(clip) / sr:.3f} s holds less than one bar at {bpm:g} BPM")
    return loops.make_seamless_loop(clip, sr, crossfade_s, loop_samples=length)


def repeat_to_bars(unit: np.ndarray, sr: int, bpm: float, bars: int) -> np.ndarray:
    """``unit`` (a seamless loop) repeated to ``bars`` bars' worth of samples."""
    n = loops.bars_to_samples(bars, sr, bpm)
    return np.tile(unit, int(math.ceil(n / len(unit))))[:n]


def walk_piece(units: Sequence[np.ndarray], sr: int, bpm: float) -> np.ndarray:
    """One bar from each seamless unit, joined on the bar grid with ``loops.join_on_beats``'s crossfades
    (a unit's continuation is its own head, so every unit can give a bar plus the crossfade)."""
    return loops.join_on_beats([np.tile(u, 2) for u in units], sr, bpm, 1, crossfade_s=0.02)


def render_showcase(network: str, outdir: Path, seeds: Sequence[int] = tuple(range(8)), bars: int = 8,
                    walk_bars: int = 16, other_bpm: Optional[float] = 120.0,
                    log: Callable[[str], None] = print) -> List[object]:
    """Write ``seedN-loopMbar-TTTbpm.wav`` for every seed and tempo and ``walk-Kbar-TTTbpm.wav`` into
    ``outdir``; return the page entries (``ClipEntry``) for them, walk first."""
    from audio_ext.core.audio_io import write_audio
    from audio_ext.generation.latents import walk_path
    from audio_ext.generation.page import ClipEntry
    from audio_ext.generation.retempo import change_tempo
    from audio_ext.generation.synthesis import decode_images, load_generator, seed_latents, synthesize
    device = torch.device("cpu")
    G, block = load_generator(network, device)
    sr, bpm = int(block["sample_rate"]), float(block["target_bpm"])
    c = torch.zeros([len(seeds), G.c_dim])
    images = synthesize(G, torch.from_numpy(seed_latents(list(seeds), G.z_dim)), c, 1.0, "const", device)
    units = [bar_unit(a, sr, bpm) for a in decode_images(images, block, None, None, device, seed=list(seeds))]
    points = min(walk_bars, 64)
    steps = max(0, int(math.ceil((points - len(seeds)) / max(len(seeds) - 1, 1))))
    ws = walk_path(G, list(seeds), torch.zeros([1, G.c_dim]), 1.0, steps, "z", device)[:points]
    walk_images = synthesize(G, ws, None, 1.0, "const", device, from_ws=True)
    walk_units = [bar_unit(a, sr, bpm) for a in decode_images(walk_images, block, None, None, device, seed=0)]
    walk = walk_piece(walk_units, sr, bpm)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    name = network if network.startswith("pretrained:") else Path(network).name
    entries = []
    for tempo in [bpm] + ([float(other_bpm)] if other_bpm and other_bpm != bpm else []):
        retime = (lambda a: a) if tempo == bpm else (lambda a, t=tempo: change_tempo(a, sr, bpm, t))
        piece = retime(walk)
        path = outdir / f"walk-{len(walk_units)}bar-{tempo:g}bpm.wav"
        write_audio(path, piece, sr, "wav", {"title": path.stem, "software": "ElectroGAN demo"})
        entries.append(ClipEntry(title=f"walk through seeds {seeds[0]}-{seeds[-1]}, {tempo:g} BPM", audio=path.name,
                                 snapshot=name, bpm=tempo, seconds=len(piece) / sr,
                                 kind=f"beat-joined walk, {len(walk_units)} bars"))
        for seed, unit in zip(seeds, units):
            loop = retime(repeat_to_bars(unit, sr, bpm, bars))
            path = outdir / f"seed{seed:04d}-loop{bars}bar-{tempo:g}bpm.wav"
            write_audio(path, loop, sr, "wav", {"title": path.stem, "software": "ElectroGAN demo"})
            entries.append(ClipEntry(title=f"seed {seed}, {tempo:g} BPM", audio=path.name, seed=seed, truncation=1.0,
                                     snapshot=name, bpm=tempo, seconds=len(loop) / sr, kind=f"loop, {bars} bars"))
        log(f"{len(seeds)} loops of {bars} bars and a {len(walk_units)}-bar walk at {tempo:g} BPM")
    return entries
