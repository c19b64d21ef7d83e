"""qgac-transforms: Quantization Guided JPEG Artifact Correction for PyTorch and Pillow."""
from ._version import __version__
