"""What do the coarse, middle and fine layers of an audio StyleGAN2 control? A style-swap measurement.

For ``--pairs`` seed pairs (A, B) the latent of A gets the w of B in one layer group only (the
style-mixing operation of ``gen_audio.py --mix-styles``), and the change of three spectrogram
features is measured as a share of the whole A -> B change:

- **onset pattern**: the rise of level from frame to frame in ``ONSET_BANDS`` wide log-spaced bands,
  half-wave rectified and averaged over the bands (:func:`onset_pattern`, multi-band spectral flux as
  in Scheirer 1998 and librosa's onset strength on mel bands): ``|env(swap) - env(A)| / |env(B) - env(A)|``.
  The levels are pooled over each band *before* rectifying, so pixel texture (frame-to-frame noise
  within a band, which the fine layers of a trained network change) partly averages out (about half
  of it, ``tests/test_layer_control.py``) instead of reading as onsets; per-pixel flux (``SpectralLoss.onset_envelope``, the projector's term) counted it;
- **step pattern**: the onset pattern summed over each 16th-note step of the clip's tempo (at R=64, hop
  64, 4410 Hz and 130 BPM, 7.95 frames per step, 7 whole steps per clip): where the hits fall on the rhythmic
  grid, blind to how they are spread over the frames within a step (:func:`step_pattern`);
- **band energies**: the mean level of 16 log-spaced bands (``SpectralLoss.band_energies``), the same ratio.

A share near 1 means the group carries nearly all of that difference, near 0 none of it. Groups
follow the StyleGAN paper: coarse = the w of the 4x4 and 8x8 convolutions, middle = 16x16 and 32x32,
fine = 64x64 and above (:func:`layer_groups`). Features are computed
on the generated spectrograms (what the decoder turns into sound). As a control the same is
measured on a randomly initialised generator of the same architecture: what training added.

    python benchmarks/layer_control.py --network runs/.../network-snapshot-000012.pkl --pairs 64

The result table replaces the ``layer_control`` section of docs/generation.md (``--doc``: another file).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

import click
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audio_ext.generation.audio_projection import SpectralLoss, band_matrix  # noqa: E402
from audio_ext.generation.latents import seed_z  # noqa: E402
from audio_ext.generation.mixing import mix_ws  # noqa: E402
from benchmarks.report import markdown_table, write_section  # noqa: E402

DOC = Path(__file__).resolve().parent.parent / "docs" / "generation.md"

#: Bands of the onset pattern: six log-spaced bands (Scheirer's tempo analyser used six), octaves at R=64.
ONSET_BANDS = 6


def onset_pattern(images: torch.Tensor, bands: int = ONSET_BANDS) -> torch.Tensor:
    """``[N, R - 1]``: multi-band spectral flux of images ``[N, 1, R, R]`` (row 0 = highest frequency).

    The mean level of each of ``bands`` log-spaced bands per frame (:func:`audio_ext.generation.audio_projection.band_matrix`),
    its rise from one frame to the next with falls set to 0, averaged over the bands: where in the clip
    the hits are, in normalised level units per frame.
    """
    x = images[:, 0].float().flip(-2)                               # [N, bins (DC first), frames]
    levels = band_matrix(x.shape[-2], bands).to(x.device) @ x       # [N, bands, frames]
    return torch.relu(levels[..., 1:] - levels[..., :-1]).mean(dim=-2)


def frames_per_step(audio_block: Optional[dict], resolution: int) -> float:
    """STFT frames per 16th note at the block's ``target_bpm`` (hop and rate from the block); 1/8 of the clip without one."""
    if not audio_block:
        return resolution / 8
    return 60.0 / float(audio_block["target_bpm"]) / 4 * int(audio_block["sample_rate"]) / int(audio_block["hop_length"])


def step_pattern(env: torch.Tensor, per_step: float) -> torch.Tensor:
    """``[N, steps]``: an onset pattern ``[N, T]`` summed over consecutive steps of ``per_step`` frames.

    Value t of the pattern (the rise into frame t + 1) belongs to step ``floor(t / per_step)``; only
    complete steps are kept (at least one).
    """
    t = env.shape[-1]
    steps = max(1, int(t // per_step))
    idx = torch.div(torch.arange(t, dtype=torch.float64), per_step, rounding_mode="floor").long()
    keep = idx < steps
    out = torch.zeros(env.shape[0], steps, dtype=env.dtype, device=env.device)
    return out.index_add_(1, idx[keep].to(env.device), env[:, keep])


def layer_groups(resolution: int):
    """``{name: [w indices]}`` by the resolution of the convolution each w drives.

    w 0 drives the 4x4 convolution, w 2k-1 and w 2k the two convolutions of the block at 4 * 2^k
    (w 2k-1 also the previous block's toRGB), the last w the final toRGB: w i belongs to
    ``min(4 * 2^ceil(i / 2), resolution)``. Coarse = 4-8, middle = 16-32, fine = 64 and up (the StyleGAN paper's split).
    """
    num_ws = 2 * int(math.log2(resolution)) - 2
    groups = {"coarse (4-8)": [], "middle (16-32)": [], "fine (64+)": []}
    for i in range(num_ws):
        res = min(4 * 2 ** math.ceil(i / 2), resolution)  # the last w: the final toRGB
        groups["coarse (4-8)" if res <= 8 else "middle (16-32)" if res <= 32 else "fine (64+)"].append(i)
    return {k: v for k, v in groups.items() if v}


def measure(G, pairs: int, seed0: int = 0, per_step: Optional[float] = None):
    """``{group: (onset shares, band shares, step shares)}`` (lists of ``pairs``) for seed pairs (seed0 + 2k, seed0 + 2k + 1).

    ``per_step``: frames per rhythmic step for the step pattern (:func:`frames_per_step`; default 1/8 of the clip).
    """
    per_step = frames_per_step(None, int(G.img_resolution)) if per_step is None else per_step
    loss = SpectralLoss(int(G.img_resolution))
    c = torch.zeros(1, int(G.c_dim))
    groups = layer_groups(int(G.img_resolution))
    assert max(max(v) for v in groups.values()) == int(G.num_ws) - 1, (groups, G.num_ws)
    out = {g: ([], [], []) for g in groups}

    def feats(w):
        with torch.no_grad():
            img = G.synthesis(w[None], noise_mode="const", force_fp32=True).clamp(-1, 1)
        return onset_pattern(img)[0], loss.band_energies(img)[0]

    for k in range(pairs):
        with torch.no_grad():
            wa = G.mapping(seed_z(seed0 + 2 * k, int(G.z_dim))[None], c)[0]
            wb = G.mapping(seed_z(seed0 + 2 * k + 1, int(G.z_dim))[None], c)[0]
        ea, ba = feats(wa)
        eb, bb = feats(wb)
        sa, sb = step_pattern(ea[None], per_step)[0], step_pattern(eb[None], per_step)[0]
        for g, layers in groups.items():
            es, bs = feats(mix_ws(wa, wb, layers))
            ss = step_pattern(es[None], per_step)[0]
            out[g][0].append(float((es - ea).norm() / (eb - ea).norm().clamp_min(1e-12)))
            out[g][1].append(float((bs - ba).norm() / (bb - ba).norm().clamp_min(1e-12)))
            out[g][2].append(float((ss - sa).norm() / (sb - sa).norm().clamp_min(1e-12)))
    return out


def rows_for(label: str, G, result):
    groups = layer_groups(int(G.img_resolution))
    rows = []
    ms = lambda v: f"{np.mean(v):.2f} ± {np.std(v):.2f}"
    for g, (onset, band, step) in result.items():
        layers = groups[g]
        rows.append([label, g, f"{layers[0]}-{layers[-1]}", ms(onset), ms(step), ms(band),
                     f"{np.mean(onset) / max(np.mean(band), 1e-12):.2f}"])
    return rows


@click.command()
@click.option("--network", required=True, help="A trained snapshot with an audio block, or pretrained:NAME.")
@click.option("--pairs", type=click.IntRange(min=1), default=64, show_default=True, help="Seed pairs (A, B).")
@click.option("--note", default="", help="What network this is (printed above the table).")
@click.option("--no-write", is_flag=True, help="Print only; leave docs/generation.md alone.")
@click.option("--doc", type=click.Path(dir_okay=False, path_type=Path), default=DOC, show_default=True,
              help="Markdown file whose layer_control section is replaced.")
def main(network, pairs, note, no_write, doc):
    from stylegan2.networks import Generator
    from stylegan2.snapshot import build_networks, load_snapshot
    torch.set_num_threads(1)
    from audio_ext.generation.pretrained import resolve_network
    snap = load_snapshot(resolve_network(network))   # a path or pretrained:NAME
    G = build_networks(snap, names=["G_ema"])["G_ema"]
    torch.manual_seed(0)
    G0 = Generator(**G.init_kwargs).eval().requires_grad_(False)   # the same architecture, untrained
    per_step = frames_per_step(snap.get("audio"), int(G.img_resolution))
    rows = rows_for(f"trained ({snap.get('cur_nimg', 0) / 1000:g} kimg)", G, measure(G, pairs, per_step=per_step))
    rows += rows_for("untrained (init)", G0, measure(G0, pairs, per_step=per_step))
    table = markdown_table(["network", "group swapped", "layers", "onset-pattern change", "step-pattern change",
                            "band-energy change", "onset / band"], rows)
    print(table)
    if not no_write:
        body = (f"`benchmarks/layer_control.py --pairs {pairs}` on `{Path(network).name}`"
                f"{' (' + note + ')' if note else ''}: for each seed pair (A, B), A's w with one layer group "
                f"taken from B; change of the onset pattern ({ONSET_BANDS}-band spectral flux per frame), of the "
                f"step pattern (the onset pattern summed per 16th note, {per_step:.2f} frames) and of the 16 band "
                f"energies, each as a share of the whole A -> B change (mean ± sd over the pairs). "
                f"Resolution {G.img_resolution}, {G.num_ws} layers.\n\n" + table)
        write_section("layer_control", "What the layer groups control (measured)", body, doc=doc)


if __name__ == "__main__":
    main()
