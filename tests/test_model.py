"""The full QGAC model: shapes for every subsampling and size, batching, gradients,
identity at zero residual, configurations and their variants (BlockNet bodies, no
FrequencyNet), and torch.compile / torch.export / autocast."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import split_torch_state_dict_into_shards
from hypothesis import given, settings
from hypothesis import strategies as st

from qgac_transforms.codec import coefficients_to_pixels, pixels_to_coefficients
from qgac_transforms.configs import CONFIGS, MODELS, build_model, create_model
from qgac_transforms.hub import METADATA_KEYS, embedded_folder, read_config
from qgac_transforms.correction import correct, correct_planes
from qgac_transforms.jpeg_io import PILLOW_SUBSAMPLING, read_coefficients
from qgac_transforms.model import QGAC, upsample_coefficients

FACTORS = {"4:4:4": (1, 1), "4:2:2": (1, 2), "4:2:0": (2, 2), "4:4:0": (2, 1), "4:1:1": (1, 4)}


@pytest.fixture(scope="module")
def tiny() -> QGAC:
    torch.manual_seed(0)
    return build_model("tiny").eval()


def zero_residual(model: QGAC) -> QGAC:
    """Zero the last fusion conv (Y) and the colour decoder's kernel and bias generators."""
    with torch.no_grad():
        last = model.y_network.fusion.layers[-1]
        generator = model.color_network.decode.manifold
        for parameter in (last.weight, last.bias, *generator.weight.parameters(), *generator.bias.parameters()):
            parameter.zero_()
    return model


def inputs(batch: int, rows: int, cols: int, factor: tuple[int, int] | None, seed: int = 0):
    """Random dequantized planes of ``rows x cols`` luma blocks and a table per sample."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.randn(batch, 1, 8 * rows, 8 * cols, generator=generator) * 60
    tables = torch.randint(1, 120, (batch, 3, 8, 8), generator=generator).float()
    if factor is None:
        return y, tables, None
    chroma = torch.randn(batch, 2, 8 * rows // factor[0], 8 * cols // factor[1], generator=generator) * 30
    return y, tables, chroma


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("subsampling", ["gray", *FACTORS])
def test_forward_shapes_for_every_subsampling(tiny, subsampling):
    factor = FACTORS.get(subsampling)
    y, tables, chroma = inputs(2, 4, 8, factor)
    with torch.no_grad():
        out = tiny(y, tables, chroma, factor or (1, 1))
    assert out.shape == (2, 1 if factor is None else 3, 32, 64)
    assert out.isfinite().all()


@pytest.mark.parametrize("size", [(1, 1), (17, 9), (333, 509)])
@pytest.mark.parametrize("subsampling", ["gray", *PILLOW_SUBSAMPLING])
def test_correct_real_jpegs_of_odd_sizes(tiny, make_image, make_jpeg, size, subsampling):
    height, width = size
    if subsampling == "gray":
        data = make_jpeg(make_image(1, height, width, mode="L"), quality=30)
    else:
        data = make_jpeg(make_image(1, height, width), quality=30, subsampling=PILLOW_SUBSAMPLING[subsampling])
    coefficients = read_coefficients(data)
    assert coefficients.subsampling == subsampling
    pixels = correct(tiny, coefficients)
    assert pixels.shape == (1 if subsampling == "gray" else 3, height, width)
    assert pixels.isfinite().all() and pixels.min() >= 0 and pixels.max() <= 255


@pytest.mark.parametrize("upsampling", ["nearest", "fancy"])
@pytest.mark.parametrize("subsampling", list(FACTORS))
@pytest.mark.parametrize("size", [(1, 1), (17, 9), (41, 30)])
def test_correct_planes_pads_mismatched_grids_and_crops(tiny, subsampling, size, upsampling):
    # a file's chroma grid is ceil(ceil(H / v) / 8) blocks: often not luma / v (17 rows, 4:4:0: 3 vs 2 blocks)
    factor = FACTORS[subsampling]
    height, width = size
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(2)) * 255
    y, cb, cr = pixels_to_coefficients(image, factor)
    chroma = torch.stack([cb, cr], dim=1)
    tables = torch.full((1, 3, 8, 8), 8.0)
    pixels = correct_planes(tiny, y[:, None], tables, chroma, factor, height, width)
    assert pixels.shape == (1, 3, height, width)
    # with a zero residual the corrected image is the decode with the model's chroma
    # upsampling: the padded chroma lines up with luma and the crop keeps the image's own pixels
    identity = zero_residual(build_model("tiny", chroma_upsampling=upsampling).eval())
    pixels = correct_planes(identity, y[:, None], tables, chroma, factor, height, width)
    plain = coefficients_to_pixels([y, cb, cr], height, width, factor, upsampling=upsampling)
    if upsampling == "fancy":  # the last row/column that a doubled axis filters with the encoder's padding
        rows, cols = height - (factor[0] == 2), width - (factor[1] == 2)
        pixels, plain = pixels[..., :rows, :cols], plain[..., :rows, :cols]
    torch.testing.assert_close(pixels, plain, rtol=0, atol=1e-2)


def test_chroma_upsampling_must_be_a_known_mode():
    with pytest.raises(ValueError, match="chroma_upsampling must be one of"):
        build_model("tiny", chroma_upsampling="bicubic")


def test_chroma_upsampling_changes_only_the_base_the_colour_residual_is_added_to(tiny):
    fancy = build_model("tiny", chroma_upsampling="fancy").eval()
    fancy.load_state_dict(tiny.state_dict())
    y, tables, chroma = inputs(1, 4, 4, (2, 2))
    with torch.no_grad():
        nearest_out, fancy_out = tiny(y, tables, chroma, (2, 2)), fancy(y, tables, chroma, (2, 2))
    torch.testing.assert_close(fancy_out[:, :1], nearest_out[:, :1], rtol=0, atol=0)
    planes = chroma.transpose(0, 1)
    moved = upsample_coefficients(planes, (2, 2), "fancy") - upsample_coefficients(planes, (2, 2), "nearest")
    torch.testing.assert_close(fancy_out[:, 1:] - nearest_out[:, 1:], moved.transpose(0, 1), rtol=0, atol=1e-3)


def test_forward_rejects_chroma_that_does_not_cover_y(tiny):
    y, tables, chroma = inputs(1, 3, 4, (1, 1))
    with pytest.raises(ValueError, match="whole MCU"):
        tiny(y, tables, chroma, (2, 2))


def test_forward_rejects_chroma_without_a_colour_network():
    model = build_model("tiny", color=False)
    y, tables, chroma = inputs(1, 2, 2, (1, 1))
    with pytest.raises(ValueError, match="colour network"):
        model(y, tables, chroma, (1, 1))


def test_chroma_factor_may_be_any_sequence(tiny):
    y, tables, chroma = inputs(1, 2, 4, (1, 1))
    with torch.no_grad():
        assert torch.equal(tiny(y, tables, chroma, [1, 1]), tiny(y, tables, chroma, (1, 1)))


# ----------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("factor", [None, (2, 2)])
def test_batch_with_mixed_tables_equals_samples_one_by_one(tiny, factor):
    y, _, chroma = inputs(3, 2, 4, factor, seed=3)
    tables = torch.stack([torch.full((3, 8, 8), 2.0), torch.full((3, 8, 8), 40.0), torch.randint(1, 99, (3, 8, 8))])
    tables = tables.float()
    with torch.no_grad():
        batched = tiny(y, tables, chroma, (2, 2))
        one_by_one = torch.cat([
            tiny(y[i : i + 1], tables[i : i + 1], None if chroma is None else chroma[i : i + 1], (2, 2))
            for i in range(3)
        ])
    torch.testing.assert_close(batched, one_by_one, rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_parameter():
    torch.manual_seed(1)
    model = build_model("tiny").train()
    y, tables, chroma = inputs(2, 2, 4, (2, 2))
    model(y, tables, chroma, (2, 2)).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_stage_y_gradients_reach_every_y_network_parameter():
    torch.manual_seed(1)
    model = build_model("tiny").train()
    y, tables, _ = inputs(2, 2, 4, None)
    model(y, tables).square().mean().backward()
    missing = [n for n, p in model.y_network.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert all(p.grad is None for p in model.color_network.parameters())


@pytest.mark.parametrize("factor", [None, (1, 1)])
def test_zero_residual_returns_the_input_exactly(factor):
    torch.manual_seed(2)
    model = zero_residual(build_model("tiny", coefficient_mean=[[3.0] * 64] * 3, coefficient_std=[[7.0] * 64] * 3))
    y, tables, chroma = inputs(2, 3, 5, factor)
    with torch.no_grad():
        out = model.eval()(y, tables, chroma, (1, 1))
    assert torch.equal(out, y if chroma is None else torch.cat([y, chroma], dim=1))


def test_eval_mode_is_deterministic(tiny):
    y, tables, chroma = inputs(2, 2, 4, (2, 2))
    with torch.no_grad():
        assert torch.equal(tiny(y, tables, chroma), tiny(y, tables, chroma))


@settings(deadline=None, max_examples=5)
@given(index=st.integers(0, 2))
def test_output_depends_on_the_table(tiny, index):
    y, tables, chroma = inputs(1, 2, 2, (2, 2))
    other = tables.clone()
    other[:, index] *= 2
    with torch.no_grad():
        first, second = tiny(y, tables, chroma), tiny(y, other, chroma)
    changed = (first - second).abs().amax(dim=(0, 2, 3)) > 0
    # the Y table reaches all three planes (chroma is guided by Y); a chroma table only its own plane
    assert changed.tolist() == ([True, True, True] if index == 0 else [False, index == 1, index == 2])


# ----------------------------------------------------------------------------- configurations


def test_paper_configuration_has_the_ports_parameter_count():
    with torch.device("meta"):  # count only: no 1 GB of weights
        model = build_model("paper")
    assert abs(sum(p.numel() for p in model.parameters()) - 259.4e6) < 0.01 * 259.4e6


def test_configurations_keep_every_part_and_one_fits_a_cpu():
    counts = {}
    for name in CONFIGS:
        with torch.device("meta"):
            model = build_model(name)
        assert {n for n, _ in model.named_children()} == {"y_network", "color_network"}
        counts[name] = sum(p.numel() for p in model.parameters())
    assert min(counts.values()) < 5e6
    assert counts["paper"] > counts["medium"] > counts["small"] > counts["tiny"]


def test_base_keeps_frequency_net_and_fits_two_returned_shards():
    """``base`` follows the capacity study (dense residual body, FrequencyNet kept) and its
    float16 weights fit the two 15 MiB shards that a GPU session's eight returned files
    leave room for (training/README.md)."""
    model = build_model("base").half()
    assert model.y_network.frequency is not None and CONFIGS["base"]["block_body"] == "residual"
    split = split_torch_state_dict_into_shards(model.state_dict(), max_shard_size=15 * 2**20)
    assert len(split.filename_to_tensors) == 2


@pytest.mark.parametrize("name", [n for n, (_, weights) in MODELS.items() if weights and weights.embedded])
def test_packaged_weights_are_built_as_their_registered_configuration(name):
    """``create_model("fast")`` must build the network that ``qgac-fast``'s weights were trained
    as: every constructor argument of the configuration but the statistics."""
    configuration, weights = MODELS[name]
    saved = read_config(embedded_folder(weights.embedded), QGAC)
    with torch.device("meta"):
        packaged = QGAC(**{k: v for k, v in saved.items() if k not in METADATA_KEYS}).config
        built = build_model(configuration).config
    assert {k: v for k, v in packaged.items() if not k.startswith("coefficient_")} == \
        {k: v for k, v in built.items() if not k.startswith("coefficient_")}


def test_config_rebuilds_the_model(tiny):
    rebuilt = QGAC(**tiny.config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in tiny.state_dict().items()}


#: Constructor options of the capacity study on top of ``tiny`` (cheaper BlockNet bodies, no FrequencyNet).
VARIANTS = {
    "residual": dict(block_body="residual", block_depth=2),
    "nafnet": dict(block_body="nafnet", block_depth=2, block_width=16),
    "no-frequency": dict(frequency_net=False),
    "residual-no-frequency": dict(block_body="residual", block_depth=1, frequency_net=False),
}


@pytest.mark.parametrize("options", VARIANTS.values(), ids=VARIANTS)
@pytest.mark.parametrize("factor", [None, (2, 2)])
def test_variants_keep_shapes_and_return_the_input_at_zero_residual(options, factor):
    torch.manual_seed(3)
    model = build_model("tiny", **options).eval()
    y, tables, chroma = inputs(2, 4, 6, factor)
    with torch.no_grad():
        out = model(y, tables, chroma, (2, 2))
    assert out.shape == (2, 1 if factor is None else 3, 32, 48) and out.isfinite().all()
    with torch.no_grad():
        assert torch.equal(zero_residual(model)(y, tables), y)


@pytest.mark.parametrize("name", ["residual", "no-frequency", "residual-no-frequency"])
def test_variant_gradients_reach_every_y_network_parameter(name):
    # (a fresh NAFNet block is the identity, so only its scales get gradients at first)
    torch.manual_seed(1)
    model = build_model("tiny", **VARIANTS[name]).train()
    y, tables, _ = inputs(2, 2, 4, None)
    model(y, tables).square().mean().backward()
    assert not [n for n, p in model.y_network.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]


def test_without_frequency_net_the_fusion_takes_the_two_blocknets():
    model = build_model("tiny", frequency_net=False)
    assert model.y_network.frequency is None
    assert not any(name.startswith("y_network.frequency") for name, _ in model.named_parameters())
    assert model.y_network.fusion.layers[0].in_channels == 64 * 2 * model.config["features"]


def test_default_options_are_the_papers_structure():
    with torch.device("meta"):
        model = build_model("paper")
    assert model.config["block_body"] == "rrdb" and model.config["block_depth"] == 3 and model.config["frequency_net"]
    assert len(model.y_network.block1.body.blocks) == 3


@pytest.mark.parametrize("options", VARIANTS.values(), ids=VARIANTS)
def test_variant_config_round_trips_through_save_pretrained(tmp_path, options):
    torch.manual_seed(4)
    model = build_model("tiny", **options).eval()
    model.save_pretrained(tmp_path)
    loaded = QGAC.from_pretrained(tmp_path)
    assert loaded.config == model.config
    y, tables, chroma = inputs(1, 2, 4, (2, 2))
    with torch.no_grad():
        assert torch.equal(loaded(y, tables, chroma), model(y, tables, chroma))


def test_unknown_block_body_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown block body"):
        build_model("tiny", block_body="transformer")


def test_unknown_configuration_is_a_clear_error():
    with pytest.raises(KeyError, match="tiny"):
        build_model("enormous")


@pytest.mark.parametrize("pretrained", [False, True])
def test_create_model_says_it_takes_no_dtype(pretrained):
    """Not "pretrained weights fix the configuration": dtype is no constructor argument."""
    with pytest.raises(TypeError, match=r"takes no dtype .*\.to\(dtype\)"):
        create_model("qgac-tiny" if not pretrained else "qgac-fast", pretrained=pretrained, dtype=torch.float16)


# ----------------------------------------------------------------------------- compilers


@pytest.mark.slow
def test_torch_compile(tiny):
    # aot_eager traces through dynamo and AOTAutograd (~10 s); inductor's C++ build takes minutes here
    compiled = torch.compile(tiny, backend="aot_eager", fullgraph=True)
    y, tables, chroma = inputs(1, 2, 4, (2, 2))
    with torch.no_grad():
        torch.testing.assert_close(compiled(y, tables, chroma, (2, 2)), tiny(y, tables, chroma, (2, 2)))


@pytest.mark.slow
def test_torch_export_with_dynamic_height_and_width(tiny):
    # in MCUs of 16 x 16; export assumes no dynamic size is 1, so a one-MCU-wide image needs padding
    height, width = torch.export.Dim("height", min=2, max=256), torch.export.Dim("width", min=2, max=256)
    y, tables, chroma = inputs(1, 4, 6, (2, 2))
    program = torch.export.export(
        tiny,
        (y, tables, chroma),
        {"chroma_factor": (2, 2)},
        dynamic_shapes={
            "y": {2: 16 * height, 3: 16 * width},
            "tables": None,
            "chroma": {2: 8 * height, 3: 8 * width},
            "chroma_factor": (None, None),
        },
    )
    for rows, cols in [(6, 10), (4, 4)]:  # other heights and widths
        y, tables, chroma = inputs(1, rows, cols, (2, 2), seed=5)
        with torch.no_grad():
            expected = tiny(y, tables, chroma, (2, 2))
        torch.testing.assert_close(program.module()(y, tables, chroma, chroma_factor=(2, 2)), expected)


def test_autocast_bfloat16_on_cpu(tiny):
    y, tables, chroma = inputs(1, 2, 4, (2, 2))
    with torch.no_grad():
        reference = tiny(y, tables, chroma)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = tiny(y, tables, chroma)
    assert out.shape == reference.shape and out.isfinite().all()
    assert (out.float() - reference).norm() / reference.norm() < 2e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_model_built_under_a_cuda_device_context_runs_there():
    with torch.device("cuda"):
        model = build_model("tiny").eval()
    y, tables = torch.randn(1, 1, 16, 16, device="cuda") * 50, torch.full((1, 3, 8, 8), 8.0, device="cuda")
    with torch.no_grad():
        assert model(y, tables).device.type == "cuda"
