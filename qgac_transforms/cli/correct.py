"""``qgac correct INPUT... [-o OUTPUT]``: correct JPEG artifacts in files, folders and globs.

Each output is written upright: the EXIF orientation is applied to the pixels and the
tag removed from the EXIF that is written (so every viewer shows the same picture);
the rest of the EXIF and the ICC profile are kept. Outputs go next to their input as
``NAME_qgac.EXT`` unless ``-o`` names a folder (or, for a single input, a file);
files found in a folder keep their path relative to it. Existing files, the input
included, are never replaced without ``--overwrite``, another input never, and every
output is checked for being writable before any image is corrected.

JPEG outputs carry a comment (:data:`OUTPUT_MARK`) by which files found in folders
and globs are recognised as this command's results and skipped, so a second run does
not correct the first run's outputs again.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import glob
import os
import secrets
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from .._version import __version__
from . import device_problem, report_failures

#: Extensions that promise a JPEG: such a file that cannot be read is a failure, not a skip.
JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".mpo")
#: Extensions ``--format keep`` keeps; anything else (``.mpo``, none) becomes ``.jpg``.
KEEP_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
OUTPUT_SUFFIX = {"png": ".png", "jpeg": ".jpg"}
#: libjpeg quality of JPEG outputs unless ``--quality`` says otherwise.
JPEG_OUTPUT_QUALITY = 95
_SOI = b"\xff\xd8\xff"
#: Start of the COM segment written into every JPEG output: the mark of this command's results.
OUTPUT_MARK = b"corrected by qgac-transforms"


@dataclass(frozen=True)
class Job:
    source: Path
    #: the folder argument the file was found in (outputs keep their path under it), or None
    root: Path | None
    #: named on the command line itself, not found in a folder or by a glob
    named: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..options import DEFAULT_OVERLAP, DEFAULT_TILE  # noqa: PLC0415 - keep `qgac --help` light

    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="JPEG files, folders (searched recursively) or globs"
    )
    parser.add_argument(
        "-o", "--output", action=_OutputAction,
        help="output folder (or output file for a single input; a trailing / always names a folder); "
        "default: next to each input as NAME_qgac.EXT",
    )  # fmt: skip
    parser.set_defaults(output_is_folder=False)
    parser.add_argument(
        "--format", choices=("png", "jpeg", "keep"), default=None,
        help="output format: png (lossless), jpeg, or keep (the input's: JPEG, same extension); "
        "default: png, or the extension of an output file named by -o",
    )  # fmt: skip
    parser.add_argument("--quality", type=_quality, default=None, metavar="Q",
                        help=f"quality of JPEG outputs (default {JPEG_OUTPUT_QUALITY}); refused for PNG outputs")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs, the inputs themselves included"
    )
    parser.add_argument(
        "--weights", help="model: Hub repo id or saved model folder (default: the package's default model)"
    )
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)")
    parser.add_argument(
        "--tile", type=_non_negative, default=DEFAULT_TILE, metavar="PIXELS",
        help=f"tile size in pixels for bounded memory; 0 runs each image whole (default {DEFAULT_TILE})",
    )  # fmt: skip
    parser.add_argument(
        "--overlap", type=_non_negative, default=DEFAULT_OVERLAP, metavar="PIXELS",
        help=f"context around each tile in pixels (default {DEFAULT_OVERLAP})",
    )  # fmt: skip
    parser.add_argument(
        "--strength-quality", type=_quality, default=None, metavar="Q", dest="quality_override",
        help="correct as if the file had libjpeg quality Q (lower: stronger)",
    )  # fmt: skip
    parser.add_argument(
        "--blend", type=_fraction, default=1.0, metavar="ALPHA",
        help="mix ALPHA of the corrected image with 1-ALPHA of the plain decode (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--self-ensemble", action="store_true",
        help="average the corrections of each image's eight orientations: a little better, 8x slower",
    )  # fmt: skip


class _OutputAction(argparse.Action):
    """``-o``: the path, and whether a trailing separator says it is a folder (``Path`` drops it)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        namespace.output = Path(values)
        namespace.output_is_folder = values.endswith(("/", os.sep))


def _quality(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"quality must be in 1..100, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


# --------------------------------------------------------------------------- inputs


def _looks_like_jpeg(path: Path) -> bool:
    with open(path, "rb") as file:
        return file.read(3) == _SOI


def _written_by_qgac(path: Path) -> bool:
    """Whether a JPEG file is an output of this command (it carries :data:`OUTPUT_MARK`)."""
    from PIL import JpegImagePlugin  # noqa: PLC0415

    try:
        with JpegImagePlugin.JpegImageFile(path) as image:  # parses the header only
            return any(name == "COM" and data.startswith(OUTPUT_MARK) for name, data in image.applist)
    except Exception:  # noqa: BLE001 - an unreadable header is for the reader to report
        return False


def _names_a_file(args: argparse.Namespace) -> bool:
    """``-o PATH`` names a file: an existing one, or a new name with an extension and no
    trailing separator."""
    path = args.output
    if path is None or args.output_is_folder:
        return False
    return path.is_file() or (not path.is_dir() and bool(path.suffix))


def _output_file_problem(args: argparse.Namespace, several: bool) -> str | None:
    """Why ``-o OUTPUT``, where it names a file, cannot be written as asked, or ``None``: it
    takes one input; its extension decides the format, and ``--format`` must not contradict it."""
    output, chosen = args.output, args.format
    if not _names_a_file(args):
        return None
    if several:
        return f"-o {output} names a file, but there are several inputs (or a folder): give a folder"
    suffix = output.suffix.lower()
    named = "png" if suffix == ".png" else "jpeg" if suffix in KEEP_SUFFIXES else None
    if named is None:
        return f"-o {output}: {suffix or 'no extension'} is not a format qgac correct writes " \
               f"(.png, or JPEG: {', '.join(KEEP_SUFFIXES)})"
    if chosen is not None and (chosen == "png") != (named == "png"):
        return f"-o {output} names a {named.upper()} file, but --format is {chosen}"
    return None


def _quality_problem(args: argparse.Namespace) -> str | None:
    """Why ``--quality`` cannot be used as asked: every output is PNG, where it would be
    silently ignored; ``None`` when it is not given or outputs are JPEG."""
    if args.quality is None:
        return None
    named_jpeg = _names_a_file(args) and args.output.suffix.lower() in KEEP_SUFFIXES
    if args.format in ("jpeg", "keep") or (args.format is None and named_jpeg):
        return None
    return (f"--quality {args.quality} is the quality of JPEG outputs, but the outputs are PNG (lossless): "
            "pass --format jpeg or keep, or leave --quality out")


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be written in ``folder`` (created when needed), or ``None``: tried now,
    in the nearest existing folder, so that no image is corrected for nothing."""
    existing = folder
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            return f"{existing} is a file, not a folder"
        tempfile.TemporaryFile(dir=existing, prefix=".qgac-").close()
    except OSError as error:
        return f"cannot create files in {existing} ({error.strerror or error})"
    return None


def collect(inputs: list[str], exclude: Path | None) -> tuple[list[Job], list[tuple[str, str]]]:
    """Expand files, folders (recursively, except the folder ``exclude``) and globs into jobs;
    returns ``(jobs, failures)``."""
    jobs: list[Job] = []
    failures: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(path: Path, root: Path | None, named: bool = False) -> None:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            jobs.append(Job(path, root, named))

    def walk(path: Path, root: Path, text: str) -> None:
        """Every regular file under ``path`` (symlinked folders followed, each folder once),
        its output kept at its path under ``root``."""
        walked, skipped = 0, {exclude}  # an output folder inside an input folder holds results, not inputs
        for folder, subfolders, names in os.walk(path, followlinks=True):
            skipped.add(Path(folder).resolve())  # walked: a link loop comes back to it
            subfolders[:] = sorted(name for name in subfolders if (Path(folder) / name).resolve() not in skipped)
            for name in sorted(names):
                file = Path(folder) / name
                if file.is_file() or not file.exists():  # a broken link is reported when it is read
                    walked += 1
                    add(file, root)
                else:  # a pipe, a socket, a device: opening it could block
                    print(f"skipping {file}: not a regular file", file=sys.stderr)
        if not walked:  # like a pattern that matches nothing: the user expected files here
            failures.append((text, "no files in this folder"))

    for text in inputs:
        path = Path(text)
        if path.is_dir():
            walk(path, path, text)
        elif path.is_file():
            add(path, None, named=True)
        elif glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                failures.append((text, "no file matches this pattern"))
            for match in map(Path, matches):
                if match.is_dir():  # a matched folder is searched like a folder input, its name kept
                    walk(match, match.parent, str(match))
                elif match.is_file() or not match.exists():  # a broken link is reported when it is read
                    add(match, None)
                else:
                    print(f"skipping {match}: not a regular file", file=sys.stderr)
        elif path.is_symlink():
            failures.append((text, f"a broken link (to {os.readlink(path)})"))
        elif path.exists():  # a pipe, a socket, a device: opening it could block
            failures.append((text, "not a regular file"))
        else:
            failures.append((text, "no such file or folder"))
    return jobs, failures


def output_path(job: Job, args: argparse.Namespace, single_file: bool) -> Path:
    """Where ``job``'s result goes (see the module docstring)."""
    source = job.source
    if args.format == "keep":
        suffix = source.suffix if source.suffix.lower() in KEEP_SUFFIXES else ".jpg"
    else:
        suffix = OUTPUT_SUFFIX[args.format or "png"]
    if args.output is None:
        return source.with_name(f"{source.stem}_qgac{suffix}")
    if single_file and _names_a_file(args):
        return args.output
    relative = source.relative_to(job.root) if job.root is not None else Path(source.name)
    return args.output / relative.with_suffix(suffix)


# --------------------------------------------------------------------------- one file


def _save(image, destination: Path, args: argparse.Namespace, subsampling: str) -> None:  # noqa: ANN001
    """Write atomically: a failed save leaves no partial file (and the input intact).
    ``subsampling``: that of a JPEG output, one Pillow writes (see :func:`output_subsampling`)."""
    options = {key: image.info[key] for key in ("icc_profile", "dpi") if image.info.get(key)}
    if image.info.get("exif"):
        options["exif"] = image.info["exif"]
    if destination.suffix.lower() == ".png":
        file_format = "PNG"
    else:
        file_format = "JPEG"
        mark = OUTPUT_MARK + f" {__version__}".encode()
        options["extra"] = b"\xff\xfe" + (2 + len(mark)).to_bytes(2, "big") + mark  # a COM segment
        options["quality"] = args.quality or JPEG_OUTPUT_QUALITY
        options["subsampling"] = subsampling
    # short, so that any legal output name has a legal temporary name beside it
    temporary = destination.with_name(f".qgac-{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "xb") as file:  # a plain new file: the user's umask applies
            image.save(file, file_format, **options)
        os.replace(temporary, destination)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):  # name the output, not the temporary file
            raise OSError(f"cannot write {destination} ({error.strerror or error})") from error
        raise


def correction_options(args: argparse.Namespace):  # noqa: ANN201 - CorrectionOptions, imported when used
    """The :class:`~qgac_transforms.options.CorrectionOptions` of the command line (``--tile 0``: whole images)."""
    from ..options import CorrectionOptions  # noqa: PLC0415

    return CorrectionOptions(tile=args.tile or None, overlap=args.overlap, quality_override=args.quality_override,
                             blend=args.blend, self_ensemble=args.self_ensemble)


def output_subsampling(chroma_factor: tuple[int, int], orientation: int) -> str:
    """The chroma subsampling a JPEG output is written with: the input's own where Pillow
    writes it, else the nearest one that keeps all of its chroma resolution once the
    picture is turned upright (4:4:0 -> 4:4:4, 4:1:1 -> 4:2:2; a 4:2:2 file with a
    90-degree EXIF rotation is 4:4:0 upright, so 4:4:4)."""
    vertical, horizontal = chroma_factor[::-1] if orientation >= 5 else chroma_factor  # 5..8 swap the axes
    if vertical >= 2 and horizontal >= 2:
        return "4:2:0"
    return "4:2:2" if horizontal >= 2 else "4:4:4"


def correct_file(model, job: Job, destination: Path, args: argparse.Namespace) -> None:  # noqa: ANN001
    """Correct one JPEG and write it; raises ``InvalidJPEGError``/``OSError`` on failure."""
    from PIL import Image, ImageOps  # noqa: PLC0415

    from ..functional import correct_jpeg, to_pil  # noqa: PLC0415
    from ..jpeg_io import read_coefficients  # noqa: PLC0415

    coefficients = read_coefficients(job.source)
    image = to_pil(correct_jpeg(model, coefficients, correction_options(args)))
    with Image.open(job.source) as original:
        image.info.update(original.info)
    # coefficients.orientation is 1 where the EXIF cannot be parsed; Pillow would raise on it
    upright = ImageOps.exif_transpose(image) if coefficients.orientation != 1 else image
    _save(upright, destination, args, output_subsampling(coefficients.chroma_factor, coefficients.orientation))


# --------------------------------------------------------------------------- command


def _without_clashes(candidates: list[tuple[Job, Path]], failures: list[tuple[str, str]]) -> list[tuple[Job, Path]]:
    """The planned corrections that can all run in any order: those whose output is also
    another one's output, or another one's input (read after it was replaced, or lost), are
    refused, every one of them, before anything is written."""
    sources = {job.source.resolve(): job.source for job, _ in candidates}
    writers = collections.Counter(destination.resolve() for _, destination in candidates)
    todo = []
    for job, destination in candidates:
        target = destination.resolve()
        other_input = sources.get(target) if target != job.source.resolve() else None
        if writers[target] > 1:
            failures.append((str(job.source), f"another input is also written to {destination}"))
        elif other_input is not None:
            failures.append((str(job.source), f"not writing {destination}: it is the input {other_input}, also corrected"))
        else:
            todo.append((job, destination))
    return todo


def _error(message: str) -> int:
    print(f"qgac correct: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    exclude = args.output.resolve() if args.output is not None and args.output.is_dir() else None
    jobs, failures = collect(args.inputs, exclude)
    several = len(args.inputs) > 1 or len(jobs) > 1 or any(job.root is not None for job in jobs)
    if problem := _output_file_problem(args, several) or _quality_problem(args):
        return _error(problem)
    single_file = len(jobs) == 1 and not several

    candidates: list[tuple[Job, Path]] = []
    unwritable = functools.cache(_unwritable)  # each output folder tried once per run
    for job in jobs:
        known_jpeg = job.source.suffix.lower() in JPEG_SUFFIXES
        try:
            is_jpeg = _looks_like_jpeg(job.source)
        except OSError as error:
            failures.append((str(job.source), f"cannot read file ({error.strerror or error})"))
            continue
        if not is_jpeg and not known_jpeg:
            if job.named:  # asked for by name: not processing it is a failure
                failures.append((str(job.source), "not a JPEG file"))
            else:
                print(f"skipping {job.source}: not a JPEG file", file=sys.stderr)
            continue
        if not job.named and _written_by_qgac(job.source):
            print(f"skipping {job.source}: an output of qgac correct", file=sys.stderr)
            continue
        destination = output_path(job, args, single_file)
        if destination.is_dir():
            failures.append((str(job.source), f"cannot write {destination}: it is a folder"))
        elif destination.exists() and not args.overwrite:
            what = "it is the input itself" if destination.resolve() == job.source.resolve() else "it exists"
            failures.append((str(job.source), f"not writing {destination}: {what} (pass --overwrite)"))
        elif reason := unwritable(destination.parent):
            failures.append((str(job.source), f"cannot write {destination}: {reason}"))
        else:
            candidates.append((job, destination))
    todo = _without_clashes(candidates, failures)

    if todo:
        from tqdm import tqdm  # noqa: PLC0415

        from ..configs import load_model  # noqa: PLC0415
        from ..jpeg_io import InvalidJPEGError  # noqa: PLC0415

        import torch  # noqa: PLC0415

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if problem := device_problem(device):  # one line, not torch's traceback or dispatcher dump
            report_failures("correct", failures, "input")
            return _error(problem)
        try:
            model = load_model(args.weights, device=device)
        except (OSError, ValueError, RuntimeError) as error:
            report_failures("correct", failures, "input")  # the inputs already found wanting are still said
            return _error(f"cannot load the model {args.weights or '(default)'} on {device}: {error}")
        # a bar only on a terminal: elsewhere (a log file) its carriage returns are noise
        show = len(todo) > 1 and sys.stderr.isatty()
        progress = tqdm(todo, unit="file", disable=not show, file=sys.stderr, dynamic_ncols=True)
        for job, destination in progress:
            with warnings.catch_warnings(record=True) as caught:  # Pillow's name no file ("Corrupt EXIF data")
                warnings.simplefilter("always")
                try:
                    correct_file(model, job, destination, args)
                except (InvalidJPEGError, OSError, ValueError) as error:
                    reason = error.reason if isinstance(error, InvalidJPEGError) else str(error)
                    failures.append((str(job.source), reason))
                    if show:  # said at once beside the bar; the list at the end has every failure
                        progress.write(f"failed: {job.source}: {reason}", file=sys.stderr)
            for warning in dict.fromkeys(str(w.message) for w in caught):
                progress.write(f"warning: {job.source}: {warning}", file=sys.stderr)

    return report_failures("correct", failures, "input")
