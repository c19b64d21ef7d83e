"""Named QGAC models, timm-style: configurations, their published weights, one way to build them.

:func:`create_model` is the one way to get a model: ``create_model("qgac-small")`` builds
a fresh network of a configuration, ``create_model("qgac-small", pretrained=True)`` loads
its published weights, and ``create_model(folder_or_hub_id, pretrained=True)`` loads any
saved model. :func:`list_models` names what is registered.

A configuration is exactly the keyword arguments of :class:`~qgac_transforms.model.QGAC`;
normalization statistics are added by training. ``paper``, ``medium``, ``small`` and
``tiny`` keep every part of the architecture and change only widths; ``base`` and
``fast`` put dense residual blocks in BlockNet, and ``fast`` drops FrequencyNet.
Parameters (measured):

==========  ===========  ===========  =============
name        total        Y network    colour network
==========  ===========  ===========  =============
``paper``   259,400,581  256,763,645      2,636,936
``medium``   18,711,845   16,354,685      2,357,160
``base``     11,858,487   11,267,151        591,336
``fast``      6,791,294    6,199,958        591,336
``small``     3,141,349    2,550,013        591,336
``tiny``        616,613      467,741        148,872
==========  ===========  ===========  =============
"""

from __future__ import annotations

import difflib
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .hub import CONFIG_NAME, HubOptions, WeightsNotFoundError, embedded_folder, load_folder, resolve
from .model import QGAC
from .model_card import HUB_NAMESPACE

CONFIGS: dict[str, dict[str, Any]] = {
    # The paper's widths: 259.4M parameters, the count of the author's port.
    "paper": dict(block_width=256, features=64, per_frequency=4, manifold_width=64, fusion_width=4, color_width=32),
    "medium": dict(block_width=64, features=32, per_frequency=2, manifold_width=32, fusion_width=2, color_width=32),
    "small": dict(block_width=32, features=16, per_frequency=1, manifold_width=16, fusion_width=2, color_width=16),
    # For CPUs (the capacity study in docs/method.md): small's CFMs and colour network; at
    # block resolution 4 dense residual blocks 96 wide and no FrequencyNet, whose 64-group
    # convolutions cost 40% of small's Y time. 1.6x small's Y MACs in less time. The colour
    # residual goes on the decoder's (fancy) chroma upsampling, so that no LIVE1 image comes
    # out worse at quality 90.
    "fast": dict(block_width=96, features=16, per_frequency=1, manifold_width=16, fusion_width=2, color_width=16,
                 block_body="residual", block_depth=4, frequency_net=False, chroma_upsampling="fancy"),
    "tiny": dict(block_width=16, features=8, per_frequency=1, manifold_width=8, fusion_width=1, color_width=8),
    # For quality, where the study points (docs/method.md): small's CFMs, FrequencyNet and
    # colour network (on the fancy chroma base, like fast's); at block resolution 8 dense
    # residual blocks 128 wide.
    "base": dict(block_width=128, features=16, per_frequency=1, manifold_width=16, fusion_width=2, color_width=16,
                 block_body="residual", block_depth=8, chroma_upsampling="fancy"),
}


def list_configs() -> list[str]:
    return sorted(CONFIGS)


def build_model(name: str, **overrides: Any) -> QGAC:
    """A freshly initialised :class:`QGAC` of the named configuration."""
    if name not in CONFIGS:
        raise KeyError(f"unknown QGAC configuration {name!r}; choose one of {', '.join(list_configs())}")
    return QGAC(**{**CONFIGS[name], **overrides})


@dataclass(frozen=True)
class PublishedWeights:
    """Where a registered model's trained weights are published.

    ``revision`` is the Hub commit this release was tested with, and ``embedded`` the name
    of the identical copy inside the package (``qgac_transforms/weights/``). Until the
    first upload ``revision`` is ``None`` and the packaged copy is the only source: no
    request goes to the Hub for it.
    """

    repo_id: str
    revision: str | None = None
    embedded: str | None = None


#: Registered model names -> (configuration, published weights or None).
MODELS: dict[str, tuple[str, PublishedWeights | None]] = {
    "qgac-tiny": ("tiny", None),
    "qgac-small": ("small", PublishedWeights(f"{HUB_NAMESPACE}/qgac-small", revision=None, embedded="qgac-small")),
    "qgac-fast": ("fast", PublishedWeights(f"{HUB_NAMESPACE}/qgac-fast", revision=None, embedded="qgac-fast")),
    "qgac-base": ("base", None),
    "qgac-medium": ("medium", None),
    "qgac-paper": ("paper", None),
}
#: The model used wherever none is named.
DEFAULT_MODEL = "qgac-fast"


def registered_name(repo_id: str) -> str | None:
    """The registered name whose weights are published as ``repo_id``, if any: the name to load
    them by, since it also finds the packaged copy offline and before the first upload."""
    return next((name for name, (_, weights) in MODELS.items() if weights and weights.repo_id == repo_id), None)


def list_models(pretrained: bool = False) -> list[str]:
    """Registered model names; with ``pretrained``, only those with published weights."""
    return sorted(name for name, (_, weights) in MODELS.items() if weights is not None or not pretrained)


def create_model(
    name: str | os.PathLike[str] = DEFAULT_MODEL,
    pretrained: bool = False,
    *,
    device: str | torch.device | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    **overrides: Any,
) -> QGAC:
    """A QGAC model by name; the one loader behind the transform, the hook, the CLI and training.

    ``name``: a registered name (:func:`list_models`), a saved model folder or a Hugging
    Face Hub repo id. A registered name without ``pretrained`` builds a freshly initialised
    network (``overrides`` change its constructor arguments); with it, its published
    weights (the packaged copy while unpublished, else the Hub at the pinned ``revision``
    with the packaged copy as a fallback offline). Folders and Hub ids are sources of
    weights and need ``pretrained=True``; ``revision``, ``cache_dir``, ``local_files_only``
    and ``token`` reach the Hub as for any Hub model (one :class:`~.hub.HubOptions`).
    Pretrained models are returned in eval mode on ``device``.
    """
    name = os.fspath(name)
    if "dtype" in overrides:
        raise TypeError(f"{name}: create_model takes no dtype (models are built and loaded in float32, float16 "
                        "files too); convert the model with .to(dtype)")
    registered = MODELS.get(name)
    if registered is not None and not pretrained:
        model = build_model(registered[0], **overrides)
        return model.to(device) if device is not None else model
    if overrides:
        raise TypeError(f"{name}: pretrained weights fix the configuration; got overrides {sorted(overrides)}")
    if not pretrained:
        raise ValueError(f"{name!r} is not a registered model ({', '.join(list_models())}); a saved folder or "
                         "Hub repo id is a source of weights: pass pretrained=True")
    options = HubOptions(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    return load_folder(pretrained_folder(name, options), QGAC, map_location=device if device is not None else "cpu")


def weights_label(name: str | os.PathLike[str] | None) -> str:
    """How reports name the weights: the name given, or the default's marked as such."""
    return os.fspath(name) if name is not None else f"{DEFAULT_MODEL} (default)"


def load_model(name: str | os.PathLike[str] | None = None, **options: Any) -> QGAC:
    """``create_model(name or DEFAULT_MODEL, pretrained=True, **options)``: trained weights by name."""
    if "pretrained" in options:
        raise TypeError("load_model always loads trained weights; create_model(name) builds an untrained network")
    return create_model(DEFAULT_MODEL if name is None else name, pretrained=True, **options)


def pretrained_folder(name: str | os.PathLike[str] = DEFAULT_MODEL, options: HubOptions = HubOptions()) -> Path:
    """The local folder of ``name``'s weights: a saved folder, a Hub repo's snapshot, or a
    registered model's published weights (:mod:`.hub`'s docstring, point 3): another
    ``revision`` than the pinned one is any Hub commit of its repo, with no fallback."""
    name = os.fspath(name)
    if name not in MODELS:
        try:
            return resolve(name, options)
        except WeightsNotFoundError as error:
            if hint := _registered_hint(name):
                raise WeightsNotFoundError(f"{error}; {hint}") from error
            raise
    weights = MODELS[name][1]
    if weights is None:
        raise ValueError(f"{name!r} has no published weights; models with weights: "
                         f"{', '.join(list_models(pretrained=True))}")
    if options.revision is not None and options.revision != weights.revision:
        return resolve(weights.repo_id, options)
    packaged = embedded_folder(weights.embedded) if weights.embedded else None
    if weights.revision is None:
        if packaged is None:
            raise WeightsNotFoundError(f"{weights.repo_id} is neither published nor packaged")
        return packaged
    return resolve(weights.repo_id, replace(options, revision=weights.revision), fallback=packaged)


def _registered_hint(name: str) -> str | None:
    """For a name that loads nothing: the registered models it may have meant (a
    configuration's name, another case, a typo)."""
    if name in CONFIGS:
        trained = [model for model, (config, weights) in MODELS.items() if config == name and weights is not None]
        return (f"{name!r} is a configuration, which build_model({name!r}) builds untrained"
                + (f"; its trained weights are {', '.join(map(repr, trained))}" if trained else ""))
    by_lower = {model.lower(): model for model in list_models(pretrained=True)}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    return f"did you mean {by_lower[close[0]]!r}?" if close else None


#: (source, device, dtype) -> (version, model): one entry per source; a folder saved again
#: replaces its entry.
_SHARED: dict[tuple[str, str, torch.dtype], tuple[tuple[int, ...] | None, QGAC]] = {}
_SHARED_LOCK = threading.Lock()


def shared_model(
    name: str | os.PathLike[str] | None = None, device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> QGAC:
    """The trained model ``name`` (``None``: the default) for inference, loaded at most once per
    process, ``device`` and ``dtype``: what the transform, the Pillow hook and the CLI share.
    Frozen (eval mode, no gradients); do not train or move it: :func:`create_model` gives a
    model of one's own."""
    name = DEFAULT_MODEL if name is None else os.fspath(name)
    place = torch.device(device or "cpu")
    if place.type == "cuda" and place.index is None:
        place = torch.device("cuda", torch.cuda.current_device())  # "cuda" and "cuda:0" share one copy
    source, version = _source(name)
    key = (source, str(place), dtype or torch.float32)
    with _SHARED_LOCK:
        cached = _SHARED.get(key)
        if cached is None or cached[0] != version:
            model = create_model(name, pretrained=True, device=place).to(dtype=key[2]).eval().requires_grad_(False)
            cached = _SHARED[key] = (version, model)
    return cached[1]


def _source(name: str) -> tuple[str, tuple[int, ...] | None]:
    """Where ``name``'s weights come from and which version of them: a registered name or Hub id
    as given; a folder by its absolute path (the same relative path from another directory is
    another model) and its config file's inode, size and modification time (one ``stat``, no
    read: saving writes a new file, so a folder saved again is a new version)."""
    folder = Path(name)
    if name in MODELS or not folder.is_dir():
        return name, None
    try:
        stat = (folder / CONFIG_NAME).stat()
    except OSError:
        return str(folder.resolve()), None  # create_model names the problem when it loads the folder
    return str(folder.resolve()), (stat.st_ino, stat.st_size, stat.st_mtime_ns)
