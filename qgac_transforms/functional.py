"""Functional API: one :func:`correct` for every kind of input, and the kernels behind it.

``correct(inpt, model, options)`` picks the kernel registered for the input's type, as
torchvision's functionals do, and returns what the transform returns for it:

* :class:`~qgac_transforms.jpeg_io.JPEGCoefficients` -> a uint8 ``tv_tensors.Image``
  ``(C, H, W)`` in stored orientation;
* a Pillow image -> a Pillow image of the same mode and size with the input's ``info``
  (a JPEG still showing its file: from the file's coefficients; anything else: from its pixels);
* a JPEG as a path, bytes-like or binary file object -> a Pillow image, likewise;
* a ``torch.Tensor`` ``(..., C, H, W)``, ``tv_tensors.Image`` or ``Video`` (decoded pixels)
  -> the same class, dtype, shape and device: uint8 in 0..255, floats in 0..1.

:func:`register_kernel` adds a type. The kernels below them work on tensors with pixel
values in ``[0, 255]``: :func:`correct_jpeg` (coefficients: the one path from
coefficients to pixels) and :func:`correct_pixels` (decoded pixels, re-encoded on the
JPEG grid :mod:`~qgac_transforms.grid` finds in them, with the tables given in the
options or, in blind mode, estimated from the pixels). A colour image whose three
channels are equal is corrected as the grayscale image it is. Images with almost no
unclipped texture (in blind mode), and textured pixels that show no 8x8 quantization
grid, are refused with a ``ValueError`` saying which.

Every kernel takes a :class:`~qgac_transforms.options.CorrectionOptions`; keyword
arguments change fields of it (``correct_jpeg(model, coefficients, blend=0.5)``).
"""

from __future__ import annotations

import copy
import io
import os
from collections.abc import Callable
from typing import Any, TypeVar, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision import tv_tensors
from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image

from .configs import shared_model
from .correction import ModelInputs, decode, model_inputs, pixel_dtype
from .grid import find_grid, from_stored, logger, pixel_inputs, recover_inputs, to_stored  # noqa: F401 - pixel_inputs: the public kernel
from .jpeg_io import (
    InvalidJPEGError,
    JPEGCoefficients,
    chroma_factor_of,
    header_tables,
    read_coefficients,
    read_jpeg_stream,
    shows_its_file,
)
from .model import QGAC
from .options import CorrectionOptions
from .quantization import as_tables, quality_tables
from .self_ensemble import correct_self_ensemble
from .tiling import correct_planes_tiled

Weights = Union[str, os.PathLike, nn.Module, None]
JPEG_FILE_TYPES: tuple[type, ...] = (str, os.PathLike, bytes, bytearray, memoryview, io.IOBase)
InputT = TypeVar("InputT")


# --------------------------------------------------------------------------- models


def load_cached_model(
    weights: Weights = None, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> QGAC:
    """The model for ``weights``: a model object as is (see :func:`placed_model`), else the
    trained model of that name on ``device`` in ``dtype``, shared per process
    (:func:`~.configs.shared_model`)."""
    if isinstance(weights, nn.Module):
        return weights
    return shared_model(weights, device, dtype)


def placed_model(
    model: Weights, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Weights:
    """A model given by the caller, on ``device`` in ``dtype``: the model itself when neither is
    asked for, else a converted copy, made once, so the caller's model never moves. Weights
    named by a name or path are returned as they are (they are loaded where they are used).
    Raises ``TypeError`` for ``weights`` of another kind (a correction option given by
    position, ``JPEGArtifactCorrection(0.5)``), ``ValueError`` for a ``dtype`` that is not a
    floating point ``torch.dtype``."""
    if not (model is None or isinstance(model, (str, os.PathLike, nn.Module))):
        raise TypeError(f"weights must be a model name, a folder, a Hub repo id or a model, got "
                        f"{type(model).__name__} {model!r}; correction options are keywords (blend=0.5)")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating point torch.dtype (the model's), got {dtype!r}")
    if not isinstance(model, nn.Module) or (device is None and dtype is None):
        return model
    return copy.deepcopy(model).to(device=device, dtype=dtype)


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


# --------------------------------------------------------------------------- tables


def _network_tables(quality: int, batch: int, channels: int) -> Tensor:
    """``(batch, 3, 8, 8)`` side input for the network: grayscale repeats the luma table."""
    tables = quality_tables(quality, channels)
    return tables.expand(3, -1, -1).expand(batch, -1, -1, -1) if channels == 1 else tables.expand(batch, -1, -1, -1)


def _given_tables(options: CorrectionOptions, channels: int) -> Tensor | None:
    """The ``(C, 8, 8)`` tables decoded pixels were saved with, when the caller knows them."""
    if options.tables is not None:
        return as_tables(options.tables, channels)
    if options.quality is not None:
        return quality_tables(options.quality, channels)
    return None


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


# --------------------------------------------------------------------------- tensor kernels


def correct_inputs(
    model: QGAC, inputs: ModelInputs, options: CorrectionOptions | None = None, **changes: Any
) -> Tensor:
    """Corrected pixels ``(B, C, H, W)`` of a batch of model inputs: ``quality_override``,
    then tiles or the self-ensemble (8x the work); ``blend`` is the caller's."""
    options = CorrectionOptions.of(options, **changes)
    if options.quality_override is not None:
        batch, channels = inputs.y.shape[0], 1 if inputs.chroma is None else 3
        tables = _network_tables(options.quality_override, batch, channels).to(inputs.tables)
        inputs = inputs._replace(tables=tables)
    if options.self_ensemble:
        return correct_self_ensemble(model, inputs, options.tile, options.overlap)
    return correct_planes_tiled(model, inputs, options.tile, options.overlap)


def correct_jpeg(
    model: QGAC, coefficients: JPEGCoefficients, options: CorrectionOptions | None = None, **changes: Any
) -> Tensor:
    """Corrected pixels ``(C, H, W)`` in ``[0, 255]`` (stored orientation) of one JPEG's coefficients."""
    options = CorrectionOptions.of(options, **changes)
    device, dtype = _placement(model)
    corrected = correct_inputs(model, model_inputs(coefficients, device, dtype), options)[0]
    if options.blend < 1.0:
        corrected = torch.lerp(decode(coefficients, pixel_dtype(dtype)).to(device), corrected, options.blend)
    return corrected


def correct_pixels(model: QGAC, pixels: Tensor, options: CorrectionOptions | None = None, **changes: Any) -> Tensor:
    """Correct decoded JPEG pixels ``(..., C, H, W)`` in ``[0, 255]`` (C = 1 or 3).

    Each image's JPEG grid is found in its pixels (:func:`~qgac_transforms.grid.find_grid`):
    its 8x8 and MCU offset (a crop), whether it is a quarter turn of the JPEG, its chroma
    subsampling (unless ``options.subsampling`` is given) and, unless ``options.quality``
    or ``options.tables`` are given, its quantization tables. The pixels are then
    re-encoded on that grid, in the JPEG's orientation, to recover the file's
    coefficients, corrected, and put back in the input's geometry. Images whose three
    channels are equal are corrected as grayscale; images on the same grid go through
    the model as one batch. Returns floats of the input's shape, on its device, in
    ``[0, 255]``. Raises ``ValueError`` for pixels that show no JPEG grid (and, in blind
    mode, for pixels too flat to estimate the tables).
    """
    options = CorrectionOptions.of(options, **changes)
    if pixels.ndim < 3 or pixels.shape[-3] not in (1, 3):
        raise ValueError(f"expected pixels of shape (..., 1 or 3, H, W), got {tuple(pixels.shape)}")
    if pixels.numel() == 0:
        raise ValueError(f"cannot correct an empty image: pixels of shape {tuple(pixels.shape)}")
    factor = None if options.subsampling is None else chroma_factor_of(options.subsampling)
    device, dtype = _placement(model)
    # the grid search, the recovery and the decode in float32 at least; only the network in the model's dtype
    batch = pixels.reshape(-1, *pixels.shape[-3:]).to(device=device, dtype=pixel_dtype(dtype))
    height, width = batch.shape[-2:]
    groups: dict[tuple, list[int]] = {}
    grids = []
    for index, image in enumerate(batch):
        gray = bool((image == image[:1]).all())  # one-channel images, and R = G = B ones
        planes = image[:1] if gray else image
        grid = find_grid(planes, _given_tables(options, planes.shape[0]), options.quality, factor)
        logger.debug("decoded pixels %d of %d: %s", index + 1, batch.shape[0], grid.describe())
        grids.append(grid)
        groups.setdefault((gray, grid.offset, grid.transposed, grid.factor), []).append(index)
    corrected = torch.empty_like(batch)
    for (gray, *_), indices in groups.items():
        grid = grids[indices[0]]
        stored = to_stored(batch[indices][:, :1] if gray else batch[indices], grid)
        group_tables = torch.stack([grids[i].tables for i in indices]).to(device)
        inputs = recover_inputs(stored, grid, group_tables)
        output = correct_inputs(model, inputs.to(dtype), options)
        corrected[indices] = from_stored(output, grid, height, width).to(batch.dtype)
    if options.blend < 1.0:
        corrected = torch.lerp(batch, corrected, options.blend)
    out_dtype = pixels.dtype if pixels.is_floating_point() else torch.float32
    return corrected.reshape(pixels.shape).to(device=pixels.device, dtype=out_dtype)


def to_uint8(pixels: Tensor) -> Tensor:
    """Pixels in ``[0, 255]`` rounded to uint8, as a decoder stores them."""
    return pixels.round().clamp(0, 255).to(torch.uint8)


def to_pil(pixels: Tensor) -> Image.Image:
    """``(C, H, W)`` pixels in ``[0, 255]`` (C = 1 or 3) -> a Pillow image in mode L or RGB."""
    return to_pil_image(to_uint8(pixels).cpu())


# --------------------------------------------------------------------------- dispatch

Kernel = Callable[[Any, QGAC, CorrectionOptions], Any]
_KERNELS: dict[type, Kernel] = {}


def register_kernel(*types: type) -> Callable[[Kernel], Kernel]:
    """Register the decorated ``kernel(inpt, model, options)`` as :func:`correct`'s for ``types``
    (and their subclasses, unless a subclass has a kernel of its own)."""

    def register(kernel: Kernel) -> Kernel:
        for kind in types:
            _KERNELS[kind] = kernel
        return kernel

    return register


def is_jpeg_file(inpt: Any) -> bool:
    """A JPEG given as a file: a path, bytes-like data or any object with a ``read`` method."""
    return isinstance(inpt, JPEG_FILE_TYPES) or callable(getattr(inpt, "read", None))


def kernel_for(inpt: Any) -> Kernel | None:
    """The kernel registered for ``inpt``'s type or its nearest base, else for an abstract
    base it registers with (``os.PathLike``), or ``None``; any object with a ``read`` method
    is a binary file."""
    for kind in type(inpt).__mro__:
        if kind in _KERNELS:
            return _KERNELS[kind]
    for kind, kernel in _KERNELS.items():
        if isinstance(inpt, kind):
            return kernel
    return _KERNELS[io.IOBase] if is_jpeg_file(inpt) else None


def correct(inpt: InputT, model: QGAC, options: CorrectionOptions | None = None, **changes: Any) -> InputT:
    """Correct one image of any supported kind with ``model`` (see the module docstring).

    Raises ``TypeError`` for other inputs.
    """
    kernel = kernel_for(inpt)
    if kernel is None:
        raise TypeError(
            f"cannot correct a {type(inpt).__name__}: pass a Pillow image, an image tensor, tv_tensors.Image or "
            "Video, JPEGCoefficients, or a JPEG as a path, bytes or binary file"
        )
    return kernel(inpt, model, CorrectionOptions.of(options, **changes))


@register_kernel(JPEGCoefficients)
def _correct_coefficients(coefficients: JPEGCoefficients, model: QGAC, options: CorrectionOptions) -> tv_tensors.Image:
    return tv_tensors.Image(to_uint8(correct_jpeg(model, coefficients, options)))


@register_kernel(*JPEG_FILE_TYPES)
def _correct_file(source: Any, model: QGAC, options: CorrectionOptions) -> Image.Image:
    data, name = read_jpeg_stream(source)
    coefficients = read_coefficients(data, name=name)  # validates and names the file in errors
    with Image.open(io.BytesIO(data)) as image:
        return _jpeg_image_from_file(image, coefficients, model, options)


@register_kernel(np.ndarray)
def _refuse_array(array: np.ndarray, model: QGAC, options: CorrectionOptions) -> Any:
    raise TypeError(
        "JPEGArtifactCorrection does not take numpy arrays (their layout and range are ambiguous): pass "
        "Image.fromarray(array), or a (C, H, W) tensor such as torch.from_numpy(array).permute(2, 0, 1)"
    )


def _as_like(pixels: Tensor, like: Image.Image) -> Image.Image:
    """``(C, H, W)`` floats in ``[0, 255]`` -> Pillow image in ``like``'s mode with its ``info``."""
    image = to_pil(pixels)
    if image.mode != like.mode:
        image = image.convert(like.mode)
    image.info.update(like.info)
    return image


def _jpeg_image_from_file(
    image: Image.Image, coefficients: JPEGCoefficients, model: QGAC, options: CorrectionOptions
) -> Image.Image:
    return _as_like(correct_jpeg(model, coefficients, options), image)


@register_kernel(Image.Image)
def _correct_pil(image: Image.Image, model: QGAC, options: CorrectionOptions) -> Image.Image:
    """A JPEG image from its file while it still shows the file; anything else from its pixels."""
    if image.format not in ("JPEG", "MPO"):
        return _pil_from_pixels(image, model, options)
    try:
        data, name = read_jpeg_stream(image)
    except InvalidJPEGError as error:  # opened from bytes and loaded, its stream closed, its file deleted
        return _jpeg_image_from_pixels(image, error.source, "its file cannot be read any more", model, options)
    coefficients = read_coefficients(data, name=name)
    stored = (coefficients.width, coefficients.height)
    if image.size not in (stored, stored[::-1]):  # a transpose keeps the 8x8 grid; a resize does not
        raise ValueError(
            f"{name}: the Pillow image is {image.size[0]}x{image.size[1]} but its JPEG is {stored[0]}x{stored[1]}: "
            "it was resized after opening (thumbnail(), draft(), reduce()); correct it before resizing"
        )
    if shows_its_file(image, data):
        logger.debug("%s: corrected from its JPEG's coefficients", name)
        return _jpeg_image_from_file(image, coefficients, model, options)
    return _jpeg_image_from_pixels(image, name, "its pixels were changed since it was decoded", model, options)


def _jpeg_image_from_pixels(
    image: Image.Image, name: str, why: str, model: QGAC, options: CorrectionOptions
) -> Image.Image:
    """A Pillow JPEG whose file cannot give its pixels: from its pixels, with the tables
    and subsampling of the header Pillow parsed when it was opened (else blind)."""
    if image.tile:  # never loaded, and its stream is gone: there are no pixels either
        try:
            image.load()
        except (OSError, ValueError) as error:
            raise InvalidJPEGError(
                name, f"its stream was closed before it was loaded ({error}): no file and no pixels to correct; "
                "load() the image while its stream is open, or pass the JPEG's bytes"
            ) from error
    header = header_tables(image)
    if header is None:
        logger.debug("%s: %s; corrected from its pixels as decoded pixels", name, why)
        return _pil_from_pixels(image, model, options)
    tables, factor = header
    logger.debug("%s: %s; corrected from its pixels with its JPEG header's tables", name, why)
    known = options.changed(quality=None, tables=torch.from_numpy(tables), subsampling=factor)
    return _pil_from_pixels(image, model, known)


def _pil_from_pixels(image: Image.Image, model: QGAC, options: CorrectionOptions) -> Image.Image:
    """A Pillow image's pixels, as decoded pixels."""
    if image.mode not in ("L", "RGB"):
        raise ValueError(f"cannot correct a Pillow image in mode {image.mode}: JPEG pixels are L or RGB")
    return _as_like(correct_pixels(model, pil_to_tensor(image), options), image)


@register_kernel(Tensor)
def _correct_tensor(tensor: Tensor, model: QGAC, options: CorrectionOptions) -> Tensor:
    """Decoded pixels: uint8 in 0..255 or floats in 0..1; ``tv_tensors`` keep their class."""
    pixels = tensor.as_subclass(Tensor)
    if pixels.dtype == torch.uint8:
        scaled = pixels
    elif pixels.is_floating_point():
        low, high = pixels.aminmax() if pixels.numel() else (0.0, 0.0)
        if not (low >= 0 and high <= 1):  # NaN fails too
            raise ValueError(
                f"a floating point image tensor must hold values in 0..1, got {float(low):g}..{float(high):g}: "
                "divide pixels in 0..255 by 255 (or pass uint8), and correct before normalizing"
            )
        scaled = pixels * 255.0
    else:
        raise TypeError(f"expected a uint8 (0..255) or floating point (0..1) image tensor, got {pixels.dtype}")
    corrected = correct_pixels(model, scaled, options)
    out = to_uint8(corrected) if pixels.dtype == torch.uint8 else (corrected / 255.0).clamp(0, 1).to(pixels.dtype)
    return tv_tensors.wrap(out, like=tensor) if isinstance(tensor, tv_tensors.TVTensor) else out
