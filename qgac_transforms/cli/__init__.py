"""The ``qgac`` command line: one module per subcommand, imported only when used.

Exit codes: 0 all good, 1 some inputs failed (listed on stderr), 2 usage error,
141 (128 + SIGPIPE, as Unix tools) when the reader of the output went away (``qgac info | head``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._version import __version__

#: subcommand -> module in this package exposing ``add_arguments(parser)`` and ``run(args) -> int``.
SUBCOMMANDS = {
    "correct": ("correct", "correct JPEG artifacts in files, folders or globs"),
    "info": ("info", "show a JPEG's size, subsampling, tables and estimated quality"),
    "eval": ("evaluate", "evaluate a model on a folder of images under the paper's protocol"),
    "eval-pipelines": ("evaluate_pipelines", "measure the gain of each way of feeding the transform against the file's"),
    "bench": ("bench", "measure read, network and end-to-end speed and peak memory"),
}


#: Exit status when stdout's reader went away: 128 + SIGPIPE, what a shell reports for Unix tools.
EXIT_BROKEN_PIPE = 141
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def strict_json(value: Any, indent: int | None = 2) -> str:
    """``value`` as standard JSON, which every reader accepts: a float that is not finite (a
    ratio with nothing to measure, the PSNR of an image equal to its reference) is written
    ``null``, where Python's own ``json`` would write ``NaN`` or ``Infinity``."""
    def finite(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, Mapping):
            return {key: finite(inner) for key, inner in item.items()}
        if isinstance(item, (list, tuple)):
            return [finite(inner) for inner in item]
        return item

    return json.dumps(finite(value), indent=indent, allow_nan=False)


def write_json(path: Path | None, report: dict[str, Any]) -> None:
    """Write a command's report as indented standard JSON (``--json FILE``; see
    :func:`strict_json`), creating its folder."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(strict_json(report) + "\n")


def json_path_problem(path: Path | None) -> str | None:
    """Why ``--json FILE`` could not be written, found before a long run rather than after it
    (the report would be lost); ``None`` when it can be."""
    if path is None:
        return None
    try:
        if path.is_dir():
            return f"--json {path} is a folder; give a file name"
        if path.exists():  # replaced in place (/dev/stdout too): only the file must be writable
            return None if os.access(path, os.W_OK) else f"--json {path}: not writable"
        folder = path.parent
        while not folder.exists():  # write_json creates the missing folders
            folder = folder.parent
    except OSError as error:  # a folder on the way that cannot be searched
        return f"--json {path}: {error.strerror or error}"
    if not folder.is_dir():
        return f"--json {path}: {folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"--json {path}: {folder} is not writable"
    return None


def device_problem(device: str) -> str | None:
    """Why ``--device`` cannot run the network (not a device, no driver, no storage), found
    before any work; ``None`` when a tensor made there comes back."""
    import torch  # noqa: PLC0415 - keep `qgac --help` light

    try:
        (torch.zeros(1, device=device) + 1).cpu()
    except (RuntimeError, NotImplementedError, ValueError, AssertionError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"--device {device} cannot be used: {first}"
    return None


def command_line(command: str, args: argparse.Namespace) -> str:
    """The ``qgac COMMAND`` line that reproduces ``args``, every option spelled out, for a
    report's ``command`` field (a model card quotes it beside the table it produced)."""
    words = ["qgac", command]
    for name, value in vars(args).items():
        if name in ("command", "run") or value is None or value is False:
            continue
        words.append("--" + name.replace("_", "-"))
        if value is not True:
            words += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return shlex.join(words)


def set_threads(command: str, threads: int | None) -> bool:
    """Apply ``--threads`` (torch's intra-op threads) if given; ``False``, with a message, if it is below 1."""
    if threads is None:
        return True
    if threads < 1:
        print(f"qgac {command}: --threads must be at least 1, got {threads}", file=sys.stderr)
        return False
    import torch  # noqa: PLC0415 - keep `qgac --help` light

    torch.set_num_threads(threads)
    return True


def report_failures(command: str, failures: Sequence[tuple[str, str]], noun: str) -> int:
    """List ``(input, reason)`` failures on stderr; the exit code (1 if any failed, else 0)."""
    if not failures:
        return 0
    print(f"qgac {command}: {len(failures)} {noun}(s) failed:", file=sys.stderr)
    for source, reason in failures:
        print(f"  {source}: {reason}", file=sys.stderr)
    return 1


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
    try:
        code = int(args.run(args))
        sys.stdout.flush()
    except BrokenPipeError:  # `qgac info ... | head`: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:  # Ctrl-C: no traceback; outputs are written atomically, so none is partial
        print(f"qgac {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
