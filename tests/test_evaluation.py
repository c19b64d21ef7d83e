"""``qgac eval``: the protocol on a generated two-image dataset with a tiny random model."""

from __future__ import annotations

import argparse
import io
import json
import shlex

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from surface_fixtures import save_jpeg, textured_image, to_tensor

from qgac_transforms.cli import evaluate as cli_evaluate
from qgac_transforms.configs import build_model
from qgac_transforms.correction import correct
from qgac_transforms.evaluation import eight_bit, evaluate_dataset, format_table
from qgac_transforms.jpeg_io import read_coefficients
from qgac_transforms.metrics import psnr_b

QUALITIES = [10, 50]
METRIC_KEYS = {"psnr", "psnrb", "ssim"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dataset")
    textured_image(1, 40, 56, "RGB").save(folder / "colour.png")
    textured_image(2, 37, 45, "L").save(folder / "gray.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def report(tiny_model, dataset):
    return evaluate_dataset(tiny_model, dataset, QUALITIES, progress=False)


def _compress(image: Image.Image, quality: int) -> bytes:
    """The paper's protocol written out independently: 4:2:0 for colour, gray as gray."""
    return save_jpeg(image, quality=quality, **({"subsampling": 2} if image.mode == "RGB" else {}))


def _check_schema(report):
    assert isinstance(report["dataset"], str) and isinstance(report["weights"], str)
    assert isinstance(report["protocol"], str)
    assert [r["quality"] for r in report["results"]] == QUALITIES
    for result in report["results"]:
        assert {"quality", "n_images", "jpeg", "corrected", "seconds_per_image"} <= set(result)
        assert type(result["quality"]) is int and result["n_images"] == 2
        assert type(result["seconds_per_image"]) is float and result["seconds_per_image"] > 0
        for side in ("jpeg", "corrected"):
            assert set(result[side]) == METRIC_KEYS
            assert all(type(v) is float and np.isfinite(v) for v in result[side].values())


def _independent_jpeg_metrics(path, quality):
    """Pillow compress/decode and scikit-image metrics, written without the library."""
    original = Image.open(path)
    decoded_image = Image.open(io.BytesIO(_compress(original, quality)))
    decoded, reference = np.array(decoded_image), np.array(original)
    assert decoded.shape == reference.shape and decoded.dtype == np.uint8
    axis = 2 if reference.ndim == 3 else None
    return {
        "psnr": peak_signal_noise_ratio(reference, decoded, data_range=255),
        "psnrb": float(psnr_b(to_tensor(decoded_image).double(), to_tensor(original).double())),
        "ssim": structural_similarity(
            decoded.astype(np.float64), reference.astype(np.float64), channel_axis=axis, gaussian_weights=True,
            sigma=1.5, use_sample_covariance=False, data_range=255,
        ),  # fmt: skip
    }


def test_report_schema_and_protocol(report, dataset):
    _check_schema(report)
    assert report["dataset"] == str(dataset)
    assert report["failures"] == []
    for words in ("Pillow", "4:2:0", "uint8", "Gaussian window 11x11 sigma 1.5", "PSNR-B", "per channel"):
        assert words in report["protocol"]
    table = format_table(report)
    assert "JPEG" in table and f"{report['results'][0]['jpeg']['psnr']:.2f}" in table


def test_jpeg_metrics_match_independent_computation(report, dataset):
    for result in report["results"]:
        rows = {row["image"]: row for row in result["per_image"]}
        assert {row["mode"] for row in rows.values()} == {"RGB", "L"}
        expected = {name: _independent_jpeg_metrics(dataset / name, result["quality"]) for name in rows}
        for name, row in rows.items():
            for key in METRIC_KEYS:
                assert row["jpeg"][key] == pytest.approx(expected[name][key], abs=1e-4), (name, key)
        for key in METRIC_KEYS:
            mean = np.mean([expected[name][key] for name in rows])
            assert result["jpeg"][key] == pytest.approx(mean, abs=1e-4)


def test_corrected_output_is_rounded_to_uint8(report, dataset, tiny_model):
    result = report["results"][0]
    for row in result["per_image"]:
        original = Image.open(dataset / row["image"])
        corrected = correct(tiny_model, read_coefficients(_compress(original, result["quality"]))).double()
        reference = to_tensor(original).double()
        rounded = corrected.round().clamp(0, 255)
        expected = 10 * np.log10(255**2 / float((rounded - reference).square().mean()))
        assert row["corrected"]["psnr"] == pytest.approx(expected, abs=1e-6)
        unrounded = 10 * np.log10(255**2 / float((corrected - reference).square().mean()))
        assert row["corrected"]["psnr"] != pytest.approx(unrounded, abs=1e-9)


def _run_cli(argv):
    parser = argparse.ArgumentParser()
    cli_evaluate.add_arguments(parser)
    return cli_evaluate.run(parser.parse_args(argv))


def test_cli_writes_json_and_reports_failures(tmp_path, dataset, tiny_weights, capsys):
    out = tmp_path / "out" / "report.json"
    assert _run_cli(["--dataset", str(dataset), "--quality", "10", "50", "--weights", tiny_weights,
                     "--json", str(out), "--device", "cpu", "--threads", "1"]) == 0  # fmt: skip
    written = json.loads(out.read_text())
    _check_schema(written)
    assert written["weights"] == tiny_weights
    # the recorded command, run again, parses to the same options
    replayed = shlex.split(written["command"])
    assert replayed[:2] == ["qgac", "eval"]
    parser = argparse.ArgumentParser()
    cli_evaluate.add_arguments(parser)
    assert parser.parse_args(replayed[2:]) == parser.parse_args(["--dataset", str(dataset), "--quality", "10", "50",
        "--weights", tiny_weights, "--json", str(out), "--device", "cpu", "--threads", "1"])  # fmt: skip
    assert "QGAC" in capsys.readouterr().out

    broken = tmp_path / "broken"
    broken.mkdir()
    textured_image(3, 24, 24, "RGB").save(broken / "good.png")
    (broken / "bad.png").write_bytes(b"not a png")
    assert _run_cli(["--dataset", str(broken), "--quality", "30", "--weights", tiny_weights, "--device", "cpu"]) == 1
    assert "bad.png" in capsys.readouterr().err
    textured_image(4, 5, 3, "RGB").save(broken / "tiny.png")  # smaller than the SSIM window: listed, not fatal
    assert _run_cli(["--dataset", str(broken), "--quality", "30", "50", "--weights", tiny_weights, "--device", "cpu",
                     "--json", str(out)]) == 1  # fmt: skip
    assert "tiny.png: 3x5 is smaller than the 11-pixel SSIM window" in capsys.readouterr().err
    assert [row["n_images"] for row in json.loads(out.read_text())["results"]] == [1, 1]
    with pytest.raises(ValueError, match="unknown SSIM window 'bogus'"):  # refused before any image, not per image
        evaluate_dataset(tiny_weights, broken, [30], ssim_window="bogus", progress=False)
    for options, message in ((["--device", "bogus"], "--device bogus cannot be used"),
                             (["--device", "meta"], "--device meta cannot be used"),
                             (["--json", str(tmp_path)], "is a folder; give a file name"),
                             (["--json", str(broken / "good.png" / "r.json")], "good.png is a file, not a folder")):
        assert _run_cli(["--dataset", str(broken), "--quality", "30", "--weights", tiny_weights, *options]) == 2
        assert message in capsys.readouterr().err


def test_self_ensemble_is_stated_in_the_report(tmp_path, dataset, tiny_weights, report):
    out = tmp_path / "ensemble.json"
    assert _run_cli(["--dataset", str(dataset), "--quality", str(report["results"][0]["quality"]),
                     "--weights", tiny_weights, "--json", str(out), "--self-ensemble"]) == 0  # fmt: skip
    ensemble = json.loads(out.read_text())
    assert "eight orientations" in ensemble["protocol"] and "eight orientations" not in report["protocol"]
    assert ensemble["command"].endswith("--ssim-window gaussian --self-ensemble")
    assert ensemble["results"][0]["jpeg"] == report["results"][0]["jpeg"]
    assert ensemble["results"][0]["corrected"] != report["results"][0]["corrected"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "/nonexistent/folder"], "not a directory"),
        (["--quality", "0"], "quality"),
        (["--threads", "0"], "--threads"),
    ],
)
def test_cli_usage_errors(argv, message, dataset, tiny_weights, capsys):
    base = ["--dataset", str(dataset), "--weights", tiny_weights, "--device", "cpu"]
    assert _run_cli(base + argv) == 2
    assert message in capsys.readouterr().err


def test_empty_folder_is_a_usage_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no images"):
        evaluate_dataset(build_model("tiny"), tmp_path, [10], progress=False)


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 999), height=st.integers(1, 24), width=st.integers(1, 24))
def test_references_are_eight_bit_gray_or_rgb_whatever_their_mode(seed, height, width):
    gray = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    wide = Image.fromarray(gray.astype(np.uint16) * 257)  # 16-bit gray: 0..255 -> 0..65535
    assert wide.mode.startswith("I;16") and np.array_equal(np.asarray(eight_bit(wide)), gray)
    colour = Image.fromarray(np.stack([gray, gray[::-1], 255 - gray], axis=-1)).quantize(16)
    assert colour.mode == "P" and eight_bit(colour).mode == "RGB"  # a palette image is colour
    assert np.array_equal(np.asarray(eight_bit(colour)), np.asarray(colour.convert("RGB")))
    assert np.array_equal(np.asarray(eight_bit(Image.fromarray(gray).convert("LA"))), gray)
    assert np.array_equal(np.asarray(eight_bit(Image.fromarray(gray.astype(np.int32) * 257))), gray)  # mode I
    with pytest.raises(ValueError, match="not 8- or 16-bit gray"):
        eight_bit(Image.fromarray(gray.astype(np.int32) - 256))  # all below 0
    with pytest.raises(ValueError, match="floating point"):
        eight_bit(Image.fromarray(gray.astype(np.float32)))


@pytest.mark.parametrize("suffix", [".png", ".tif", ".pgm"])  # Pillow opens them as I;16, I;16 and I
def test_a_sixteen_bit_original_is_scored_as_its_eight_bit_picture(tmp_path, tiny_model, suffix):
    picture = textured_image(4, 24, 32, "L")
    (tmp_path / "eight").mkdir()
    (tmp_path / "sixteen").mkdir()
    picture.save(tmp_path / "eight" / "a.png")
    Image.fromarray(np.asarray(picture).astype(np.uint16) * 257).save(tmp_path / "sixteen" / f"a{suffix}")
    eight, sixteen = (evaluate_dataset(tiny_model, tmp_path / name, [30], progress=False)["results"][0]
                      for name in ("eight", "sixteen"))  # fmt: skip
    assert sixteen["jpeg"] == eight["jpeg"] and np.isfinite(sixteen["jpeg"]["psnr"])


def test_an_image_over_pillows_pixel_limit_is_a_failure_not_a_crash(tmp_path, tiny_model, monkeypatch):
    textured_image(5, 16, 16, "RGB").save(tmp_path / "small.png")
    textured_image(6, 40, 40, "RGB").save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 1,600 pixels is over twice the limit: Pillow refuses it
    report = evaluate_dataset(tiny_model, tmp_path, [30], progress=False)
    assert report["results"][0]["n_images"] == 1
    assert [failure["image"] for failure in report["failures"]] == ["huge.png"]
    assert "huge.png: cannot read the image" in report["failures"][0]["error"]
    assert "decompression bomb" in report["failures"][0]["error"]
