"""Where a model's gain comes from: PSNR gain per YCbCr channel on held-out photos.

The RGB PSNR of ``qgac eval`` mixes the Y network's work with the colour network's. To
decide what to train next, ``python -m training channels`` splits it: each photo of a
folder is compressed as ``qgac eval`` does (Pillow, 4:2:0), corrected from its file,
and the JPEG decode and the correction are both compared with the original in JFIF
YCbCr (:func:`~qgac_transforms.color.rgb_to_ycbcr`, full precision). Run it on held-out
training photos only, never on a benchmark.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from qgac_transforms.color import rgb_to_ycbcr
from qgac_transforms.configs import load_model
from qgac_transforms.evaluation import jpeg_and_corrected, list_images, load_reference, pixels
from qgac_transforms.metrics import psnr
from qgac_transforms.quantization import check_quality

CHANNELS = ("Y", "Cb", "Cr")


def channel_gains(folder: str | os.PathLike, qualities: Sequence[int],
                  weights: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One row per colour photo of ``folder`` and quality: ``image``, ``quality`` and the
    PSNR gain in dB of the correction over the JPEG decode for each of :data:`CHANNELS`.
    Grayscale photos are left out (their one channel is ``qgac eval``'s PSNR); a folder
    with no colour photo is a ``ValueError``, not an empty table."""
    qualities = [check_quality(q) for q in qualities]
    model = load_model(weights)
    rows = []
    for path in list_images(folder):
        reference_image = load_reference(path)
        if reference_image.mode != "RGB":
            continue
        reference = _planes(pixels(reference_image))
        for quality in qualities:
            jpeg, corrected, _ = jpeg_and_corrected(model, reference_image, quality)
            gains = psnr(_planes(corrected), reference) - psnr(_planes(jpeg), reference)
            rows.append({"image": path.name, "quality": quality, **dict(zip(CHANNELS, gains.tolist()))})
    if not rows:
        raise ValueError(f"{folder}: no colour photos (grayscale ones have no Cb or Cr; their gain is qgac eval's PSNR)")
    return rows


def _planes(rgb: Tensor) -> Tensor:
    """``(3, H, W)`` RGB as Y, Cb and Cr images ``(3, 1, H, W)``: one PSNR each."""
    return rgb_to_ycbcr(rgb.float())[:, None]


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`channel_gains`' rows, with the mean of each quality last."""
    lines = ["| image | quality | " + " | ".join(f"{c} gain (dB)" for c in CHANNELS) + " |",
             "|---|---|" + "---|" * len(CHANNELS)]
    for quality in dict.fromkeys(row["quality"] for row in rows):
        own = [row for row in rows if row["quality"] == quality]
        for row in [*own, {"image": "**mean**", "quality": quality,
                           **{c: sum(r[c] for r in own) / len(own) for c in CHANNELS}}]:
            lines.append(f"| {row['image']} | {quality} | " + " | ".join(f"{row[c]:+.2f}" for c in CHANNELS) + " |")
    return "\n".join(lines)
