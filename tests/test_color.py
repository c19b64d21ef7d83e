"""JFIF colour conversion and chroma down/upsampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from qgac_transforms import color

FACTORS = [(1, 1), (1, 2), (2, 1), (2, 2), (1, 4), (2, 4), (4, 1), (3, 3)]
seeds = st.integers(0, 2**32 - 1)
sizes = st.integers(1, 24)


def _pixels(shape, seed, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=generator, dtype=torch.float64) * 255).to(dtype)


@settings(deadline=None)
@given(lead=st.lists(st.integers(1, 2), max_size=2), h=sizes, w=sizes, seed=seeds, dtype=st.sampled_from([torch.float32, torch.float64]))
def test_rgb_ycbcr_round_trip(lead, h, w, seed, dtype):
    rgb = _pixels((*lead, 3, h, w), seed, dtype)
    ycbcr = color.rgb_to_ycbcr(rgb)
    assert ycbcr.shape == rgb.shape and ycbcr.dtype == dtype
    atol = 1e-6 if dtype == torch.float64 else 1e-3  # the JFIF constants have 9 digits
    torch.testing.assert_close(color.ycbcr_to_rgb(ycbcr), rgb, atol=atol, rtol=0)
    torch.testing.assert_close(color.rgb_to_ycbcr(color.ycbcr_to_rgb(rgb)), rgb, atol=atol, rtol=0)
    # Y is a weighted mean of R, G, B; all JFIF YCbCr values lie in [0, 255.5]
    assert ycbcr.min() >= -1e-3 and ycbcr.max() <= 255.5 + 1e-3


@pytest.mark.parametrize(
    "rgb, ycbcr",
    [
        ((0, 0, 0), (0, 128, 128)),
        ((255, 255, 255), (255, 128, 128)),
        ((128, 128, 128), (128, 128, 128)),
        ((255, 0, 0), (76.245, 84.972, 255.5)),
        ((0, 0, 255), (29.07, 255.5, 107.27)),
    ],
)
def test_known_jfif_values(rgb, ycbcr):
    pixel = torch.tensor(rgb, dtype=torch.float64)[:, None, None]
    out = color.rgb_to_ycbcr(pixel)[:, 0, 0]
    torch.testing.assert_close(out, torch.tensor(ycbcr, dtype=torch.float64), atol=0.01, rtol=0)


def test_matches_pillow_ycbcr_conversion():
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    ours = color.rgb_to_ycbcr(torch.from_numpy(pixels).permute(2, 0, 1).to(torch.float64))
    theirs = np.asarray(Image.fromarray(pixels).convert("YCbCr")).transpose(2, 0, 1).astype(np.float64)
    assert np.abs(ours.numpy() - theirs).max() < 1.5  # Pillow rounds in fixed point


@pytest.mark.parametrize("shape", [(2, 4, 4), (4, 4), (1, 4, 4, 4)])
def test_color_conversion_rejects_wrong_channels(shape):
    with pytest.raises(ValueError):
        color.rgb_to_ycbcr(torch.zeros(shape))
    with pytest.raises(ValueError):
        color.ycbcr_to_rgb(torch.zeros(shape))


@settings(deadline=None)
@given(h=sizes, w=sizes, factor=st.sampled_from(FACTORS), value=st.floats(0, 255), lead=st.lists(st.integers(1, 2), max_size=2))
def test_downsample_constant_is_constant(h, w, factor, value, lead):
    plane = torch.full((*lead, h, w), value, dtype=torch.float64)
    out = color.downsample_chroma(plane, factor)
    assert out.shape == (*lead, -(-h // factor[0]), -(-w // factor[1]))
    torch.testing.assert_close(out, torch.full_like(out, value), atol=1e-9, rtol=0)


@settings(deadline=None)
@given(rows=st.integers(1, 5), cols=st.integers(1, 5), factor=st.sampled_from(FACTORS), seed=seeds)
def test_downsample_is_box_average(rows, cols, factor, seed):
    v, h = factor
    plane = _pixels((rows * v, cols * h), seed)
    out = color.downsample_chroma(plane, factor)
    expected = plane.reshape(rows, v, cols, h).mean(dim=(1, 3))
    torch.testing.assert_close(out, expected, atol=1e-9, rtol=0)


def test_downsample_replicates_the_edge():
    # 3 columns at factor 2: the last output averages column 2 with a copy of itself
    plane = torch.tensor([[0.0, 10.0, 50.0]])
    assert color.downsample_chroma(plane, (1, 2)).tolist() == [[5.0, 50.0]]


@settings(deadline=None)
@given(h=sizes, w=sizes, factor=st.sampled_from(FACTORS), mode=st.sampled_from(["fancy", "nearest"]), seed=seeds)
def test_upsample_shapes(h, w, factor, mode, seed):
    plane = _pixels((2, h, w), seed)
    out = color.upsample_chroma(plane, factor, mode)
    assert out.shape == (2, h * factor[0], w * factor[1])
    assert out.min() >= plane.min() - 1e-9 and out.max() <= plane.max() + 1e-9  # convex weights


@settings(deadline=None)
@given(h=sizes, w=sizes, factor=st.sampled_from(FACTORS), value=st.floats(0, 255), mode=st.sampled_from(["fancy", "nearest"]))
def test_upsample_constant_is_constant(h, w, factor, value, mode):
    plane = torch.full((h, w), value, dtype=torch.float64)
    out = color.upsample_chroma(plane, factor, mode)
    torch.testing.assert_close(out, torch.full_like(out, value), atol=1e-9, rtol=0)
    # and down(up(constant)) is the same constant plane
    torch.testing.assert_close(color.downsample_chroma(out, factor), plane, atol=1e-9, rtol=0)


@settings(deadline=None)
@given(h=sizes, w=sizes, factor=st.sampled_from(FACTORS), seed=seeds)
def test_nearest_upsampling_replicates(h, w, factor, seed):
    plane = _pixels((h, w), seed)
    out = color.upsample_chroma(plane, factor, "nearest")
    expected = plane.repeat_interleave(factor[0], 0).repeat_interleave(factor[1], 1)
    assert torch.equal(out, expected)
    torch.testing.assert_close(color.downsample_chroma(out, factor), plane, atol=1e-9, rtol=0)


def test_fancy_upsampling_is_libjpeg_triangle_filter():
    row = torch.tensor([[0.0, 8.0, 16.0, 40.0]], dtype=torch.float64)
    out = color.upsample_chroma(row, (1, 2), "fancy")
    # libjpeg h2v1: 3/4 of the nearest sample + 1/4 of the next nearest, edges replicated
    expected = [0.0, 2.0, 6.0, 10.0, 14.0, 22.0, 34.0, 40.0]
    assert out[0].tolist() == pytest.approx(expected)
    column = color.upsample_chroma(row.T, (2, 1), "fancy")
    assert column[:, 0].tolist() == pytest.approx(expected)
    # 2x2 is the separable product of the two
    block = torch.outer(torch.tensor([1.0, 5.0, 9.0]), torch.tensor([0.0, 4.0, 8.0])).to(torch.float64)
    both = color.upsample_chroma(block, (2, 2), "fancy")
    separable = color.upsample_chroma(color.upsample_chroma(block, (2, 1)), (1, 2))
    torch.testing.assert_close(both, separable)


def test_fancy_upsampling_falls_back_like_libjpeg():
    # libjpeg has no fancy kernel for planes at most 2 samples wide (2h) or for other factors
    narrow = torch.tensor([[0.0, 8.0], [16.0, 24.0]])
    for factor in [(1, 2), (2, 2)]:
        assert torch.equal(color.upsample_chroma(narrow, factor, "fancy"), color.upsample_chroma(narrow, factor, "nearest"))
    wide = torch.arange(12.0).reshape(3, 4)
    for factor in [(1, 4), (2, 4), (4, 1), (3, 3)]:
        assert torch.equal(color.upsample_chroma(wide, factor, "fancy"), color.upsample_chroma(wide, factor, "nearest"))
    # vertical-only doubling is fancy at any size
    assert not torch.equal(color.upsample_chroma(narrow, (2, 1), "fancy"), color.upsample_chroma(narrow, (2, 1), "nearest"))


def test_upsample_rejects_unknown_mode():
    with pytest.raises(ValueError, match="unknown upsampling mode"):
        color.upsample_chroma(torch.zeros(2, 2), (2, 2), "bicubic")


def test_upsample_gradcheck():
    plane = torch.rand(1, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: color.upsample_chroma(p, (2, 2)), (plane,))
    rgb = torch.rand(3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(color.rgb_to_ycbcr, (rgb,))
