"""``qgac info FILE...``: what QGAC sees in a JPEG: size, layout, tables and their libjpeg quality.

For an image file that is not a JPEG (a PNG saved from a JPEG decode, say), what blind
correction finds in its pixels: the JPEG grid's offset, the quality, the subsampling,
whether it is a quarter turn of the JPEG; or why it finds no JPEG grid.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import report_failures, strict_json

#: EXIF orientation -> what a viewer does to show the stored pixels upright.
ORIENTATIONS = {
    1: "normal",
    2: "mirrored horizontally",
    3: "rotated 180",
    4: "mirrored vertically",
    5: "mirrored horizontally, rotated 270 clockwise",
    6: "rotated 90 clockwise",
    7: "mirrored horizontally, rotated 90 clockwise",
    8: "rotated 270 clockwise",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="JPEG files (other images: the JPEG grid in their pixels)")
    parser.add_argument(
        "--tables", choices=("zigzag", "grid", "none"), default="zigzag",
        help="print the quantization tables as 64 values in zigzag order (default), as 8x8 grids, or not at all",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON object per file (tables in natural order)")


def describe(path: str) -> dict[str, Any]:
    """Everything ``qgac info`` reports about one file; ``InvalidJPEGError`` for a JPEG it
    cannot read, and for another file whose pixels show no JPEG grid (the reason why)."""
    from ..jpeg_io import InvalidJPEGError, read_coefficients  # noqa: PLC0415 - keep `qgac --help` light
    from ..quantization import estimate_quality, is_libjpeg_table  # noqa: PLC0415

    try:
        coefficients = read_coefficients(path)
    except InvalidJPEGError as error:
        decoded = _describe_decoded(path)
        if decoded is None:
            raise
        if isinstance(decoded, str):
            raise InvalidJPEGError(error.source, decoded) from error
        return decoded
    names = ("Y",) if coefficients.is_gray else ("Y", "Cb", "Cr")
    tables = []
    for index, (name, table) in enumerate(zip(names, coefficients.tables)):
        chroma = index > 0
        quality = estimate_quality(table, chroma=chroma)
        exact = is_libjpeg_table(table, quality, chroma)
        tables.append({"component": name, "quality": quality, "exact": exact, "table": table.tolist()})
    return {
        "file": path,
        "width": coefficients.width,
        "height": coefficients.height,
        "components": len(names),
        "subsampling": coefficients.subsampling,
        "progressive": coefficients.progressive,
        "orientation": coefficients.orientation,
        "tables": tables,
    }


def _describe_decoded(path: str) -> dict[str, Any] | str | None:
    """What blind correction finds in the pixels of an image file that is not a JPEG: the
    report, the reason it finds no JPEG grid, or ``None`` for a JPEG (its own error
    stands) and for what Pillow cannot read."""
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    from ..evaluation import eight_bit  # noqa: PLC0415
    from ..grid import find_grid  # noqa: PLC0415

    try:
        with Image.open(path) as image:
            image_format = image.format
            if image_format in ("JPEG", "MPO"):
                return None
            array = np.asarray(eight_bit(image))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    pixels = torch.from_numpy(array.reshape(*array.shape[:2], -1).copy()).permute(2, 0, 1)
    if bool((pixels == pixels[:1]).all()):
        pixels = pixels[:1]  # gray, whatever mode it was saved in
    try:
        grid = find_grid(pixels.to(torch.float32))
    except ValueError as error:
        return f"{image_format or 'an image'}, not a JPEG, and its pixels are no JPEG decode: {error}"
    return {
        "file": path,
        "format": image_format,
        "width": array.shape[1],
        "height": array.shape[0],
        "components": pixels.shape[0],
        "decoded_jpeg": {
            "quality": grid.quality,
            "subsampling": grid.subsampling,
            "offset": list(grid.offset),
            "transposed": grid.transposed,
            "tables": [{"component": name, "table": table.tolist()} for name, table in zip(("Y", "Cb", "Cr"), grid.tables)],
        },
    }


def _format_table(table: list[list[int]], layout: str) -> list[str]:
    from ..dct import ZIGZAG  # noqa: PLC0415

    if layout == "grid":
        return [" ".join(f"{value:3d}" for value in row) for row in table]
    flat = [value for row in table for value in row]
    ordered = [flat[index] for index in ZIGZAG]
    return [" ".join(f"{value:3d}" for value in ordered[start : start + 16]) for start in range(0, 64, 16)]


def format_text(info: dict[str, Any], layout: str) -> str:
    if "decoded_jpeg" in info:
        return _format_decoded(info, layout)
    lines = [
        info["file"],
        f"  size:        {info['width']}x{info['height']}",
        f"  components:  {info['components']} ({'grayscale' if info['components'] == 1 else 'YCbCr'})",
        f"  subsampling: {info['subsampling']}",
        f"  progressive: {'yes' if info['progressive'] else 'no'}",
        f"  orientation: {info['orientation']} ({ORIENTATIONS[info['orientation']]})",
    ]
    for table in info["tables"]:
        match = "libjpeg table" if table["exact"] else "nearest libjpeg table"
        lines.append(f"  quality ({table['component']}): {table['quality']} ({match})")
    return "\n".join(lines + _format_tables(info["tables"], layout))


def _format_decoded(info: dict[str, Any], layout: str) -> str:
    found = info["decoded_jpeg"]
    lines = [
        info["file"],
        f"  size:        {info['width']}x{info['height']}",
        f"  format:      {info['format']}, not a JPEG: the pixels of a JPEG decode, as blind correction finds them",
        f"  quality:     {found['quality']} (libjpeg tables)",
        f"  subsampling: {found['subsampling']}",
        f"  grid offset: {found['offset'][0]},{found['offset'][1]} (rows, columns of the JPEG's first MCU above and left of the pixels)",
        f"  transposed:  {'yes (a quarter turn of the JPEG)' if found['transposed'] else 'no'}",
    ]
    return "\n".join(lines + _format_tables(found["tables"], layout))


def _format_tables(tables: list[dict[str, Any]], layout: str) -> list[str]:
    """The distinct tables, each with the components that use it, in ``layout``."""
    lines: list[str] = []
    shown: list[list[list[int]]] = []
    for table in tables:
        if layout == "none" or table["table"] in shown:
            continue
        shown.append(table["table"])
        same = [t["component"] for t in tables if t["table"] == table["table"]]
        lines.append(f"  table {', '.join(same)} ({'zigzag order' if layout == 'zigzag' else 'natural order'}):")
        lines.extend(f"    {row}" for row in _format_table(table["table"], layout))
    return lines


def run(args: argparse.Namespace) -> int:
    from ..jpeg_io import InvalidJPEGError  # noqa: PLC0415

    failures = []
    for path in args.files:
        try:
            info = describe(path)
        except InvalidJPEGError as error:
            failures.append((path, error.reason))
            continue
        if args.json and args.tables == "none":
            found = info.get("decoded_jpeg", info)
            found["tables"] = [{key: value for key, value in table.items() if key != "table"} for table in found["tables"]]
        print(strict_json(info, indent=None) if args.json else _printable(format_text(info, args.tables)))
    return report_failures("info", [(_printable(str(path)), reason) for path, reason in failures], "file")


def _printable(text: str) -> str:
    """``text`` with the undecodable bytes of file names (kept as surrogates) written as
    ``\\xNN``: a strict UTF-8 terminal cannot print the surrogates themselves."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
