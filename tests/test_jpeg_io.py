"""Reading and writing JPEG coefficients: layouts, sources, round trips and bad files.

Every file is generated here (Pillow for grayscale, 4:4:4, 4:2:2 and 4:2:0;
libjpeg through ``write_coefficients`` for 4:4:0 and 4:1:1).
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import random
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from qgac_transforms import codec
from qgac_transforms.codec import block_grid
from qgac_transforms.correction import decode
from qgac_transforms.dct import blockify, deblockify
from qgac_transforms.jpeg_io import (
    PILLOW_SUBSAMPLING,
    CoefficientTensors,
    InvalidJPEGError,
    JPEGCoefficients,
    read_coefficients,
    write_coefficients,
)
from qgac_transforms.quantization import quality_to_table, quantize

MODES = ["gray", "4:4:4", "4:2:2", "4:2:0", "4:4:0", "4:1:1", "4:1:0"]
#: (vertical, horizontal) sampling factors of Y, Cb, Cr.
SAMPLING = {
    "4:4:4": ((1, 1), (1, 1), (1, 1)),
    "4:2:2": ((1, 2), (1, 1), (1, 1)),
    "4:2:0": ((2, 2), (1, 1), (1, 1)),
    "4:4:0": ((2, 1), (1, 1), (1, 1)),
    "4:1:1": ((1, 4), (1, 1), (1, 1)),
    "4:1:0": ((2, 4), (1, 1), (1, 1)),
}

sizes = st.integers(1, 40)
modes = st.sampled_from(MODES)
seeds = st.integers(0, 999)


# --------------------------------------------------------------------------- helpers


def encode(image: Image.Image, mode: str, quality: int = 75, **options) -> bytes:
    """``image`` as a JPEG with the chroma layout ``mode``."""
    buffer = io.BytesIO()
    if mode == "gray":
        image.convert("L").save(buffer, "JPEG", quality=quality, **options)
    elif mode in PILLOW_SUBSAMPLING:
        image.convert("RGB").save(buffer, "JPEG", quality=quality, subsampling=PILLOW_SUBSAMPLING[mode], **options)
    else:  # Pillow cannot write these layouts: quantize our own encoding and let libjpeg write it
        assert not options
        sampling = SAMPLING[mode]
        pixels = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.float64)).permute(2, 0, 1)
        planes = codec.pixels_to_coefficients(pixels, sampling[0])
        tables = [quality_to_table(quality), quality_to_table(quality, chroma=True), quality_to_table(quality, chroma=True)]
        blocks = tuple(blockify(quantize(p, t)).numpy().astype(np.int16) for p, t in zip(planes, tables))
        coefficients = JPEGCoefficients(
            blocks, tuple(t.numpy() for t in tables), sampling, image.width, image.height, "ycbcr"
        )
        write_coefficients(coefficients, buffer)
    return buffer.getvalue()


def expected_grids(mode: str, height: int, width: int) -> list[tuple[int, int]]:
    if mode == "gray":
        return [(-(-height // 8), -(-width // 8))]
    return sampled_grids(SAMPLING[mode], height, width)


def sampled_grids(sampling: tuple[tuple[int, int], ...], height: int, width: int) -> list[tuple[int, int]]:
    """Each component's block grid for (vertical, horizontal) sampling factors, as libjpeg lays it out."""
    vmax, hmax = max(v for v, _ in sampling), max(h for _, h in sampling)
    return [(-(-(-(-height * v // vmax)) // 8), -(-(-(-width * h // hmax)) // 8)) for v, h in sampling]


def assert_same(a: JPEGCoefficients, b: JPEGCoefficients) -> None:
    assert len(a.blocks) == len(b.blocks)
    for x, y in zip(a.blocks, b.blocks):
        assert x.dtype == y.dtype == np.int16
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a.tables, b.tables):
        np.testing.assert_array_equal(x, y)
    assert (a.sampling, a.width, a.height, a.color_space) == (b.sampling, b.width, b.height, b.color_space)


def pillow_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image.convert("L" if image.mode == "L" else "RGB"), dtype=np.float64)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def first_scan_data(data: bytes) -> tuple[int, int]:
    """[start, end) of the entropy-coded data of the first scan (restart markers included)."""
    sos = data.index(b"\xff\xda")
    start = sos + 2 + struct.unpack(">H", data[sos + 2 : sos + 4])[0]
    pos = start
    while True:
        pos = data.index(b"\xff", pos)
        if data[pos + 1] == 0 or 0xD0 <= data[pos + 1] <= 0xD7:
            pos += 2
            continue
        return start, pos


def assert_invalid(path: Path, match: str | None = None) -> InvalidJPEGError:
    with pytest.raises(InvalidJPEGError) as info:
        read_coefficients(path)
    error = info.value
    assert isinstance(error, ValueError)
    assert str(path) in str(error) and error.source == str(path)
    if match is not None:
        assert match.lower() in error.reason.lower(), error.reason
    return error


@pytest.fixture(scope="module")
def sample(make_image):
    """A 4:2:0 photo-like JPEG of 37x29 pixels and its image."""
    image = make_image(7, 29, 37, smooth=True)
    return image, encode(image, "4:2:0", 80)


# --------------------------------------------------------------------------- layout


@settings(deadline=None, max_examples=40)
@given(height=sizes, width=sizes, mode=modes, seed=seeds)
def test_block_grids_and_metadata(make_image, height, width, mode, seed):
    data = encode(make_image(seed, height, width), mode, 60 + seed % 40)
    jpeg = read_coefficients(data)
    assert (jpeg.width, jpeg.height) == (width, height)
    assert [b.shape for b in jpeg.blocks] == [(*grid, 8, 8) for grid in expected_grids(mode, height, width)]
    assert all(b.dtype == np.int16 for b in jpeg.blocks)
    assert all(t.shape == (8, 8) and t.dtype == np.int32 for t in jpeg.tables)
    assert jpeg.subsampling == mode
    assert not jpeg.progressive and jpeg.orientation == 1 and jpeg.source == "<bytes>"
    if mode == "gray":
        assert jpeg.is_gray and jpeg.color_space == "gray" and jpeg.cb is None and jpeg.cr is None
        assert jpeg.sampling == ((1, 1),) and jpeg.chroma_factor == (1, 1)
    else:
        assert not jpeg.is_gray and jpeg.color_space == "ycbcr"
        assert jpeg.sampling == SAMPLING[mode] and jpeg.chroma_factor == SAMPLING[mode][0]
        assert jpeg.max_sampling == SAMPLING[mode][0]
        assert jpeg.y is jpeg.blocks[0] and jpeg.cb is jpeg.blocks[1] and jpeg.cr is jpeg.blocks[2]
        for blocks, sampling in zip(jpeg.blocks, jpeg.sampling):
            vmax, hmax = jpeg.max_sampling
            assert blocks.shape[:2] == block_grid(height, width, (vmax // sampling[0], hmax // sampling[1]))


@settings(deadline=None, max_examples=40)
@given(height=sizes, width=sizes, mode=modes, quality=st.sampled_from([10, 50, 75, 95, 100]), seed=seeds, smooth=st.booleans())
def test_decoded_pixels_match_pillow(make_image, height, width, mode, quality, seed, smooth):
    data = encode(make_image(seed, height, width, smooth=smooth), mode, quality)
    jpeg = read_coefficients(data)
    planes = jpeg.to_tensors(dtype=torch.float64).planes
    pixels = codec.coefficients_to_pixels(planes, jpeg.height, jpeg.width, jpeg.chroma_factor)
    reference = pillow_pixels(data)
    assert pixels.shape == (1, *reference.shape)
    assert np.abs(pixels[0].round().numpy() - reference).max() <= 3
    assert np.array_equal(decode(jpeg).numpy(), reference)  # what blend=0 gives: libjpeg's decode, exactly


@pytest.mark.parametrize("mode", MODES)
def test_known_layout_of_a_larger_image(make_image, mode):
    jpeg = read_coefficients(encode(make_image(1, 333, 509, smooth=True), mode, 75))
    assert [b.shape[:2] for b in jpeg.blocks] == expected_grids(mode, 333, 509)
    if mode == "4:2:0":
        assert [b.shape[:2] for b in jpeg.blocks] == [(42, 64), (21, 32), (21, 32)]


# --------------------------------------------------------------------------- coding variants


@settings(deadline=None, max_examples=15)
@given(height=sizes, width=sizes, mode=st.sampled_from(["gray", "4:4:4", "4:2:2", "4:2:0"]), seed=seeds)
def test_coding_variants_give_identical_coefficients(make_image, height, width, mode, seed):
    image = make_image(seed, height, width)
    baseline = read_coefficients(encode(image, mode, 85))
    variants = {
        "progressive": dict(progressive=True),
        "optimize": dict(optimize=True),
        "progressive+optimize": dict(progressive=True, optimize=True),
        "restart 1": dict(restart_marker_blocks=1),
        "restart 3": dict(restart_marker_blocks=3),
        "restart rows": dict(restart_marker_rows=1),
    }
    for label, options in variants.items():
        jpeg = read_coefficients(encode(image, mode, 85, **options))
        assert_same(jpeg, baseline)
        assert jpeg.progressive == options.get("progressive", False), label


def test_extended_sequential_frame_reads_like_baseline(sample):
    _, data = sample
    sof = data.index(b"\xff\xc0")
    extended = data[: sof + 1] + b"\xc1" + data[sof + 2 :]  # SOF1: extended sequential, Huffman
    assert_same(read_coefficients(extended), read_coefficients(data))


def test_trailing_bytes_after_eoi_are_ignored(sample):
    _, data = sample
    assert_same(read_coefficients(data + b"trailing garbage" * 10), read_coefficients(data))


@pytest.mark.parametrize("fill", [b"", b"\xff\xff"])
def test_many_app_markers_are_tolerated(sample, fill):
    """80 COM segments (more than jpeglib reads), with or without fill bytes before each marker."""
    _, data = sample
    comments = b"".join(fill + b"\xff\xfe" + struct.pack(">H", 2 + 7) + b"comment" for _ in range(80))
    assert_same(read_coefficients(data[:2] + comments + data[2:]), read_coefficients(data))


# --------------------------------------------------------------------------- sources


def test_every_source_type_gives_the_same_result(sample, tmp_path):
    _, data = sample
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    reference = read_coefficients(path)
    assert reference.source == str(path)

    results = {
        "str": read_coefficients(str(path)),
        "bytes": read_coefficients(data),
        "bytearray": read_coefficients(bytearray(data)),
        "memoryview": read_coefficients(memoryview(data)),
        "BytesIO": read_coefficients(io.BytesIO(data)),
    }
    with open(path, "rb") as file:
        results["file"] = read_coefficients(file)
        assert results["file"].source == str(path)
    with Image.open(path) as image:  # lazy: the file is still open
        results["PIL lazy"] = read_coefficients(image)
        assert image.fp is not None
        results["PIL lazy again"] = read_coefficients(image)
        image.load()  # the coefficient read must not have moved the file position
        assert image.fp is None  # Pillow closed the path-opened file: the filename is used
        results["PIL loaded"] = read_coefficients(image)
        assert results["PIL loaded"].source == str(path)
    with Image.open(io.BytesIO(data)) as image:
        results["PIL from BytesIO"] = read_coefficients(image)
        image.load()
        # Pillow drops a stream after loading and there is no filename to fall back on
        with pytest.raises(InvalidJPEGError, match="closed"):
            read_coefficients(image)
        image.qgac_jpeg_bytes = data  # what the Pillow plugin's hook keeps
        results["PIL from BytesIO, loaded, hooked"] = read_coefficients(image)
    for result in results.values():
        assert_same(result, reference)


def test_pillow_image_opened_with_a_bytes_path_reads_that_file(sample, tmp_path):
    """Pillow keeps a bytes path as bytes: once it closes the file, that is a path, not JPEG data."""
    _, data = sample
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    with Image.open(os.fsencode(path)) as image:
        image.load()
        assert image.fp is None
        result = read_coefficients(image)
    assert_same(result, read_coefficients(data))
    assert result.source == str(path)


def test_bad_sources(tmp_path, sample, make_image):
    image, data = sample
    png = tmp_path / "picture.png"
    image.save(png)
    with Image.open(png) as opened, pytest.raises(InvalidJPEGError, match="picture.png"):
        read_coefficients(opened)
    with pytest.raises(InvalidJPEGError, match="not from a file"):
        read_coefficients(Image.new("RGB", (8, 8)))
    text = tmp_path / "photo.jpg"
    text.write_bytes(data)
    with open(text, encoding="latin-1") as file, pytest.raises(InvalidJPEGError, match="binary mode"):
        read_coefficients(file)
    missing = tmp_path / "missing.jpg"
    with pytest.raises(InvalidJPEGError, match="missing.jpg"):
        read_coefficients(missing)
    with pytest.raises(TypeError):
        read_coefficients(12345)


def test_file_object_at_its_end_says_so(tmp_path, sample):
    _, data = sample
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    with open(path, "rb") as file:
        file.read()
        with pytest.raises(InvalidJPEGError, match=rf"at its end \(position {len(data)}\).*seek\(0\)"):
            read_coefficients(file)
        file.seek(0)
        assert read_coefficients(file).width == sample[0].width
    assert read_coefficients(data, name="named.jpg").source == "named.jpg"


# --------------------------------------------------------------------------- writing and tensors


@pytest.mark.parametrize("mode", MODES)
def test_write_round_trip(make_image, tmp_path, mode):
    jpeg = read_coefficients(encode(make_image(3, 21, 35), mode, 70))
    path = tmp_path / "out.jpg"
    write_coefficients(jpeg, path)
    assert_same(read_coefficients(path), jpeg)
    buffer = io.BytesIO()
    write_coefficients(jpeg, buffer)
    assert buffer.getvalue() == path.read_bytes()
    # and the written file decodes (Pillow) to what the coefficients decode to
    planes = jpeg.to_tensors(dtype=torch.float64).planes
    pixels = codec.coefficients_to_pixels(planes, jpeg.height, jpeg.width, jpeg.chroma_factor)[0]
    assert np.abs(pixels.round().numpy() - pillow_pixels(buffer.getvalue())).max() <= 3


@settings(deadline=None, max_examples=20)
@given(height=sizes, width=sizes, mode=modes, seed=seeds, distinct_tables=st.booleans())
def test_write_round_trip_of_arbitrary_coefficients(height, width, mode, seed, distinct_tables):
    rng = np.random.default_rng(seed)
    grids = expected_grids(mode, height, width)
    blocks = tuple(rng.integers(-60, 61, size=(*grid, 8, 8)).astype(np.int16) for grid in grids)
    for b in blocks:
        b[..., 0, 0] = rng.integers(-1000, 1001, size=b.shape[:2])
    tables = [rng.integers(1, 256, size=(8, 8)).astype(np.int32) for _ in grids]
    if not distinct_tables and len(tables) == 3:
        tables[2] = tables[1].copy()
    sampling = ((1, 1),) if mode == "gray" else SAMPLING[mode]
    jpeg = JPEGCoefficients(blocks, tuple(tables), sampling, width, height, "gray" if mode == "gray" else "ycbcr")
    assert_rewritten_as_baseline(jpeg)


def test_write_from_a_progressive_file_gives_baseline(make_image):
    jpeg = read_coefficients(encode(make_image(2, 30, 30), "4:2:0", 75, progressive=True))
    assert jpeg.progressive
    assert_rewritten_as_baseline(jpeg)


def assert_rewritten_as_baseline(jpeg: JPEGCoefficients) -> None:
    buffer = io.BytesIO()
    write_coefficients(jpeg, buffer)
    back = read_coefficients(buffer.getvalue())
    assert_same(back, jpeg)
    assert not back.progressive


def test_write_refuses_coefficients_that_are_not_one_jpeg(sample):
    """Inconsistent coefficients are a ValueError naming what is wrong: libjpeg wrote a
    smaller grid silently, wrapped int32 values, and aborted the process on a larger size."""
    _, data = sample
    jpeg = read_coefficients(data)
    wide = jpeg.blocks[0].astype(np.int32)
    wide[0, 0, 1, 1] = 65539  # 3 once cast to int16
    cases = {
        "a block grid of shape": dataclasses.replace(jpeg, width=jpeg.width * 4, height=jpeg.height * 4),
        "has \\(1, 1, 8, 8\\)": dataclasses.replace(jpeg, width=8, height=8),
        "AC coefficients of at most": dataclasses.replace(jpeg, blocks=(wide, *jpeg.blocks[1:])),
        "integers, not float32": dataclasses.replace(jpeg, blocks=(jpeg.blocks[0].astype(np.float32), *jpeg.blocks[1:])),
        "steps of 1 to 255": dataclasses.replace(jpeg, tables=(np.zeros((8, 8), np.int32), *jpeg.tables[1:])),
        "2 block grids, 3 tables": dataclasses.replace(jpeg, blocks=jpeg.blocks[:2]),
        "1 to 65535 pixels a side": dataclasses.replace(jpeg, width=0),
        "whole numbers from 1 to 4": dataclasses.replace(jpeg, sampling=((0, 0), *jpeg.sampling[1:])),
        "whole steps of 1 to 255, got float64": dataclasses.replace(jpeg, tables=(np.full((8, 8), 1.5), *jpeg.tables[1:])),
    }
    for message, bad in cases.items():
        with pytest.raises(ValueError, match=message):
            write_coefficients(bad, io.BytesIO())
    blocks = [b.copy() for b in jpeg.blocks]
    blocks[0][0, 0, 0, 0], blocks[0][0, 1, 0, 0] = 1024, -1024  # each DC in range, their difference not
    with pytest.raises(ValueError, match="DC difference between neighbouring blocks"):
        write_coefficients(dataclasses.replace(jpeg, blocks=tuple(blocks)), io.BytesIO())


def test_write_rejects_what_baseline_cannot_hold(sample):
    _, data = sample
    jpeg = read_coefficients(data)
    for position in [(0, 1), (3, 0), (7, 7)]:
        blocks = [b.copy() for b in jpeg.blocks]
        blocks[1][0, 0][position] = 1024
        bad = JPEGCoefficients(tuple(blocks), jpeg.tables, jpeg.sampling, jpeg.width, jpeg.height, "ycbcr")
        with pytest.raises(ValueError, match="1023"):
            write_coefficients(bad, io.BytesIO())
    tables = list(jpeg.tables)
    tables[0] = np.full((8, 8), 256, dtype=np.int32)
    bad = JPEGCoefficients(jpeg.blocks, tuple(tables), jpeg.sampling, jpeg.width, jpeg.height, "ycbcr")
    with pytest.raises(ValueError, match="255"):
        write_coefficients(bad, io.BytesIO())
    blocks = [b.copy() for b in jpeg.blocks]
    blocks[0][0, 0, 0, 0], blocks[0][0, 1, 0, 0] = 1024, -1024  # DCs in range whose difference libjpeg refuses
    out_of_range = JPEGCoefficients(tuple(blocks), jpeg.tables, jpeg.sampling, jpeg.width, jpeg.height, "ycbcr")
    for unwritable in (bad, out_of_range):  # no baseline JPEG holds them: the float decode
        planes = unwritable.to_tensors(dtype=torch.float32).planes
        floats = codec.coefficients_to_pixels([p[0] for p in planes], jpeg.height, jpeg.width, (2, 2))
        assert torch.equal(decode(unwritable), floats)


@pytest.mark.parametrize("mode", ["gray", "4:2:0", "4:1:1"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_to_tensors(make_image, mode, dtype):
    jpeg = read_coefficients(encode(make_image(5, 19, 27), mode, 50))
    tensors = jpeg.to_tensors(dtype=dtype)
    assert isinstance(tensors, CoefficientTensors)
    assert len(tensors.planes) == len(jpeg.blocks)
    assert tensors.tables.shape == (len(jpeg.blocks), 8, 8) and tensors.tables.dtype == dtype
    raw = jpeg.to_tensors(dequantize=False, dtype=dtype)
    for plane, levels, blocks, table in zip(tensors.planes, raw.planes, jpeg.blocks, jpeg.tables):
        rows, cols = blocks.shape[:2]
        assert plane.shape == levels.shape == (1, 8 * rows, 8 * cols)
        assert plane.dtype == levels.dtype == dtype
        assert torch.equal(blockify(levels[0]), torch.from_numpy(blocks).to(dtype))
        expected = deblockify(torch.from_numpy(blocks.astype(np.float64) * table))
        assert torch.equal(plane[0], expected.to(dtype))
    for table, expected in zip(tensors.tables, jpeg.tables):
        assert torch.equal(table, torch.from_numpy(expected).to(dtype))


# --------------------------------------------------------------------------- MPO and EXIF


def test_mpo_first_frame(make_image):
    first, second = make_image(10, 24, 40, smooth=True), make_image(11, 24, 40)
    buffer = io.BytesIO()
    first.save(buffer, "MPO", save_all=True, append_images=[second], quality=90)
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.format == "MPO" and opened.n_frames == 2
        from_image = read_coefficients(opened)
    jpeg = read_coefficients(data)
    assert_same(jpeg, read_coefficients(encode(first, "4:2:0", 90)))
    assert_same(from_image, jpeg)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(make_image, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    jpeg = read_coefficients(encode(make_image(0, 16, 24), "4:4:4", 90, exif=exif))
    assert jpeg.orientation == orientation
    assert (jpeg.width, jpeg.height) == (24, 16)  # the stored, not the displayed, size
    buffer = io.BytesIO()
    write_coefficients(jpeg, buffer)  # a phone photo written back must not turn sideways
    again = read_coefficients(buffer.getvalue())
    assert_same(again, jpeg)
    assert again.orientation == orientation
    assert ImageOps.exif_transpose(Image.open(buffer)).size == ((16, 24) if orientation >= 5 else (24, 16))


def test_exif_orientation_missing_or_invalid(make_image):
    assert read_coefficients(encode(make_image(0, 16, 16), "gray")).orientation == 1
    exif = Image.Exif()
    exif[0x0112] = 9
    assert read_coefficients(encode(make_image(0, 16, 16), "gray", exif=exif)).orientation == 1


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty: no bytes"),
        (b"hello, this is not an image\n" * 20, "no SOI"),
        (b"\xff\xd8", "no SOI"),
        (b"\xff\xd8\xff\xd9", "EOI"),
        (b"\xff\xd8" + b"\x00" * 100, "truncated"),
    ],
    ids=["empty", "text", "soi-only", "soi-eoi", "soi-zeros"],
)
def test_not_a_jpeg(tmp_path, content, match):
    path = tmp_path / "not-a-jpeg.jpg"
    path.write_bytes(content)
    assert_invalid(path, match)


def test_png_bytes(tmp_path, sample):
    image, _ = sample
    path = tmp_path / "really-a-png.jpg"
    image.save(path, "PNG")
    assert_invalid(path, "not a JPEG")


@settings(deadline=None, max_examples=40)
@given(
    fraction=st.floats(0, 1, exclude_max=True),
    mode=st.sampled_from(["gray", "4:2:0", "4:4:4"]),
    options=st.sampled_from([{}, {"progressive": True}, {"restart_marker_blocks": 2}, {"optimize": True}]),
    seed=seeds,
)
def test_truncated_files(make_image, session_dir, fraction, mode, options, seed):
    data = encode(make_image(seed, 24, 32), mode, 80, **options)
    path = session_dir / f"truncated-{seed}-{fraction:.6f}.jpg"
    path.write_bytes(data[: int(len(data) * fraction)])
    assert_invalid(path)


@settings(deadline=None, max_examples=20)
@given(fraction=st.floats(0.1, 0.99), seed=seeds)
def test_truncated_progressive_file_closed_with_eoi(make_image, session_dir, fraction, seed):
    """libjpeg accepts a progressive file cut between scans and ended with EOI."""
    data = encode(make_image(seed, 24, 32), "4:2:0", 80, progressive=True)
    scans = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"]
    cut = scans[1 + int(fraction * (len(scans) - 1))]
    path = session_dir / f"cut-at-scan-{seed}-{cut}.jpg"
    path.write_bytes(data[:cut] + b"\xff\xd9")
    assert_invalid(path, "incomplete")


@settings(deadline=None, max_examples=40)
@given(
    position=st.floats(0, 1, exclude_max=True),
    kind=st.sampled_from(["invalid codes", "EOI", "RST"]),
    options=st.sampled_from([{}, {"progressive": True}, {"restart_marker_blocks": 2}]),
    seed=seeds,
)
def test_corrupted_scan_data(make_image, session_dir, position, kind, options, seed):
    data = bytearray(encode(make_image(seed, 24, 24), "4:2:0", 75, **options))
    start, end = first_scan_data(bytes(data))
    at = start + int(position * (end - start))
    if kind == "invalid codes":  # all-ones bit strings are no Huffman code
        data[at : at + 16] = b"\xff\x00" * 8
    elif kind == "EOI":
        data[at:at] = b"\xff\xd9"
    else:
        data[at:at] = b"\xff\xd3"
    path = session_dir / f"corrupt-{seed}-{kind}-{at}.jpg"
    path.write_bytes(bytes(data))
    assert_invalid(path)


def test_other_output_on_stderr_during_a_read_is_passed_on(make_image, monkeypatch, capfd):
    """Lines another thread writes to fd 2 while libjpeg runs do not make a good file invalid."""
    import jpeglib

    original = jpeglib.read_dct

    def chatty_read_dct(path):
        os.write(2, b"some other thread's message\n")
        return original(path)

    monkeypatch.setattr(jpeglib, "read_dct", chatty_read_dct)
    data = encode(make_image(0, 24, 32), "4:2:0", 80)
    assert read_coefficients(data).width == 32
    assert "some other thread's message" in capfd.readouterr().err
    data = bytearray(data)
    start, end = first_scan_data(bytes(data))
    data[start : start + 16] = b"\xff\x00" * 8  # and damage is still caught
    with pytest.raises(InvalidJPEGError, match="corrupt or truncated"):
        read_coefficients(bytes(data))


def _patched_frame(data: bytes, marker: int | None = None, precision: int | None = None) -> bytes:
    sof = data.index(b"\xff\xc0")
    patched = bytearray(data)
    if marker is not None:
        patched[sof + 1] = marker
    if precision is not None:
        patched[sof + 4] = precision
    return bytes(patched)


@pytest.mark.parametrize(
    "marker, precision, match",
    [
        (None, 12, "12-bit"),
        (None, 16, "16-bit"),
        (0xC3, None, "lossless"),
        (0xC9, None, "arithmetic"),
        (0xCA, None, "arithmetic"),
        (0xCB, None, "lossless"),
    ],
    ids=["12-bit", "16-bit", "lossless-SOF3", "arithmetic-SOF9", "arithmetic-SOF10", "lossless-arithmetic-SOF11"],
)
def test_unsupported_codings(tmp_path, sample, marker, precision, match):
    _, data = sample
    path = tmp_path / "unsupported.jpg"
    path.write_bytes(_patched_frame(data, marker, precision))
    assert_invalid(path, match)


def blank_jpeg(sampling: tuple[tuple[int, int], ...], path: Path, height: int = 24, width: int = 24) -> Path:
    """A flat grey colour JPEG with any sampling factors, written by libjpeg."""
    blocks = tuple(np.zeros((*grid, 8, 8), np.int16) for grid in sampled_grids(sampling, height, width))
    tables = tuple(quality_to_table(50, chroma=i > 0).numpy() for i in range(3))
    write_coefficients(JPEGCoefficients(blocks, tables, sampling, width, height, "ycbcr"), path)
    return path


@pytest.mark.parametrize(
    "sampling",
    [((1, 1), (2, 2), (2, 2)), ((2, 2), (1, 1), (2, 2)), ((1, 3), (1, 1), (1, 1)), ((1, 2), (1, 2), (1, 1))],
    ids=["chroma-above-luma", "cb-differs-from-cr", "factor-3", "cb-at-luma-cr-halved"],
)
def test_chroma_sampling_the_model_cannot_follow_is_refused(tmp_path, sampling):
    """libjpeg and Pillow decode these; the model needs one chroma factor of 1, 2 or 4 per axis."""
    path = blank_jpeg(sampling, tmp_path / "sampled.jpg")
    with Image.open(path) as image:
        image.load()
    assert_invalid(path, "sampling factors")


@pytest.mark.parametrize("sampling", [((2, 4), (1, 1), (1, 1)), ((2, 1), (2, 1), (2, 1)), ((4, 1), (1, 1), (1, 1))])
def test_every_chroma_factor_the_model_follows_is_read(tmp_path, sampling):
    coefficients = read_coefficients(blank_jpeg(sampling, tmp_path / "sampled.jpg"))
    assert coefficients.sampling == sampling
    assert coefficients.chroma_factor == tuple(y // c for y, c in zip(sampling[0], sampling[1]))


def test_cmyk(tmp_path, sample):
    image, _ = sample
    path = tmp_path / "cmyk.jpg"
    image.convert("CMYK").save(path, "JPEG")
    assert_invalid(path, "CMYK")


def test_adobe_rgb_transform_0(tmp_path, sample):
    image, _ = sample
    path = tmp_path / "adobe-rgb.jpg"
    image.save(path, "JPEG", keep_rgb=True)  # libjpeg writes an Adobe segment with transform 0
    with Image.open(path) as opened:
        assert opened.info.get("adobe") is not None and opened.info.get("adobe_transform") == 0
    assert_invalid(path, "Adobe transform 0")


def test_rgb_components_without_adobe_segment(tmp_path, sample):
    image, _ = sample
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", keep_rgb=True)
    data = buffer.getvalue()
    app14 = data.index(b"\xff\xee")
    length = struct.unpack(">H", data[app14 + 2 : app14 + 4])[0]
    path = tmp_path / "rgb-ids.jpg"
    path.write_bytes(data[:app14] + data[app14 + 2 + length :])  # component ids 'R', 'G', 'B' remain
    assert_invalid(path, "JCS_RGB")


def test_decompression_bomb_limit(tmp_path, sample, monkeypatch):
    image, data = sample
    path = tmp_path / "bomb.jpg"
    path.write_bytes(data)
    pixels = image.width * image.height
    for limit in (pixels - 1, pixels // 3):  # over the limit (Pillow warns), over twice it (Pillow raises)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        expected = f"image too large: {image.width}x{image.height} pixels exceeds PIL.Image.MAX_IMAGE_PIXELS ({limit})"
        assert assert_invalid(path).reason == expected  # one wording, whoever would have noticed
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pixels)
    assert read_coefficients(path).width == image.width
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert read_coefficients(path).width == image.width


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_failing_reads_do_not_leak_file_descriptors(tmp_path, make_image):
    data = encode(make_image(4, 24, 24), "4:2:0", 80)
    start, end = first_scan_data(data)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    in_header = tmp_path / "cut-in-header.jpg"
    in_header.write_bytes(data[: start // 2])
    in_scan = tmp_path / "cut-in-scan.jpg"  # gets past the header checks, into libjpeg
    in_scan.write_bytes(data[: (start + end) // 2])

    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    for path, reads in ((empty, 2000), (in_header, 200), (in_scan, 2000)):
        assert_invalid(path)  # warm up
        before = open_descriptors()
        for _ in range(reads):
            with pytest.raises(InvalidJPEGError):
                read_coefficients(path)
        assert open_descriptors() <= before, path.name


def test_concurrent_reads_match_serial_reads(tmp_path, make_image):
    paths = []
    for index, mode in enumerate(MODES):
        path = tmp_path / f"{mode.replace(':', '')}.jpg"
        options = {"progressive": True} if index % 2 and mode in PILLOW_SUBSAMPLING else {}
        path.write_bytes(encode(make_image(index, 40 + index, 56 - index, smooth=True), mode, 70 + index, **options))
        paths.append(path)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(paths[3].read_bytes()[:-100])
    paths.append(broken)

    def outcome(path):
        try:
            jpeg = read_coefficients(path)
        except InvalidJPEGError as error:
            return ("error", error.reason)
        return ("ok", [b.copy() for b in jpeg.blocks], [t.copy() for t in jpeg.tables], jpeg.sampling)

    serial = {path: outcome(path) for path in paths}
    assert serial[broken][0] == "error" and all(serial[p][0] == "ok" for p in paths[:-1])
    jobs = list(itertools.chain.from_iterable(itertools.repeat(paths, 6)))
    random.Random(0).shuffle(jobs)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(outcome, jobs))
    for path, result in zip(jobs, results):
        expected = serial[path]
        assert result[0] == expected[0], path.name
        if result[0] == "error":
            assert result == expected
        else:
            for got, want in zip(result[1] + result[2], expected[1] + expected[2]):
                np.testing.assert_array_equal(got, want)
            assert result[3] == expected[3]
