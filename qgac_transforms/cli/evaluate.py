"""``qgac eval --dataset DIR``: PSNR / PSNR-B / SSIM of JPEG inputs and their corrections.

The protocol (encoder, 4:2:0, rounding, metric definitions) is that of
:mod:`qgac_transforms.evaluation`, stated in full in the JSON ``protocol`` field.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import (
    command_line,
    device_problem,
    json_path_problem,
    report_failures,
    set_threads,
    write_json,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, type=Path, metavar="DIR", help="folder of lossless ground-truth images")
    parser.add_argument(
        "--quality", type=int, nargs="+", default=[10, 20, 30], metavar="Q",
        help="JPEG qualities to compress at (default 10 20 30)",
    )  # fmt: skip
    parser.add_argument("--weights", help="model: Hub repo id or saved model folder (default: the package's default model)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the full report (per image too) as JSON")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--ssim-window", choices=("gaussian", "uniform8"), default="gaussian",
        help="SSIM window: gaussian 11x11 sigma 1.5 (default, as MATLAB) or uniform8 (the QGAC paper's torchjpeg)",
    )  # fmt: skip
    parser.add_argument(
        "--self-ensemble", action="store_true",
        help="average the corrections of each image's eight orientations (8x the time)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation import evaluate_dataset, format_table

    if not set_threads("eval", args.threads):
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    problem = json_path_problem(args.json) or device_problem(device)
    if problem:
        print(f"qgac eval: {problem}", file=sys.stderr)
        return 2
    try:
        report = evaluate_dataset(
            args.weights, args.dataset, args.quality, device=device, ssim_window=args.ssim_window, progress=None,
            self_ensemble=args.self_ensemble,
        )
    except (OSError, ValueError) as error:  # no such folder, no images, bad quality, weights not found or invalid
        print(f"qgac eval: {error}", file=sys.stderr)
        return 2
    print(format_table(report))
    write_json(args.json, {**report, "command": command_line("eval", args)})
    return report_failures("eval", [(f["error"], "skipped") for f in report["failures"]], "image")
