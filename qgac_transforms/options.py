"""``CorrectionOptions``: how to correct, in one validated object shared by every entry point.

The transform, the functional kernels, the Pillow hook and the ``qgac correct`` command
all take one :class:`CorrectionOptions`; the transform and the hook also accept its
fields as keyword arguments and build one. It is checked once, when it is made, so bad
options fail where they are written rather than at the first image.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from torch import Tensor

from .jpeg_io import chroma_factor_of
from .quantization import as_tables, check_quality

#: Tile side in pixels used by the transform, the Pillow hook and the CLI unless told otherwise.
DEFAULT_TILE = 1024
#: Context added on each side of a tile, in pixels (a multiple of the 16-pixel MCU).
DEFAULT_OVERLAP = 64


def check_tiling(tile: int | None, overlap: int) -> None:
    """Refuse a tile that is not a positive whole number of pixels (or ``None``) and a negative overlap."""
    def whole(value: object) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    if not (tile is None or (whole(tile) and tile > 0)) or not (whole(overlap) and overlap >= 0):
        raise ValueError(f"tile must be a positive number of pixels (or None) and overlap 0 or more, got {tile!r}, {overlap!r}")


@dataclass(frozen=True)
class CorrectionOptions:
    """What to do with an image; every field has the default the library uses.

    Args:
        tile: tile side in pixels for large images (bounded memory; ``None``: whole image).
        overlap: context in pixels around each tile.
        quality_override: strength: correct as if the image had libjpeg quality
            ``quality_override`` (lower corrects harder; its tables replace the file's as
            the network's side input, the coefficients are untouched).
        blend: strength: ``1`` gives the corrected image, ``0`` the input decode (for a
            JPEG, libjpeg's, as Pillow shows it), in between ``blend * corrected + (1 - blend) * input``.
        self_ensemble: average the corrections of the image's eight orientations (flips and
            transposes, exact in the DCT domain): slower by 8x, a little better.
        quality: decoded pixels only: the libjpeg quality they were compressed with (or pass
            ``tables``; neither: estimated from the pixels).
        tables: decoded pixels only: the quantization tables they were compressed with,
            ``(8, 8)``, ``(64,)``, ``(2, 8, 8)`` or ``(3, 8, 8)`` (see :func:`~.quantization.as_tables`);
            kept as a copy, nested tuples ``(3, 8, 8)`` of ints, so options compare and hash by value.
        subsampling: decoded colour pixels only: their chroma subsampling (``"4:2:0"``, a
            ``(v, h)`` factor, kept as a tuple of ints; ``None``: found in the pixels).

    ``quality``, ``tables`` and ``subsampling`` describe decoded pixels: a JPEG file, its
    coefficients or a Pillow JPEG that still shows its file carries its own, so the
    transform uses them only for pixels, and the Pillow hook refuses them.

    Raises:
        ValueError: a value out of its range, ``quality`` and ``tables`` together, or
            malformed tables; TypeError: ``self_ensemble`` that is not a bool.
    """

    tile: int | None = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    quality_override: int | None = None
    blend: float = 1.0
    self_ensemble: bool = False
    quality: int | None = None
    tables: Tensor | Sequence | None = None
    subsampling: str | tuple[int, int] | None = None

    def __post_init__(self) -> None:
        check_tiling(self.tile, self.overlap)
        if self.quality_override is not None:
            check_quality(self.quality_override, "quality_override")
        if isinstance(self.blend, bool) or not isinstance(self.blend, numbers.Real) or not 0.0 <= self.blend <= 1.0:
            raise ValueError(f"blend must be a number in [0, 1], got {self.blend!r}")
        if not isinstance(self.self_ensemble, bool):
            raise TypeError(f"self_ensemble must be True or False, got {self.self_ensemble!r}")
        if self.quality is not None:
            check_quality(self.quality, "quality")
        if self.quality is not None and self.tables is not None:
            raise ValueError("pass quality or tables, not both")
        if self.subsampling is not None:
            factor = chroma_factor_of(self.subsampling)
            if not isinstance(self.subsampling, str):  # a list or an array: unhashable, unequal to the same pair
                object.__setattr__(self, "subsampling", factor)
        if self.tables is not None:
            steps = as_tables(self.tables, 3).tolist()  # fails early on malformed tables
            object.__setattr__(self, "tables", tuple(tuple(map(tuple, table)) for table in steps))

    @classmethod
    def of(cls, options: CorrectionOptions | None = None, **changes: Any) -> CorrectionOptions:
        """``options`` (the defaults where ``None``) with ``changes``: what every entry point
        that takes both an options object and its fields as keywords uses. Raises ``TypeError``
        for ``options`` that are not a :class:`CorrectionOptions` (a dict: its fields go as keywords)."""
        if options is not None and not isinstance(options, cls):
            raise TypeError(f"options must be a CorrectionOptions, got {type(options).__name__}; give its fields "
                            f"as keywords (blend=0.5) or CorrectionOptions(**fields)")
        return (options if options is not None else cls()).changed(**changes)

    def changed(self, **changes: Any) -> CorrectionOptions:
        """A copy with ``changes`` (validated again); ``self`` when there are none. Raises
        ``TypeError`` naming the fields for a keyword that is none of them."""
        unknown = sorted(set(changes) - {field.name for field in fields(self)})
        if unknown:
            raise TypeError(
                f"unknown correction option(s) {', '.join(map(repr, unknown))}; the options are "
                f"{', '.join(field.name for field in fields(self))}"
            )
        return replace(self, **changes) if changes else self
