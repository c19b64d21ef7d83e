"""Tiled correction: bounded memory for large images, same pixels as a whole-image pass.

The block grid is cut into tiles whose borders lie on the MCU grid (16 pixels for
4:2:0), so every tile holds whole luma and chroma blocks. Each tile is corrected
together with ``overlap`` pixels of its neighbours (the network's context), and only
its own core is written to the output: the seams vanish as long as ``overlap``
covers the network's effective receptive field (measured seams and memory: docs/method.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .correction import ModelInputs, correct_planes, pixel_dtype
from .dct import BLOCK
from .model import QGAC
from .options import DEFAULT_OVERLAP, DEFAULT_TILE, check_tiling


def _in_blocks(pixels: int, unit: int) -> int:
    """``pixels`` as a number of blocks, rounded up to a multiple of ``unit`` blocks."""
    blocks = -(-pixels // BLOCK)
    return -(-blocks // unit) * unit


@torch.no_grad()
def correct_planes_tiled(
    model: QGAC, inputs: ModelInputs, tile: int | None = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP
) -> Tensor:
    """:func:`~qgac_transforms.correction.correct_planes` in MCU-aligned overlapping tiles.

    ``tile`` and ``overlap`` are in pixels and are rounded up to whole MCUs;
    ``tile=None`` (or an image no larger than one tile) runs the image whole.
    Returns ``(B, C, height, width)`` floats in ``[0, 255]``.
    """
    check_tiling(tile, overlap)
    y, tables, chroma, factor, height, width = inputs
    rows, cols = y.shape[-2] // BLOCK, y.shape[-1] // BLOCK
    if tile is None or (rows * BLOCK <= tile and cols * BLOCK <= tile):
        return correct_planes(model, *inputs)
    v, h = factor if chroma is not None else (1, 1)
    tile_rows, tile_cols = _in_blocks(tile, v), _in_blocks(tile, h)
    extra_rows, extra_cols = _in_blocks(overlap, v), _in_blocks(overlap, h)
    output = y.new_empty(y.shape[0], 1 if chroma is None else 3, height, width, dtype=pixel_dtype(y.dtype))
    for top in range(0, rows, tile_rows):
        for left in range(0, cols, tile_cols):
            # the tile's context window, in luma blocks; its start is a whole MCU
            r0, c0 = max(0, top - extra_rows), max(0, left - extra_cols)
            r1, c1 = min(rows, top + tile_rows + extra_rows), min(cols, left + tile_cols + extra_cols)
            part = ModelInputs(
                y[..., r0 * BLOCK : r1 * BLOCK, c0 * BLOCK : c1 * BLOCK],
                tables,
                None
                if chroma is None
                else chroma[..., r0 // v * BLOCK : -(-r1 // v) * BLOCK, c0 // h * BLOCK : -(-c1 // h) * BLOCK],
                factor,
                min(r1 * BLOCK, height) - r0 * BLOCK,
                min(c1 * BLOCK, width) - c0 * BLOCK,
            )
            pixels = correct_planes(model, *part)
            y0, y1 = top * BLOCK, min((top + tile_rows) * BLOCK, height)
            x0, x1 = left * BLOCK, min((left + tile_cols) * BLOCK, width)
            dy, dx = r0 * BLOCK, c0 * BLOCK  # where the window starts in the image
            output[..., y0:y1, x0:x1] = pixels[..., y0 - dy : y1 - dy, x0 - dx : x1 - dx]
    return output
