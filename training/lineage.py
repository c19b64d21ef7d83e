"""The stages a model's weights went through: ``training.json`` records, read and written.

An exported folder lists them in its ``training.json``; a run that starts from such a
folder copies that list into its checkpoints when it starts, so its own export still
names the right history after the folder has been replaced by newer weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qgac_transforms import hub

#: Checkpoint key of the records of the exported folder a run started from, copied at its start.
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
