"""CorrectionOptions (checked once, where written) and the functional dispatch by input type."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from qgac_transforms import functional as F
from qgac_transforms.configs import build_model
from qgac_transforms.options import CorrectionOptions


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [(dict(tile=0), ValueError, "tile must be a positive number"), (dict(overlap=-1), ValueError, "overlap 0 or more"),
     (dict(quality_override=101), ValueError, "quality_override must be an integer in 1..100"),
     (dict(blend=True), ValueError, r"blend must be a number in \[0, 1\]"),
     (dict(self_ensemble=1), TypeError, "self_ensemble must be True or False"),
     (dict(quality=50, tables=torch.ones(8, 8)), ValueError, "pass quality or tables, not both"),
     (dict(subsampling="4:9:9"), ValueError, "4:9:9"), (dict(tables=torch.zeros(8, 8)), ValueError, "at least 1"),
     (dict(tile=True), ValueError, "tile must be"), (dict(overlap=False), ValueError, "overlap 0 or more"),
     (dict(subsampling=(2.5, 2)), ValueError, "pair of whole numbers"), (dict(subsampling=2), ValueError, "4:2:0"),
     (dict(subsampling=(True, True)), ValueError, "unsupported chroma subsampling")],
)
def test_bad_options_are_refused_where_they_are_written(changes, error, message):
    with pytest.raises(error, match=message):
        CorrectionOptions(**changes)
    with pytest.raises(error, match=message):
        CorrectionOptions().changed(**changes)


def test_arguments_given_in_the_wrong_place_are_named():
    """Each failed deep inside with an error that named neither the argument nor the fix."""
    from qgac_transforms import JPEGArtifactCorrection
    from qgac_transforms.configs import load_model

    with pytest.raises(TypeError, match=r"weights must be a model name.*got float 0.5; correction options are keywords"):
        JPEGArtifactCorrection(0.5)
    with pytest.raises(TypeError, match=r"options must be a CorrectionOptions, got dict"):
        JPEGArtifactCorrection(options={"blend": 0.5})
    with pytest.raises(TypeError, match="load_model always loads trained weights"):
        load_model("qgac-fast", pretrained=False)


def test_an_unknown_keyword_names_the_options():
    with pytest.raises(TypeError, match="unknown correction option.*'strength'.*the options are tile, overlap"):
        CorrectionOptions.of(None, strength=0.5)


def test_options_are_frozen_and_changed_copies():
    options = CorrectionOptions(tables=[[2] * 8] * 8)
    assert options.changed() is options
    assert options.changed(blend=0.5).blend == 0.5 and options.blend == 1.0
    with pytest.raises(AttributeError):
        options.tile = 8  # type: ignore[misc]


def test_tables_are_a_copy_compared_by_value():
    steps = torch.full((8, 8), 2)
    options = CorrectionOptions(tables=steps)
    steps.zero_()  # the caller's tensor changes; the checked options do not
    assert torch.equal(torch.tensor(options.tables), torch.full((3, 8, 8), 2))
    assert options == CorrectionOptions(tables=[[2] * 8] * 8) and hash(options) == hash(CorrectionOptions(tables=[[2] * 8] * 8))
    assert options != CorrectionOptions(tables=torch.full((8, 8), 50))


@pytest.mark.parametrize("factor", [[2, 2], np.array([2, 2]), (np.int64(2), 2), (2.0, 2.0), torch.tensor([2, 2])])
def test_a_subsampling_pair_is_kept_as_a_tuple_compared_by_value(factor):
    """A list or an array made the options unhashable, and unequal to the same options written as a tuple."""
    options = CorrectionOptions(subsampling=factor)
    assert options.subsampling == (2, 2) and type(options.subsampling) is tuple
    assert options == CorrectionOptions(subsampling=(2, 2)) and hash(options) == hash(CorrectionOptions(subsampling=(2, 2)))
    assert CorrectionOptions(subsampling="4:2:0").subsampling == "4:2:0"  # a name is kept as written


def test_correct_dispatches_by_input_type():
    model = build_model("tiny").eval()
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (90, 120, 200)).save(buffer, "JPEG", quality=50)
    data = buffer.getvalue()
    assert isinstance(F.correct(data, model), Image.Image)
    pixels = torch.from_numpy(np.array(Image.open(io.BytesIO(data)))).permute(2, 0, 1)
    image = F.correct(tv_tensors.Image(pixels), model, quality=50)
    assert type(image) is tv_tensors.Image and image.dtype == torch.uint8 and image.shape == pixels.shape
    with pytest.raises(TypeError, match="cannot correct a dict"):
        F.correct({}, model)


def test_register_kernel_adds_a_type():
    class Wrapped:
        def __init__(self, pixels: torch.Tensor) -> None:
            self.pixels = pixels

    @F.register_kernel(Wrapped)
    def kernel(inpt: Wrapped, model: torch.nn.Module, options: CorrectionOptions) -> str:
        return f"{type(inpt).__name__} {options.blend}"

    try:
        assert F.correct(Wrapped(torch.zeros(1)), build_model("tiny"), blend=0.25) == "Wrapped 0.25"
    finally:
        F._KERNELS.pop(Wrapped)


def test_the_hook_refuses_options_for_decoded_pixels():
    from qgac_transforms.pillow_plugin import register_jpeg_opener

    with pytest.raises(TypeError, match="quality: the hook corrects JPEGs from their coefficients"):
        register_jpeg_opener(correct=True, quality=50)
    with pytest.raises(TypeError, match="tables: the hook corrects JPEGs"):
        register_jpeg_opener(correct=True, options=CorrectionOptions(tables=torch.full((8, 8), 4)))
