"""``qgac correct`` and ``qgac info`` end to end on generated files: outputs, skips, failures, exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import jpeglib
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageOps
from surface_fixtures import save_jpeg, strict_json_loads, textured_image, to_tensor

from qgac_transforms import cli
from qgac_transforms import functional as F
from qgac_transforms.cli.correct import output_subsampling
from qgac_transforms.jpeg_io import PILLOW_SUBSAMPLING, SUBSAMPLINGS, read_coefficients
from qgac_transforms.quantization import quality_to_table


@pytest.fixture
def qgac(capsys):
    """Run ``qgac ARGS...`` in-process; returns (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse: --help and usage errors
            code = exit_.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def photos(tmp_path):
    """in/a.jpg (EXIF orientation 6, ICC), in/sub/b.jpeg, in/sub/gray.jpg, in/c.png, in/notes.txt, in/broken.jpg."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    (root / "a.jpg").write_bytes(save_jpeg(textured_image(0, 32, 48), quality=30, exif=exif, icc_profile=b"icc!"))
    (root / "sub" / "b.jpeg").write_bytes(save_jpeg(textured_image(1, 24, 40), quality=50, subsampling=0))
    (root / "sub" / "gray.jpg").write_bytes(save_jpeg(textured_image(2, 24, 24, "L"), quality=50))
    textured_image(3, 16, 16).save(root / "c.png")
    (root / "notes.txt").write_text("not an image")
    good = (root / "a.jpg").read_bytes()
    (root / "broken.jpg").write_bytes(good[: len(good) // 2])
    return root


def corrected(model, path):
    return F.correct_jpeg(model, read_coefficients(path)).round().to(torch.uint8)


def test_folder_with_a_corrupt_file(qgac, photos, tiny_weights, tiny_model, tmp_path):
    out = tmp_path / "out"
    code, _, err = qgac("correct", photos, "-o", out, "--weights", tiny_weights)
    assert code == 1
    assert "broken.jpg" in err and "c.png: not a JPEG" in err and "notes.txt: not a JPEG" in err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "sub/b.png", "sub/gray.png"]
    # EXIF orientation applied to the pixels and removed from the EXIF; ICC profile kept
    a = Image.open(out / "a.png")
    assert a.size == (32, 48) and a.info.get("icc_profile") == b"icc!" and 0x0112 not in a.getexif()
    assert torch.equal(to_tensor(a), torch.rot90(corrected(tiny_model, photos / "a.jpg"), -1, (1, 2)))
    assert Image.open(out / "sub" / "gray.png").mode == "L"


def test_mixed_inputs_next_to_their_sources(qgac, photos, tiny_weights):
    code, _, _ = qgac("correct", photos / "a.jpg", photos / "sub", str(photos / "*.png"), "--weights", tiny_weights)
    assert code == 0
    assert (photos / "a_qgac.png").is_file() and (photos / "sub" / "b_qgac.png").is_file()
    assert (photos / "sub" / "gray_qgac.png").is_file() and not (photos / "c_qgac.png").exists()


def test_glob_and_missing_inputs(qgac, photos, tiny_weights, tmp_path):
    code, _, err = qgac("correct", str(photos / "**" / "*.jpeg"), photos / "nope.jpg", str(photos / "*.gif"),
                        "-o", tmp_path / "out", "--weights", tiny_weights)  # fmt: skip
    assert code == 1 and "nope.jpg: no such file" in err and "*.gif: no file matches" in err
    assert (tmp_path / "out" / "b.png").is_file()


def test_jpeg_output_and_single_output_file(qgac, photos, tiny_weights, tmp_path):
    target = tmp_path / "result.jpg"
    code, _, _ = qgac("correct", photos / "sub" / "b.jpeg", "-o", target, "--format", "jpeg", "--quality", "90",
                      "--weights", tiny_weights)  # fmt: skip
    assert code == 0
    info = read_coefficients(target)
    assert info.subsampling == "4:4:4" and (info.width, info.height) == (40, 24)
    from qgac_transforms.quantization import estimate_quality

    assert estimate_quality(info.tables[0]) == 90


def test_never_overwrites_without_permission(qgac, photos, tiny_weights):
    source = photos / "sub" / "b.jpeg"
    before = source.read_bytes()
    code, _, err = qgac("correct", source, "-o", photos / "sub", "--format", "keep", "--weights", tiny_weights)
    assert code == 1 and "input itself" in err and source.read_bytes() == before
    code, _, _ = qgac("correct", source, "-o", photos / "sub", "--format", "keep", "--overwrite",
                      "--weights", tiny_weights)  # fmt: skip
    assert code == 0 and source.read_bytes() != before
    assert qgac("correct", photos / "a.jpg", "--weights", tiny_weights)[0] == 0
    code, _, err = qgac("correct", photos / "a.jpg", "--weights", tiny_weights)
    assert code == 1 and "exists" in err


def test_overwrite_never_replaces_another_input_nor_lets_two_inputs_share_an_output(qgac, tmp_path, tiny_weights):
    """Each was planned against the earlier outputs only: a.jpeg's output replaced the colour
    a.jpg before a.jpg was read, and a.jpg's output replaced the user's own a_qgac.jpg."""
    clash = tmp_path / "clash"
    clash.mkdir()
    (clash / "a.jpeg").write_bytes(save_jpeg(textured_image(2, 24, 24, "L"), quality=50))
    (clash / "a.jpg").write_bytes(save_jpeg(textured_image(1, 24, 40), quality=50))
    before = {path.name: path.read_bytes() for path in clash.iterdir()}
    code, _, err = qgac("correct", clash, "-o", clash, "--format", "jpeg", "--overwrite", "--weights", tiny_weights)
    assert code == 1 and err.count(f"another input is also written to {clash / 'a.jpg'}") == 2
    assert {path.name: path.read_bytes() for path in clash.iterdir()} == before  # nothing written
    own = tmp_path / "own"
    own.mkdir()
    (own / "a.jpg").write_bytes(save_jpeg(textured_image(1, 24, 40), quality=50))
    (own / "a_qgac.jpg").write_bytes(save_jpeg(textured_image(3, 24, 40), quality=50))  # the user's, not an output
    mine = (own / "a_qgac.jpg").read_bytes()
    code, _, err = qgac("correct", own, "--format", "keep", "--overwrite", "--weights", tiny_weights)
    assert code == 1 and f"not writing {own / 'a_qgac.jpg'}: it is the input {own / 'a_qgac.jpg'}, also corrected" in err
    assert (own / "a_qgac.jpg").read_bytes() == mine and (own / "a_qgac_qgac.jpg").is_file()


def test_tiles_and_strength_options(qgac, photos, tiny_weights, tmp_path):
    outputs = {}
    variants = {"whole": ["--tile", "0"], "tiled": ["--tile", "16"], "soft": ["--blend", "0"],
                "ensemble": ["--self-ensemble"]}
    for name, options in variants.items():
        target = tmp_path / f"{name}.png"
        assert qgac("correct", photos / "sub" / "b.jpeg", "-o", target, *options, "--weights", tiny_weights)[0] == 0
        outputs[name] = to_tensor(Image.open(target)).int()
    assert (outputs["whole"] - outputs["tiled"]).abs().max() <= 1
    plain = to_tensor(ImageOps.exif_transpose(Image.open(photos / "sub" / "b.jpeg"))).int()
    assert torch.equal(outputs["soft"], plain)  # blend 0: the file as Pillow decodes it
    assert (outputs["ensemble"] - outputs["whole"]).abs().max() > 0


@pytest.mark.parametrize("argv", [["--help"], ["correct", "--help"], ["info", "--help"]])
def test_help(qgac, argv):
    code, out, _ = qgac(*argv)
    assert code == 0 and "usage: qgac" in out


@pytest.mark.parametrize(
    "argv",
    [[], ["correct"], ["correct", "x.jpg", "--quality", "0"], ["correct", "x.jpg", "--format", "gif"],
     ["correct", "x.jpg", "--quality", "80"], ["correct", "x.jpg", "-o", "y.png", "--quality", "80"],
     ["correct", "x.jpg", "--blend", "2"], ["info"], ["frobnicate"]],
)
def test_usage_errors_exit_2(qgac, argv):
    assert qgac(*argv)[0] == 2


def test_quality_is_refused_where_outputs_are_png_and_sets_jpeg_outputs(qgac, photos, tmp_path, tiny_weights):
    """It was ignored for PNG outputs (the default), without a word."""
    code, _, err = qgac("correct", photos / "a.jpg", "--quality", "10", "-o", tmp_path / "png")
    assert code == 2 and "--quality 10 is the quality of JPEG outputs, but the outputs are PNG" in err
    assert not (tmp_path / "png").exists()
    sizes = {}
    for quality in ("20", "95"):
        output = tmp_path / f"q{quality}.jpg"
        assert qgac("correct", photos / "a.jpg", "-o", output, "--quality", quality, "--weights", tiny_weights)[0] == 0
        sizes[quality] = output.stat().st_size
    assert sizes["20"] < sizes["95"]


def test_warnings_name_their_file_and_failures_are_listed_once_without_a_terminal(qgac, photos, tmp_path,
                                                                                   tiny_weights):
    bad_exif = photos / "bad-exif.jpg"
    textured_image(5, 16, 16).save(bad_exif, quality=50, exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00junk")
    code, _, err = qgac("correct", bad_exif, photos / "broken.jpg", "-o", tmp_path / "out", "--weights", tiny_weights)
    assert code == 1 and f"warning: {bad_exif}: Corrupt EXIF data" in err  # Pillow's warning named no file
    assert err.count(str(photos / "broken.jpg")) == 1 and (tmp_path / "out" / "bad-exif.png").is_file()


def test_bad_weights_is_a_usage_error(qgac, photos, tmp_path):
    code, _, err = qgac("correct", photos / "a.jpg", "--weights", tmp_path, "--device", "cpu")
    assert code == 2 and "cannot load the model" in err
    for device in ("meta", "nosuch"):  # a traceback (meta), torch's message about the model (nosuch)
        code, _, err = qgac("correct", photos / "a.jpg", "--device", device)
        assert code == 2 and f"--device {device} cannot be used" in err and "Traceback" not in err


def test_info(qgac, photos):
    code, out, err = qgac("info", photos / "a.jpg", photos / "sub" / "gray.jpg", photos / "broken.jpg")
    assert code == 1 and "broken.jpg" in err
    assert "size:        48x32" in out and "subsampling: 4:2:0" in out and "orientation: 6" in out
    assert "quality (Y): 30 (libjpeg table)" in out and "components:  1 (grayscale)" in out
    code, out, _ = qgac("info", photos / "sub" / "b.jpeg", "--json")
    info = json.loads(out)
    assert code == 0 and info["subsampling"] == "4:4:4" and info["tables"][0]["quality"] == 50
    assert info["tables"][0]["table"] == quality_to_table(50).tolist()
    code, out, _ = qgac("info", photos / "sub" / "b.jpeg", "--tables", "grid")
    assert code == 0 and " ".join(f"{v:3d}" for v in quality_to_table(50)[0].tolist()) in out


def test_output_folder_inside_the_input_folder_is_not_an_input(qgac, photos, tiny_weights):
    (photos / "broken.jpg").unlink()
    for _ in range(2):
        code, _, _ = qgac("correct", photos, "-o", photos / "out", "--format", "jpeg", "--overwrite",
                          "--weights", tiny_weights)  # fmt: skip
        assert code == 0
    assert not list((photos / "out").rglob("out"))
    assert sorted(p.name for p in (photos / "out").rglob("*.jpg")) == ["a.jpg", "b.jpg", "gray.jpg"]


# --------------------------------------------------------------------------- issue 16


@pytest.mark.parametrize("form", ["jpeg", "keep"])
def test_a_second_run_skips_the_first_runs_outputs(qgac, photos, tiny_weights, form):
    (photos / "broken.jpg").unlink()
    assert qgac("correct", photos, "--format", form, "--weights", tiny_weights)[0] == 0
    assert qgac("correct", photos, "-o", photos / "out", "--format", form, "--weights", tiny_weights)[0] == 0
    code, _, err = qgac("correct", photos, "--format", form, "--overwrite", "--weights", tiny_weights)
    assert code == 0 and "a_qgac.jpg: an output of qgac correct" in err
    assert not list(photos.rglob("*_qgac_qgac*")) and not list((photos / "out").rglob("*_qgac*"))


def test_output_file_name_with_several_inputs_is_a_usage_error(qgac, photos, tiny_weights, tmp_path):
    code, _, err = qgac("correct", photos / "a.jpg", photos / "sub" / "b.jpeg", "-o", tmp_path / "out.png",
                        "--weights", tiny_weights)  # fmt: skip
    assert code == 2 and "names a file" in err and not (tmp_path / "out.png").exists()


def test_a_named_non_jpeg_is_a_failure(qgac, photos, tiny_weights):
    code, _, err = qgac("correct", photos / "c.png", "--weights", tiny_weights)
    assert code == 1 and "c.png: not a JPEG file" in err


def test_unwritable_outputs_fail_before_any_correction(qgac, photos, tiny_weights, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("qgac_transforms.cli.correct.correct_file", lambda *args: calls.append(args))
    (tmp_path / "c").write_text("a file where a folder should be")
    code, _, err = qgac("correct", photos / "sub", "-o", tmp_path / "c" / "out", "--weights", tiny_weights)
    assert code == 1 and calls == []
    assert f"cannot write {tmp_path / 'c' / 'out' / 'b.png'}: {tmp_path / 'c'} is a file, not a folder" in err
    assert ".tmp" not in err


def test_info_into_a_closed_pipe_exits_quietly(photos):
    command = [sys.executable, "-c", "import sys; from qgac_transforms.cli import main; sys.exit(main())",
               "info", *[photos / "a.jpg"] * 200]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader went away, as `| head -1` does
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141 and b"Traceback" not in err and b"BrokenPipe" not in err


def test_info_prints_a_file_name_that_is_not_utf8(photos, tmp_path):
    """Undecodable bytes of a name come out as \\xNN, also on a strict UTF-8 terminal."""
    name = os.fsdecode(b"bad\xff\xfename.jpg")
    (tmp_path / name).write_bytes((photos / "a.jpg").read_bytes())
    code = "import sys; from qgac_transforms import cli; sys.exit(cli.main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "info", str(tmp_path / name)], capture_output=True,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"}, timeout=120)
    assert done.returncode == 0 and b"bad\\xff\\xfename.jpg" in done.stdout, done.stderr[-500:]


def test_info_json_without_tables(qgac, photos):
    code, out, _ = qgac("info", photos / "a.jpg", "--json", "--tables", "none")
    info = json.loads(out)
    assert code == 0 and all("table" not in table for table in info["tables"]) and info["tables"][0]["quality"] == 30


def test_no_progress_bar_into_a_log(qgac, photos, tiny_weights, tmp_path):
    (photos / "broken.jpg").unlink()
    code, _, err = qgac("correct", photos, "-o", tmp_path / "out", "--weights", tiny_weights)
    assert code == 0 and "\r" not in err and "file/s" not in err


def test_info_recognises_non_baseline_libjpeg_tables(qgac, tmp_path):
    blocks = read_coefficients(save_jpeg(textured_image(4, 16, 16, "L"), quality=20)).y
    jpeg = jpeglib.from_dct(Y=blocks, qt=quality_to_table(20, baseline=False).numpy()[None], quant_tbl_no=[0])
    jpeg.height, jpeg.width = 16, 16
    jpeg.write_dct(str(tmp_path / "q20-16bit.jpg"))  # libjpeg warns: steps above 255 are not baseline
    code, out, _ = qgac("info", tmp_path / "q20-16bit.jpg")
    assert code == 0 and "quality (Y): 20 (libjpeg table)" in out and "303" in out


# --------------------------------------------------------------------------- issue 20


def test_info_on_a_decode_saved_as_png(qgac, tmp_path):
    with Image.open(io.BytesIO(save_jpeg(textured_image(5, 96, 128), quality=30))) as decoded:
        decoded.crop((3, 5, 120, 90)).save(tmp_path / "cut.png")  # a crop at offset (5, 3), saved losslessly
    textured_image(6, 64, 64).save(tmp_path / "drawn.png")
    code, out, err = qgac("info", tmp_path / "cut.png", tmp_path / "drawn.png")
    assert code == 1 and "drawn.png: PNG, not a JPEG, and its pixels are no JPEG decode" in err
    assert "quality:     30" in out and "subsampling: 4:2:0" in out and "grid offset: 5,3" in out
    code, out, _ = qgac("info", tmp_path / "cut.png", "--json", "--tables", "none")
    found = json.loads(out)["decoded_jpeg"]
    assert code == 0 and found["offset"] == [5, 3] and not found["transposed"] and "table" not in found["tables"][0]


def test_info_on_sixteen_bit_and_oversized_pictures(qgac, tmp_path, monkeypatch):
    with Image.open(io.BytesIO(save_jpeg(textured_image(5, 96, 128, "L"), quality=30))) as decoded:
        Image.fromarray(np.asarray(decoded).astype(np.uint16) * 257).save(tmp_path / "wide.png")  # 16-bit, same picture
    textured_image(6, 64, 64).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # huge.png is over twice the limit, wide.png too
    code, _, err = qgac("info", tmp_path / "huge.png")
    assert code == 1 and "huge.png: not a JPEG file" in err  # Pillow's refusal is no traceback
    monkeypatch.undo()
    code, out, _ = qgac("info", tmp_path / "wide.png")
    assert code == 0 and "quality:     30" in out


def test_the_output_file_extension_decides_the_format(qgac, photos, tiny_weights, tmp_path):
    source = photos / "sub" / "b.jpeg"
    code, _, err = qgac("correct", source, "-o", tmp_path / "x.webp", "--weights", tiny_weights)
    assert code == 2 and ".webp is not a format" in err and not (tmp_path / "x.webp").exists()
    code, _, err = qgac("correct", source, "-o", tmp_path / "y.jpg", "--format", "png", "--weights", tiny_weights)
    assert code == 2 and "names a JPEG file, but --format is png" in err and not (tmp_path / "y.jpg").exists()
    assert qgac("correct", source, "-o", tmp_path / "y.jpg", "--weights", tiny_weights)[0] == 0
    assert qgac("correct", source, "-o", tmp_path / "z.PNG", "--weights", tiny_weights)[0] == 0
    assert Image.open(tmp_path / "y.jpg").format == "JPEG" and Image.open(tmp_path / "z.PNG").format == "PNG"


def test_a_file_with_malformed_exif_is_corrected_and_the_run_goes_on(qgac, photos, tiny_weights, tmp_path):
    """Pillow decodes such a file but cannot parse its EXIF: it is corrected as stored, EXIF kept as it came."""
    bad = photos / "bad-exif.jpg"
    bad.write_bytes(save_jpeg(textured_image(4, 16, 24), quality=40, exif=b"Exif\x00\x00GARBAGEGARBAGE"))
    code, _, err = qgac("correct", bad, photos / "sub" / "b.jpeg", "-o", tmp_path / "out", "--format", "jpeg",
                        "--weights", tiny_weights)  # fmt: skip
    assert code == 0, err
    result = Image.open(tmp_path / "out" / "bad-exif.jpg")
    assert result.size == (24, 16) and result.info["exif"] == b"Exif\x00\x00GARBAGEGARBAGE"
    assert (tmp_path / "out" / "b.jpg").is_file()


@pytest.mark.parametrize(
    ("samp_factor", "orientation", "written"),
    [
        ([[2, 2], [1, 1], [1, 1]], 1, "4:2:0"),
        ([[1, 2], [1, 1], [1, 1]], 1, "4:2:2"),
        ([[1, 2], [1, 1], [1, 1]], 6, "4:4:4"),  # upright, its chroma is halved vertically: 4:4:0
        ([[2, 1], [1, 1], [1, 1]], 1, "4:4:4"),  # 4:4:0: Pillow cannot write it
        ([[2, 1], [1, 1], [1, 1]], 8, "4:2:2"),  # 4:4:0 turned a quarter: 4:2:2
        ([[1, 4], [1, 1], [1, 1]], 1, "4:2:2"),  # 4:1:1: 4:2:2 keeps all of its chroma
    ],
)
def test_jpeg_outputs_keep_all_of_the_inputs_chroma_resolution(qgac, tiny_weights, tmp_path, samp_factor,
                                                               orientation, written):  # fmt: skip
    source = tmp_path / "in.jpg"
    jpeg = jpeglib.from_spatial(np.asarray(textured_image(5, 32, 48)))
    jpeg.samp_factor = np.array(samp_factor)
    jpeg.write_spatial(str(source), qt=60)
    if orientation != 1:  # an EXIF segment after SOI; re-encoding would change the sampling
        exif = Image.Exif()
        exif[0x0112] = orientation
        segment = exif.tobytes()
        data = source.read_bytes()
        source.write_bytes(data[:2] + b"\xff\xe1" + (2 + len(segment)).to_bytes(2, "big") + segment + data[2:])
    assert qgac("correct", source, "-o", tmp_path / "out.jpg", "--weights", tiny_weights)[0] == 0
    assert read_coefficients(tmp_path / "out.jpg").subsampling == written


def test_an_empty_folder_is_a_failure(qgac, tiny_weights, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = qgac("correct", tmp_path / "empty", "--weights", tiny_weights)
    assert code == 1 and "empty: no files in this folder" in err


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("factor", [(v, h) for v in (1, 2, 4) for h in (1, 2, 4)])
def test_output_subsampling_is_the_coarsest_pillow_layout_that_loses_no_chroma(factor, orientation):
    upright = factor[::-1] if orientation in (5, 6, 7, 8) else factor
    lossless = [SUBSAMPLINGS[name] for name in PILLOW_SUBSAMPLING
                if SUBSAMPLINGS[name][0] <= upright[0] and SUBSAMPLINGS[name][1] <= upright[1]]  # fmt: skip
    chosen = SUBSAMPLINGS[output_subsampling(factor, orientation)]
    assert chosen in lossless and chosen[0] * chosen[1] == max(v * h for v, h in lossless)


def test_globs_of_folders_symlinked_folders_and_pipes(qgac, tmp_path, tiny_weights):
    shoots = tmp_path / "shoots"
    for name in ("shoot-1", "shoot-2"):
        (shoots / name).mkdir(parents=True)
        (shoots / name / "a.jpg").write_bytes(save_jpeg(textured_image(1, 16, 16), quality=40))
    code, _, _ = qgac("correct", str(shoots / "shoot-*"), "-o", tmp_path / "out", "--weights", tiny_weights)
    assert code == 0 and {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")} == {
        "shoot-1/a.png", "shoot-2/a.png"}  # a matched folder is searched, its name kept
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "elsewhere").symlink_to(shoots / "shoot-1", target_is_directory=True)
    (linked / "loop").symlink_to(linked, target_is_directory=True)  # walked once, not forever
    os.mkfifo(linked / "pipe")  # never opened: reading it would block
    code, _, err = qgac("correct", linked, "-o", tmp_path / "out-linked", "--weights", tiny_weights)
    assert code == 0 and (tmp_path / "out-linked" / "elsewhere" / "a.png").is_file()
    assert "pipe: not a regular file" in err
    (linked / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    code, _, err = qgac("correct", str(linked / "*"), "-o", tmp_path / "out-glob", "--weights", tiny_weights)
    assert code == 1 and "pipe: not a regular file" in err and "gone.jpg: cannot read file" in err  # were dropped
    for name, reason in (("pipe", "not a regular file"), ("gone.jpg", f"a broken link (to {tmp_path / 'nowhere.jpg'})")):
        code, _, err = qgac("correct", linked / name, "--weights", tiny_weights)  # was "no such file or folder"
        assert code == 1 and f"{linked / name}: {reason}" in err


def test_a_trailing_slash_names_a_folder_and_long_names_are_written(qgac, photos, tmp_path, tiny_weights):
    code, _, _ = qgac("correct", photos / "a.jpg", "-o", f"{tmp_path / 'results.v2'}/", "--weights", tiny_weights)
    assert code == 0 and (tmp_path / "results.v2" / "a.png").is_file()
    long = tmp_path / "long" / ("x" * 240 + ".jpg")  # the output name is legal; a temporary name beside it must be
    long.parent.mkdir()
    long.write_bytes((photos / "a.jpg").read_bytes())
    code, _, err = qgac("correct", long, "--weights", tiny_weights)
    assert code == 0 and long.with_name("x" * 240 + "_qgac.png").is_file(), err
    assert [p.name for p in long.parent.iterdir() if p.name.startswith(".")] == []


def test_a_model_that_cannot_load_still_lets_the_input_failures_be_said(qgac, photos, tmp_path):
    code, _, err = qgac("correct", tmp_path / "nosuch.jpg", photos / "a.jpg", "--weights", tmp_path / "no-model")
    assert code == 2 and "nosuch.jpg: no such file or folder" in err and "cannot load the model" in err


def test_ctrl_c_exits_130_without_a_traceback(qgac, photos, monkeypatch):
    from qgac_transforms.cli import correct as correct_command

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(correct_command, "collect", interrupted)
    code, _, err = qgac("correct", photos)
    assert code == 130 and err.strip() == "qgac correct: interrupted"


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.floats(allow_nan=True, allow_infinity=True),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(_JSON_VALUES)
def test_reports_are_standard_json_with_null_for_values_that_are_not_finite(value):
    """Python's json writes NaN and Infinity, which browsers and jq refuse; every report reads back
    with a strict parser, equal to what was given with each non-finite float as null."""
    def expected(item):
        if isinstance(item, float) and not np.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: expected(inner) for key, inner in item.items()}
        return [expected(inner) for inner in item] if isinstance(item, list) else item

    for indent in (None, 2):
        assert strict_json_loads(cli.strict_json(value, indent)) == expected(value)
