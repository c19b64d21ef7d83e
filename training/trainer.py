"""The training loop: stages, checkpoints, validation, logging, DistributedDataParallel."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import random
import signal
import time
import types
import typing
import weakref
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from tqdm import tqdm

from qgac_transforms.codec import coefficients_to_pixels
from qgac_transforms.color import rgb_to_ycbcr
from qgac_transforms.configs import CONFIGS, build_model, create_model
from qgac_transforms.layers import NAFBlock, ResidualBlock
from qgac_transforms.metrics import psnr
from qgac_transforms.model import QGAC

from .checkpoints import plan_parts, read_checkpoint, write_checkpoint
from .data import (
    DEFAULT_QUALITIES,
    DEFAULT_SUBSAMPLING_WEIGHTS,
    Batch,
    DatasetError,
    PatchStream,
    split_images,
    training_images,
    validation_batches,
)
from .lineage import INIT_LINEAGE_KEY, STAGES, as_raw, checkpoint_lineage, read_lineage
from .losses import (
    DCGANDiscriminator,
    TextureLoss,
    gan_generator_loss,
    load_texture_network,
    regression_loss,
    relativistic_discriminator_loss,
)
from .stats import statistics_overrides

#: The paper's schedule of each stage (section 4.1), used for options left unset.
PAPER_SCHEDULES: dict[str, dict[str, Any]] = {
    "y": dict(steps=400_000, lr=1e-3, schedule="step"),  # halved every 100k batches
    "color": dict(steps=100_000, lr=1e-3, schedule="cosine"),  # to 1e-6
    "gan": dict(steps=100_000, lr=1e-4, schedule="cosine"),  # to 1e-6
}
#: Order of the shares in ``TrainConfig.subsampling_weights``.
SUBSAMPLING_ORDER = tuple(DEFAULT_SUBSAMPLING_WEIGHTS)
log = logging.getLogger("training")


@dataclass
class TrainConfig:
    """Everything a run needs; every field is a command-line flag and a config-file key."""

    data: str = ""  # a folder of training images (required)
    run: str = "runs/small"
    stage: str = "y"
    model: str = "small"
    model_options: dict[str, Any] = field(default_factory=dict)  # constructor overrides of the named configuration
    init: str | None = None  # checkpoint (.pt) or exported folder to start from (stages color, gan)
    init_color: str | None = None  # checkpoint or folder whose colour network to start from instead (same widths)
    train_blocks_from: int | None = None  # stage y: train only the BlockNet body blocks from this index on
    # (those that a deeper block_depth added to init), the rest frozen
    stats: str | None = None  # JSON from `python -m training stats`, or a model folder whose statistics to reuse
    steps: int | None = None  # total batches of the stage (None: the paper's, see PAPER_SCHEDULES)
    stop_at: int | None = None  # end this invocation at this step (checkpointed), to train in slices
    max_minutes: float | None = None  # training-time budget of the stage; the cosine schedule follows it
    session_minutes: float | None = None  # end this invocation after this much training time (checkpointed)
    batch_size: int = 16
    patch_size: int = 64
    qualities: list[int] = field(default_factory=lambda: list(DEFAULT_QUALITIES))
    continuous_quality: bool = False  # draw integers in [min, max] of qualities instead
    subsampling_weights: list[float] = field(default_factory=lambda: list(DEFAULT_SUBSAMPLING_WEIGHTS.values()))
    lr: float | None = None  # None: the paper's for the stage
    min_lr: float = 1e-6
    schedule: str | None = None  # "step" (halve every lr_step) or "cosine" (lr -> min_lr); None: the paper's
    lr_step: int = 100_000
    ssim_weight: float = 0.05  # lambda of Eq. 1
    adversarial_weight: float = 5e-3  # gamma of Eq. 3
    l1_weight: float = 1e-2  # nu of Eq. 3
    texture_network: str = "training.losses:vgg16_conv5_3"  # "module:callable" -> nn.Module
    texture_weights: str | None = None  # safetensors state dict of the texture network
    texture_layer: str | None = None  # node of the texture network whose output is compared (None: its output)
    workers: int = 2  # loader processes on the CPU; on a GPU the batches are made on it, in the main process
    ema_decay: float = 0.999  # exponential moving average of the weights (validated, exported); 0: none
    precision: str = "auto"  # "fp32", "bf16" (autocast, fp32 master weights); auto: bf16 on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the training network (fused kernels; the first steps pay for compiling)
    validation_images: int = 6
    validation_data: str | None = None  # a folder of held-out photos; then every photo of `data` is trained on
    validate_every: int = 500
    checkpoint_minutes: float = 5.0
    checkpoint_part_mb: float | None = None  # split checkpoints into files of at most this size (see checkpoints.py)
    checkpoint_optimizer: bool = True  # false: leave Adam's moments out (half the size; a resumed run restarts them)
    checkpoint_half: bool = False  # weights and moving average in float16 (for models too large to send back)
    keep_best: bool | None = None  # also keep best-<stage>.pt: the moving average at its best validation so far,
    # the starting weights (step 0) included, so that a stage that only makes things worse exports what it started
    # from. None: for stages y and color; not gan, which trades PSNR (what validation scores) for texture
    seed: int = 0
    device: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        _check_types(self)
        if not self.data:
            raise ValueError("no training data: give --data, a folder of training images")
        if self.model not in CONFIGS:
            raise ValueError(f"unknown model configuration {self.model!r}; choose one of {', '.join(sorted(CONFIGS))}")
        for name in ("batch_size", "validate_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.patch_size < 16 or self.patch_size % 16:
            raise ValueError(f"patch_size must be a positive multiple of 16 (whole 4:2:0 MCUs), got {self.patch_size}")
        if self.train_blocks_from is not None and self.train_blocks_from < 0:
            raise ValueError(f"train_blocks_from must be a block index (0 or more), got {self.train_blocks_from}")
        if self.checkpoint_part_mb is not None and self.checkpoint_part_mb <= 0:
            raise ValueError(f"checkpoint_part_mb must be positive, got {self.checkpoint_part_mb}")
        if self.device is not None:
            try:
                torch.device(self.device)
            except RuntimeError as error:
                raise ValueError(f"device {self.device!r}: {error}") from error
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        for name, value in PAPER_SCHEDULES[self.stage].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.schedule not in ("step", "cosine"):
            raise ValueError(f"schedule must be 'step' or 'cosine', got {self.schedule!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.max_minutes is not None and (self.max_minutes <= 0 or self.schedule != "cosine"):
            raise ValueError("max_minutes must be positive and needs the cosine schedule "
                             f"(got {self.max_minutes} with {self.schedule!r})")
        if self.keep_best is None:
            self.keep_best = self.stage != "gan"
        if self.stage != "y" and not self.init:
            raise ValueError(f"stage {self.stage!r} starts from the previous stage's weights: give --init "
                             "(a checkpoint .pt or an exported model folder)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        weights = self.subsampling_weights
        if len(weights) != len(SUBSAMPLING_ORDER) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"subsampling_weights are {len(SUBSAMPLING_ORDER)} shares, not negative and not all "
                             f"zero ({', '.join(SUBSAMPLING_ORDER)}), got {weights}")

    @property
    def subsampling_shares(self) -> dict[str, float]:
        """The chroma subsampling shares by name (``"4:2:0"``, ...), as :class:`~training.data.PatchStream` takes them."""
        return {name: share for name, share in zip(SUBSAMPLING_ORDER, self.subsampling_weights) if share > 0}


def _check_configuration(model: QGAC, config: TrainConfig) -> None:
    """Refuse an ``init`` of another configuration than ``model`` (with ``model_options``)
    names: the run's records, and so its model card, would name the wrong one."""
    defaults = {name: parameter.default for name, parameter in inspect.signature(QGAC).parameters.items()}
    expected = {**defaults, **CONFIGS[config.model], **config.model_options}
    # statistics come with the weights, and a Y-only export (color=False) is still its configuration
    differ = sorted(key for key, value in expected.items()
                    if not key.startswith("coefficient_") and key != "color" and model.config.get(key) != value)
    if differ:
        found = ", ".join(f"{key}={model.config.get(key)!r}" for key in differ)
        raise ValueError(f"--init {config.init} is not configuration {config.model!r} with model_options "
                         f"{config.model_options} ({found}): give the model it was trained as")


def _check_types(config: TrainConfig) -> None:
    """Refuse a field whose value has the wrong JSON type (``"steps": "ten"`` in a config file)."""
    hints = typing.get_type_hints(TrainConfig)
    for option in fields(config):
        value = getattr(config, option.name)
        if not _fits(value, hints[option.name]):
            raise ValueError(f"option {option.name}: expected {_type_name(hints[option.name])}, got {value!r}")


def _fits(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, member) for member in typing.get_args(hint))
    if hint is type(None):
        return value is None
    expected = typing.get_origin(hint) or hint
    if expected is float:
        expected = (int, float)
    return isinstance(value, expected) and (expected is bool or not isinstance(value, bool))


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(member) for member in typing.get_args(hint))
    names = {type(None): "null", list: "a list", dict: "a JSON object"}
    expected = typing.get_origin(hint) or hint
    return names.get(expected, expected.__name__)


@dataclass(frozen=True)
class Process:
    """This process's place in a run: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_process(config: TrainConfig) -> Process:
    """Threads, device and (under ``torchrun``) the process group, from the config and environment."""
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.device:
        device = torch.device(config.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    else:
        device = torch.device("cpu")
    if device.type == "cuda":
        # TF32 where the GPU has it: the regression targets are far coarser than its 10-bit mantissa.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Process(rank, world_size, device)


def cosine_rate(start: float, end: float, progress: float) -> float:
    """The learning rate of cosine annealing from ``start`` to ``end`` at ``progress`` in [0, 1]."""
    rate = end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return min(max(rate, min(start, end)), max(start, end))  # no rounding past either end


def stage_parameters(model: QGAC, stage: str, train_blocks_from: int | None = None) -> list[nn.Parameter]:
    """Stage 1 trains the Y network; stage 2 the colour network with Y frozen; GAN both.
    ``train_blocks_from`` narrows stage y to the BlockNet body blocks from that index on (the
    blocks a grown model added), everything else frozen as it came."""
    model.requires_grad_(False)
    trained: nn.Module = {"y": model.y_network, "color": model.color_network, "gan": model}[stage]
    if train_blocks_from is None:
        trained.requires_grad_(True)
    else:
        blocks = [block for net in (model.y_network.block1, model.y_network.block2)
                  if isinstance(net.body, nn.Sequential) for block in list(net.body)[train_blocks_from:]]
        if stage != "y" or not blocks:
            raise ValueError(f"train_blocks_from={train_blocks_from} names no BlockNet body blocks of stage {stage!r} "
                             f"(block_depth {model.config.get('block_depth', 3)})")
        for block in blocks:
            block.requires_grad_(True)
    return [p for p in trained.parameters() if p.requires_grad]


def load_qgac(source: str | Path) -> QGAC:
    """A QGAC model from a training checkpoint (``*.pt``) or an exported folder or Hub id."""
    if str(source).endswith(".pt"):
        state = read_checkpoint(source)
        model = QGAC(**state["model_config"])
        model.load_state_dict(state.get("ema") or state["model"])  # a run's product is its moving average
        return model
    return create_model(os.fspath(source), pretrained=True)


def with_options(model: QGAC, options: dict[str, Any], source: str | Path) -> QGAC:
    """``model`` (loaded from ``source``) rebuilt with the constructor ``options`` changed and
    its weights kept, for options that keep every weight's name and shape (a colour stage that
    moves the model it starts from to ``chroma_upsampling="fancy"``, for one), or that deepen a
    residual or NAFNet BlockNet body: a larger ``block_depth`` appends blocks that start as the
    identity, so the deeper model computes what ``model`` did and training starts from there.
    The statistics come with the weights, so options cannot set them."""
    statistics = sorted(key for key in options if key.startswith("coefficient_"))
    if statistics:
        raise ValueError(f"model_options {statistics}: a run that starts from {source} keeps its statistics")
    try:
        rebuilt = QGAC(**{**model.config, **options})
    except (TypeError, ValueError) as error:
        raise ValueError(f"model_options {options} do not fit {source}: {error}") from error
    try:
        missing, unexpected = rebuilt.load_state_dict(model.state_dict(), strict=False)
        appended = _appended_blocks(rebuilt, model)
        if unexpected or set(missing) != {name for name, _ in appended for name in _state_names(name, rebuilt)}:
            raise RuntimeError(f"missing {missing}, unexpected {unexpected}")
    except RuntimeError as error:
        raise ValueError(f"model_options {options} change the weights (their names or shapes) of {source}; such "
                         "options need a run that starts from scratch (no init), except a deeper residual or "
                         "NAFNet body") from error
    for _, block in appended:
        start_as_identity(block)
    return rebuilt


def _appended_blocks(deeper: QGAC, model: QGAC) -> list[tuple[str, nn.Module]]:
    """The (name, module) of each BlockNet body block of ``deeper`` past ``model``'s depth."""
    start = model.config.get("block_depth", 3)
    if deeper.config.get("block_depth", 3) <= start or deeper.config.get("block_body", "rrdb") == "rrdb":
        return []
    return [(f"y_network.{net}.body.{index}", block)
            for net in ("block1", "block2")
            for index, block in enumerate(getattr(deeper.y_network, net).body) if index >= start]


def _state_names(prefix: str, model: nn.Module) -> list[str]:
    return [name for name in model.state_dict() if name.startswith(prefix + ".")]


def start_as_identity(block: nn.Module) -> None:
    """Make a fresh residual block the identity: its branch's last convolution is zeroed, and
    its first still random, so the branch learns from the first step. (A NAFNet block starts
    as the identity already: its branch scales start at zero.)"""
    if isinstance(block, ResidualBlock):
        nn.init.zeros_(block.body[-1].weight)
        nn.init.zeros_(block.body[-1].bias)
    elif not isinstance(block, NAFBlock):
        raise TypeError(f"cannot start a {type(block).__name__} as the identity")


#: Checkpoint key of :func:`init_digest` of the weights a run started from.
INIT_DIGEST_KEY = "init_digest"


def init_digest(source: str | Path) -> str:
    """:func:`weights_digest` of the model :func:`load_qgac` gives for ``source``."""
    return weights_digest(load_qgac(source))


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of a model's weights (names, types, shapes and values)."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(f"{key}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def predict_pixels(model: nn.Module, batch: Batch, stage: str, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model on a batch and return (output pixels, target pixels), unclamped, in float32.

    Stage ``y`` sees only the Y plane (the grayscale path of ``QGAC.forward``); the
    other stages decode the corrected Y, Cb, Cr to RGB. Going through ``model(...)``
    keeps DistributedDataParallel's gradient synchronisation in the loop. ``bf16`` runs
    the network under autocast; the DCTs inside it, the decoding and the loss stay float32.
    """
    height, width = batch.pixels.shape[-2:]
    with torch.autocast(batch.y.device.type, dtype=torch.bfloat16, enabled=bf16):
        if stage == "y":
            corrected = model(batch.y, batch.tables)
        else:
            corrected = model(batch.y, batch.tables, batch.chroma, batch.factor)
    corrected = corrected.float()
    if stage == "y":
        output = coefficients_to_pixels([corrected[:, 0]], height, width, clamp=False)
        return output, rgb_to_ycbcr(batch.pixels)[:, :1]
    return coefficients_to_pixels(list(corrected.unbind(1)), height, width, clamp=False), batch.pixels


def jpeg_pixels(batch: Batch, stage: str) -> torch.Tensor:
    """What a decoder shows for the batch's JPEGs (the baseline the model must beat)."""
    height, width = batch.pixels.shape[-2:]
    planes = [batch.y[:, 0]] if stage == "y" else [batch.y[:, 0], batch.chroma[:, 0], batch.chroma[:, 1]]
    return coefficients_to_pixels(planes, height, width, batch.factor)


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


def moving_average(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights and buffers.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the
    average follows a freshly initialised network closely at first.
    """
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        n = int(updates)
        weight = 1.0 - min(decay, (1 + n) / (10 + n))
        floating = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floating:
            torch._foreach_lerp_([a for a, _ in floating], [c for _, c in floating], weight)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def _leave_signals_to_main(_worker_id: int) -> None:
    """Loader workers ignore SIGINT/SIGTERM: the main process stops after its step and ends them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _end_workers(batches: Any) -> None:
    """End a loader iterator's worker processes now. An error's traceback keeps the iterator
    alive until the interpreter exits, whose clean-up would then stop the workers with
    SIGTERM, which they ignore, and wait for them forever. (What the iterator's ``__del__``
    does; a single-process iterator has no workers.)"""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


class Trainer:
    """One resumable training run of one stage; under ``torchrun``, one process of it."""

    def __init__(self, config: TrainConfig, process: Process | None = None) -> None:
        self.config = config
        process = process or setup_process(config)
        self.rank, self.world_size, self.device = process.rank, process.world_size, process.device
        self.distributed, self.is_main = process.distributed, process.is_main
        self.bf16 = config.precision == "bf16" or (config.precision == "auto" and self.device.type == "cuda")
        self.run_dir = Path(config.run)
        self.checkpoint_path = self.run_dir / f"checkpoint-{config.stage}.pt"
        self.best_path = self.run_dir / f"best-{config.stage}.pt"
        self.stop_requested = False
        self.built = False

    # ----------------------------------------------------------------- setup
    def build(self) -> None:
        """Model, optimizers, data and validation set; the run's checkpoint if it has one."""
        config = self.config
        if config.validation_data:
            train_paths, held_out = training_images(config.data), training_images(config.validation_data)
        else:
            train_paths, held_out = split_images(training_images(config.data), config.validation_images)
        torch.manual_seed(config.seed + self.rank)
        random.seed(config.seed + self.rank)
        resume = read_checkpoint(self.checkpoint_path, map_location=self.device) if self.checkpoint_path.exists() else None
        # resuming needs no init: the checkpoint rebuilds the model (and the init may not have travelled with it)
        if resume:
            model, self.init_weights_digest = QGAC(**resume["model_config"]), resume.get(INIT_DIGEST_KEY)
        else:
            model, self.init_weights_digest = self._initial_model()
        self.model = model.to(self.device).train()
        self.init_lineage = resume.get(INIT_LINEAGE_KEY) if resume else self._init_lineage()
        self.held_out = sorted(path.name for path in held_out)
        self._check_held_out({path.name for path in train_paths}, resume)
        if config.stage != "y" and self.model.color_network is None:
            raise ValueError(f"stage {config.stage!r} trains the colour network, which {config.init} does not have")
        self.parameters = stage_parameters(self.model, config.stage, config.train_blocks_from)
        self.optimizer = torch.optim.Adam(self.parameters, lr=config.lr)
        self.discriminator: DCGANDiscriminator | None = None
        if config.stage == "gan":
            self.discriminator = DCGANDiscriminator().to(self.device)
            self.discriminator_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr)
            self.texture = TextureLoss(load_texture_network(config.texture_network, config.texture_weights),
                                       layer=config.texture_layer)
            self.texture.to(self.device)
            if config.texture_weights is None and self.is_main:
                log.warning("texture network %s has no trained weights (--texture-weights): the texture "
                            "term is only a placeholder", config.texture_network)
        self.ema = moving_average(self.model, config.ema_decay) if config.ema_decay and self.is_main else None
        self.step = 0
        self.elapsed = 0.0
        self.history: list[dict[str, Any]] = []
        if resume is not None:
            self._load_checkpoint(resume)
        # best-<stage>.pt may hold a validation newer than the checkpoint (a run killed in between)
        kept = read_checkpoint(self.best_path, mmap=True)["history"][-1:] if resume and self.best_path.exists() else []
        self.best_score = max((_score(record) for record in [*self.history, *kept]), default=-math.inf)
        # after the checkpoint, so that the first rate is the resumed step's
        self.scheduler = self._schedule(self.optimizer)
        if self.discriminator is not None:
            self.discriminator_scheduler = self._schedule(self.discriminator_optimizer)
        self.network: nn.Module = self.model
        self.discriminator_network: nn.Module | None = self.discriminator
        if self.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # The learned chroma upsampling layers a batch uses depend on its subsampling,
            # which differs between steps and processes: let DDP look for unused ones.
            self.network = DistributedDataParallel(self.model, device_ids=device_ids,
                                                   find_unused_parameters=config.stage != "y")
            if self.discriminator is not None:
                self.discriminator_network = DistributedDataParallel(self.discriminator, device_ids=device_ids)
        if config.compile:
            # only the training steps go through the compiled network; validation, the moving
            # average and checkpoints use the model itself, whose parameters it shares
            self.network = torch.compile(self.network)
        self.validation = validation_batches(held_out, [10, 50]) if self.is_main and held_out else []
        on_gpu = self.device.type == "cuda"
        self.stream = PatchStream(
            train_paths, config.patch_size, config.batch_size, config.qualities, config.continuous_quality,
            config.subsampling_shares, seed=config.seed, rank=self.rank, start_step=self.step,
            device=self.device if on_gpu else "cpu",
        )
        workers = 0 if on_gpu else config.workers  # a GPU makes its own batches faster than any worker
        # not persistent: the workers end with train()'s iterator, before the interpreter's exit joins them
        self.loader = DataLoader(self.stream, batch_size=None, num_workers=workers,
                                 worker_init_fn=_leave_signals_to_main if workers > 0 else None)
        if self.is_main and config.checkpoint_part_mb is not None:  # refused now, not at the first checkpoint
            plan_parts(self._state(), self.checkpoint_path, config.checkpoint_part_mb)
        if self.is_main:  # last: a run refused above leaves no files behind
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / f"config-{config.stage}.json").write_text(json.dumps(asdict(config), indent=1) + "\n")
        self.built = True

    @property
    def averaged_model(self) -> QGAC:
        """The weights a run validates and exports: the moving average where there is one."""
        return self.ema.module if self.ema is not None else self.model

    def _check_held_out(self, trained_on: set[str], resume: dict[str, Any] | None) -> None:
        """Refuse to train on a photo that this run, or the weights it starts from, validated on:
        held-out gains are only worth comparing on photos no stage has trained on. (A run that
        holds nothing out, such as ``training bench``'s, decides nothing on held-out photos.)"""
        config = self.config
        both = sorted(trained_on.intersection(self.held_out))
        if both:
            raise DatasetError(config.validation_data or config.data, f"{len(both)} of its held-out photos are also "
                               f"training photos ({', '.join(both[:3])}): give validation data that --data lacks")
        validated = ((self.init_lineage or [{}])[-1].get("held_out") or []) if self.held_out else []
        both = sorted(trained_on.intersection(validated))
        if both:
            raise DatasetError(config.data, f"holds {len(both)} photos that {config.init} was validated on "
                               f"({', '.join(both[:3])}): hold them out (validation_data) rather than train on them")
        if resume is not None and resume.get("held_out") not in (None, self.held_out):
            raise DatasetError(config.validation_data or config.data, f"{self.checkpoint_path} validated on other "
                               "photos than this data holds out now (a folder that gained or lost photos?): resume "
                               "it with the data it started with, or start a new run folder")

    def _initial_model(self) -> tuple[QGAC, str | None]:
        """The model a new run starts from, and the digest of its ``init`` weights (if any)."""
        model = self._initial_weights()
        digest = weights_digest(model) if self.config.init else None
        if self.config.init_color:
            donor = load_qgac(self.config.init_color)
            if model.color_network is None or donor.color_network is None:
                raise ValueError(f"init_color: {self.config.init_color} and the model both need a colour network")
            try:
                model.color_network.load_state_dict(donor.color_network.state_dict())
            except RuntimeError as error:
                raise ValueError(f"init_color: the colour network of {self.config.init_color} does not fit "
                                 f"this model's ({error})") from error
        return model, digest

    def _init_lineage(self) -> list[dict[str, Any]] | None:
        """The records of the exported folder or checkpoint this run starts from, kept in its
        checkpoints: by the time the run is exported, the folder may hold newer weights, or the
        checkpoint's run may have trained further."""
        init = self.config.init
        if not init or not (Path(init).is_dir() or (init.endswith(".pt") and Path(init).is_file())):
            return None
        try:
            records = read_lineage(init) if Path(init).is_dir() else checkpoint_lineage(init)
        except (ValueError, KeyError) as error:  # found now rather than when the finished run is exported
            raise ValueError(f"--init {init}: its training records cannot be read ({error!r})") from error
        return None if records is None else as_raw(records)

    def _initial_weights(self) -> QGAC:
        config = self.config
        if config.init:
            model = load_qgac(config.init)
            model = with_options(model, config.model_options, config.init) if config.model_options else model
            _check_configuration(model, config)
            if config.stats and self.is_main:
                log.warning("--stats %s has no effect: a run that starts from --init %s keeps its statistics",
                            config.stats, config.init)
            return model
        overrides: dict[str, Any] = {}
        if config.stats:
            overrides = statistics_overrides(config.stats)
        elif self.is_main:
            log.warning("no --stats: the coefficients are normalized with mean 0 and standard deviation 1; "
                        "run `python -m training stats` and give its JSON to train on normalized inputs")
        try:
            return build_model(config.model, **config.model_options, **overrides)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"model {config.model!r} with model_options {config.model_options}: {error}") from error

    # ----------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        state = {
            "model": self._weights(self.model),
            "model_config": self.model.config,
            "optimizer": self.optimizer.state_dict() if self.config.checkpoint_optimizer else None,
            "step": self.step,
            "elapsed": self.elapsed,
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "config": asdict(self.config),
            INIT_LINEAGE_KEY: self.init_lineage,
            INIT_DIGEST_KEY: self.init_weights_digest,
            "held_out": self.held_out,
        }
        if self.ema is not None:
            state["ema"] = self._weights(self.ema.module)
            state["ema_updates"] = int(self.ema.n_averaged)
        if self.discriminator is not None:
            state["discriminator"] = self.discriminator.state_dict()
            state["discriminator_optimizer"] = self.discriminator_optimizer.state_dict()
        return state

    def _weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``model``'s state dict as checkpointed: floating tensors in float16 with ``checkpoint_half``."""
        state = model.state_dict()
        if not self.config.checkpoint_half:
            return state
        return {key: value.half() if value.is_floating_point() else value for key, value in state.items()}

    def save_checkpoint(self) -> None:
        """Write the run's state atomically (a temporary file renamed over the last checkpoint)."""
        if not self.is_main:
            return
        write_checkpoint(self._state(), self.checkpoint_path, self.config.checkpoint_part_mb)
        log.info("checkpoint step %d -> %s", self.step, self.checkpoint_path)

    def _load_checkpoint(self, state: dict[str, Any]) -> None:
        optional = {"ema", "ema_updates", INIT_LINEAGE_KEY, INIT_DIGEST_KEY, "held_out"}  # not in older checkpoints
        missing = sorted(set(self._state()) - set(state) - optional)
        if missing:
            raise ValueError(f"{self.checkpoint_path} cannot be resumed: it has no {', '.join(missing)} (a copy "
                             "of the weights alone?); start a new run folder with --init pointing at it")
        trained_with = state["config"].get("schedule")
        if trained_with != self.config.schedule:
            raise ValueError(f"{self.checkpoint_path} was trained with the {trained_with!r} schedule, not "
                             f"{self.config.schedule!r}: keep it, or start a new run folder")
        self._check_same_training(state)
        self.model.load_state_dict(state["model"])
        if state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        else:
            log.warning("%s was saved without its optimizer state: Adam's moments start afresh", self.checkpoint_path)
        if self.ema is not None:
            self.ema.module.load_state_dict(state.get("ema", state["model"]))
            self.ema.n_averaged.fill_(state.get("ema_updates", 0))
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
        self.step, self.elapsed, self.history = state["step"], state["elapsed"], state["history"]
        torch.set_rng_state(state["torch_rng"].cpu())
        random.setstate(_as_random_state(state["python_rng"]))
        log.info("resumed %s at step %d", self.checkpoint_path, self.step)

    def _check_same_training(self, state: dict[str, Any]) -> None:
        """Refuse to resume a checkpoint of another network; warn when ``init`` now holds other
        weights than the run started from (a folder replaced by newer weights, a ``best-y.pt``
        trained further): the run goes on with its own, and its records say so."""
        config, trained = self.config, state["config"]
        asked, found = (config.model, config.model_options), (trained.get("model"), trained.get("model_options", {}))
        if asked != found:
            raise ValueError(f"{self.checkpoint_path} trains model {found[0]!r} with options {found[1]}, not "
                             f"{asked[0]!r} with {asked[1]}: resume it as it was, or start a new run folder")
        if trained.get("train_blocks_from") != config.train_blocks_from:
            raise ValueError(f"{self.checkpoint_path} trains with train_blocks_from={trained.get('train_blocks_from')}, "
                             f"not {config.train_blocks_from}: resume it as it was, or start a new run folder")
        recorded = state.get(INIT_DIGEST_KEY)
        if recorded and config.init and Path(config.init).exists() and init_digest(config.init) != recorded:
            log.warning("%s started from other weights than %s holds now, and goes on with its own: to start "
                        "from the new ones, move the checkpoint aside", self.checkpoint_path, config.init)
        changed = {name: trained[name] for name in ("batch_size", "patch_size", "qualities", "seed")
                   if name in trained and trained[name] != getattr(config, name)}
        if changed:  # allowed (a GPU call may take larger batches), but the records keep only the last values
            log.warning("%s goes on with other data options than it was trained with so far (%s): its records "
                        "and model card will show only the new ones", self.checkpoint_path,
                        ", ".join(f"{name} {value} -> {getattr(config, name)}" for name, value in changed.items()))

    # ----------------------------------------------------------------- steps
    def regression_step(self, batch: Batch) -> dict[str, float]:
        """One Adam step on Eq. 1 (stages y and color)."""
        output, target = predict_pixels(self.network, batch, self.config.stage, self.bf16)
        loss = regression_loss(output, target, self.config.ssim_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return {"loss": loss.item()}

    def gan_step(self, batch: Batch) -> dict[str, float]:
        """One generator step on Eq. 3, then one discriminator step on the RaGAN loss."""
        config = self.config
        assert self.discriminator is not None and self.discriminator_network is not None
        output, target = predict_pixels(self.network, batch, "gan", self.bf16)
        # The generator step goes through the bare discriminator, frozen: only the
        # discriminator's own step below takes part in its gradient synchronisation.
        self.discriminator.requires_grad_(False)
        with torch.no_grad():
            real_logits = self.discriminator(target)
        fake_logits = self.discriminator(output)
        loss = gan_generator_loss(output, target, real_logits, fake_logits, self.texture,
                                  config.adversarial_weight, config.l1_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.discriminator.requires_grad_(True)
        real_logits = self.discriminator_network(target)
        fake_logits = self.discriminator_network(output.detach())
        discriminator_loss = relativistic_discriminator_loss(real_logits, fake_logits)
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        discriminator_loss.backward()
        self.discriminator_optimizer.step()
        return {"loss": loss.item(), "d_loss": discriminator_loss.item()}

    def _schedulers(self) -> list[torch.optim.lr_scheduler.LRScheduler]:
        return [self.scheduler] + ([self.discriminator_scheduler] if self.discriminator is not None else [])

    # ----------------------------------------------------------------- loop
    def _request_stop(self, signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping after this step", signum)
        self.stop_requested = True

    def _progress(self) -> float:
        """How far the stage is, in [0, 1]: by steps, or by time when that is further along."""
        progress = self.step / self.config.steps
        if self.config.max_minutes is not None:
            progress = max(progress, self.elapsed / (60 * self.config.max_minutes))
        return min(progress, 1.0)

    def learning_rate(self) -> float:
        """The rate for the next step, a pure function of the config, the step and the time spent:
        cosine from ``lr`` to ``min_lr`` over :meth:`_progress`, or halved every ``lr_step`` steps.
        A resumed run with another ``steps``, ``max_minutes`` or ``min_lr`` follows them at once."""
        config = self.config
        if config.schedule == "cosine":
            return cosine_rate(config.lr, config.min_lr, self._progress())
        return config.lr * 0.5 ** (self.step // config.lr_step)

    def _schedule(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        for group in optimizer.param_groups:
            group["initial_lr"] = self.config.lr  # the base of the factor, whatever a resumed run was started with
        rate, base = weakref.WeakMethod(self.learning_rate), self.config.lr  # no cycle back to the trainer
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: rate()() / base)

    def _slowest_elapsed(self) -> float:
        elapsed = torch.tensor([self.elapsed], dtype=torch.float64, device=self.device)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        return float(elapsed.item())

    def _should_stop(self) -> bool:
        """A signal or the time budget on any process, or ``stop_at``, stops every process after the same step."""
        stop = self.stop_requested or self._progress() >= 1.0
        if self.distributed:
            flag = torch.tensor([float(stop)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        stop_at, session = self.config.stop_at, self.config.session_minutes
        if session is not None and self.elapsed - self.session_start >= 60 * session:
            stop = True  # every process counts the same (slowest) clock when a budget is set
        return stop or (stop_at is not None and self.step >= stop_at)

    def train(self) -> None:
        """Train until ``steps``, the ``max_minutes`` budget, ``stop_at`` or a signal; always ends with a checkpoint."""
        if not self.built:
            self.build()
        config = self.config
        train_step = self.gan_step if config.stage == "gan" else self.regression_step
        previous = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        last_save = time.monotonic()
        start_step, start_elapsed = self.step, self.elapsed
        self.session_start = self.elapsed
        progress = tqdm(total=None if config.max_minutes else config.steps, initial=self.step,
                        disable=not self.is_main, dynamic_ncols=True, desc=f"stage {config.stage}")
        if self.is_main and self.validation and not self.history:
            self._validate()  # the starting weights' record: the gain a stage adds, and the best to beat
        batches = iter(self.loader)
        tick = time.monotonic()
        try:
            while not self._should_stop():
                losses = train_step(next(batches).to(self.device))
                self.step += 1
                now = time.monotonic()
                self.elapsed += now - tick
                tick = now
                if self.distributed and (config.max_minutes is not None or config.session_minutes is not None):
                    self.elapsed = self._slowest_elapsed()  # one rate and one last step on every process
                for scheduler in self._schedulers():
                    scheduler.step()
                patches = (self.step - start_step) * config.batch_size * self.world_size
                rate = patches / max(self.elapsed - start_elapsed, 1e-9)
                progress.update(1)
                progress.set_postfix(**{k: f"{v:.4f}" for k, v in losses.items()},
                                     lr=f"{self.optimizer.param_groups[0]['lr']:.1e}", patches_per_s=f"{rate:.1f}")
                if self.is_main and self.validation and self.step % config.validate_every == 0:
                    self._validate()
                if now - last_save > config.checkpoint_minutes * 60:
                    self.save_checkpoint()
                    last_save = time.monotonic()
            if (self.is_main and self.validation and not self.stop_requested
                    and (not self.history or self.history[-1]["step"] != self.step)):
                self._validate()  # a finished stage's weights always have a validation record
        finally:
            progress.close()
            _end_workers(batches)
            self.save_checkpoint()  # before the handlers go back, so that a second Ctrl-C cannot cut it short
            for s, handler in previous.items():
                signal.signal(s, handler)
        if self.distributed:
            dist.barrier()
            dist.destroy_process_group()

    def _validate(self) -> None:
        gains = validate(self.averaged_model, self.validation, self.config.stage, self.device)
        record = {"step": self.step, "elapsed_s": round(self.elapsed, 1), **{k: round(v, 4) for k, v in gains.items()}}
        self.history.append(record)
        log.info("validation %s", json.dumps(record))
        if self.config.keep_best and _score(record) > self.best_score:
            self.best_score = _score(record)
            best = {key: value for key, value in self._state().items() if key in BEST_KEYS}
            write_checkpoint({**best, "ema": self._weights(self.averaged_model)}, self.best_path,
                             self.config.checkpoint_part_mb)
            log.info("best validation so far: step %d -> %s", self.step, self.best_path)


#: What ``best-<stage>.pt`` keeps besides the weights: enough to export it and to start a stage from it.
BEST_KEYS = ("model_config", "step", "elapsed", "history", "config", INIT_LINEAGE_KEY, "held_out")


def _score(record: dict[str, Any]) -> float:
    """The mean held-out PSNR gain of a validation record (its ``q<quality>`` entries)."""
    gains = [value for key, value in record.items() if key.startswith("q")]
    return sum(gains) / len(gains) if gains else -math.inf


def _as_random_state(state: Any) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


class _RunLog(logging.FileHandler):
    """``<run>/train.log``, made (folder too) at its first record: a run refused before it
    logs anything leaves no folder and no empty log behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, delay=True)

    def _open(self):  # noqa: ANN202 - the stream FileHandler opens
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def emit(self, record: logging.LogRecord) -> None:
        try:  # FileHandler opens its file outside its own error handling: a log call never raises
            super().emit(record)
        except OSError:
            self.handleError(record)


def open_run_log() -> None:
    """Open ``train.log`` now, where the caller handles ``OSError``: a log that cannot be
    written is refused before training (and no longer logged to) rather than failing at
    every record."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _RunLog) and handler.stream is None:
            try:
                handler.stream = handler._open()
            except OSError:
                root.removeHandler(handler)
                raise


def configure_logging(run_dir: Path, rank: int) -> None:
    """Rank 0 logs to ``<run>/train.log``; the other ranks only report warnings, to stderr."""
    handlers: list[logging.Handler] = [_RunLog(run_dir / "train.log")] if rank == 0 else []
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", handlers=handlers or None, force=True)
