"""``qgac bench``: read, network and end-to-end speed and peak memory on generated images."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from . import command_line, device_problem, json_path_problem, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="torch intra-op threads (default: all usable cores)")
    parser.add_argument("--repeats", type=int, default=5, metavar="N", help="timed runs per measurement, after one untimed warm-up; the fastest is reported (default 5)")
    parser.add_argument("--paper", action="store_true", help="also time the paper-size network (259M parameters; slow)")
    parser.add_argument("--weights", help="model for the end-to-end and memory runs (default: the package's default model)")
    parser.add_argument("--device", default="cpu", help="torch device for the network and end-to-end runs (default cpu)")
    parser.add_argument(
        "--memory-megapixels", type=float, default=24.0, metavar="MP",
        help="size of the peak-memory run (default 24; 0 skips it)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from ..benchmark import NETWORK_CONFIGS, format_report, run_benchmark

    if (args.repeats < 1 or (args.threads is not None and args.threads < 1)
            or not 0 <= args.memory_megapixels < math.inf):  # NaN fails too
        print("qgac bench: --repeats and --threads must be at least 1, --memory-megapixels a number 0 or more",
              file=sys.stderr)
        return 2
    problem = json_path_problem(args.json) or device_problem(args.device)
    if problem:
        print(f"qgac bench: {problem}", file=sys.stderr)
        return 2
    try:
        report = run_benchmark(
            threads=args.threads,
            repeats=args.repeats,
            configs=(*NETWORK_CONFIGS, "paper") if args.paper else NETWORK_CONFIGS,
            memory_megapixels=args.memory_megapixels or None,
            weights=args.weights,
            device=args.device,
            log=lambda message: print(f"qgac bench: {message}", file=sys.stderr, flush=True),
        )
    except (OSError, ValueError) as error:  # weights not found or invalid
        print(f"qgac bench: {error}", file=sys.stderr)
        return 2
    print(format_report(report))
    write_json(args.json, {"command": command_line("bench", args), **report})
    return 0
