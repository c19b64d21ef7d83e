"""``qgac bench`` at toy sizes: every measurement runs and the report has its documented shape."""

from __future__ import annotations

import argparse
import io
import json
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from qgac_transforms import benchmark
from qgac_transforms.cli import bench as cli_bench


def _positive(*values):
    return all(isinstance(v, float) and v > 0 for v in values)


def test_machine_description():
    description = benchmark.machine()
    assert {"cpu", "logical_cores", "usable_cores", "ram_gib", "torch", "pillow", "libjpeg"} <= set(description)
    assert description["torch"] == torch.__version__ and description["usable_cores"] >= 1


def test_synthetic_jpeg_is_a_420_photo_of_the_requested_size():
    image = Image.open(io.BytesIO(benchmark.synthetic_jpeg(40, 72)))
    assert image.size == (72, 40) and image.mode == "RGB"
    assert [layer[1:3] for layer in image.layer] == [(2, 2), (1, 1), (1, 1)]  # (h, v): 4:2:0


def test_fastest_seconds_is_the_fastest_timed_call_after_one_warm_up(monkeypatch):
    durations = iter([5.0, 3.0, 1.0, 2.0])  # the first is the warm-up: never reported
    clock = [0.0]
    calls = []

    def work():
        calls.append(1)
        clock[0] += next(durations)

    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: clock[0])
    assert benchmark.fastest_seconds(work, repeats=3) == 1.0
    assert len(calls) == 1 + 3
    with pytest.raises(ValueError, match="repeats"):
        benchmark.fastest_seconds(work, repeats=0)


def test_full_report_at_toy_sizes(tiny_weights):
    report = benchmark.run_benchmark(
        threads=1, repeats=1, read_sizes=[(24, 40)], configs=["tiny"], network_size=32, end_to_end_size=32,
        memory_megapixels=0.01, weights=tiny_weights,
    )  # fmt: skip
    assert torch.get_num_threads() == 1
    assert {"machine", "threads", "repeats", "timing", "device", "read", "network", "end_to_end", "peak_memory"} <= set(report)
    assert report["timing"] == "fastest of 1 run after one untimed warm-up"
    (read,) = report["read"]
    assert (read["width"], read["height"], read["subsampling"]) == (40, 24, "4:2:0")
    assert _positive(read["read_coefficients_s"], read["pillow_decode_s"])
    assert read["ratio"] == pytest.approx(read["read_coefficients_s"] / read["pillow_decode_s"])
    (network,) = report["network"]
    assert network["config"] == "tiny" and network["parameters"] > 0
    assert network["megapixels_per_s"] == pytest.approx(32 * 32 / 1e6 / network["forward_s"])
    end_to_end = report["end_to_end"]
    assert end_to_end["weights"] == tiny_weights and _positive(end_to_end["seconds"])
    memory = report["peak_memory"]
    assert memory["megapixels"] == pytest.approx(0.01, rel=0.1)
    assert memory["tiled"] is True
    assert memory["peak_rss_mib"] >= memory["read_rss_mib"] >= memory["model_rss_mib"] > 10  # a fresh Python with torch
    json.dumps(report)  # JSON-ready
    text = benchmark.format_report(report)
    assert "read_coefficients" in text and "tiny" in text and "Peak memory" in text


def test_multiply_accumulates_grow_with_the_pixel_count():
    (small,), (large,) = (benchmark.bench_network(["tiny"], size=size, repeats=1) for size in (32, 64))
    assert 0 < small["gmacs"] < large["gmacs"]
    # convolutions cost per pixel; only the filter manifolds (per table) do not grow
    assert 3.5 < large["gmacs"] / small["gmacs"] <= 4.0


def test_peak_memory_reports_a_failing_subprocess():
    with pytest.raises(RuntimeError, match="subprocess failed"):
        benchmark.bench_peak_memory(0.01, weights="/nonexistent/weights/folder")


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "0"], "at least 1"), (["--threads", "0"], "at least 1"), (["--memory-megapixels", "-1"], "0 or more"),
    (["--memory-megapixels", "nan"], "0 or more"), (["--memory-megapixels", "inf"], "0 or more"),
    (["--device", "bogus"], "--device bogus cannot be used"), (["--json", "."], "is a folder"),
])
def test_cli_usage_errors_come_before_any_measurement(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(benchmark, "run_benchmark", lambda **_: pytest.fail("measured before refusing"))
    parser = argparse.ArgumentParser()
    cli_bench.add_arguments(parser)
    assert cli_bench.run(parser.parse_args(argv)) == 2
    assert message in capsys.readouterr().err


def test_cli_report_records_the_command_that_replays_it(tmp_path, monkeypatch, tiny_weights):
    measured, real_benchmark = {}, benchmark.run_benchmark

    def small_benchmark(**options):  # the CLI's part only, on toy sizes: the measurements are tested above
        measured.update(options)
        return real_benchmark(**{**options, "read_sizes": [(16, 16)], "configs": ["tiny"],
                                 "network_size": 16, "end_to_end_size": 16, "memory_megapixels": None})

    monkeypatch.setattr(benchmark, "run_benchmark", small_benchmark)
    parser = argparse.ArgumentParser()
    cli_bench.add_arguments(parser)
    argv = ["--threads", "1", "--repeats", "2", "--weights", tiny_weights, "--json", str(tmp_path / "b.json")]
    assert cli_bench.run(parser.parse_args(argv)) == 0
    written = json.loads((tmp_path / "b.json").read_text())
    command = shlex.split(written["command"])
    assert command[:2] == ["qgac", "bench"] and parser.parse_args(command[2:]) == parser.parse_args(argv)
    assert written["timing"] == "fastest of 2 runs after one untimed warm-up" and measured["repeats"] == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux passes ru_maxrss on through exec")
def test_peak_memory_is_the_fresh_process_own(tmp_path):
    """A child started by a large process must not report the parent's RSS high-water mark."""
    ballast = np.ones(64 * 2**20)  # 512 MiB, every page written
    parent = benchmark._rss_high_water_mib()
    code = "from qgac_transforms.benchmark import _rss_high_water_mib; print(_rss_high_water_mib())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    del ballast
    assert float(child.stdout) < parent - 256
