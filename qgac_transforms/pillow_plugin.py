"""Pillow hook: JPEGs opened with ``Image.open`` carry their DCT coefficients, or come out corrected.

Nothing happens on import. After :func:`register_jpeg_opener`, every JPEG (and MPO
phone photo) that Pillow opens is an instance of a subclass of Pillow's own
``JpegImageFile``/``MpoImageFile`` with

* ``image.dct_coefficients``: the :class:`~qgac_transforms.jpeg_io.JPEGCoefficients`
  of the current frame, read on first access;
* ``image.qgac_jpeg_bytes``: the bytes of the current frame's JPEG stream, read
  lazily and captured by ``load()`` before Pillow closes the file, so both stay
  available after ``load()``.

With ``correct=True``, ``load()`` replaces the decoded pixels with QGAC-corrected ones
(same mode, size and ``info``; stored orientation, as Pillow always gives), so code
that only calls ``Image.open`` gets corrected images. ``draft()`` (which
``thumbnail()`` uses to decode at reduced size) is disabled then, since correction
needs the whole image. JPEGs QGAC cannot read (CMYK, 12-bit, ...) keep Pillow's
pixels, with a warning. Images derived from a hooked one (``copy``, ``convert``,
``crop``) are plain Pillow images.

The pixels a correction wrote are remembered by digest, so that
:func:`~qgac_transforms.jpeg_io.shows_its_file` can tell the transform whether a hooked
image still shows them.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from PIL import Image, JpegImagePlugin, MpoImagePlugin

from .jpeg_io import (
    InvalidJPEGError,
    JPEGCoefficients,
    current_frame,
    pixel_digest,
    read_coefficients,
    read_pillow_file,
)
from .options import CorrectionOptions

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class _Correction:
    """What ``correct=True`` runs in ``load()``: the model ``weights`` on ``device`` in ``dtype``, with ``options``."""

    weights: Any
    device: str | None
    dtype: torch.dtype | None
    options: CorrectionOptions

    def __call__(self, coefficients: JPEGCoefficients) -> Image.Image:
        from . import functional  # noqa: PLC0415 - the model code is needed only once an image loads

        model = functional.load_cached_model(self.weights, self.device, self.dtype)
        return functional.to_pil(functional.correct_jpeg(model, coefficients, self.options))


class _CoefficientsMixin:
    """Adds lazily read coefficients, and optionally corrected pixels, to a Pillow JPEG image."""

    _qgac_file: bytes | None = None
    _qgac_cache: dict[int, JPEGCoefficients] | None = None
    _qgac_correction: _Correction | None = None
    _qgac_corrected_frame: int | None = None
    _qgac_corrected_digest: bytes | None = None

    def _qgac_read_file(self) -> bytes:
        return read_pillow_file(self, os.fsdecode(getattr(self, "filename", "") or "<PIL image>"))

    @property
    def qgac_jpeg_bytes(self) -> bytes:
        """The JPEG stream of the current frame (a whole file for ordinary JPEGs)."""
        if self._qgac_file is None:
            self._qgac_file = self._qgac_read_file()
        return current_frame(self, self._qgac_file)  # type: ignore[arg-type]

    @property
    def dct_coefficients(self) -> JPEGCoefficients:
        """The current frame's DCT coefficients and quantization tables, read on first access."""
        if self._qgac_cache is None:
            self._qgac_cache = {}
        frame = self.tell()  # type: ignore[attr-defined]
        if frame not in self._qgac_cache:
            self._qgac_cache[frame] = read_coefficients(self)  # type: ignore[arg-type]
        return self._qgac_cache[frame]

    def load(self) -> Any:
        if self.tile and self._qgac_file is None:  # type: ignore[attr-defined]
            try:
                self.qgac_jpeg_bytes  # noqa: B018 - capture the file before Pillow closes it
            except InvalidJPEGError:
                pass  # Pillow can still decode; dct_coefficients will say why it cannot
        access = super().load()  # type: ignore[misc]
        frame = self.tell()  # type: ignore[attr-defined]
        if self._qgac_correction is None or self._qgac_corrected_frame == frame:
            return access
        self._qgac_corrected_digest = None
        try:
            corrected = self._qgac_correction(self.dct_coefficients)
        except InvalidJPEGError as error:
            self._qgac_corrected_frame = frame  # decided: Pillow's pixels, said once
            message = f"QGAC cannot correct {error.source} ({error.reason}); keeping Pillow's pixels"
            warnings.warn(message, stacklevel=2)
            return access
        # any other failure propagates and leaves the frame unmarked: the next load() tries again
        if corrected.mode != self.mode:  # type: ignore[attr-defined]
            corrected = corrected.convert(self.mode)  # type: ignore[attr-defined]
        self.im = corrected.im  # type: ignore[attr-defined]
        self._qgac_corrected_frame = frame  # before the digest, whose tobytes() loads again
        access = Image.Image.load(self)  # type: ignore[arg-type]
        self._qgac_corrected_digest = pixel_digest(self)  # type: ignore[arg-type]
        return access

    def __getstate__(self) -> list[Any]:
        """Pillow pickles the mode, size, ``info`` and pixels; this adds the JPEG stream of the
        current frame, the digest of the hook's correction and the header's tables, so that an
        image sent to another process (``DataLoader`` workers) is still corrected from its file
        and known as the hook's correction."""
        state = super().__getstate__()  # type: ignore[misc]
        try:
            stream: bytes | None = self.qgac_jpeg_bytes
        except InvalidJPEGError:
            stream = None  # its file is gone: the pixels travel, as Pillow's own image's do
        header = {name: getattr(self, name, None) for name in ("quantization", "layer")}
        return [*state, {"jpeg": stream, "corrected_digest": self._qgac_corrected_digest, **header}]

    def __setstate__(self, state: list[Any]) -> None:
        extra = state[-1] if isinstance(state[-1], dict) and "jpeg" in state[-1] else None  # absent: an older pickle
        super().__setstate__(state[:-1] if extra is not None else state)  # type: ignore[misc]
        if extra is None:
            return
        self._qgac_file, self._qgac_corrected_digest = extra["jpeg"], extra["corrected_digest"]
        for name in ("quantization", "layer"):
            if extra[name] is not None:
                setattr(self, name, extra[name])

    def seek(self, frame: int) -> None:
        super().seek(frame)  # type: ignore[misc]
        if self.tile:  # type: ignore[attr-defined]
            # Pillow will decode this frame afresh, even if it is the one corrected last
            self._qgac_corrected_frame = None

    def draft(self, mode: str | None, size: tuple[int, int] | None) -> Any:
        if self._qgac_correction is not None:
            return None
        return super().draft(mode, size)  # type: ignore[misc]


class QGACJpegImageFile(_CoefficientsMixin, JpegImagePlugin.JpegImageFile):
    """Pillow's JPEG image with :class:`_CoefficientsMixin`."""


class QGACMpoImageFile(_CoefficientsMixin, MpoImagePlugin.MpoImageFile):
    """Pillow's MPO image (phone photos) with :class:`_CoefficientsMixin`."""


_SUBCLASSES = {
    JpegImagePlugin.JpegImageFile: QGACJpegImageFile,
    MpoImagePlugin.MpoImageFile: QGACMpoImageFile,
}

#: Pillow's own ``(factory, accept)`` for "JPEG" while the hook is registered.
_original: tuple[Any, Any] | None = None
_correction: _Correction | None = None


def _factory(fp: IO[bytes], filename: str | bytes | None = None) -> Image.Image:
    assert _original is not None
    image = _original[0](fp, filename)
    subclass = _SUBCLASSES.get(type(image))
    if subclass is not None:
        image.__class__ = subclass
        image._qgac_correction = _correction  # type: ignore[attr-defined]
    return image


def register_jpeg_opener(
    correct: bool = False,
    *,
    weights: Any = None,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    options: CorrectionOptions | None = None,
    **changes: Any,
) -> None:
    """Make ``Image.open`` return JPEGs that carry their coefficients (and, with
    ``correct=True``, corrected pixels; ``weights``, ``device`` and ``dtype`` are those of
    :class:`~qgac_transforms.transforms.JPEGArtifactCorrection`: a model given with a
    ``device`` or ``dtype`` is converted once, here, and the caller's model stays as it is).

    ``options`` (:class:`~qgac_transforms.options.CorrectionOptions`), or its fields as
    keyword arguments (``tile``, ``overlap``, ``quality_override``, ``blend``,
    ``self_ensemble``), say how; they are checked here. Calling it again changes the
    settings for images opened afterwards.
    """
    global _original, _correction
    options = CorrectionOptions.of(options, **changes)
    pixel_only = [name for name in ("quality", "tables", "subsampling") if getattr(options, name) is not None]
    if pixel_only:
        raise TypeError(f"register_jpeg_opener got {', '.join(pixel_only)}: the hook corrects JPEGs from their "
                        "coefficients and tables; those options describe decoded pixels (JPEGArtifactCorrection)")
    format_id = JpegImagePlugin.JpegImageFile.format
    if _original is None:
        _original = Image.OPEN[format_id]
    if correct:
        from .functional import placed_model  # noqa: PLC0415 - torch, only once correction is asked for

        _correction = _Correction(placed_model(weights, device, dtype), device, dtype, options)
    else:
        _correction = None
    Image.OPEN[format_id] = (_factory, _original[1])


def unregister_jpeg_opener() -> None:
    """Give Pillow its own JPEG opener back (images opened before keep their extras)."""
    global _original, _correction
    if _original is not None:
        Image.OPEN[JpegImagePlugin.JpegImageFile.format] = _original
    _original, _correction = None, None
