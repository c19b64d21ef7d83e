"""The training loop: stages, checkpoints, validation, logging, DistributedDataParallel."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from qgac_transforms.codec import LEVEL_SHIFT, coefficients_to_pixels
from qgac_transforms.configs import build_model
from qgac_transforms.dct import image_idct
from qgac_transforms.metrics import psnr
from qgac_transforms.model import QGAC

from .data import Batch, PatchStream, list_images, split_images, validation_batches
from .losses import regression_loss

STAGES = ("y", "color", "gan")
log = logging.getLogger("training")


@dataclass
class TrainConfig:
    """Everything a run needs; every field is a command-line flag and a config-file key."""

    data: str = "../shared/datasets/train-photos"
    run: str = "runs/small"
    stage: str = "y"
    model: str = "small"
    init: str | None = None  # checkpoint or exported folder to start from (stage 2, 3)
    stats: str | None = None  # JSON from `python -m training stats`
    steps: int = 20000
    batch_size: int = 16
    patch_size: int = 64
    qualities: list[int] = field(default_factory=lambda: list(range(10, 101, 10)))
    continuous_quality: bool = False
    lr: float = 1e-3
    min_lr: float = 1e-6
    schedule: str = "step"  # "step" (halve every lr_step) or "cosine"
    lr_step: int = 100_000
    ssim_weight: float = 0.05
    workers: int = 2
    validation_images: int = 6
    validate_every: int = 500
    checkpoint_minutes: float = 5.0
    seed: int = 0
    device: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.schedule not in ("step", "cosine"):
            raise ValueError(f"schedule must be 'step' or 'cosine', got {self.schedule!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps, eta_min=config.min_lr)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=0.5)


def stage_parameters(model: QGAC, stage: str) -> list[nn.Parameter]:
    """Stage 1 trains the Y network; stage 2 the colour network with Y frozen; GAN both."""
    model.requires_grad_(False)
    trained: nn.Module = {"y": model.y_network, "color": model.color_network, "gan": model}[stage]
    trained.requires_grad_(True)
    return [p for p in trained.parameters() if p.requires_grad]


def predict_pixels(model: nn.Module, batch: Batch, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model on a batch and return (output pixels, target pixels), unclamped."""
    if stage == "y":
        inner: QGAC = model.module if isinstance(model, DistributedDataParallel) else model
        corrected = inner.correct_y(batch.y, batch.tables[:, 0])
        return image_idct(corrected) + LEVEL_SHIFT, image_idct(batch.target[:, :1]) + LEVEL_SHIFT
    corrected = model(batch.y, batch.tables, batch.chroma, batch.factor)
    height, width = batch.pixels.shape[-2:]
    return coefficients_to_pixels(list(corrected.unbind(1)), height, width, clamp=False), batch.pixels


def jpeg_pixels(batch: Batch, stage: str) -> torch.Tensor:
    """What a decoder shows for the batch's JPEGs (the baseline the model must beat)."""
    if stage == "y":
        return (image_idct(batch.y) + LEVEL_SHIFT).clamp(0, 255)
    height, width = batch.pixels.shape[-2:]
    return coefficients_to_pixels([batch.y[:, 0], batch.chroma[:, 0], batch.chroma[:, 1]], height, width, batch.factor)


@torch.no_grad()
def validate(model: QGAC, batches: list[Batch], stage: str, device: torch.device) -> dict[str, float]:
    """Mean PSNR gain (dB) of corrected over JPEG pixels, per quality, on held-out patches."""
    model.eval()
    gains: dict[int, list[float]] = {}
    for batch in batches:
        batch = batch.to(device)
        output, target = predict_pixels(model, batch, stage)
        gain = psnr(output.clamp(0, 255), target) - psnr(jpeg_pixels(batch, stage), target)
        gains.setdefault(int(batch.quality[0]), []).extend(gain.tolist())
    model.train()
    return {f"q{q}": sum(v) / len(v) for q, v in sorted(gains.items())}


class Trainer:
    """One resumable training run of one stage."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.rank = int(os.environ.get("RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.distributed = self.world_size > 1
        if config.threads:
            torch.set_num_threads(config.threads)
        if config.device:
            self.device = torch.device(config.device)
        elif torch.cuda.is_available():
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        else:
            self.device = torch.device("cpu")
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.run_dir = Path(config.run)
        self.checkpoint_path = self.run_dir / f"checkpoint-{config.stage}.pt"
        self.stop_requested = False
        self.is_main = self.rank == 0

    # ----------------------------------------------------------------- setup
    def build(self) -> None:
        config = self.config
        torch.manual_seed(config.seed + self.rank)
        random.seed(config.seed + self.rank)
        self.model = self._initial_model().to(self.device)
        self.parameters = stage_parameters(self.model, config.stage)
        self.optimizer = torch.optim.Adam(self.parameters, lr=config.lr)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.step = 0
        self.elapsed = 0.0
        self.history: list[dict[str, Any]] = []
        if self.checkpoint_path.exists():
            self._load_checkpoint()
        self.network: nn.Module = self.model
        if self.distributed:
            self.network = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.stage != "gan",
            )
        images = list_images(config.data)
        train_paths, held_out = split_images(images, config.validation_images)
        self.validation = validation_batches(held_out, [10, 50]) if self.is_main and held_out else []
        stream = PatchStream(
            train_paths, config.patch_size, config.batch_size, config.qualities, config.continuous_quality,
            seed=config.seed + self.step, rank=self.rank,
        )
        self.loader = DataLoader(stream, batch_size=None, num_workers=config.workers,
                                 persistent_workers=config.workers > 0, pin_memory=self.device.type == "cuda")

    def _initial_model(self) -> QGAC:
        config = self.config
        if config.init and config.init.endswith(".pt"):
            state = torch.load(config.init, map_location="cpu", weights_only=True)
            model = QGAC(**state["model_config"])
            model.load_state_dict(state["model"])
            return model
        if config.init:
            from qgac_transforms.hub import load_model  # noqa: PLC0415 - only stages 2 and 3 need it

            return load_model(config.init)
        overrides: dict[str, Any] = {}
        if config.stats:
            stats = json.loads(Path(config.stats).read_text())
            overrides = {"coefficient_mean": stats["mean"], "coefficient_std": stats["std"]}
        return build_model(config.model, **overrides)

    # ----------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "model_config": self.model.config,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "config": asdict(self.config),
        }

    def save_checkpoint(self) -> None:
        if not self.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.checkpoint_path.with_suffix(".tmp")
        torch.save(self._state(), temporary)
        os.replace(temporary, self.checkpoint_path)
        log.info("checkpoint step %d -> %s", self.step, self.checkpoint_path)

    def _load_checkpoint(self) -> None:
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.elapsed, self.history = state["step"], state["elapsed"], state["history"]
        torch.set_rng_state(state["torch_rng"].cpu())
        random.setstate(_as_random_state(state["python_rng"]))
        log.info("resumed %s at step %d", self.checkpoint_path, self.step)

    # ----------------------------------------------------------------- loop
    def _request_stop(self, signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping after this step", signum)
        self.stop_requested = True

    def train(self) -> None:
        self.build()
        config = self.config
        previous = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        last_save = time.monotonic()
        start_step, start_elapsed = self.step, self.elapsed
        progress = tqdm(total=config.steps, initial=self.step, disable=not self.is_main, dynamic_ncols=True,
                        desc=f"stage {config.stage}")
        batches = iter(self.loader)
        tick = time.monotonic()
        try:
            while self.step < config.steps and not self.stop_requested:
                batch = next(batches).to(self.device)
                output, target = predict_pixels(self.network, batch, config.stage)
                loss = regression_loss(output, target, config.ssim_weight)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                now = time.monotonic()
                self.elapsed += now - tick
                tick = now
                rate = (self.step - start_step) * config.batch_size / max(self.elapsed - start_elapsed, 1e-9)
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.1e}",
                                     patches_per_s=f"{rate:.1f}")
                if self.is_main and self.validation and self.step % config.validate_every == 0:
                    self._validate()
                if now - last_save > config.checkpoint_minutes * 60:
                    self.save_checkpoint()
                    last_save = time.monotonic()
        finally:
            progress.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.save_checkpoint()
            if self.distributed:
                dist.barrier()

    def _validate(self) -> None:
        gains = validate(self.model, self.validation, self.config.stage, self.device)
        record = {"step": self.step, "elapsed_s": round(self.elapsed, 1), **{k: round(v, 4) for k, v in gains.items()}}
        self.history.append(record)
        log.info("validation %s", json.dumps(record))


def _as_random_state(state: Any) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def configure_logging(run_dir: Path, rank: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.FileHandler(run_dir / "train.log")] if rank == 0 else []
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", handlers=handlers or None, force=True)
