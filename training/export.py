"""From a finished run to a published model folder: export, network interpolation, model card.

``export_run`` writes a run's stage checkpoint in the Hub layout (``config.json``, the
weights, ``README.md``) with :func:`qgac_transforms.hub.save_model`; the
card states the training data (and the licences in its ``MANIFEST.tsv``), the steps and
wall-clock time of every stage (read from the run's checkpoints) and the evaluation
table of ``qgac eval --json`` reports. ``interpolate`` blends regression and GAN
weights (ESRGAN's network interpolation, used by the paper with alpha = 0.7).
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from qgac_transforms import hub, publish
from qgac_transforms.configs import CONFIGS, registered_name
from qgac_transforms.model import QGAC
from qgac_transforms.model_card import ModelCardInfo, default_repo_id, markdown_table

from .data import MANIFEST_NAME, DatasetError, training_images
from .lineage import STAGES, StageRecord, read_lineage, run_stages, stage_checkpoint, write_lineage
from .trainer import load_qgac


#: Where exports go unless told otherwise: the repository's folder of models published to the Hub.
HUB_DIR = "hub"


def held_out_counts(stages: Sequence[StageRecord]) -> str:
    """How many images the ``stages`` held out for validation, stage by stage where that changed:
    ``"6"``, or ``"12 in stages 1-3, 6 in stages 4-19"``."""
    runs: list[list[int]] = []  # [count, first stage, last stage], numbered from 1
    for number, record in enumerate(stages, start=1):
        count = record.config["validation_images"]
        if runs and runs[-1][0] == count:
            runs[-1][2] = number
        else:
            runs.append([count, number, number])
    if len(runs) == 1:
        return str(runs[0][0])
    return ", ".join(f"{count} in stage {first}" if first == last else f"{count} in stages {first}-{last}"
                     for count, first, last in runs)


def dataset_description(folder: str | Path, held_out: int | str, required: bool = False) -> str:
    """One Markdown paragraph on a training folder: name, image counts and, from its
    ``MANIFEST.tsv``, the source packages and licences (a nested list). A folder that is not
    here is named as such, or, if ``required``, raises :class:`DatasetError`."""
    folder = Path(folder)
    try:
        count = len(training_images(folder))
    except DatasetError:
        if required:
            raise
        return f"`{folder}` (not found when exporting)"
    text = f"the folder `{folder.name}` ({count} images; held out for validation: {held_out})"
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return text
    with manifest.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file, delimiter="\t"))
    sources = Counter((row.get("package", "?"), row.get("license", "?")) for row in rows)
    lines = [f"{text}. Sources, from its `{MANIFEST_NAME}` (images, package, licence):"]
    lines += [f"  - {n}: {package}, {license_}" for (package, license_), n in sorted(sources.items())]
    return "\n".join(lines)


def read_evaluations(paths: Sequence[str | Path]) -> tuple[list[dict[str, Any]], str, list[str]]:
    """Model-card rows, the protocol text and the commands (where recorded) of ``qgac eval
    --json`` reports."""
    rows: list[dict[str, Any]] = []
    protocols: list[str] = []
    commands: list[str] = []
    for path in paths:
        try:
            report = json.loads(Path(path).read_text(encoding="utf-8"))
            dataset = Path(report["dataset"]).name
            results = report["results"]
            protocol = report["protocol"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a `qgac eval --json` report ({error!r})") from error
        if protocol not in protocols:
            protocols.append(protocol)
        if isinstance(report.get("command"), str):
            commands.append(report["command"])
        for result in results:
            jpeg, corrected = result["jpeg"], result["corrected"]
            if not all(isinstance(values.get(metric), (int, float)) for values in (jpeg, corrected)
                       for metric in ("psnr", "psnrb", "ssim")):  # null: a mean that was not finite
                raise ValueError(f"{path}: quality {result['quality']} has a metric that is no finite number "
                                 f"(an image equal to its reference has an infinite PSNR); not a card's result")
            rows.append({
                "dataset": dataset, "quality": result["quality"],
                "jpeg_psnr": jpeg["psnr"], "corrected_psnr": corrected["psnr"],
                "PSNR gain (dB)": f"{corrected['psnr'] - jpeg['psnr']:+.2f}",
                "jpeg_psnrb": jpeg["psnrb"], "corrected_psnrb": corrected["psnrb"],
                "jpeg_ssim": jpeg["ssim"], "corrected_ssim": corrected["ssim"],
                "images": result["n_images"],
            })
    return rows, " ".join(protocols), commands


def _qualities_text(config: dict[str, Any]) -> str:
    """How a stage drew JPEG qualities: each listed value with its weight (``10 x4``), or a range."""
    qualities = config.get("qualities") or []
    if config.get("continuous_quality"):
        return f"{min(qualities)}..{max(qualities)}, any integer"
    return " ".join(f"{q} x{n}" if n > 1 else str(q) for q, n in sorted(Counter(qualities).items()))


def training_notes(stages: Sequence[StageRecord]) -> str:
    """A table of each stage's schedule and time, and the texture-network caveat of the GAN stage."""
    if not stages:
        return ""
    rows = []
    for record in stages:
        c = record.config
        schedule = (f"cosine {c['lr']:g} -> {c['min_lr']:g}" if c["schedule"] == "cosine"
                    else f"step {c['lr']:g}, halved every {c['lr_step']}")
        gains = ", ".join(f"{k} {v:+.2f}" for k, v in (record.validation or {}).items() if k.startswith("q"))
        rows.append([record.run, record.stage, str(record.step), str(c["batch_size"]), str(c["patch_size"]),
                     _qualities_text(c), schedule, f"{record.elapsed / 60:.1f}", gains])
    header = ["Run", "Stage", "Steps", "Batch", "Patch", "Qualities", "Schedule", "Wall-clock (min)",
              "Validation PSNR gain (dB)"]
    lines = ["Trained with this repository's `python -m training` (see `training/README.md`), in this order:", "",
             markdown_table(header, rows)]
    lines += [f"\nStage {r.stage} of run `{r.run}` started its colour network from `{r.config['init_color']}`."
              for r in stages if r.config.get("init_color")]
    gan = next((r for r in stages if r.stage == "gan"), None)
    if gan is not None and not gan.config.get("texture_weights"):
        lines += ["", f"The GAN stage's texture loss used `{gan.config.get('texture_network')}` without trained "
                      "weights: its texture term was only a placeholder (the paper's MINC network is not available)."]
    return "\n".join(lines)


def _configuration(config: dict[str, Any]) -> str:
    """The configuration a stage trained: its name, with the constructor overrides that the
    named configuration does not hold (now) if any."""
    named = CONFIGS.get(config["model"], {})
    options = {key: value for key, value in (config.get("model_options") or {}).items()
               if key not in named or named[key] != value}
    return f"{config['model']} with {json.dumps(options)}" if options else config["model"]


def card_for(name: str, stages: Sequence[StageRecord], eval_json: Sequence[str | Path] = (),
             notes: str = "", repo_id: str | None = None, data_required: bool = False) -> ModelCardInfo:
    """The model card facts of a model trained in ``stages`` (Hub repo ``repo_id``, default: next to
    the default model's, :func:`~qgac_transforms.model_card.default_repo_id`); ``data_required``: see
    :func:`dataset_description`."""
    evaluation, protocol, commands = read_evaluations(eval_json)
    first, last = (stages[0].config, stages[-1].config) if stages else (None, None)
    training_data = (dataset_description(first["data"], held_out_counts(stages), required=data_required)
                     if first else "")
    repo_id = repo_id or default_repo_id(name)
    return ModelCardInfo(
        model_name=name,
        repo_id=repo_id,
        load_name=registered_name(repo_id),
        configuration=_configuration(last) if last else None,
        training_data=training_data,
        steps={f"{r.run}: {r.stage}": r.step for r in stages},
        wall_clock_seconds=sum(r.elapsed for r in stages) if stages else None,
        evaluation_protocol=protocol,
        evaluation_commands=commands,
        evaluation=evaluation,
        notes="\n\n".join(n for n in (notes, training_notes(stages)) if n),
    )


def gray_model(model: QGAC) -> QGAC:
    """The Y network of ``model`` alone (``color=False``): what stage 1 has trained."""
    gray = QGAC(**{**model.config, "color": False})
    gray.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("color_network.")})
    return gray


def _save(model: QGAC, folder: Path, card: ModelCardInfo, stages: Sequence[StageRecord],
          max_shard_mb: float | None = None) -> Path:
    """The Hub folder (config, weights, card) plus the ``training.json`` of its ``stages``."""
    hub.save_model(model, folder, card=card, max_shard_mb=max_shard_mb)
    write_lineage(stages, folder)
    return folder


def export_run(run: str | Path, stage: str, name: str, hub_dir: str | Path = HUB_DIR,
               eval_json: Sequence[str | Path] = (), embed: bool = False, repo_id: str | None = None,
               half: bool = False, max_shard_mb: float | None = None) -> Path:
    """Write what ``run``'s stage produced (:func:`stage_checkpoint`) to ``hub_dir/name``, or, if
    ``embed``, to the package's ``weights/name`` only (an embedded model is published from there, so
    the repository holds it once); ``max_shard_mb`` splits larger weights into shards.

    ``half`` stores the weights in float16 (half the size; models load them back into float32).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    hub.checked_model_name(name)
    checkpoint = stage_checkpoint(run, stage)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no checkpoint of stage {stage!r} in this run")
    model = load_qgac(checkpoint)
    if stage == "y":
        model = gray_model(model)
    if half:
        model = model.half()
    stages = run_stages(run, stage)
    card = card_for(name, stages, eval_json, repo_id=repo_id)
    if not embed:
        return _save(model, Path(hub_dir) / name, card, stages, max_shard_mb)
    with tempfile.TemporaryDirectory() as staging:  # embed checks the folder loads before copying
        return publish.embed(_save(model, Path(staging) / name, card, stages, max_shard_mb), name)


def write_card(folder: str | Path, eval_json: Sequence[str | Path], repo_id: str | None = None) -> Path:
    """Render a saved folder's model card again from its ``training.json`` and ``eval_json``, as
    :func:`export_run` would have: for a folder that came back from a GPU session without its
    run. Weights and config stay as they are.

    Refused (``ValueError``) without a complete ``training.json``, or where the training data it
    names is not here: the card's training data and licences come from that folder.
    """
    folder = Path(folder)
    config_path, lineage_path = folder / hub.CONFIG_NAME, folder / hub.TRAINING_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: not a saved model folder (no {hub.CONFIG_NAME})")
    model = hub.load_folder(folder, QGAC)  # strictly, hash checked
    stages = read_lineage(folder)
    if not stages:
        raise ValueError(f"{lineage_path}: missing or empty, so no training records to write a card from")
    try:
        card = card_for(folder.resolve().name, stages, eval_json, repo_id=repo_id, data_required=True)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{lineage_path}: incomplete training records ({error!r})") from error
    except DatasetError as error:
        raise ValueError(f"{lineage_path}: the training data it names is not here, and the card lists its "
                         f"images and licences ({error})") from error
    shards = len(hub.weight_digests(hub.read_config(folder, QGAC), config_path))
    model.generate_model_card(card=card, shards=shards).save(folder / hub.CARD_NAME)
    return folder / hub.CARD_NAME


def interpolate(regression: str | Path, gan: str | Path, alpha: float, out: str | Path,
                name: str | None = None) -> Path:
    """Blend weights as ``(1 - alpha) * regression + alpha * gan`` and save the result to ``out``.

    Both sources are checkpoints (``.pt``) or exported folders of the same configuration.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    first, second = load_qgac(regression), load_qgac(gan)
    if first.config != second.config:
        differ = sorted(k for k in first.config if first.config[k] != second.config.get(k))
        raise ValueError(f"{regression} and {gan} have different configurations ({', '.join(differ)})")
    blended = QGAC(**first.config)
    other = second.state_dict()
    blended.load_state_dict({
        key: torch.lerp(value, other[key], alpha) if value.is_floating_point() else value
        for key, value in first.state_dict().items()
    })
    stages = run_stages(Path(gan).parent, "gan") if str(gan).endswith(".pt") else read_lineage(gan)
    notes = (f"Network interpolation (ESRGAN): (1 - alpha) x regression weights `{regression}` + alpha x GAN "
             f"weights `{gan}`, alpha = {alpha:g}.")
    return _save(blended, Path(out), card_for(name or Path(out).name, stages, notes=notes), stages)
