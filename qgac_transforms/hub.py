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
:mod:`.publish` uploads one or copies one into the package.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import torch
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model as save_safetensors
from torch import Tensor, nn

from ._version import __version__
from .model_card import ModelCardInfo

log = logging.getLogger(__name__)
ModelT = TypeVar("ModelT", bound=nn.Module)

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


@dataclass(frozen=True)
class HubOptions:
    """How to ask the Hub for weights: the keyword arguments of :func:`huggingface_hub.hf_hub_download`
    that a caller may set, in one place (``create_model`` and ``QGAC.from_pretrained`` build it)."""

    revision: str | None = None
    cache_dir: str | os.PathLike[str] | None = None
    local_files_only: bool = False
    token: str | bool | None = None
    force_download: bool = False


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


def write_folder(model: nn.Module, directory: str | os.PathLike[str]) -> None:
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
    model: nn.Module, directory: str | os.PathLike[str], *, card: ModelCardInfo | Mapping[str, Any] | None = None
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
def _constructor_arguments(model_class: type[nn.Module]) -> dict[str, inspect.Parameter]:
    parameters = dict(inspect.signature(model_class.__init__).parameters)
    parameters.pop("self", None)
    return parameters


def _check_types(config: Mapping[str, Any], model_class: type[nn.Module], path: Path) -> None:
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


def read_config(directory: str | os.PathLike[str], model_class: type[nn.Module]) -> dict[str, Any]:
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
    state = read_weights(directory / WEIGHTS_NAME, config["weights_sha256"])
    try:
        # Built on the meta device: no random initialisation to throw away.
        with torch.device("meta"):
            model = model_class(**{key: value for key, value in config.items() if key not in METADATA_KEYS})
    except (TypeError, ValueError, RuntimeError) as error:
        raise InvalidWeightsError(directory / CONFIG_NAME, f"cannot build {model_class.__name__}: {error}") from None
    check_state_dict(model, state, directory / WEIGHTS_NAME)
    # The statistics come from the config at full precision: a float16 file holds them rounded,
    # and a model that kept the rounded values would save a folder that no longer loads.
    statistics = dict(model.named_buffers())
    # Fresh storage, then a copy: tensors viewing the file's buffer can be misaligned, which
    # changes which CPU kernels run and so the last bits of the output.
    model.to_empty(device=map_location).load_state_dict({**state, **statistics}, strict=True)
    return model.eval()


# ---------------------------------------------------------------------- finding
def download(repo_id: str, options: HubOptions = HubOptions()) -> Path:
    """Fetch ``config.json`` and ``model.safetensors`` of one commit; returns its cache snapshot folder."""
    arguments: dict[str, Any] = {**asdict(options), "repo_id": repo_id, "library_name": "qgac-transforms",
                                 "library_version": __version__}
    revision = arguments.pop("revision")
    config = Path(hf_hub_download(filename=CONFIG_NAME, revision=revision, **arguments))
    # The cache keeps each commit in snapshots/<commit hash>/: pin the weights to the config's commit.
    weights = Path(hf_hub_download(filename=WEIGHTS_NAME, revision=config.parent.name, **arguments))
    if weights.parent != config.parent:
        raise WeightsNotFoundError(f"{repo_id}: config.json and model.safetensors resolved to different folders")
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
    folder: Path | None = None
    # huggingface_hub retries an unreachable Hub for about 20 s before giving up; with a
    # fallback, one request without retries decides, so a first use offline is immediate.
    if (not is_default or options.local_files_only or options.force_download
            or _cached(name, revision, options.cache_dir) or _hub_answers(name, revision, options.token)):
        try:
            folder = download(name, options)
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


def clear_cache() -> None:
    """Forget this process's resolved names and verified weight files."""
    _RESOLVED.clear()
    _verify_digest.cache_clear()
