"""``qgac eval-pipelines --dataset DIR``: the gain of each way of feeding the transform, against the file's.

See :mod:`qgac_transforms.pipeline_evaluation`; ``docs/pipelines.md`` shows the table
for LIVE1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import command_line, json_path_problem, report_failures, set_threads, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, type=Path, metavar="DIR", help="folder of lossless ground-truth images")
    parser.add_argument(
        "--quality", type=int, nargs="+", default=[10, 30], metavar="Q", help="JPEG qualities to compress at (default 10 30)"
    )
    parser.add_argument("--weights", help="model: Hub repo id or saved model folder (default: the package's default model)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the full report (per image too) as JSON")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="torch intra-op threads (default: torch's)")


def run(args: argparse.Namespace) -> int:
    from ..configs import shared_model, weights_label
    from ..pipeline_evaluation import evaluate_pipelines, format_table

    if not set_threads("eval-pipelines", args.threads):
        return 2
    problem = json_path_problem(args.json)
    if problem:
        print(f"qgac eval-pipelines: {problem}", file=sys.stderr)
        return 2
    try:
        model = shared_model(args.weights, "cpu")
        report = evaluate_pipelines(model, args.dataset, args.quality, progress=None)
    except (OSError, ValueError) as error:  # no such folder, no images, bad quality, weights not found or invalid
        print(f"qgac eval-pipelines: {error}", file=sys.stderr)
        return 2
    print(format_table(report))
    write_json(args.json, {"command": command_line("eval-pipelines", args), "weights": weights_label(args.weights), **report})
    return report_failures("eval-pipelines", [(f["error"], "skipped") for f in report["failures"]], "image")
