"""``JPEGArtifactCorrection``: QGAC as a torchvision v2 transform.

What goes in and what comes out:

* a Pillow image opened from a JPEG (or MPO) file -> a Pillow image of the same mode
  and size, in stored orientation, with the input's ``info`` (EXIF, ICC profile), as
  ``Image.open`` gives it;
* a path (``str``, ``PathLike``) or ``bytes`` of a JPEG -> a Pillow image, likewise;
* :class:`~qgac_transforms.jpeg_io.JPEGCoefficients` -> a uint8 ``tv_tensors.Image``
  ``(C, H, W)`` in stored orientation;
* another Pillow image (mode L or RGB: decoded pixels) -> a Pillow image of the same mode;
* a ``torch.Tensor`` ``(..., C, H, W)``, ``tv_tensors.Image`` or ``Video`` (decoded
  pixels) -> the same class, dtype, shape and device: uint8 stays in 0..255, floats in
  0..1; all leading dimensions go through the model as one batch.

JPEG inputs are corrected from their own coefficients and tables. Decoded pixels
(tensors, non-JPEG Pillow images) are re-encoded with ``quality`` or ``tables`` and
``subsampling`` to recover the coefficients; with neither, the quality is estimated
from the pixels (blind mode, see :func:`~qgac_transforms.functional.estimate_quality_from_pixels`).

As in torchvision, when a sample holds several inputs, Pillow images, ``tv_tensors``
and coefficient objects are all corrected, while pure tensors, paths and ``bytes``
are treated as the image only if the sample has no other image (the first one
found); everything else (labels, boxes, masks) passes through.
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
from .jpeg_io import JPEGCoefficients, read_coefficients
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE

_IMAGE_TYPES = (Image.Image, tv_tensors.Image, tv_tensors.Video, JPEGCoefficients)
_SOURCE_TYPES = (str, os.PathLike, bytes, bytearray)


def _check_quality(name: str, quality: int | None) -> None:
    if quality is not None and not 1 <= int(quality) <= 100:
        raise ValueError(f"{name} must be in 1..100, got {quality}")


def _is_jpeg_image(image: Image.Image) -> bool:
    return image.format in ("JPEG", "MPO") or "qgac_jpeg_bytes" in vars(image)


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
        subsampling: chroma subsampling decoded colour pixels were compressed with.
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
        subsampling: str = F.DEFAULT_SUBSAMPLING,
        quality_override: int | None = None,
        blend: float = 1.0,
        self_ensemble: bool = False,
    ) -> None:
        super().__init__()
        _check_quality("quality", quality)
        _check_quality("quality_override", quality_override)
        if quality is not None and tables is not None:
            raise ValueError("pass quality or tables, not both")
        if not 0.0 <= blend <= 1.0:
            raise ValueError(f"blend must be in [0, 1], got {blend}")
        if (tile is not None and tile <= 0) or overlap < 0:
            raise ValueError(f"tile must be positive (or None) and overlap non-negative, got {tile}, {overlap}")
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
            if isinstance(item, _IMAGE_TYPES):
                needs.append(True)
            elif is_pure_tensor(item) or isinstance(item, _SOURCE_TYPES):
                needs.append(take_first_free)
                take_first_free = False
            else:
                needs.append(False)
        return needs

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, JPEGCoefficients):
            return tv_tensors.Image(F.to_uint8(F.correct_jpeg(self.model(), inpt, **self._strength())))
        if isinstance(inpt, _SOURCE_TYPES):
            data = bytes(inpt) if isinstance(inpt, (bytes, bytearray)) else inpt
            coefficients = read_coefficients(data)  # validates and names the file in errors
            with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
                return self._correct_jpeg_image(image, coefficients)
        if isinstance(inpt, Image.Image):
            if _is_jpeg_image(inpt):
                return self._correct_jpeg_image(inpt, read_coefficients(inpt))
            return self._correct_pil_pixels(inpt)
        if isinstance(inpt, Tensor):
            return self._correct_tensor(inpt)
        return inpt

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
        if image.size != (coefficients.width, coefficients.height):
            raise ValueError(
                f"{coefficients.source}: the Pillow image is {image.size[0]}x{image.size[1]} but the JPEG is "
                f"{coefficients.width}x{coefficients.height} (draft mode?); open it again without draft()"
            )
        return _to_pil(F.correct_jpeg(self.model(), coefficients, **self._strength()), image)

    def _correct_pil_pixels(self, image: Image.Image) -> Image.Image:
        if image.mode not in ("L", "RGB"):
            raise ValueError(f"cannot correct a Pillow image in mode {image.mode}: JPEG pixels are L or RGB")
        array = np.asarray(image)
        pixels = torch.from_numpy(array.reshape(*array.shape[:2], -1).copy()).permute(2, 0, 1)
        return _to_pil(F.correct_pixels(self.model(), pixels, **self._pixel_options()), image)

    def _correct_tensor(self, tensor: Tensor) -> Tensor:
        pixels = tensor.as_subclass(Tensor)
        if pixels.dtype == torch.uint8:
            scaled = pixels
        elif pixels.is_floating_point():
            scaled = pixels * 255.0
        else:
            raise TypeError(f"expected a uint8 (0..255) or floating point (0..1) image tensor, got {pixels.dtype}")
        corrected = F.correct_pixels(self.model(pixels.device), scaled, **self._pixel_options())
        if pixels.dtype == torch.uint8:
            out = F.to_uint8(corrected)
        else:
            out = (corrected / 255.0).clamp(0, 1).to(pixels.dtype)
        return tv_tensors.wrap(out, like=tensor) if isinstance(tensor, tv_tensors.TVTensor) else out
