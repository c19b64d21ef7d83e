"""``python -m training bench``: training throughput on the current device, in patches per second.

Two figures for a training configuration: the data path alone (crops, compression and
batch assembly, made where training makes them: on the GPU there, in this process on
the CPU) and whole training steps (data through the run's loader, forward, backward,
Adam, moving average), each the fastest of ``repeats`` timings of ``batches`` batches
(shared machines are noisy). Nothing is written to the run folder.
"""

from __future__ import annotations

import dataclasses
import platform
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from .trainer import TrainConfig, Trainer


def _timed(device: torch.device, work: Callable[[int], Any], first: int, count: int) -> float:
    """Seconds that ``work(k)`` takes for ``k = first .. first + count - 1``, the device synchronised."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    synchronize()
    start = time.perf_counter()
    for k in range(first, first + count):
        work(k)
    synchronize()
    return time.perf_counter() - start


def run_training_bench(config: TrainConfig, batches: int = 20, warmup: int = 3, repeats: int = 3) -> dict[str, Any]:
    """Patches per second of the data path and of whole training steps for ``config``."""
    if batches < 1 or warmup < 0 or repeats < 1:
        raise ValueError(f"batches and repeats must be at least 1 and warmup 0 or more, "
                         f"got {batches}, {repeats} and {warmup}")
    with tempfile.TemporaryDirectory(prefix="qgac-bench-") as run:
        trainer = Trainer(dataclasses.replace(config, run=run, validation_images=0, validation_data=None))
        trainer.build()
        stream = trainer.stream
        _timed(trainer.device, stream.batch, 0, max(warmup, 1))  # loads the photos onto the device
        data_seconds = min(_timed(trainer.device, stream.batch, warmup + r * batches, batches) for r in range(repeats))
        loader = iter(trainer.loader)
        step = trainer.gan_step if config.stage == "gan" else trainer.regression_step
        run_step = lambda _k: step(next(loader).to(trainer.device))  # noqa: E731
        _timed(trainer.device, run_step, 0, warmup)
        step_seconds = min(_timed(trainer.device, run_step, 0, batches) for _ in range(repeats))
    patches = batches * config.batch_size
    device = trainer.device
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "device_type": device.type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": config.model,
        "model_options": config.model_options,
        "stage": config.stage,
        "batch_size": config.batch_size,
        "patch_size": config.patch_size,
        "workers": 0 if device.type == "cuda" else config.workers,
        "precision": "bf16" if trainer.bf16 else "fp32",
        "batches": batches,
        "repeats": repeats,
        "data_patches_per_s": round(patches / data_seconds, 1),
        "step_patches_per_s": round(patches / step_seconds, 1),
    }


def format_bench(report: dict[str, Any]) -> str:
    return (f"{report['model']} stage {report['stage']}, batches of {report['batch_size']} patches of "
            f"{report['patch_size']} x {report['patch_size']} on {report['device']} ({report['device_type']}, "
            f"{report['threads']} threads, {report['workers']} loader workers, {report['precision']}):\n"
            f"  data path       {report['data_patches_per_s']:>10.1f} patches/s\n"
            f"  training steps  {report['step_patches_per_s']:>10.1f} patches/s")
