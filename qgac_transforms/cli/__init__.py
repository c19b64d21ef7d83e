"""The ``qgac`` command line: one module per subcommand, imported only when used.

Exit codes: 0 all good, 1 some inputs failed (listed on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .._version import __version__

#: subcommand -> module in this package exposing ``add_arguments(parser)`` and ``run(args) -> int``.
SUBCOMMANDS = {
    "correct": ("correct", "correct JPEG artifacts in files, folders or globs"),
    "info": ("info", "show a JPEG's size, subsampling, tables and estimated quality"),
    "eval": ("evaluate", "evaluate a model on a folder of images under the paper's protocol"),
    "bench": ("bench", "measure read, network and end-to-end speed and peak memory"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qgac", description="Quantization Guided JPEG Artifact Correction.")
    parser.add_argument("--version", action="version", version=f"qgac-transforms {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(f".{module_name}", __name__)
        sub = commands.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
