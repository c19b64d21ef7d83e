"""``qgac bench`` at toy sizes: every measurement runs and the report has its documented shape."""

from __future__ import annotations

import argparse
import io
import json
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


def test_median_seconds_counts_and_validates():
    calls = []
    assert benchmark.median_seconds(lambda: calls.append(1), repeats=3) >= 0
    assert len(calls) == 3 * 3  # each timed call after Timer's two warm-up calls
    with pytest.raises(ValueError, match="repeats"):
        benchmark.median_seconds(lambda: None, repeats=0)


def test_full_report_at_toy_sizes(tiny_weights):
    report = benchmark.run_benchmark(
        threads=1, repeats=1, read_sizes=[(24, 40)], configs=["tiny"], network_size=32, end_to_end_size=32,
        memory_megapixels=0.01, weights=tiny_weights,
    )  # fmt: skip
    assert torch.get_num_threads() == 1
    assert {"machine", "threads", "repeats", "device", "read", "network", "end_to_end", "peak_memory"} <= set(report)
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


@pytest.mark.parametrize("argv", [["--repeats", "0"], ["--threads", "0"], ["--memory-megapixels", "-1"]])
def test_cli_usage_errors(argv, capsys):
    parser = argparse.ArgumentParser()
    cli_bench.add_arguments(parser)
    assert cli_bench.run(parser.parse_args(argv)) == 2
    assert "at least 1" in capsys.readouterr().err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux passes ru_maxrss on through exec")
def test_peak_memory_is_the_fresh_process_own(tmp_path):
    """A child started by a large process must not report the parent's RSS high-water mark."""
    ballast = np.ones(64 * 2**20)  # 512 MiB, every page written
    parent = benchmark._rss_high_water_mib()
    code = "from qgac_transforms.benchmark import _rss_high_water_mib; print(_rss_high_water_mib())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    del ballast
    assert float(child.stdout) < parent - 256
