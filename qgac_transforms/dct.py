"""The 8x8 block DCT of JPEG and the layouts the network works in.

Every function is a pure, batched, differentiable torch kernel that runs on any
device in float32 or float64. Coefficient planes are kept in *image layout*: a
plane of shape ``(..., H, W)`` whose 8x8 tiles each hold one block in natural
(row-major) frequency order, ``[vertical, horizontal]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK = 8

#: Zigzag scan: ``ZIGZAG[k]`` is the natural (row-major) index of the k-th coefficient.
ZIGZAG: tuple[int, ...] = tuple(
    r * BLOCK + c
    for s in range(2 * BLOCK - 1)
    for r, c in (
        [(i, s - i) for i in range(BLOCK) if 0 <= s - i < BLOCK]
        if s % 2
        else [(s - i, i) for i in range(BLOCK) if 0 <= s - i < BLOCK]
    )
)


#: The orthonormal DCT-II matrix as plain floats. Kept as numbers, not a cached tensor:
#: a tensor cached during tracing (torch.export, torch.compile) would be a fake tensor.
_DCT_VALUES: tuple[tuple[float, ...], ...] = tuple(
    tuple(math.sqrt((1 if k == 0 else 2) / BLOCK) * math.cos((2 * n + 1) * k * math.pi / (2 * BLOCK)) for n in range(BLOCK))
    for k in range(BLOCK)
)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def block_grid(height: int, width: int, factor: tuple[int, int]) -> tuple[int, int]:
    """Blocks per axis of a component subsampled by ``factor`` in a ``height x width`` image
    (libjpeg's ``height_in_blocks``, ``width_in_blocks``)."""
    return ceil_div(ceil_div(height, factor[0]), BLOCK), ceil_div(ceil_div(width, factor[1]), BLOCK)


def dct_matrix(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """The orthonormal 8-point DCT-II matrix; JPEG's 2-D DCT is ``D @ block @ D.T``."""
    return torch.tensor(_DCT_VALUES, dtype=torch.float64).to(dtype=dtype, device=device)


def _matrix_for(x: Tensor) -> Tensor:
    dtype = x.dtype if x.is_floating_point() else torch.float32
    return dct_matrix(dtype, x.device)


def _transform(blocks: Tensor, inverse: bool) -> Tensor:
    """``D @ x @ D.T`` (or its inverse) in the blocks' own precision, never lowered by autocast:
    under mixed-precision training a bf16 DCT would blur the coefficients it maps."""
    device_type = blocks.device.type
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            return _transform(blocks.float() if blocks.dtype in (torch.float16, torch.bfloat16) else blocks, inverse)
    d = _matrix_for(blocks)
    return d.T @ blocks.to(d.dtype) @ d if inverse else d @ blocks.to(d.dtype) @ d.T


def block_dct(blocks: Tensor) -> Tensor:
    """Forward DCT of ``(..., 8, 8)`` pixel blocks (level shift not included)."""
    return _transform(blocks, inverse=False)


def block_idct(blocks: Tensor) -> Tensor:
    """Inverse of :func:`block_dct`."""
    return _transform(blocks, inverse=True)


def _check_multiple_of_block(x: Tensor) -> None:
    if x.ndim < 2 or x.shape[-1] % BLOCK or x.shape[-2] % BLOCK:
        raise ValueError(f"expected (..., H, W) with H and W multiples of 8, got shape {tuple(x.shape)}")


def blockify(image: Tensor) -> Tensor:
    """``(..., H, W) -> (..., H/8, W/8, 8, 8)``; H and W must be multiples of 8."""
    _check_multiple_of_block(image)
    *lead, h, w = image.shape
    x = image.reshape(*lead, h // BLOCK, BLOCK, w // BLOCK, BLOCK)
    return x.transpose(-3, -2)


def deblockify(blocks: Tensor) -> Tensor:
    """``(..., h, w, 8, 8) -> (..., 8h, 8w)``; inverse of :func:`blockify`."""
    *lead, h, w, _, _ = blocks.shape
    return blocks.transpose(-3, -2).reshape(*lead, h * BLOCK, w * BLOCK)


def image_dct(image: Tensor) -> Tensor:
    """Blockwise forward DCT of a plane in image layout (no level shift)."""
    return deblockify(block_dct(blockify(image)))


def image_idct(coefficients: Tensor) -> Tensor:
    """Blockwise inverse DCT of a coefficient plane in image layout."""
    return deblockify(block_idct(blockify(coefficients)))


def blocks_to_channels(x: Tensor) -> Tensor:
    """Frequency rearrangement (paper Fig. 4): ``(B, C, H, W) -> (B, 64*C, H/8, W/8)``.

    Channels are frequency-major (channel ``f * C + c``), so a convolution with
    ``groups=64`` sees all ``C`` channels of one frequency in one group.
    """
    _check_multiple_of_block(x)
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // BLOCK, BLOCK, w // BLOCK, BLOCK)
    return x.permute(0, 3, 5, 1, 2, 4).reshape(b, BLOCK * BLOCK * c, h // BLOCK, w // BLOCK)


def channels_to_blocks(x: Tensor) -> Tensor:
    """Inverse of :func:`blocks_to_channels`: ``(B, 64*C, h, w) -> (B, C, 8h, 8w)``."""
    b, fc, h, w = x.shape
    if fc % (BLOCK * BLOCK):
        raise ValueError(f"channel count {fc} is not a multiple of 64")
    c = fc // (BLOCK * BLOCK)
    x = x.reshape(b, BLOCK, BLOCK, c, h, w)
    return x.permute(0, 3, 4, 1, 5, 2).reshape(b, c, h * BLOCK, w * BLOCK)


def zigzag(blocks: Tensor) -> Tensor:
    """``(..., 8, 8)`` natural order -> ``(..., 64)`` zigzag order."""
    flat = blocks.reshape(*blocks.shape[:-2], BLOCK * BLOCK)
    return flat[..., list(ZIGZAG)]


def unzigzag(vectors: Tensor) -> Tensor:
    """``(..., 64)`` zigzag order -> ``(..., 8, 8)`` natural order."""
    inverse = [0] * (BLOCK * BLOCK)
    for k, natural in enumerate(ZIGZAG):
        inverse[natural] = k
    return vectors[..., inverse].reshape(*vectors.shape[:-1], BLOCK, BLOCK)


def pad_to_multiple(x: Tensor, multiple_h: int, multiple_w: int, mode: str = "replicate") -> Tensor:
    """Pad the last two dims at the bottom/right up to multiples (edge replication by default)."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple_h, -w % multiple_w
    if not ph and not pw:
        return x
    if mode == "replicate" and (h == 0 or w == 0):
        raise ValueError("cannot replicate-pad an empty plane")
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, h, w)
    padded = F.pad(flat, (0, pw, 0, ph), mode=mode)
    return padded.reshape(*lead, h + ph, w + pw)


def pad_blocks(coefficients: Tensor, block_rows: int, block_cols: int) -> Tensor:
    """Pad a coefficient plane (image layout) with copies of its edge blocks to a grid of
    ``block_rows x block_cols`` blocks; the block structure stays intact."""
    h, w = coefficients.shape[-2] // BLOCK, coefficients.shape[-1] // BLOCK
    if block_rows < h or block_cols < w:
        raise ValueError(f"cannot pad a {h}x{w} block grid down to {block_rows}x{block_cols}")
    blocks = blockify(coefficients)
    rows = torch.arange(block_rows, device=coefficients.device).clamp(max=h - 1)
    cols = torch.arange(block_cols, device=coefficients.device).clamp(max=w - 1)
    blocks = blocks.index_select(-4, rows).index_select(-3, cols)
    return deblockify(blocks)


def crop(x: Tensor, height: int, width: int) -> Tensor:
    """Crop the last two dims to ``height x width`` (top-left anchored)."""
    return x[..., :height, :width]
