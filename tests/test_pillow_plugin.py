"""The Pillow hook: coefficients on opened JPEGs (before and after load, MPO, EXIF), correct=True, undo."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps, JpegImagePlugin, MpoImagePlugin
from surface_fixtures import save_jpeg, textured_image, to_tensor

from qgac_transforms import functional as F
from qgac_transforms import pillow_plugin
from qgac_transforms.jpeg_io import JPEGCoefficients, read_coefficients, write_coefficients
from qgac_transforms.quantization import quality_to_table
from qgac_transforms.transforms import JPEGArtifactCorrection


@pytest.fixture
def hook():
    """Registers with the given options; always gives Pillow its opener back."""
    yield pillow_plugin.register_jpeg_opener
    pillow_plugin.unregister_jpeg_opener()


@pytest.fixture(scope="module")
def rotated_jpeg():
    exif = Image.Exif()
    exif[0x0112] = 6
    return save_jpeg(textured_image(0, 32, 48), quality=40, exif=exif)


def same_coefficients(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.blocks, b.blocks)) and len(a.blocks) == len(b.blocks)


def test_import_registers_nothing():
    # this module imported the plugin at collection time; only register_jpeg_opener() may hook
    assert Image.OPEN["JPEG"][0] is JpegImagePlugin.jpeg_factory
    code = "import sys, qgac_transforms; assert not {'torch', 'torchvision', 'PIL'} & set(sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_coefficients_before_and_after_load(hook, rotated_jpeg, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(rotated_jpeg)
    hook()
    expected = read_coefficients(rotated_jpeg)
    before = Image.open(path)
    assert isinstance(before, JpegImagePlugin.JpegImageFile) and before.format == "JPEG"
    assert same_coefficients(before.dct_coefficients, expected)
    after = Image.open(path)
    after.load()
    assert after.fp is None  # Pillow closed the file
    path.unlink()  # the bytes were captured by load()
    assert same_coefficients(after.dct_coefficients, expected)
    assert after.qgac_jpeg_bytes == rotated_jpeg
    assert after.dct_coefficients.orientation == 6
    assert ImageOps.exif_transpose(after).size == (32, 48)


def test_file_object_closed_after_load(hook, rotated_jpeg):
    hook()
    buffer = io.BytesIO(rotated_jpeg)
    image = Image.open(buffer)
    image.load()
    buffer.close()
    assert same_coefficients(image.dct_coefficients, read_coefficients(rotated_jpeg))


def test_mpo_frames(hook, tmp_path):
    first, second = textured_image(1, 24, 40), textured_image(2, 24, 40)
    path = tmp_path / "phone.mpo"
    first.save(path, "MPO", save_all=True, append_images=[second], quality=50)
    hook()
    image = Image.open(path)
    assert isinstance(image, MpoImagePlugin.MpoImageFile) and image.n_frames == 2
    image.load()
    assert same_coefficients(image.dct_coefficients, read_coefficients(save_jpeg(first, quality=50)))
    image.seek(1)
    assert same_coefficients(image.dct_coefficients, read_coefficients(save_jpeg(second, quality=50)))
    image.seek(0)
    assert same_coefficients(image.dct_coefficients, read_coefficients(save_jpeg(first, quality=50)))


def test_correct_true_corrects_an_mpo_frame_decoded_again(hook, tiny_model, tmp_path):
    """seek(1) then seek(0) without loading frame 1: Pillow decodes frame 0 afresh."""
    first, second = textured_image(1, 24, 40), textured_image(2, 24, 40)
    path = tmp_path / "phone.mpo"
    first.save(path, "MPO", save_all=True, append_images=[second], quality=50)
    expected = F.correct_jpeg(tiny_model, read_coefficients(save_jpeg(first, quality=50))).round().to(torch.uint8)
    hook(correct=True, weights=tiny_model)
    image = Image.open(path)
    assert torch.equal(to_tensor(image), expected)
    image.seek(1)
    image.seek(0)
    assert torch.equal(to_tensor(image), expected)


def test_a_failed_correction_fails_again_on_the_next_load(hook, tiny_model, rotated_jpeg, monkeypatch):
    """Not Pillow's pixels, quietly: only a file QGAC cannot read keeps them, with a warning."""
    hook(correct=True, weights=tiny_model)
    image = Image.open(io.BytesIO(rotated_jpeg))
    correction = image._qgac_correction

    def broken(coefficients):
        raise RuntimeError("no such device")

    monkeypatch.setattr(image, "_qgac_correction", broken)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="no such device"):
            image.load()
    monkeypatch.setattr(image, "_qgac_correction", correction)
    expected = F.correct_jpeg(tiny_model, read_coefficients(rotated_jpeg)).round().to(torch.uint8)
    assert torch.equal(to_tensor(image), expected)


def test_correct_true_gives_corrected_pixels(hook, tiny_model, rotated_jpeg, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(rotated_jpeg)
    plain = Image.open(path)
    plain.load()
    expected = F.correct_jpeg(tiny_model, read_coefficients(rotated_jpeg)).round().to(torch.uint8)
    hook(correct=True, weights=tiny_model)
    image = Image.open(path)
    assert image.mode == plain.mode and image.size == plain.size
    pixels = to_tensor(image)  # np.asarray loads the image
    assert torch.equal(pixels, expected) and not torch.equal(pixels, to_tensor(plain))
    # stored orientation, EXIF kept: exif_transpose turns the corrected pixels upright
    upright = ImageOps.exif_transpose(image)
    assert torch.equal(to_tensor(upright), torch.rot90(expected, -1, (1, 2)))
    assert same_coefficients(image.dct_coefficients, read_coefficients(rotated_jpeg))


@pytest.mark.parametrize("correct", [True, False])
def test_a_pickled_image_keeps_its_jpeg(hook, tiny_model, rotated_jpeg, correct):
    """Sent to another process (pickled, as DataLoader workers return it), an image the hook
    opened from bytes keeps its coefficients and header tables, and one it corrected is still
    known as that correction: the transform corrects it from its file as before pickling."""
    hook(correct=correct, weights=tiny_model)
    image = Image.open(io.BytesIO(rotated_jpeg))
    image.load()  # the stream is closed: only what pickling carries is left
    transform = JPEGArtifactCorrection(tiny_model)
    before = to_tensor(transform(image))
    copy = pickle.loads(pickle.dumps(image))
    assert type(copy) is type(image) and copy.tobytes() == image.tobytes() and copy.info == image.info
    assert same_coefficients(copy.dct_coefficients, read_coefficients(rotated_jpeg))
    assert copy.quantization == image.quantization and copy.layer == image.layer
    assert torch.equal(to_tensor(transform(copy)), before)
    older = image.__reduce_ex__(2)  # as pickled before the hook added its entry: Pillow's state alone
    restored = older[0](*older[1])
    restored.__setstate__(older[2][:-1])
    assert restored.tobytes() == image.tobytes() and restored._qgac_file is None


def test_correct_true_with_self_ensemble(hook, tiny_model, rotated_jpeg):
    expected = F.correct_jpeg(tiny_model, read_coefficients(rotated_jpeg), self_ensemble=True)
    hook(correct=True, weights=tiny_model, self_ensemble=True)
    assert torch.equal(to_tensor(Image.open(io.BytesIO(rotated_jpeg))), expected.round().to(torch.uint8))


def test_correct_true_grayscale_and_thumbnail(hook, tiny_model):
    data = save_jpeg(textured_image(3, 64, 64, "L"), quality=30)
    hook(correct=True, weights=tiny_model)
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.mode == "L"
    thumbnail = Image.open(io.BytesIO(data))
    thumbnail.thumbnail((16, 16))  # draft() is disabled, so the full image is corrected, then reduced
    assert thumbnail.size == (16, 16)


def _chroma_above_luma() -> bytes:
    """A 16 x 16 JPEG whose chroma is sampled twice as finely as its luma: libjpeg decodes it."""
    blocks = (np.zeros((1, 1, 8, 8), np.int16), np.zeros((2, 2, 8, 8), np.int16), np.zeros((2, 2, 8, 8), np.int16))
    tables = tuple(quality_to_table(50, chroma=i > 0).numpy() for i in range(3))
    buffer = io.BytesIO()
    write_coefficients(JPEGCoefficients(blocks, tables, ((1, 1), (2, 2), (2, 2)), 16, 16, "ycbcr"), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["CMYK", "sampling"])
def test_correct_true_keeps_pillow_pixels_for_unsupported_jpegs(hook, tiny_model, kind):
    if kind == "CMYK":
        buffer = io.BytesIO()
        Image.new("CMYK", (16, 16), (10, 20, 30, 40)).save(buffer, "JPEG")
        data = buffer.getvalue()
    else:
        data = _chroma_above_luma()
    plain = Image.open(io.BytesIO(data))
    plain.load()
    hook(correct=True, weights=tiny_model)
    image = Image.open(io.BytesIO(data))
    with pytest.warns(UserWarning, match=kind):
        image.load()
    assert image.mode == plain.mode and image.tobytes() == plain.tobytes()


def test_unregister_restores_pillow(hook, rotated_jpeg):
    original = Image.OPEN["JPEG"]
    hook()
    hook()  # registering twice must not lose the original
    opened = Image.open(io.BytesIO(rotated_jpeg))
    pillow_plugin.unregister_jpeg_opener()
    assert Image.OPEN["JPEG"] == original
    assert type(Image.open(io.BytesIO(rotated_jpeg))) is JpegImagePlugin.JpegImageFile
    assert opened.dct_coefficients.width == 48  # images opened before keep their extras


def test_transform_on_hooked_images_uses_the_file_until_edited(hook, tiny_model, rotated_jpeg, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(rotated_jpeg)
    transform = JPEGArtifactCorrection(tiny_model)
    from_file = to_tensor(transform(str(path)))
    hook(correct=True, weights=tiny_model, blend=0.5)
    image = Image.open(path)
    image.load()  # the hook's (half) correction
    assert torch.equal(to_tensor(transform(image)), from_file)  # shows its file: corrected from the file
    image.paste((255, 0, 0), (0, 0, 8, 8))
    with_header = JPEGArtifactCorrection(tiny_model, quality=40, subsampling="4:2:0")  # edited: its pixels, its tables
    assert torch.equal(to_tensor(transform(image)), to_tensor(with_header(image.copy())))
    hook(correct=False)
    plain = Image.open(path)
    plain.load()
    assert torch.equal(to_tensor(transform(plain)), from_file)


@pytest.mark.parametrize(
    "options, match",
    [(dict(quality_override=0), "quality_override must be an integer in 1..100, got 0"),
     (dict(tile=-1), "tile must be a positive number of pixels"), (dict(overlap=-8), "overlap 0 or more"),
     (dict(blend=2.0), r"blend must be a number in \[0, 1\], got 2.0"), (dict(quality_override=True), "got True")],
)
def test_bad_options_fail_at_registration(hook, options, match):
    with pytest.raises(ValueError, match=match) as refused:
        hook(correct=True, **options)
    with pytest.raises(ValueError) as from_transform:
        JPEGArtifactCorrection(**options)
    assert str(refused.value) == str(from_transform.value)  # the transform's wording
    assert Image.OPEN["JPEG"][0] is JpegImagePlugin.jpeg_factory  # and nothing was registered


def test_the_hook_takes_the_transforms_dtype(hook, tiny_model, rotated_jpeg):
    hook(correct=True, weights=tiny_model, dtype=torch.bfloat16)
    placed = Image.open(io.BytesIO(rotated_jpeg))._qgac_correction.weights
    assert next(placed.parameters()).dtype == torch.bfloat16 and next(tiny_model.parameters()).dtype == torch.float32
    low = Image.open(io.BytesIO(rotated_jpeg))
    low.load()
    expected = JPEGArtifactCorrection(tiny_model, dtype=torch.bfloat16)(io.BytesIO(rotated_jpeg))
    assert torch.equal(to_tensor(low), to_tensor(expected))
    with pytest.raises(TypeError, match="unknown correction option.*'strength'"):
        hook(correct=True, strength=0.5)
    for dtype in (torch.int8, "bfloat16"):  # refused at registration, in the transform's words
        with pytest.raises(ValueError, match="dtype must be a floating point torch.dtype") as refused:
            hook(correct=True, dtype=dtype)
        with pytest.raises(ValueError) as from_transform:
            JPEGArtifactCorrection(dtype=dtype)
        assert str(refused.value) == str(from_transform.value)


def test_a_given_model_is_copied_to_the_device_once_and_never_moved(hook, tiny_model, rotated_jpeg):
    hook(correct=True, weights=tiny_model, device="meta")  # "meta": a device CI has, where nothing runs
    placed = Image.open(io.BytesIO(rotated_jpeg))._qgac_correction.weights
    assert placed is not tiny_model and next(placed.parameters()).device.type == "meta"
    with pytest.raises(NotImplementedError):
        Image.open(io.BytesIO(rotated_jpeg)).load()
    assert Image.open(io.BytesIO(rotated_jpeg))._qgac_correction.weights is placed  # copied at registration
    assert next(tiny_model.parameters()).device.type == "cpu"
