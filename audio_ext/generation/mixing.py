"""Style mixing for audio: a grid of clips that take some layers' w from one seed and the rest from another.

The convention is StyleGAN2-ADA's ``style_mixing.py`` (docs/references.md): for row seed r
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

from audio_ext.core.seeds import SeedSyntaxError, parse_seeds
from audio_ext.generation.latents import seed_z
from audio_ext.generation.page import GridCell
from audio_ext.generation.synthesis import GenerateError, clip_tempo, fmt_bpm, image_to_png_array, save_png


def parse_layers(spec: str, num_ws: int) -> List[int]:
    """``"0-5"`` / ``"0,2,4-6"`` -> sorted unique layer indices, each in ``0..num_ws-1``; ValueError otherwise."""
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


#: Largest grid image (``mix-grid.png``) in pixels: one byte each in memory, 256 MiB; at R = 1024 a
#: 15 x 15 grid.
MAX_GRID_PIXELS = 2**28


def _unique(seeds: Sequence[int]) -> List[int]:
    """``seeds`` in order without repeats (a repeated row or column would write the same files twice)."""
    return list(dict.fromkeys(int(s) for s in seeds))


def grid_size(rows: Sequence[int], cols: Sequence[int]) -> tuple:
    """(rows, columns) of the grid once repeated seeds are dropped."""
    return len(_unique(rows)), len(_unique(cols))


def check_grid_image(rows: Sequence[int], cols: Sequence[int], resolution: int) -> None:
    """ValueError (one line) when the grid image of ``rows`` x ``cols`` cells of ``resolution`` pixels would
    exceed :data:`MAX_GRID_PIXELS`: checked before anything is rendered."""
    n_r, n_c = grid_size(rows, cols)
    pixels = (n_r + 1) * (n_c + 1) * resolution * resolution
    if pixels > MAX_GRID_PIXELS:
        raise ValueError(f"--mix-rows x --mix-cols: {n_r} x {n_c} cells of {resolution} px make a grid image of "
                         f"{pixels:,} pixels, more than {MAX_GRID_PIXELS:,}; render smaller grids")


def render_mix(run) -> None:
    """Render the grid of ``gen_audio.py --mix-rows R --mix-cols C --mix-styles L`` into ``run``'s staging folder.

    Files: ``mix-row<seed>``, ``mix-col<seed>`` (the sources) and ``mix-r<row>-c<col>`` (the cells), each
    an audio file at the output tempo plus its spectrogram PNG, and ``mix-grid.png`` (blank corner, column seeds on top, row seeds on the left, cells);
    the caller writes the grid page. Clip seeds: rows, then columns, then cells, numbered from 0. A seed
    given twice in one list is rendered once. Clips are made ``--batch`` at a time and written at once, so
    memory holds one batch and the grid image, whatever the grid's size.
    """
    opts, G = run.opts, run.G
    try:
        layers = parse_layers(opts.mix_styles, int(G.num_ws))
    except ValueError as e:
        raise GenerateError(str(e)) from None
    rows, cols = _unique(opts.mix_rows), _unique(opts.mix_cols)
    if len(rows) < len(opts.mix_rows) or len(cols) < len(opts.mix_cols):
        run.log("style mixing: repeated seeds in --mix-rows/--mix-cols are rendered once")
    c1 = run.classes[:1]
    n_r, n_c = len(rows), len(cols)

    def w_of(seed):
        with torch.no_grad():
            return G.mapping(seed_z(seed, int(G.z_dim))[None].to(run.device), c1, truncation_psi=opts.trunc)[0]

    def item(k):
        """(file stem, w, grid row, grid column) of clip k: rows, then columns, then the cells row by row."""
        if k < n_r:
            return f"mix-row{rows[k]}", w_of(rows[k]), k + 1, 0
        if k < n_r + n_c:
            return f"mix-col{cols[k - n_r]}", w_of(cols[k - n_r]), 0, k - n_r + 1
        i, j = divmod(k - n_r - n_c, n_c)
        return f"mix-r{rows[i]}-c{cols[j]}", mix_ws(w_of(rows[i]), w_of(cols[j]), layers), i + 1, j + 1

    total = n_r + n_c + n_r * n_c
    run.log(f"style mixing: {n_r} x {n_c} cells, layers {','.join(map(str, layers))} from the columns")
    batch = 1 if opts.noise_mode == "random" else opts.batch
    r = int(run.geometry.resolution)
    grid = np.zeros(((n_r + 1) * r, (n_c + 1) * r), np.uint8)
    cells: List[GridCell] = []
    for first in range(0, total, batch):
        items = [item(k) for k in range(first, min(first + batch, total))]
        imgs = run.synthesize_seeded(torch.stack([w for _, w, _, _ in items]), None, first, from_ws=True)
        decoded = run.decode(imgs, list(range(first, first + len(items))))
        for j, (stem, _, gi, gj) in enumerate(items):
            audio = run.retime(decoded[j])
            bpm = run.bpm if run.bpm is not None else clip_tempo(run.block, audio)
            name = f"{stem}-{fmt_bpm(bpm)}bpm.{opts.fmt}"
            run.write(stem, name, audio, imgs[j].cpu().numpy(), title=f"{stem} {fmt_bpm(bpm)} BPM",
                      comment=f"mix rows={rows} cols={cols} styles={opts.mix_styles} bpm={bpm:g}",
                      entry=dict(title=stem, seed=stem, bpm=bpm, kind="style mixing"))
            grid[gi * r:(gi + 1) * r, gj * r:(gj + 1) * r] = image_to_png_array(imgs[j].cpu().numpy())
            cells.append(GridCell(audio=name, image=f"{stem}.png", caption=stem.replace("mix-", "")))
    save_png(run.staging / "mix-grid.png", grid)
    run.images.append("mix-grid.png")
    note = (f"Each cell: the row seed's w, with layers {opts.mix_styles} taken from the column seed "
            f"(StyleGAN2-ADA's convention); grid image: mix-grid.png")
    run.mix_grid = (cells[n_r:n_r + n_c], cells[:n_r],
                    [cells[n_r + n_c + i * n_c:n_r + n_c + (i + 1) * n_c] for i in range(n_r)], note)
