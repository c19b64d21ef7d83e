"""Quantization tables: libjpeg's quality scaling, (de)quantization and quality estimation."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from .dct import BLOCK, blockify, deblockify

#: The example tables of the JPEG standard (Annex K), natural order, that libjpeg scales.
STANDARD_LUMA_TABLE: tuple[int, ...] = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
STANDARD_CHROMA_TABLE: tuple[int, ...] = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip


def check_quality(quality: int, name: str = "JPEG quality") -> int:
    """``quality`` as an ``int`` if it is a libjpeg quality (an integer in 1..100), else ``ValueError``
    naming it: ``20.7``, ``"20"`` or ``True`` are not qualities, and must not be read as one."""
    if isinstance(quality, bool) or not isinstance(quality, numbers.Integral) or not 1 <= quality <= 100:
        raise ValueError(f"{name} must be an integer in 1..100, got {quality!r}")
    return int(quality)


def as_tables(tables: Tensor | Sequence, channels: int) -> Tensor:
    """Validate user tables -> ``(channels, 8, 8)`` int32.

    Accepted (natural order, steps >= 1): one table ``(8, 8)`` or ``(64,)`` for every
    component, ``(2, 8, 8)`` for luma and chroma, or ``(3, 8, 8)`` for Y, Cb, Cr; a
    grayscale image uses the first.
    """
    t = torch.as_tensor(tables)
    if t.is_floating_point() and not bool((t == t.round()).all()):
        raise ValueError("quantization tables must hold whole numbers")
    t = t.to(torch.int32)
    if t.shape in ((BLOCK * BLOCK,), (BLOCK, BLOCK)):
        t = t.reshape(1, BLOCK, BLOCK)
    if t.ndim != 3 or t.shape[1:] != (BLOCK, BLOCK) or t.shape[0] not in (1, 2, 3):
        raise ValueError(f"expected quantization tables of shape (8, 8), (2, 8, 8) or (3, 8, 8), got {tuple(t.shape)}")
    if int(t.min()) < 1:
        raise ValueError("quantization steps must be at least 1")
    if channels == 1:
        return t[:1].contiguous()
    return (t[[0, 1, 1]] if t.shape[0] == 2 else t.expand(3, -1, -1)).contiguous()


def _scale(quality: Tensor) -> Tensor:
    """``jpeg_quality_scaling`` on checked qualities: quality 1..100 -> percentage scale factor."""
    q = quality.to(torch.int64)
    return torch.where(q < 50, 5000 // q, 200 - 2 * q)


def quality_scale(quality: int) -> int:
    """libjpeg's ``jpeg_quality_scaling``: quality 1..100 -> percentage scale factor."""
    return int(_scale(torch.tensor(check_quality(quality))))


def scaled_tables(quality: Tensor, chroma: bool = False, baseline: bool = True) -> Tensor:
    """libjpeg's ``jpeg_set_quality`` tables for a tensor of qualities (already checked to be
    1..100), on its device: ``(..., 8, 8)`` int32, clamped to 1..255 if baseline."""
    scale = _scale(quality)[..., None]
    base = torch.tensor(STANDARD_CHROMA_TABLE if chroma else STANDARD_LUMA_TABLE, device=scale.device)
    table = (base * scale + 50) // 100
    table = table.clamp(1, 255 if baseline else 32767)
    return table.reshape(*scale.shape[:-1], BLOCK, BLOCK).to(torch.int32)


def quality_to_table(quality: int, chroma: bool = False, baseline: bool = True) -> Tensor:
    """The (8, 8) int32 table libjpeg writes for ``quality`` (clamped to 1..255 if baseline)."""
    return scaled_tables(torch.tensor(check_quality(quality)), chroma, baseline)


def quality_tables(quality: int | Tensor, channels: int = 3) -> Tensor:
    """libjpeg's tables for ``quality``: ``(channels, 8, 8)`` int32 (luma, then chroma twice);
    for a ``(B,)`` tensor of checked qualities, ``(B, channels, 8, 8)``."""
    q = quality if isinstance(quality, Tensor) else torch.tensor(check_quality(quality))
    luma = scaled_tables(q)
    if channels == 1:
        return luma.unsqueeze(-3)
    chroma = scaled_tables(q, chroma=True)
    return torch.stack([luma, chroma, chroma], dim=-3)


def _libjpeg_tables(quality: int, chroma: bool) -> tuple[Tensor, Tensor]:
    """libjpeg's table for ``quality``, baseline (steps clamped to 255) and not (16-bit steps: ``force_baseline=FALSE``)."""
    return quality_to_table(quality, chroma), quality_to_table(quality, chroma, baseline=False)


def all_quality_tables(chroma: bool = False, baseline: bool = True) -> Tensor:
    """``(100, 8, 8)``: libjpeg's table of every quality, 1 to 100: the candidates that
    :func:`estimate_quality` (tables read from a file) and the blind fit of
    :func:`~qgac_transforms.grid.fit_quality` (steps read from pixels) choose among."""
    return scaled_tables(torch.arange(1, 101), chroma, baseline)


def estimate_quality(table: Tensor, chroma: bool = False) -> int:
    """The libjpeg quality whose table (baseline or not) is closest (mean absolute difference) to ``table``."""
    t = torch.as_tensor(table).reshape(1, BLOCK * BLOCK).to(torch.float64)
    errors = torch.stack([
        (all_quality_tables(chroma, baseline).flatten(1).to(torch.float64) - t).abs().mean(1)
        for baseline in (True, False)
    ]).amin(0)
    return 1 + int(errors.argmin())


def is_libjpeg_table(table: Tensor, quality: int, chroma: bool = False) -> bool:
    """Whether ``table`` is exactly libjpeg's for ``quality``, baseline or not."""
    t = torch.as_tensor(table).reshape(BLOCK, BLOCK).to(torch.int32)
    return any(torch.equal(candidate, t) for candidate in _libjpeg_tables(quality, chroma))


def _tile_table(table: Tensor, plane: Tensor) -> Tensor:
    """Broadcast ``(..., 8, 8)`` tables over the blocks of a ``(..., H, W)`` plane."""
    t = table.to(plane.dtype if plane.is_floating_point() else torch.float32)
    return t[..., None, None, :, :]


def quantize(coefficients: Tensor, table: Tensor) -> Tensor:
    """Round ``coefficients`` (image layout) to multiples of ``table``; returns the integer levels."""
    blocks = blockify(coefficients)
    return deblockify(torch.round(blocks / _tile_table(table, blocks)))


def dequantize(levels: Tensor, table: Tensor) -> Tensor:
    """Multiply quantized levels (image layout) by their table: the values the decoder uses."""
    blocks = blockify(levels)
    blocks = blocks.to(torch.float32) if not blocks.is_floating_point() else blocks
    return deblockify(blocks * _tile_table(table, blocks))
