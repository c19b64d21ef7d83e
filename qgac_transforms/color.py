"""JFIF colour conversion and chroma resampling, as torch kernels on ``[0, 255]`` values."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .dct import pad_to_multiple

_RGB_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168735892, -0.331264108, 0.5),
    (0.5, -0.418687589, -0.081312411),
)
_YCBCR_TO_RGB = (
    (1.0, 0.0, 1.402),
    (1.0, -0.344136286, -0.714136286),
    (1.0, 1.772, 0.0),
)


def _apply_matrix(image: Tensor, matrix: tuple[tuple[float, ...], ...], offset: Tensor) -> Tensor:
    if image.ndim < 3 or image.shape[-3] != 3:
        raise ValueError(f"expected (..., 3, H, W), got shape {tuple(image.shape)}")
    m = torch.tensor(matrix, dtype=image.dtype, device=image.device)
    return torch.einsum("ij,...jhw->...ihw", m, image) + offset.to(image)[:, None, None]


def rgb_to_ycbcr(rgb: Tensor) -> Tensor:
    """JFIF RGB -> YCbCr on ``(..., 3, H, W)`` floats in ``[0, 255]``."""
    return _apply_matrix(rgb, _RGB_TO_YCBCR, torch.tensor([0.0, 128.0, 128.0]))


def ycbcr_to_rgb(ycbcr: Tensor) -> Tensor:
    """JFIF YCbCr -> RGB on ``(..., 3, H, W)``; inverse of :func:`rgb_to_ycbcr`."""
    if ycbcr.ndim < 3 or ycbcr.shape[-3] != 3:
        raise ValueError(f"expected (..., 3, H, W), got shape {tuple(ycbcr.shape)}")
    centered = ycbcr - torch.tensor([0.0, 128.0, 128.0], dtype=ycbcr.dtype, device=ycbcr.device)[:, None, None]
    return _apply_matrix(centered, _YCBCR_TO_RGB, torch.zeros(3))


def downsample_chroma(plane: Tensor, factor: tuple[int, int]) -> Tensor:
    """Box-average ``(..., H, W)`` by ``factor = (vertical, horizontal)``, as libjpeg does.

    The plane is first edge-extended to a multiple of the factor, so the output is
    ``ceil(H / v) x ceil(W / h)``.
    """
    v, h = factor
    if (v, h) == (1, 1):
        return plane
    padded = pad_to_multiple(plane, v, h)
    lead = padded.shape[:-2]
    pooled = F.avg_pool2d(padded.reshape(-1, 1, *padded.shape[-2:]), kernel_size=(v, h))
    return pooled.reshape(*lead, *pooled.shape[-2:])


def _triangular_double(x: Tensor, dim: int) -> Tensor:
    """libjpeg's "fancy" 2x upsampling along one axis: 3/4 nearest + 1/4 next nearest."""
    n = x.shape[dim]
    prev = torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)], dim)
    nxt = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim)
    even = 0.75 * x + 0.25 * prev
    odd = 0.75 * x + 0.25 * nxt
    out = torch.stack([even, odd], dim=dim + 1 if dim >= 0 else dim)
    shape = list(x.shape)
    shape[dim] = 2 * n
    return out.reshape(shape)


#: The chroma upsampling modes of :func:`upsample_chroma`.
UPSAMPLING_MODES = ("fancy", "nearest")


def upsample_chroma(plane: Tensor, factor: tuple[int, int], mode: str = "fancy") -> Tensor:
    """Upsample ``(..., h, w)`` by ``factor = (vertical, horizontal)``.

    ``mode="nearest"`` replicates samples; ``mode="fancy"`` uses libjpeg's triangular
    filter along each axis whose factor is 2. As in libjpeg (``jdsample.c``), factors
    other than 1x2, 2x1 and 2x2, and horizontal doubling of planes at most 2 samples
    wide, fall back to nearest. Edges are replicated, so pass the plane cropped to
    its real (downsampled) size to match a decoder at the image border.
    """
    if mode not in UPSAMPLING_MODES:
        raise ValueError(f"unknown upsampling mode {mode!r}")
    v, h = factor
    if mode == "fancy" and ((v, h) not in ((1, 2), (2, 1), (2, 2)) or (h == 2 and plane.shape[-1] <= 2)):
        mode = "nearest"
    x = plane
    for dim, f in ((-2, v), (-1, h)):
        if f == 1:
            continue
        if mode == "fancy" and f == 2 and x.shape[dim] > 1:
            x = _triangular_double(x, dim)
        else:
            x = x.repeat_interleave(f, dim=dim)
    return x
