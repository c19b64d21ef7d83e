"""Block DCT, block layouts, zigzag order and padding: round trips and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qgac_transforms import dct

DTYPES = [torch.float32, torch.float64]
#: Tolerance of a round trip through the DCT for values of magnitude ~1000.
ATOL = {torch.float32: 2e-3, torch.float64: 1e-9}

#: libjpeg's jpeg_natural_order: natural (row-major) index of the k-th zigzag coefficient.
JPEG_NATURAL_ORDER = (
    0, 1, 8, 16, 9, 2, 3, 10,
    17, 24, 32, 25, 18, 11, 4, 5,
    12, 19, 26, 33, 40, 48, 41, 34,
    27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36,
    29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46,
    53, 60, 61, 54, 47, 55, 62, 63,
)  # fmt: skip

lead_dims = st.lists(st.integers(1, 3), min_size=0, max_size=3)
dtypes = st.sampled_from(DTYPES)
seeds = st.integers(0, 2**32 - 1)


def _random(shape, dtype, seed, scale=1000.0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1).mul(scale).to(dtype)


# --------------------------------------------------------------------------- DCT


@pytest.mark.parametrize("dtype", DTYPES)
def test_dct_matrix_is_orthonormal(dtype):
    d = dct.dct_matrix(dtype)
    assert d.shape == (8, 8) and d.dtype == dtype
    torch.testing.assert_close(d @ d.T, torch.eye(8, dtype=dtype), atol=1e-6, rtol=0)


@settings(deadline=None)
@given(lead=lead_dims, dtype=dtypes, seed=seeds)
def test_block_idct_inverts_block_dct(lead, dtype, seed):
    x = _random((*lead, 8, 8), dtype, seed)
    coefficients = dct.block_dct(x)
    assert coefficients.shape == x.shape and coefficients.dtype == dtype
    torch.testing.assert_close(dct.block_idct(coefficients), x, atol=ATOL[dtype], rtol=0)
    torch.testing.assert_close(dct.block_dct(dct.block_idct(x)), x, atol=ATOL[dtype], rtol=0)


@settings(deadline=None)
@given(lead=lead_dims, seed=seeds)
def test_block_dct_matches_scipy(lead, seed):
    fft = pytest.importorskip("scipy.fft")
    x = _random((*lead, 8, 8), torch.float64, seed)
    expected = fft.dctn(x.numpy(), type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(dct.block_dct(x).numpy(), expected, atol=1e-9, rtol=0)
    inverse = fft.idctn(x.numpy(), type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(dct.block_idct(x).numpy(), inverse, atol=1e-9, rtol=0)


def test_block_dct_known_values():
    # A constant block has only a DC coefficient: 8 * value for the orthonormal DCT.
    flat = torch.full((8, 8), 3.0, dtype=torch.float64)
    expected = torch.zeros(8, 8, dtype=torch.float64)
    expected[0, 0] = 24.0
    torch.testing.assert_close(dct.block_dct(flat), expected, atol=1e-12, rtol=0)
    # A single horizontal-frequency-1 cosine is one AC coefficient at [0, 1].
    k = torch.arange(8, dtype=torch.float64)
    wave = torch.cos((2 * k + 1) * math.pi / 16).expand(8, 8)
    out = dct.block_dct(wave)
    assert abs(out[0, 1].item()) > 5
    out[0, 1] = 0
    assert out.abs().max().item() < 1e-12


def test_integer_input_is_computed_in_float32():
    x = torch.randint(-128, 128, (2, 8, 8))
    out = dct.block_dct(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, dct.block_dct(x.to(torch.float32)))


@settings(deadline=None)
@given(lead=st.lists(st.integers(1, 2), max_size=2), rows=st.integers(1, 4), cols=st.integers(1, 4), dtype=dtypes, seed=seeds)
def test_image_dct_is_blockwise_and_invertible(lead, rows, cols, dtype, seed):
    image = _random((*lead, 8 * rows, 8 * cols), dtype, seed)
    coefficients = dct.image_dct(image)
    assert coefficients.shape == image.shape
    torch.testing.assert_close(dct.image_idct(coefficients), image, atol=ATOL[dtype], rtol=0)
    i, j = rows - 1, cols - 1
    block = image[..., 8 * i : 8 * i + 8, 8 * j : 8 * j + 8]
    torch.testing.assert_close(
        coefficients[..., 8 * i : 8 * i + 8, 8 * j : 8 * j + 8], dct.block_dct(block), atol=ATOL[dtype], rtol=0
    )


def test_block_dct_gradcheck():
    x = torch.randn(2, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dct.block_dct, (x,))
    assert torch.autograd.gradcheck(dct.block_idct, (x,))
    image = torch.randn(1, 8, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dct.image_dct, (image,))


# --------------------------------------------------------------------------- layouts


@settings(deadline=None)
@given(lead=st.lists(st.integers(1, 3), max_size=2), rows=st.integers(1, 5), cols=st.integers(1, 5), seed=seeds)
def test_blockify_deblockify(lead, rows, cols, seed):
    image = _random((*lead, 8 * rows, 8 * cols), torch.float32, seed)
    blocks = dct.blockify(image)
    assert blocks.shape == (*lead, rows, cols, 8, 8)
    i, j = seed % rows, (seed // 7) % cols
    assert torch.equal(blocks[..., i, j, :, :], image[..., 8 * i : 8 * i + 8, 8 * j : 8 * j + 8])
    assert torch.equal(dct.deblockify(blocks), image)


@pytest.mark.parametrize("shape", [(7, 8), (8, 9), (3, 16, 12), (8,)])
def test_blockify_rejects_non_multiples(shape):
    with pytest.raises(ValueError, match="multiples of 8"):
        dct.blockify(torch.zeros(shape))


@settings(deadline=None)
@given(batch=st.integers(1, 2), channels=st.integers(1, 3), rows=st.integers(1, 3), cols=st.integers(1, 3), seed=seeds)
def test_blocks_to_channels_layout_and_inverse(batch, channels, rows, cols, seed):
    x = _random((batch, channels, 8 * rows, 8 * cols), torch.float64, seed)
    out = dct.blocks_to_channels(x)
    assert out.shape == (batch, 64 * channels, rows, cols)
    # channel f * C + c holds frequency f (natural order) of input channel c
    blocks = dct.blockify(x)  # (B, C, rows, cols, 8, 8)
    for f in (0, 1, 8, 9, 27, 63):
        for c in range(channels):
            assert torch.equal(out[:, f * channels + c], blocks[:, c, :, :, f // 8, f % 8])
    assert torch.equal(dct.channels_to_blocks(out), x)
    y = _random((batch, 64 * channels, rows, cols), torch.float64, seed + 1)
    assert torch.equal(dct.blocks_to_channels(dct.channels_to_blocks(y)), y)


def test_channels_to_blocks_rejects_bad_channel_count():
    with pytest.raises(ValueError, match="multiple of 64"):
        dct.channels_to_blocks(torch.zeros(1, 65, 2, 2))


# --------------------------------------------------------------------------- zigzag


def test_zigzag_table_is_jpeg_order():
    assert dct.ZIGZAG == JPEG_NATURAL_ORDER
    assert sorted(dct.ZIGZAG) == list(range(64))
    # the first entries spelled out as (row, column)
    first = [(k // 8, k % 8) for k in dct.ZIGZAG[:10]]
    assert first == [(0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (0, 3), (1, 2), (2, 1), (3, 0)]


@settings(deadline=None)
@given(lead=lead_dims, seed=seeds)
def test_zigzag_unzigzag_inverse(lead, seed):
    blocks = _random((*lead, 8, 8), torch.float32, seed)
    vectors = dct.zigzag(blocks)
    assert vectors.shape == (*lead, 64)
    assert torch.equal(dct.unzigzag(vectors), blocks)
    assert torch.equal(dct.zigzag(dct.unzigzag(vectors)), vectors)
    flat = blocks.reshape(*lead, 64)
    for k in (0, 1, 2, 5, 20, 63):
        assert torch.equal(vectors[..., k], flat[..., JPEG_NATURAL_ORDER[k]])


def test_zigzag_of_natural_indices():
    natural = torch.arange(64).reshape(8, 8)
    assert dct.zigzag(natural).tolist() == list(JPEG_NATURAL_ORDER)
    assert torch.equal(dct.unzigzag(torch.tensor(JPEG_NATURAL_ORDER)), natural)


# --------------------------------------------------------------------------- padding


@settings(deadline=None)
@given(
    lead=st.lists(st.integers(1, 2), max_size=2),
    height=st.integers(1, 20),
    width=st.integers(1, 20),
    mh=st.sampled_from([1, 2, 8, 16]),
    mw=st.sampled_from([1, 2, 8, 16]),
    seed=seeds,
)
def test_pad_to_multiple_and_crop(lead, height, width, mh, mw, seed):
    x = _random((*lead, height, width), torch.float32, seed)
    padded = dct.pad_to_multiple(x, mh, mw)
    ph, pw = padded.shape[-2:]
    assert padded.shape[:-2] == x.shape[:-2]
    assert ph % mh == 0 and pw % mw == 0 and height <= ph < height + mh and width <= pw < width + mw
    assert torch.equal(dct.crop(padded, height, width), x)
    # edge replication: padded rows/columns copy the last real row/column
    assert torch.equal(padded[..., height:, :width], x[..., -1:, :].expand(*lead, ph - height, width))
    assert torch.equal(padded[..., :height, width:], x[..., :, -1:].expand(*lead, height, pw - width))
    if ph > height and pw > width:
        assert torch.equal(padded[..., height:, width:], x[..., -1:, -1:].expand(*lead, ph - height, pw - width))


def test_pad_to_multiple_constant_mode_and_noop():
    x = torch.ones(1, 3, 5)
    assert dct.pad_to_multiple(torch.ones(8, 8), 8, 8).shape == (8, 8)
    padded = dct.pad_to_multiple(x, 8, 8, mode="constant")
    assert padded.shape == (1, 8, 8) and padded.sum().item() == 15
    with pytest.raises(ValueError):
        dct.pad_to_multiple(torch.zeros(0, 5), 8, 8)


@settings(deadline=None)
@given(
    lead=st.lists(st.integers(1, 2), max_size=2),
    rows=st.integers(1, 3),
    cols=st.integers(1, 3),
    extra_rows=st.integers(0, 3),
    extra_cols=st.integers(0, 3),
    seed=seeds,
)
def test_pad_blocks(lead, rows, cols, extra_rows, extra_cols, seed):
    x = _random((*lead, 8 * rows, 8 * cols), torch.float32, seed)
    out = dct.pad_blocks(x, rows + extra_rows, cols + extra_cols)
    assert out.shape == (*lead, 8 * (rows + extra_rows), 8 * (cols + extra_cols))
    assert torch.equal(dct.crop(out, 8 * rows, 8 * cols), x)
    blocks_in, blocks_out = dct.blockify(x), dct.blockify(out)
    for i in range(rows + extra_rows):
        for j in range(cols + extra_cols):
            assert torch.equal(blocks_out[..., i, j, :, :], blocks_in[..., min(i, rows - 1), min(j, cols - 1), :, :])


def test_pad_blocks_cannot_shrink():
    with pytest.raises(ValueError):
        dct.pad_blocks(torch.zeros(16, 16), 1, 2)


def test_crop_keeps_top_left():
    x = torch.arange(30.0).reshape(5, 6)
    assert torch.equal(dct.crop(x, 2, 3), x[:2, :3])
