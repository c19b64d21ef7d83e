"""Shared test setup: fast torch, hypothesis profiles and small JPEG factories.

Every test makes its own images (in memory or under pytest's temporary folders);
nothing is read from outside the repository.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from PIL import Image

# Tiny tensors: intra-op threads only add scheduling overhead (and spin against
# other work on a small machine).
torch.set_num_threads(1)

settings.register_profile(
    "default",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("QGAC_HYPOTHESIS_PROFILE", "default"))


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


def jpeg_bytes(image: Image.Image, **save_options) -> bytes:
    """``image`` saved as a JPEG (Pillow's save options) and returned as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **save_options)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def make_image():
    return random_image


@pytest.fixture(scope="session")
def make_jpeg():
    return jpeg_bytes


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory):
    """A folder for files written by hypothesis examples (function-scoped tmp_path
    would be shared by all examples of one test anyway)."""
    return tmp_path_factory.mktemp("jpegs")
