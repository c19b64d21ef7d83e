"""Where weights come from: the saved folder format, Hub download, the packaged copies.

:func:`qgac_transforms.configs.create_model` asks this module for a folder
(:func:`resolve`; registered names through :func:`~.configs.pretrained_folder`) and loads
it with the model class's own hook (``QGAC._from_pretrained`` calls :func:`load_folder`).
The Hub options of every request are one :class:`HubOptions`. This module imports no
model: the class to build is always passed in.

1. An existing folder is read as it is.
2. Anything else is a Hugging Face Hub repo id, fetched with
   :func:`huggingface_hub.hf_hub_download`, so the Hub cache (``HF_HUB_CACHE`` or
   ``cache_dir``), ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``revision`` and ``token`` behave
   as for any Hub model. The config and the weight files it names come from one commit,
   even when ``revision`` is a branch. Unless the files are cached, one request without
   retries first checks that the Hub answers (huggingface_hub alone would retry for about
   20 s): a name that is not a repo id, or a Hub that does not answer, fails at once,
   naming the folders with close names where the name looks like a mistyped path.
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

A saved model is a folder, exactly as it is uploaded:

- ``config.json``: :class:`QGAC`'s constructor arguments (its ``config``, normalization
  statistics included), ``format_version``, ``qgac_transforms_version`` (the writer) and
  ``weights_sha256``;
- ``model.safetensors``: the state dict (``format_version`` 1, ``weights_sha256`` its
  digest). Pickle files are never read;
- or, for a model saved with ``max_shard_mb`` whose weights are larger, the state dict
  split into ``model-00001-of-0000N.safetensors`` files beside Hugging Face's
  ``model.safetensors.index.json`` (``format_version`` 2, ``weights_sha256`` mapping each
  file to its digest): for channels that carry files of a limited size;
- ``README.md``: the model card (:mod:`.model_card`).

Integrity: the weights are written first and their SHA-256 recorded in ``config.json``;
every load checks it before parsing, so a truncated, corrupted or edited weight file is
refused (:class:`InvalidWeightsError`). This guards against damage and partial downloads,
not against someone who rewrites both files. Loading is strict: missing or unexpected keys,
wrong shapes, statistics that differ from the config, unknown config keys or another
``format_version`` are errors.

An embedded model is published from its folder in the package (``weights/<name>/``), the
other published folders live in the repository's ``hub/`` (see ``hub/README.md``);
:mod:`.publish` uploads one or copies one into the package.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from fnmatch import fnmatch
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import torch
from huggingface_hub import (
    constants,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    split_torch_state_dict_into_shards,
    try_to_load_from_cache,
)
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file, save_model as save_safetensors
from torch import Tensor, nn

from ._version import __version__
from .model_card import ModelCardInfo

log = logging.getLogger(__name__)
ModelT = TypeVar("ModelT", bound=nn.Module)

#: Version of the folder layout and config keys: 1 with one weight file, 2 with shards.
FORMAT_VERSION = 1
SHARDED_FORMAT_VERSION = 2
#: The versions this reader accepts.
READABLE_FORMATS = (FORMAT_VERSION, SHARDED_FORMAT_VERSION)
CONFIG_NAME = constants.CONFIG_NAME
WEIGHTS_NAME = constants.SAFETENSORS_SINGLE_FILE
#: Sharded weights: Hugging Face's index beside ``model-00001-of-0000N.safetensors`` files.
WEIGHTS_INDEX_NAME = constants.SAFETENSORS_INDEX_FILE
CARD_NAME = constants.REPOCARD_NAME
#: Every file of a saved model folder.
FOLDER_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
#: The training stages the weights went through, written by ``python -m training export``.
TRAINING_NAME = "training.json"
#: What is uploaded or embedded from a folder with one weight file, where present
#: (:func:`published_files` names those of any folder).
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


@dataclass(frozen=True)
class HubOptions:
    """How to ask the Hub for weights: the keyword arguments of :func:`huggingface_hub.hf_hub_download`
    that a caller may set, in one place (``create_model`` and ``QGAC.from_pretrained`` build it)."""

    revision: str | None = None
    cache_dir: str | os.PathLike[str] | None = None
    local_files_only: bool = False
    token: str | bool | None = None
    force_download: bool = False


def checked_model_name(name: str) -> str:
    """``name`` where it can name a model's folder (letters, digits, '.', '_' and '-', starting
    with a letter or digit: never a path out of the folder it goes in); else ``ValueError``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ValueError(f"{name!r}: a model's name is letters, digits, '.', '_' and '-', starting with a letter "
                         "or digit")
    return name


def embedded_folder(name: str) -> Path:
    """The packaged copy of a model: ``weights/<name>/`` inside this package (a repo id's last part)."""
    return EMBEDDED_ROOT / checked_model_name(name.rsplit("/", 1)[-1])


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


#: Name patterns of every weight file of either layout (what a new save or upload replaces).
WEIGHT_PATTERNS = (WEIGHTS_NAME, WEIGHTS_INDEX_NAME, "model-?????-of-?????.safetensors")


def weight_files_present(directory: str | os.PathLike[str]) -> set[Path]:
    """The weight files of either layout now in ``directory``."""
    return {path for path in Path(directory).iterdir()
            if path.is_file() and any(fnmatch(path.name, pattern) for pattern in WEIGHT_PATTERNS)}


def write_folder(model: nn.Module, directory: str | os.PathLike[str], max_shard_mb: float | None = None) -> list[str]:
    """The weights, then ``config.json`` with their SHA-256 (called by ``save_pretrained``);
    returns the names of the weight files.

    With ``max_shard_mb``, weights larger than that are split into shards of at most that
    many MiB of tensors (plus a header of a few KiB; a larger tensor gets a shard of its
    own) with Hugging Face's index beside them.
    Weight files of an earlier save that the new one does not use are removed.
    """
    if max_shard_mb is not None and not 0 < max_shard_mb < math.inf:
        raise ValueError(f"max_shard_mb must be a positive number of MiB, got {max_shard_mb}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stale = weight_files_present(directory)
    state = model.state_dict()
    split = (split_torch_state_dict_into_shards(state, max_shard_size=int(max_shard_mb * 2**20))
             if max_shard_mb is not None else None)
    digests: str | dict[str, str]
    if split is None or not split.is_sharded:
        weights = directory / WEIGHTS_NAME
        _write_atomically(weights, lambda path: save_safetensors(model, str(path), metadata={"format": "pt"}))
        written, version, digests = {weights}, FORMAT_VERSION, sha256_file(weights)
    else:
        for name, keys in split.filename_to_tensors.items():
            tensors = {key: state[key].contiguous() for key in keys}
            _write_atomically(directory / name,
                              lambda path, tensors=tensors: save_file(tensors, str(path), metadata={"format": "pt"}))
        index = {"metadata": {"total_size": split.metadata["total_size"]}, "weight_map": split.tensor_to_filename}
        index_text = json.dumps(index, indent=2, sort_keys=True) + "\n"
        _write_atomically(directory / WEIGHTS_INDEX_NAME, lambda path: path.write_text(index_text, encoding="utf-8"))
        digests = {name: sha256_file(directory / name) for name in split.filename_to_tensors}
        written = {directory / WEIGHTS_INDEX_NAME, *(directory / name for name in digests)}
        version = SHARDED_FORMAT_VERSION
    config = {
        **model.config,
        "format_version": version,
        "qgac_transforms_version": __version__,
        "weights_sha256": digests,
    }
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    _write_atomically(directory / CONFIG_NAME, lambda path: path.write_text(text, encoding="utf-8"))
    for path in stale - written:
        path.unlink()
    return [WEIGHTS_NAME] if isinstance(digests, str) else sorted(digests)


def save_model(
    model: nn.Module, directory: str | os.PathLike[str], *, card: ModelCardInfo | Mapping[str, Any] | None = None,
    max_shard_mb: float | None = None,
) -> Path:
    """Write a complete, publishable folder: weights, config and a freshly rendered card.

    ``card`` describes the export (see :class:`~.model_card.ModelCardInfo`: name, training
    data, steps per stage, wall-clock time, evaluation rows); ``max_shard_mb`` as for
    :func:`write_folder`. Unlike ``save_pretrained``, which keeps an existing
    ``README.md``, this always rewrites it.
    """
    directory = Path(directory)
    shards = len(write_folder(model, directory, max_shard_mb))
    model.generate_model_card(card=card, shards=shards).save(directory / CARD_NAME)
    return directory


def published_files(directory: str | os.PathLike[str]) -> list[str]:
    """The files of a saved folder that are uploaded or embedded, where present: config,
    weights (shards with their index), card and training lineage. Nothing else is sent."""
    directory = Path(directory)
    weights = _listed_weight_files(directory / CONFIG_NAME)
    names = (CONFIG_NAME, *weights, CARD_NAME, TRAINING_NAME)
    return [name for name in names if (directory / name).is_file()]


# ---------------------------------------------------------------------- reading
def _constructor_arguments(model_class: type[nn.Module]) -> dict[str, inspect.Parameter]:
    parameters = dict(inspect.signature(model_class.__init__).parameters)
    parameters.pop("self", None)
    return parameters


def argument_type_problem(arguments: Mapping[str, Any], model_class: type[nn.Module]) -> tuple[str, str] | None:
    """The first of ``arguments`` whose value is not of the type of its constructor
    argument's default (a whole number, a flag, a name), with what it must be; ``None``
    when there is none. The constructor and the loader both check with it, so that a model
    that can be built can be saved and loaded again."""
    for name, parameter in _constructor_arguments(model_class).items():
        expected = type(parameter.default)
        if name in arguments and expected in (int, bool, str):
            value = arguments[name]
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                return name, {int: "an integer", bool: "true or false", str: "a string"}[expected]
    return None


def read_config(directory: str | os.PathLike[str], model_class: type[nn.Module]) -> dict[str, Any]:
    """The validated ``config.json`` of a saved model folder."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise InvalidWeightsError(path, "missing: a saved QGAC model folder holds config.json and its weights")
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
    if type(version) is not int or version not in READABLE_FORMATS:
        newer = isinstance(version, int) and version > max(READABLE_FORMATS)
        raise InvalidWeightsError(
            path,
            f"format_version {version!r} written by qgac-transforms {writer}; qgac-transforms {__version__} "
            f"reads format_version {' and '.join(map(str, READABLE_FORMATS))} only"
            f"{' (upgrade qgac-transforms)' if newer else ''}",
        )
    unknown = sorted(set(config) - set(METADATA_KEYS) - _constructor_arguments(model_class).keys())
    if unknown:
        raise InvalidWeightsError(
            path, f"unknown configuration keys {unknown} (written by qgac-transforms {writer}, this is {__version__})"
        )
    if problem := argument_type_problem(config, model_class):
        name, kind = problem
        raise InvalidWeightsError(path, f"{name} must be {kind}, got {json.dumps(config[name])}")
    weight_digests(config, path)
    return config


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def is_sharded(config: Mapping[str, Any]) -> bool:
    """Whether a folder's ``config.json`` describes its weights as shards with an index."""
    return config.get("format_version") == SHARDED_FORMAT_VERSION


def weight_digests(config: Mapping[str, Any], path: str | os.PathLike[str]) -> dict[str, str]:
    """Weight file name -> SHA-256, as ``config.json`` (at ``path``) records them.

    Shard names are checked against Hugging Face's pattern (so a config cannot name a file
    outside its folder) and must be the complete set ``1..N of N``.
    """
    digests = config.get("weights_sha256")
    if not is_sharded(config):
        if not _is_digest(digests):
            raise InvalidWeightsError(path, "weights_sha256 is missing or not a SHA-256 hex digest")
        return {WEIGHTS_NAME: digests}
    if not isinstance(digests, dict) or not digests or not all(map(_is_digest, digests.values())):
        raise InvalidWeightsError(path, "weights_sha256 must map each weight shard to its SHA-256 hex digest")
    count = len(digests)
    expected = {f"model-{number:05d}-of-{count:05d}.safetensors" for number in range(1, count + 1)}
    if set(digests) != expected:
        raise InvalidWeightsError(path, f"weights_sha256 names {_few(sorted(digests))}; a model in {count} shards "
                                        f"has {_few(sorted(expected))}")
    return dict(digests)


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
        raise InvalidWeightsError(path, "missing: a saved QGAC model folder holds config.json and its weights "
                                        "(model.safetensors or the shards named in config.json)")
    stat = path.stat()
    _verify_digest(str(path), stat.st_size, stat.st_mtime_ns, sha256)
    try:
        return load_file(path)
    except SafetensorError as error:
        raise InvalidWeightsError(path, f"not a readable safetensors file ({error})") from None


def read_folder_weights(directory: str | os.PathLike[str], config: Mapping[str, Any]) -> dict[str, Tensor]:
    """The whole state dict of a folder with a validated config: its one file, or all its
    shards, checked against their index (which Hugging Face's tools read instead of the config)."""
    directory = Path(directory)
    state: dict[str, Tensor] = {}
    shard_of: dict[str, str] = {}
    for name, digest in weight_digests(config, directory / CONFIG_NAME).items():
        part = read_weights(directory / name, digest)
        repeated = sorted(state.keys() & part.keys())
        if repeated:
            raise InvalidWeightsError(directory / name, f"holds keys already in another shard: {_few(repeated)}")
        state.update(part)
        shard_of.update(dict.fromkeys(part, name))
    if is_sharded(config):
        _check_index(directory / WEIGHTS_INDEX_NAME, shard_of)
    return state


def _check_index(path: Path, shard_of: Mapping[str, str]) -> None:
    """Raise unless the shards' index maps every key to the shard that holds it."""
    if not path.is_file():
        raise InvalidWeightsError(path, "missing: a sharded model folder holds its shards' index")
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise InvalidWeightsError(path, f"not a safetensors index ({type(error).__name__}: {error})") from None
    if weight_map != dict(shard_of):
        wrong = sorted(key for key in set(weight_map) | set(shard_of) if weight_map.get(key) != shard_of.get(key))
        raise InvalidWeightsError(path, f"does not match the shards named in config.json: {_few(wrong)}")


def _few(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} and {len(keys) - limit} more" if len(keys) > limit else shown


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], source: str | os.PathLike[str]) -> None:
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
    directory: str | os.PathLike[str], model_class: type[ModelT], *, map_location: str | torch.device = "cpu"
) -> ModelT:
    """Build ``model_class`` from ``directory``'s config and strictly load its weights; eval mode."""
    directory = Path(directory)
    config = read_config(directory, model_class)
    state = read_folder_weights(directory, config)
    try:
        # Built on the meta device: no random initialisation to throw away.
        with torch.device("meta"):
            model = model_class(**{key: value for key, value in config.items() if key not in METADATA_KEYS})
    except (TypeError, ValueError, RuntimeError) as error:
        raise InvalidWeightsError(directory / CONFIG_NAME, f"cannot build {model_class.__name__}: {error}") from None
    check_state_dict(model, state, directory if is_sharded(config) else directory / WEIGHTS_NAME)
    # The statistics come from the config at full precision: a float16 file holds them rounded,
    # and a model that kept the rounded values would save a folder that no longer loads.
    statistics = dict(model.named_buffers())
    # Fresh storage, then a copy: tensors viewing the file's buffer can be misaligned, which
    # changes which CPU kernels run and so the last bits of the output.
    model.to_empty(device=map_location).load_state_dict({**state, **statistics}, strict=True)
    return model.eval()


# ---------------------------------------------------------------------- finding
def _listed_weight_files(config_path: Path) -> list[str]:
    """The files a saved folder's ``config.json`` names: the weights, and a sharded model's
    index. None when the config is not valid: then there is nothing to fetch, and loading
    the folder reports what is wrong with its config."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        names = list(weight_digests(config, config_path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, InvalidWeightsError, AttributeError):
        return []
    return [*names, WEIGHTS_INDEX_NAME] if is_sharded(config) else names


def download(repo_id: str, options: HubOptions = HubOptions()) -> Path:
    """Fetch ``config.json`` and the files it names, of one commit; returns its cache snapshot folder."""
    arguments: dict[str, Any] = {**asdict(options), "repo_id": repo_id, "library_name": "qgac-transforms",
                                 "library_version": __version__}
    revision = arguments.pop("revision")
    config = Path(hf_hub_download(filename=CONFIG_NAME, revision=revision, **arguments))
    # The cache keeps each commit in snapshots/<commit hash>/: pin the weights to the config's commit.
    for name in _listed_weight_files(config):
        try:
            weights = Path(hf_hub_download(filename=name, revision=config.parent.name, **arguments))
        except LocalEntryNotFoundError as error:  # name the missing file, not just the repo
            raise LocalEntryNotFoundError(f"{name} is not cached, though config.json is ({config.parent})") from error
        if weights.parent != config.parent:
            raise WeightsNotFoundError(f"{repo_id}: config.json and {name} resolved to different folders")
    return config.parent


def _attempt(name: str, options: HubOptions) -> str:
    cache = options.cache_dir if options.cache_dir is not None else constants.HF_HUB_CACHE
    token = options.token
    token_source = "none" if token is False else "given" if isinstance(token, str) else "the saved login, if any"
    return (
        f"Hub repo {name!r} at revision {options.revision or constants.DEFAULT_REVISION!r} from {constants.ENDPOINT} "
        f"(cache {cache}, offline mode {'on' if constants.is_offline_mode() else 'off'}, "
        f"local_files_only={options.local_files_only}, token: {token_source})"
    )


def _summary(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {' '.join(lines[:2])}"


def _cached(repo_id: str, revision: str, cache_dir: str | os.PathLike[str] | None) -> bool:
    config = try_to_load_from_cache(repo_id, CONFIG_NAME, cache_dir=cache_dir, revision=revision)
    return isinstance(config, str) and all(
        isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache_dir, revision=revision), str)
        for name in _listed_weight_files(Path(config))
    )


def _hub_problem(repo_id: str, revision: str, token: str | bool | None) -> str | None:
    """One request, no retries: why the Hub cannot serve now (no answer, a server error,
    rate limited), or ``None`` when it answered (a 4xx such as "not found" is an answer)."""
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, CONFIG_NAME, revision=revision), token=token)
    except HfHubHTTPError as error:
        status = None if error.response is None else error.response.status_code
        if status is not None and status < 500 and status != 429:
            return None
        return f"the Hub answered {status}" if status is not None else f"the Hub did not answer ({_summary(error)})"
    except Exception as error:  # noqa: BLE001 - connection, timeout, proxy, offline: anything but an answer
        log.debug("Hub probe for %s failed: %s", repo_id, error)
        return f"the Hub did not answer ({_summary(error)})"
    return None


def _not_a_folder(name: str) -> str:
    """The start of the error for a name that is no folder; where it looks like a mistyped
    path (``hub/qgac-smal``), the folders beside it with close names."""
    path = Path(name)
    near: list[str] = []
    try:
        if path.parent != Path(".") and path.parent.is_dir():
            folders = [entry.name for entry in path.parent.iterdir() if entry.is_dir()]
            near = [str(path.parent / match) for match in difflib.get_close_matches(path.name, folders)]
    except OSError:  # a parent that cannot be listed
        pass
    return f"cannot load {name!r}: it is not a folder" + (f" (folders beside it: {', '.join(near)})" if near else "")


_RESOLVED: dict[tuple[Any, ...], Path] = {}


def resolve(name_or_path: str | os.PathLike[str], options: HubOptions = HubOptions(),
            fallback: Path | None = None) -> Path:
    """The local folder holding a model: the folder itself or a Hub cache snapshot.

    ``fallback`` is a packaged copy of exactly that repo and revision: used, instead of an
    error, when the Hub cannot provide them (see the module docstring).
    """
    if os.path.isdir(name_or_path):
        return Path(name_or_path)
    name = str(name_or_path)
    revision = options.revision
    key = (name, revision, str(options.cache_dir), options.local_files_only, options.token, constants.ENDPOINT,
           constants.is_offline_mode())
    known = _RESOLVED.get(key)
    if known is not None and not options.force_download and (known / CONFIG_NAME).is_file():
        return known
    attempt = _attempt(name, options)
    is_default = fallback is not None
    try:
        validate_repo_id(name)
    except HFValidationError as error:
        raise WeightsNotFoundError(f"{_not_a_folder(name)}, nor a Hub repo id: {_summary(error)}") from error
    folder: Path | None = None
    # huggingface_hub retries an unreachable Hub for about 20 s before giving up: one
    # request without retries decides first, so a first use offline falls back to the
    # packaged copy at once, and a mistyped folder name is reported at once.
    asked = options.local_files_only or options.force_download or constants.is_offline_mode()
    problem = None if asked or _cached(name, revision, options.cache_dir) else _hub_problem(name, revision, options.token)
    if problem is None:
        try:
            folder = download(name, options)
        except LocalEntryNotFoundError as error:
            # The Hub could not be reached (or must not be) and the files are not cached.
            if not is_default:
                raise WeightsNotFoundError(
                    f"{_not_a_folder(name)}, and the Hub could not be reached without all of "
                    f"its files cached; tried {attempt}: {_summary(error)}"
                ) from error
        except (HfHubHTTPError, HFValidationError) as error:
            if not is_default:
                raise WeightsNotFoundError(f"{_not_a_folder(name)}, and tried {attempt}: {_summary(error)}") from error
            # The pinned release is missing or refused (removed, gated): the packaged copy
            # is that same release, so it still serves.
            log.warning("the Hub has no %s@%s for this request (%s): using the packaged copy %s",
                        name, revision, _summary(error), fallback)
    elif not is_default:
        raise WeightsNotFoundError(
            f"{_not_a_folder(name)}, its files are not cached, and {problem} to one request without retries "
            f"(try again later); tried {attempt}"
        )
    if folder is None:
        assert fallback is not None  # every other failure raised above
        folder = fallback
        log.info("%s@%s not obtained from the Hub and not cached: using the packaged copy %s", name, revision, folder)
    _RESOLVED[key] = folder
    return folder


def clear_cache() -> None:
    """Forget this process's resolved names and verified weight files."""
    _RESOLVED.clear()
    _verify_digest.cache_clear()
