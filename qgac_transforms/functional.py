"""Functional API: QGAC correction of JPEG coefficients or of decoded pixels, as plain functions.

Every ``correct_*`` kernel takes the model as its first argument and works on torch
tensors with pixel values in ``[0, 255]``; :class:`~qgac_transforms.transforms.JPEGArtifactCorrection`
and the Pillow hook are thin wrappers around them.

Strength controls, shared by all entry points:

* ``quality_override``: the network is told the image was compressed at this libjpeg
  quality (its tables replace the file's as the network's side input; the
  coefficients themselves are untouched). Lower values correct harder, higher
  values more gently.
* ``blend``: ``alpha`` in ``[0, 1]``; the output is ``alpha * corrected + (1 - alpha) *
  input``, where the input is the plain decode of the JPEG (or the given pixels).

Quality over speed: ``self_ensemble=True`` corrects the image in its eight
orientations (flips and transposes, exact in the DCT domain) and averages them, for
eight times the work (:mod:`~qgac_transforms.self_ensemble`).

Decoded pixels are turned back into coefficients by JPEG's own forward path (colour
conversion, chroma subsampling, DCT, quantization with the tables they were saved
with), on the JPEG's own block grid, which :mod:`~qgac_transforms.grid` finds in the
pixels: a crop at any offset, a flip or a quarter turn of a decode is corrected on its
grid and returned in its own geometry. Without a ``quality`` or ``tables``, the tables
are estimated from the pixels too (blind mode, :func:`estimate_quality_from_pixels`):
libjpeg's scaled standard tables (what Pillow, OpenCV, libjpeg and most software
write), and the chroma subsampling unless ``subsampling`` is given. A colour image
whose three channels are equal (a grayscale JPEG loaded as RGB, as torchvision's
``ImageFolder`` and ``decode_image(mode=RGB)`` do) is corrected as the grayscale image
it is, and comes out gray. Images with almost no unclipped texture (without a
``quality`` or ``tables``), and textured pixels that show no 8x8 quantization grid at
any phase (not a JPEG decode), are refused with a ``ValueError`` saying which.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from typing import Union

import torch
from PIL import Image
from torch import Tensor, nn

from .codec import chroma_factor_of
from .configs import shared_model
from .correction import ModelInputs, decode, model_inputs
from .dct import BLOCK
from .grid import find_grid, from_stored, logger, pixel_inputs, recover_inputs, to_stored  # noqa: F401 - pixel_inputs: the public kernel
from .jpeg_io import JPEGCoefficients
from .model import QGAC
from .quantization import check_quality, quality_tables
from .self_ensemble import correct_self_ensemble
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE, check_tiling, correct_planes_tiled


Weights = Union[str, os.PathLike, nn.Module, None]
TablesLike = Union[Tensor, Sequence]


# --------------------------------------------------------------------------- models


def load_cached_model(
    weights: Weights = None, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> QGAC:
    """The model for ``weights``: a model object as is (moved to ``device`` and ``dtype`` where
    given), else the trained model of that name, shared per process (:func:`~.configs.shared_model`)."""
    if isinstance(weights, nn.Module):
        return weights.to(device=device, dtype=dtype) if device is not None or dtype is not None else weights
    return shared_model(weights, device, dtype)


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


# --------------------------------------------------------------------------- tables


def as_tables(tables: TablesLike, channels: int) -> Tensor:
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


def _network_tables(quality: int, batch: int, channels: int) -> Tensor:
    """``(batch, 3, 8, 8)`` side input for the network: grayscale repeats the luma table."""
    tables = quality_tables(quality, channels)
    return tables.expand(3, -1, -1).expand(batch, -1, -1, -1) if channels == 1 else tables.expand(batch, -1, -1, -1)


# --------------------------------------------------------------------------- blind estimation


def estimate_quality_from_pixels(pixels: Tensor) -> int:
    """The libjpeg quality that decoded ``(C, H, W)`` pixels in ``[0, 255]`` were saved at.

    Finds the JPEG grid of the pixels (any crop offset, flip or quarter turn) and fits
    libjpeg's scaled standard luma tables to the quantization steps read there (see
    :mod:`~qgac_transforms.grid`). Raises ``ValueError`` for images too flat to show
    any step, and for pixels that show no JPEG grid.
    """
    grid = find_grid(pixels)
    assert grid.quality is not None  # fitted, as no tables were given
    return grid.quality


def estimate_tables(pixels: Tensor) -> Tensor:
    """``(C, 8, 8)`` libjpeg tables of the quality estimated from ``(C, H, W)`` pixels,
    in the JPEG's stored orientation (transposed if the pixels are a quarter turn of it)."""
    return find_grid(pixels).tables


# --------------------------------------------------------------------------- kernels


def correct_inputs(
    model: QGAC,
    inputs: ModelInputs,
    tile: int | None = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    quality_override: int | None = None,
    self_ensemble: bool = False,
) -> Tensor:
    """Run the model on prepared planes (tiled unless ``tile`` is ``None``) -> ``(B, C, H, W)``;
    ``self_ensemble`` averages the corrections of the image's eight orientations (8x the work)."""
    if quality_override is not None:
        batch, channels = inputs.y.shape[0], 1 if inputs.chroma is None else 3
        tables = _network_tables(quality_override, batch, channels).to(inputs.tables)
        inputs = inputs._replace(tables=tables)
    if self_ensemble:
        return correct_self_ensemble(model, inputs, tile, overlap)
    return correct_planes_tiled(model, inputs, tile, overlap)


def _check_blend(blend: float) -> None:
    """Refuse a ``blend`` that is not a number in [0, 1]."""
    if isinstance(blend, bool) or not isinstance(blend, numbers.Real) or not 0.0 <= blend <= 1.0:
        raise ValueError(f"blend must be a number in [0, 1], got {blend!r}")


def check_options(
    *, tile: int | None = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, quality_override: int | None = None,
    blend: float = 1.0,
) -> None:
    """Refuse bad tiling and strength options when they are given (the transform, the Pillow hook),
    in the words the kernels would use when they run."""
    check_tiling(tile, overlap)
    if quality_override is not None:
        check_quality(quality_override, "quality_override")
    _check_blend(blend)


def correct_jpeg(
    model: QGAC,
    coefficients: JPEGCoefficients,
    *,
    tile: int | None = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    quality_override: int | None = None,
    blend: float = 1.0,
    self_ensemble: bool = False,
) -> Tensor:
    """Corrected pixels ``(C, H, W)`` in ``[0, 255]`` (stored orientation) of one JPEG's coefficients."""
    _check_blend(blend)
    device, dtype = _placement(model)
    inputs = model_inputs(coefficients, device, dtype)
    corrected = correct_inputs(model, inputs, tile, overlap, quality_override, self_ensemble)[0]
    if blend < 1.0:
        corrected = torch.lerp(decode(coefficients, dtype).to(device), corrected, blend)
    return corrected


def correct_pixels(
    model: QGAC,
    pixels: Tensor,
    *,
    quality: int | None = None,
    tables: TablesLike | None = None,
    subsampling: str | tuple[int, int] | None = None,
    tile: int | None = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    quality_override: int | None = None,
    blend: float = 1.0,
    self_ensemble: bool = False,
) -> Tensor:
    """Correct decoded JPEG pixels ``(..., C, H, W)`` in ``[0, 255]`` (C = 1 or 3).

    Each image's JPEG grid is found in its pixels (:func:`~qgac_transforms.grid.find_grid`):
    its 8x8 and MCU offset (a crop), whether it is a quarter turn of the JPEG, its chroma
    subsampling (unless ``subsampling`` is given) and, unless ``quality`` or ``tables``
    are given, its quantization tables. The pixels are then re-encoded on that grid, in
    the JPEG's orientation, to recover the file's coefficients, corrected, and put back
    in the input's geometry. Images whose three channels are equal are corrected as
    grayscale; images on the same grid go through the model as one batch. Returns
    floats of the input's shape, on its device, in ``[0, 255]``. Raises ``ValueError``
    for pixels that show no JPEG grid (and, without ``quality`` or ``tables``, for pixels
    too flat to estimate them).
    """
    _check_blend(blend)
    if quality is not None and tables is not None:
        raise ValueError("pass quality or tables, not both")
    if pixels.ndim < 3 or pixels.shape[-3] not in (1, 3):
        raise ValueError(f"expected pixels of shape (..., 1 or 3, H, W), got {tuple(pixels.shape)}")
    if pixels.numel() == 0:
        raise ValueError(f"cannot correct an empty image: pixels of shape {tuple(pixels.shape)}")
    if quality is not None:
        check_quality(quality, "quality")
    factor = None if subsampling is None else chroma_factor_of(subsampling)
    device, dtype = _placement(model)
    batch = pixels.reshape(-1, *pixels.shape[-3:]).to(device=device, dtype=dtype)
    height, width = batch.shape[-2:]
    groups: dict[tuple, list[int]] = {}
    grids = []
    for index, image in enumerate(batch):
        gray = bool((image == image[:1]).all())  # one-channel images, and R = G = B ones
        planes = image[:1] if gray else image
        given = _given_tables(quality, tables, planes.shape[0])
        grid = find_grid(planes, given, quality, factor)
        logger.debug("decoded pixels %d of %d: %s", index + 1, batch.shape[0], grid.describe())
        grids.append(grid)
        groups.setdefault((gray, grid.offset, grid.transposed, grid.factor), []).append(index)
    corrected = torch.empty_like(batch)
    for (gray, *_), indices in groups.items():
        grid = grids[indices[0]]
        stored = to_stored(batch[indices][:, :1] if gray else batch[indices], grid)
        group_tables = torch.stack([grids[i].tables for i in indices]).to(device)
        inputs = recover_inputs(stored, grid, group_tables)
        output = correct_inputs(model, inputs._replace(tables=inputs.tables.to(dtype)), tile, overlap, quality_override, self_ensemble)
        corrected[indices] = from_stored(output, grid, height, width).to(dtype)
    if blend < 1.0:
        corrected = torch.lerp(batch, corrected, blend)
    out_dtype = pixels.dtype if pixels.is_floating_point() else torch.float32
    return corrected.reshape(pixels.shape).to(device=pixels.device, dtype=out_dtype)


def _given_tables(quality: int | None, tables: TablesLike | None, channels: int) -> Tensor | None:
    """The ``(C, 8, 8)`` tables decoded pixels were saved with, when the caller knows them."""
    if tables is not None:
        return as_tables(tables, channels)
    if quality is not None:
        return quality_tables(quality, channels)
    return None


def to_uint8(pixels: Tensor) -> Tensor:
    """Pixels in ``[0, 255]`` rounded to uint8, as a decoder stores them."""
    return pixels.round().clamp(0, 255).to(torch.uint8)


def to_pil(pixels: Tensor) -> Image.Image:
    """``(C, H, W)`` pixels in ``[0, 255]`` (C = 1 or 3) -> a Pillow image in mode L or RGB."""
    array = to_uint8(pixels).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
