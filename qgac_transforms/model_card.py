"""The model card (``README.md``) written next to every saved QGAC model.

:class:`ModelCardInfo` holds what a training export knows about a model (data, steps,
time, evaluation); :func:`render_card` turns it into a Hub model card: YAML metadata
(library name, license, tags, datasets, metrics) and a body stating the evaluation
protocol and results.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

#: The Hub namespace of this project's models; a card without ``repo_id`` assumes it.
HUB_NAMESPACE = "qgac-transforms"


def default_repo_id(model_name: str) -> str:
    """The Hub repo id of a card that names none: ``model_name`` in :data:`HUB_NAMESPACE`."""
    return f"{HUB_NAMESPACE}/{model_name}"

#: Evaluation columns in table order: key -> (header, number format, Hub metric id).
COLUMNS: dict[str, tuple[str, str, str | None]] = {
    "dataset": ("Dataset", "{}", None),
    "quality": ("Quality", "{}", None),
    "jpeg_psnr": ("JPEG PSNR", "{:.2f}", "psnr"),
    "corrected_psnr": ("Corrected PSNR", "{:.2f}", "psnr"),
    "jpeg_ssim": ("JPEG SSIM", "{:.4f}", "ssim"),
    "corrected_ssim": ("Corrected SSIM", "{:.4f}", "ssim"),
    "jpeg_psnrb": ("JPEG PSNR-B", "{:.2f}", "psnr-b"),
    "corrected_psnrb": ("Corrected PSNR-B", "{:.2f}", "psnr-b"),
}

TEMPLATE = """---
{{ card_data }}
---

# {{ info.model_name }}

Quantization Guided JPEG Artifact Correction (QGAC, Ehrlich et al., ECCV 2020{% if paper_url %}, [paper]({{ paper_url }}){% endif %})
for {% if repo_url %}[qgac-transforms]({{ repo_url }}){% else %}qgac-transforms{% endif %}.
The network reads a JPEG's DCT coefficients and quantization tables and returns corrected
coefficients; one model covers every quality setting.
{% if info.configuration %}Configuration `{{ info.configuration }}`, {% endif %}{{ "{:,}".format(parameters) }} parameters.
{% if info.notes %}
{{ info.notes }}
{% endif %}
## Usage

```python
from qgac_transforms import create_model

model = create_model("{{ load_name }}", pretrained=True)
```

## Files

- `config.json`: the model's constructor arguments (including the coefficient normalization
  statistics), `format_version`, the `qgac_transforms_version` that wrote it and the SHA-256 of
  {% if shards > 1 %}each weight file{% else %}`model.safetensors`{% endif %}, checked on every load.
{% if shards > 1 %}- `model-00001-of-{{ last }}.safetensors` to `model-{{ last }}-of-{{ last }}.safetensors`: the weights, in
  {{ shards }} shards, with their index `model.safetensors.index.json`. No pickle files are used.
{% else %}- `model.safetensors`: the weights. No pickle files are used.
{% endif %}
## Training

- Data: {{ info.training_data or "not recorded" }}
- Wall-clock time: {{ wall_clock or "not recorded" }}

{% if steps_table %}Steps per stage:

{{ steps_table }}{% else %}Steps per stage: none (these weights are not trained).{% endif %}

## Evaluation

{% if evaluation_table %}Protocol: {{ info.evaluation_protocol }}
{% if info.evaluation_commands %}
Measured with:

```sh
{{ info.evaluation_commands | join("\n") }}
```
{% endif %}

{{ evaluation_table }}{% else %}No evaluation results yet.{% endif %}
"""


@dataclass
class ModelCardInfo:
    """Facts about one exported model, as the training export knows them.

    ``repo_id`` defaults to ``qgac-transforms/<model_name>``; the usage snippet loads that, or
    ``load_name`` where one is given (a registered name, which also finds a packaged copy offline).
    ``evaluation`` rows are dicts keyed like :data:`COLUMNS` (``dataset``, ``quality``,
    ``jpeg_psnr``, ``corrected_psnr``, ...); unknown keys become extra columns. Rows need
    ``evaluation_protocol``: encoder, colour space, SSIM window, PSNR-B definition, since
    published numbers differ on each of these.
    ``evaluation_commands`` are the command lines that measured them, quoted in the card.
    """

    model_name: str
    repo_id: str | None = None
    load_name: str | None = None
    configuration: str | None = None
    training_data: str = ""
    datasets: list[str] = field(default_factory=list)
    steps: dict[str, int] = field(default_factory=dict)
    wall_clock_seconds: float | None = None
    evaluation_protocol: str = ""
    evaluation_commands: list[str] = field(default_factory=list)
    evaluation: list[dict[str, Any]] = field(default_factory=list)
    notes: str = ""

    @classmethod
    def coerce(cls, value: ModelCardInfo | Mapping[str, Any]) -> ModelCardInfo:
        """Accept an instance or a plain dict of its fields; unknown fields are an error."""
        if isinstance(value, cls):
            return value
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown model card fields {unknown}; known fields: {sorted(known)}")
        return cls(**value)


def _format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table of ``header`` and ``rows`` (cells already formatted)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _evaluation_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    present = {key for row in rows for key in row}
    return [key for key in COLUMNS if key in present] + sorted(present - set(COLUMNS))


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    number_format = COLUMNS[key][1] if key in COLUMNS else "{}"
    try:
        return number_format.format(value)
    except (TypeError, ValueError):
        return str(value)


def evaluation_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The results as a Markdown table (empty string for no rows)."""
    if not rows:
        return ""
    columns = _evaluation_columns(rows)
    header = [COLUMNS[key][0] if key in COLUMNS else key for key in columns]
    return markdown_table(header, [[_cell(key, row.get(key)) for key in columns] for row in rows])


def card_metadata(base: ModelCardData, info: ModelCardInfo) -> ModelCardData:
    """The class-wide metadata plus this model's datasets and reported metrics."""
    data = ModelCardData(**base.to_dict())
    if info.datasets:
        data.datasets = list(info.datasets)
    metrics = [COLUMNS[key][2] for key in _evaluation_columns(info.evaluation) if key in COLUMNS]
    if any(metrics):
        data.metrics = list(dict.fromkeys(m for m in metrics if m))
    return data


def render_card(
    info: ModelCardInfo, base: ModelCardData, *, parameters: int, repo_url: str | None, paper_url: str | None,
    shards: int = 1,
) -> ModelCard:
    """The model card for ``info``; ``base`` carries the library-wide metadata; ``shards``: how
    many files hold the weights."""
    if info.evaluation and not info.evaluation_protocol.strip():
        raise ValueError(f"model card for {info.model_name!r}: evaluation results need an evaluation_protocol")
    steps_table = markdown_table(["Stage", "Steps"], [[stage, str(n)] for stage, n in info.steps.items()])
    return ModelCard.from_template(
        card_data=card_metadata(base, info),
        template_str=TEMPLATE,
        info=info,
        parameters=parameters,
        shards=shards,
        last="%05d" % shards,
        repo_url=repo_url,
        paper_url=paper_url,
        load_name=info.load_name or info.repo_id or default_repo_id(info.model_name),
        steps_table=steps_table if info.steps else "",
        wall_clock=_format_duration(info.wall_clock_seconds),
        evaluation_table=evaluation_table(info.evaluation),
    )
