"""``python -m audio_ext export-pretrained``: a training snapshot -> a shipped network (G_ema only)."""
from __future__ import annotations

import click

from audio_ext.generation.pretrained import PretrainedError, export_pretrained
from stylegan2.cli_errors import one_line_errors


@click.command("export-pretrained")
@click.option("--network", required=True, metavar="PKL", help="training snapshot (network-snapshot-*.pkl)")
@click.option("--name", required=True, help="shipped name; users then type --network pretrained:NAME")
@click.option("--notes", default="", help="free text kept in the file's provenance record")
@click.option("--outdir", default=None, metavar="DIR", help="where NAME.pt goes [audio_ext/generation/models]")
@click.option("--overwrite", is_flag=True, help="replace an existing NAME.pt")
@one_line_errors(PretrainedError)
def export_pretrained_cmd(network, name, notes, outdir, overwrite) -> None:
    """Write G_ema, the audio block and the decoder model of a snapshot as a shipped network."""
    dest = export_pretrained(network, name, notes=notes, folder=outdir, overwrite=overwrite)
    click.echo(f"wrote {dest} ({dest.stat().st_size / 2**20:.2f} MiB): use --network pretrained:{name}")
