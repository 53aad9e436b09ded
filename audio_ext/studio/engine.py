"""The studio's one loaded network and everything it renders, through the same code as gen_audio.py.

Each request becomes a :class:`audio_ext.generation.generate.GenerateOptions` and a run made by
:func:`audio_ext.generation.generate.make_run` on the generator loaded once at start, rendered by
:func:`audio_ext.generation.generate.render` into a fresh folder of the session: so a clip's file, its name
(seed and BPM in it) and its tags are what ``gen_audio.py`` writes for the command shown beside
it. Projection calls :func:`audio_ext.generation.audio_projection.prepare_target`, :func:`stylegan2.projector.project`
and :func:`audio_ext.generation.audio_projection.write_projection` the same way ``project_audio.py`` does.
"""
from __future__ import annotations

import contextlib
import shlex
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from audio_ext.core.geometry import StftGeometry
from audio_ext.generation import generate as gen
from audio_ext.generation import synthesis as syn
from audio_ext.studio.layers import layer_groups

#: Where the project's scripts live (commands are shown relative to the repository root).
GEN_AUDIO, PROJECT_AUDIO = "python gen_audio.py", "python project_audio.py"


#: The shipped network the studio opens by default (audio_ext.generation.pretrained).
DEFAULT_PRETRAINED = "electro128"


def default_network() -> Optional[str]:
    """The network the studio opens when ``--network`` is not given: ``pretrained:electro128`` when that
    file is installed, else None (then the flag is required)."""
    from audio_ext.generation.pretrained import PREFIX, known_names
    return PREFIX + DEFAULT_PRETRAINED if DEFAULT_PRETRAINED in known_names() else None


#: Serialises every generator pass and decode of every engine: noise in ``random`` mode is seeded
#: through torch's global generator, so two passes at once would mix their seeds.
RENDER_LOCK = threading.RLock()


class Engine:
    """A loaded generator (G_ema) with its audio block and its decoder model, chosen once
    (:func:`audio_ext.generation.synthesis.decoder_choice`); renders run under :data:`RENDER_LOCK`.

    ``shown``: the network's name in commands and on the page (an uploaded network's own file name
    instead of its path in the session folder).
    """

    def __init__(self, network: str, device: str = "auto", shown: Optional[str] = None):
        self.network = str(network)
        self.shown = shown or self.network
        self.device = syn.generation_device(device)
        self.G, self.block, payload = syn.load_generator(self.network, self.device, with_decoder=True)
        self.geometry = StftGeometry.from_dict(self.block)
        # a snapshot decoder model that does not fit: an error now, not at the first clip
        self.decoder = syn.decoder_choice(self.network, self.geometry, payload, None)
        self.bpm = float(self.block["target_bpm"]) if self.block.get("target_bpm") else None
        self.groups = layer_groups(int(self.G.num_ws))

    @contextlib.contextmanager
    def decoding(self):
        """Hold :data:`RENDER_LOCK` (one generator pass at a time)."""
        with RENDER_LOCK:
            yield

    def close(self) -> None:
        """Nothing is held between renders; kept so that callers need not know."""

    @property
    def sample_rate(self) -> int:
        return int(self.geometry.sample_rate)

    def info(self) -> dict:
        """What the page needs to know about the network (computed once)."""
        if getattr(self, "_info", None) is None:
            self._info = self._describe()
        return dict(self._info)

    def _describe(self) -> dict:
        with self.decoding():
            run = self.make_run(Path("."), seeds=[0], class_idx=0 if self.c_dim else None)
        return {"network": Path(self.shown).name, "resolution": int(self.geometry.resolution),
                "hop_length": int(self.geometry.hop_length), "sample_rate": self.sample_rate,
                "clip_seconds": round(self.geometry.clip_seconds, 4), "bpm": self.bpm, "c_dim": self.c_dim,
                "num_ws": int(self.G.num_ws), "groups": self.groups, "noise_modes": list(gen.NOISE_MODES),
                "phase": f"{run.method}, {run.n_iter} iterations", "max_trunc": gen.MAX_TRUNC}

    @property
    def c_dim(self) -> int:
        return int(getattr(self.G, "c_dim", 0))

    # ----------------------------------------------------------------------------------- rendering

    def make_run(self, folder: Path, **fields) -> "gen._Run":
        """A checked run of ``GenerateOptions(**fields)`` writing into ``folder`` (GenerateError on bad input)."""
        opts = gen.GenerateOptions(network=self.network, outdir=str(folder), **fields)
        run = gen.make_run(opts, self.G, self.block, self.device, log=lambda m: None, decoder=self.decoder)
        run.staging = Path(folder)
        return run

    def render(self, folder: Path, **fields) -> "gen._Run":
        """Render ``GenerateOptions(**fields)`` into ``folder``; the run's ``entries`` list what was written."""
        with self.decoding():
            run = self.make_run(folder, **fields)
            gen.render(run)
        return run

    def warm_up(self) -> None:
        """Render one clip and throw it away: the first pass through the generator and the decoder (its
        compiled Griffin-Lim step) is several times slower than the next, and the page's first sound
        should not pay for it."""
        import shutil
        import tempfile
        folder = Path(tempfile.mkdtemp(prefix="electrogan-studio-warm-"))
        try:
            self.render(folder, seeds=[0], class_idx=0 if self.c_dim else None)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def max_bars(self, bpm: Optional[float], crossfade_s: float = 0.02) -> int:
        """Whole bars a clip holds at ``bpm`` (the network's own tempo when None) after the crossfade."""
        from audio_ext.generation import loops
        from audio_ext.generation.retempo import stretched_length
        n = self.geometry.clip_samples
        if self.bpm is None:
            return 0
        if bpm is not None:
            n = stretched_length(n, self.bpm, bpm)
        fade = int(round(crossfade_s * self.sample_rate))
        return loops.whole_bars(n - fade, self.sample_rate, bpm or self.bpm) if n > fade else 0

    # ---------------------------------------------------------------------------------- projection

    def project(self, target: Path, display_name: str, start_s: float, steps: int, folder: Path,
                progress: Callable[[int, int, str], None], seed: int = 0):
        """Project the clip of ``target`` from ``start_s`` with ``steps`` steps; files into ``folder/proj``.

        ``progress(done, total, message)`` is called after preparing the target and after every step
        (raising there stops the search). Returns the :class:`audio_ext.generation.audio_projection.ProjectionSummary`.
        """
        from audio_ext.generation.audio_projection import (
            ProjectionError,
            ProjectOptions,
            SpectralLoss,
            prepare_target,
            write_projection,
        )
        from stylegan2.projector import project
        if self.c_dim:
            raise ProjectionError(f"{Path(self.shown).name}: conditional models are not supported by the projector")
        opts = ProjectOptions(network=self.network, target=display_name, outdir=str(folder / "proj"),
                              start_s=start_s, steps=steps, seed=seed)
        progress(0, steps, "finding the clip on the beat (beat tracking, stretching)")
        clip = prepare_target(str(target), self.block, start_s, opts.stretcher)
        image = torch.from_numpy(clip.image.astype(np.float32) / 127.5 - 1.0)[None]
        spectral = SpectralLoss(int(self.block["resolution"]), band_weight=opts.band_weight,
                                onset_weight=opts.onset_weight)
        counter = {"n": 0}

        def on_step(entry):
            counter["n"] += 1
            progress(counter["n"], steps, f"step {counter['n']}/{steps}, distance {entry['distance']:.4f}")

        result = project(self.G, image, num_steps=steps, w_plus=opts.w_plus, seed=opts.seed,
                         regularize_noise_weight=opts.noise_weight, extra_loss=spectral,
                         w_avg_samples=opts.w_avg_samples, device=self.device, callback=on_step)
        with self.decoding():
            return write_projection(opts, self.G, self.block, clip, result, self.device, self.decoder)

    # -------------------------------------------------------------------------------------- live

    def live_audio(self, ws: torch.Tensor, seed: int, run: "gen._Run") -> np.ndarray:
        """Audio of one clip from its ``[num_ws, w_dim]`` latent (noise and phase seeded with ``seed``)."""
        with self.decoding():
            img = run.synthesize_seeded(ws[None].to(self.device), None, seed, from_ws=True)
            return run.decode(img, [seed])[0]

    def seed_w(self, seed: int, trunc: float, class_idx: Optional[int]) -> torch.Tensor:
        """The mapped ``[num_ws, w_dim]`` of a seed, as walks and mixing compute it (one seed at a time)."""
        from audio_ext.generation.latents import seed_z
        c = syn.class_labels(self.G, class_idx, self.network, 1, self.device)
        with torch.no_grad():
            return self.G.mapping(seed_z(seed, int(self.G.z_dim))[None].to(self.device), c, truncation_psi=trunc)[0]


# ----------------------------------------------------------------------------------------- commands

def _seed_list(seeds: Sequence[int]) -> str:
    return ",".join(str(int(s)) for s in seeds)


def gen_command(network: str, fields: dict, fmt: str = "wav") -> str:
    """The ``gen_audio.py`` command line that writes the same file as ``GenerateOptions(**fields)``."""
    args: List[str] = ["--network", network]
    if fields.get("seeds"):
        args += ["--seeds", _seed_list(fields["seeds"])]
    if fields.get("walk"):
        from audio_ext.generation.latents import Projected
        items = [f"proj:{_proj_arg(i.path)}" if isinstance(i, Projected) else str(i) for i in fields["walk"]]
        args += ["--walk", ",".join(items), "--walk-space", fields.get("walk_space", "z"),
                 "--bars", str(fields.get("walk_bars", 4)), "--walk-steps", str(fields.get("walk_steps", 1))]
    for path in fields.get("projected_w") or ():
        args += ["--projected-w", _proj_arg(path)]
    if fields.get("variations"):
        args += ["--variations", str(fields["variations"]), "--spread", f"{fields.get('spread', 0.5):g}"]
    if fields.get("mix_rows"):
        args += ["--mix-rows", _seed_list(fields["mix_rows"]), "--mix-cols", _seed_list(fields["mix_cols"]),
                 "--mix-styles", fields.get("mix_styles", "0-6")]
    if fields.get("trunc", 1.0) != 1.0:
        args += ["--trunc", f"{fields['trunc']:g}"]
    if fields.get("class_idx") is not None:
        args += ["--class", str(fields["class_idx"])]
    if fields.get("noise_mode", "const") != "const":
        args += ["--noise-mode", fields["noise_mode"]]
    if fields.get("loop_bars"):
        args += ["--loop", str(fields["loop_bars"])]
    if fields.get("bpm") is not None:
        args += ["--bpm", f"{fields['bpm']:g}"]
    if fmt != "wav":
        args += ["--format", fmt]
    args += ["--outdir", "out"]
    return GEN_AUDIO + " " + " ".join(shlex.quote(a) for a in args)


def project_command(network: str, target_name: str, start_s: float, steps: int) -> str:
    """The ``project_audio.py`` command that writes the same projection (into ``proj/``)."""
    args = ["--network", network, "--target", target_name, "--start", f"{start_s:g}", "--steps", str(steps),
            "--outdir", "proj"]
    return PROJECT_AUDIO + " " + " ".join(shlex.quote(a) for a in args)


def _proj_arg(path: str) -> str:
    """A session's projection file as the command names it: ``proj/projected_w.npz`` (project_command's --outdir)."""
    return "proj/projected_w.npz"


def group_layers(groups: Dict[str, List[int]], names: Sequence[str]) -> List[int]:
    """The layers of the named groups, sorted."""
    return sorted(i for n in names for i in groups.get(n, []))
