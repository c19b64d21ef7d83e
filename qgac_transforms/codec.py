"""JPEG's own pixel <-> coefficient path, in torch: what a decoder and an encoder compute.

Coefficient planes are in image layout (see :mod:`qgac_transforms.dct`) and already
dequantized; pixels are floats in ``[0, 255]`` with channels first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .color import downsample_chroma, rgb_to_ycbcr, upsample_chroma, ycbcr_to_rgb
from .dct import (
    BLOCK,
    block_grid,
    ceil_div,
    crop,
    image_dct,
    image_idct,
    pad_to_multiple,
)
from .jpeg_io import SUBSAMPLINGS, CoefficientTensors, chroma_factor_of  # noqa: F401 - SUBSAMPLINGS: re-exported
from .quantization import scaled_tables

LEVEL_SHIFT = 128.0
#: What :func:`compress` writes unless told otherwise.
DEFAULT_SUBSAMPLING = "4:2:0"


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
            rows, cols = ceil_div(height, chroma_factor[0]), ceil_div(width, chroma_factor[1])
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
    channels = image.shape[-3]
    if channels not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got {channels}")
    image = image if image.is_floating_point() else image.to(torch.float32)
    components = rgb_to_ycbcr(image) if channels == 3 else image
    return [image_dct(sample - LEVEL_SHIFT) for sample in _block_samples(components, chroma_factor, downsample_chroma)]


def _block_samples(
    components: Tensor, chroma_factor: tuple[int, int], downsample: Callable[[Tensor, tuple[int, int]], Tensor]
) -> list[Tensor]:
    """Each component of ``(..., C, H, W)`` as libjpeg hands it to the DCT: chroma downsampled,
    edges replicated out to whole blocks (the block grid a file of this size stores).

    libjpeg's edge padding (jcsample.c, jcprepct.c): the right edge is replicated at full
    resolution out to the block grid before downsampling; the bottom edge only to a
    multiple of the factor, then the last downsampled row is replicated.
    """
    height, width = components.shape[-2:]
    samples = []
    for index in range(components.shape[-3]):
        factor = chroma_factor if index > 0 else (1, 1)
        _, cols = block_grid(height, width, factor)
        sample = pad_to_multiple(components[..., index, :, :], factor[0], cols * BLOCK * factor[1])
        if index > 0:
            sample = downsample(sample, factor)
        samples.append(pad_to_multiple(sample, BLOCK, BLOCK))
    return samples


# --------------------------------------------------------------------------- libjpeg-turbo's encoder, bit for bit
#
# What Pillow's ``Image.save(..., "JPEG", quality=q)`` computes with libjpeg-turbo, in
# exact integer arithmetic: samples are integers held in float32 (every value and partial
# sum below 2**24, so exact), the DCT and quantization are float64 (every partial sum an
# integer, or an integer over a power of two, far below 2**53). No float32 matrix product
# is involved, so TF32 on a GPU cannot round anything. Coefficients stay in image layout
# throughout: no block is copied out and back.

#: jccolor.c: colour conversion in 16-bit fixed point.
_COLOR_BITS = 16
#: jfdctint.c ("islow"): 13-bit constants; the row pass keeps 2 extra bits.
_CONST_BITS, _PASS1_BITS = 13, 2


def _fix(value: float, bits: int) -> int:
    """libjpeg's ``FIX(x)``: ``x`` in fixed point with ``bits`` fraction bits, rounded."""
    return int(value * (1 << bits) + 0.5)


def _rgb_to_ycbcr_exact(rgb: Tensor) -> Tensor:
    """jccolor.c ``rgb_ycc_convert`` of uint8 ``(B, 3, H, W)`` to float32 integers in 0..255.

    Every sum stays below 2**24 in magnitude (the largest, Cb's and Cr's positive terms
    with the offset, is 2**24 - 1), so float32 holds it exactly. The uint8 channels are
    read as they are (no float copy of the image).
    """
    r, g, b = (rgb[:, i] for i in range(3))
    half, offset = 1 << (_COLOR_BITS - 1), 128 << _COLOR_BITS
    fix = lambda x: _fix(x, _COLOR_BITS)  # noqa: E731
    # Cb and Cr round with ONE_HALF - 1: libjpeg's table shares that term with the offset
    ycc = torch.empty(rgb.shape, dtype=torch.float32, device=rgb.device)
    torch.mul(r, float(fix(0.29900)), out=ycc[:, 0]).add_(g, alpha=fix(0.58700)).add_(b, alpha=fix(0.11400))
    torch.mul(b, float(fix(0.5)), out=ycc[:, 1]).sub_(r, alpha=fix(0.16874)).sub_(g, alpha=fix(0.33126))
    torch.mul(r, float(fix(0.5)), out=ycc[:, 2]).sub_(g, alpha=fix(0.41869)).sub_(b, alpha=fix(0.08131))
    offsets = torch.tensor([half, offset + half - 1, offset + half - 1], dtype=ycc.dtype, device=rgb.device)
    return ycc.add_(offsets[:, None, None]).mul_(2.0**-_COLOR_BITS).floor_()


def _downsample_exact(plane: Tensor, factor: tuple[int, int]) -> Tensor:
    """jcsample.c on float32 integers ``(B, H, W)`` whose sides are multiples of ``factor``.

    2x2 (``h2v2_downsample``) and 1x2 (``h2v1_downsample``) average with a bias that
    alternates along each row (1, 2, 1, ... and 0, 1, 0, ...) so that rounding does not
    drift; other factors (``int_downsample``: 4:4:0, 4:1:1, 4:1:0) round half up. The
    count is 2, 4 or 8, so dividing by it is exact.
    """
    v, h = factor
    if factor == (1, 1):
        return plane
    first, second, *rest = (plane[:, i::v, j::h] for i in range(v) for j in range(h))
    sums = first + second
    for part in rest:
        sums.add_(part)
    if factor in ((2, 2), (1, 2)):
        column = torch.arange(sums.shape[-1], device=plane.device) % 2
        bias = (column + (1 if factor == (2, 2) else 0)).to(plane.dtype)
    else:
        bias = torch.tensor(v * h // 2, dtype=plane.dtype, device=plane.device)
    return sums.add_(bias).mul_(1 / (v * h)).floor_()


def _islow_butterfly(d: Sequence[int]) -> list[int]:
    """jfdctint.c's butterfly over one row or column of 8 integers, before descaling.

    Every output is an integer linear combination of the inputs; :func:`_islow_pass`
    turns that into a matrix.
    """
    fix = lambda x: _fix(x, _CONST_BITS)  # noqa: E731
    tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
    tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
    tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
    tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
    # even part
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    z1 = (tmp12 + tmp13) * fix(0.541196100)
    out = [0] * 8
    out[0], out[4] = tmp10 + tmp11, tmp10 - tmp11
    out[2] = z1 + tmp13 * fix(0.765366865)
    out[6] = z1 - tmp12 * fix(1.847759065)
    # odd part
    z1, z2, z3, z4 = tmp4 + tmp7, tmp5 + tmp6, tmp4 + tmp6, tmp5 + tmp7
    z5 = (z3 + z4) * fix(1.175875602)
    tmp4, tmp5 = tmp4 * fix(0.298631336), tmp5 * fix(2.053119869)
    tmp6, tmp7 = tmp6 * fix(3.072711026), tmp7 * fix(1.501321110)
    z1, z2 = z1 * -fix(0.899976223), z2 * -fix(2.562915447)
    z3, z4 = z3 * -fix(1.961570560) + z5, z4 * -fix(0.390180644) + z5
    out[7], out[5] = tmp4 + z1 + z3, tmp5 + z2 + z4
    out[3], out[1] = tmp6 + z2 + z3, tmp7 + z1 + z4
    return out


@functools.cache
def _islow_pass(first: bool) -> tuple[Tensor, Tensor]:
    """One pass of the islow DCT as ``(matrix (8, 8), bias (8,))`` in float64: output ``k`` is
    ``floor(input @ matrix[:, k] + bias[k])``, libjpeg's ``DESCALE`` folded into both.

    The row pass keeps ``PASS1_BITS`` more precision (outputs 0 and 4 are shifted left,
    the rest descaled by ``CONST_BITS - PASS1_BITS``); the column pass removes them.
    ``DESCALE(x, n) = (x + 2**(n-1)) >> n``, and scaling by a power of two is exact.
    """
    columns = [_islow_butterfly([int(i == n) for i in range(BLOCK)]) for n in range(BLOCK)]
    matrix = torch.tensor(columns, dtype=torch.float64)  # [input n, output k]
    even = torch.tensor([k in (0, 4) for k in range(BLOCK)])
    if first:
        shifts = torch.where(even, -_PASS1_BITS, _CONST_BITS - _PASS1_BITS).to(torch.float64)
    else:
        shifts = torch.where(even, _PASS1_BITS, _CONST_BITS + _PASS1_BITS).to(torch.float64)
    scale = torch.exp2(-shifts)
    return matrix * scale, (shifts > 0).to(torch.float64) / 2


@functools.cache
def _islow_operands(device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The two passes on ``device``, shaped for :func:`_encode_plane`: the row pass's bias also
    takes the level shift (exact: integers times powers of two)."""
    (rows, row_bias), (columns, column_bias) = _islow_pass(True), _islow_pass(False)
    row_bias = row_bias - LEVEL_SHIFT * rows.sum(0)
    return tuple(t.to(device) for t in (rows, row_bias, columns.T.contiguous(), column_bias[:, None]))


@functools.cache
def _quantizers(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """jcdctmgr.c's divisors for every quality 1..100, luma then chroma, ``(100, 2, 8, 8)``
    float64: the tables, and the ``scale`` and ``offset`` with which
    ``quantize(x) = sign(x) * floor(|x| * scale + offset)``.

    ``compute_reciprocal`` (libjpeg-turbo's SIMD build: 16-bit reciprocals) gives
    ``(|x| + correction) * reciprocal >> shift``; ``scale = reciprocal / 2**shift`` and
    ``offset = correction * scale`` are exact in float64, and so is the sum for 8x DCT
    coefficients (below 2**15), so the floor is the shift.
    """
    quality = torch.arange(1, 101)
    tables = torch.stack([scaled_tables(quality), scaled_tables(quality, chroma=True)], dim=1)
    divisor = tables.to(torch.int64) * 8
    shift = 16 + torch.floor(torch.log2(divisor.to(torch.float64))).to(torch.int64)
    power = torch.ones_like(divisor) << shift
    reciprocal, remainder = power // divisor, power % divisor
    correction = divisor // 2
    exact = remainder == 0  # a power of two: the reciprocal is halved to fit 16 bits
    below_half = ~exact & (remainder <= correction)
    reciprocal = torch.where(exact, reciprocal >> 1, torch.where(below_half, reciprocal, reciprocal + 1))
    correction = torch.where(below_half, correction + 1, correction)
    shift = torch.where(exact, shift - 1, shift)
    scale = reciprocal.to(torch.float64) * torch.exp2(-shift.to(torch.float64))
    return tuple(t.to(device, torch.float64) for t in (tables, scale, correction * scale))


def _encode_plane(samples: Tensor, divisors: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """One component through jfdctint.c ``jpeg_fdct_islow`` and jcdctmgr.c ``quantize``,
    dequantized again: float32 coefficients ``(B, H, W)`` in image layout.

    ``samples``: float32 integers 0..255, ``(B, H, W)`` with sides multiples of 8 (the
    level shift is done here); ``divisors``: ``(B, 8, 8)`` tables, scales and offsets of
    :func:`_quantizers`. The islow DCT's row pass works on rows of 8 samples where they
    lie; its column pass is one small matrix product per row of blocks; so no block is
    copied out. Two float64 buffers are reused in turn, since fresh large ones cost page
    faults on every batch.
    """
    rows, row_bias, columns, column_bias = _islow_operands(samples.device)
    batch, height, width = samples.shape
    first = samples.to(torch.float64, memory_format=torch.contiguous_format, copy=True)  # overwritten below
    second = torch.addmm(row_bias, first.view(-1, BLOCK), rows).floor_()
    grid = (batch * height // BLOCK, BLOCK, width)
    coefficients = torch.baddbmm(column_bias, columns.expand(grid[0], BLOCK, BLOCK), second.view(grid),
                                 out=first.view(grid)).floor_()  # 8x the DCT
    # each divisor repeated along whole rows of blocks, so that only rows of blocks broadcast
    table, scale, offset = (t.repeat(1, 1, width // BLOCK)[:, None] for t in divisors)
    x = coefficients.view(batch, height // BLOCK, BLOCK, width)
    levels = torch.abs(x, out=second.view(x.shape))
    levels = torch.addcmul(offset, levels, scale, out=levels).floor_().copysign_(x)
    # + 0.0 turns the -0.0 of small negative levels into the 0 a decoder reads
    dequantized = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    return torch.addcmul(levels.new_zeros(()), levels, table, out=dequantized).view(samples.shape)


def compress(image: Tensor, quality: int | Tensor, subsampling: str = DEFAULT_SUBSAMPLING) -> CoefficientTensors:
    """JPEG-compress uint8 pixels in torch, on their device: the coefficients Pillow would write.

    ``image``: ``(C, H, W)`` or ``(B, C, H, W)`` uint8, C = 1 (grayscale) or 3 (RGB);
    ``quality``: 1..100, an int or one per image ``(B,)``; ``subsampling``: ``"4:4:4"``,
    ``"4:2:2"``, ``"4:2:0"`` (what Pillow writes), or ``"4:4:0"``, ``"4:1:1"``, ``"4:1:0"``
    (libjpeg's sampling factors 2x1, 1x4 and 2x4; Pillow cannot write 4:4:0 or 4:1:0, and
    its ``"4:1:1"`` writes 4:2:0, so the tests compare these three with libjpeg-turbo
    through jpeglib instead).

    Returns :class:`~qgac_transforms.jpeg_io.CoefficientTensors` equal, bit for bit, to
    ``read_coefficients(<the image saved by Pillow with quality=q>).to_tensors()``:
    dequantized planes ``([B,] 1, h_i, w_i)`` and tables ``([B,] C, 8, 8)``. The steps
    follow libjpeg-turbo: ``jccolor.c`` (fixed-point RGB -> YCbCr), ``jcprepct.c`` and
    ``jcsample.c`` (edge replication to the block grid, chroma averaging with
    alternating bias), ``jfdctint.c`` (integer "islow" DCT), ``jcdctmgr.c`` (quantization
    by reciprocal, as its SIMD build does) and ``jcparam.c`` (``jpeg_quality_scaling``,
    tables clamped to 1..255). Not differentiable: a data source, e.g. for training.
    """
    if image.dtype != torch.uint8:
        raise TypeError(f"compress takes uint8 pixels, got {image.dtype}")
    batched = image.ndim == 4
    pixels = image if batched else image[None]
    if pixels.ndim != 4 or pixels.shape[1] not in (1, 3) or 0 in pixels.shape[-2:]:
        raise ValueError(f"expected (C, H, W) or (B, C, H, W) with C = 1 or 3 and H, W >= 1, got {tuple(image.shape)}")
    batch, channels = pixels.shape[:2]
    quality = torch.as_tensor(quality, device=pixels.device).reshape(-1)
    if quality.numel() not in (1, batch):
        raise ValueError(f"expected one JPEG quality, or one per image ({batch}), got {quality.numel()}")
    quality = quality.expand(batch)
    if quality.is_floating_point() or quality.dtype == torch.bool or bool(((quality < 1) | (quality > 100)).any()):
        raise ValueError(f"JPEG quality must be integers in 1..100, got {quality.tolist()}")
    factor = chroma_factor_of(subsampling)
    samples = _rgb_to_ycbcr_exact(pixels) if channels == 3 else pixels.to(torch.float32)
    row = quality.to(torch.int64) - 1
    all_tables, scales, offsets = _quantizers(pixels.device)
    kinds = [min(component, 1) for component in range(channels)]  # luma, chroma, chroma
    planes = []
    for sample, kind in zip(_block_samples(samples, factor, _downsample_exact), kinds):
        plane = _encode_plane(sample, (all_tables[row, kind], scales[row, kind], offsets[row, kind]))
        planes.append(plane[:, None] if batched else plane)
    tables = all_tables[row][:, kinds].to(torch.float32)
    return CoefficientTensors(planes, tables if batched else tables[0])
