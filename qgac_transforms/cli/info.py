"""``qgac info FILE...``: what QGAC sees in a JPEG: size, layout, tables and their libjpeg quality."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import report_failures

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
    parser.add_argument("files", nargs="+", metavar="FILE", help="JPEG files")
    parser.add_argument(
        "--tables", choices=("zigzag", "grid", "none"), default="zigzag",
        help="print the quantization tables as 64 values in zigzag order (default), as 8x8 grids, or not at all",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON object per file (tables in natural order)")


def describe(path: str) -> dict[str, Any]:
    """Everything ``qgac info`` reports about one file (raises ``InvalidJPEGError``)."""
    from ..jpeg_io import read_coefficients  # noqa: PLC0415 - keep `qgac --help` light
    from ..quantization import estimate_quality, is_libjpeg_table  # noqa: PLC0415

    coefficients = read_coefficients(path)
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


def _format_table(table: list[list[int]], layout: str) -> list[str]:
    from ..dct import ZIGZAG  # noqa: PLC0415

    if layout == "grid":
        return [" ".join(f"{value:3d}" for value in row) for row in table]
    flat = [value for row in table for value in row]
    ordered = [flat[index] for index in ZIGZAG]
    return [" ".join(f"{value:3d}" for value in ordered[start : start + 16]) for start in range(0, 64, 16)]


def format_text(info: dict[str, Any], layout: str) -> str:
    lines = [
        info["file"],
        f"  size:        {info['width']}x{info['height']}",
        f"  components:  {info['components']} ({'grayscale' if info['components'] == 1 else 'YCbCr'})",
        f"  subsampling: {info['subsampling']}",
        f"  progressive: {'yes' if info['progressive'] else 'no'}",
        f"  orientation: {info['orientation']} ({ORIENTATIONS[info['orientation']]})",
    ]
    shown: list[list[list[int]]] = []
    for table in info["tables"]:
        match = "libjpeg table" if table["exact"] else "nearest libjpeg table"
        lines.append(f"  quality ({table['component']}): {table['quality']} ({match})")
    for table in info["tables"]:
        if layout == "none" or table["table"] in shown:
            continue
        shown.append(table["table"])
        same = [t["component"] for t in info["tables"] if t["table"] == table["table"]]
        lines.append(f"  table {', '.join(same)} ({'zigzag order' if layout == 'zigzag' else 'natural order'}):")
        lines.extend(f"    {row}" for row in _format_table(table["table"], layout))
    return "\n".join(lines)


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
            info["tables"] = [{key: value for key, value in table.items() if key != "table"} for table in info["tables"]]
        print(json.dumps(info) if args.json else format_text(info, args.tables))
    return report_failures("info", [(str(path), reason) for path, reason in failures], "file")
