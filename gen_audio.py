"""Generate music from a trained ElectroGAN snapshot: audio clips, spectrograms and a listening page.

    python gen_audio.py --network runs/00000-stft-audio1024/network-snapshot-002200.pkl --seeds 0-19 --outdir out
    python gen_audio.py --network snap.pkl --seeds 3,7 --loop 8 --outdir loops       # 8-bar seamless loops
    python gen_audio.py --network snap.pkl --walk 1,5,9 --bars 4 --outdir mix       # a latent walk, joined on beats
    python gen_audio.py --network snap.pkl --walk proj:me/projected_w.npz,5 --bpm 124 --outdir mix  # my track -> seed 5
    python gen_audio.py --network snap.pkl --mix-rows 1,2 --mix-cols 3,4,5 --mix-styles 0-5 --outdir grid

A thin wrapper around :func:`audio_ext.generation.generate.generate` (the logic and its documentation live there).
"""
from __future__ import annotations

import sys

import click

from audio_ext.core.seeds import SeedSyntaxError, parse_seeds
from audio_ext.generation.generate import FORMATS, NOISE_MODES, GenerateOptions, generate
from audio_ext.generation.latents import WALK_SPACES, parse_walk
from audio_ext.generation.publish import Interrupted, stop_on_signals
from audio_ext.generation.synthesis import DEVICES, GenerateError
from stylegan2.cli_errors import one_line_errors
from stylegan2.snapshot import SnapshotError


def _seeds(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_seeds(value)
    except SeedSyntaxError as e:
        raise click.BadParameter(str(e)) from None


def _walk(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_walk(value)
    except SeedSyntaxError as e:
        raise click.BadParameter(str(e)) from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--network", "network", required=True, metavar="PKL|pretrained:NAME",
              help="Network snapshot (network-snapshot-*.pkl), or pretrained:NAME for a shipped network.")
@click.option("--seeds", callback=_seeds, metavar="LIST", help="Seeds, e.g. '0-19,42' (ranges inclusive).")
@click.option("--trunc", "trunc", type=float, default=1.0, show_default=True, help="Truncation psi (1 = off).")
@click.option("--class", "class_idx", type=int, default=None, metavar="INT", help="Class label (conditional models).")
@click.option("--noise-mode", type=click.Choice(NOISE_MODES), default="const", show_default=True,
              help="Per-pixel noise: fixed, fresh (seeded) or off.")
@click.option("--outdir", required=True, metavar="DIR", help="Where clips, spectrograms and index.html go.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="wav", show_default=True,
              help="16-bit PCM container.")
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True, help="Images per forward pass.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--method", default=None, metavar="NAME",
              help="Phase reconstruction method (default: the audio layer's best, see docs/generation.md).")
@click.option("--decoder-model", "decoder_model", default=None, metavar="FILE|none",
              help="Decoder model for learned+pghi+fgla; none = no learned decoder [default: the snapshot's own, "
                   "else $ELECTROGAN_DECODER_MODEL, else the shipped one].")
@click.option("--iters", "n_iter", type=click.IntRange(min=0), default=None, metavar="N",
              help="Griffin-Lim iterations (default: the method's own).")
@click.option("--loop", "loop_bars", type=click.IntRange(min=1), default=None, metavar="BARS",
              help="Cut each clip to BARS bars (4 beats) with a seamless loop point.")
@click.option("--walk", callback=_walk, metavar="LIST",
              help="Render one piece walking through these seeds and projected latents (proj:FILE), e.g. 'proj:me.npz,5,9'.")
@click.option("--walk-space", type=click.Choice(WALK_SPACES), default="z", show_default=True,
              help="Interpolate between seeds by slerp in Z (z) or linearly in W (w).")
@click.option("--bars", "walk_bars", type=click.IntRange(min=1), default=4, show_default=True,
              help="Bars each clip of a --walk contributes.")
@click.option("--walk-steps", type=click.IntRange(min=0), default=1, show_default=True,
              help="Interpolated clips between consecutive --walk seeds.")
@click.option("--crossfade", "crossfade_s", type=click.FloatRange(min=0), default=0.02, show_default=True,
              metavar="SECONDS", help="Crossfade at loop points and walk joins.")
@click.option("--projected-w", "projected_w", multiple=True, metavar="FILE",
              help="Render a latent written by project_audio.py (projected_w.npz); repeatable.")
@click.option("--variations", type=click.IntRange(min=1), default=None, metavar="N",
              help="N clips around each --projected-w latent instead of the latent itself.")
@click.option("--spread", type=click.FloatRange(min=0), default=0.5, show_default=True, metavar="S",
              help="How far --variations move: S times a typical random offset from the mean w.")
@click.option("--mix-rows", callback=_seeds, metavar="LIST", help="Style mixing: row seeds (their w outside --mix-styles).")
@click.option("--mix-cols", callback=_seeds, metavar="LIST", help="Style mixing: column seeds (their w in --mix-styles).")
@click.option("--mix-styles", default="0-6", show_default=True, metavar="LAYERS",
              help="Style mixing: the layers (0 = coarsest) taken from the column seeds, e.g. '0-5'.")
@click.option("--bpm", type=float, default=None, metavar="B",
              help="Stretch every clip to B BPM (Rubber Band when installed); loops and walks in whole bars at B.")
@one_line_errors(GenerateError, SnapshotError, ValueError)
def main(**kwargs):
    """Generate audio clips from a trained network snapshot (see docs/generation.md)."""
    kwargs["projected_w"] = list(kwargs["projected_w"]) or None
    try:
        with stop_on_signals():     # Ctrl-C, SIGTERM, SIGHUP: remove the staging folder, then stop
            result = generate(GenerateOptions(**kwargs), log=lambda msg: click.echo(msg, err=True))
    except Interrupted as e:        # exit status 128 + signal number, as a shell reports it
        done = "every file was already in --outdir" if e.completed else "nothing was changed in --outdir"
        click.echo(f"Stopped: {e}; {done}", err=True)
        sys.exit(128 + e.signum)
    click.echo(f"wrote {len(result.audio)} audio file(s); listening page: {result.page}")


if __name__ == "__main__":
    main()
