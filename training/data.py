"""Training data: random patches of a folder of photos, JPEG-compressed in memory.

Each batch is compressed with Pillow (libjpeg) at random qualities and one chroma
subsampling, read back with the library's own coefficient reader, and paired with
the DCT of the uncompressed patch (the regression target). Batch ``k`` of a stream
depends only on ``(seed, rank, k)``, so a resumed run sees the data an
uninterrupted one would have, whatever the number of loader workers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from qgac_transforms.codec import pixels_to_coefficients
from qgac_transforms.evaluation import compress
from qgac_transforms.jpeg_io import read_coefficients

#: Per-image provenance file of a dataset folder: ``file``, ``package``, ``license`` columns.
MANIFEST_NAME = "MANIFEST.tsv"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}
#: Pillow's ``subsampling`` argument -> (vertical, horizontal) chroma factor.
SUBSAMPLINGS = {"4:4:4": (0, (1, 1)), "4:2:2": (1, (1, 2)), "4:2:0": (2, (2, 2))}


#: Default share of batches per chroma subsampling (the paper trains on 4:2:0 only),
#: in the order of ``TrainConfig.subsampling_weights``.
DEFAULT_SUBSAMPLING_WEIGHTS = {"4:2:0": 0.7, "4:2:2": 0.15, "4:4:4": 0.15}
#: The paper's training qualities.
DEFAULT_QUALITIES = tuple(range(10, 101, 10))


class DatasetError(ValueError):
    """A training-data folder or image that cannot be used; names the path and the reason."""

    def __init__(self, path: str | Path, reason: str = "") -> None:
        super().__init__(f"{path}: {reason}" if reason else str(path))
        self.path = str(path)
        self.reason = reason


def list_images(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` (recursively), sorted; an error if there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(folder, "not a folder (give --data a folder of training images)")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DatasetError(folder, f"no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths


def split_images(paths: Sequence[Path], validation: int) -> tuple[list[Path], list[Path]]:
    """A deterministic hold-out: every k-th image goes to validation."""
    if validation <= 0:
        return list(paths), []
    step = max(1, len(paths) // validation)
    held = set(paths[::step][:validation])
    train = [p for p in paths if p not in held]
    if not train:
        folder = paths[0].parent if paths else "<no images>"
        raise DatasetError(folder, f"all {len(paths)} images are held out for validation; "
                                   "add images or lower --validation-images")
    return train, [p for p in paths if p in held]


def read_rgb(path: Path) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DatasetError(path, f"cannot read image ({error})") from error


@dataclass
class Batch:
    """One training batch; all planes dequantized coefficients in image layout."""

    y: torch.Tensor  # (B, 1, P, P)
    chroma: torch.Tensor  # (B, 2, P/v, P/h)
    tables: torch.Tensor  # (B, 3, 8, 8)
    target: torch.Tensor  # (B, C, P, P) DCT of the original, full resolution
    pixels: torch.Tensor  # (B, C, P, P) original pixels, [0, 255]
    factor: tuple[int, int]
    quality: torch.Tensor  # (B,)

    def to(self, device: torch.device) -> Batch:
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.y), move(self.chroma), move(self.tables), move(self.target), move(self.pixels),
                     self.factor, self.quality)


def make_sample(patch: np.ndarray, quality: int, subsampling: str) -> dict[str, torch.Tensor]:
    """Compress one uint8 ``(P, P, C)`` patch and build the network input and target."""
    coefficients = read_coefficients(compress(Image.fromarray(patch), int(quality), SUBSAMPLINGS[subsampling][0]))
    planes, tables = coefficients.to_tensors()
    pixels = torch.from_numpy(patch).permute(2, 0, 1).to(torch.float32)
    target = torch.stack(pixels_to_coefficients(pixels, (1, 1)))
    return {"y": planes[0], "chroma": torch.cat(planes[1:], dim=0), "tables": tables, "target": target, "pixels": pixels}


def batch_seed(seed: int, rank: int, step: int) -> int:
    """The random seed of batch ``step`` of process ``rank``: independent streams per triple."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


class PatchStream(IterableDataset):
    """An endless stream of batches of random compressed patches, from batch ``start_step`` on.

    ``qualities`` is a list of qualities to draw from, or a ``(low, high)`` range
    drawn uniformly (integers) when ``continuous``. Each batch uses one chroma
    subsampling, drawn with ``subsampling_weights``. Batch ``k`` is drawn from its own
    generator seeded by :func:`batch_seed`; with ``n`` loader workers, worker ``w``
    makes batches ``w, w + n, ...``, which the loader yields back in order.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        patch_size: int = 64,
        batch_size: int = 16,
        qualities: Sequence[int] = DEFAULT_QUALITIES,
        continuous: bool = False,
        subsampling_weights: dict[str, float] | None = None,
        seed: int = 0,
        rank: int = 0,
        start_step: int = 0,
    ) -> None:
        if patch_size % 16:
            raise ValueError("patch size must be a multiple of 16 (one 4:2:0 MCU)")
        if not qualities or not all(1 <= q <= 100 for q in qualities):
            raise ValueError(f"qualities must be JPEG qualities in 1..100, got {list(qualities)}")
        weights = subsampling_weights or DEFAULT_SUBSAMPLING_WEIGHTS
        if set(weights) - set(SUBSAMPLINGS) or not any(w > 0 for w in weights.values()):
            raise ValueError(f"subsampling weights must be positive shares of {sorted(SUBSAMPLINGS)}, got {weights}")
        self.paths = list(paths)
        self.patch_size, self.batch_size = patch_size, batch_size
        self.qualities, self.continuous = list(qualities), continuous
        self.subsampling_weights = dict(weights)
        self.seed, self.rank, self.start_step = seed, rank, start_step
        self._cache: dict[Path, np.ndarray] = {}

    def _image(self, path: Path) -> np.ndarray:
        if path not in self._cache:
            self._cache[path] = read_rgb(path)
        return self._cache[path]

    def _patch(self, rng: random.Random) -> np.ndarray:
        image = self._image(rng.choice(self.paths))
        size = self.patch_size
        height, width = image.shape[:2]
        if height < size or width < size:
            image = np.pad(image, ((0, max(0, size - height)), (0, max(0, size - width)), (0, 0)), mode="reflect")
            height, width = image.shape[:2]
        top, left = rng.randrange(height - size + 1), rng.randrange(width - size + 1)
        patch = image[top : top + size, left : left + size]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if rng.random() < 0.5:
            patch = patch[::-1]
        return np.ascontiguousarray(patch)

    def _quality(self, rng: random.Random) -> int:
        if self.continuous:
            return rng.randint(min(self.qualities), max(self.qualities))
        return rng.choice(self.qualities)

    def batch(self, step: int) -> Batch:
        """Batch number ``step`` of this stream (a pure function of seed, rank and step)."""
        rng = random.Random(batch_seed(self.seed, self.rank, step))
        names, weights = zip(*self.subsampling_weights.items())
        subsampling = rng.choices(names, weights)[0]
        qualities = [self._quality(rng) for _ in range(self.batch_size)]
        samples = [make_sample(self._patch(rng), q, subsampling) for q in qualities]
        return collate(samples, SUBSAMPLINGS[subsampling][1], qualities)

    def __iter__(self) -> Iterator[Batch]:
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        for step in count(self.start_step + worker_id, workers):
            yield self.batch(step)


def collate(samples: list[dict[str, torch.Tensor]], factor: tuple[int, int], qualities: Sequence[int]) -> Batch:
    stack = lambda key: torch.stack([s[key] for s in samples])  # noqa: E731
    return Batch(
        y=stack("y"),
        chroma=stack("chroma"),
        tables=stack("tables"),
        target=stack("target"),
        pixels=stack("pixels"),
        factor=factor,
        quality=torch.tensor(list(qualities)),
    )


def validation_batches(paths: Sequence[Path], qualities: Sequence[int], patch_size: int = 256) -> list[Batch]:
    """Fixed validation set: the central 4:2:0 patch of each held-out photo at each quality."""
    patches = []
    for path in paths:
        array = read_rgb(path)
        height, width = array.shape[:2]
        size = min(patch_size, (min(height, width) // 16) * 16)
        if size == 0:
            raise DatasetError(path, f"{width}x{height} is too small to validate on (at least 16x16)")
        top, left = (height - size) // 2, (width - size) // 2
        patches.append(np.ascontiguousarray(array[top : top + size, left : left + size]))
    return [collate([make_sample(p, q, "4:2:0")], (2, 2), [q]) for q in qualities for p in patches]
