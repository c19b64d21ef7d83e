"""The torch JPEG codec: pixels <-> coefficients, checked against itself and libjpeg."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qgac_transforms import codec, color, jpeg_io
from qgac_transforms.dct import blockify
from qgac_transforms.quantization import quantize

FACTORS = [(1, 1), (1, 2), (2, 1), (2, 2), (1, 4)]
FACTOR_OF_CODE = {code: codec.SUBSAMPLINGS[name] for name, code in jpeg_io.PILLOW_SUBSAMPLING.items()}
seeds = st.integers(0, 2**32 - 1)
sizes = st.integers(1, 40)


def _ceil_div(a, b):
    return -(-a // b)


def _pixels(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=generator, dtype=torch.float64) * 255


@settings(deadline=None)
@given(h=st.integers(1, 100), w=st.integers(1, 100), factor=st.sampled_from(FACTORS))
def test_block_grid(h, w, factor):
    expected = (_ceil_div(_ceil_div(h, factor[0]), 8), _ceil_div(_ceil_div(w, factor[1]), 8))
    assert codec.block_grid(h, w, factor) == expected


@settings(deadline=None)
@given(h=sizes, w=sizes, factor=st.sampled_from(FACTORS), gray=st.booleans(), lead=st.lists(st.integers(1, 2), max_size=1), seed=seeds)
def test_pixels_to_coefficients_shapes(h, w, factor, gray, lead, seed):
    image = _pixels((*lead, 1 if gray else 3, h, w), seed)
    planes = codec.pixels_to_coefficients(image, factor)
    assert len(planes) == (1 if gray else 3)
    rows, cols = codec.block_grid(h, w, (1, 1))
    assert planes[0].shape == (*lead, 8 * rows, 8 * cols)
    for plane in planes[1:]:
        rows, cols = codec.block_grid(h, w, factor)
        assert plane.shape == (*lead, 8 * rows, 8 * cols)


@settings(deadline=None)
@given(h=sizes, w=sizes, gray=st.booleans(), lead=st.lists(st.integers(1, 2), max_size=1), seed=seeds)
def test_full_resolution_round_trip(h, w, gray, lead, seed):
    image = _pixels((*lead, 1 if gray else 3, h, w), seed)
    planes = codec.pixels_to_coefficients(image, (1, 1))
    decoded = codec.coefficients_to_pixels(planes, h, w, (1, 1), clamp=False)
    assert decoded.shape == image.shape
    torch.testing.assert_close(decoded, image, atol=1e-6, rtol=0)
    # with clamping, only JFIF chroma values of up to 255.5 are cut: at most 0.5 * 1.772
    clamped = codec.coefficients_to_pixels(planes, h, w, (1, 1))
    assert (clamped - image).abs().max() <= 0.9


@settings(deadline=None)
@given(h=sizes, w=sizes, factor=st.sampled_from(FACTORS), seed=seeds)
def test_subsampled_round_trip_of_blocky_chroma(h, w, factor, seed):
    """An image whose chroma is constant over each subsampling cell survives
    downsampling and nearest upsampling exactly."""
    v, f = factor
    luma = _pixels((1, h, w), seed)
    chroma = _pixels((2, _ceil_div(h, v), _ceil_div(w, f)), seed + 1)
    chroma = chroma.repeat_interleave(v, -2).repeat_interleave(f, -1)[..., :h, :w]
    image = color.ycbcr_to_rgb(torch.cat([luma, chroma]))
    planes = codec.pixels_to_coefficients(image, factor)
    decoded = codec.coefficients_to_pixels(planes, h, w, factor, upsampling="nearest", clamp=False)
    torch.testing.assert_close(decoded, image, atol=1e-6, rtol=0)


@settings(deadline=None)
@given(h=sizes, w=sizes, factor=st.sampled_from(FACTORS), value=st.tuples(*[st.integers(0, 255)] * 3), upsampling=st.sampled_from(["fancy", "nearest"]))
def test_constant_image_round_trip(h, w, factor, value, upsampling):
    image = torch.tensor(value, dtype=torch.float64)[:, None, None].expand(3, h, w)
    planes = codec.pixels_to_coefficients(image, factor)
    for plane in planes:  # a flat image has DC coefficients only
        blocks = blockify(plane).clone()
        blocks[..., 0, 0] = 0
        assert blocks.abs().max() < 1e-9
    decoded = codec.coefficients_to_pixels(planes, h, w, factor, upsampling=upsampling)
    torch.testing.assert_close(decoded, image, atol=1e-6, rtol=0)


@settings(deadline=None, max_examples=15)
@given(h=sizes, w=sizes, subsampling=st.sampled_from([0, 1, 2, None]), quality=st.integers(20, 95), seed=seeds, smooth=st.booleans())
def test_encoder_matches_libjpeg(make_image, make_jpeg, h, w, subsampling, quality, seed, smooth):
    """Our float encoder + quantization gives libjpeg's levels up to its integer rounding."""
    image = make_image(seed % 1000, h, w, "L" if subsampling is None else "RGB", smooth=smooth)
    options = {"quality": quality} if subsampling is None else {"quality": quality, "subsampling": subsampling}
    stored = jpeg_io.read_coefficients(make_jpeg(image, **options))
    pixels = torch.from_numpy(np.array(image, dtype=np.float64))
    pixels = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
    factor = FACTOR_OF_CODE.get(subsampling, (1, 1))
    assert stored.chroma_factor == factor
    planes = codec.pixels_to_coefficients(pixels, factor)
    for plane, table, blocks in zip(planes, stored.tables, stored.blocks):
        levels = blockify(quantize(plane, torch.from_numpy(table))).numpy()
        assert levels.shape == blocks.shape
        difference = np.abs(levels - blocks)
        assert difference.max() <= 2
        assert (difference == 0).mean() >= 0.85


def test_coefficients_to_pixels_is_batched():
    image = _pixels((2, 3, 12, 20), 7)
    planes = codec.pixels_to_coefficients(image, (2, 2))
    batched = codec.coefficients_to_pixels(planes, 12, 20, (2, 2))
    assert batched.shape == (2, 3, 12, 20)
    for i in range(2):
        single = codec.coefficients_to_pixels([p[i] for p in planes], 12, 20, (2, 2))
        torch.testing.assert_close(batched[i], single)


def test_coefficients_to_pixels_gradcheck():
    generator = torch.Generator().manual_seed(0)
    gray = (torch.randn(8, 16, generator=generator, dtype=torch.float64) * 20).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: codec.coefficients_to_pixels([p], 7, 13), (gray,))
    y = (torch.randn(16, 16, generator=generator, dtype=torch.float64) * 20).requires_grad_()
    cb = (torch.randn(8, 8, generator=generator, dtype=torch.float64) * 20).requires_grad_()
    cr = (torch.randn(8, 8, generator=generator, dtype=torch.float64) * 20).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b, c: codec.coefficients_to_pixels([a, b, c], 11, 9, (2, 2), clamp=False), (y, cb, cr)
    )


def test_coefficients_to_pixels_rejects_bad_input():
    plane = torch.zeros(8, 8)
    with pytest.raises(ValueError, match="1 or 3 planes"):
        codec.coefficients_to_pixels([plane, plane], 8, 8)
    with pytest.raises(ValueError, match="less than the image"):
        codec.coefficients_to_pixels([plane], 9, 8)
    with pytest.raises(ValueError, match="less than the image"):
        codec.coefficients_to_pixels([torch.zeros(16, 16), plane, plane], 16, 16, (1, 1))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        codec.pixels_to_coefficients(torch.zeros(2, 8, 8))


def test_integer_pixels_are_accepted():
    image = torch.randint(0, 256, (3, 9, 9), dtype=torch.uint8)
    planes = codec.pixels_to_coefficients(image, (1, 1))
    assert planes[0].dtype == torch.float32
    decoded = codec.coefficients_to_pixels(planes, 9, 9)
    assert (decoded - image.float()).abs().max() <= 1.0


# --------------------------------------------------------------------------- codec.compress: libjpeg-turbo bit for bit


def _assert_identical(actual: jpeg_io.CoefficientTensors, expected: jpeg_io.CoefficientTensors) -> None:
    assert torch.equal(actual.tables, expected.tables)
    assert len(actual.planes) == len(expected.planes)
    for ours, theirs in zip(actual.planes, expected.planes):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        assert torch.equal(ours, theirs), f"{(ours != theirs).float().mean():.2%} of coefficients differ"
        # bit for bit: equal values, and no -0.0 where a decoder reads 0
        assert torch.equal(ours.view(torch.int32), theirs.view(torch.int32)), "signed zeros differ"


def _as_tensor(image) -> torch.Tensor:
    array = np.array(image, dtype=np.uint8)
    return torch.from_numpy(array[..., None] if array.ndim == 2 else array).permute(2, 0, 1).contiguous()


@given(
    h=st.integers(1, 100), w=st.integers(1, 100), quality=st.integers(1, 100), seed=seeds, smooth=st.booleans(),
    subsampling=st.sampled_from([*jpeg_io.PILLOW_SUBSAMPLING, "gray"]),
)
def test_compress_is_pillow_bit_for_bit(make_image, make_jpeg, h, w, quality, seed, smooth, subsampling):
    """Every coefficient and table equals what Pillow (libjpeg-turbo) writes, read back by jpeglib."""
    gray = subsampling == "gray"
    image = make_image(seed % 10_000, h, w, "L" if gray else "RGB", smooth=smooth)
    options = {"quality": quality} if gray else {"quality": quality, "subsampling": jpeg_io.PILLOW_SUBSAMPLING[subsampling]}
    expected = jpeg_io.read_coefficients(make_jpeg(image, **options)).to_tensors()
    _assert_identical(codec.compress(_as_tensor(image), quality, "4:2:0" if gray else subsampling), expected)


@settings(max_examples=10)
@given(h=st.integers(1, 40), w=st.integers(1, 40), quality=st.integers(25, 100), seed=seeds,
       subsampling=st.sampled_from(["4:4:0", "4:1:1", "4:1:0"]))
def test_compress_rare_subsamplings_match_libjpeg_turbo(tmp_path_factory, make_image, h, w, quality, seed, subsampling):
    """4:4:0, 4:1:1 and 4:1:0 (Pillow cannot write them) against jpeglib's libjpeg-turbo 2.1 encoder.

    From quality 25 up: below it jpeglib writes tables beyond 255 (no baseline clamp)."""
    jpeglib = pytest.importorskip("jpeglib")
    image = make_image(seed % 10_000, h, w, "RGB")
    path = tmp_path_factory.mktemp("rare") / "image.jpg"
    jpeglib.version.set("turbo210")
    try:
        encoder = jpeglib.from_spatial(np.array(image))
        encoder.samp_factor = np.array([jpeg_io.SUBSAMPLINGS[subsampling], [1, 1], [1, 1]])
        encoder.write_spatial(str(path), qt=quality)
    finally:
        jpeglib.version.set("6b")
    stored = jpeg_io.read_coefficients(path)
    assert stored.subsampling == subsampling
    _assert_identical(codec.compress(_as_tensor(image), quality, subsampling), stored.to_tensors())


@given(batch=st.integers(1, 4), h=st.integers(1, 40), w=st.integers(1, 40), gray=st.booleans(), seed=seeds,
       subsampling=st.sampled_from(sorted(codec.SUBSAMPLINGS)))
def test_compress_batched_equals_one_by_one(batch, h, w, gray, seed, subsampling):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 1 if gray else 3, h, w), generator=generator, dtype=torch.uint8)
    qualities = torch.randint(1, 101, (batch,), generator=generator)
    batched = codec.compress(images, qualities, subsampling)
    for i in range(batch):
        single = codec.compress(images[i], int(qualities[i]), subsampling)
        _assert_identical(jpeg_io.CoefficientTensors([p[i] for p in batched.planes], batched.tables[i]), single)


@settings(max_examples=20)
@given(h=st.integers(1, 5).map(lambda n: 8 * n), w=st.integers(1, 5).map(lambda n: 8 * n), gray=st.booleans(),
       turn=st.sampled_from(["rot90", "transpose", "flip"]), seed=seeds)
def test_compress_of_a_strided_view_equals_that_of_its_copy(h, w, gray, turn, seed):
    """Rotated, transposed or flipped views, as augmentation makes them (sides of whole blocks: no padding copy)."""
    image = torch.randint(0, 256, (1 if gray else 3, h, w), generator=torch.Generator().manual_seed(seed),
                          dtype=torch.uint8)
    view = {"rot90": torch.rot90(image, 1, (-2, -1)), "transpose": image.mT, "flip": image.flip(-1)}[turn]
    _assert_identical(codec.compress(view, 50), codec.compress(view.contiguous(), 50))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compress_cuda_equals_cpu():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 61, 77), generator=generator, dtype=torch.uint8)
    qualities = torch.randint(1, 101, (8,), generator=generator)
    for subsampling in codec.SUBSAMPLINGS:
        on_cpu = codec.compress(images, qualities, subsampling)
        on_gpu = codec.compress(images.cuda(), qualities.cuda(), subsampling)
        _assert_identical(jpeg_io.CoefficientTensors([p.cpu() for p in on_gpu.planes], on_gpu.tables.cpu()), on_cpu)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
def test_compress_takes_qualities_of_any_integer_dtype(dtype):
    """A uint8 tensor indexes as a mask in torch: qualities are read as numbers whatever their dtype."""
    images = torch.randint(0, 256, (3, 3, 16, 24), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    qualities = torch.tensor([5, 50, 95])
    _assert_identical(codec.compress(images, qualities.to(dtype)), codec.compress(images, qualities))


def test_compress_rejects_bad_input():
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"one per image \(2\), got 3"):
        codec.compress(torch.stack([image, image]), torch.tensor([10, 20, 30]))
    with pytest.raises(TypeError, match="uint8"):
        codec.compress(image.float(), 50)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        codec.compress(torch.zeros(2, 8, 8, dtype=torch.uint8), 50)
    with pytest.raises(ValueError, match="H, W >= 1"):
        codec.compress(torch.zeros(3, 0, 8, dtype=torch.uint8), 50)
    for quality in (0, 101, 50.5, True):
        with pytest.raises(ValueError, match="1..100"):
            codec.compress(image, quality)
    with pytest.raises(ValueError, match="subsampling"):
        codec.compress(image, 50, "4:3:0")
