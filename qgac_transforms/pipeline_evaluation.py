"""How much of the file's correction each way of feeding the transform gets.

Data pipelines hand the transform JPEGs in many forms: the file, its decode, a copy
turned upright by ``exif_transpose``, a rotation or crop of the decode (small crops too,
which give blind correction few blocks to find the grid in), an image decoded from bytes
whose stream is gone. :func:`evaluate_pipelines` compresses each
image of a folder (Pillow, 4:2:0 unless said otherwise, the protocol of
:mod:`~qgac_transforms.evaluation`), feeds the transform each way, and measures the RGB
PSNR gain of its output over its input, beside the gain of the exact path (the file
through the transform) on the same pixels: the exact output cut, turned or flipped as
the input was. ``qgac eval-pipelines`` runs it and writes the report.
"""

from __future__ import annotations

import io
import os
import statistics
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from PIL import Image, ImageOps
from torch import Tensor
from tqdm.auto import tqdm

from .benchmark import fastest_seconds
from .evaluation import compress, list_images, load_reference, pixels
from .jpeg_io import PILLOW_SUBSAMPLING
from .metrics import psnr
from .model import QGAC
from .quantization import check_quality
from .transforms import JPEGArtifactCorrection

#: Pillow's ``subsampling`` codes.
SUBSAMPLING_422, SUBSAMPLING_420 = PILLOW_SUBSAMPLING["4:2:2"], PILLOW_SUBSAMPLING["4:2:0"]
#: Crop offsets measured (in x and in y at once: the 8x8 grid and the 16-pixel chroma grid move).
CROP_OFFSETS = tuple(range(1, 16))
#: A crop is this many pixels smaller than the image in each direction (odd, so its size is no multiple of 8).
CROP_MARGIN = (19, 21)
#: Sides of the small square crops measured, cut from the middle of images at least 16
#: pixels larger: the fewer blocks, the less evidence blind correction has to find the grid.
SMALL_CROPS = (48, 64, 96, 128)
#: Rows and columns from a 16-pixel (4:2:0 MCU) boundary to a small crop's top left.
SMALL_CROP_PHASE = 5
#: Side of the square image whose blind and exact corrections are timed.
TIMED_SIDE = 512
#: Timed runs per correction (the fastest counts, after one warm-up).
TIMING_REPEATS = 3

#: Orientations of a decode: name -> what it does to ``(..., H, W)`` pixels.
ORIENTATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "rotate 90": lambda x: torch.rot90(x, 1, (-2, -1)),
    "rotate 180": lambda x: torch.rot90(x, 2, (-2, -1)),
    "rotate 270": lambda x: torch.rot90(x, 3, (-2, -1)),
    "flip left-right": lambda x: x.flip(-1),
    "flip top-bottom": lambda x: x.flip(-2),
    "transpose": lambda x: x.transpose(-2, -1),
    "transverse": lambda x: torch.rot90(x, 2, (-2, -1)).transpose(-2, -1),
}
#: EXIF orientation 6 (a phone held upright): ``exif_transpose`` turns the stored pixels a quarter turn clockwise.
EXIF_ROTATED = 6


def _tensor(image: Image.Image) -> Tensor:
    return pixels(image.convert("RGB") if image.mode not in ("L", "RGB") else image)


def _decode(data: bytes) -> Tensor:
    with Image.open(io.BytesIO(data)) as image:
        return pixels(image)


class _Case:
    """One image at one quality: the file, its decode and the exact path's correction."""

    def __init__(self, transform: JPEGArtifactCorrection, reference: Image.Image, quality: int, subsampling: int) -> None:
        self.reference_image, self.quality, self.subsampling = reference, quality, subsampling
        self.reference = pixels(reference)
        self.data = compress(reference, quality, subsampling)
        self.decoded = _decode(self.data)
        self.exact = _tensor(transform(self.data))


def _ways(
    case: _Case, transform: JPEGArtifactCorrection, told: JPEGArtifactCorrection
) -> Iterator[tuple[str, Callable[[], tuple[Tensor, Tensor, Tensor, Tensor]]]]:
    """``(way, run)``: ``run()`` gives the input the transform got, its output, and the
    reference and exact correction cut or turned as the input was. ``told`` is the
    transform given the case's quality, for the small crops."""

    def from_bytes() -> tuple[Tensor, Tensor, Tensor, Tensor]:
        image = Image.open(io.BytesIO(case.data))  # as Hugging Face datasets' Image() decodes: the stream is gone
        image.load()
        return case.decoded, _tensor(transform(image)), case.reference, case.exact

    def exif_transposed() -> tuple[Tensor, Tensor, Tensor, Tensor]:
        exif = Image.Exif()
        exif[0x0112] = EXIF_ROTATED
        buffer = io.BytesIO()  # the same file (the encoder is deterministic), with an orientation tag
        case.reference_image.save(buffer, "JPEG", quality=case.quality, subsampling=case.subsampling, exif=exif)
        with Image.open(buffer) as image:
            upright = ImageOps.exif_transpose(image)  # a copy, as most loaders make of phone photos
        turn = ORIENTATIONS["rotate 270"]  # a quarter turn clockwise
        return _tensor(upright), _tensor(transform(upright)), turn(case.reference), turn(case.exact)

    def changed(
        change: Callable[[Tensor], Tensor], by: JPEGArtifactCorrection = transform
    ) -> Callable[[], tuple[Tensor, Tensor, Tensor, Tensor]]:
        """The decode cut or turned by ``change``, corrected ``by`` a transform, and the
        reference and exact output alike."""
        return lambda: (change(case.decoded), by(change(case.decoded)), change(case.reference), change(case.exact))

    def cut(top: int, left: int, rows: int, cols: int) -> Callable[[Tensor], Tensor]:
        return lambda x: x[..., top : top + rows, left : left + cols]

    yield "decoded pixels", changed(lambda x: x)
    yield "Pillow image from bytes, stream gone", from_bytes
    yield "exif_transpose copy", exif_transposed
    for name, orient in ORIENTATIONS.items():
        yield name, changed(orient)
    height, width = case.decoded.shape[-2:]
    for offset in CROP_OFFSETS:
        yield f"crop at offset {offset}", changed(cut(offset, offset, height - CROP_MARGIN[0], width - CROP_MARGIN[1]))
    for side in SMALL_CROPS:
        if min(height, width) >= side + 16:
            top, left = (16 * ((length - side) // 32) + SMALL_CROP_PHASE for length in (height, width))
            crop = cut(top, left, side, side)
            yield f"crop of {side} x {side}", changed(crop)
            yield f"crop of {side} x {side}, quality given", changed(crop, told)


def _gain(output: Tensor, given: Tensor, reference: Tensor) -> float:
    """RGB PSNR gain (dB) of ``output`` over the ``given`` input, both against ``reference``."""
    reference = reference.to(torch.float64)
    return float(psnr(output.to(torch.float64), reference) - psnr(given.to(torch.float64), reference))


def evaluate_pipelines(
    model: QGAC,
    dataset: str | os.PathLike,
    qualities: Sequence[int] = (10, 30),
    *,
    timed_images: int = 5,
    progress: bool | None = True,
) -> dict[str, Any]:
    """The report of :mod:`this module <qgac_transforms.pipeline_evaluation>` for the images in ``dataset``.

    For each way and quality: the mean gain of the transform's output over its input
    (``gain_db``), the mean gain of the exact path on the same pixels
    (``exact_gain_db``), their ratio in percent (both ``None`` where every image raised
    and there is nothing to compare with), how many images came out worse than
    their input, and the errors raised (a way that raises counts as no gain). The
    ``"4:2:2 file, decoded pixels"`` way compresses at 4:2:2 and compares with the
    exact path on that file; the ``", quality given"`` ways tell the transform the
    quality. ``timing``: the seconds of the exact path (the file) and of blind
    correction of its decode for the top-left 512 x 512 (or the whole image, if smaller;
    ``side`` is then ``None``) of the first ``timed_images`` colour images that blind
    correction takes, at the first quality, and their ratio. Unreadable images are listed
    under ``failures``.
    """
    qualities = list(dict.fromkeys(check_quality(q) for q in qualities))
    paths = list_images(dataset)
    transform = JPEGArtifactCorrection(model)
    told = {quality: JPEGArtifactCorrection(model, quality=quality) for quality in qualities}
    colour_paths: list[os.PathLike] = []
    rows: dict[str, dict[int, list[dict[str, Any]]]] = {}
    failures: list[dict[str, str]] = []

    def record(way: str, quality: int, image: str, run: Callable[[], tuple[Tensor, Tensor, Tensor, Tensor]]) -> None:
        entry: dict[str, Any] = {"image": image}
        try:
            given, output, reference, exact = run()
        except (ValueError, TypeError) as error:
            entry["error"] = str(error)
        else:
            entry.update(gain_db=_gain(output, given, reference), exact_gain_db=_gain(exact, given, reference))
        rows.setdefault(way, {}).setdefault(quality, []).append(entry)

    total = len(paths) * len(qualities)
    with tqdm(total=total, desc="qgac eval-pipelines", unit="image", disable=None if progress is None else not progress) as bar:
        for path in paths:
            try:
                reference = load_reference(path)
            except ValueError as error:  # unreadable: listed, and the other images measured
                failures.append({"image": path.name, "error": str(error)})
                bar.update(len(qualities))
                continue
            if reference.mode == "RGB":
                colour_paths.append(path)
            for quality in qualities:
                case = _Case(transform, reference, quality, SUBSAMPLING_420)
                for way, run in _ways(case, transform, told[quality]):
                    record(way, quality, path.name, run)
                if reference.mode == "RGB":
                    other = _Case(transform, reference, quality, SUBSAMPLING_422)
                    record("4:2:2 file, decoded pixels", quality, path.name,
                           lambda other=other: (other.decoded, transform(other.decoded), other.reference, other.exact))
                bar.update(1)
    return {
        "dataset": str(dataset),
        "qualities": qualities,
        "n_images": len(paths) - len(failures),
        "ways": {way: {str(q): _summary(entries) for q, entries in by_quality.items()} for way, by_quality in rows.items()},
        "timing": _timing(transform, colour_paths, timed_images, qualities[0]),
        "per_image": rows,
        "failures": failures,
    }


def _summary(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the images of a way at one quality (an image that raised counts as no gain)."""
    gains = [entry.get("gain_db", 0.0) for entry in entries]
    exact_gains = [entry["exact_gain_db"] for entry in entries if "exact_gain_db" in entry]
    exact = statistics.fmean(exact_gains) if exact_gains else None  # every image raised
    mean = statistics.fmean(gains)
    return {
        "gain_db": mean,
        "exact_gain_db": exact,
        "percent_of_exact": 100 * mean / exact if exact else None,
        "worse_than_input": sum(gain < 0 for gain in gains),
        "errors": sum("error" in entry for entry in entries),
    }


def _timing(transform: JPEGArtifactCorrection, paths: Sequence[os.PathLike], count: int, quality: int) -> dict[str, Any]:
    """Seconds of the exact path and of blind correction of the decode, top-left crops of at
    most 512 x 512, for the first ``count`` of ``paths`` that blind correction takes."""
    exact, blind, whole = [], [], True
    for path in paths:
        if len(exact) == count:
            break
        image = load_reference(path)
        crop = image.crop((0, 0, min(TIMED_SIDE, image.width), min(TIMED_SIDE, image.height)))
        data = compress(crop, quality)
        decoded = _decode(data)
        try:  # blind mode refuses crops too small or smooth to estimate the quality of
            blind_seconds = fastest_seconds(lambda: transform(decoded), TIMING_REPEATS)
        except ValueError:
            continue
        whole = whole and crop.size == (TIMED_SIDE, TIMED_SIDE)
        blind.append(blind_seconds)
        exact.append(fastest_seconds(lambda: transform(data), TIMING_REPEATS))
    if not exact:
        return {}
    return {
        "side": TIMED_SIDE if whole else None,  # None: some images were smaller, timed whole
        "quality": quality,
        "n_images": len(exact),
        "threads": torch.get_num_threads(),
        "exact_seconds": statistics.median(exact),
        "blind_seconds": statistics.median(blind),
        "ratio": statistics.median(b / e for b, e in zip(blind, exact)),
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table: one row per way, gain and percent of the exact path per quality."""
    qualities = report["qualities"]
    header = ["Way", *[f"q{q} gain (exact) dB, % of exact" for q in qualities]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for way, by_quality in report["ways"].items():
        cells = [way]
        for quality in qualities:
            s = by_quality[str(quality)]
            note = "".join(
                f", {count} {label}" for count, label in ((s["worse_than_input"], "worse"), (s["errors"], "raised")) if count
            )
            exact = "n/a" if s["exact_gain_db"] is None else f"{s['exact_gain_db']:+.2f}"
            percent = "n/a" if s["percent_of_exact"] is None else f"{s['percent_of_exact']:.0f}%"
            cells.append(f"{s['gain_db']:+.2f} ({exact}), {percent}{note}")
        lines.append("| " + " | ".join(cells) + " |")
    timing = report["timing"]
    if timing:
        side = timing["side"]
        what = (f"a {side} x {side} colour decode" if side else
                f"a colour decode (top-left crops of at most {TIMED_SIDE} x {TIMED_SIDE})")
        lines.append("")
        lines.append(
            f"Blind correction of {what}: {timing['blind_seconds']:.2f} s, "
            f"against {timing['exact_seconds']:.2f} s for its file ({timing['ratio']:.2f}x; median of "
            f"{timing['n_images']} images, {timing['threads']} thread{'' if timing['threads'] == 1 else 's'})."
        )
    return "\n".join(lines)
