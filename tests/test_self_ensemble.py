"""Self-ensemble: each orientation is exact in the DCT domain, and the ensemble turns it back."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qgac_transforms.configs import build_model
from qgac_transforms.correction import correct_planes
from qgac_transforms.dct import image_dct
from qgac_transforms.functional import correct_inputs, pixel_inputs, quality_tables
from qgac_transforms.self_ensemble import (
    ORIENTATIONS,
    correct_self_ensemble,
    flip_blocks,
    orient_coefficients,
    orient_inputs,
    orient_pixels,
    orientations_for,
    unorient_pixels,
)
from test_model import zero_residual

orientations = st.sampled_from(ORIENTATIONS)
FACTORS = {"4:2:0": (2, 2), "4:4:4": (1, 1), "4:2:2": (1, 2)}


def pixels(seed: int, channels: int, height: int, width: int) -> torch.Tensor:
    return torch.rand(1, channels, height, width, generator=torch.Generator().manual_seed(seed)) * 255


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(3)
    return build_model("tiny").eval()


def test_there_are_eight_distinct_orientations():
    image = torch.arange(16.0).reshape(4, 4)
    assert len({tuple(orient_pixels(image, o).flatten().tolist()) for o in ORIENTATIONS}) == 8


@settings(max_examples=40, deadline=None)
@given(orientation=orientations, rows=st.integers(1, 4), cols=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_orienting_coefficients_is_the_dct_of_the_oriented_pixels(orientation, rows, cols, seed):
    image = pixels(seed, 2, 8 * rows, 8 * cols)
    expected = image_dct(orient_pixels(image, orientation))
    torch.testing.assert_close(orient_coefficients(image_dct(image), orientation), expected, atol=1e-3, rtol=0)


@settings(max_examples=40, deadline=None)
@given(orientation=orientations, height=st.integers(1, 40), width=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_unorient_inverts_orient(orientation, height, width, seed):
    image = pixels(seed, 3, height, width)
    assert torch.equal(unorient_pixels(orient_pixels(image, orientation), orientation), image)


def test_flip_blocks_refuses_another_axis():
    with pytest.raises(ValueError, match="dim must be -2"):
        flip_blocks(torch.zeros(1, 1, 8, 8), 1)


@settings(max_examples=25, deadline=None)
@given(orientation=orientations, subsampling=st.sampled_from(["4:2:0", "4:4:4"]), quality=st.integers(5, 95),
       mcus=st.tuples(st.integers(1, 3), st.integers(1, 3)), seed=st.integers(0, 2**16))
def test_oriented_inputs_are_those_of_the_oriented_jpeg(orientation, subsampling, quality, mcus, seed):
    """JPEG's forward path (colour conversion, chroma averaging, DCT, rounding) commutes with the orientations."""
    image = pixels(seed, 3, 16 * mcus[0], 16 * mcus[1]).round()
    tables = quality_tables(quality)
    oriented_tables = tables.transpose(-2, -1) if orientation.transpose else tables
    got = orient_inputs(pixel_inputs(image, tables, FACTORS[subsampling]), orientation)
    expected = pixel_inputs(orient_pixels(image, orientation), oriented_tables, FACTORS[subsampling])
    torch.testing.assert_close(got.y, expected.y, atol=1e-2, rtol=0)
    torch.testing.assert_close(got.chroma, expected.chroma, atol=1e-2, rtol=0)
    assert torch.equal(got.tables, expected.tables)


@pytest.mark.parametrize(("channels", "subsampling"), [(3, "4:2:0"), (3, "4:2:2"), (3, "4:4:4"), (1, "4:4:4")])
@pytest.mark.parametrize("size", [(16, 16), (21, 37)])
def test_with_a_zero_residual_it_returns_the_plain_decode(channels, subsampling, size):
    """Padding, orienting, decoding, turning back and cropping lose nothing, at any size."""
    model = zero_residual(build_model("tiny").eval())
    inputs = pixel_inputs(pixels(1, channels, *size), quality_tables(30, channels), FACTORS[subsampling])
    torch.testing.assert_close(correct_self_ensemble(model, inputs), correct_planes(model, *inputs), atol=2e-3, rtol=0)


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
def test_the_ensemble_commutes_with_every_orientation(tiny, subsampling):
    """Averaging over the whole group makes the result equivariant, unlike one pass of the network."""
    image, tables = pixels(2, 3, 32, 48).round(), quality_tables(20)
    ensemble = correct_self_ensemble(tiny, pixel_inputs(image, tables, FACTORS[subsampling]))
    single = correct_planes(tiny, *pixel_inputs(image, tables, FACTORS[subsampling]))
    for orientation in ORIENTATIONS[1:]:
        oriented_tables = tables.transpose(-2, -1) if orientation.transpose else tables
        inputs = pixel_inputs(orient_pixels(image, orientation), oriented_tables, FACTORS[subsampling])
        torch.testing.assert_close(correct_self_ensemble(tiny, inputs), orient_pixels(ensemble, orientation),
                                   atol=0.05, rtol=0)
        assert (correct_planes(tiny, *inputs) - orient_pixels(single, orientation)).abs().max() > 0.05


def test_uneven_chroma_is_flipped_but_not_transposed():
    inputs = pixel_inputs(pixels(4, 3, 16, 16), quality_tables(50), FACTORS["4:2:2"])
    assert orientations_for(inputs) == tuple(o for o in ORIENTATIONS if not o.transpose)
    assert len(orientations_for(inputs._replace(chroma_factor=(2, 2)))) == 8


def test_tiled_ensemble_matches_the_whole_image(tiny):
    inputs = pixel_inputs(pixels(5, 3, 48, 80).round(), quality_tables(15), FACTORS["4:2:0"])
    whole = correct_inputs(tiny, inputs, tile=None, self_ensemble=True)
    tiled = correct_inputs(tiny, inputs, tile=32, overlap=64, self_ensemble=True)
    torch.testing.assert_close(tiled, whole, atol=1e-3, rtol=0)
