"""Speed and memory of reading, the network and correction, on generated images.

Every timing is the fastest of ``repeats`` timed runs after one untimed warm-up call
(first-call allocations and lazy initialisation do not count): on a shared machine the
other load only ever adds time, so the fastest run is the best estimate of the work's own
cost. A run on a GPU waits for the device before and after. torch's intra-op threads are
set explicitly and the report carries a description of the machine.
Peak memory is the RSS high-water mark of a fresh process, so nothing measured before
(or by the image generator) counts towards it.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
from PIL import Image, features
from torch.utils.flop_counter import FlopCounterMode

from .configs import build_model, load_model, weights_label
from .correction import model_inputs
from .evaluation import compress
from .functional import correct_jpeg
from .jpeg_io import read_coefficients
from .options import CorrectionOptions

#: (height, width) of the read benchmark: a small image and a 12-megapixel photo.
READ_SIZES = ((512, 512), (3000, 4000))
NETWORK_CONFIGS = ("tiny", "small", "fast", "base", "medium")
MEMORY_MEGAPIXELS = 24.0
#: How the peak-memory run corrects: the library's default tiles.
MEMORY_OPTIONS = CorrectionOptions()


def machine() -> dict[str, Any]:
    """CPU model, cores, memory and library versions of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        ram = float("nan")
    turbo = features.version("libjpeg_turbo")
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": round(ram, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pillow": PIL.__version__,
        "libjpeg": f"libjpeg-turbo {turbo}" if turbo else f"libjpeg {features.version('jpg')}",
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def synthetic_image(height: int, width: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB image (smooth colour waves, edges and mild noise) of any size, built in uint8."""
    rng = np.random.default_rng(seed)
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    image = np.empty((height, width, 3), dtype=np.uint8)
    for c in range(3):
        fx, fy, phase = rng.uniform(0.005, 0.05, size=2).tolist() + [rng.uniform(0, 6.28)]
        wave = 128 + 70 * np.sin(x * fx + y * fy + phase) + 40 * np.sign(np.sin(x * fy * 0.3 + phase))
        image[..., c] = np.clip(wave, 0, 255).astype(np.uint8)
    image += rng.integers(0, 12, size=(height, width, 1), dtype=np.uint8)
    return Image.fromarray(image, "RGB")


def synthetic_jpeg(height: int, width: int, quality: int = 50, seed: int = 0) -> bytes:
    """JPEG bytes (Pillow, 4:2:0) of :func:`synthetic_image`."""
    return compress(synthetic_image(height, width, seed), quality)


def timing_rule(repeats: int) -> str:
    """How :func:`fastest_seconds` times, in words, for reports."""
    return f"fastest of {repeats} run{'' if repeats == 1 else 's'} after one untimed warm-up"


def fastest_seconds(function: Callable[[], Any], repeats: int, device: str | torch.device = "cpu") -> float:
    """Fastest wall time of ``repeats`` calls of ``function``, after one untimed warm-up call;
    on a CUDA ``device``, each timing waits for that device's queued work."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    device = torch.device(device)

    def wait() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    function()
    timings = []
    for _ in range(repeats):
        wait()
        start = time.perf_counter()
        function()
        wait()
        timings.append(time.perf_counter() - start)
    return min(timings)


def _megapixels(height: int, width: int) -> float:
    return height * width / 1e6


def bench_read(sizes: Sequence[tuple[int, int]] = READ_SIZES, repeats: int = 5) -> list[dict[str, Any]]:
    """:func:`read_coefficients` against Pillow's open + load (pixels) of the same 4:2:0 file."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for height, width in sizes:
            path = Path(folder) / f"{width}x{height}.jpg"
            path.write_bytes(synthetic_jpeg(height, width))

            def pillow_decode() -> None:
                with Image.open(path) as image:
                    image.load()

            coefficients_s = fastest_seconds(lambda: read_coefficients(path), repeats)
            pillow_s = fastest_seconds(pillow_decode, repeats)
            rows.append(
                {
                    "width": width,
                    "height": height,
                    "megapixels": _megapixels(height, width),
                    "subsampling": "4:2:0",
                    "read_coefficients_s": coefficients_s,
                    "pillow_decode_s": pillow_s,
                    "ratio": coefficients_s / pillow_s,
                }
            )
    return rows


def bench_network(
    configs: Sequence[str] = NETWORK_CONFIGS, size: int = 512, repeats: int = 5, device: str = "cpu"
) -> list[dict[str, Any]]:
    """Forward time of freshly initialised networks on one ``size`` x ``size`` colour JPEG's coefficients."""
    inputs = model_inputs(read_coefficients(synthetic_jpeg(size, size)), device)
    rows = []
    for name in configs:
        model = build_model(name).to(device).eval()

        def forward() -> None:
            with torch.inference_mode():
                model(inputs.y, inputs.tables, inputs.chroma, inputs.chroma_factor)

        seconds = fastest_seconds(forward, repeats, device)
        with FlopCounterMode(display=False) as counter:
            forward()
        rows.append(
            {
                "config": name,
                "parameters": sum(p.numel() for p in model.parameters()),
                "gmacs": counter.get_total_flops() / 2e9,  # convolutions and matrix products
                "width": size,
                "height": size,
                "forward_s": seconds,
                "megapixels_per_s": _megapixels(size, size) / seconds,
            }
        )
        del model
    return rows


def bench_end_to_end(weights: str | None = None, size: int = 512, repeats: int = 5, device: str = "cpu") -> dict[str, Any]:
    """Correction of a ``size`` x ``size`` colour JPEG (bytes in, pixels out) with pretrained weights."""
    model = load_model(weights, device=device)
    data = synthetic_jpeg(size, size)

    def run() -> None:
        correct_jpeg(model, read_coefficients(data), tile=None).cpu()

    seconds = fastest_seconds(run, repeats, device)
    return {
        "weights": weights_label(weights),
        "width": size,
        "height": size,
        "seconds": seconds,
        "megapixels_per_s": _megapixels(size, size) / seconds,
    }


def _rss_high_water_mib() -> float:
    """This process's peak RSS. On Linux ``ru_maxrss`` keeps the parent's peak through
    fork and exec, so the kernel's ``VmHWM`` of this process's own memory is read instead."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        pass
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def peak_memory_here(path: str, weights: str | None, threads: int) -> dict[str, Any]:
    """Correct one file in this process and report its RSS high-water marks (run in a fresh process)."""
    torch.set_num_threads(threads)
    model = load_model(weights, device="cpu")
    loaded = _rss_high_water_mib()
    coefficients = read_coefficients(path)
    read = _rss_high_water_mib()
    start = time.perf_counter()  # one run: the memory is measured, not the speed
    correct_jpeg(model, coefficients, MEMORY_OPTIONS)
    return {
        "seconds": time.perf_counter() - start,
        "model_rss_mib": loaded,
        "read_rss_mib": read,
        "peak_rss_mib": _rss_high_water_mib(),
    }


def bench_peak_memory(
    megapixels: float = MEMORY_MEGAPIXELS, weights: str | None = None, threads: int = 1
) -> dict[str, Any]:
    """Peak RSS of correcting a ``megapixels`` colour JPEG (3:2) with pretrained weights, in a fresh process.

    Tiled with the default tile (:data:`MEMORY_OPTIONS`). RSS high-water marks: ``model_rss_mib`` after imports and loading the model,
    ``read_rss_mib`` after reading the coefficients too, ``peak_rss_mib`` after the
    correction (the whole run). ``seconds`` times the correction alone.
    """
    height = max(16, round((megapixels * 1e6 / 1.5) ** 0.5))
    width = max(16, round(height * 1.5))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "large.jpg"
        path.write_bytes(synthetic_jpeg(height, width))
        package_root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        code = (
            "import json, sys; from qgac_transforms.benchmark import peak_memory_here; "
            "print(json.dumps(peak_memory_here(*json.loads(sys.argv[1]))))"
        )
        arguments = json.dumps([str(path), weights, threads])
        child = subprocess.run(
            [sys.executable, "-c", code, arguments], capture_output=True, text=True, env=env, check=False
        )
    if child.returncode != 0:
        raise RuntimeError(f"peak-memory subprocess failed ({child.returncode}): {child.stderr.strip()[-2000:]}")
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    return {
        "weights": weights_label(weights),
        "width": width,
        "height": height,
        "megapixels": _megapixels(height, width),
        "tiled": True,
        "tile": MEMORY_OPTIONS.tile,
        "overlap": MEMORY_OPTIONS.overlap,
        **measured,
        "note": None,  # kept for readers of earlier reports
    }


def run_benchmark(
    *,
    threads: int | None = None,
    repeats: int = 5,
    read_sizes: Sequence[tuple[int, int]] = READ_SIZES,
    configs: Sequence[str] = NETWORK_CONFIGS,
    network_size: int = 512,
    end_to_end_size: int = 512,
    memory_megapixels: float | None = MEMORY_MEGAPIXELS,
    weights: str | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Every benchmark, with ``threads`` intra-op threads (default: all usable cores).

    ``memory_megapixels=None`` skips the peak-memory run. Returns a JSON-ready report.
    """
    description = machine()
    threads = threads or description["usable_cores"] or 1
    torch.set_num_threads(threads)
    report: dict[str, Any] = {"machine": description, "threads": threads, "repeats": repeats, "device": device,
                              "timing": timing_rule(repeats)}
    log("reading coefficients vs Pillow decode")
    report["read"] = bench_read(read_sizes, repeats)
    log(f"network forward: {', '.join(configs)}")
    report["network"] = bench_network(configs, network_size, repeats, device)
    log("end-to-end correction")
    report["end_to_end"] = bench_end_to_end(weights, end_to_end_size, repeats, device)
    if memory_megapixels is not None:
        log(f"peak memory at {memory_megapixels} MP (fresh process)")
        report["peak_memory"] = bench_peak_memory(memory_megapixels, weights, threads)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The benchmark report as plain-text tables."""
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['usable_cores']} usable of {m['logical_cores']} cores, {m['ram_gib']} GiB RAM; "
        f"torch {m['torch']}, Pillow {m['pillow']} ({m['libjpeg']}); torch threads {report['threads']}, "
        f"{report['timing']}, device {report['device']}",
        "",
        "| image (4:2:0) | read_coefficients | Pillow open+load | ratio |",
        "|---|---|---|---|",
    ]
    for r in report["read"]:
        lines.append(
            f"| {r['width']}x{r['height']} ({r['megapixels']:.1f} MP) | {1e3 * r['read_coefficients_s']:.1f} ms "
            f"| {1e3 * r['pillow_decode_s']:.1f} ms | {r['ratio']:.2f} |"
        )
    lines += ["", "| config | parameters | multiply-accumulates | forward | MP/s |", "|---|---|---|---|---|"]
    for r in report["network"]:
        lines.append(
            f"| {r['config']} ({r['width']}x{r['height']}) | {r['parameters'] / 1e6:.2f} M | {r['gmacs']:.1f} G "
            f"| {r['forward_s']:.3f} s | {r['megapixels_per_s']:.3f} |"
        )
    e = report["end_to_end"]
    lines += [
        "",
        f"End to end ({e['weights']}, {e['width']}x{e['height']} colour JPEG bytes to pixels): "
        f"{e['seconds']:.3f} s, {e['megapixels_per_s']:.3f} MP/s",
    ]
    p = report.get("peak_memory")
    if p is not None:
        lines.append(
            f"Peak memory ({p['width']}x{p['height']}, {p['megapixels']:.1f} MP, "
            f"tiled {p['tile']} px, overlap {p['overlap']} px): "
            f"peak RSS {p['peak_rss_mib']:.0f} MiB (after loading the model {p['model_rss_mib']:.0f} MiB, "
            f"after reading the coefficients {p['read_rss_mib']:.0f} MiB); correction {p['seconds']:.1f} s"
        )
    return "\n".join(lines)
