"""JPEG's own pixel <-> coefficient path, in torch: what a decoder and an encoder compute.

Coefficient planes are in image layout (see :mod:`qgac_transforms.dct`) and already
dequantized; pixels are floats in ``[0, 255]`` with channels first.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .color import downsample_chroma, rgb_to_ycbcr, upsample_chroma, ycbcr_to_rgb
from .dct import BLOCK, crop, image_dct, image_idct, pad_to_multiple

LEVEL_SHIFT = 128.0

#: Chroma subsampling names -> how many luma samples one chroma sample covers, (vertical, horizontal).
SUBSAMPLINGS: dict[str, tuple[int, int]] = {
    "4:4:4": (1, 1),
    "4:2:2": (1, 2),
    "4:2:0": (2, 2),
    "4:4:0": (2, 1),
    "4:1:1": (1, 4),
}
DEFAULT_SUBSAMPLING = "4:2:0"


def chroma_factor_of(subsampling: str | tuple[int, int]) -> tuple[int, int]:
    """``"4:2:0"`` (or a ``(vertical, horizontal)`` pair) -> ``(vertical, horizontal)`` factor."""
    if isinstance(subsampling, str):
        if subsampling not in SUBSAMPLINGS:
            raise ValueError(f"unknown chroma subsampling {subsampling!r}; choose one of {', '.join(SUBSAMPLINGS)}")
        return SUBSAMPLINGS[subsampling]
    factor = tuple(int(f) for f in subsampling)
    if factor not in SUBSAMPLINGS.values():
        raise ValueError(f"unsupported chroma subsampling factor {subsampling}")
    return factor  # type: ignore[return-value]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def block_grid(height: int, width: int, factor: tuple[int, int]) -> tuple[int, int]:
    """Blocks per axis of a component subsampled by ``factor`` in a ``height x width`` image."""
    return _ceil_div(_ceil_div(height, factor[0]), BLOCK), _ceil_div(_ceil_div(width, factor[1]), BLOCK)


def coefficients_to_pixels(
    planes: Sequence[Tensor],
    height: int,
    width: int,
    chroma_factor: tuple[int, int] = (1, 1),
    upsampling: str = "fancy",
    clamp: bool = True,
) -> Tensor:
    """Decode dequantized coefficient planes ``(..., h_i, w_i)`` to ``(..., C, height, width)``.

    One plane decodes to grayscale, three (Y, Cb, Cr) to RGB; chroma planes are
    upsampled by ``chroma_factor`` (libjpeg's "fancy" filter by default).
    Differentiable; ``clamp`` rounds nothing but clips to ``[0, 255]`` like a decoder.
    """
    samples = []
    for index, plane in enumerate(planes):
        pixels = image_idct(plane) + LEVEL_SHIFT
        if clamp:
            pixels = pixels.clamp(0, 255)
        if index > 0:
            # libjpeg upsamples only the real samples (replicating the last one at the
            # edge), not the padding of the last block row/column
            rows, cols = _ceil_div(height, chroma_factor[0]), _ceil_div(width, chroma_factor[1])
            pixels = upsample_chroma(crop(pixels, rows, cols), chroma_factor, upsampling)
        if pixels.shape[-2] < height or pixels.shape[-1] < width:
            raise ValueError(
                f"plane {index} covers {tuple(pixels.shape[-2:])} pixels, less than the image {height}x{width}"
            )
        samples.append(crop(pixels, height, width))
    image = torch.stack(samples, dim=-3)
    if len(planes) == 3:
        image = ycbcr_to_rgb(image)
        if clamp:
            image = image.clamp(0, 255)
    elif len(planes) != 1:
        raise ValueError(f"expected 1 or 3 planes, got {len(planes)}")
    return image


def pixels_to_coefficients(image: Tensor, chroma_factor: tuple[int, int] = (2, 2)) -> list[Tensor]:
    """Encode ``(..., C, H, W)`` pixels (C = 1 or 3) to unquantized coefficient planes.

    Each plane has exactly the block grid a JPEG file of this size and subsampling
    stores (luma ``ceil(H/8) x ceil(W/8)`` blocks); edges are replicated as libjpeg does.
    """
    channels, height, width = image.shape[-3:]
    if channels not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got {channels}")
    image = image if image.is_floating_point() else image.to(torch.float32)
    components = rgb_to_ycbcr(image) if channels == 3 else image
    planes = []
    for index in range(channels):
        factor = chroma_factor if index > 0 else (1, 1)
        rows, cols = block_grid(height, width, factor)
        # libjpeg's edge padding (jcsample.c, jcprepct.c): the right edge is replicated at
        # full resolution out to the block grid before downsampling; the bottom edge only
        # to a multiple of the factor, then the last downsampled row is replicated
        sample = pad_to_multiple(components[..., index, :, :], factor[0], cols * BLOCK * factor[1])
        if index > 0:
            sample = downsample_chroma(sample, factor)
        sample = pad_to_multiple(sample, BLOCK, BLOCK)
        planes.append(image_dct(sample - LEVEL_SHIFT))
    return planes
