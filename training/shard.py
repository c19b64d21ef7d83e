"""Split a training folder into shards small enough to send to a GPU machine.

A GPU machine takes at most 64 MiB of repository and data per run (``training/README.md``),
so each run there takes one shard of the training photos. The held-out photos, chosen
by :func:`training.data.split_images` exactly as training on the whole folder would
choose them, go to their own folder that every run takes along (``validation_data``),
so the validation numbers of every shard and of the whole folder are comparable.
Shards are balanced by file size, largest first; files are copied unchanged.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from .data import MANIFEST_NAME, split_images, training_images


def shard_folder(source: str | Path, destination: str | Path, shard_mb: float,
                 validation_images: int = 6) -> list[Path]:
    """Write ``destination/validation`` and ``destination/shard-NN`` folders; return the shard folders."""
    if shard_mb <= 0:
        raise ValueError(f"shard_mb must be positive, got {shard_mb}")
    source, destination = Path(source), Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise ValueError(f"{destination} is not empty: shard into a new folder, so that no shard or held-out "
                         "photo of an earlier split stays beside the new ones")
    train, held_out = split_images(training_images(source), validation_images)
    sizes = {path: path.stat().st_size for path in train}
    limit = shard_mb * 2**20
    if max(sizes.values()) > limit:
        largest = max(sizes, key=sizes.__getitem__)
        raise ValueError(f"{largest} alone is larger than a shard of {shard_mb:g} MiB")
    count = max(1, math.ceil(sum(sizes.values()) / limit))
    while True:
        shards = _balance(sizes, count)
        if max(sum(sizes[p] for p in shard) for shard in shards) <= limit:
            break
        count += 1
    folders = [destination / f"shard-{index:02d}" for index in range(count)]
    for folder, paths in [(destination / "validation", held_out), *zip(folders, shards)]:
        folder.mkdir(parents=True, exist_ok=True)
        for path in paths:
            target = folder / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        if (source / MANIFEST_NAME).is_file():
            shutil.copy2(source / MANIFEST_NAME, folder / MANIFEST_NAME)
    return folders


def _balance(sizes: dict[Path, int], count: int) -> list[list[Path]]:
    """``count`` groups of the files, each next one (largest first) to the smallest group."""
    shards: list[list[Path]] = [[] for _ in range(count)]
    totals = [0] * count
    for path in sorted(sizes, key=lambda p: (-sizes[p], p)):
        smallest = totals.index(min(totals))
        shards[smallest].append(path)
        totals[smallest] += sizes[path]
    return shards
