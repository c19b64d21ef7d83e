"""Checkpoint files: one ``.pt`` file, or a small ``.pt`` index plus safetensors parts.

A GPU machine that returns at most a few files of a capped size (see the GPU recipe in
``training/README.md``) needs a checkpoint split into parts: with ``part_mb`` set, every
tensor of at least :data:`INLINE_BYTES` moves into ``<name>.<step>.<token>.partN.safetensors``
files of at most ``part_mb`` MiB each, and the ``.pt`` file keeps the rest of the state
with the tensors' keys in their places. Parts carry the step and a token new at every
write in their names, and the index is written last, atomically, so a checkpoint cut
short by a crash leaves the previous one readable. A tensor larger than a part is
refused. If the parts would be more than ``max_parts``, the optimizer state is left out
first (resuming then restarts Adam's moments, and says so).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

#: Tensors smaller than this stay in the ``.pt`` index (random-number states, schedules).
INLINE_BYTES = 4096
#: Placeholder for a tensor stored in a part: ``{PART_KEY: "<flat key>"}``.
PART_KEY = "__part_tensor__"
log = logging.getLogger("training")


def _flatten(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` with every large tensor replaced by a placeholder, collected in ``tensors``."""
    if isinstance(value, torch.Tensor) and value.numel() * value.element_size() >= INLINE_BYTES:
        tensors[prefix] = value.detach().cpu().contiguous()
        return {PART_KEY: prefix}
    if isinstance(value, dict):
        return {key: _flatten(item, f"{prefix}/{key}", tensors) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_flatten(item, f"{prefix}/{index}", tensors) for index, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    return value


def _restore(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if set(value) == {PART_KEY}:
            return tensors[value[PART_KEY]]
        return {key: _restore(item, tensors) for key, item in value.items()}
    if isinstance(value, list):
        return [_restore(item, tensors) for item in value]
    if isinstance(value, tuple):
        return tuple(_restore(item, tensors) for item in value)
    return value


#: Room for each tensor's entry in a safetensors header (name, dtype, shape, offsets).
HEADER_BYTES = 256


def _pack(tensors: dict[str, torch.Tensor], limit: int) -> tuple[list[dict[str, torch.Tensor]], str | None]:
    """Greedy packing of tensors into files of at most ``limit`` bytes, and the key of the
    first tensor that is larger than that on its own (it gets a part of its own), if any."""
    parts: list[dict[str, torch.Tensor]] = []
    size, oversize = limit, None
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size() + HEADER_BYTES + len(key.encode())
        if nbytes > limit and oversize is None:
            oversize = key
        if size + nbytes > limit:
            parts.append({})
            size = 0
        parts[-1][key] = tensor
        size += nbytes
    return parts, oversize


def plan_parts(state: dict[str, Any], path: str | Path, part_mb: float,
               max_parts: int = 6) -> tuple[dict[str, Any], Any, list[dict[str, torch.Tensor]]]:
    """How :func:`write_checkpoint` splits ``state`` into parts of ``part_mb``: the state it
    writes (without the optimizer where that does not fit), the index of placeholders and the
    parts. Raises ``ValueError`` where the weights alone do not fit: a run checks this before
    it trains, rather than at its first checkpoint."""
    limit = int(part_mb * 2**20)
    tensors: dict[str, torch.Tensor] = {}
    index = _flatten(state, "", tensors)
    parts, oversize = _pack(tensors, limit)
    if (oversize or len(parts) > max_parts) and state.get("optimizer") is not None:
        log.warning("checkpoint needs %d parts of %g MiB (at most %d)%s: leaving out the optimizer state",
                    len(parts), part_mb, max_parts, f", and {oversize} takes more than one" if oversize else "")
        return plan_parts({**state, "optimizer": None}, path, part_mb, max_parts)
    if oversize:
        size = tensors[oversize].numel() * tensors[oversize].element_size()
        raise ValueError(f"{path}: {oversize.lstrip('/')} alone takes {size / 2**20:.3g} MiB, more than a part "
                         f"of {part_mb:g} MiB; raise checkpoint_part_mb, or set checkpoint_half")
    if len(parts) > max_parts:
        raise ValueError(f"{path}: the weights alone need {len(parts)} parts of {part_mb:g} MiB "
                         f"(at most {max_parts}); raise checkpoint_part_mb")
    return state, index, parts


def write_checkpoint(state: dict[str, Any], path: str | Path, part_mb: float | None = None,
                     max_parts: int = 6) -> list[Path]:
    """Write ``state`` to ``path`` atomically; with ``part_mb``, split as the module says. Returns the files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old_parts = set(path.parent.glob(f"{path.stem}.*.part*.safetensors"))
    files: list[Path] = []
    if part_mb is not None:
        state, index, parts = plan_parts(state, path, part_mb, max_parts)
        names, token = [], secrets.token_hex(4)  # new names each time: the parts of the last index stay intact
        for number, part in enumerate(parts):
            name = f"{path.stem}.{int(state.get('step', 0)):08d}.{token}.part{number}.safetensors"
            save_file(part, path.parent / name)
            names.append(name)
            files.append(path.parent / name)
        state = {"parts": names, "index": index}
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)
    for stale in old_parts - set(files):
        stale.unlink(missing_ok=True)
    return [path, *files]


#: Keys every checkpoint has: the constructor arguments that rebuild its weights, and
#: those weights (``model``, or only their moving average ``ema`` in ``best-<stage>.pt``).
MODEL_KEYS = ("model_config",)
#: Keys of a checkpoint that a run wrote: with its configuration, step and training time.
RUN_KEYS = (*MODEL_KEYS, "config", "step", "elapsed")


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False,
                    required: tuple[str, ...] = MODEL_KEYS) -> dict[str, Any]:
    """A checkpoint written by :func:`write_checkpoint` (or ``torch.save``), parts joined back in.
    Raises ``ValueError`` naming the file when it is no checkpoint holding the ``required`` keys."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except OSError:
        raise
    except Exception as error:  # torch.load fails on foreign bytes in many ways, none of them documented
        raise ValueError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a checkpoint (it holds a {type(state).__name__}, not a dict of training state)")
    if set(state) == {"parts", "index"}:
        state = _joined(path, state, map_location)
    missing = [key for key in required if key not in state] + ([] if {"model", "ema"} & set(state) else ["weights"])
    if missing:
        raise ValueError(f"{path}: not a training checkpoint of this package (no {', '.join(missing)})")
    return state


def _joined(path: Path, state: dict[str, Any], map_location: str | torch.device) -> dict[str, Any]:
    """The state of a split checkpoint's index with its parts' tensors back in place."""
    tensors: dict[str, torch.Tensor] = {}
    for name in state["parts"]:
        part = path.parent / name
        if not part.is_file():
            raise FileNotFoundError(f"{path}: its part {name} is missing (copy every {path.stem}.*.safetensors "
                                    "file with it)")
        tensors.update(load_file(part, device=str(map_location)))
    return _restore(state["index"], tensors)
