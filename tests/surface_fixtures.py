"""Fixtures shared by the user-surface tests (transform, Pillow hook, CLI, tiling).

Import the fixtures into a test module by name; every model is the randomly
initialised ``tiny`` configuration, seeded, so results are reproducible and fast.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from qgac_transforms.configs import build_model


def textured_image(seed: int, height: int, width: int, mode: str = "RGB") -> Image.Image:
    """A photo-like image with texture at every scale and no clipped pixels."""
    rng = np.random.default_rng(seed)
    channels = 1 if mode == "L" else 3
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([128 + 60 * np.sin(x / 9 + y / 13 + p) for p in rng.uniform(0, 6.3, channels)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 18, base.shape), 10, 245).astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)


def save_jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A Pillow L/RGB image as a uint8 ``(C, H, W)`` tensor."""
    array = np.asarray(image)
    return torch.from_numpy(array.reshape(*array.shape[:2], -1).copy()).permute(2, 0, 1)


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(0)
    return build_model("tiny").eval()


@pytest.fixture(scope="session")
def tiny_weights(tiny_model, tmp_path_factory):
    """The tiny model saved as a local model folder (what ``weights=`` and ``--weights`` take)."""
    folder = tmp_path_factory.mktemp("tiny-weights")
    tiny_model.save_pretrained(folder)
    return str(folder)
