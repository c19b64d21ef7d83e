"""Run the capacity study: throughput, equal-compute training, then the report.

Every variant is the ``small`` configuration with the constructor overrides of
``variants.json``, trained for stage y with ``study-y.json`` from scratch, one thread.
Training compute is made equal by steps: a short back-to-back run measures each
variant's steps per second, and each then gets the steps that fit ``--minutes`` (the
machine is shared, so a step budget is fairer than a clock budget). The report adds
parameters, multiply-accumulates and the 512 x 512 colour correction time on
``--bench-threads`` threads (fastest of 5) to the last held-out validation::

    python -m training.study.run all           # throughput, train, report
    python -m training.study.run report        # only the report, from the finished runs
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from qgac_transforms.benchmark import machine, median_seconds, synthetic_jpeg
from qgac_transforms.correction import correct, model_inputs
from qgac_transforms.jpeg_io import read_coefficients
from training.trainer import load_qgac

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "study-y.json"
VARIANTS = HERE / "variants.json"
#: Size of the benchmark image (colour, 4:2:0) and the timed runs per variant.
BENCH_SIZE, BENCH_RUNS = 512, 5


def variants() -> dict[str, dict[str, Any]]:
    return json.loads(VARIANTS.read_text())


def train_command(name: str, options: dict[str, Any], run: Path, *extra: str) -> list[str]:
    """The ``python -m training train`` command of one variant."""
    return [
        sys.executable, "-m", "training", "train", "--config-file", str(CONFIG.relative_to(Path.cwd())),
        "--model-options", json.dumps(options), "--run", str(run), *extra,
    ]


def run_training(command: list[str], run: Path) -> None:
    """Run one training command; its progress bar and errors go to ``run/stderr.log``."""
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "stderr.log", "a", encoding="utf-8") as stderr:
        subprocess.run(command, check=True, stderr=stderr)


def checkpoint(run: Path) -> dict[str, Any]:
    return torch.load(run / "checkpoint-y.pt", map_location="cpu", weights_only=True, mmap=True)


def measure_throughput(root: Path, minutes: float) -> dict[str, float]:
    """Steps per second of each variant in a fresh ``minutes``-long run without validation."""
    rates = {}
    for name, options in variants().items():
        run = root / "throughput" / name
        shutil.rmtree(run, ignore_errors=True)
        command = train_command(
            name, options, run, "--steps", "1000000", "--max-minutes", str(minutes), "--validation-images", "0"
        )
        run_training(command, run)
        state = checkpoint(run)
        rates[name] = state["step"] / state["elapsed"]
        print(f"{name}: {state['step']} steps in {state['elapsed']:.1f} s = {rates[name]:.3f} steps/s", flush=True)
    (root / "throughput.json").write_text(json.dumps({"minutes": minutes, "steps_per_s": rates}, indent=2) + "\n")
    return rates


def train(root: Path, minutes: float) -> None:
    """Train each variant for the steps that fit ``minutes`` at its measured rate, one after the other."""
    rates = json.loads((root / "throughput.json").read_text())["steps_per_s"]
    for name, options in variants().items():
        steps = math.floor(rates[name] * 60 * minutes)
        command = train_command(name, options, root / name, "--steps", str(steps))
        print(shlex.join(command), flush=True)
        run_training(command, root / name)


def last_validation(run: Path) -> dict[str, Any]:
    """The last ``validation {...}`` record of the run's ``train.log``."""
    records = [line.split("validation ", 1)[1] for line in (run / "train.log").read_text().splitlines()
               if "validation {" in line]
    return json.loads(records[-1])


def fastest_seconds(function: Any, runs: int = BENCH_RUNS) -> float:
    """Fastest of ``runs`` timings, each after an untimed warm-up (:func:`median_seconds` of one)."""
    return min(median_seconds(function, 1) for _ in range(runs))


def measure(run: Path, threads: int) -> dict[str, Any]:
    """Parameters, multiply-accumulates and 512 x 512 colour timings of the run's model."""
    torch.set_num_threads(threads)
    model = load_qgac(run / "checkpoint-y.pt").eval()
    data = synthetic_jpeg(BENCH_SIZE, BENCH_SIZE)
    inputs = model_inputs(read_coefficients(data), "cpu")

    def network() -> None:
        with torch.inference_mode():
            model(inputs.y, inputs.tables, inputs.chroma, inputs.chroma_factor)

    def y_network() -> None:
        with torch.inference_mode():
            model.correct_y(inputs.y, inputs.tables[:, 0])

    with FlopCounterMode(display=False) as total:
        network()
    with FlopCounterMode(display=False) as luma:
        y_network()
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "y_parameters": sum(p.numel() for p in model.y_network.parameters()),
        "gmacs": total.get_total_flops() / 2e9,
        "y_gmacs": luma.get_total_flops() / 2e9,
        "end_to_end_s": fastest_seconds(lambda: correct(model, read_coefficients(data))),
        "y_network_s": fastest_seconds(y_network),
    }


def report(root: Path, out: Path, threads: int, command: str) -> dict[str, Any]:
    """The study's JSON report: per variant, the last validation and the measurements."""
    throughput = json.loads((root / "throughput.json").read_text())
    config = json.loads(CONFIG.read_text())
    rows = []
    for name, options in variants().items():
        state = checkpoint(root / name)
        validation = last_validation(root / name)
        rows.append({
            "variant": name, "model_options": options, "steps": state["step"],
            "training_s": round(state["elapsed"], 1),
            "throughput_steps_per_s": round(throughput["steps_per_s"][name], 4),
            "gain_q10_db": validation["q10"], "gain_q50_db": validation["q50"], "history": state["history"],
            **measure(root / name, threads),
        })
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "history"}), flush=True)
    result = {
        "command": command, "machine": machine(), "training_config": config,
        "throughput_minutes": throughput["minutes"], "bench": {
            "image": f"{BENCH_SIZE}x{BENCH_SIZE} colour 4:2:0 (qgac_transforms.benchmark.synthetic_jpeg)",
            "threads": threads, "timing": f"fastest of {BENCH_RUNS}, each after an untimed warm-up",
        },
        "variants": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.study.run", description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["throughput", "train", "report", "all"])
    parser.add_argument("--root", type=Path, default=Path("runs/study"), help="folder of the study's runs")
    parser.add_argument("--minutes", type=float, default=20.0, help="training compute per variant")
    parser.add_argument("--throughput-minutes", type=float, default=1.0)
    parser.add_argument("--bench-threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/results/study-capacity.json"))
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "training.study.run", *(sys.argv[1:] if argv is None else argv)])
    if args.phase in ("throughput", "all"):
        measure_throughput(args.root, args.throughput_minutes)
    if args.phase in ("train", "all"):
        train(args.root, args.minutes)
    if args.phase in ("report", "all"):
        report(args.root, args.out, args.bench_threads, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
