"""The transform fed the way data pipelines hand out JPEGs (issue 20): torchvision's ImageFolder
and decode_jpeg, webdataset shards, Hugging Face datasets' Image() feature, HTTP-style bytes;
and the ``qgac eval-pipelines`` report that measures them."""

from __future__ import annotations

import io
import json
import logging

import pytest
import torch
from PIL import Image, ImageOps
from surface_fixtures import save_jpeg, strict_json_loads, textured_image, to_tensor
from torchvision import datasets
from torchvision.io import decode_jpeg, read_file

from qgac_transforms import cli
from qgac_transforms.pipeline_evaluation import _summary, evaluate_pipelines, format_table
from qgac_transforms.transforms import JPEGArtifactCorrection

QUALITY = 30


def hf_decode_example(data: bytes, mode: str | None = None) -> Image.Image:
    """What ``datasets.Image().decode_example({"bytes": data, "path": None})`` returns
    (datasets 5.2.0, ``features/image.py``, read from its source; the library itself pulls in
    pyarrow and pandas, too heavy for these tests): opened from a BytesIO, loaded (the stream
    is gone), turned upright if it has an orientation tag, converted if a mode is asked for."""
    image = Image.open(io.BytesIO(data))
    image.load()  # to avoid "Too many open files" errors
    if image.getexif().get(Image.ExifTags.Base.Orientation) is not None:
        image = ImageOps.exif_transpose(image)
    if mode and mode != image.mode:
        image = image.convert(mode)
    return image


@pytest.fixture(scope="module")
def jpeg_bytes():
    return save_jpeg(textured_image(11, 48, 64), quality=QUALITY)


def test_image_decoded_from_bytes_is_corrected_with_its_header(tiny_model, jpeg_bytes, caplog):
    image = hf_decode_example(jpeg_bytes)
    assert image.format == "JPEG" and image.fp is None  # loaded, its stream gone: no file to read
    with caplog.at_level(logging.DEBUG, logger="qgac_transforms"):
        out = JPEGArtifactCorrection(tiny_model)(image)
    assert "file cannot be read any more; corrected from its pixels with its JPEG header's tables" in caplog.text
    with_header = JPEGArtifactCorrection(tiny_model, quality=QUALITY, subsampling="4:2:0")(image.copy())
    assert torch.equal(to_tensor(out), to_tensor(with_header))
    from_file = JPEGArtifactCorrection(tiny_model)(jpeg_bytes)  # the bytes themselves, where a pipeline has them
    assert out.size == from_file.size


@pytest.mark.parametrize("orientation, mode", [(6, None), (3, "RGB"), (8, "L")])
def test_hugging_face_image_feature(tiny_model, orientation, mode, caplog):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = save_jpeg(textured_image(12, 48, 64), quality=QUALITY, exif=exif)
    image = hf_decode_example(data, mode)
    assert image.format is None  # an exif_transpose (and convert) copy: decoded pixels
    with caplog.at_level(logging.DEBUG, logger="qgac_transforms"):
        out = JPEGArtifactCorrection(tiny_model)(image)
    assert out.size == image.size and out.mode == image.mode
    assert f"quality {QUALITY}" in caplog.text and ("transposed" in caplog.text) == (orientation in (6, 8))


def test_webdataset_shard(tiny_model, tmp_path):
    wds = pytest.importorskip("webdataset")
    shard = str(tmp_path / "shard-000000.tar")
    with wds.TarWriter(shard) as sink:
        for index in range(2):
            data = save_jpeg(textured_image(20 + index, 40, 56), quality=QUALITY)
            sink.write({"__key__": f"sample{index}", "jpg": data, "cls": str(index).encode()})
    transform = JPEGArtifactCorrection(tiny_model)
    for spec in ("pil", "torchrgb8", "torchrgb"):  # Pillow copies, uint8 tensors, float tensors in 0..1
        dataset = wds.WebDataset(shard, shardshuffle=False).decode(spec).to_tuple("jpg", "cls")
        for image, label in dataset:
            out = transform(image)
            assert type(out) is type(image) and label in (0, 1)
            assert (out.size == image.size) if spec == "pil" else (out.shape == image.shape and out.dtype == image.dtype)


def test_imagefolder_and_decode_jpeg_agree(tiny_model, tmp_path):
    (tmp_path / "cats").mkdir()
    path = tmp_path / "cats" / "a.jpg"
    path.write_bytes(save_jpeg(textured_image(13, 40, 56), quality=QUALITY))
    transform = JPEGArtifactCorrection(tiny_model)
    image, label = datasets.ImageFolder(str(tmp_path), transform=transform)[0]  # Pillow's convert("RGB") copy
    decoded = decode_jpeg(read_file(str(path)))
    assert label == 0 and torch.equal(to_tensor(image), transform(decoded))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipelines")
    textured_image(14, 96, 112).save(folder / "a.png")
    return folder


def test_eval_pipelines_report(tiny_model, dataset):
    report = evaluate_pipelines(tiny_model, dataset, [QUALITY], timed_images=1, progress=False)
    ways = report["ways"]
    assert "decoded pixels" in ways and "crop at offset 15" in ways and "4:2:2 file, decoded pixels" in ways
    assert "crop of 64 x 64" in ways and "crop of 96 x 96" not in ways  # only crops 16 pixels smaller than 96 x 112
    for way, by_quality in ways.items():
        summary = by_quality[str(QUALITY)]
        errors = [entry["error"] for entry in report["per_image"][way][QUALITY] if "error" in entry]
        assert summary["errors"] == len(errors)
        # only a small crop may be too smooth for blind correction, and then it is told so
        assert all("too few unclipped textured" in error for error in errors), way
        assert not errors or way.startswith("crop of "), way
        assert set(summary) == {"gain_db", "exact_gain_db", "percent_of_exact", "worse_than_input", "errors"}
    assert ways["crop of 64 x 64"][str(QUALITY)]["errors"] == 0  # 48 x 48 is too smooth here, 64 x 64 is not
    assert ways["crop of 48 x 48"][str(QUALITY)]["errors"] == 1
    assert ways["crop of 48 x 48, quality given"][str(QUALITY)]["errors"] == 0
    assert report["timing"]["n_images"] == 1 and report["timing"]["ratio"] > 0


def test_eval_pipelines_command(tiny_weights, dataset, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = cli.main(["eval-pipelines", "--dataset", str(dataset), "--quality", "30", "--weights", tiny_weights,
                     "--json", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "| decoded pixels |" in printed and "Blind correction of a" in printed
    report = json.loads(out.read_text())
    assert report["command"].startswith("qgac eval-pipelines --dataset") and report["qualities"] == [30]



def test_eval_pipelines_measures_the_images_it_can(tiny_weights, tmp_path, capsys):
    """An unreadable image is listed and a flat one (no quality to estimate) counts as raised:
    both aborted the run before; a way that loses shows its minus sign."""
    textured_image(14, 96, 112).save(tmp_path / "a.png")
    Image.new("RGB", (32, 32), (90, 120, 200)).save(tmp_path / "flat.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    code = cli.main(["eval-pipelines", "--dataset", str(tmp_path), "--quality", "30", "--weights", tiny_weights,
                     "--json", str(tmp_path / "out" / "r.json")])  # fmt: skip
    out, err = capsys.readouterr()
    report = strict_json_loads((tmp_path / "out" / "r.json").read_text())
    assert code == 1 and "broken.png: cannot read the image" in err and report["n_images"] == 2
    assert [failure["image"] for failure in report["failures"]] == ["broken.png"]
    assert report["timing"]["n_images"] == 1 and report["timing"]["side"] is None  # a.png is 96 x 112, timed whole
    assert "Blind correction of a colour decode (top-left crops of at most 512 x 512)" in out
    assert "+-" not in out and "+0" in out
    loses = {**report, "ways": {"w": {"30": {"gain_db": -0.13, "exact_gain_db": 0.43, "percent_of_exact": -31,
                                             "worse_than_input": 1, "errors": 0}}}, "timing": {}}
    assert "| w | -0.13 (+0.43), -31%, 1 worse |" in format_table(loses)
    every_image_raised = _summary([{"error": "too small"}, {"error": "too small"}])
    assert every_image_raised["exact_gain_db"] is None and every_image_raised["percent_of_exact"] is None
    raised = {**loses, "ways": {"w": {"30": every_image_raised}}}
    assert "| w | +0.00 (n/a), n/a, 2 raised |" in format_table(raised)


def test_hook_keeps_the_bytes_of_an_image_decoded_from_them(tiny_model, jpeg_bytes, caplog):
    from qgac_transforms import register_jpeg_opener, unregister_jpeg_opener

    register_jpeg_opener()
    try:
        image = hf_decode_example(jpeg_bytes)  # the hook captured the stream before load() dropped it
    finally:
        unregister_jpeg_opener()
    with caplog.at_level(logging.DEBUG, logger="qgac_transforms"):
        out = JPEGArtifactCorrection(tiny_model)(image)
    assert "corrected from its JPEG's coefficients" in caplog.text
    assert torch.equal(to_tensor(out), to_tensor(JPEGArtifactCorrection(tiny_model)(jpeg_bytes)))


def test_stream_closed_before_loading_says_so(tiny_model, jpeg_bytes):
    stream = io.BytesIO(jpeg_bytes)
    image = Image.open(stream)
    stream.close()  # Pillow itself cannot decode it any more
    with pytest.raises(ValueError, match="its stream was closed before it was loaded"):
        JPEGArtifactCorrection(tiny_model)(image)
