"""``python -m audio_ext studio``: the studio's command line (docs/studio.md). Thin: it loads the
network through :class:`.engine.Engine` and hands it to :func:`.server.serve`."""
from __future__ import annotations

import click


@click.command("studio")
@click.option("--network", default=None, metavar="PKL|pretrained:NAME",
              help="network snapshot to play with [the shipped network]")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on; anything but 127.0.0.1 opens the studio to other machines")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--max-upload-mb", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="largest track accepted for projection, MB")
@click.option("--session-hours", type=click.FloatRange(min=0.01), default=2.0, show_default=True,
              help="idle time after which a session's files are removed")
def studio(network, host, port, device, max_upload_mb, session_hours) -> None:
    """Play with a trained network in the browser: seeds, loops at any BPM, mixing, walks, your own track, live."""
    from audio_ext.generation.synthesis import GenerateError
    from audio_ext.studio.engine import Engine, default_network
    from audio_ext.studio.server import serve
    network = network or default_network()
    if network is None:
        raise click.ClickException("--network PKL is required (the shipped pretrained:electro128 is not installed)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"Warning: listening on {host}: anyone who can reach this machine can use the studio and "
                   f"upload files to it", err=True)
    try:
        engine = Engine(network, device=device)
    except GenerateError as e:
        raise click.ClickException(str(e)) from None
    try:
        serve(engine, host, port, log=click.echo, ttl_s=session_hours * 3600, max_upload=max_upload_mb << 20)
    except OSError as e:
        engine.close()
        raise click.ClickException(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
