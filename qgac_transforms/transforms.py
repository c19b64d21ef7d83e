"""``JPEGArtifactCorrection``: QGAC as a torchvision v2 transform.

What goes in and what comes out:

* a Pillow image opened from a JPEG (or MPO: its current frame) -> a Pillow image of
  the same mode and size, in stored orientation, with the input's ``info`` (EXIF, ICC
  profile), as ``Image.open`` gives it;
* a JPEG as a path (``str``, ``PathLike``), bytes-like (``bytes``, ``bytearray``,
  ``memoryview``) or binary file object (read from its position) -> a Pillow image, likewise;
* :class:`~qgac_transforms.jpeg_io.JPEGCoefficients` -> a uint8 ``tv_tensors.Image``
  ``(C, H, W)`` in stored orientation;
* another Pillow image (mode L or RGB: decoded pixels) -> a Pillow image of the same mode;
* a ``torch.Tensor`` ``(..., C, H, W)``, ``tv_tensors.Image`` or ``Video`` (decoded
  pixels) -> the same class, dtype, shape and device: uint8 stays in 0..255, floats in
  0..1 (others are refused); all leading dimensions go through the model as one batch.

JPEG inputs are corrected from their own coefficients and tables. Decoded pixels
(tensors, non-JPEG Pillow images such as ``exif_transpose`` or ``convert`` copies) are
re-encoded on the JPEG grid found in them (any crop offset, flip or quarter turn) with
``quality`` or ``tables`` and ``subsampling`` to recover the coefficients; with neither,
the tables are estimated from the pixels (blind mode, see
:func:`~qgac_transforms.functional.correct_pixels`). A JPEG Pillow image whose pixels
are no longer what its file decodes to (edited in place, its file replaced), or whose
file can no longer be read (opened from bytes and loaded, as Hugging Face ``datasets``
does; its file deleted), is corrected from its pixels with the tables and subsampling
of the JPEG header Pillow parsed when it opened it. The ``qgac_transforms`` logger says
at ``DEBUG`` level which way each image went, and what grid was found.

As in torchvision, when a sample holds several inputs, Pillow images, ``tv_tensors``
and coefficient objects are all corrected, while pure tensors and JPEG files (paths,
bytes, file objects) are treated as the image only if the sample has no other image
(the first one found); everything else (labels, boxes, masks) passes through. A numpy
array in that place, or a sample with nothing to correct, raises ``TypeError``.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision import tv_tensors
from torchvision.transforms.v2 import Transform
from torchvision.transforms.v2._utils import is_pure_tensor

from . import functional as F
from .grid import logger
from .jpeg_io import InvalidJPEGError, JPEGCoefficients, header_tables, read_coefficients, read_jpeg_stream
from .pillow_plugin import shows_its_file
from .quantization import check_quality
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE

_IMAGE_TYPES = (Image.Image, tv_tensors.Image, tv_tensors.Video, JPEGCoefficients)


def _is_jpeg_file(item: Any) -> bool:
    """A JPEG given as a file: a path, bytes-like, or a file object."""
    return isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview)) or callable(getattr(item, "read", None))


def _is_jpeg_image(image: Image.Image) -> bool:
    return image.format in ("JPEG", "MPO")


def _to_pil(pixels: Tensor, like: Image.Image) -> Image.Image:
    """``(C, H, W)`` floats in ``[0, 255]`` -> Pillow image in ``like``'s mode with its ``info``."""
    image = F.to_pil(pixels)
    if image.mode != like.mode:
        image = image.convert(like.mode)
    image.info.update(like.info)
    return image


class JPEGArtifactCorrection(Transform):
    """Correct JPEG compression artifacts with QGAC (Ehrlich et al., ECCV 2020).

    Args:
        weights: ``None`` for the default model, a Hub repository name, a local folder,
            or a :class:`~qgac_transforms.model.QGAC` object. Named weights load
            lazily, once per process, so the transform pickles cheaply into
            ``DataLoader`` workers; a model object is kept (and pickled) as is.
        device: where the model runs; ``None``: the input tensor's device (CPU for
            Pillow images, paths, bytes and coefficients).
        dtype: the model's floating point type (``None``: float32, or the given model's).
        tile: tile side in pixels for large images (bounded memory; ``None``: whole image).
        overlap: context in pixels around each tile.
        quality: libjpeg quality decoded pixels were compressed with (or pass ``tables``;
            neither: estimated from the pixels).
        tables: quantization tables decoded pixels were compressed with, ``(8, 8)`` or ``(C, 8, 8)``.
        subsampling: chroma subsampling decoded colour pixels were compressed with (``None``: found in the pixels).
        quality_override: strength: correct as if the image had libjpeg quality
            ``quality_override`` (lower corrects harder).
        blend: strength: ``1`` gives the corrected image, ``0`` the input decode, in between a mix.
        self_ensemble: average the corrections of the image's eight orientations (slower by 8x, a little better).
    """

    def __init__(
        self,
        weights: F.Weights = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        tile: int | None = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        quality: int | None = None,
        tables: F.TablesLike | None = None,
        subsampling: str | None = None,
        quality_override: int | None = None,
        blend: float = 1.0,
        self_ensemble: bool = False,
    ) -> None:
        super().__init__()
        if quality is not None:
            check_quality(quality, "quality")
        if quality is not None and tables is not None:
            raise ValueError("pass quality or tables, not both")
        F.check_options(tile=tile, overlap=overlap, quality_override=quality_override, blend=blend)
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating point torch.dtype (the model's), got {dtype!r}")
        if subsampling is not None:
            F.chroma_factor_of(subsampling)
        if tables is not None:
            F.as_tables(tables, 3)  # fail early on malformed tables
        is_model = isinstance(weights, nn.Module)
        self.weights = None if is_model else (None if weights is None else os.fspath(weights))
        # a given model is held as a plain attribute, not a submodule: the transform has no parameters
        self.__dict__["_model"] = weights if is_model else None
        self.device = None if device is None else str(torch.device(device))
        self.dtype = dtype
        self.tile, self.overlap = tile, overlap
        self.quality, self.subsampling = quality, subsampling
        self.tables = None if tables is None else torch.as_tensor(tables)
        self.quality_override, self.blend = quality_override, blend
        self.self_ensemble = self_ensemble

    # ----------------------------------------------------------------- dispatch
    def _needs_transform_list(self, flat_inputs: list[Any]) -> list[bool]:
        take_first_free = not any(isinstance(item, _IMAGE_TYPES) for item in flat_inputs)
        needs = []
        for item in flat_inputs:
            free = is_pure_tensor(item) or _is_jpeg_file(item) or isinstance(item, np.ndarray)
            needs.append(isinstance(item, _IMAGE_TYPES) or (free and take_first_free))
            take_first_free = take_first_free and not free
        if not any(needs):
            found = ", ".join(sorted({type(item).__name__ for item in flat_inputs})) or "nothing"
            raise TypeError(
                f"JPEGArtifactCorrection found no image to correct in its input ({found}): it takes a Pillow image, "
                "an image tensor, tv_tensors.Image or Video, JPEGCoefficients, or a JPEG as a path, bytes or binary file"
            )
        return needs

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, JPEGCoefficients):
            return tv_tensors.Image(F.to_uint8(F.correct_jpeg(self.model(), inpt, **self._strength())))
        if isinstance(inpt, np.ndarray):
            raise TypeError(
                "JPEGArtifactCorrection does not take numpy arrays (their layout and range are ambiguous): pass "
                "Image.fromarray(array), or a (C, H, W) tensor such as torch.from_numpy(array).permute(2, 0, 1)"
            )
        if _is_jpeg_file(inpt):
            data, name = read_jpeg_stream(inpt)
            coefficients = read_coefficients(data, name=name)  # validates and names the file in errors
            with Image.open(io.BytesIO(data)) as image:
                return self._correct_jpeg_image(image, coefficients)
        if isinstance(inpt, Image.Image):
            return self._correct_pil(inpt)
        return self._correct_tensor(inpt)

    # torchvision before 0.21 calls the private name.
    _transform = transform

    # ----------------------------------------------------------------- pieces
    def model(self, device: torch.device | str | None = None) -> nn.Module:
        """The model, loaded on first use; ``device``: where the input lives (named weights
        load there unless ``device`` was set; a given model stays where it is unless set)."""
        if self._model is not None:
            return F.load_cached_model(self._model, self.device, self.dtype)
        return F.load_cached_model(self.weights, self.device or device, self.dtype)

    def _strength(self) -> dict[str, Any]:
        return dict(tile=self.tile, overlap=self.overlap, quality_override=self.quality_override, blend=self.blend,
                    self_ensemble=self.self_ensemble)

    def _pixel_options(self) -> dict[str, Any]:
        return dict(quality=self.quality, tables=self.tables, subsampling=self.subsampling, **self._strength())

    def _correct_jpeg_image(self, image: Image.Image, coefficients: JPEGCoefficients) -> Image.Image:
        return _to_pil(F.correct_jpeg(self.model(), coefficients, **self._strength()), image)

    def _correct_pil(self, image: Image.Image) -> Image.Image:
        """A JPEG image from its file while it still shows the file; anything else from its pixels."""
        if not _is_jpeg_image(image):
            return self._correct_pil_pixels(image)
        try:
            data, name = read_jpeg_stream(image)
        except InvalidJPEGError as error:  # opened from bytes and loaded, its stream closed, its file deleted
            return self._correct_jpeg_pixels(image, error.source, "its file cannot be read any more")
        coefficients = read_coefficients(data, name=name)
        stored = (coefficients.width, coefficients.height)
        if image.size not in (stored, stored[::-1]):  # a transpose keeps the 8x8 grid; a resize does not
            raise ValueError(
                f"{name}: the Pillow image is {image.size[0]}x{image.size[1]} but its JPEG is {stored[0]}x{stored[1]}: "
                "it was resized after opening (thumbnail(), draft(), reduce()); correct it before resizing"
            )
        if shows_its_file(image, data):
            logger.debug("%s: corrected from its JPEG's coefficients", name)
            return self._correct_jpeg_image(image, coefficients)
        return self._correct_jpeg_pixels(image, name, "its pixels were changed since it was decoded")

    def _correct_jpeg_pixels(self, image: Image.Image, name: str, why: str) -> Image.Image:
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
            return self._correct_pil_pixels(image)
        tables, factor = header
        logger.debug("%s: %s; corrected from its pixels with its JPEG header's tables", name, why)
        return self._correct_pil_pixels(image, tables=torch.from_numpy(tables), subsampling=factor)

    def _correct_pil_pixels(self, image: Image.Image, **known: Any) -> Image.Image:
        """A Pillow image's pixels; ``known``: tables and subsampling that replace the transform's options."""
        if image.mode not in ("L", "RGB"):
            raise ValueError(f"cannot correct a Pillow image in mode {image.mode}: JPEG pixels are L or RGB")
        array = np.asarray(image)
        pixels = torch.from_numpy(array.reshape(*array.shape[:2], -1).copy()).permute(2, 0, 1)
        options = self._pixel_options()
        if known:
            options.update(quality=None, **known)
        return _to_pil(F.correct_pixels(self.model(), pixels, **options), image)

    def _correct_tensor(self, tensor: Tensor) -> Tensor:
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
        corrected = F.correct_pixels(self.model(pixels.device), scaled, **self._pixel_options())
        if pixels.dtype == torch.uint8:
            out = F.to_uint8(corrected)
        else:
            out = (corrected / 255.0).clamp(0, 1).to(pixels.dtype)
        return tv_tensors.wrap(out, like=tensor) if isinstance(tensor, tv_tensors.TVTensor) else out
