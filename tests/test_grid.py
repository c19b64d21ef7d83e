"""The JPEG grid in decoded pixels (issue 20): any crop offset and size, quarter turns and flips,
subsampling; non-JPEG pixels refused; coefficients recovered on the grid; the transform's geometry."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps
from surface_fixtures import save_jpeg, textured_image, to_tensor

from qgac_transforms import functional as F
from qgac_transforms.correction import model_inputs
from qgac_transforms.grid import find_grid, read_steps, recover_inputs, unsample_chroma
from qgac_transforms.color import upsample_chroma
from qgac_transforms.jpeg_io import read_coefficients
from qgac_transforms.quantization import quality_tables, quality_to_table, quantize
from qgac_transforms.transforms import JPEGArtifactCorrection

#: Pillow's subsampling code -> the chroma factor (vertical, horizontal).
FACTORS = {0: (1, 1), 1: (1, 2), 2: (2, 2)}


def decode(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as image:
        return to_tensor(image)


def orient(pixels: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    """``turns`` quarter turns, then a left-right flip."""
    pixels = torch.rot90(pixels, turns, (-2, -1))
    return pixels.flip(-1) if flip else pixels


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(
    quality=st.integers(10, 60), subsampling=st.sampled_from([0, 1, 2]), seed=st.integers(0, 1000),
    top=st.integers(0, 31), left=st.integers(0, 31), height=st.integers(96, 128), width=st.integers(96, 128),
    turns=st.integers(0, 3), flip=st.booleans(),
)  # fmt: skip
def test_any_crop_and_turn_of_a_decode_is_found(quality, subsampling, seed, top, left, height, width, turns, flip):
    decoded = decode(save_jpeg(textured_image(seed, 160, 160), quality=quality, subsampling=subsampling))
    crop = decoded[:, top : top + height, left : left + width]
    grid = find_grid(orient(crop, turns, flip).float())
    assert grid.quality == quality and grid.transposed == (turns % 2 == 1)
    # in the JPEG's orientation the pixels are the crop, flipped along some axes: then the
    # crop's last row (column) is first, and its offset in its MCU is counted from the other end
    rows_flipped = turns in ((1, 2) if flip else (2, 3))
    cols_flipped = turns in ((0, 1) if flip else (1, 2))
    v, h = FACTORS[subsampling]
    expected = ((-(top + height) if rows_flipped else top) % (8 * v), (-(left + width) if cols_flipped else left) % (8 * h))
    assert grid.factor == (v, h) and grid.offset == expected


@settings(deadline=None, max_examples=12, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 1000), quality=st.integers(10, 90), scale=st.floats(0.55, 0.9) | st.floats(1.1, 1.6), kind=st.sampled_from(["resized", "lossless"]))
def test_pixels_that_are_no_jpeg_decode_are_refused(seed, quality, scale, kind):
    image = textured_image(seed, 96, 112)
    if kind == "resized":  # a smooth JPEG decode, resized
        smooth = image.resize((28, 24), Image.BICUBIC).resize((112, 96), Image.BICUBIC)
        with Image.open(io.BytesIO(save_jpeg(smooth, quality=quality))) as decoded:
            image = decoded.resize((round(112 * scale), round(96 * scale)), Image.BILINEAR)
    with pytest.raises(ValueError, match="no 8x8 quantization grid|too few unclipped textured"):
        find_grid(to_tensor(image).float())
    with pytest.raises(ValueError, match="no 8x8 quantization grid|too few"):
        F.estimate_quality_from_pixels(to_tensor(image).float())


def smooth_decode(seed: int, quality: int) -> torch.Tensor:
    """A JPEG decode of a smooth image: its quantization zeroed all AC coefficients but a few."""
    smooth = textured_image(seed, 96, 112).resize((14, 12), Image.BICUBIC).resize((224, 192), Image.BICUBIC)
    return decode(save_jpeg(smooth, quality=quality))


@pytest.mark.parametrize("seed", [0, 1, 4])
def test_smooth_decode_is_called_too_smooth_not_no_jpeg(seed):
    crop = smooth_decode(seed, 10)[:, 3:, 5:].float()  # its grid stands out, but no AC step can be read
    with pytest.raises(ValueError, match="too few unclipped textured") as error:
        find_grid(crop)
    assert "no 8x8 quantization grid" not in str(error.value)
    assert find_grid(crop, quality_tables(10, 3), 10).offset == (3, 5)


def test_given_tables_go_on_a_grid_that_stands_out_with_no_step_to_read():
    levels = 20 + 215 * torch.rand((1, 25, 25), generator=torch.Generator().manual_seed(0))
    # flat blocks of non-integer levels: the grid stands out, and not even the DC step can be
    # read (flat blocks of integer levels show a DC step of 8, which is enough with tables)
    pixels = levels.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, 3:, 5:]
    with pytest.raises(ValueError, match="too few unclipped textured"):
        find_grid(pixels)
    assert find_grid(pixels, quality_tables(50, 1), 50).offset == (3, 5)


def test_no_grid_in_few_blocks_is_not_called_proof():
    small, large = (to_tensor(textured_image(3, side, side)).float() for side in (64, 160))  # never JPEG-compressed
    with pytest.raises(ValueError, match="no 8x8 quantization grid at any phase, and they are too few to tell"):
        find_grid(small)
    with pytest.raises(ValueError, match="no 8x8 quantization grid at any phase, so these pixels are not a JPEG"):
        find_grid(large)


def test_read_steps_finds_every_readable_step():
    coefficients = read_coefficients(save_jpeg(textured_image(3, 128, 128, "L"), quality=50))
    pixels = decode(save_jpeg(textured_image(3, 128, 128, "L"), quality=50)).float()
    from qgac_transforms.dct import block_dct, blockify

    steps, support = read_steps(block_dct(blockify(pixels[0] - 128)).reshape(-1, 64))
    read = steps > 0
    assert int(read.sum()) >= 20 and torch.equal(steps[read], torch.from_numpy(coefficients.tables[0]).flatten()[read].long())
    assert bool((support[read] >= 20).all())


def test_unsample_inverts_the_decoders_upsampling():
    samples = torch.rand(2, 12, 10) * 255
    for factor in [(2, 2), (1, 2), (2, 1), (1, 4)]:
        assert torch.allclose(unsample_chroma(upsample_chroma(samples, factor), factor), samples, atol=0.01)


def saturated_image() -> Image.Image:
    """A textured image with a patch of saturated colour, whose decode is clipped at 0 and 255."""
    array = np.asarray(textured_image(5, 96, 128)).astype(np.int64)
    array[24:72, 24:104] += np.array([70, 0, -140])
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("subsampling", [0, 2])
def test_coefficients_of_a_crop_are_recovered_on_its_grid(subsampling):
    """A crop at any offset gets its file's coefficients back in every block it covers whole; where
    the decoder clipped, alternating projections recover what re-encoding the clipped pixels misses."""
    data = save_jpeg(saturated_image(), quality=30, subsampling=subsampling)
    planes, tables = model_inputs(read_coefficients(data)), quality_tables(30)
    top, left, height, width = 11, 5, 74, 112
    crop = decode(data)[:, top : top + height, left : left + width].float()
    grid = find_grid(crop)
    v, h = FACTORS[subsampling]
    assert bool(((crop == 0) | (crop == 255)).any()) and grid.factor == (v, h)
    assert grid.offset == (top % (8 * v), left % (8 * h))

    def wrong_levels(rounds: int, channel: int) -> int:
        """Levels that differ from the file's, in the blocks of ``channel`` the crop covers whole."""
        recovered = recover_inputs(crop[None], grid, tables[None].float(), rounds)
        plane = recovered.y[0, 0] if channel == 0 else recovered.chroma[0, channel - 1]
        truth = planes.y[0, 0] if channel == 0 else planes.chroma[0, channel - 1]
        rows, cols = (1, 1) if channel == 0 else (v, h)  # pixels per sample
        first = (-(-top // (8 * rows)), -(-left // (8 * cols)))  # the first whole block, in the file
        last = ((top + height) // (8 * rows), (left + width) // (8 * cols))
        shift = ((top - grid.offset[0]) // (8 * rows), (left - grid.offset[1]) // (8 * cols))
        window = (slice(8 * first[0], 8 * last[0]), slice(8 * first[1], 8 * last[1]))
        moved = (slice(8 * (first[0] - shift[0]), 8 * (last[0] - shift[0])), slice(8 * (first[1] - shift[1]), 8 * (last[1] - shift[1])))
        return int((quantize(plane[moved], tables[channel]) != quantize(truth[window], tables[channel])).sum())

    assert wrong_levels(3, 0) == 0
    re_encoded, projected = sum(wrong_levels(0, c) for c in (1, 2)), sum(wrong_levels(3, c) for c in (1, 2))
    assert projected < re_encoded and projected <= 2


def test_a_transposed_decode_is_corrected_in_the_jpegs_orientation(tiny_model):
    decoded = decode(save_jpeg(textured_image(6, 72, 96), quality=20))
    transform = JPEGArtifactCorrection(tiny_model)
    assert find_grid(decoded.transpose(-2, -1).float()).transposed
    assert torch.equal(transform(decoded.transpose(-2, -1)), transform(decoded).transpose(-2, -1))


def test_given_quality_goes_on_the_found_grid(tiny_model):
    decoded = decode(save_jpeg(textured_image(7, 80, 96), quality=25))
    crop = decoded[:, 3:70, 9:90]
    given = JPEGArtifactCorrection(tiny_model, quality=25)(crop)
    assert given.shape == crop.shape and torch.equal(given, JPEGArtifactCorrection(tiny_model)(crop))
    lossless = to_tensor(textured_image(8, 64, 64))
    with pytest.raises(ValueError, match="no 8x8 quantization grid"):
        JPEGArtifactCorrection(tiny_model, quality=25)(lossless)


def test_flat_pixels_with_a_given_quality_use_the_decoders_grid(tiny_model):
    flat = torch.full((3, 20, 28), 128, dtype=torch.uint8)
    assert JPEGArtifactCorrection(tiny_model, quality=50)(flat).shape == flat.shape


@settings(deadline=None, max_examples=20)
@given(height=st.integers(1, 17), width=st.integers(1, 17), subsampling=st.sampled_from([None, "4:2:2", "4:2:0"]),
       seed=st.integers(0, 100))
def test_colour_images_too_small_for_one_chroma_block_are_corrected(tiny_model, height, width, subsampling, seed):
    """One pixel tall or wide included: the chroma grid search has no whole MCU to test."""
    pixels = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, height, width), np.uint8))
    corrected = JPEGArtifactCorrection(tiny_model, quality=50, subsampling=subsampling)(pixels)
    assert corrected.shape == pixels.shape and corrected.dtype == torch.uint8


def test_exif_transpose_copy_is_corrected(tiny_model, caplog):
    exif = Image.Exif()
    exif[0x0112] = 6
    with Image.open(io.BytesIO(save_jpeg(textured_image(9, 48, 64), quality=30, exif=exif))) as image:
        upright = ImageOps.exif_transpose(image)
    with caplog.at_level(logging.DEBUG, logger="qgac_transforms"):
        out = JPEGArtifactCorrection(tiny_model)(upright)
    assert out.size == upright.size == (48, 64)
    assert "quality 30, 4:2:0" in caplog.text and "transposed" in caplog.text
    assert find_grid(to_tensor(upright).float()).tables[0].equal(quality_to_table(30))
