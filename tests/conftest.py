"""Shared test setup: fast torch, hypothesis profiles, image and JPEG factories, tiny models.

Every test makes its own images (in memory or under pytest's temporary folders);
nothing is read from outside the repository.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings
from surface_fixtures import random_image, save_jpeg

from qgac_transforms.configs import build_model

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


@pytest.fixture(scope="session")
def make_image():
    return random_image


@pytest.fixture(scope="session")
def make_jpeg():
    return save_jpeg


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory):
    """A folder for files written by hypothesis examples (function-scoped tmp_path
    would be shared by all examples of one test anyway)."""
    return tmp_path_factory.mktemp("jpegs")


@pytest.fixture(scope="session")
def tiny_model():
    """The randomly initialised ``tiny`` configuration, seeded: reproducible and fast."""
    torch.manual_seed(0)
    return build_model("tiny").eval()


@pytest.fixture(scope="session")
def tiny_weights(tiny_model, tmp_path_factory):
    """The tiny model saved as a local model folder (what ``weights=`` and ``--weights`` take)."""
    folder = tmp_path_factory.mktemp("tiny-weights")
    tiny_model.save_pretrained(folder)
    return str(folder)
