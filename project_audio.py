"""Project a track of your own into a trained ElectroGAN network: find the latent that sounds like it.

    python project_audio.py --network snap.pkl --target mytrack.flac --start 60 --outdir proj
    python gen_audio.py --network snap.pkl --projected-w proj/projected_w.npz --walk proj:proj/projected_w.npz,5 --outdir mix

A thin wrapper around :func:`audio_ext.generation.audio_projection.run_projection` (the search itself is
:func:`stylegan2.projector.project`); see docs/generation.md.
"""
from __future__ import annotations

import click

from audio_ext.generation.audio_projection import ProjectionError, ProjectOptions, run_projection
from audio_ext.generation.synthesis import DEVICES, GenerateError
from stylegan2.cli_errors import one_line_errors
from stylegan2.snapshot import SnapshotError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--network", required=True, metavar="PKL|pretrained:NAME",
              help="Network snapshot (network-snapshot-*.pkl), or pretrained:NAME for a shipped network.")
@click.option("--target", required=True, metavar="FILE", help="Audio file to project (anything the dataset tool reads).")
@click.option("--start", "start_s", type=float, default=0.0, show_default=True, metavar="SECONDS",
              help="The clip starts on the first beat at or after this time.")
@click.option("--outdir", required=True, metavar="DIR", help="Where projected_w.npz, the WAVs, images and page go.")
@click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True, help="Optimisation steps.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the ramped w noise.")
@click.option("--w-plus", is_flag=True, help="Optimise one w per layer (W+) instead of one w for all.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--noise-weight", type=float, default=1e5, show_default=True,
              help="Weight of the noise regularisation (the StyleGAN2 paper's 1e5).")
@click.option("--band-weight", type=float, default=1.0, show_default=True, help="Weight of the band-energy term.")
@click.option("--onset-weight", type=float, default=1.0, show_default=True, help="Weight of the onset-envelope term.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@one_line_errors(ProjectionError, GenerateError, SnapshotError)
def main(no_progress, **kwargs):
    """Project the clip of --target that starts at --start into the network of --network."""
    summary = run_projection(ProjectOptions(**kwargs), log=lambda m: click.echo(m, err=True),
                             progress=not no_progress)
    click.echo(f"final image distance {summary.final_distance:.4f} (start {summary.start_distance:.4f}): "
               f"{100 * summary.closed_share:.1f} % closed; wrote {len(summary.files)} files to {summary.outdir} "
               f"(listening page {summary.outdir / 'index.html'})")


if __name__ == "__main__":
    main()
