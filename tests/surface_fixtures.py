"""Image and report helpers for the tests, imported by name (the fixtures are in ``conftest.py``)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor as to_tensor  # noqa: F401 - re-exported for the tests


def textured_image(seed: int, height: int, width: int, mode: str = "RGB") -> Image.Image:
    """A photo-like image with texture at every scale and no clipped pixels."""
    rng = np.random.default_rng(seed)
    channels = 1 if mode == "L" else 3
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([128 + 60 * np.sin(x / 9 + y / 13 + p) for p in rng.uniform(0, 6.3, channels)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 18, base.shape), 10, 245).astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)


def random_image(seed: int, height: int, width: int, mode: str = "RGB", smooth: bool = False) -> Image.Image:
    """A reproducible random image; ``smooth`` gives a photo-like gradient with mild noise."""
    rng = np.random.default_rng(seed)
    channels = 1 if mode == "L" else 3
    if smooth:
        y, x = np.mgrid[0:height, 0:width].astype(np.float64)
        phase = rng.uniform(0, 2 * np.pi, size=channels)
        base = np.stack([128 + 90 * np.sin(x / 7 + y / 11 + p) for p in phase], axis=-1)
        pixels = base + rng.normal(0, 8, size=base.shape)
    else:
        pixels = rng.integers(0, 256, size=(height, width, channels))
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)


def save_jpeg(image: Image.Image, **options) -> bytes:
    """``image`` saved as a JPEG (Pillow's save options) and returned as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def strict_json_loads(text: str) -> Any:
    """``json.loads`` that fails on ``NaN`` and ``Infinity``, which are not standard JSON."""
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} is not standard JSON")

    return json.loads(text, parse_constant=refuse)
