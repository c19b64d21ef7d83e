"""Where a model's gain comes from: PSNR gain per YCbCr channel on held-out photos.

The RGB PSNR of ``qgac eval`` mixes the Y network's work with the colour network's. To
decide what to train next, ``python -m training channels`` splits it: each photo of a
folder is compressed as ``qgac eval`` does (Pillow, 4:2:0), corrected from its file,
and the JPEG decode and the correction are both compared with the original in JFIF
YCbCr (:func:`~qgac_transforms.color.rgb_to_ycbcr`, full precision). Run it on held-out
training photos only, never on a benchmark.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

from PIL import Image

from qgac_transforms.color import rgb_to_ycbcr
from qgac_transforms.configs import load_model
from qgac_transforms.evaluation import compress, list_images, load_reference, pixels
from qgac_transforms.functional import correct_jpeg, to_uint8
from qgac_transforms.jpeg_io import read_coefficients
from qgac_transforms.metrics import psnr
from qgac_transforms.quantization import check_quality

CHANNELS = ("Y", "Cb", "Cr")


def channel_gains(folder: str | os.PathLike, qualities: Sequence[int],
                  weights: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One row per colour photo of ``folder`` and quality: ``image``, ``quality`` and the
    PSNR gain in dB of the correction over the JPEG decode for each of :data:`CHANNELS`.
    Grayscale photos are left out (their one channel is ``qgac eval``'s PSNR)."""
    qualities = [check_quality(q) for q in qualities]
    model = load_model(weights)
    rows = []
    for path in list_images(folder):
        reference_image = load_reference(path)
        if reference_image.mode != "RGB":
            continue
        reference = rgb_to_ycbcr(pixels(reference_image).float())
        for quality in qualities:
            data = compress(reference_image, quality)
            with Image.open(io.BytesIO(data)) as decoded:
                jpeg = rgb_to_ycbcr(pixels(decoded).float())
            corrected = rgb_to_ycbcr(to_uint8(correct_jpeg(model, read_coefficients(data), tile=None)).float())
            gains = {name: float(psnr(corrected[c:c + 1], reference[c:c + 1]) - psnr(jpeg[c:c + 1], reference[c:c + 1]))
                     for c, name in enumerate(CHANNELS)}
            rows.append({"image": path.name, "quality": quality, **gains})
    return rows


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
