"""Regenerate the documentation's pictures and results tables.

    OMP_NUM_THREADS=1 python docs/make_pictures.py --benchmarks ../shared/benchmarks

Writes, from the repository root:

* ``docs/images/compare-<image>-{jpeg,qgac,original}.png``: for two LIVE1 images, the
  one of median gain at quality 10 and the one of highest gain (from the default
  model's LIVE1 report, :data:`REPORTS`), a 112 x 112 window of the JPEG at quality 10, of
  the corrected image and of the original: the window of that image where the
  correction removed the most squared error (16 pixels off the borders, on the 16-pixel
  grid). The pages show them enlarged without smoothing;
* ``docs/images/psnr-gain.png``: PSNR gain against JPEG quality on LIVE1 and Classic-5
  (the paper's Figure 11), from the ``qgac eval`` reports in ``docs/results/``;
* ``docs/results/tables.md``, ``docs/results/headline.md`` and
  ``docs/results/comparison.md``: the tables and the comparison that ``docs/results.md``
  and ``docs/index.md`` include, from the ``qgac eval`` and ``qgac bench`` reports in
  ``docs/results/``.

The JPEGs are made exactly as ``qgac eval`` makes them (:func:`qgac_transforms.evaluation.compress`),
and the default weights are used (the packaged copy, no network).
``--skip-crops`` (no benchmark images needed) redoes only the plot and the Markdown.
"""

from __future__ import annotations

import argparse
import io
import json
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from qgac_transforms.configs import DEFAULT_MODEL, weights_label
from qgac_transforms.model_card import markdown_table

DOCS = Path(__file__).resolve().parent
QUALITY = 10
WINDOW, STEP, BORDER = 112, 16, 16
#: The paper's PSNR / PSNR-B / SSIM (Ehrlich et al. 2020): Table 1 (LIVE1, colour) and
#: Table 2 (Classic-5, gray), JPEG input and QGAC output.
PAPER = {
    "LIVE1": {
        10: ((25.60, 23.53, 0.755), (27.65, 27.40, 0.819)),
        20: ((27.96, 25.77, 0.837), (29.92, 29.51, 0.882)),
        30: ((29.25, 27.10, 0.872), (31.21, 30.71, 0.908)),
    },
    "Classic-5": {
        10: ((27.82, 25.21, 0.780), (29.84, 29.43, 0.837)),
        20: ((30.12, 27.50, 0.854), (31.98, 31.37, 0.885)),
        30: ((31.48, 28.94, 0.884), (33.22, 32.42, 0.907)),
    },
}
#: Each model's ``qgac eval`` reports, by benchmark; the default model's are plotted and tabled.
MODEL_REPORTS = {
    "qgac-small": {"LIVE1": "eval-live1.json", "Classic-5": "eval-classic5.json"},
    "qgac-fast": {"LIVE1": "eval-live1-fast.json", "Classic-5": "eval-classic5-fast.json"},
}
REPORTS = MODEL_REPORTS[DEFAULT_MODEL]
#: ``qgac eval --self-ensemble`` reports, named after the plain ones (optional: each tabled
#: beside its plain report when present).
SELF_ENSEMBLE_REPORTS = {name: file.replace(".json", "-self-ensemble.json") for name, file in REPORTS.items()}
DESCRIPTION = {"LIVE1": "29 colour photos", "Classic-5": "5 grayscale images"}
GENERATED = "<!-- written by docs/make_pictures.py from docs/results/*.json; do not edit -->"


# --------------------------------------------------------------------------- comparison


def _gain(result: dict) -> float:
    """PSNR gain (dB) of a report's result or per-image row."""
    return result["corrected"]["psnr"] - result["jpeg"]["psnr"]


def _at(report: dict, quality: int) -> dict | None:
    """The report's result at ``quality``, if it has one."""
    return next((r for r in report["results"] if r["quality"] == quality), None)


def load_bench(results: Path) -> list[tuple[str, dict]]:
    """The ``qgac bench`` reports ``bench-*.json``, by file name."""
    return [(path.name, json.loads(path.read_text())) for path in sorted(results.glob("bench-*.json"))]


def chosen_images(report: dict) -> list[tuple[str, str, dict]]:
    """(role, image name, per-image row) of the median-gain and the highest-gain image at ``QUALITY``."""
    ranked = sorted(_at(report, QUALITY)["per_image"], key=_gain)
    return [("median", ranked[len(ranked) // 2]["image"], ranked[len(ranked) // 2]), ("best", ranked[-1]["image"], ranked[-1])]


def best_window(original: np.ndarray, jpeg: np.ndarray, corrected: np.ndarray) -> tuple[int, int]:
    """Top-left corner of the window where the correction removed the most squared error."""
    removed = ((jpeg - original) ** 2 - (corrected - original) ** 2).mean(axis=2)
    height, width = removed.shape
    corners = [
        (left, top)
        for top in range(BORDER, height - WINDOW - BORDER + 1, STEP)
        for left in range(BORDER, width - WINDOW - BORDER + 1, STEP)
    ]
    return max(corners, key=lambda c: removed[c[1] : c[1] + WINDOW, c[0] : c[0] + WINDOW].sum())


def make_comparisons(benchmarks: Path, images: Path, model: torch.nn.Module, report: dict) -> None:
    from qgac_transforms.evaluation import compress, load_reference
    from qgac_transforms.functional import correct_jpeg, to_pil
    from qgac_transforms.jpeg_io import read_coefficients

    for old in images.glob("compare-*.png"):
        old.unlink()
    for role, name, _ in chosen_images(report):
        original = load_reference(benchmarks / "LIVE1" / name).convert("RGB")
        data = compress(original, QUALITY)
        with Image.open(io.BytesIO(data)) as decoded:
            jpeg = decoded.convert("RGB")
        corrected = to_pil(correct_jpeg(model, read_coefficients(data)))
        arrays = [np.asarray(image, dtype=np.float64) for image in (original, jpeg, corrected)]
        left, top = best_window(*arrays)
        box = (left, top, left + WINDOW, top + WINDOW)
        stem = Path(name).stem
        for kind, image in (("jpeg", jpeg), ("qgac", corrected), ("original", original)):
            image.crop(box).save(images / f"compare-{stem}-{kind}.png", optimize=True)
        print(f"{role}: {name}, window at ({left}, {top})")


def _figure(src: str, alt: str, caption: str) -> str:
    return (
        f'<figure markdown="span">\n![{alt}]({src}){{ width="{WINDOW}" height="{WINDOW}" }}\n'
        f"<figcaption>{caption}</figcaption>\n</figure>"
    )


def comparison_markdown(report: dict, original: bool = False) -> str:
    """The median and the best LIVE1 image at ``QUALITY``, JPEG beside corrected, as HTML figures."""
    result = _at(report, QUALITY)
    count = len(result["per_image"])
    parts = [GENERATED]
    for role, name, row in chosen_images(report):
        stem = Path(name).stem
        gain = _gain(row)
        rank = "median gain" if role == "median" else "highest gain"
        panels = [
            _figure(f"images/compare-{stem}-jpeg.png", f"{stem}, JPEG quality {QUALITY}",
                    f"JPEG, quality {QUALITY}: {row['jpeg']['psnr']:.2f} dB"),
            _figure(f"images/compare-{stem}-qgac.png", f"{stem}, corrected",
                    f"corrected: {row['corrected']['psnr']:.2f} dB (<strong>{gain:+.2f} dB</strong>)"),
        ]  # fmt: skip
        if original:
            panels.append(_figure(f"images/compare-{stem}-original.png", f"{stem}, original", "original"))
        parts.append(
            f'<div class="qgac-compare{" qgac-compare--three" if original else ""}" markdown>\n'
            f'<p class="qgac-compare__title" markdown="span">`{stem}`: {rank} of the {count} LIVE1 images</p>\n'
            + "\n".join(panels) + "\n</div>"
        )
    mean = _gain(result)
    parts.append(
        f"*LIVE1 images saved as JPEG at quality {QUALITY}, corrected by the default model. The two images "
        f"are the one of median gain and the one of highest gain of the {count} (mean gain {mean:+.2f} dB); "
        f"the PSNR is that of the whole image. Each crop is the {WINDOW} x {WINDOW} window of its image where "
        "the correction removed the most error, enlarged without smoothing so the 8 x 8 blocks stay "
        "visible.*"
    )
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- plot and tables


def load_reports(results: Path) -> dict[str, dict]:
    return {name: json.loads((results / file).read_text()) for name, file in REPORTS.items()}


def gains(report: dict) -> tuple[list[int], list[float]]:
    rows = report["results"]
    return [r["quality"] for r in rows], [_gain(r) for r in rows]


def make_plot(reports: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for (name, report), color in zip(reports.items(), ("tab:blue", "tab:orange")):
        qualities, ours = gains(report)
        axes.plot(qualities, ours, "o-", color=color, label=f"{name}, {Path(report['weights']).name}")
        paper = PAPER[name]
        axes.plot(
            list(paper), [out[0] - jpeg[0] for jpeg, out in paper.values()], "s--", color=color,
            alpha=0.6, label=f"{name}, paper (Table {'1' if name == 'LIVE1' else '2'})",
        )  # fmt: skip
    axes.set_xlabel("JPEG quality")
    axes.set_ylabel("PSNR gain over JPEG (dB)")
    axes.set_xticks(range(10, 100, 10))
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)


def headline_markdown(reports: dict[str, dict]) -> str:
    """PSNR gains only: quality x dataset, ours against the paper's, with the JPEG PSNR each starts from."""
    header = ["Test set", "JPEG", "gain", "paper: JPEG", "paper: gain"]
    rows = []
    for quality in sorted({q for paper in PAPER.values() for q in paper}):
        for name, report in reports.items():
            result = _at(report, quality)
            if result is None:
                continue
            jpeg, qgac = PAPER[name][quality]
            rows.append([
                f"{name} q{quality}", f"{result['jpeg']['psnr']:.2f}", f"**{_gain(result):+.2f}**",
                f"{jpeg[0]:.2f}", f"{qgac[0] - jpeg[0]:+.2f}",
            ])  # fmt: skip
    return f"{GENERATED}\n\n" + markdown_table(header, rows) + "\n"


def numbers_markdown(reports: dict[str, dict], bench: list[tuple[str, dict]]) -> str:
    """The landing page's numbers: gain at quality 10 and time per 512 x 512 image."""
    header = ["", *(f"{name} ({DESCRIPTION[name]})" for name in reports)]
    ours, paper = [f"gain at quality {QUALITY}, `{DEFAULT_MODEL}`"], [f"gain at quality {QUALITY}, the paper's QGAC"]
    for name, report in reports.items():
        jpeg, qgac = PAPER[name][QUALITY]
        ours.append(f"**{_gain(_at(report, QUALITY)):+.2f} dB**")
        paper.append(f"{qgac[0] - jpeg[0]:+.2f} dB")
    speed = [f"{_end_to_end(report)} on {_device(report)}" for _, report in bench]
    return (
        f"{GENERATED}\n\n"
        + markdown_table(header, [ours, paper])
        + "\n\nTime to correct a 512 x 512 colour JPEG, file to pixels, default model: "
        + "; ".join(speed) + ".\n"
    )  # fmt: skip


def tables_markdown(reports: dict[str, dict], results: Path, bench: list[tuple[str, dict]]) -> str:
    header = ["Quality", *(f"{side} {metric}" for side in ("JPEG", "QGAC") for metric in ("PSNR", "PSNR-B", "SSIM")), "gain"]
    parts = [GENERATED]
    for name, report in reports.items():
        rows = []
        for result in report["results"]:
            jpeg, out = result["jpeg"], result["corrected"]
            rows.append([
                str(result["quality"]), f"{jpeg['psnr']:.2f}", f"{jpeg['psnrb']:.2f}", f"{jpeg['ssim']:.3f}",
                f"{out['psnr']:.2f}", f"{out['psnrb']:.2f}", f"{out['ssim']:.3f}", f"**{_gain(result):+.2f}**",
            ])  # fmt: skip
        images = report["results"][0]["n_images"] if report["results"] else 0
        paper = [
            [str(q), *(f"{v:.2f}" for v in jpeg[:2]), f"{jpeg[2]:.3f}", *(f"{v:.2f}" for v in qgac[:2]),
             f"{qgac[2]:.3f}", f"{qgac[0] - jpeg[0]:+.2f}"]
            for q, (jpeg, qgac) in PAPER[name].items()
        ]  # fmt: skip
        parts.append(
            f'??? abstract "{name}: PSNR, PSNR-B and SSIM at every quality"\n\n'
            f"    {images} images, weights `{report['weights']}`, from `docs/results/{REPORTS[name]}`; "
            "PSNR and PSNR-B in dB.\n\n" + textwrap.indent(markdown_table(header, rows), "    ")
            + f"\n\n    The paper's Table {'1' if name == 'LIVE1' else '2'}, same columns:\n\n"
            + textwrap.indent(markdown_table(header, paper), "    ")
        )
    for name, file in SELF_ENSEMBLE_REPORTS.items():
        if (results / file).is_file():
            parts.append(self_ensemble_markdown(name, reports[name], json.loads((results / file).read_text())))
    parts.append(speed_markdown(bench))
    return "\n\n".join(parts) + "\n"


def self_ensemble_markdown(name: str, plain: dict, ensemble: dict) -> str:
    """Dataset ``name`` corrected once and with the eight-orientation self-ensemble, quality by quality."""
    header = ["Quality", "gain, once", "gain, ensemble", "s, once", "s, ensemble"]
    once = {r["quality"]: r for r in plain["results"]}
    rows = []
    for result in ensemble["results"]:
        single = once[result["quality"]]
        rows.append([
            str(result["quality"]), f"{_gain(single):+.2f}", f"**{_gain(result):+.2f}**",
            f"{single['seconds_per_image']:.2f}", f"{result['seconds_per_image']:.2f}",
        ])  # fmt: skip
    return (
        f"### {name} with the self-ensemble\n\n`qgac eval --self-ensemble`, from "
        f"`docs/results/{SELF_ENSEMBLE_REPORTS[name]}`: each image corrected in its eight orientations and "
        "averaged. PSNR gain over the JPEG in dB and seconds per image, once and with the ensemble (as "
        "each report measured them on a shared machine, so the times compare only roughly).\n\n"
        + markdown_table(header, rows)
    )


def _device(report: dict) -> str:
    machine = report["machine"]
    if report["device"].startswith("cuda"):
        return f"{machine.get('cuda_device') or report['device']}"
    return f"{' '.join(machine['cpu'].split()[:2])} CPU, {report['threads']} thread{'s' if report['threads'] > 1 else ''}"


def _end_to_end(report: dict) -> str:
    """A bench report's end-to-end milliseconds, naming the weights when they are not today's default."""
    end_to_end = report["end_to_end"]
    name = Path(end_to_end["weights"].split()[0]).name
    stale = "" if end_to_end["weights"] == weights_label(None) else f" with `{name}`"
    return f"{end_to_end['seconds'] * 1000:.0f} ms{stale}"


def _timing(report: dict) -> str:
    """How a bench report's times were taken (reports older than the ``timing`` field hold medians)."""
    return report.get("timing") or f"median of {report['repeats']} runs"


def speed_markdown(reports: list[tuple[str, dict]]) -> str:
    """Milliseconds per 512 x 512 colour image from the ``qgac bench`` reports (:func:`load_bench`)."""
    configs = list(dict.fromkeys(n["config"] for _, report in reports for n in report["network"]))
    header = ["", *(_device(report) for _, report in reports)]
    forward = [{n["config"]: n["forward_s"] for n in report["network"]} for _, report in reports]
    rows = [
        [f"`{config}` network", *(f"{times[config] * 1000:.0f} ms" if config in times else "" for times in forward)]
        for config in configs
    ]
    rows.append(["**end to end**", *(f"**{_end_to_end(report)}**" for _, report in reports)])
    rows.append([
        "24 MP on the CPU",
        *(f"{m['peak_rss_mib'] / 1024:.1f} GiB, {m['seconds']:.0f} s" if (m := report.get("peak_memory")) else ""
          for _, report in reports),
    ])  # fmt: skip
    sources = ", ".join(f"`docs/results/{name}`" for name, _ in reports)
    timings = "; ".join(f"{_device(report)}: {_timing(report)}" for _, report in reports)
    return (
        "### Speed\n\nTime per 512 x 512 colour image (`qgac bench`): the network alone for each "
        "configuration, and end to end (JPEG bytes to corrected pixels, default weights). The last row "
        "is the peak memory (RSS) and time of correcting a 6000 x 4000 JPEG in 1024-pixel tiles, always "
        f"on the CPU (the machine's own CPU for the GPU column). From {sources} ({timings}).\n\n"
        + markdown_table(header, rows)
    )


def write_markdown(reports: dict[str, dict], results: Path) -> None:
    for name, text in markdown_files(reports, results).items():
        (results / name).write_text(text)


def markdown_files(reports: dict[str, dict], results: Path) -> dict[str, str]:
    """Every generated Markdown file of ``docs/results/``, by name."""
    bench = load_bench(results)
    return {
        "tables.md": tables_markdown(reports, results, bench),
        "headline.md": headline_markdown(reports),
        "numbers.md": numbers_markdown(reports, bench),
        "comparison.md": comparison_markdown(reports["LIVE1"]),
        "comparison-original.md": comparison_markdown(reports["LIVE1"], original=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmarks", type=Path, default=Path("../shared/benchmarks"), help="folder holding LIVE1/")
    parser.add_argument("--skip-crops", action="store_true", help="only the plot and the tables (no images needed)")
    parser.add_argument("--weights", help="model folder or Hub name (default: the packaged default model)")
    args = parser.parse_args()
    images, results = DOCS / "images", DOCS / "results"
    images.mkdir(exist_ok=True)
    torch.set_grad_enabled(False)
    reports = load_reports(results)
    if not args.skip_crops:
        from qgac_transforms import create_model

        model = create_model(args.weights or DEFAULT_MODEL, pretrained=True, local_files_only=args.weights is None)
        make_comparisons(args.benchmarks, images, model, reports["LIVE1"])
    make_plot(reports, images / "psnr-gain.png")
    write_markdown(reports, results)
    print(f"wrote {images} and the Markdown of {results}")


if __name__ == "__main__":
    main()
