"""Tiled correction: MCU-aligned overlapping tiles give the whole-image result (within 1/255)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from surface_fixtures import save_jpeg, textured_image

from qgac_transforms import functional as F
from qgac_transforms import tiling
from qgac_transforms.correction import correct, model_inputs
from qgac_transforms.codec import block_grid
from qgac_transforms.jpeg_io import JPEGCoefficients, read_coefficients
from qgac_transforms.quantization import quality_to_table

SAMPLINGS = {
    "gray": ((1, 1),),
    "4:4:4": ((1, 1), (1, 1), (1, 1)),
    "4:2:2": ((1, 2), (1, 1), (1, 1)),
    "4:2:0": ((2, 2), (1, 1), (1, 1)),
    "4:4:0": ((2, 1), (1, 1), (1, 1)),
    "4:1:1": ((1, 4), (1, 1), (1, 1)),
}


def random_coefficients(seed: int, height: int, width: int, layout: str) -> JPEGCoefficients:
    """Coefficients of a made-up JPEG: Laplacian levels, larger at low frequencies."""
    rng = np.random.default_rng(seed)
    sampling = SAMPLINGS[layout]
    vmax, hmax = max(v for v, _ in sampling), max(h for _, h in sampling)
    scale = 6.0 / (1 + np.add.outer(np.arange(8), np.arange(8)))
    blocks = []
    for s in sampling:
        rows, cols = block_grid(height, width, (vmax // s[0], hmax // s[1]))
        levels = np.round(rng.laplace(0, 1, (rows, cols, 8, 8)) * scale).astype(np.int16)
        levels[..., 0, 0] = rng.integers(-20, 20, (rows, cols))
        blocks.append(levels)
    tables = tuple(quality_to_table(30, chroma=i > 0).numpy() for i in range(len(sampling)))
    return JPEGCoefficients(
        tuple(blocks), tables, sampling, width, height, "gray" if layout == "gray" else "ycbcr"
    )


@settings(deadline=None, max_examples=12)
@given(
    seed=st.integers(0, 2**16),
    height=st.integers(8, 90),
    width=st.integers(8, 90),
    layout=st.sampled_from(sorted(SAMPLINGS)),
    tile=st.integers(12, 48),
    overlap=st.sampled_from([16, 32, 48]),
)
def test_tiles_match_whole_image(tiny_model, seed, height, width, layout, tile, overlap):
    coefficients = random_coefficients(seed, height, width, layout)
    whole = correct(tiny_model, coefficients)
    tiled = F.correct_jpeg(tiny_model, coefficients, tile=tile, overlap=overlap)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() <= 1.0  # 1/255 of the range


def test_tiles_match_on_a_real_jpeg(tiny_model):
    coefficients = read_coefficients(save_jpeg(textured_image(3, 200, 168), quality=25))
    whole = correct(tiny_model, coefficients)
    tiled = F.correct_jpeg(tiny_model, coefficients, tile=64)
    assert (tiled - whole).abs().max() <= 1.0


def test_without_overlap_seams_show(tiny_model):
    """The overlap is what makes tiles agree: without it the borders differ (the test can fail)."""
    coefficients = random_coefficients(5, 96, 96, "4:2:0")
    whole = correct(tiny_model, coefficients)
    seams = F.correct_jpeg(tiny_model, coefficients, tile=32, overlap=0)
    assert (seams - whole).abs().max() > 1.0


def test_tiles_are_mcu_aligned(tiny_model, monkeypatch):
    """Every tile the model sees starts on the 16-pixel MCU grid and holds whole chroma blocks."""
    coefficients = random_coefficients(1, 100, 76, "4:2:0")
    seen = []
    original = tiling.correct_planes

    def spy(model, y, tables, chroma, factor, height, width):
        seen.append((y.shape[-2:], chroma.shape[-2:], height, width))
        return original(model, y, tables, chroma, factor, height, width)

    monkeypatch.setattr(tiling, "correct_planes", spy)
    F.correct_jpeg(tiny_model, coefficients, tile=20, overlap=10)
    assert len(seen) > 1
    for y_shape, chroma_shape, height, width in seen:
        assert all(size % 8 == 0 for size in (*y_shape, *chroma_shape))
        assert chroma_shape[0] * 2 >= y_shape[0] and chroma_shape[1] * 2 >= y_shape[1]
        assert height <= y_shape[0] and width <= y_shape[1]


def test_single_tile_is_the_whole_image(tiny_model):
    coefficients = random_coefficients(2, 40, 48, "4:2:0")
    inputs = model_inputs(coefficients)
    whole = correct(tiny_model, coefficients)[None]
    assert torch.equal(tiling.correct_planes_tiled(tiny_model, inputs, tile=64), whole)
    assert torch.equal(tiling.correct_planes_tiled(tiny_model, inputs, tile=None), whole)


def test_bad_tile_arguments(tiny_model):
    inputs = model_inputs(random_coefficients(2, 64, 64, "gray"))
    with pytest.raises(ValueError, match="tile"):
        tiling.correct_planes_tiled(tiny_model, inputs, tile=0)
    with pytest.raises(ValueError, match="overlap"):
        tiling.correct_planes_tiled(tiny_model, inputs, tile=16, overlap=-16)
