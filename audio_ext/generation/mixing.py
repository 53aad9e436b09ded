"""Style mixing for audio: a grid of clips that take some layers' w from one seed and the rest from another.

The convention is StyleGAN2-ADA's ``style_mixing.py`` (see shared/upstream-notes.md): for row seed r
and column seed c the cell's latent is r's w in every layer, except the layers listed by
``--mix-styles`` (default ``0-6``), which take c's w. So a column shows what the listed layers carry
(read across a row: the column seeds' contribution changes; down a column: the row seeds' rest).
Layer i is the i-th entry of ``ws`` (``G.num_ws`` of them: two per resolution from 4x4 upwards,
plus one for the last toRGB): low indices are the coarse resolutions.

The grid image puts the column seeds' own spectrograms along the top, the row seeds' down the left,
and cell (r, c) at row r, column c, as upstream's grid does.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch

DEFAULT_STYLES = "0-6"


def parse_layers(spec: str, num_ws: int) -> List[int]:
    """``"0-5"`` / ``"0,2,4-6"`` -> sorted unique layer indices, each in ``0..num_ws-1``; ValueError otherwise."""
    from audio_ext.core.seeds import SeedSyntaxError, parse_seeds
    try:
        layers = sorted(set(parse_seeds(spec)))
    except SeedSyntaxError as e:
        raise ValueError(f"--mix-styles {spec!r}: {str(e).split(': ', 1)[-1]}") from None
    bad = [i for i in layers if i >= num_ws]
    if bad:
        raise ValueError(f"--mix-styles {spec!r}: layer {bad[0]} does not exist; this network has layers 0-{num_ws - 1}")
    return layers


def mix_ws(row_w: torch.Tensor, col_w: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
    """``[num_ws, w_dim]``: ``row_w`` with the rows ``layers`` taken from ``col_w`` (the upstream convention)."""
    w = row_w.clone()
    idx = torch.as_tensor(list(layers), dtype=torch.long, device=w.device)
    w[idx] = col_w[idx]
    return w


def grid_image(row_images: Sequence[np.ndarray], col_images: Sequence[np.ndarray],
               cells: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """uint8 ``[(rows+1) R, (cols+1) R]``: blank corner, column seeds on top, row seeds on the left, cells."""
    r = row_images[0].shape[0]
    out = np.zeros(((len(row_images) + 1) * r, (len(col_images) + 1) * r), np.uint8)
    for j, img in enumerate(col_images):
        out[:r, (j + 1) * r:(j + 2) * r] = img
    for i, img in enumerate(row_images):
        out[(i + 1) * r:(i + 2) * r, :r] = img
        for j, cell in enumerate(cells[i]):
            out[(i + 1) * r:(i + 2) * r, (j + 1) * r:(j + 2) * r] = cell
    return out


def render_mix(run) -> None:
    """Render the grid of ``gen_audio.py --mix-rows R --mix-cols C --mix-styles L`` into ``run``'s staging folder.

    Files: ``mix-row<seed>``, ``mix-col<seed>`` (the sources) and ``mix-r<row>-c<col>`` (the cells), each
    an audio file at the output tempo plus its spectrogram PNG, and ``mix-grid.png`` (:func:`grid_image`);
    the caller writes the grid page. Clip seeds: rows, then columns, then cells, numbered from 0.
    """
    from audio_ext.generation.latents import seed_z
    from audio_ext.generation.page import GridCell
    from audio_ext.generation.synthesis import GenerateError, _fmt_bpm, clip_tempo, image_to_png_array, save_png
    opts, G = run.opts, run.G
    try:
        layers = parse_layers(opts.mix_styles, int(G.num_ws))
    except ValueError as e:
        raise GenerateError(str(e)) from None
    rows, cols = list(opts.mix_rows), list(opts.mix_cols)
    c1 = run.classes[:1]

    def w_of(seed):
        with torch.no_grad():
            return G.mapping(seed_z(seed, int(G.z_dim))[None].to(run.device), c1, truncation_psi=opts.trunc)[0]

    row_w, col_w = [w_of(s) for s in rows], [w_of(s) for s in cols]
    ws = row_w + col_w + [mix_ws(rw, cw, layers) for rw in row_w for cw in col_w]
    run.log(f"style mixing: {len(rows)} x {len(cols)} cells, layers {','.join(map(str, layers))} from the columns")
    batch = 1 if opts.noise_mode == "random" else opts.batch
    stacked = torch.stack(ws)
    imgs = torch.cat([run.synthesize_seeded(stacked[k:k + batch], None, k, from_ws=True)
                      for k in range(0, len(ws), batch)])
    decoded = run.decode(imgs, list(range(len(ws))))
    names = [f"mix-row{s}" for s in rows] + [f"mix-col{s}" for s in cols] + \
            [f"mix-r{r}-c{c}" for r in rows for c in cols]
    pngs, cells = [], []
    for k, stem in enumerate(names):
        audio = run.retime(decoded[k])
        bpm = run.bpm if run.bpm is not None else clip_tempo(run.block, audio)
        name = f"{stem}-{_fmt_bpm(bpm)}bpm.{opts.fmt}"
        run.write(stem, name, audio, imgs[k].cpu().numpy(), title=f"{stem} {_fmt_bpm(bpm)} BPM",
                  comment=f"mix rows={rows} cols={cols} styles={opts.mix_styles} bpm={bpm:g}",
                  entry=dict(title=stem, seed=stem, bpm=bpm, kind="style mixing"))
        pngs.append(image_to_png_array(imgs[k].cpu().numpy()))
        cells.append(GridCell(audio=name, image=f"{stem}.png", caption=stem.replace("mix-", "")))
    n_r, n_c = len(rows), len(cols)
    grid = grid_image(pngs[:n_r], pngs[n_r:n_r + n_c],
                      [pngs[n_r + n_c + i * n_c:n_r + n_c + (i + 1) * n_c] for i in range(n_r)])
    save_png(run.staging / "mix-grid.png", grid)
    run.images.append("mix-grid.png")
    note = (f"Each cell: the row seed's w, with layers {opts.mix_styles} taken from the column seed "
            f"(StyleGAN2-ADA's convention); grid image: mix-grid.png")
    run.mix_grid = (cells[n_r:n_r + n_c], cells[:n_r],
                    [cells[n_r + n_c + i * n_c:n_r + n_c + (i + 1) * n_c] for i in range(n_r)], note)
