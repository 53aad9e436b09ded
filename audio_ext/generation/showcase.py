"""What a shipped network sounds like in half a minute: bar loops and a beat-joined walk on one page.

``make demo`` starts with this (before its train-from-scratch part): ``seeds`` seeds as ``bars``-bar
loops and one walk of ``walk_bars`` bars through them, at the network's tempo and at ``other_bpm``.
Clips are made exactly as ``gen_audio.py --loop`` and ``--walk --bars 1`` make them
(:func:`loops.loop_to_bars`, :func:`loops.clip_for_join`, gen_audio's 20 ms crossfade), each first
stretched to the tempo it is played at: a network whose clips hold a single bar (electro128: one bar
at 130 BPM plus 21 ms) gives each seed's seamless one-bar loop, repeated to ``bars`` bars.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch

from audio_ext.generation import loops

#: Crossfade of loop points and walk joins, seconds (gen_audio.py's default).
CROSSFADE_S = 0.02


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
    clips = decode_images(images, block, None, None, device, seed=list(seeds))
    points = min(walk_bars, 64)
    steps = max(0, int(math.ceil((points - len(seeds)) / max(len(seeds) - 1, 1))))
    ws = walk_path(G, list(seeds), torch.zeros([1, G.c_dim]), 1.0, steps, "z", device)[:points]
    walk_images = synthesize(G, ws, None, 1.0, "const", device, from_ws=True)
    walk_clips = decode_images(walk_images, block, None, None, device, seed=0)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    name = network if network.startswith("pretrained:") else Path(network).name
    entries = []
    for tempo in [bpm] + ([float(other_bpm)] if other_bpm and other_bpm != bpm else []):
        retime = (lambda a: a) if tempo == bpm else (lambda a, t=tempo: change_tempo(a, sr, bpm, t))
        joinable = [loops.clip_for_join(retime(a), sr, tempo, 1, CROSSFADE_S) for a in walk_clips]
        piece = loops.join_on_beats(joinable, sr, tempo, 1, CROSSFADE_S)
        path = outdir / f"walk-{len(joinable)}bar-{tempo:g}bpm.wav"
        write_audio(path, piece, sr, "wav", {"title": path.stem, "software": "ElectroGAN demo"})
        entries.append(ClipEntry(title=f"walk through seeds {seeds[0]}-{seeds[-1]}, {tempo:g} BPM", audio=path.name,
                                 snapshot=name, bpm=tempo, seconds=len(piece) / sr,
                                 kind=f"beat-joined walk, {len(joinable)} bars"))
        notes = set()
        for seed, clip in zip(seeds, clips):
            looped = loops.loop_to_bars(retime(clip), sr, tempo, bars, CROSSFADE_S)
            notes.add(looped.note())
            path = outdir / f"seed{seed:04d}-loop{bars}bar-{tempo:g}bpm.wav"
            write_audio(path, looped.audio, sr, "wav", {"title": path.stem, "software": "ElectroGAN demo"})
            entries.append(ClipEntry(title=f"seed {seed}, {tempo:g} BPM", audio=path.name, seed=seed, truncation=1.0,
                                     snapshot=name, bpm=tempo, seconds=looped.audio.shape[-1] / sr,
                                     kind=f"loop, {bars} bars"))
        how = "; ".join(sorted(n for n in notes if n))
        log(f"{len(seeds)} loops of {bars} bars and a {len(joinable)}-bar walk at {tempo:g} BPM"
            + (f" ({how})" if how else ""))
    return entries
