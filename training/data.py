"""Training data: random patches of a folder of photos, JPEG-compressed in torch.

The photos are decoded once into one uint8 tensor on the training device (GPU memory
on a GPU). Each batch takes random square crops at any offset, in any of the eight
orientations (flips and quarter turns), and compresses them with
:func:`qgac_transforms.codec.compress`, which gives bit for bit the coefficients
Pillow (libjpeg-turbo) would write, at a random quality per patch and one chroma
subsampling per batch. Batch ``k`` of a stream depends only on ``(seed, rank, k)``,
so a resumed run sees the data an uninterrupted one would have, on any device and
with any number of loader workers.
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

from qgac_transforms.codec import SUBSAMPLINGS, compress
from qgac_transforms.evaluation import eight_bit

#: Per-image provenance file of a dataset folder: ``file``, ``package``, ``license`` columns.
MANIFEST_NAME = "MANIFEST.tsv"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}
#: Default share of batches per chroma subsampling (the paper trains on 4:2:0 only),
#: in the order of ``TrainConfig.subsampling_weights``.
DEFAULT_SUBSAMPLING_WEIGHTS = {"4:2:0": 0.7, "4:2:2": 0.15, "4:4:4": 0.15}
#: The paper's training qualities.
DEFAULT_QUALITIES = tuple(range(10, 101, 10))
#: Orientations of a patch: bit 0 flips left-right, bit 1 flips top-bottom, bit 2 then transposes.
ORIENTATIONS = 8


class DatasetError(ValueError):
    """A training-data folder or image that cannot be used; names the path and the reason."""

    def __init__(self, path: str | Path, reason: str = "") -> None:
        super().__init__(f"{path}: {reason}" if reason else str(path))
        self.path = str(path)
        self.reason = reason


def training_images(folder: str | Path) -> list[Path]:
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
    """An image file as ``(H, W, 3)`` uint8 RGB; 16-bit gray scaled to 8 bits as the
    evaluation reads originals (:func:`qgac_transforms.evaluation.eight_bit`)."""
    try:
        with Image.open(path) as image:
            return np.array(eight_bit(image).convert("RGB"))  # writable: torch.from_numpy warns of a read-only one
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DatasetError(path, f"cannot read image ({error})") from error


@dataclass
class Batch:
    """One training batch; all planes dequantized coefficients in image layout."""

    y: torch.Tensor  # (B, 1, P, P)
    chroma: torch.Tensor  # (B, 2, P/v, P/h)
    tables: torch.Tensor  # (B, 3, 8, 8)
    pixels: torch.Tensor  # (B, 3, P, P) original RGB pixels, [0, 255]
    factor: tuple[int, int]
    quality: torch.Tensor  # (B,)

    def to(self, device: torch.device) -> Batch:
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.y), move(self.chroma), move(self.tables), move(self.pixels), self.factor, self.quality)


def batch_seed(seed: int, rank: int, step: int) -> int:
    """The random seed of batch ``step`` of process ``rank``: independent streams per triple."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


@dataclass(frozen=True)
class BatchPlan:
    """Everything random about one batch: which crops, how turned, how compressed."""

    subsampling: str
    qualities: tuple[int, ...]
    images: tuple[int, ...]
    tops: tuple[int, ...]
    lefts: tuple[int, ...]
    orientations: tuple[int, ...]


class PhotoBank:
    """The training photos decoded once into one uint8 tensor on ``device``, as ``(3, H, W)`` views.

    Photos smaller than a patch are mirrored out to ``patch_size`` at load time.
    """

    def __init__(self, paths: Sequence[Path], patch_size: int, device: torch.device | str = "cpu") -> None:
        arrays = []
        for path in paths:
            array = read_rgb(path)
            height, width = array.shape[:2]
            if height < patch_size or width < patch_size:
                pad = ((0, max(0, patch_size - height)), (0, max(0, patch_size - width)), (0, 0))
                array = np.pad(array, pad, mode="reflect" if min(height, width) > 1 else "edge")
            arrays.append(np.ascontiguousarray(array.transpose(2, 0, 1)))
        self.heights = [a.shape[1] for a in arrays]
        self.widths = [a.shape[2] for a in arrays]
        pixels = torch.from_numpy(np.concatenate([a.reshape(-1) for a in arrays])).to(device)  # one allocation
        self.images = [chunk.view(a.shape) for chunk, a in zip(pixels.split([a.size for a in arrays]), arrays)]

    def __len__(self) -> int:
        return len(self.images)

    def crops(self, plan: BatchPlan, size: int) -> torch.Tensor:
        """``(B, 3, size, size)`` uint8 crops of ``plan``, each in its orientation.

        Slices and flips of the photos' views, stacked: on the CPU ten times faster than
        one gather of computed indices, and on a GPU a few small kernels per crop.
        """
        crops = []
        for image, top, left, orientation in zip(plan.images, plan.tops, plan.lefts, plan.orientations):
            crop = self.images[image][:, top : top + size, left : left + size]
            if orientation & 2:
                crop = crop.flip(1)
            if orientation & 1:
                crop = crop.flip(2)
            crops.append(crop.transpose(1, 2) if orientation & 4 else crop)
        return torch.stack(crops)


class PatchStream(IterableDataset):
    """An endless stream of batches of random compressed patches, from batch ``start_step`` on.

    ``qualities`` is a list of qualities to draw from, or a ``(low, high)`` range
    drawn uniformly (integers) when ``continuous``. Each batch uses one chroma
    subsampling, drawn with ``subsampling_weights``. Batch ``k`` is drawn from its own
    generator seeded by :func:`batch_seed`; with ``n`` loader workers, worker ``w``
    makes batches ``w, w + n, ...``, which the loader yields back in order. The photos
    are loaded on first use, on ``device``, where the batches are made.
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
        device: torch.device | str = "cpu",
    ) -> None:
        if patch_size % 16:
            raise ValueError("patch size must be a multiple of 16 (one 4:2:0 MCU)")
        if not qualities or not all(1 <= q <= 100 for q in qualities):
            raise ValueError(f"qualities must be JPEG qualities in 1..100, got {list(qualities)}")
        weights = subsampling_weights or DEFAULT_SUBSAMPLING_WEIGHTS
        if set(weights) - set(DEFAULT_SUBSAMPLING_WEIGHTS) or not any(w > 0 for w in weights.values()):
            raise ValueError(f"subsampling weights must be positive shares of {sorted(DEFAULT_SUBSAMPLING_WEIGHTS)}, "
                             f"got {weights}")
        self.paths = list(paths)
        self.patch_size, self.batch_size = patch_size, batch_size
        self.qualities, self.continuous = list(qualities), continuous
        self.subsampling_weights = dict(weights)
        self.seed, self.rank, self.start_step = seed, rank, start_step
        self.device = torch.device(device)
        self._bank: PhotoBank | None = None

    @property
    def bank(self) -> PhotoBank:
        if self._bank is None:
            self._bank = PhotoBank(self.paths, self.patch_size, self.device)
        return self._bank

    def plan(self, step: int) -> BatchPlan:
        """The draws of batch ``step`` (a pure function of seed, rank and step)."""
        rng = random.Random(batch_seed(self.seed, self.rank, step))
        names, weights = zip(*self.subsampling_weights.items())
        subsampling = rng.choices(names, weights)[0]
        low, high = min(self.qualities), max(self.qualities)
        qualities = [rng.randint(low, high) if self.continuous else rng.choice(self.qualities)
                     for _ in range(self.batch_size)]
        images = [rng.randrange(len(self.paths)) for _ in range(self.batch_size)]
        size, bank = self.patch_size, self.bank
        tops = [rng.randrange(bank.heights[i] - size + 1) for i in images]
        lefts = [rng.randrange(bank.widths[i] - size + 1) for i in images]
        orientations = [rng.randrange(ORIENTATIONS) for _ in images]
        return BatchPlan(subsampling, tuple(qualities), tuple(images), tuple(tops), tuple(lefts), tuple(orientations))

    def batch(self, step: int) -> Batch:
        """Batch number ``step`` of this stream, made on the stream's device."""
        plan = self.plan(step)
        return compressed_batch(self.bank.crops(plan, self.patch_size), plan.qualities, plan.subsampling)

    def __iter__(self) -> Iterator[Batch]:
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        for step in count(self.start_step + worker_id, workers):
            yield self.batch(step)


def compressed_batch(pixels: torch.Tensor, qualities: Sequence[int], subsampling: str) -> Batch:
    """A batch of uint8 RGB ``(B, 3, P, P)`` patches, compressed where they are."""
    quality = torch.tensor(list(qualities), dtype=torch.int64)
    planes, tables = compress(pixels, quality.to(pixels.device), subsampling)
    return Batch(y=planes[0], chroma=torch.cat(planes[1:], dim=1), tables=tables, pixels=pixels.to(torch.float32),
                 factor=SUBSAMPLINGS[subsampling], quality=quality)


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
        patches.append(torch.from_numpy(np.ascontiguousarray(array[top : top + size, left : left + size])))
    return [compressed_batch(p.permute(2, 0, 1)[None], [q], "4:2:0") for q in qualities for p in patches]
