"""Where coefficients become a corrected image: pad to whole MCUs, run QGAC, crop, decode."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torchvision.transforms.v2.functional import pil_to_tensor

from .codec import coefficients_to_pixels
from .dct import BLOCK, crop, pad_blocks
from .jpeg_io import JPEGCoefficients, libjpeg_decode
from .model import QGAC


def pixel_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """The dtype pixels are decoded, blended and averaged in: the model's, but float32 at least
    (a bfloat16 inverse DCT alone moves pixels by up to 2 levels)."""
    return torch.promote_types(model_dtype, torch.float32)


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@torch.no_grad()
def correct_planes(
    model: QGAC,
    y: Tensor,
    tables: Tensor,
    chroma: Tensor | None,
    chroma_factor: tuple[int, int],
    height: int,
    width: int,
) -> Tensor:
    """Correct a batch of dequantized coefficient planes and decode them to pixels.

    ``y``: ``(B, 1, 8*rows, 8*cols)``; ``chroma``: ``(B, 2, ...)`` with the file's own
    block grid (it need not be exactly ``1 / chroma_factor`` of Y's: both are padded
    with edge blocks to a whole MCU first). Returns ``(B, C, height, width)`` floats
    in ``[0, 255]``, in :func:`pixel_dtype`.
    """
    if chroma is None:
        corrected = model(y, tables)
    else:
        y_padded, chroma_padded = pad_to_mcu(y, chroma, chroma_factor)
        corrected = crop(model(y_padded, tables, chroma_padded, chroma_factor), y.shape[-2], y.shape[-1])
    corrected = corrected.to(pixel_dtype(corrected.dtype))
    return coefficients_to_pixels(list(corrected.unbind(1)), height, width)


def pad_to_mcu(y: Tensor, chroma: Tensor, chroma_factor: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Y and chroma planes padded with edge blocks to one grid of whole MCUs."""
    v, h = chroma_factor
    y_rows, y_cols = y.shape[-2] // BLOCK, y.shape[-1] // BLOCK
    c_rows, c_cols = chroma.shape[-2] // BLOCK, chroma.shape[-1] // BLOCK
    rows, cols = _ceil_to(max(y_rows, c_rows * v), v), _ceil_to(max(y_cols, c_cols * h), h)
    return pad_blocks(y, rows, cols), pad_blocks(chroma, rows // v, cols // h)


class ModelInputs(NamedTuple):
    """What :func:`correct_planes` takes after the model: one batch of dequantized planes.

    ``y``: ``(B, 1, 8*rows, 8*cols)``; ``tables``: ``(B, 3, 8, 8)`` raw steps (a
    grayscale image repeats its table); ``chroma``: ``(B, 2, ...)`` or ``None``.
    """

    y: Tensor
    tables: Tensor
    chroma: Tensor | None
    chroma_factor: tuple[int, int]
    height: int
    width: int

    def to(self, dtype: torch.dtype) -> ModelInputs:
        """The planes and tables in ``dtype``, the model's."""
        chroma = None if self.chroma is None else self.chroma.to(dtype)
        return self._replace(y=self.y.to(dtype), tables=self.tables.to(dtype), chroma=chroma)


def model_inputs(
    coefficients: JPEGCoefficients, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> ModelInputs:
    """A batch of one JPEG's planes and tables, as :func:`correct_planes` takes them."""
    planes, tables = coefficients.to_tensors(dtype=dtype, device=device)
    chroma = None if coefficients.is_gray else torch.cat(planes[1:], dim=0)[None]
    tables = tables[None] if not coefficients.is_gray else tables.expand(3, -1, -1)[None]
    return ModelInputs(
        planes[0][None], tables, chroma, coefficients.chroma_factor, coefficients.height, coefficients.width
    )


def correct(
    model: QGAC,
    coefficients: JPEGCoefficients,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Artifact-corrected pixels ``(C, H, W)`` in ``[0, 255]`` (stored orientation) of one JPEG."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    return correct_planes(model, *model_inputs(coefficients, device, dtype))[0]


def decode(coefficients: JPEGCoefficients, dtype: torch.dtype = torch.float32) -> Tensor:
    """The uncorrected pixels ``(C, H, W)`` of a JPEG as libjpeg decodes them (what Pillow
    shows), from its coefficients. Coefficients that no baseline JPEG can hold (steps
    above 255, values out of range) get this library's float decode instead, within 2
    levels of libjpeg's."""
    try:
        return pil_to_tensor(libjpeg_decode(coefficients)).to(dtype)
    except (ValueError, OSError):
        planes, _ = coefficients.to_tensors(dtype=dtype)
        return coefficients_to_pixels(
            [p[0] for p in planes], coefficients.height, coefficients.width, coefficients.chroma_factor
        )
