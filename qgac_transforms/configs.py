"""Named QGAC configurations, from CPU-size to the paper's, timm-style.

A configuration is exactly the keyword arguments of :class:`~qgac_transforms.model.QGAC`;
normalization statistics are added by training. Every configuration keeps every part
of the architecture; only widths change. Parameters (measured):

==========  ===========  ===========  =============
name        total        Y network    colour network
==========  ===========  ===========  =============
``paper``   259,400,581  256,763,645      2,636,936
``medium``   18,711,845   16,354,685      2,357,160
``small``     3,141,349    2,550,013        591,336
``tiny``        616,613      467,741        148,872
==========  ===========  ===========  =============
"""

from __future__ import annotations

from typing import Any

from .model import QGAC

CONFIGS: dict[str, dict[str, Any]] = {
    # The paper's widths: 259.4M parameters, the count of the author's port.
    "paper": dict(block_width=256, features=64, per_frequency=4, manifold_width=64, fusion_width=4, color_width=32),
    "medium": dict(block_width=64, features=32, per_frequency=2, manifold_width=32, fusion_width=2, color_width=32),
    "small": dict(block_width=32, features=16, per_frequency=1, manifold_width=16, fusion_width=2, color_width=16),
    "tiny": dict(block_width=16, features=8, per_frequency=1, manifold_width=8, fusion_width=1, color_width=8),
}


def list_configs() -> list[str]:
    return sorted(CONFIGS)


def build_model(name: str, **overrides: Any) -> QGAC:
    """A freshly initialised :class:`QGAC` of the named configuration."""
    if name not in CONFIGS:
        raise KeyError(f"unknown QGAC configuration {name!r}; choose one of {', '.join(list_configs())}")
    return QGAC(**{**CONFIGS[name], **overrides})
