"""JPEGArtifactCorrection and the functional kernels: every input type, its output type, strength, workers."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageOps
from surface_fixtures import save_jpeg, textured_image, to_tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from qgac_transforms import functional as F
from qgac_transforms.correction import decode, model_inputs
from qgac_transforms.jpeg_io import InvalidJPEGError, read_coefficients
from qgac_transforms.quantization import quality_to_table
from qgac_transforms.self_ensemble import correct_self_ensemble
from qgac_transforms.transforms import JPEGArtifactCorrection, _claim

QUALITY = 30


@pytest.fixture(scope="module")
def jpeg():
    """A colour 4:2:0 JPEG with EXIF and an ICC profile, as bytes."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return save_jpeg(textured_image(0, 40, 56), quality=QUALITY, exif=exif, icc_profile=b"not-a-real-icc")


@pytest.fixture(scope="module")
def expected(tiny_model, jpeg):
    """The corrected uint8 pixels every JPEG input must give."""
    pixels = F.correct_jpeg(tiny_model, read_coefficients(jpeg))
    return pixels.round().clamp(0, 255).to(torch.uint8)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --------------------------------------------------------------------------- JPEG inputs


def test_pillow_jpeg_in_pillow_out(tiny_model, jpeg, expected):
    image = Image.open(io.BytesIO(jpeg))
    out = JPEGArtifactCorrection(tiny_model)(image)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == image.size
    assert torch.equal(to_tensor(out), expected)
    assert out.info["exif"] == image.info["exif"] and out.info["icc_profile"] == b"not-a-real-icc"
    assert out.getexif()[0x0112] == 6  # stored orientation, tag kept: exif_transpose works as on the input


def test_loaded_pillow_jpeg_from_a_path(tiny_model, jpeg, expected, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg)
    image = Image.open(path)
    image.load()  # closes the file; the transform reads it again by name
    assert torch.equal(to_tensor(JPEGArtifactCorrection(tiny_model)(image)), expected)


def test_grayscale_stays_grayscale(tiny_model):
    data = save_jpeg(textured_image(1, 24, 40, "L"), quality=QUALITY)
    out = JPEGArtifactCorrection(tiny_model)(Image.open(io.BytesIO(data)))
    assert out.mode == "L" and out.size == (40, 24)


@pytest.mark.parametrize("kind", ["str", "path", "bytes", "bytearray"])
def test_path_or_bytes_in_pillow_out(tiny_model, jpeg, expected, tmp_path, kind):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg)
    source = {"str": str(path), "path": path, "bytes": jpeg, "bytearray": bytearray(jpeg)}[kind]
    out = JPEGArtifactCorrection(tiny_model)(source)
    assert isinstance(out, Image.Image)
    assert torch.equal(to_tensor(out), expected)
    assert out.getexif()[0x0112] == 6


def test_coefficients_in_uint8_image_out(tiny_model, jpeg, expected):
    out = JPEGArtifactCorrection(tiny_model)(read_coefficients(jpeg))
    assert type(out) is tv_tensors.Image and out.dtype == torch.uint8
    assert torch.equal(out.as_subclass(torch.Tensor), expected)


def test_not_a_jpeg_path_names_the_file(tiny_model, tmp_path):
    path = tmp_path / "picture.png"
    textured_image(0, 16, 16).save(path)
    with pytest.raises(InvalidJPEGError, match="picture.png"):
        JPEGArtifactCorrection(tiny_model)(str(path))


# --------------------------------------------------------------------------- decoded pixels


def test_decoded_pixels_give_the_jpeg_result(tiny_model):
    """Re-encoding decoded pixels with the file's tables recovers its coefficients (4:4:4 and gray exactly)."""
    for mode in ("L", "RGB"):
        data = save_jpeg(textured_image(2, 48, 64, mode), quality=QUALITY, subsampling=0)
        from_file = F.correct_jpeg(tiny_model, read_coefficients(data))
        from_pixels = F.correct_pixels(tiny_model, to_tensor(decoded(data)), quality=QUALITY, subsampling="4:4:4")
        assert (from_file - from_pixels).abs().max() <= 1.0


def test_uint8_tensor(tiny_model, jpeg):
    pixels = to_tensor(decoded(jpeg))
    out = JPEGArtifactCorrection(tiny_model, quality=QUALITY)(pixels)
    assert type(out) is torch.Tensor and out.dtype == torch.uint8 and out.shape == pixels.shape
    assert not torch.equal(out, pixels)


def test_float_tensor_keeps_range_and_dtype(tiny_model, jpeg):
    pixels = to_tensor(decoded(jpeg)).to(torch.float64) / 255
    out = JPEGArtifactCorrection(tiny_model, quality=QUALITY)(pixels)
    assert out.dtype == torch.float64 and 0 <= out.min() and out.max() <= 1
    as_uint8 = JPEGArtifactCorrection(tiny_model, quality=QUALITY)(to_tensor(decoded(jpeg)))
    assert (out * 255 - as_uint8).abs().max() <= 0.5 + 1e-6


def test_tv_tensor_keeps_its_class(tiny_model, jpeg):
    image = tv_tensors.Image(to_tensor(decoded(jpeg)))
    out = JPEGArtifactCorrection(tiny_model, quality=QUALITY)(image)
    assert type(out) is tv_tensors.Image and out.dtype == torch.uint8


def test_batch_is_one_batch_and_matches_single_images(tiny_model, jpeg, monkeypatch):
    first = to_tensor(decoded(jpeg))
    second = to_tensor(decoded(save_jpeg(textured_image(9, 40, 56), quality=QUALITY)))
    batch = torch.stack([first, second])
    transform = JPEGArtifactCorrection(tiny_model, quality=QUALITY)
    singles = [transform(first), transform(second)]
    sizes = []
    original = F.correct_planes_tiled

    def spy(model, inputs, *args):
        sizes.append(inputs.y.shape[0])
        return original(model, inputs, *args)

    monkeypatch.setattr(F, "correct_planes_tiled", spy)
    out = transform(batch)
    assert sizes == [2]  # one pass of the model for the whole batch
    assert out.shape == batch.shape and out.dtype == torch.uint8
    for index, single in enumerate(singles):
        assert (out[index].int() - single.int()).abs().max() <= 1


def test_non_jpeg_pillow_image(tiny_model, jpeg):
    image = Image.fromarray(np.asarray(decoded(jpeg)))  # no format: decoded pixels
    out = JPEGArtifactCorrection(tiny_model, quality=QUALITY)(image)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == image.size
    gray = JPEGArtifactCorrection(tiny_model, quality=QUALITY)(image.convert("L"))
    assert gray.mode == "L"
    with pytest.raises(ValueError, match="RGBA"):
        JPEGArtifactCorrection(tiny_model, quality=QUALITY)(image.convert("RGBA"))


def test_tables_argument_equals_quality(tiny_model, jpeg):
    pixels = to_tensor(decoded(jpeg))
    by_quality = JPEGArtifactCorrection(tiny_model, quality=QUALITY)(pixels)
    tables = torch.stack([quality_to_table(QUALITY), quality_to_table(QUALITY, chroma=True)])
    assert torch.equal(JPEGArtifactCorrection(tiny_model, tables=tables)(pixels), by_quality)


@settings(deadline=None, max_examples=6)
@given(quality=st.integers(10, 90), seed=st.integers(0, 100), gray=st.booleans())
def test_blind_quality_estimate(quality, seed, gray):
    data = save_jpeg(textured_image(seed, 96, 128, "L" if gray else "RGB"), quality=quality)
    assert F.estimate_quality_from_pixels(to_tensor(decoded(data)).float()) == quality


def test_blind_mode_uses_the_estimate(tiny_model, jpeg):
    pixels = to_tensor(decoded(save_jpeg(textured_image(4, 64, 80), quality=QUALITY)))
    blind = JPEGArtifactCorrection(tiny_model)(pixels)
    assert torch.equal(blind, JPEGArtifactCorrection(tiny_model, quality=QUALITY)(pixels))


def test_blind_mode_refuses_flat_images(tiny_model):
    with pytest.raises(ValueError, match="quality="):
        JPEGArtifactCorrection(tiny_model)(torch.full((3, 32, 32), 128, dtype=torch.uint8))


def test_bad_pixel_inputs(tiny_model):
    transform = JPEGArtifactCorrection(tiny_model, quality=QUALITY)
    with pytest.raises(ValueError, match="1 or 3"):
        transform(torch.zeros(2, 16, 16, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        transform(torch.zeros(3, 16, 16, dtype=torch.int32))


# --------------------------------------------------------------------------- strength


def test_blend_moves_between_decode_and_correction(tiny_model, jpeg):
    coefficients = read_coefficients(jpeg)
    full = F.correct_jpeg(tiny_model, coefficients)
    none = F.correct_jpeg(tiny_model, coefficients, blend=0.0)
    half = F.correct_jpeg(tiny_model, coefficients, blend=0.5)
    assert torch.allclose(none, decode(coefficients))
    assert torch.allclose(half, (full + none) / 2, atol=1e-3)
    assert (full - none).abs().max() > 1


def test_quality_override_changes_the_side_input_only(tiny_model, jpeg):
    coefficients = read_coefficients(jpeg)
    plain = F.correct_jpeg(tiny_model, coefficients)
    assert torch.equal(F.correct_jpeg(tiny_model, coefficients, quality_override=QUALITY), plain)
    assert not torch.equal(F.correct_jpeg(tiny_model, coefficients, quality_override=5), plain)
    transform = JPEGArtifactCorrection(tiny_model, quality_override=5)
    assert torch.equal(transform(coefficients).as_subclass(torch.Tensor), F.correct_jpeg(
        tiny_model, coefficients, quality_override=5).round().to(torch.uint8))


def test_self_ensemble_option_reaches_the_kernel(tiny_model, jpeg):
    coefficients = read_coefficients(jpeg)
    ensemble = F.correct_jpeg(tiny_model, coefficients, self_ensemble=True)
    assert torch.equal(ensemble, correct_self_ensemble(tiny_model, model_inputs(coefficients))[0])
    assert (ensemble - F.correct_jpeg(tiny_model, coefficients)).abs().max() > 0.1
    transform = JPEGArtifactCorrection(tiny_model, self_ensemble=True)
    assert torch.equal(transform(coefficients).as_subclass(torch.Tensor), ensemble.round().to(torch.uint8))


@pytest.mark.parametrize(
    "options",
    [dict(blend=1.5), dict(quality=0), dict(quality_override=101), dict(quality=50, tables=torch.ones(8, 8)),
     dict(tile=0), dict(subsampling="4:3:1"), dict(tables=torch.ones(4, 4)), dict(quality=20.7), dict(quality="20"),
     dict(quality=True), dict(quality_override=True), dict(dtype=torch.int8), dict(dtype="float16"), dict(tile=16.5)],
)
def test_bad_options_fail_at_construction(options):
    with pytest.raises(ValueError):
        JPEGArtifactCorrection(**options)


# --------------------------------------------------------------------------- torchvision integration


def test_lazy_package_exports():
    import qgac_transforms

    assert qgac_transforms.JPEGArtifactCorrection is JPEGArtifactCorrection
    assert qgac_transforms.functional is F
    with pytest.raises(AttributeError):
        qgac_transforms.no_such_name  # noqa: B018


def test_sample_passthrough(tiny_model, jpeg, expected):
    boxes = tv_tensors.BoundingBoxes([[0, 0, 4, 4]], format="XYXY", canvas_size=(40, 56))
    image, label, name, out_boxes = JPEGArtifactCorrection(tiny_model)(
        (Image.open(io.BytesIO(jpeg)), 3, "photo.jpg", boxes)
    )
    assert torch.equal(to_tensor(image), expected)
    assert label == 3 and name == "photo.jpg" and out_boxes is boxes


def test_compose(tiny_weights, jpeg, expected):
    pipeline = v2.Compose(
        [JPEGArtifactCorrection(tiny_weights), v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)]
    )
    out = pipeline(Image.open(io.BytesIO(jpeg)))
    assert out.dtype == torch.float32 and torch.allclose(out * 255, expected.float())


def test_weights_load_lazily_once(tiny_model, tmp_path, jpeg):
    folder = tmp_path / "later"
    transform = JPEGArtifactCorrection(folder)  # nothing there yet: construction must not load
    tiny_model.save_pretrained(folder)
    first = transform(read_coefficients(jpeg))
    assert transform.model() is JPEGArtifactCorrection(str(folder)).model()
    state = pickle.dumps(transform)
    assert len(state) < 4096  # the model is not pickled
    assert torch.equal(pickle.loads(state)(read_coefficients(jpeg)), first)


class _JPEGs(Dataset):
    def __init__(self, items, transform):
        self.items, self.transform = items, transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return v2.functional.pil_to_tensor(self.transform(self.items[index])), index


def test_dataloader_with_two_workers(tiny_weights, tiny_model, jpeg, expected):
    other = save_jpeg(textured_image(7, 40, 56), quality=60)
    dataset = _JPEGs([jpeg, other, jpeg, other], JPEGArtifactCorrection(tiny_weights))
    batches = list(DataLoader(dataset, batch_size=2, num_workers=2))
    images = torch.cat([images for images, _ in batches])
    assert torch.equal(images[0], expected) and torch.equal(images[2], expected)
    assert torch.equal(images[1], to_tensor(JPEGArtifactCorrection(tiny_model)(other)))


# --------------------------------------------------------------------------- never silently wrong (issue 16)


def test_mpo_current_frame_without_the_hook(tiny_model, tmp_path):
    first, second = textured_image(1, 24, 40), textured_image(2, 24, 40)
    path = tmp_path / "phone.mpo"
    first.save(path, "MPO", save_all=True, append_images=[second], quality=50)
    image = Image.open(path)
    assert image.format == "MPO"
    image.seek(1)
    expected = JPEGArtifactCorrection(tiny_model)(save_jpeg(second, quality=50))
    assert torch.equal(to_tensor(JPEGArtifactCorrection(tiny_model)(image)), to_tensor(expected))
    assert read_coefficients(image).y.tolist() == read_coefficients(save_jpeg(second, quality=50)).y.tolist()


@settings(deadline=None, max_examples=4)
@given(seed=st.integers(0, 50), quality=st.sampled_from([20, 50, 80]), blind=st.booleans())
def test_gray_loaded_as_rgb_comes_out_gray(tiny_model, seed, quality, blind):
    """A grayscale JPEG converted to RGB (ImageFolder, decode_image(mode=RGB)) is corrected as the gray image it is."""
    gray = decoded(save_jpeg(textured_image(seed, 32, 48, "L"), quality=quality)).copy()  # decoded pixels
    transform = JPEGArtifactCorrection(tiny_model, quality=None if blind else quality)
    as_gray = to_tensor(transform(gray))
    out = transform(gray.convert("RGB"))
    assert out.mode == "RGB" and torch.equal(to_tensor(out), as_gray.expand(3, -1, -1))
    rgb = to_tensor(gray.convert("RGB"))
    assert torch.equal(transform(torch.stack([rgb, to_tensor(decoded(save_jpeg(textured_image(seed, 32, 48))))]))[0],
                       as_gray.expand(3, -1, -1))  # fmt: skip


def _paste(image):
    image.paste((255, 0, 0), (8, 8, 24, 24))


def _draw(image):
    ImageDraw.Draw(image).rectangle((8, 8, 24, 24), fill=(0, 0, 255))


def _transpose(image):
    ImageOps.exif_transpose(image, in_place=True)


@pytest.mark.parametrize("edit", [_paste, _draw, _transpose])
def test_edited_jpeg_image_is_corrected_from_its_pixels(tiny_model, jpeg, edit, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg)
    image = Image.open(path)
    edit(image)
    assert image.format == "JPEG"
    out = JPEGArtifactCorrection(tiny_model)(image)
    with_header = JPEGArtifactCorrection(tiny_model, quality=QUALITY, subsampling="4:2:0")  # what its header says
    assert out.size == image.size and torch.equal(to_tensor(out), to_tensor(with_header(image.copy())))
    assert out.getexif().get(0x0112, 1) == image.getexif().get(0x0112, 1)  # upright after an in-place transpose


def test_replaced_file_is_not_used_for_the_loaded_pixels(tiny_model, jpeg, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg)
    image = Image.open(path)
    image.load()
    path.write_bytes(save_jpeg(textured_image(5, 40, 56), quality=QUALITY))
    with_header = JPEGArtifactCorrection(tiny_model, quality=QUALITY, subsampling="4:2:0")
    assert torch.equal(to_tensor(JPEGArtifactCorrection(tiny_model)(image)), to_tensor(with_header(image.copy())))


@pytest.mark.parametrize("kind", ["memoryview", "BytesIO", "file"])
def test_jpeg_streams_are_corrected(tiny_model, jpeg, expected, tmp_path, kind):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg)
    with open(path, "rb") as file:
        source = {"memoryview": memoryview(jpeg), "BytesIO": io.BytesIO(jpeg), "file": file}[kind]
        out = JPEGArtifactCorrection(tiny_model)(source)
    assert isinstance(out, Image.Image) and torch.equal(to_tensor(out), expected)


def test_in_a_sample_a_tensor_then_jpeg_bytes_then_a_path_is_the_image(tiny_model, jpeg, expected, tmp_path):
    """Keys, names and URLs are strings too: a path is the image only where nothing claims more."""
    transform = JPEGArtifactCorrection(tiny_model, quality=QUALITY)
    pixels = to_tensor(decoded(jpeg))
    out = transform({"path": "photo.jpg", "image": pixels})
    assert out["path"] == "photo.jpg" and torch.equal(out["image"], transform(pixels))
    webdataset = transform({"__key__": "000001", "jpg": jpeg, "cls": 3})
    assert webdataset["__key__"] == "000001" and webdataset["cls"] == 3
    assert torch.equal(to_tensor(webdataset["jpg"]), expected)
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg)
    named = transform({"name": str(path), "label": 3, "url": "https://example.org/photo.jpg"})
    assert torch.equal(to_tensor(named["name"]), expected) and named["url"] == "https://example.org/photo.jpg"


def test_in_a_sample_other_bytes_captions_and_arrays_never_take_the_image(tiny_model, jpeg, expected, tmp_path):
    """Raw webdataset samples keep every field as bytes, in any order: the JPEG is the one
    that starts with SOI; a caption is no path; an array ranks below a tensor."""
    transform = JPEGArtifactCorrection(tiny_model, quality=QUALITY)
    raw = transform({"__key__": "000001", "cls": b"3", "json": b'{"a": 1}', "jpg": jpeg})
    assert raw["cls"] == b"3" and raw["json"] == b'{"a": 1}' and torch.equal(to_tensor(raw["jpg"]), expected)
    stream = io.BytesIO(jpeg)
    files = transform({"txt": io.BytesIO(b"a caption"), "jpg": stream})
    assert torch.equal(to_tensor(files["jpg"]), expected) and files["txt"].tell() == 0
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg)
    captioned = transform({"txt": "a photo of a cat", "path": str(path)})
    assert captioned["txt"] == "a photo of a cat" and torch.equal(to_tensor(captioned["path"]), expected)
    pixels = to_tensor(decoded(jpeg))
    mask = np.zeros((8, 8), dtype=np.uint8)
    masked = transform({"mask": mask, "image": pixels})
    assert masked["mask"] is mask and torch.equal(masked["image"], transform(pixels))
    with pytest.raises(TypeError, match="numpy"):  # a picture as an array is refused, not passed by for the path
        transform({"image": np.asarray(decoded(jpeg)), "path": str(path)})
    shaped = np.frombuffer(jpeg[: len(jpeg) // 4 * 4], dtype=np.int32)  # a JPEG seen as a memoryview of int32s
    assert _claim(memoryview(shaped)) == _claim(jpeg)
    with pytest.raises(InvalidJPEGError, match="no SOI"):  # nothing better: the bytes are taken, and refused
        transform({"__key__": "000002", "cls": b"3"})
    with pytest.raises(InvalidJPEGError, match="missing.jpg"):
        transform({"path": str(tmp_path / "missing.jpg"), "label": 3})


def test_in_a_sample_labels_and_metadata_never_take_the_image(tiny_model, jpeg, expected, tmp_path):
    """A label tensor (0-d, one-hot) or array is no image; webdataset's ``__`` entries are
    metadata even when they name an existing file; among entries that all fail, the one named
    like a JPEG is taken, so that the error is about it."""
    transform = JPEGArtifactCorrection(tiny_model, quality=QUALITY)
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg)
    label, one_hot, score = torch.tensor(3), torch.zeros(10), np.float32(0.5)
    for sample in ((jpeg, label), (str(path), one_hot), {"cls": label, "jpg": jpeg, "score": np.array([score])}):
        out = transform(sample)
        image = out["jpg"] if isinstance(out, dict) else out[0]
        assert torch.equal(to_tensor(image), expected)
    assert transform((jpeg, label))[1] is label
    shard = tmp_path / "shard-000.tar"
    shard.write_bytes(b"not a JPEG")
    sample = {"__key__": "000001", "__local_path__": str(shard), "__url__": str(shard), "jpg": jpeg}
    out = transform(sample)
    assert out["__local_path__"] == str(shard) and torch.equal(to_tensor(out["jpg"]), expected)
    with pytest.raises(InvalidJPEGError, match="<bytes>: empty"):
        transform({"__key__": "000001", "__local_path__": str(shard), "cls": b"3", "jpg": b""})
    with pytest.raises(InvalidJPEGError, match="missing.jpg: cannot read"):
        transform({"caption": "a dog", "path": str(tmp_path / "missing.jpg")})
    with pytest.raises(TypeError, match=r"no image to correct in its input \(Tensor\)"):
        transform({"cls": label})
    with pytest.raises(ValueError, match=r"expected pixels of shape .*got \(64, 64\)"):  # alone, it is the input
        transform(torch.zeros(64, 64, dtype=torch.uint8))
    with pytest.raises(TypeError, match="no image to correct"):  # all under a "__" key is metadata
        transform({"__meta__": {"jpg": jpeg}, "cls": 3})
    with pytest.raises(InvalidJPEGError, match="nowhere.bin: cannot read"):  # the entry keyed "jpg" is the one blamed
        transform({"txt": "hello", "jpg": str(tmp_path / "nowhere.bin")})
    other = tmp_path / "other.png"
    other.write_bytes(jpeg)  # among files that exist, the first is taken, whatever its name
    first = transform({"b": str(other), "a.png": str(path)})
    assert isinstance(first["b"], Image.Image) and first["a.png"] == str(path)


def test_repr_shows_the_settings(tiny_model):
    transform = JPEGArtifactCorrection("qgac-small", dtype=torch.bfloat16, quality=30, blend=0.5, tile=None)
    assert repr(transform) == ("JPEGArtifactCorrection(weights='qgac-small', dtype=torch.bfloat16, tile=None, "
                               "blend=0.5, quality=30)")
    assert repr(JPEGArtifactCorrection()) == "JPEGArtifactCorrection()"
    assert repr(JPEGArtifactCorrection(tiny_model)) == "JPEGArtifactCorrection(weights=<QGAC object>)"
    assert "tables=<3 tables>" in repr(JPEGArtifactCorrection(tables=quality_to_table(50)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_decoded_pixels_in_any_model_dtype_leave_the_callers_model_alone(tiny_model, jpeg, dtype):
    pixels = to_tensor(decoded(jpeg))
    reference = JPEGArtifactCorrection(tiny_model, quality=QUALITY)(pixels).int()
    for inpt in (pixels, decoded(jpeg).copy()):  # a tensor, a Pillow image that is no JPEG file
        out = JPEGArtifactCorrection(tiny_model, quality=QUALITY, dtype=dtype)(inpt)
        out = out if isinstance(out, torch.Tensor) else to_tensor(out)
        assert out.dtype == torch.uint8 and out.shape == pixels.shape
        difference = (out.int() - reference).abs().float()
        assert difference.max() <= 1 if dtype == torch.float64 else difference.mean() < 1.0
    assert {p.dtype for p in tiny_model.parameters()} == {torch.float32}


@pytest.mark.parametrize("options", [{}, {"tile": 16}, {"self_ensemble": True}], ids=["whole", "tiles", "ensemble"])
def test_only_the_network_runs_in_a_low_precision_dtype(tiny_model, jpeg, options):
    """Decoding, blending, tiles and the ensemble's mean stay float32: with blend=0 (the plain
    decode) a bfloat16 model gives the float32 model's pixels exactly."""
    low = F.placed_model(tiny_model, dtype=torch.bfloat16)
    coefficients = read_coefficients(jpeg)
    plain = F.correct_jpeg(low, coefficients, blend=0.0, **options)
    assert plain.dtype == torch.float32 and torch.equal(plain, F.correct_jpeg(tiny_model, coefficients, blend=0.0))
    assert F.correct_jpeg(low, coefficients, **options).dtype == torch.float32


def test_numpy_arrays_and_nothing_to_correct_raise_type_error(tiny_model, jpeg):
    array = np.asarray(decoded(jpeg))
    with pytest.raises(TypeError, match="numpy"):
        v2.Compose([JPEGArtifactCorrection(tiny_model), v2.ToImage()])(array)
    with pytest.raises(TypeError, match="no image to correct.*int"):
        JPEGArtifactCorrection(tiny_model)(3)
    mask = {"image": decoded(jpeg), "mask": array}  # beside an image, an array passes through
    assert JPEGArtifactCorrection(tiny_model)(mask)["mask"] is array


def test_float_tensor_outside_0_1_is_refused(tiny_model, jpeg):
    pixels = to_tensor(decoded(jpeg)).float()
    with pytest.raises(ValueError, match=r"0\.\.1, got [0-9]+\.\.[0-9]+"):
        JPEGArtifactCorrection(tiny_model, quality=QUALITY)(pixels)


def test_blind_mode_says_when_pixels_show_no_jpeg_grid(tiny_model):
    lossless = to_tensor(textured_image(3, 64, 64))  # highly textured, never JPEG-compressed
    with pytest.raises(ValueError, match="show no 8x8 quantization grid"):
        JPEGArtifactCorrection(tiny_model)(lossless)
    with pytest.raises(ValueError, match="too few unclipped textured"):
        JPEGArtifactCorrection(tiny_model)(torch.full((3, 64, 64), 128, dtype=torch.uint8))


def test_resized_jpeg_image_says_so(tiny_model, jpeg, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg)
    image = Image.open(path)
    image.thumbnail((28, 20))
    with pytest.raises(ValueError, match="56x40: it was resized after opening"):
        JPEGArtifactCorrection(tiny_model)(image)


@pytest.mark.parametrize("shape", [(3, 0, 0), (1, 8, 0), (0, 3, 8, 8)])
def test_empty_image_names_its_size(tiny_model, shape):
    with pytest.raises(ValueError, match=rf"empty image: pixels of shape \({shape[0]}, "):
        JPEGArtifactCorrection(tiny_model, quality=QUALITY)(torch.zeros(shape, dtype=torch.uint8))
