"""Per-frequency, per-channel normalization statistics of a folder of training images."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from qgac_transforms.codec import pixels_to_coefficients
from qgac_transforms.dct import blockify
from qgac_transforms.hub import read_config
from qgac_transforms.model import QGAC

from .data import read_rgb


def coefficient_statistics(paths: Sequence[Path]) -> dict[str, list[list[float]]]:
    """Mean and standard deviation of the DCT of level-shifted full-resolution YCbCr.

    Returns ``{"mean": 3 x 64, "std": 3 x 64}`` (Y, Cb, Cr; natural frequency order),
    accumulated in float64 over every block of every image.
    """
    total = torch.zeros(3, 64, dtype=torch.float64)
    squares = torch.zeros(3, 64, dtype=torch.float64)
    count = 0
    for path in paths:
        pixels = torch.tensor(read_rgb(path), dtype=torch.float64).permute(2, 0, 1)
        planes = pixels_to_coefficients(pixels, (1, 1))
        blocks = torch.stack([blockify(p).reshape(-1, 64) for p in planes])  # (3, N, 64)
        total += blocks.sum(dim=1)
        squares += blocks.square().sum(dim=1)
        count += blocks.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp(min=1e-12).sqrt()
    return {"mean": mean.tolist(), "std": std.tolist()}


def statistics_overrides(source: str | Path) -> dict[str, Any]:
    """The model's normalization arguments from the JSON of :func:`coefficient_statistics`
    or from a model folder's config: a new network trained on the same photos can reuse a
    trained one's statistics without a pass over the data."""
    path = Path(source)
    if path.is_dir():
        config = read_config(path, QGAC)
        return {key: config[key] for key in ("coefficient_mean", "coefficient_std")}
    try:
        stats = json.loads(path.read_text())
        return {"coefficient_mean": stats["mean"], "coefficient_std": stats["std"]}
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"--stats {path}: not the JSON of `python -m training stats` (an object with \"mean\" "
                         f"and \"std\"; {type(error).__name__}: {error})") from error
