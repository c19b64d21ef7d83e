"""Command line of the training package: ``python -m training {stats,train} ...``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path

from .data import list_images, split_images
from .stats import coefficient_statistics
from .trainer import TrainConfig, Trainer, configure_logging


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif typing.get_origin(hint) is list:
            parser.add_argument(flag, type=int, nargs="+", default=None)
        else:
            scalar = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
            parser.add_argument(flag, type=scalar, default=None)


def build_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the ``--config-file`` JSON, then flags given on the command line."""
    values: dict = {}
    if args.config_file:
        values.update(json.loads(Path(args.config_file).read_text()))
    for field in dataclasses.fields(TrainConfig):
        given = getattr(args, field.name)
        if given is not None:
            values[field.name] = given
    unknown = set(values) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise SystemExit(f"unknown training option(s): {', '.join(sorted(unknown))}")
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    stats = commands.add_parser("stats", help="compute normalization statistics of the training images")
    stats.add_argument("--data", required=True, help="folder of training images")
    stats.add_argument("--validation-images", type=int, default=6, help="held-out images to exclude")
    stats.add_argument("--out", required=True, help="JSON file to write")

    train = commands.add_parser("train", help="train one stage (resumes from the run's checkpoint)")
    train.add_argument("--config-file", help="JSON file of options (flags override it)")
    _add_config_flags(train)

    args = parser.parse_args(argv)
    if args.command == "stats":
        paths, _ = split_images(list_images(args.data), args.validation_images)
        Path(args.out).write_text(json.dumps(coefficient_statistics(paths)))
        print(f"statistics of {len(paths)} images -> {args.out}")
        return 0
    config = build_config(args)
    trainer = Trainer(config)
    configure_logging(Path(config.run), trainer.rank)
    trainer.train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
