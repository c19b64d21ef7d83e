"""Run the capacity study: equal-time training of each variant, then the report.

Start it with ``training/study/run.sh``, which runs this from a snapshot of one commit,
so that uncommitted edits in the working tree cannot change a study in progress.

Every variant is the ``small`` configuration with the constructor overrides of
``variants.json``, trained for stage y with ``study-y.json`` from scratch, one thread,
for ``--minutes`` of training time each (``max_minutes``: the cosine rate follows the
share of the budget spent), one after the other (``--parallel``: all at once, each on one
of the machine's cores). On the shared machine one-minute
throughput samples, to budget by steps, gave 0.38 to 0.64 steps/s for the same variant
within 15 minutes, while a 20-minute budget averages the load out; the CPU seconds
each training got (trainer and loader together) and the load average are recorded in
``usage.json`` of its run, so the noise can be read off. The report adds parameters,
multiply-accumulates and the 512 x 512 colour correction time on ``--bench-threads``
threads (fastest of 5) to the last held-out validation, and times the untrained
``candidates.json`` too (speed only: configurations not trained here)::

    training/study/run.sh all           # train, report
    training/study/run.sh report        # only the report, from the finished runs
    # the default's candidate against small, side by side for an hour
    training/study/run.sh all --root runs/race --variants training/study/default-race.json \
        --candidates training/study/none.json --minutes 60 --parallel --out docs/results/study-default.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from qgac_transforms.benchmark import fastest_seconds, machine, synthetic_jpeg, timing_rule
from qgac_transforms.configs import build_model
from qgac_transforms.correction import correct, model_inputs
from qgac_transforms.jpeg_io import read_coefficients
from qgac_transforms.model import QGAC
from qgac_transforms.model_card import markdown_table
from training.trainer import load_qgac

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "study-y.json"
VARIANTS = HERE / "variants.json"
CANDIDATES = HERE / "candidates.json"
#: Size of the benchmark image (colour, 4:2:0) and the timed runs per variant.
BENCH_SIZE, BENCH_RUNS = 512, 5


def variants(path: Path) -> dict[str, dict[str, Any]]:
    """Name -> constructor overrides of ``small``."""
    return json.loads(path.read_text())


def train_command(options: dict[str, Any], run: Path, *extra: str) -> list[str]:
    """The ``python -m training train`` command of one variant."""
    return [
        sys.executable, "-m", "training", "train", "--config-file", str(CONFIG.relative_to(Path.cwd())),
        "--model-options", json.dumps(options), "--run", str(run), *extra,
    ]


def run_training(commands: dict[Path, list[str]]) -> None:
    """Run training commands side by side, one per run folder; each one's progress bar and
    errors go to ``run/stderr.log``, its wall time, CPU seconds (its own and its loader
    workers', from ``wait4``) and the load average before and after add to ``run/usage.json``."""
    started = {}
    for run, command in commands.items():
        run.mkdir(parents=True, exist_ok=True)
        with open(run / "stderr.log", "a", encoding="utf-8") as stderr:
            started[run] = (subprocess.Popen(command, stderr=stderr), time.monotonic(), os.getloadavg())
    failed = []
    for run, (process, start, load) in started.items():
        _, status, rusage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        path = run / "usage.json"
        usage = json.loads(path.read_text()) if path.exists() else {"wall_s": 0.0, "cpu_s": 0.0, "loadavg": []}
        usage["wall_s"] += time.monotonic() - start
        usage["cpu_s"] += rusage.ru_utime + rusage.ru_stime
        usage["loadavg"].append({"start": load, "end": os.getloadavg()})
        path.write_text(json.dumps(usage, indent=2) + "\n")
        if process.returncode:
            failed.append(process)
    if failed:
        raise subprocess.CalledProcessError(failed[0].returncode, failed[0].args)


def checkpoint(run: Path) -> dict[str, Any]:
    return torch.load(run / "checkpoint-y.pt", map_location="cpu", weights_only=True, mmap=True)


def train(root: Path, minutes: float, trained: dict[str, dict[str, Any]], parallel: bool) -> None:
    """Train each variant for ``minutes`` of training time: one after the other, or all at
    once (one thread each, sharing the machine's cores) with ``parallel``."""
    commands = {root / name: train_command(options, root / name, "--steps", "1000000", "--max-minutes", str(minutes))
                for name, options in trained.items()}
    for command in commands.values():
        print(shlex.join(command), flush=True)
    for batch in [commands] if parallel else [{run: command} for run, command in commands.items()]:
        run_training(batch)


def last_validation(run: Path) -> dict[str, Any]:
    """The last ``validation {...}`` record of the run's ``train.log``."""
    records = [line.split("validation ", 1)[1] for line in (run / "train.log").read_text().splitlines()
               if "validation {" in line]
    return json.loads(records[-1])


def measure(model: QGAC, threads: int) -> dict[str, Any]:
    """Parameters, multiply-accumulates and 512 x 512 colour timings of ``model``."""
    torch.set_num_threads(threads)
    model.eval()
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
        "end_to_end_s": fastest_seconds(lambda: correct(model, read_coefficients(data)), BENCH_RUNS),
        "y_network_s": fastest_seconds(y_network, BENCH_RUNS),
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The report's rows as the Markdown table of docs/method.md."""
    def cell(row: dict[str, Any], key: str, form: str) -> str:
        return form.format(row[key]) if key in row else "-"

    return markdown_table(
        ["variant", "options", "steps", "Y gain q10", "Y gain q50", "parameters", "GMACs (Y)", "Y network",
         "end to end"],
        [[row["variant"], f"`{json.dumps(row['model_options'])}`", cell(row, "steps", "{:,}"),
          cell(row, "gain_q10_db", "{:+.3f} dB"), cell(row, "gain_q50_db", "{:+.3f} dB"),
          f"{row['parameters'] / 1e6:.2f} M", f"{row['gmacs']:.1f} ({row['y_gmacs']:.1f})",
          f"{1e3 * row['y_network_s']:.0f} ms", f"{1e3 * row['end_to_end_s']:.0f} ms"] for row in rows],
    )


def _usage(run: Path) -> dict[str, Any] | None:
    """What ``usage.json`` recorded of a run (none for a run started by hand)."""
    path = run / "usage.json"
    return json.loads(path.read_text()) if path.exists() else None


def report(root: Path, out: Path, threads: int, command: str, commit: str | None,
           trained: dict[str, dict[str, Any]], untrained: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The study's JSON report: per variant, the last validation and the measurements."""
    config = json.loads(CONFIG.read_text())
    rows = []
    for name, options in trained.items():
        state = checkpoint(root / name)
        validation = last_validation(root / name)
        rows.append({
            "variant": name, "model_options": options, "steps": state["step"],
            "training_s": round(state["elapsed"], 1), "usage": _usage(root / name),
            "gain_q10_db": validation["q10"], "gain_q50_db": validation["q50"], "history": state["history"],
            **measure(load_qgac(root / name / "checkpoint-y.pt"), threads),
        })
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "history"}), flush=True)
    candidates = []
    for name, options in untrained.items():
        torch.manual_seed(0)
        candidates.append({"variant": name, "model_options": options, **measure(build_model("small", **options), threads)})
        print(json.dumps(candidates[-1]), flush=True)
    print(table(rows + candidates), flush=True)
    result = {
        "command": command, "commit": commit, "machine": machine(), "training_config": config,
        "bench": {
            "image": f"{BENCH_SIZE}x{BENCH_SIZE} colour 4:2:0 (qgac_transforms.benchmark.synthetic_jpeg)",
            "threads": threads, "timing": timing_rule(BENCH_RUNS),
        },
        "variants": rows, "untrained_candidates": candidates, "table": table(rows + candidates),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.study.run", description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["train", "report", "all"])
    parser.add_argument("--root", type=Path, default=Path("runs/study"), help="folder of the study's runs")
    parser.add_argument("--minutes", type=float, default=20.0, help="training compute per variant")
    parser.add_argument("--bench-threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/results/study-capacity.json"))
    parser.add_argument("--variants", type=Path, default=VARIANTS, help="JSON: variants to train, name -> options")
    parser.add_argument("--candidates", type=Path, default=CANDIDATES,
                        help="JSON: variants only timed, name -> options (an empty object for none)")
    parser.add_argument("--parallel", action="store_true", help="train the variants at once, one thread each")
    parser.add_argument("--commit", help="the commit the study's code was taken from (run.sh sets it)")
    args = parser.parse_args(argv)
    trained, untrained = variants(args.variants), variants(args.candidates)
    arguments = [a for a in (sys.argv[1:] if argv is None else argv) if a != f"--commit={args.commit}"]
    command = shlex.join(["training/study/run.sh", *arguments])
    if args.phase in ("train", "all"):
        train(args.root, args.minutes, trained, args.parallel)
    if args.phase in ("report", "all"):
        report(args.root, args.out, args.bench_threads, command, args.commit, trained, untrained)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
