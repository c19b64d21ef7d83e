"""libjpeg quality tables, (de)quantization and quality estimation, checked against Pillow."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from qgac_transforms import quantization as q
from qgac_transforms.dct import blockify

seeds = st.integers(0, 2**32 - 1)


def _pillow_tables(image: Image.Image, quality: int) -> dict[int, np.ndarray]:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    with Image.open(io.BytesIO(buffer.getvalue())) as saved:
        return {k: np.asarray(v).reshape(8, 8) for k, v in saved.quantization.items()}


@pytest.fixture(scope="module")
def pillow_tables(make_image):
    """Pillow's (libjpeg's) luma and chroma tables for every quality 1..100."""
    image = make_image(0, 8, 8)
    return {quality: _pillow_tables(image, quality) for quality in range(1, 101)}


def test_quality_scale():
    assert q.quality_scale(50) == 100
    assert q.quality_scale(100) == 0
    assert q.quality_scale(1) == 5000
    assert q.quality_scale(25) == 200
    assert q.quality_scale(75) == 50
    for bad in (0, 101, -5):
        with pytest.raises(ValueError):
            q.quality_scale(bad)


def test_quality_to_table_matches_pillow_for_every_quality(pillow_tables):
    for quality, tables in pillow_tables.items():
        assert set(tables) == {0, 1}
        luma, chroma = q.quality_to_table(quality), q.quality_to_table(quality, chroma=True)
        assert luma.shape == (8, 8) and luma.dtype == torch.int32
        np.testing.assert_array_equal(luma.numpy(), tables[0], err_msg=f"luma table, quality {quality}")
        np.testing.assert_array_equal(chroma.numpy(), tables[1], err_msg=f"chroma table, quality {quality}")


def test_quality_to_table_standard_tables():
    assert q.quality_to_table(50).flatten().tolist() == list(q.STANDARD_LUMA_TABLE)
    assert q.quality_to_table(50, chroma=True).flatten().tolist() == list(q.STANDARD_CHROMA_TABLE)
    assert (q.quality_to_table(100) == 1).all()
    assert (q.quality_to_table(1) == 255).all()
    unclamped = q.quality_to_table(1, baseline=False)
    assert unclamped[0, 0].item() == 800 and unclamped.max().item() > 255
    assert (q.quality_to_table(1, chroma=True, baseline=False) <= 32767).all()


def test_tables_shrink_as_quality_grows():
    previous = q.quality_to_table(1, baseline=False)
    for quality in range(2, 101):
        table = q.quality_to_table(quality, baseline=False)
        assert (table <= previous).all()
        previous = table


def test_estimate_quality_recovers_pillow_quality(pillow_tables):
    for quality, tables in pillow_tables.items():
        assert q.estimate_quality(torch.from_numpy(tables[0])) == quality
        # chroma tables saturate at 255 for qualities 1..3: recover the table itself
        estimated = q.estimate_quality(torch.from_numpy(tables[1]), chroma=True)
        np.testing.assert_array_equal(q.quality_to_table(estimated, chroma=True).numpy(), tables[1])
        if quality > 3:
            assert estimated == quality


@pytest.mark.parametrize("quality", [5, 37, 90])
def test_estimate_quality_from_grayscale_file(make_image, quality):
    tables = _pillow_tables(make_image(1, 16, 16, mode="L"), quality)
    assert list(tables) == [0]
    assert q.estimate_quality(tables[0]) == quality  # a numpy table works too
    assert q.estimate_quality(tables[0].flatten().tolist()) == quality


def test_estimate_quality_of_custom_table_is_nearest():
    table = q.quality_to_table(60).to(torch.float64) + 0.4
    assert q.estimate_quality(table) == 60


@settings(deadline=None)
@given(
    lead=st.lists(st.integers(1, 2), max_size=2),
    rows=st.integers(1, 3),
    cols=st.integers(1, 3),
    seed=seeds,
    per_plane=st.booleans(),
)
def test_quantize_dequantize_error_bound(lead, rows, cols, seed, per_plane):
    generator = torch.Generator().manual_seed(seed)
    coefficients = (torch.rand(*lead, 8 * rows, 8 * cols, generator=generator, dtype=torch.float64) * 2 - 1) * 2000
    table_shape = (*lead, 8, 8) if per_plane else (8, 8)
    table = torch.randint(1, 256, table_shape, generator=generator, dtype=torch.int32)
    levels = q.quantize(coefficients, table)
    assert levels.shape == coefficients.shape
    assert torch.equal(levels, levels.round())
    restored = q.dequantize(levels, table)
    tiled = blockify(restored).new_zeros(blockify(restored).shape) + table.to(torch.float64)[..., None, None, :, :]
    error = blockify((restored - coefficients).abs())
    assert (error <= tiled / 2 + 1e-9).all()
    # quantizing what dequantize produced gives the same levels back
    assert torch.equal(q.quantize(restored, table), levels)


@settings(deadline=None)
@given(rows=st.integers(1, 3), cols=st.integers(1, 3), quality=st.integers(1, 100), seed=seeds)
def test_dequantize_integer_levels(rows, cols, quality, seed):
    generator = torch.Generator().manual_seed(seed)
    levels = torch.randint(-100, 100, (8 * rows, 8 * cols), generator=generator, dtype=torch.int16)
    table = q.quality_to_table(quality)
    values = q.dequantize(levels, table)
    assert values.dtype == torch.float32
    expected = blockify(levels.to(torch.float32)) * table.to(torch.float32)
    assert torch.equal(blockify(values), expected)
    assert torch.equal(q.quantize(values, table).to(torch.int16), levels)


def test_dequantize_gradcheck():
    levels = torch.randn(8, 8, dtype=torch.float64, requires_grad=True)
    table = q.quality_to_table(50).to(torch.float64)
    assert torch.autograd.gradcheck(lambda x: q.dequantize(x, table), (levels,))
