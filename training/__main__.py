"""Command line of the training package: ``python -m training {prepare,shard,stats,train,bench,interpolate,export,card,channels} ...``.

Exit codes: 0 done (or stopped by a signal, checkpoint kept), 2 bad options or data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import typing
from pathlib import Path

from qgac_transforms.cli import json_path_problem, write_json

from .data import DatasetError, split_images, training_images
from .export import HUB_DIR, export_run, interpolate, write_card
from .stats import coefficient_statistics
from .trainer import TrainConfig, Trainer, configure_logging, open_run_log


#: Extra spellings of option flags. ``torchrun`` rejects ``--run`` after the script name
#: (argparse reads it as an ambiguous abbreviation of its own ``--run-path``).
FLAG_ALIASES = {"run": ["--run-dir"]}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        flags = ["--" + field.name.replace("_", "-"), *FLAG_ALIASES.get(field.name, [])]
        hint = hints[field.name]
        if bool in (hint, *typing.get_args(hint)):  # bool, or bool | None (decided by the config)
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, default=None)
        elif typing.get_origin(hint) is dict:
            parser.add_argument(*flags, type=json.loads, default=None, help="a JSON object")
        elif typing.get_origin(hint) is list:
            parser.add_argument(*flags, type=typing.get_args(hint)[0], nargs="+", default=None)
        else:
            scalar = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
            parser.add_argument(*flags, type=scalar, default=None)


def build_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the ``--config-file`` JSON, then flags given on the command line."""
    values: dict = {}
    if args.config_file:
        values.update(_read_config_file(Path(args.config_file)))
    for field in dataclasses.fields(TrainConfig):
        given = getattr(args, field.name)
        if given is not None:
            values[field.name] = given
    return TrainConfig(**values)


def _read_config_file(path: Path) -> dict:
    """The options of a ``--config-file``: a JSON object of :class:`TrainConfig` fields."""
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"--config-file {path}: not valid JSON ({error})") from error
    if not isinstance(values, dict):
        raise ValueError(f"--config-file {path}: holds a JSON {type(values).__name__}, not an object of options")
    unknown = set(values) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ValueError(f"--config-file {path}: unknown training option(s): {', '.join(sorted(unknown))}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="downscale a folder of training images to lossless WebP")
    prepare.add_argument("--data", required=True, help="folder of training images")
    prepare.add_argument("--out", required=True, help="folder to write the downscaled images to")
    prepare.add_argument("--factor", type=int, default=2, help="downscaling factor (default 2)")

    shard = commands.add_parser("shard", help="split a training folder into shards and a validation folder")
    shard.add_argument("--data", required=True, help="folder of training images")
    shard.add_argument("--out", required=True, help="folder to write validation/ and shard-NN/ to")
    shard.add_argument("--shard-mb", type=float, required=True, help="largest size of a shard, in MiB")
    shard.add_argument("--validation-images", type=int, default=TrainConfig.validation_images,
                       help="held-out images, chosen as training chooses them (default %(default)s)")

    stats = commands.add_parser("stats", help="compute normalization statistics of the training images")
    stats.add_argument("--data", required=True, help="folder of training images")
    stats.add_argument("--validation-images", type=int, default=TrainConfig.validation_images,
                       help="held-out images to exclude (as in training, default %(default)s)")
    stats.add_argument("--out", required=True, help="JSON file to write")

    train = commands.add_parser("train", help="train one stage (resumes from the run's checkpoint)")
    train.add_argument("--config-file", help="JSON file of options (flags override it)")
    _add_config_flags(train)

    bench = commands.add_parser("bench", help="patches per second of the data path and of training steps")
    bench.add_argument("--config-file", help="JSON file of training options (flags override it)")
    bench.add_argument("--batches", type=int, default=20, help="timed batches of each measurement (default 20)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed batches first (default 3)")
    bench.add_argument("--repeats", type=int, default=3, help="timings of each figure; the fastest counts (default 3)")
    bench.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    _add_config_flags(bench)

    blend = commands.add_parser("interpolate", help="blend regression and GAN weights (network interpolation)")
    blend.add_argument("--regression", required=True, help="regression model: checkpoint .pt or exported folder")
    blend.add_argument("--gan", required=True, help="GAN model: checkpoint .pt or exported folder")
    blend.add_argument("--alpha", type=float, default=0.7, help="weight of the GAN model (paper: 0.7)")
    blend.add_argument("--out", required=True, help="folder to write the blended model to (Hub layout)")
    blend.add_argument("--name", help="model name in the card (default: the folder name)")

    export = commands.add_parser("export", help="write a run's weights in the Hub layout")
    export.add_argument("--run", required=True, help="run folder holding checkpoint-<stage>.pt")
    export.add_argument("--stage", default="color", choices=("y", "color", "gan"),
                        help="stage whose checkpoint to export ('y' exports a grayscale-only model)")
    export.add_argument("--name", required=True, help="model name: the folder under --hub-dir")
    destination = export.add_mutually_exclusive_group()
    destination.add_argument("--hub-dir", help=f"folder of Hub model folders (default: {HUB_DIR})")
    export.add_argument("--repo-id", help="Hub repo id named in the card (default: qgac-transforms/<name>)")
    export.add_argument("--eval-json", nargs="*", default=[], help="`qgac eval --json` files for the card")
    export.add_argument("--half", action="store_true",
                        help="store the weights in float16 (half the size; loaded back into float32)")
    export.add_argument("--max-shard-mb", type=float,
                        help="split weights larger than this many MiB into shards of at most that size")
    destination.add_argument("--embed", action="store_true",
                             help="write the model into qgac_transforms/weights/<name>/ (shipped in the wheel, "
                                  "published from there) in place of --hub-dir")

    card = commands.add_parser("card", help="rewrite a saved model folder's card with evaluation reports")
    card.add_argument("folder", help="a saved model folder with its training.json")
    card.add_argument("--eval-json", nargs="+", required=True, help="`qgac eval --json` files of these weights")
    card.add_argument("--repo-id", help="Hub repo id named in the card (default: qgac-transforms/<folder name>)")
    channels = commands.add_parser("channels", help="PSNR gain per YCbCr channel on held-out photos")
    channels.add_argument("--data", required=True, help="a folder of held-out photos (never a benchmark)")
    channels.add_argument("--quality", type=int, nargs="+", default=[10, 30, 90], help="JPEG qualities")
    channels.add_argument("--weights", help="a model name or saved folder (default: the default model)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _run(args)
    except _UsageError as error:
        print(f"python -m training {args.command}: error: {error}", file=sys.stderr)
        return 2


class _UsageError(Exception):
    """Bad options, data or input files (as opposed to a failure while training)."""


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "prepare":
            from .prepare import downscale_folder  # noqa: PLC0415

            written = downscale_folder(args.data, args.out, args.factor)
            print(f"{len(written)} images downscaled by {args.factor} -> {args.out}")
            return 0
        if args.command == "shard":
            from .shard import shard_folder  # noqa: PLC0415

            folders = shard_folder(args.data, args.out, args.shard_mb, args.validation_images)
            print(f"{len(folders)} shards of at most {args.shard_mb:g} MiB and validation/ -> {args.out}")
            return 0
        if args.command == "stats":
            paths, _ = split_images(training_images(args.data), args.validation_images)
            Path(args.out).write_text(json.dumps(coefficient_statistics(paths)))
            print(f"statistics of {len(paths)} images -> {args.out}")
            return 0
        if args.command == "interpolate":
            written = interpolate(args.regression, args.gan, args.alpha, args.out, name=args.name)
            print(f"alpha {args.alpha}: {args.regression} + {args.gan} -> {written}")
            return 0
        if args.command == "export":
            folder = export_run(args.run, args.stage, args.name, args.hub_dir or HUB_DIR, args.eval_json,
                                embed=args.embed, repo_id=args.repo_id, half=args.half,
                                max_shard_mb=args.max_shard_mb)
            print(f"exported {args.run} stage {args.stage} -> {folder}")
            return 0
        if args.command == "card":
            print(f"model card -> {write_card(args.folder, args.eval_json, repo_id=args.repo_id)}")
            return 0
        if args.command == "channels":
            from .channels import channel_gains, format_rows  # noqa: PLC0415

            print(format_rows(channel_gains(args.data, args.quality, args.weights)))
            return 0
        config = build_config(args)
        if args.command == "bench":
            from .bench import format_bench, run_training_bench  # noqa: PLC0415

            if problem := json_path_problem(args.json):  # before the minutes of measuring, not after
                raise ValueError(problem)
            report = {"command": "python -m training " + shlex.join(args.argv),
                      **run_training_bench(config, args.batches, args.warmup, args.repeats)}
            print(format_bench(report))
            write_json(args.json, report)
            return 0
        trainer = Trainer(config)
        configure_logging(Path(config.run), trainer.rank)
        trainer.build()
        open_run_log()
    except (ValueError, OSError) as error:
        raise _UsageError(str(error)) from error
    try:
        trainer.train()
    except DatasetError as error:
        raise _UsageError(_without_worker_traceback(error)) from error
    return 0


def _without_worker_traceback(error: DatasetError) -> str:
    """The message of a data error, which a loader worker's re-raise wraps in the worker's
    whole traceback ("Caught DatasetError in DataLoader worker process 0 ..."): its last line."""
    last = str(error).strip().splitlines()[-1]
    prefix = f"{DatasetError.__module__}.{DatasetError.__name__}: "
    return last.removeprefix(prefix)


if __name__ == "__main__":
    sys.exit(main())
