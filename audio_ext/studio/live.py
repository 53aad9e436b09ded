"""Live: an endless beat-joined walk through latent space, generated just ahead of playback.

A thread renders clip after clip along a walk (through the seeds the user picked, cycled, or through
random seeds) and cuts each into one chunk of ``bars`` bars, joined to the previous clip on the bar
line with an equal-power crossfade (:func:`audio_ext.generation.loops.join_on_beats` on the pair: the chunk is
the second clip's part of it). The page fetches chunk after chunk and schedules them back to back
with the Web Audio API. Steering replaces the coarse, middle or fine layers (:mod:`.layers`) of
every clip not yet rendered with a chosen seed's, so a change is heard within ``ahead`` chunks.
Unsteered, the stream through seeds a, b is the piece ``gen_audio.py --walk a,b,a,b,... --bars N``
writes (same latents, noise and phase seeds, joins), chunk by chunk.
Generation runs at most ``ahead`` chunks beyond the last one the page asked for, then waits.
"""
from __future__ import annotations

import threading
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from audio_ext.generation import loops
from audio_ext.generation.latents import walk_path
from audio_ext.generation.mixing import mix_ws
from audio_ext.studio.sessions import new_token

#: Chunks rendered beyond the newest one requested (latency of steering vs. safety against stalls).
DEFAULT_AHEAD = 1
#: Chunks kept after they were requested (a page that retries gets them again).
KEEP = 4


class LiveError(ValueError):
    """Bad live-stream settings; the message is shown in the page."""


class LiveStream:
    """One endless stream; :meth:`chunk` blocks until chunk ``n`` exists (or the stream stopped)."""

    def __init__(self, engine, seeds: Sequence[int], bars: int, steps: int, space: str, trunc: float,
                 noise_mode: str, random_seed: int, class_idx: Optional[int] = None, ahead: int = DEFAULT_AHEAD,
                 crossfade_s: float = 0.02):
        if engine.bpm is None:
            raise LiveError("live needs the network's tempo (target_bpm), and its audio block has none")
        fit = engine.max_bars(None, crossfade_s)
        if not 1 <= int(bars) <= fit:
            raise LiveError(f"bars {bars}: a clip holds 1-{fit} whole bar(s) at {engine.bpm:g} BPM")
        self.id = new_token()
        self.engine, self.bars, self.steps, self.space = engine, int(bars), int(steps), space
        self.trunc, self.class_idx, self.ahead, self.crossfade_s = trunc, class_idx, int(ahead), crossfade_s
        with engine.decoding():
            self.run = engine.make_run(engine_folder_none(), seeds=[0], trunc=trunc, noise_mode=noise_mode,
                                       class_idx=class_idx)
        self.rng = np.random.RandomState(int(random_seed))
        self.waypoints: List[int] = list(seeds)
        self.steer: Dict[str, Optional[int]] = {}
        self.chunks: Dict[int, bytes] = {}
        self.requested = -1
        self.produced = 0
        self.error: Optional[str] = None
        self.stopped = threading.Event()
        self.cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name=f"studio-live-{self.id[:6]}", daemon=True)
        self._thread.start()

    @property
    def sample_rate(self) -> int:
        return self.engine.sample_rate

    # -------------------------------------------------------------------------------- the page's side

    def chunk(self, n: int, timeout: float = 30.0) -> Optional[bytes]:
        """Chunk ``n`` as little-endian float32 PCM, or None when the stream stopped or it is gone (too old)."""
        with self.cond:
            self.requested = max(self.requested, int(n))
            self.cond.notify_all()
            ok = self.cond.wait_for(lambda: n in self.chunks or self.stopped.is_set() or self.error is not None
                                    or n < self.produced - KEEP - self.ahead, timeout)
            return self.chunks.get(n) if ok else None

    def set_steer(self, steer: Dict[str, Optional[int]]) -> None:
        """``{'coarse': seed or None, ...}``: the groups' layers come from those seeds in every coming clip."""
        with self.cond:
            self.steer = {g: (None if s is None else int(s)) for g, s in steer.items()}

    def stop(self) -> None:
        self.stopped.set()
        with self.cond:
            self.cond.notify_all()

    # ------------------------------------------------------------------------------ the generator's side

    def _next_waypoint(self, k: int) -> int:
        if len(self.waypoints) >= 2:
            return self.waypoints[k % len(self.waypoints)]
        if k == 0 and self.waypoints:
            return self.waypoints[0]
        return int(self.rng.randint(0, 2 ** 31 - 1))

    def _latents(self):
        """Endless ``[num_ws, w_dim]`` latents: each leg of the walk, its end point left for the next leg."""
        k, a = 1, self._next_waypoint(0)
        while True:
            b = self._next_waypoint(k)
            path = walk_path(self.engine.G, [a, b], self.run.classes, self.trunc, self.steps, self.space,
                             self.engine.device)
            for w in path[:-1]:
                yield w
            a, k = b, k + 1

    def _steered(self, w: torch.Tensor) -> torch.Tensor:
        with self.cond:
            steer = dict(self.steer)
        for group, seed in steer.items():
            layers = self.engine.groups.get(group)
            if seed is not None and layers:
                w = mix_ws(w, self.engine.seed_w(seed, self.trunc, self.class_idx), layers)
        return w

    def _work(self) -> None:
        sr, bpm = self.sample_rate, float(self.engine.bpm)
        base = self.waypoints[0] if self.waypoints else 0   # clip k seeded base + k, as gen_audio.py's walks
        prev = None
        try:
            for k, w in enumerate(self._latents()):
                with self.cond:
                    self.cond.wait_for(lambda: self.stopped.is_set() or self.produced <= self.requested + self.ahead)
                if self.stopped.is_set():
                    return
                audio = loops.clip_for_join(self.engine.live_audio(self._steered(w), base + k, self.run), sr, bpm,
                                            self.bars, self.crossfade_s)
                if prev is None:
                    chunk = loops.join_on_beats([audio], sr, bpm, self.bars, self.crossfade_s)
                else:
                    pair = loops.join_on_beats([prev, audio], sr, bpm, self.bars, self.crossfade_s)
                    chunk = pair[loops.bars_to_samples(self.bars, sr, bpm):]
                prev = audio
                pcm = np.clip(chunk, -1.0, 1.0).astype("<f4").tobytes()
                with self.cond:
                    self.chunks[k] = pcm
                    self.produced = k + 1
                    for old in [i for i in self.chunks if i < self.requested - KEEP]:
                        del self.chunks[old]
                    self.cond.notify_all()
        except Exception as e:  # shown in the page; the stream ends, the app goes on
            with self.cond:
                self.error = f"{type(e).__name__}: {e}".splitlines()[0]
                self.cond.notify_all()


def engine_folder_none():
    """Live clips are never written to disk: the run's folder is unused."""
    from pathlib import Path
    return Path("/nonexistent-live-run")
