"""Has a snapshot learnt spectrogram structure? Fakes against reals, and against an untrained generator.

FID needs a downloaded Inception network and says little about spectrograms; this script compares
what can be read off the images directly, for ``--num`` reals of the archive, ``--num`` fakes of the
snapshot's ``G_ema`` and ``--num`` fakes of a randomly initialised generator of the same
architecture (the control: what training added):

- **band-energy profile**: the mean energy of each octave band in dB (``audio_ext.generation.metrics``'
  spectral features, the ones the SFD metric uses), and the mean level of every frequency row in
  dataset standard deviations: its RMS distance to the reals' profile and its correlation with it;
- **line structure**: the share of an image's variance that lies in its column means (vertical
  lines: the whole spectrum rising at once, i.e. hits and beats) and in its row means (horizontal
  lines: held tones and the spectral tilt), averaged over images;
- **SFD**: the standardised Fréchet distance of all spectral features (``calc_metrics.py``'s ``sfd``
  metrics, here on the same ``--num`` images), and the onset contrast and silence share.

    python benchmarks/fakes_vs_reals.py --network runs/.../network-snapshot-000030.pkl \\
        --data bsd64.zip --grid fakes-vs-reals.png

The result replaces the ``fakes_vs_reals`` section of docs/benchmarks.md (``--no-write``: print only).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, Optional

import click
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import DOC, markdown_table, write_section  # noqa: E402


def to_sigma(images_u8: np.ndarray, clip_sigma: float = 3.0) -> np.ndarray:
    """uint8 images [N, R, R] -> normalised log power in dataset standard deviations (0 -> -clip, 255 -> +clip)."""
    return images_u8.astype(np.float64) / 255.0 * 2.0 * clip_sigma - clip_sigma


def row_profile(x: np.ndarray) -> np.ndarray:
    """[R]: mean level of every image row (row 0 = highest frequency) over images and frames."""
    return x.mean(axis=(0, 2))


def line_shares(x: np.ndarray) -> Dict[str, float]:
    """Mean over images [N, R, R] of the variance share of the column means and of the row means.

    For one image, ``column`` = var(mean over rows, per column) / var(all cells): 1 when the image is
    vertical stripes (every bin moves together in time), 0 when each column has the same mean.
    ``row`` likewise with rows: 1 for horizontal stripes (steady spectrum, nothing changes in time).
    """
    total = x.var(axis=(1, 2))
    ok = total > 1e-12
    col = x.mean(axis=1).var(axis=1)
    row = x.mean(axis=2).var(axis=1)
    return {"column": float(np.mean(col[ok] / total[ok])), "row": float(np.mean(row[ok] / total[ok]))}


def generate(G, num: int, seed: int, batch: int = 64) -> np.ndarray:
    """``num`` uint8 images [num, R, R] of ``G`` from seeded N(0, I) latents (no truncation, random noise)."""
    from stylegan2.metrics.features import to_uint8
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the noise inputs
    out = []
    for start in range(0, num, batch):
        n = min(batch, num - start)
        z = torch.randn([n, G.z_dim], generator=gen)
        with torch.no_grad():
            out.append(to_uint8(G(z, torch.zeros([n, G.c_dim]))).numpy()[:, 0])
    return np.concatenate(out)


def compare(sets: Dict[str, np.ndarray], audio_block: dict):
    """Rows of the two result tables for image sets {name: uint8 [N, R, R]}; the first set is the reference (reals)."""
    from audio_ext.generation.metrics import feature_names, spectral_features, standardized_frechet_distance
    names = feature_names(audio_block)
    bands = [i for i, n in enumerate(names) if n.startswith("band_") and n.endswith("hz_db")]
    clip = float(audio_block.get("clip_sigma", 3.0))
    ref_name = next(iter(sets))
    feats = {k: spectral_features(v[:, None], audio_block) for k, v in sets.items()}
    profiles = {k: row_profile(to_sigma(v, clip)) for k, v in sets.items()}
    ref_f, ref_p = feats[ref_name], profiles[ref_name]
    mu_r, sig_r = ref_f.mean(0), np.cov(ref_f, rowvar=False)
    summary, band_rows = [], []
    for k, v in sets.items():
        f, p = feats[k], profiles[k]
        shares = line_shares(to_sigma(v, clip))
        sfd = standardized_frechet_distance(mu_r, sig_r, f.mean(0), np.cov(f, rowvar=False))
        summary.append([k, len(v), float(np.sqrt(np.mean((p - ref_p) ** 2))), float(np.corrcoef(p, ref_p)[0, 1]),
                        shares["column"], shares["row"], float(f[:, names.index("onset_contrast")].mean()),
                        float(f[:, names.index("silence_share")].mean()),
                        float(sfd) if sfd > 1e-9 else 0.0])     # the reals against themselves: rounding only
        band_rows.append([k] + [float(f[:, i].mean()) for i in bands])
    band_header = ["images"] + [names[i][len("band_"):-len("_db")].replace("_", "-") + " dB" for i in bands]
    return summary, band_header, band_rows


def grid(top: np.ndarray, bottom: np.ndarray, cols: int = 8) -> np.ndarray:
    """Two rows of ``cols`` images (reals above, fakes below) with a 2-pixel white gap: uint8 [2R + 2, cols R + ...]."""
    r = top.shape[-1]
    canvas = np.full((2 * r + 2, cols * r + 2 * (cols - 1)), 255, np.uint8)
    for row, imgs in enumerate((top, bottom)):
        for i in range(min(cols, len(imgs))):
            canvas[row * (r + 2):row * (r + 2) + r, i * (r + 2):i * (r + 2) + r] = imgs[i]
    return canvas


@click.command()
@click.option("--network", required=True, help="Snapshot with an audio block, or pretrained:NAME.")
@click.option("--data", required=True, help="The archive it was trained on.")
@click.option("--num", type=click.IntRange(min=16), default=1000, show_default=True, help="Images per set.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--grid", "grid_path", default=None, help="Write a PNG of 8 reals above 8 fakes here.")
@click.option("--note", default="", help="What network this is (printed above the tables).")
@click.option("--no-write", is_flag=True, help="Print only; leave docs/benchmarks.md alone.")
def main(network, data, num, seed, grid_path: Optional[str], note, no_write):
    from PIL import Image

    from stylegan2.dataset import ImageFolderDataset
    from stylegan2.metrics.features import real_items
    from stylegan2.networks import Generator
    from stylegan2.snapshot import build_networks, load_snapshot
    torch.set_num_threads(1)
    from audio_ext.generation.pretrained import resolve_network
    snap = load_snapshot(resolve_network(network))   # a path or pretrained:NAME
    G = build_networks(snap, names=["G_ema"])["G_ema"].eval()
    torch.manual_seed(0)
    G0 = Generator(**G.init_kwargs).eval().requires_grad_(False)
    ds = ImageFolderDataset(data)
    if ds.audio is None:
        raise click.ClickException(f"--data {data}: the archive has no audio block")
    if list(ds.image_shape) != [1, G.img_resolution, G.img_resolution]:
        raise click.ClickException(f"--data {data}: images {ds.image_shape} do not match the network's "
                                   f"{G.img_resolution} x {G.img_resolution}")
    reals = np.stack([ds[int(i)][0][0] for i in real_items(ds, num, seed)])
    sets = {"reals": reals, f"trained G_ema ({snap.get('cur_nimg', 0) / 1000:g} kimg)": generate(G, num, seed),
            "untrained (init)": generate(G0, num, seed)}
    summary, band_header, band_rows = compare(sets, ds.audio)
    t1 = markdown_table(["images", "N", "row-profile RMS vs reals (σ)", "row-profile corr.", "column-mean share",
                         "row-mean share", "onset contrast", "silence share", "SFD vs reals"], summary)
    t2 = markdown_table(band_header, band_rows)
    print(t1 + "\n\n" + t2)
    if grid_path:
        spread = reals[np.linspace(0, len(reals) - 1, 8).round().astype(int)]   # reals are in archive order: spread
        Image.fromarray(grid(spread, sets[next(k for k in sets if k.startswith("trained"))][:8])).save(grid_path)
        print(f"grid: {grid_path}")
    if not no_write:
        a = ds.audio
        body = (f"`benchmarks/fakes_vs_reals.py --num {num}` on `{Path(network).name}` and `{Path(data).name}`"
                f"{' (' + note + ')' if note else ''}; resolution {a['resolution']}, hop {a['hop_length']}, "
                f"{a['sample_rate']} Hz. Row profile: mean level of each frequency row in dataset σ; "
                f"column-/row-mean share: variance of the column (frame) / row (bin) means as a share of the "
                f"image variance (vertical / horizontal lines); SFD: standardised Fréchet distance of the "
                f"spectral features to the reals (0 = same).\n\n{t1}\n\nMean octave-band energies:\n\n{t2}")
        write_section("fakes_vs_reals", "Fakes against reals (measured)", body, doc=DOC)


if __name__ == "__main__":
    main()
