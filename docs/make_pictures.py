"""Regenerate the documentation's pictures and results tables.

    OMP_NUM_THREADS=1 python docs/make_pictures.py --benchmarks ../shared/benchmarks

Writes, from the repository root:

* ``docs/images/crop-<image>.png``: original | JPEG quality 10 | corrected, 256-pixel
  crops of LIVE1 images, side by side;
* ``docs/images/zoom-<image>.png``: a 64-pixel detail of the first one, enlarged 4x with
  nearest-neighbour sampling so the 8x8 blocks stay visible;
* ``docs/images/psnr-gain.png``: PSNR gain against JPEG quality on LIVE1 and Classic-5
  (the paper's Figure 11), from the ``qgac eval`` reports in ``docs/results/``;
* ``docs/results/tables.md``: the tables that ``docs/results.md`` includes, from the
  ``qgac eval`` and ``qgac bench`` reports in ``docs/results/``.

The JPEGs are made exactly as ``qgac eval`` makes them (:func:`qgac_transforms.evaluation.compress`),
and the default weights are used (the packaged copy, no network).
``--skip-crops`` (no benchmark images needed) redoes only the plot and the tables.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from qgac_transforms.evaluation import compress, load_reference, measure, pixels
from qgac_transforms.functional import correct_jpeg, to_pil
from qgac_transforms.hub import load_model
from qgac_transforms.jpeg_io import read_coefficients
from qgac_transforms.model_card import markdown_table

DOCS = Path(__file__).resolve().parent
QUALITY = 10
CROP = 256
ZOOM_SIZE, ZOOM = 64, 4
#: LIVE1 image -> top-left corner of its crop (chosen for edges and texture, fixed so reruns agree).
CROPS = {
    "parrots.png": (250, 120),
    "monarch.png": (300, 150),
    "lighthouse2.png": (260, 40),
}
#: First crop's detail, relative to its crop.
ZOOM_AT = (180, 60)
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
REPORTS = {"LIVE1": "eval-live1.json", "Classic-5": "eval-classic5.json"}
#: ``qgac eval --self-ensemble`` on LIVE1 (optional: tabled beside the plain report when present).
SELF_ENSEMBLE_REPORT = "eval-live1-self-ensemble.json"


# --------------------------------------------------------------------------- crops


def _label(image: Image.Image, text: str) -> Image.Image:
    """``image`` with a caption strip above it."""
    font = ImageFont.load_default(size=14)
    out = Image.new("RGB", (image.width, image.height + 22), "white")
    out.paste(image, (0, 22))
    ImageDraw.Draw(out).text((4, 3), text, fill="black", font=font)
    return out


def _side_by_side(panels: list[Image.Image], gap: int = 6) -> Image.Image:
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    out = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    x = 0
    for panel in panels:
        out.paste(panel, (x, 0))
        x += panel.width + gap
    return out


def make_crops(benchmarks: Path, images: Path, model: torch.nn.Module) -> None:
    for index, (name, (left, top)) in enumerate(CROPS.items()):
        original = load_reference(benchmarks / "LIVE1" / name)
        data = compress(original, QUALITY)
        with Image.open(io.BytesIO(data)) as decoded:
            jpeg = decoded.convert("RGB")
        corrected = to_pil(correct_jpeg(model, read_coefficients(data)))
        reference = pixels(original)
        jpeg_psnr = measure(pixels(jpeg), reference)["psnr"]
        corrected_psnr = measure(pixels(corrected), reference)["psnr"]
        box = (left, top, left + CROP, top + CROP)
        crops = [image.crop(box) for image in (original, jpeg, corrected)]
        captions = ["original", f"JPEG q{QUALITY}: {jpeg_psnr:.2f} dB", f"QGAC: {corrected_psnr:.2f} dB"]
        stem = Path(name).stem
        _side_by_side([_label(c, t) for c, t in zip(crops, captions)]).save(images / f"crop-{stem}.png", optimize=True)
        if index == 0:
            x, y = ZOOM_AT
            detail = [c.crop((x, y, x + ZOOM_SIZE, y + ZOOM_SIZE)) for c in crops]
            enlarged = [d.resize((ZOOM_SIZE * ZOOM,) * 2, Image.Resampling.NEAREST) for d in detail]
            captions = ["original", f"JPEG q{QUALITY}", "QGAC"]
            _side_by_side([_label(e, t) for e, t in zip(enlarged, captions)]).save(
                images / f"zoom-{stem}.png", optimize=True
            )
        print(f"{name}: JPEG {jpeg_psnr:.2f} dB, corrected {corrected_psnr:.2f} dB (whole image)")


# --------------------------------------------------------------------------- plot and tables


def load_reports(results: Path) -> dict[str, dict]:
    return {name: json.loads((results / file).read_text()) for name, file in REPORTS.items()}


def gains(report: dict) -> tuple[list[int], list[float]]:
    rows = report["results"]
    return [r["quality"] for r in rows], [r["corrected"]["psnr"] - r["jpeg"]["psnr"] for r in rows]


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


def _triple(values: tuple[float, float, float] | dict[str, float]) -> str:
    if isinstance(values, dict):
        values = (values["psnr"], values["psnrb"], values["ssim"])
    return f"{values[0]:.2f} / {values[1]:.2f} / {values[2]:.3f}"


def tables_markdown(reports: dict[str, dict], results: Path) -> str:
    header = ["Quality", "JPEG", "QGAC (ours)", "gain (dB)", "paper: JPEG", "paper: QGAC", "paper: gain (dB)"]
    parts = ["<!-- written by docs/make_pictures.py from docs/results/eval-*.json; do not edit -->"]
    for name, report in reports.items():
        rows = []
        for result in report["results"]:
            q = result["quality"]
            cells = [str(q), _triple(result["jpeg"]), _triple(result["corrected"])]
            cells.append(f"{result['corrected']['psnr'] - result['jpeg']['psnr']:+.2f}")
            if q in PAPER[name]:
                jpeg, qgac = PAPER[name][q]
                cells += [_triple(jpeg), _triple(qgac), f"{qgac[0] - jpeg[0]:+.2f}"]
            else:
                cells += ["", "", ""]
            rows.append(cells)
        images = report["results"][0]["n_images"] if report["results"] else 0
        parts.append(
            f"### {name}\n\n{images} images, weights `{report['weights']}`, from "
            f"`docs/results/{REPORTS[name]}`. PSNR / PSNR-B / SSIM.\n\n" + markdown_table(header, rows)
        )
    if (results / SELF_ENSEMBLE_REPORT).is_file():
        parts.append(self_ensemble_markdown(reports["LIVE1"], json.loads((results / SELF_ENSEMBLE_REPORT).read_text())))
    parts.append(speed_markdown(results))
    return "\n\n".join(parts) + "\n"


def self_ensemble_markdown(plain: dict, ensemble: dict) -> str:
    """LIVE1 corrected once and with the eight-orientation self-ensemble, quality by quality."""
    header = ["Quality", "JPEG", "QGAC (ours)", "gain (dB)", "self-ensemble", "gain (dB)", "time per image"]
    once = {r["quality"]: r for r in plain["results"]}
    rows = []
    for result in ensemble["results"]:
        single, jpeg = once[result["quality"]], result["jpeg"]["psnr"]
        rows.append([
            str(result["quality"]), _triple(result["jpeg"]), _triple(single["corrected"]),
            f"{single['corrected']['psnr'] - jpeg:+.2f}", _triple(result["corrected"]),
            f"{result['corrected']['psnr'] - jpeg:+.2f}",
            f"{single['seconds_per_image']:.2f} s / {result['seconds_per_image']:.2f} s",
        ])
    return (
        f"### LIVE1 with the self-ensemble\n\n`qgac eval --self-ensemble`, from `docs/results/{SELF_ENSEMBLE_REPORT}`: "
        "each image corrected in its eight orientations and averaged. PSNR / PSNR-B / SSIM; seconds per image "
        "once and with the ensemble.\n\n" + markdown_table(header, rows)
    )


def _device(report: dict) -> str:
    machine = report["machine"]
    if report["device"].startswith("cuda"):
        return f"{machine.get('cuda_device') or report['device']} ({report['threads']} CPU threads)"
    return f"{machine['cpu']} CPU, {report['threads']} thread{'s' if report['threads'] > 1 else ''}"


def speed_markdown(results: Path) -> str:
    """Milliseconds per 512 x 512 colour image from the ``qgac bench`` reports ``bench-*.json``."""
    reports = [(path.name, json.loads(path.read_text())) for path in sorted(results.glob("bench-*.json"))]
    configs = list(dict.fromkeys(n["config"] for _, report in reports for n in report["network"]))
    header = ["Device", *(f"{name} network" for name in configs), "end to end", "24 MP on the CPU", "report"]
    rows = []
    for name, report in reports:
        forward = {n["config"]: f"{n['forward_s'] * 1000:.0f} ms" for n in report["network"]}
        memory = report.get("peak_memory")
        cells = [
            _device(report),
            *(forward.get(config, "") for config in configs),
            f"{report['end_to_end']['seconds'] * 1000:.0f} ms",
            f"{memory['peak_rss_mib'] / 1024:.1f} GiB in {memory['seconds']:.0f} s" if memory else "",
            f"`docs/results/{name}`",
        ]
        rows.append(cells)
    return (
        "### Speed\n\nMedian time per 512 x 512 colour image (`qgac bench`): the network alone for each "
        "configuration, and end to end (JPEG bytes to corrected pixels, default weights); then the peak "
        "memory (RSS) and time of correcting a 6000 x 4000 JPEG in 1024-pixel tiles, always on the CPU.\n\n" + markdown_table(header, rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmarks", type=Path, default=Path("../shared/benchmarks"), help="folder holding LIVE1/")
    parser.add_argument("--skip-crops", action="store_true", help="only the plot and the tables (no images needed)")
    parser.add_argument("--weights", help="model folder or Hub name (default: the packaged default model)")
    args = parser.parse_args()
    images, results = DOCS / "images", DOCS / "results"
    images.mkdir(exist_ok=True)
    torch.set_grad_enabled(False)
    if not args.skip_crops:
        model = load_model(args.weights, local_files_only=args.weights is None)
        make_crops(args.benchmarks, images, model)
    reports = load_reports(results)
    make_plot(reports, images / "psnr-gain.png")
    (results / "tables.md").write_text(tables_markdown(reports, results))
    print(f"wrote {images} and {results / 'tables.md'}")


if __name__ == "__main__":
    main()
