"""The stages a model's weights went through: ``training.json`` records, and a run's stages.

An exported folder lists them in its ``training.json``. A run copies the records of what
it starts from (an exported folder, or a checkpoint and the stages before it) into its
checkpoints when it starts, so its export names the history its weights really have,
even after that folder holds newer weights or that checkpoint was trained further.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qgac_transforms import hub

from .checkpoints import RUN_KEYS, read_checkpoint

#: The training stages, in order; each starts from the weights of the one before.
STAGES = ("y", "color", "gan")
#: Checkpoint key of the records of the weights a run started from, copied at its start.
INIT_LINEAGE_KEY = "init_lineage"


@dataclass
class StageRecord:
    """What a run's checkpoint of one stage says about its training."""

    stage: str
    step: int
    elapsed: float
    config: dict[str, Any]
    validation: dict[str, Any] | None  # the last validation record, if any
    run: str = ""  # the run folder's name
    held_out: list[str] | None = None  # the file names of the photos it validated on (not recorded before 2026-11-30)


def as_records(raw: Any, source: str | Path) -> list[StageRecord]:
    """``raw`` (a list of dicts, as JSON holds them) as records; ``ValueError`` naming ``source`` if it is not."""
    if not isinstance(raw, list):
        raise ValueError(f"{source}: not a list of training stage records (a {type(raw).__name__})")
    try:
        return [StageRecord(**record) for record in raw]
    except TypeError as error:
        raise ValueError(f"{source}: not a list of training stage records ({error})") from error


def as_raw(stages: Sequence[StageRecord]) -> list[dict[str, Any]]:
    """``stages`` as plain lists and dicts, for JSON and checkpoints."""
    return [asdict(record) for record in stages]


def write_lineage(stages: Sequence[StageRecord], folder: str | Path) -> Path:
    """Write ``stages`` to ``folder``'s ``training.json``, so that a run started from the
    exported folder can list them in its own card."""
    path = Path(folder) / hub.TRAINING_NAME
    path.write_text(json.dumps(as_raw(stages), indent=1) + "\n", encoding="utf-8")
    return path


def read_lineage(folder: str | Path) -> list[StageRecord]:
    """The stages an exported folder's weights went through (none if it has no ``training.json``)."""
    path = Path(folder) / hub.TRAINING_NAME
    if not path.is_file():
        return []
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{path}: not a list of training stage records ({error})") from error
    return as_records(raw, path)


# --------------------------------------------------------------------------- a run's stages


def read_stage(checkpoint: str | Path) -> tuple[StageRecord, list[StageRecord] | None]:
    """The training facts of one checkpoint (its weights are not needed here), and the records
    of what its run started from as the run copied them at its start (``None`` for a checkpoint
    older than that copy, or a run started from random weights), from one read."""
    return _stage_of(read_checkpoint(checkpoint, mmap=True, required=RUN_KEYS), checkpoint)  # tensors stay on disk


def _stage_of(state: dict, checkpoint: str | Path) -> tuple[StageRecord, list[StageRecord] | None]:
    """:func:`read_stage` of a checkpoint's already read ``state``."""
    history = state.get("history") or []
    record = StageRecord(state["config"]["stage"], int(state["step"]), float(state["elapsed"]), state["config"],
                         history[-1] if history else None, Path(checkpoint).parent.name, state.get("held_out"))
    copied = state.get(INIT_LINEAGE_KEY)
    return record, None if copied is None else as_records(copied, f"{checkpoint}: {INIT_LINEAGE_KEY}")


def stage_checkpoint(run: str | Path, stage: str) -> Path:
    """What a run's stage produced: its best validated weights (``best-<stage>.pt``) where kept,
    else its last checkpoint."""
    best = Path(run) / f"best-{stage}.pt"
    return best if best.is_file() else Path(run) / f"checkpoint-{stage}.pt"


def run_stages(run: str | Path, last_stage: str) -> list[StageRecord]:
    """Every stage the weights of ``run``'s ``last_stage`` went through: the records its run
    copied when it started, then its own; for older runs, read from the stages and the
    weights they started from as they are now."""
    stages = _read_stages(Path(run), STAGES[: STAGES.index(last_stage) + 1])
    if stages and stages[-1][1] is not None:
        record, copied = stages[-1]
        return [*copied, record]
    return _with_origins(stages, frozenset())


def checkpoint_lineage(checkpoint: str | Path) -> list[StageRecord] | None:
    """Every stage the weights of a ``.pt`` checkpoint went through, itself last; ``None`` for
    weights saved without training records."""
    state = read_checkpoint(checkpoint, mmap=True)
    if "config" not in state:
        return None
    return _lineage_after(_stage_of(state, checkpoint), Path(checkpoint), frozenset())


def _read_stages(run: Path, stages: Sequence[str]) -> list[tuple[StageRecord, list[StageRecord] | None]]:
    """:func:`read_stage` of each of ``stages`` whose checkpoint is in ``run``."""
    checkpoints = (stage_checkpoint(run, stage) for stage in stages)
    return [read_stage(checkpoint) for checkpoint in checkpoints if checkpoint.exists()]


def _lineage_after(origin: tuple[StageRecord, list[StageRecord] | None], checkpoint: Path,
                   seen: frozenset[Path]) -> list[StageRecord]:
    """The lineage of a checkpoint whose own record (and copied records) are ``origin``."""
    if origin[1] is not None:
        return [*origin[1], origin[0]]
    before = _read_stages(checkpoint.parent, STAGES[: STAGES.index(origin[0].stage)])
    return _with_origins(before + [origin], seen | {checkpoint.resolve()})


def _with_origins(stages: list[tuple[StageRecord, list[StageRecord] | None]],
                  seen: frozenset[Path]) -> list[StageRecord]:
    """The records of ``stages`` (as :func:`read_stage` gives them) preceded by the lineage of
    what the first started from: the copy its run took at its start, else an exported
    folder's records now, or a ``.pt`` checkpoint followed into its run."""
    if not stages:
        return []
    records = [record for record, _ in stages]
    first, copied = stages[0]
    if copied is not None:
        return copied + records
    start = first.config.get("init")
    if not start:
        return records
    init = Path(start)
    if init.is_dir():
        lineage = read_lineage(init)
        if any(record in lineage for record in records):
            raise ValueError(f"{init} now holds weights exported from run {first.run!r} itself, not those "
                             "it started from: export the run before replacing that folder")
        return lineage + records
    if init.suffix != ".pt" or not init.is_file():
        raise ValueError(f"run {first.run!r} started from {start}, which is not here (not a saved folder or "
                         "a checkpoint), so the stages before it cannot be listed: put it back to export")
    if init.resolve() in seen:
        return records
    return _lineage_after(read_stage(init), init, seen) + records
