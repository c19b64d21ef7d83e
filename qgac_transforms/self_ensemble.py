"""Geometric self-ensemble: correct a JPEG in each of its eight orientations and average.

Flipping an image whose size is a whole number of blocks reverses the order of its
blocks along that axis and, inside each block, multiplies the coefficient of
frequency ``k`` along the axis by ``(-1)^k``; transposing it transposes the block grid,
every block and the quantization tables. So the orientations of a JPEG are exact in
the DCT domain (same coefficients up to sign and order, same quantization error), and
the network can be run on each. Turned back and averaged, their corrections beat any
one of them, for eight times the work: the self-ensemble of Lim et al. (EDSR, 2017).
A file whose chroma is subsampled unevenly (4:2:2) is not transposed, so it gets the
four flips only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .correction import ModelInputs, pad_to_mcu
from .dct import BLOCK, crop
from .model import QGAC
from .options import DEFAULT_OVERLAP, DEFAULT_TILE
from .tiling import correct_planes_tiled


class Orientation(NamedTuple):
    """Transpose (first), then flip rows, then flip columns."""

    transpose: bool
    vertical: bool
    horizontal: bool


#: All eight orientations of the square's symmetry group, the identity first.
ORIENTATIONS = tuple(Orientation(t, v, h) for t in (False, True) for v in (False, True) for h in (False, True))


def _block_view(plane: Tensor) -> Tensor:
    """``(B, C, 8R, 8C)`` -> ``(B, C, R, 8, C, 8)``: block row, frequency row, block column, frequency column."""
    batch, channels, height, width = plane.shape
    return plane.reshape(batch, channels, height // BLOCK, BLOCK, width // BLOCK, BLOCK)


def _alternating(like: Tensor) -> Tensor:
    return (-1.0) ** torch.arange(BLOCK, dtype=like.dtype, device=like.device)


def flip_blocks(plane: Tensor, dim: int) -> Tensor:
    """The coefficients of the image flipped along ``dim`` (-2: rows, -1: columns), from its own."""
    blocks = _block_view(plane)
    if dim == -1:
        flipped = blocks.flip(4) * _alternating(plane)
    elif dim == -2:
        flipped = blocks.flip(2) * _alternating(plane)[:, None, None]
    else:
        raise ValueError(f"dim must be -2 (rows) or -1 (columns), got {dim}")
    return flipped.reshape(plane.shape)


def transpose_blocks(plane: Tensor) -> Tensor:
    """The coefficients of the transposed image, from its own."""
    batch, channels, height, width = plane.shape
    return _block_view(plane).permute(0, 1, 4, 5, 2, 3).reshape(batch, channels, width, height)


def orient_coefficients(plane: Tensor, orientation: Orientation) -> Tensor:
    """Apply ``orientation`` to a ``(B, C, 8R, 8C)`` coefficient plane."""
    if orientation.transpose:
        plane = transpose_blocks(plane)
    if orientation.vertical:
        plane = flip_blocks(plane, -2)
    if orientation.horizontal:
        plane = flip_blocks(plane, -1)
    return plane


def orient_pixels(pixels: Tensor, orientation: Orientation) -> Tensor:
    """Apply ``orientation`` to ``(..., H, W)`` pixels."""
    if orientation.transpose:
        pixels = pixels.transpose(-2, -1)
    dims = [d for d, flip in ((-2, orientation.vertical), (-1, orientation.horizontal)) if flip]
    return pixels.flip(dims) if dims else pixels


def inverse(orientation: Orientation) -> Orientation:
    """The orientation that undoes ``orientation``: flipping before a transpose is flipping the other axis after it."""
    transpose, vertical, horizontal = orientation
    return Orientation(transpose, horizontal, vertical) if transpose else orientation


def unorient_pixels(pixels: Tensor, orientation: Orientation) -> Tensor:
    """Undo :func:`orient_pixels`."""
    return orient_pixels(pixels, inverse(orientation))


def orient_inputs(inputs: ModelInputs, orientation: Orientation) -> ModelInputs:
    """The model inputs of the oriented image; ``inputs`` must cover whole MCUs
    (:func:`~qgac_transforms.correction.pad_to_mcu`), and the result's size is its full block grid."""
    y = orient_coefficients(inputs.y, orientation)
    chroma = None if inputs.chroma is None else orient_coefficients(inputs.chroma, orientation)
    tables, factor = inputs.tables, inputs.chroma_factor
    if orientation.transpose:
        tables, factor = tables.transpose(-2, -1), (factor[1], factor[0])
    return ModelInputs(y, tables, chroma, factor, y.shape[-2], y.shape[-1])


def orientations_for(inputs: ModelInputs) -> tuple[Orientation, ...]:
    """All eight, or the four flips where a transpose would turn 4:2:2 into 4:4:0."""
    v, h = inputs.chroma_factor
    return ORIENTATIONS if inputs.chroma is None or v == h else tuple(o for o in ORIENTATIONS if not o.transpose)


@torch.no_grad()
def correct_self_ensemble(
    model: QGAC, inputs: ModelInputs, tile: int | None = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP
) -> Tensor:
    """The mean of the corrections of every orientation of ``inputs``, turned back: ``(B, C, H, W)``."""
    whole = inputs
    if inputs.chroma is not None:
        y, chroma = pad_to_mcu(inputs.y, inputs.chroma, inputs.chroma_factor)
        whole = inputs._replace(y=y, chroma=chroma)
    orientations = orientations_for(whole)
    total = sum(
        unorient_pixels(correct_planes_tiled(model, orient_inputs(whole, o), tile, overlap), o) for o in orientations
    )
    return crop(total / len(orientations), inputs.height, inputs.width)
