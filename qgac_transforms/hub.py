"""Where weights come from: the saved folder format, Hub download, the packaged copies, upload.

:func:`qgac_transforms.configs.create_model` asks this module for a folder
(:func:`resolve`, :func:`resolve_published`) and loads it (:func:`load_folder`):

1. An existing folder is read as it is.
2. Anything else is a Hugging Face Hub repo id, fetched with
   :func:`huggingface_hub.hf_hub_download`, so the Hub cache (``HF_HUB_CACHE`` or
   ``cache_dir``), ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``revision`` and ``token`` behave
   as for any Hub model. Both files come from one commit, even when ``revision`` is a branch.
3. A registered model's published weights (:class:`~.configs.PublishedWeights`): while
   unpublished (no revision), the copy shipped inside the package, with no request at
   all. Once published, the Hub at the pinned revision (a warm cache answers without any
   request); when that commit cannot be had (connection error, server error, offline
   mode, ``local_files_only``, or the Hub answering that the repo or revision does not
   exist or is refused, which is logged as a warning) and it is not cached, the packaged
   copy of that same release: a wheel install corrects JPEGs with or without a network.
   A downloaded file that fails its integrity check still raises. Every other failure
   raises :class:`WeightsNotFoundError` saying what was tried.

Each process resolves a given name and its options once and verifies a given weight file
once (:func:`clear_cache` forgets both); every call still returns a new model, so callers
may train or move it freely.

A saved model is a folder (``format_version`` 1), exactly as it is uploaded:

- ``config.json``: :class:`QGAC`'s constructor arguments (its ``config``, normalization
  statistics included), ``format_version``, ``qgac_transforms_version`` (the writer) and
  ``weights_sha256``;
- ``model.safetensors``: the state dict. Pickle files are never read;
- ``README.md``: the model card (:mod:`.model_card`).

Integrity: the weights are written first and their SHA-256 recorded in ``config.json``;
every load checks it before parsing, so a truncated, corrupted or edited weight file is
refused (:class:`InvalidWeightsError`). This guards against damage and partial downloads,
not against someone who rewrites both files. Loading is strict: missing or unexpected keys,
wrong shapes, statistics that differ from the config, unknown config keys or another
``format_version`` are errors.

The published folders live in the repository's ``hub/`` (see ``hub/README.md``);
``python -m qgac_transforms.hub upload FOLDER REPO_ID`` publishes one and
``python -m qgac_transforms.hub embed FOLDER`` copies one into the package.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model as save_safetensors
from torch import Tensor

from ._version import __version__
from .configs import DEFAULT_MODEL, PublishedWeights, create_model
from .model import QGAC
from .model_card import ModelCardInfo

log = logging.getLogger(__name__)

#: Version of the folder layout and config keys; a reader accepts only its own.
FORMAT_VERSION = 1
CONFIG_NAME = constants.CONFIG_NAME
WEIGHTS_NAME = constants.SAFETENSORS_SINGLE_FILE
CARD_NAME = constants.REPOCARD_NAME
#: Every file of a saved model folder.
FOLDER_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
#: The training stages the weights went through, written by ``python -m training export``.
TRAINING_NAME = "training.json"
#: What is uploaded or embedded, where present; nothing else is.
PUBLISHED_FILES = (*FOLDER_FILES, TRAINING_NAME)
#: Keys of ``config.json`` that are not constructor arguments.
METADATA_KEYS = ("format_version", "qgac_transforms_version", "weights_sha256")

#: Where the package keeps embedded model folders, one per model name.
EMBEDDED_ROOT = Path(__file__).with_name("weights")


class InvalidWeightsError(ValueError):
    """A saved model file that cannot be loaded; names the file and the reason."""

    def __init__(self, source: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = str(source)
        self.reason = reason


class WeightsNotFoundError(OSError):
    """Pretrained weights could not be obtained; the message lists what was tried."""


def embedded_folder(name: str) -> Path:
    """The packaged copy of a model: ``weights/<name>/`` inside this package (a repo id's last part)."""
    return EMBEDDED_ROOT / name.rsplit("/", 1)[-1]


# ---------------------------------------------------------------------- writing
def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file, with the permissions a plain new file would get."""
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    umask = os.umask(0o022)  # reading the umask means setting it; restored at once
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # safetensors creates its files 0600
    os.replace(temporary, path)


def write_folder(model: QGAC, directory: str | os.PathLike[str]) -> None:
    """``model.safetensors``, then ``config.json`` with its SHA-256 (called by ``save_pretrained``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_NAME
    _write_atomically(weights, lambda path: save_safetensors(model, str(path), metadata={"format": "pt"}))
    config = {
        **model.config,
        "format_version": FORMAT_VERSION,
        "qgac_transforms_version": __version__,
        "weights_sha256": sha256_file(weights),
    }
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    _write_atomically(directory / CONFIG_NAME, lambda path: path.write_text(text, encoding="utf-8"))


def save_model(
    model: QGAC, directory: str | os.PathLike[str], *, card: ModelCardInfo | Mapping[str, Any] | None = None
) -> Path:
    """Write a complete, publishable folder: config, weights and a freshly rendered card.

    ``card`` describes the export (see :class:`~.model_card.ModelCardInfo`: name, training
    data, steps per stage, wall-clock time, evaluation rows). Unlike ``save_pretrained``,
    which keeps an existing ``README.md``, this always rewrites it.
    """
    directory = Path(directory)
    (directory / CARD_NAME).unlink(missing_ok=True)
    model.save_pretrained(directory, model_card_kwargs={"card": card} if card is not None else None)
    return directory


# ---------------------------------------------------------------------- reading
def _constructor_arguments(model_class: type[QGAC]) -> dict[str, inspect.Parameter]:
    parameters = dict(inspect.signature(model_class.__init__).parameters)
    parameters.pop("self", None)
    return parameters


def _check_types(config: Mapping[str, Any], model_class: type[QGAC], path: Path) -> None:
    """Refuse a value whose type is not that of the constructor argument's default (a whole
    number, a flag, a name), naming the key: the constructor's own error would not."""
    for name, parameter in _constructor_arguments(model_class).items():
        expected = type(parameter.default)
        if name not in config or expected not in (int, bool, str):
            continue
        value = config[name]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            kind = {int: "an integer", bool: "true or false", str: "a string"}[expected]
            raise InvalidWeightsError(path, f"{name} must be {kind}, got {json.dumps(value)}")


def read_config(directory: str | os.PathLike[str], model_class: type[QGAC] = QGAC) -> dict[str, Any]:
    """The validated ``config.json`` of a saved model folder."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise InvalidWeightsError(path, "missing: a saved QGAC model folder holds config.json and model.safetensors")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidWeightsError(path, f"not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise InvalidWeightsError(path, "not a JSON object")
    writer = config.get("qgac_transforms_version", "an unknown version")
    version = config.get("format_version")
    if version is None:
        raise InvalidWeightsError(path, "no format_version: not written by qgac-transforms save_pretrained")
    if version != FORMAT_VERSION or isinstance(version, bool):
        advice = " (upgrade qgac-transforms)" if isinstance(version, int) and version > FORMAT_VERSION else ""
        raise InvalidWeightsError(
            path,
            f"format_version {version!r} written by qgac-transforms {writer}; qgac-transforms {__version__} "
            f"reads format_version {FORMAT_VERSION} only{advice}",
        )
    unknown = sorted(set(config) - set(METADATA_KEYS) - _constructor_arguments(model_class).keys())
    if unknown:
        raise InvalidWeightsError(
            path, f"unknown configuration keys {unknown} (written by qgac-transforms {writer}, this is {__version__})"
        )
    _check_types(config, model_class, path)
    digest = config.get("weights_sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise InvalidWeightsError(path, "weights_sha256 is missing or not a SHA-256 hex digest")
    return config


@lru_cache(maxsize=None)
def _verify_digest(path: str, size: int, mtime_ns: int, expected: str) -> None:
    """Raise unless the file hashes to ``expected``; cached per (path, size, mtime), successes only."""
    actual = sha256_file(path)
    if actual != expected:
        raise InvalidWeightsError(
            path,
            f"SHA-256 {actual} ({size} bytes) differs from {expected} recorded in config.json: "
            "the file is truncated, corrupted or was modified",
        )


def read_weights(path: str | os.PathLike[str], sha256: str) -> dict[str, Tensor]:
    """The state dict in a safetensors file, after checking its SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise InvalidWeightsError(path, "missing: a saved QGAC model folder holds config.json and model.safetensors")
    stat = path.stat()
    _verify_digest(str(path), stat.st_size, stat.st_mtime_ns, sha256)
    try:
        return load_file(path)
    except SafetensorError as error:
        raise InvalidWeightsError(path, f"not a readable safetensors file ({error})") from None


def _few(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} and {len(keys) - limit} more" if len(keys) > limit else shown


def check_state_dict(model: QGAC, state: Mapping[str, Tensor], source: str | os.PathLike[str]) -> None:
    """Raise unless ``state`` has exactly the model's keys and shapes and the config's statistics."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{key} is {tuple(state[key].shape)} in the file, {tuple(expected[key].shape)} in the model"
        for key in sorted(set(state) & set(expected))
        if state[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_few(wrong)}")
    if not problems:
        # Buffers (the normalization statistics) are set by the config; the file must agree
        # at the precision it was saved in.
        problems = [
            f"{name} differs from config.json"
            for name, buffer in model.named_buffers()
            if not torch.equal(state[name], buffer.to(state[name].dtype))
        ]
    if problems:
        raise InvalidWeightsError(source, "does not match config.json: " + "; ".join(problems))


def load_folder(
    directory: str | os.PathLike[str], *, map_location: str | torch.device = "cpu", model_class: type[QGAC] = QGAC
) -> QGAC:
    """Build and strictly load the model saved in ``directory``; returned in eval mode."""
    directory = Path(directory)
    config = read_config(directory, model_class)
    state = read_weights(directory / WEIGHTS_NAME, config["weights_sha256"])
    try:
        # Built on the meta device: no random initialisation to throw away.
        with torch.device("meta"):
            model = model_class(**{key: value for key, value in config.items() if key not in METADATA_KEYS})
    except (TypeError, ValueError, RuntimeError) as error:
        raise InvalidWeightsError(directory / CONFIG_NAME, f"cannot build {model_class.__name__}: {error}") from None
    check_state_dict(model, state, directory / WEIGHTS_NAME)
    # Fresh storage, then a copy: tensors viewing the file's buffer can be misaligned, which
    # changes which CPU kernels run and so the last bits of the output.
    model.to_empty(device=map_location).load_state_dict(state, strict=True)
    return model.eval()


# ---------------------------------------------------------------------- finding
def download(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
) -> Path:
    """Fetch ``config.json`` and ``model.safetensors`` of one commit; returns its cache snapshot folder."""
    options: dict[str, Any] = dict(
        repo_id=repo_id, cache_dir=cache_dir, local_files_only=local_files_only, token=token,
        force_download=force_download, library_name="qgac-transforms", library_version=__version__,
    )
    config = Path(hf_hub_download(filename=CONFIG_NAME, revision=revision, **options))
    # The cache keeps each commit in snapshots/<commit hash>/: pin the weights to the config's commit.
    weights = Path(hf_hub_download(filename=WEIGHTS_NAME, revision=config.parent.name, **options))
    if weights.parent != config.parent:
        raise WeightsNotFoundError(f"{repo_id}: config.json and model.safetensors resolved to different folders")
    return config.parent


def _attempt(name: str, revision: str | None, cache_dir: Any, local_files_only: bool, token: Any) -> str:
    cache = cache_dir if cache_dir is not None else constants.HF_HUB_CACHE
    token_source = "none" if token is False else "given" if isinstance(token, str) else "the saved login, if any"
    return (
        f"Hub repo {name!r} at revision {revision or constants.DEFAULT_REVISION!r} from {constants.ENDPOINT} "
        f"(cache {cache}, offline mode {'on' if constants.is_offline_mode() else 'off'}, "
        f"local_files_only={local_files_only}, token: {token_source})"
    )


def _summary(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {' '.join(lines[:2])}"


def _cached(repo_id: str, revision: str, cache_dir: str | os.PathLike[str] | None) -> bool:
    return all(
        isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache_dir, revision=revision), str)
        for name in (CONFIG_NAME, WEIGHTS_NAME)
    )


def _hub_answers(repo_id: str, revision: str, token: str | bool | None) -> bool:
    """One request, no retries: False when the Hub cannot be reached or answers 5xx."""
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, CONFIG_NAME, revision=revision), token=token)
    except HfHubHTTPError as error:
        return error.response is None or error.response.status_code < 500
    except Exception as error:  # noqa: BLE001 - connection, timeout, proxy, offline: anything but an answer
        log.debug("Hub probe for %s failed: %s", repo_id, error)
        return False
    return True


_RESOLVED: dict[tuple[Any, ...], Path] = {}


def resolve(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
    fallback: Path | None = None,
) -> Path:
    """The local folder holding a model: the folder itself or a Hub cache snapshot.

    ``fallback`` is a packaged copy of exactly that repo and revision: used, instead of an
    error, when the Hub cannot provide them (see the module docstring).
    """
    if os.path.isdir(name_or_path):
        return Path(name_or_path)
    name = str(name_or_path)
    key = (name, revision, str(cache_dir), local_files_only, token, constants.ENDPOINT, constants.is_offline_mode())
    known = _RESOLVED.get(key)
    if known is not None and not force_download and (known / CONFIG_NAME).is_file():
        return known
    attempt = _attempt(name, revision, cache_dir, local_files_only, token)
    is_default = fallback is not None
    folder: Path | None = None
    # huggingface_hub retries an unreachable Hub for about 20 s before giving up; with a
    # fallback, one request without retries decides, so a first use offline is immediate.
    if not is_default or local_files_only or force_download or _cached(name, revision, cache_dir) or _hub_answers(
        name, revision, token
    ):
        try:
            folder = download(
                name, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token,
                force_download=force_download,
            )
        except LocalEntryNotFoundError as error:
            # The Hub could not be reached (or must not be) and the files are not cached.
            if not is_default:
                raise WeightsNotFoundError(
                    f"cannot load {name!r}: it is not a folder, and the Hub could not be reached with nothing "
                    f"cached; tried {attempt}: {_summary(error)}"
                ) from error
        except (HfHubHTTPError, HFValidationError) as error:
            if not is_default:
                raise WeightsNotFoundError(
                    f"cannot load {name!r}: it is not a folder, and tried {attempt}: {_summary(error)}"
                ) from error
            # The pinned release is missing or refused (removed, gated): the packaged copy
            # is that same release, so it still serves.
            log.warning("the Hub has no %s@%s for this request (%s): using the packaged copy %s",
                        name, revision, _summary(error), fallback)
    if folder is None:
        assert fallback is not None  # every other failure raised above
        folder = fallback
        log.info("%s@%s not obtained from the Hub and not cached: using the packaged copy %s", name, revision, folder)
    _RESOLVED[key] = folder
    return folder


def resolve_published(
    weights: PublishedWeights,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
) -> Path:
    """The folder of a registered model's published weights (module docstring, point 3).

    Another ``revision`` than the pinned one is any Hub commit of the repo, with no fallback.
    """
    options: dict[str, Any] = dict(cache_dir=cache_dir, local_files_only=local_files_only, token=token,
                                   force_download=force_download)
    if revision is not None and revision != weights.revision:
        return resolve(weights.repo_id, revision=revision, **options)
    packaged = embedded_folder(weights.embedded) if weights.embedded else None
    if weights.revision is None:
        if packaged is None:
            raise WeightsNotFoundError(f"{weights.repo_id} is neither published nor packaged")
        return packaged
    return resolve(weights.repo_id, revision=weights.revision, fallback=packaged, **options)


def clear_cache() -> None:
    """Forget this process's resolved names and verified weight files."""
    _RESOLVED.clear()
    _verify_digest.cache_clear()


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    device: str | torch.device | None = None,
) -> QGAC:
    """``create_model(name_or_path or DEFAULT_MODEL, pretrained=True, ...)``: see
    :func:`qgac_transforms.configs.create_model`."""
    return create_model(
        name_or_path if name_or_path is not None else DEFAULT_MODEL, pretrained=True, revision=revision,
        cache_dir=cache_dir, local_files_only=local_files_only, token=token, device=device,
    )


# ---------------------------------------------------------------------- publishing
def upload(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Publish a saved model folder to a Hub model repo (created if needed); returns the commit hash.

    The folder must load (strictly, hash checked) and carry its card; only
    :data:`PUBLISHED_FILES` are sent.
    """
    folder = Path(folder)
    load_folder(folder)
    if not (folder / CARD_NAME).is_file():
        raise InvalidWeightsError(folder / CARD_NAME, "missing: write the folder with save_model to get a model card")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id, repo_type="model", folder_path=folder, revision=revision,
        commit_message=commit_message or f"Upload {folder.name} (qgac-transforms {__version__})",
        allow_patterns=list(PUBLISHED_FILES),
    )
    return commit.oid


def embed(folder: str | os.PathLike[str], name: str | None = None) -> Path:
    """Copy a saved model folder into the package (``weights/<name>/``) after checking it loads."""
    folder = Path(folder)
    load_folder(folder)
    target = EMBEDDED_ROOT / (name or folder.name)
    target.mkdir(parents=True, exist_ok=True)
    for file_name in PUBLISHED_FILES:
        if (folder / file_name).is_file():
            shutil.copyfile(folder / file_name, target / file_name)
        else:
            (target / file_name).unlink(missing_ok=True)  # no stale file from an earlier model
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m qgac_transforms.hub upload|embed ...``; exit 0 on success, 1 on failure."""
    parser = argparse.ArgumentParser(prog="python -m qgac_transforms.hub", description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    upload_parser = commands.add_parser("upload", help="publish a saved model folder to a Hub repo")
    upload_parser.add_argument("folder")
    upload_parser.add_argument("repo_id")
    upload_parser.add_argument("--revision", help="branch to commit to (default: main)")
    upload_parser.add_argument("--private", action="store_true", help="create the repo private")
    upload_parser.add_argument("--message", help="commit message")
    embed_parser = commands.add_parser("embed", help="copy a saved model folder into the package's weights/")
    embed_parser.add_argument("folder")
    embed_parser.add_argument("--name", help="folder name inside weights/ (default: the folder's name)")
    args = parser.parse_args(argv)
    try:
        if args.command == "upload":
            commit = upload(
                args.folder, args.repo_id, revision=args.revision, private=args.private or None,
                commit_message=args.message,
            )
            print(f"uploaded {args.folder} to {args.repo_id} at commit {commit}")
        else:
            print(f"embedded {args.folder} as {embed(args.folder, args.name)}")
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
