"""qgac-transforms: Quantization Guided JPEG Artifact Correction for PyTorch and Pillow.

Importing the package is cheap and changes nothing: the names below are loaded on
first use (torch, torchvision and Pillow plugins only then), and the Pillow hook is
installed only by :func:`register_jpeg_opener`.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

#: public name -> module (relative to this package) that defines it
_EXPORTS = {
    "JPEGArtifactCorrection": "transforms",
    "register_jpeg_opener": "pillow_plugin",
    "unregister_jpeg_opener": "pillow_plugin",
    "read_coefficients": "jpeg_io",
    "write_coefficients": "jpeg_io",
    "JPEGCoefficients": "jpeg_io",
    "InvalidJPEGError": "jpeg_io",
    "QGAC": "model",
    "create_model": "configs",
    "list_models": "configs",
    "build_model": "configs",
    "load_model": "configs",
    "CorrectionOptions": "options",
}
_SUBMODULES = ("functional",)

__all__ = ["__version__", *_EXPORTS, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
