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
at ``DEBUG`` level which way each image went, and what grid was found. Each image is
one call of :func:`qgac_transforms.functional.correct` with the transform's options.

As in torchvision, when a sample holds several inputs, Pillow images, ``tv_tensors``
and coefficient objects are all corrected. Only in a sample with none of them is one
other input taken as the image: the first pure tensor of at least 3 dimensions
``(..., C, H, W)``; else the first bytes or file object that starts like a JPEG (a
webdataset sample's ``"jpg"`` beside its ``"__key__"`` and ``"cls"``); else the first
path of an existing file. Everything else (labels, one-hot and other tensors of fewer
dimensions, boxes, keys, captions) passes through, and so does everything under a dict
key that starts with ``"__"`` (webdataset's ``__key__``, ``__url__``,
``__local_path__``). A numpy array of 2 or more dimensions ranks just below an image
tensor and is refused (``TypeError``), so that a picture given as an array is never
passed by uncorrected. Only in a sample with none of these is other data taken, and
refused with the reason: bytes that are no JPEG, a missing file, or nothing to correct
(``TypeError``); among such entries, one whose dict key or file name says JPEG
(``"jpg"``, ``"photo.jpeg"``) is taken first, so that the error is about it.
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms.v2 import Transform

from . import functional as F
from .jpeg_io import JPEG_SOI, JPEGCoefficients
from .options import CorrectionOptions

#: Inputs corrected wherever they are in a sample.
_IMAGE_TYPES = (Image.Image, tv_tensors.Image, tv_tensors.Video, JPEGCoefficients)


def _claim(item: Any, alone: bool = False) -> int | None:
    """How an item outside :data:`_IMAGE_TYPES` claims to be a sample's image, strongest
    first: 0 a pure tensor ``(..., C, H, W)`` (as in torchvision); 1 a numpy array of 2 or
    more dimensions, refused with ``TypeError`` rather than pass a picture by uncorrected;
    2 JPEG data: bytes-like or a file object that starts with the SOI marker (or cannot be
    peeked at); 3 the path of an existing file; 4 other bytes and file objects; 5 other
    strings (keys, captions, URLs). ``None``: not an image (a label, a one-hot vector).
    Claims 4 and 5 are taken only where nothing stronger is, and then fail with the reason.
    An input given ``alone`` (not in a sample) claims at any number of dimensions, so that
    the kernel says what is wrong with its shape."""
    if isinstance(item, Tensor) and not isinstance(item, tv_tensors.TVTensor):
        return 0 if item.ndim >= 3 or alone else None
    if isinstance(item, np.ndarray):
        return 1 if item.ndim >= 2 or alone else None
    if not F.is_jpeg_file(item):
        return None
    if isinstance(item, (str, os.PathLike)):
        return 3 if os.path.isfile(item) else 5
    return 2 if _starts_like_jpeg(item) else 4


def _starts_like_jpeg(data: Any) -> bool:
    """Whether bytes-like data or a binary file object (looked at in place) starts with SOI."""
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            return memoryview(data).cast("B")[:2] == JPEG_SOI  # any shape or item format, as bytes
        if not data.seekable():
            return True  # a stream: reading would consume it
        position = data.tell()
        head = data.read(2)
        data.seek(position)
    except (AttributeError, OSError, TypeError, ValueError):
        return True  # the kernel reads it and names what is wrong
    return head == JPEG_SOI


#: Names (dict keys, file names) that say an entry is a JPEG.
_JPEG_NAMES = ("jpg", "jpeg", "jpe", "jfif")


def _leaf_keys(sample: Any) -> list[tuple[Any, tuple[str, ...]]]:
    """Each leaf of a sample made of dicts, lists and tuples, with the dict keys above it, in
    the order of ``tree_flatten``."""
    if isinstance(sample, dict):
        return [(leaf, (str(key), *keys)) for key, value in sample.items() for leaf, keys in _leaf_keys(value)]
    if isinstance(sample, (list, tuple)):
        return [pair for item in sample for pair in _leaf_keys(item)]
    return [(sample, ())]


def _images(sample: Any, flat: list[Any]) -> list[bool]:
    """Which items of a flattened sample to correct: every one of :data:`_IMAGE_TYPES`;
    where there is none, the first item with the strongest :func:`_claim` that no ``"__"``
    dict key above it marks as metadata; among items that can only fail (claims 4 and 5),
    one whose dict key or file name says JPEG first, so that the error is about it."""
    if any(isinstance(item, _IMAGE_TYPES) for item in flat):
        return [isinstance(item, _IMAGE_TYPES) for item in flat]
    if len(flat) == 1 and flat[0] is sample:  # one input, not a sample
        return [_claim(sample, alone=True) is not None]
    walked = _leaf_keys(sample)
    if len(walked) != len(flat) or any(leaf is not item for (leaf, _), item in zip(walked, flat)):
        walked = [(item, ()) for item in flat]  # a container of the caller's own pytree type: no keys known
    ranked = []
    for index, (item, keys) in enumerate(walked):
        claim = None if any(key.startswith("__") for key in keys) else _claim(item)
        if claim is not None:
            names = [*keys[-1:], os.fsdecode(item) if isinstance(item, (str, os.PathLike)) else ""]
            named_jpeg = claim >= 4 and any(name.lower().endswith(_JPEG_NAMES) for name in names)
            ranked.append((claim, not named_jpeg, index))
    chosen = min(ranked)[2] if ranked else -1
    return [index == chosen for index in range(len(flat))]


class JPEGArtifactCorrection(Transform):
    """Correct JPEG compression artifacts with QGAC (Ehrlich et al., ECCV 2020).

    Args:
        weights: ``None`` for the default model, a registered name, a Hub repository name,
            a local folder, or a :class:`~qgac_transforms.model.QGAC` object. Named weights
            load lazily, once per process (:func:`~qgac_transforms.configs.shared_model`), so
            the transform pickles cheaply into ``DataLoader`` workers; a model object is
            kept (and pickled) as is, or, with ``device`` or ``dtype``, as a converted copy
            made here, so the caller's model is left as it was.
        device: where the model runs; ``None``: the input tensor's device (CPU for
            Pillow images, paths, bytes and coefficients) for named weights, a given
            model's own device.
        dtype: the model's floating point type (``None``: float32, or the given model's).
        options: how to correct (:class:`~qgac_transforms.options.CorrectionOptions`).
        **changes: fields of ``options`` as keyword arguments: ``tile``, ``overlap``,
            ``quality``, ``tables``, ``subsampling``, ``quality_override``, ``blend``,
            ``self_ensemble``. All are checked here.
    """

    def __init__(
        self,
        weights: F.Weights = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        options: CorrectionOptions | None = None,
        **changes: Any,
    ) -> None:
        super().__init__()
        self.options = CorrectionOptions.of(options, **changes)
        is_model = isinstance(weights, nn.Module)
        weights = F.placed_model(weights, device, dtype)
        self.weights = None if is_model or weights is None else os.fspath(weights)
        # a given model is held as a plain attribute, not a submodule: the transform has no parameters
        self.__dict__["_model"] = weights if is_model else None
        self.device = None if device is None else str(torch.device(device))
        self.dtype = dtype

    def forward(self, *inputs: Any) -> Any:
        """Correct the images of a sample (see the module docstring for which), pass the rest through.

        The loop of torchvision's ``Transform.forward`` over the flattened sample, with this
        transform's own choice of inputs (torchvision's is a private hook).
        """
        sample = inputs if len(inputs) > 1 else inputs[0]
        flat, spec = tree_flatten(sample)
        needs = _images(sample, flat)
        if not any(needs):
            found = ", ".join(sorted({type(item).__name__ for item in flat})) or "nothing"
            raise TypeError(
                f"JPEGArtifactCorrection found no image to correct in its input ({found}): it takes a Pillow image, "
                "an image tensor (..., C, H, W), tv_tensors.Image or Video, JPEGCoefficients, or a JPEG as a path, "
                "bytes or binary file"
            )
        return tree_unflatten([self.transform(item, {}) if need else item for item, need in zip(flat, needs)], spec)

    def extra_repr(self) -> str:
        """The settings that differ from the defaults (torchvision's shows only plain values)."""
        settings = {"weights": self.weights, "device": self.device, "dtype": self.dtype}
        shown = [f"{name}={value!r}" for name, value in settings.items() if value is not None]
        if self._model is not None:
            shown.insert(0, f"weights=<{type(self._model).__name__} object>")
        for field in fields(self.options):
            value = getattr(self.options, field.name)
            if value != field.default:
                shown.append(f"{field.name}=<{len(value)} tables>" if field.name == "tables" else f"{field.name}={value!r}")
        return ", ".join(shown)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        device = inpt.device if isinstance(inpt, Tensor) else None
        return F.correct(inpt, self.model(device), self.options)

    def model(self, device: torch.device | str | None = None) -> nn.Module:
        """The model, loaded on first use; ``device``: where the input lives (named weights
        load there unless ``device`` was set; a given model stays where it is unless set)."""
        if self._model is not None:
            return self._model
        return F.load_cached_model(self.weights, self.device or device, self.dtype)
