"""The paper's evaluation protocol: compress a folder of images, correct them, measure.

Every choice that moves the numbers (encoder, subsampling, rounding, how each metric
is pooled) is fixed here and spelled out by :func:`protocol`; see
``docs/evaluation-protocol.md`` for which choices reproduce which published numbers.
"""

from __future__ import annotations

import io
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, features
from torch import Tensor
from tqdm.auto import tqdm

from .configs import load_model, weights_label
from .functional import correct_jpeg, to_uint8
from .jpeg_io import PILLOW_SUBSAMPLING, read_coefficients
from .metrics import psnr, psnr_b, ssim, ssim_window_side
from .model import QGAC
from .quantization import check_quality

#: Lossless formats accepted as ground truth (a JPEG original would carry its own artifacts).
IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm", ".webp")
#: Pillow's ``subsampling`` code for 4:2:0.
SUBSAMPLING_420 = PILLOW_SUBSAMPLING["4:2:0"]
METRICS = ("psnr", "psnrb", "ssim")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The ground-truth images of a dataset folder (not recursive), sorted by name."""
    path = Path(folder)
    if not path.is_dir():
        raise NotADirectoryError(f"{path}: not a directory")
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise FileNotFoundError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return images


def load_reference(path: str | os.PathLike) -> Image.Image:
    """A ground-truth image, 8 bits per sample (:func:`eight_bit`). Raises ``ValueError``
    naming the file for one that cannot be read, or is over Pillow's pixel limit."""
    try:
        with Image.open(path) as image:
            return eight_bit(image)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{path}: cannot read the image ({error})") from error


def eight_bit(image: Image.Image) -> Image.Image:
    """``image`` as ``L`` if gray, else as ``RGB`` (palette images included); alpha
    dropped. Integer gray of more than 8 bits (16-bit PNG, TIFF and PGM, which Pillow
    opens as ``I;16`` or ``I``) is scaled from 0..65535 to 0..255. Raises ``ValueError``
    for float pixels and integers outside 0..65535, whose range no mode fixes."""
    if image.mode.startswith("I"):  # I, I;16, I;16B, ...
        wide = np.asarray(image).astype(np.int64)
        if wide.size and (wide.min() < 0 or wide.max() > 65535):
            raise ValueError(f"{image.mode} pixels from {wide.min()} to {wide.max()}: not 8- or 16-bit gray")
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
    if image.mode == "F":
        raise ValueError("floating point pixels have no fixed range: save the image with 8 or 16 bits per sample")
    return image.convert("L" if image.mode in ("1", "L", "LA", "La") else "RGB")


def compress(image: Image.Image, quality: int, subsampling: int = SUBSAMPLING_420) -> bytes:
    """JPEG bytes of an ``L`` or ``RGB`` image: Pillow (libjpeg) baseline tables at ``quality``;
    colour at Pillow's ``subsampling`` (0 4:4:4, 1 4:2:2, 2 4:2:0, the benchmark protocol's)."""
    check_quality(quality)
    buffer = io.BytesIO()
    options = {} if image.mode == "L" else {"subsampling": subsampling}
    image.save(buffer, "JPEG", quality=quality, **options)
    return buffer.getvalue()


def pixels(image: Image.Image) -> Tensor:
    """``(C, H, W)`` uint8 tensor of a Pillow image."""
    array = np.array(image, dtype=np.uint8)
    return torch.from_numpy(array[..., None] if array.ndim == 2 else array).permute(2, 0, 1)


def measure(image: Tensor, reference: Tensor, ssim_window: str = "gaussian") -> dict[str, float]:
    """PSNR, PSNR-B and SSIM of one ``(C, H, W)`` image against its reference, in float64."""
    x, y = image.to(torch.float64), reference.to(torch.float64)
    return {
        "psnr": float(psnr(x, y)),
        "psnrb": float(psnr_b(x, y)),
        "ssim": float(ssim(x, y, window=ssim_window)),
    }


def protocol(ssim_window: str = "gaussian", self_ensemble: bool = False) -> str:
    """One paragraph stating every choice of this evaluation (the JSON ``protocol`` field)."""
    turbo = features.version("libjpeg_turbo")
    encoder = f"libjpeg-turbo {turbo}" if turbo else f"libjpeg {features.version('jpg')}"
    window = (
        "Gaussian window 11x11 sigma 1.5" if ssim_window == "gaussian" else "8x8 uniform window (torchjpeg)"
    ) + ", K1 0.01, K2 0.03, valid windows only, averaged over channels"
    return (
        f"Encoder: Pillow {Image.__version__} ({encoder}), standard IJG tables scaled to the quality, "
        "4:2:0 chroma subsampling for colour images, grayscale images encoded as grayscale. "
        "JPEG input: Pillow's decode of that file (uint8). "
        "Corrected: the network's full-resolution Y, Cb, Cr (or gray) coefficients decoded (IDCT, JFIF YCbCr to RGB), "
        + ("averaged over the image's eight orientations (self-ensemble), " if self_ensemble else "")
        + "rounded and clipped to uint8. "
        "Metrics against the original at full size, peak 255: PSNR over all R, G, B values (colour) or the one "
        "channel (gray); PSNR-B = 10 log10(255^2 / (MSE_c + BEF_c)) per channel (R, G, B or gray), BEF of the "
        "degraded image (Yim & Bovik, 8x8 grid), averaged over channels; "
        f"SSIM {window}. Dataset figures are means of per-image values. "
        "The JPEG figures match FBCNN's protocol (LIVE1 q10: 25.69 dB, Gaussian SSIM 0.743); the QGAC paper's JPEG "
        "column (25.60 / 23.53 / 0.755) instead decoded chroma with nearest-neighbour upsampling and used the 8x8 "
        "uniform SSIM: see docs/evaluation-protocol.md."
    )


def _mean(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.fmean(row[key] for row in rows) for key in METRICS}


def jpeg_and_corrected(model: QGAC, image: Image.Image, quality: int,
                       self_ensemble: bool = False) -> tuple[Tensor, Tensor, float]:
    """``image`` compressed at ``quality`` (:func:`compress`): Pillow's decode of the file, the
    model's correction of it (uint8, on the CPU), and the seconds the correction took, reading
    the coefficients included."""
    data = compress(image, quality)
    with Image.open(io.BytesIO(data)) as decoded:
        jpeg_pixels = pixels(decoded)
    start = time.perf_counter()
    corrected = to_uint8(correct_jpeg(model, read_coefficients(data), tile=None, self_ensemble=self_ensemble)).cpu()
    return jpeg_pixels, corrected, time.perf_counter() - start


def _resolve_model(weights: QGAC | str | os.PathLike | None, device: str | None) -> tuple[QGAC, str]:
    if isinstance(weights, torch.nn.Module):
        model = weights.to(device) if device is not None else weights
        return model.eval(), f"<in-memory {type(weights).__name__}>"
    return load_model(weights, device=device), weights_label(weights)


def evaluate_dataset(
    weights: QGAC | str | os.PathLike | None,
    dataset: str | os.PathLike,
    qualities: Sequence[int] = (10, 20, 30),
    *,
    device: str | None = None,
    ssim_window: str = "gaussian",
    progress: bool | None = True,
    weights_label: str | None = None,
    self_ensemble: bool = False,
) -> dict[str, Any]:
    """Evaluate a model (or the weights :func:`qgac_transforms.configs.create_model` loads) on a folder.

    For each image and quality: compress (:func:`compress`), read the coefficients,
    correct them, and measure the JPEG input and the corrected output against the
    original (:func:`measure`). A model object is moved to ``device`` when one is given. ``seconds_per_image`` times reading the coefficients,
    the correction and the rounding. Images that cannot be read, or are smaller than the
    SSIM window, are listed under ``"failures"`` and left out of the averages. ``progress=None`` shows the bar only
    on a terminal. ``self_ensemble``: correct with :mod:`~qgac_transforms.self_ensemble`.
    Returns the report described in ``docs/evaluation-protocol.md``.
    """
    qualities = list(dict.fromkeys(check_quality(q) for q in qualities))  # checked before the long run
    window = ssim_window_side(ssim_window)
    paths = list_images(dataset)
    model, label = _resolve_model(weights, device)
    per_quality: dict[int, list[dict[str, Any]]] = {q: [] for q in qualities}
    failures = []
    with tqdm(total=len(paths) * len(qualities), desc="qgac eval", unit="image", disable=None if progress is None else not progress) as bar:
        for path in paths:
            try:
                reference_image = load_reference(path)
            except ValueError as error:
                failures.append({"image": path.name, "error": str(error)})
                bar.update(len(qualities))
                continue
            if min(reference_image.size) < window:  # left out at every quality: each mean is over the same images
                failures.append({"image": path.name, "error": f"{path}: {reference_image.width}x"
                                 f"{reference_image.height} is smaller than the {window}-pixel SSIM window"})
                bar.update(len(qualities))
                continue
            reference = pixels(reference_image)
            for quality in qualities:
                jpeg_pixels, corrected, seconds = jpeg_and_corrected(model, reference_image, quality, self_ensemble)
                per_quality[quality].append(
                    {
                        "image": path.name,
                        "mode": reference_image.mode,
                        "jpeg": measure(jpeg_pixels, reference, ssim_window),
                        "corrected": measure(corrected, reference, ssim_window),
                        "seconds": seconds,
                    }
                )
                bar.update(1)
    results = []
    for quality, rows in per_quality.items():
        if not rows:
            continue
        results.append(
            {
                "quality": int(quality),
                "n_images": len(rows),
                "jpeg": _mean([row["jpeg"] for row in rows]),
                "corrected": _mean([row["corrected"] for row in rows]),
                "seconds_per_image": statistics.fmean(row["seconds"] for row in rows),
                "per_image": rows,
            }
        )
    return {
        "dataset": str(dataset),
        "weights": weights_label or label,
        "protocol": protocol(ssim_window, self_ensemble),
        "results": results,
        "failures": failures,
    }


def _triple(values: dict[str, float]) -> str:
    return f"{values['psnr']:.2f} / {values['psnrb']:.2f} / {values['ssim']:.3f}"


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table in the layout of the paper's Table 1."""
    name = Path(report["dataset"]).name or report["dataset"]
    header = ("Dataset", "Quality", "JPEG", "QGAC", "s/image")
    rows = [
        (name if i == 0 else "", str(r["quality"]), _triple(r["jpeg"]), _triple(r["corrected"]), f"{r['seconds_per_image']:.3f}")
        for i, r in enumerate(report["results"])
    ]
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    n = report["results"][0]["n_images"] if report["results"] else 0
    lines.append(f"PSNR / PSNR-B / SSIM, means over {n} images; weights: {report['weights']}")
    return "\n".join(lines)
