"""Filter manifolds, QGAC's RRDB, the cheaper BlockNet bodies and the per-frequency plumbing of
:mod:`qgac_transforms.layers`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from qgac_transforms.layers import (
    BLOCK_BODIES,
    RRDB,
    CFMConv,
    LayerNorm2d,
    NAFBlock,
    ResidualBlock,
    TransposedCFMConv,
    block_body,
    group_concat,
)
from qgac_transforms.model import FrequencyNet, FusionNet, LearnedUpsample


def tables(batch: int, seed: int = 0) -> torch.Tensor:
    """``(B, 1, 8, 8)`` side channels in [0, 1], a different one per sample."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (batch, 1, 8, 8), generator=generator).float() / 255


def seeded(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    for parameter in module.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    return module


@settings(deadline=None, max_examples=10)
@given(
    in_channels=st.integers(1, 3),
    out_channels=st.integers(1, 4),
    batch=st.integers(1, 3),
    rows=st.integers(1, 3),
    cols=st.integers(1, 3),
)
def test_cfm_conv_is_a_stride_8_conv2d_with_the_generated_kernel(in_channels, out_channels, batch, rows, cols):
    layer = seeded(CFMConv(in_channels, out_channels, hidden=8)).double()
    x = torch.randn(batch, in_channels, 8 * rows, 8 * cols, dtype=torch.float64)
    side = tables(batch).double()
    out = layer(x, side)
    kernels, bias = layer.manifold(side)
    expected = torch.cat([
        F.conv2d(x[i : i + 1], kernels[i].reshape(out_channels, in_channels, 8, 8), bias[i], stride=8)
        for i in range(batch)
    ])
    assert out.shape == (batch, out_channels, rows, cols)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@settings(deadline=None, max_examples=10)
@given(
    in_channels=st.integers(1, 4),
    out_channels=st.integers(1, 3),
    batch=st.integers(1, 3),
    rows=st.integers(1, 3),
    cols=st.integers(1, 3),
)
def test_transposed_cfm_is_a_stride_8_conv_transpose2d_with_the_generated_kernel(
    in_channels, out_channels, batch, rows, cols
):
    layer = seeded(TransposedCFMConv(in_channels, out_channels, hidden=8)).double()
    x = torch.randn(batch, in_channels, rows, cols, dtype=torch.float64)
    side = tables(batch).double()
    out = layer(x, side)
    kernels, bias = layer.manifold(side)
    expected = torch.cat([
        F.conv_transpose2d(x[i : i + 1], kernels[i].reshape(in_channels, out_channels, 8, 8), bias[i], stride=8)
        for i in range(batch)
    ])
    assert out.shape == (batch, out_channels, 8 * rows, 8 * cols)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layer_class, shape", [(CFMConv, (4, 3, 16, 24)), (TransposedCFMConv, (4, 3, 2, 3))])
def test_cfm_batch_with_mixed_tables_equals_samples_one_by_one(layer_class, shape):
    layer = seeded(layer_class(3, 5, hidden=16))
    x = torch.randn(shape)
    side = tables(shape[0], seed=1)
    assert len({tuple(t.flatten().tolist()) for t in side}) == shape[0]  # every sample its own table
    batched = layer(x, side)
    one_by_one = torch.cat([layer(x[i : i + 1], side[i : i + 1]) for i in range(shape[0])])
    torch.testing.assert_close(batched, one_by_one, rtol=1e-5, atol=1e-5)
    # and the table matters: the same input under another table gives another output
    assert not torch.allclose(layer(x[:1], side[:1]), layer(x[:1], side[1:2]))


def test_cfm_takes_any_spatial_side_channel():
    layer = CFMConv(2, 3, hidden=4, side_channels=2, side_size=5)
    out = layer(torch.randn(2, 2, 16, 8), torch.rand(2, 2, 5, 5))
    assert out.shape == (2, 3, 2, 1)


def test_rrdb_parameter_count_is_qgacs():
    c = 32
    assert sum(p.numel() for p in RRDB(c).parameters()) == 405 * c**2 + 15 * c + 15


@settings(deadline=None, max_examples=25)
@given(
    groups=st.sampled_from([1, 2, 4, 64]),
    per_group=st.lists(st.integers(1, 3), min_size=1, max_size=4),
)
def test_group_concat_keeps_each_groups_channels_together(groups, per_group):
    # channel j of group g in tensor t holds g * 1000 + t * 10 + j (groups are contiguous blocks)
    tensors = [
        torch.tensor([g * 1000 + t * 10 + j for g in range(groups) for j in range(k)], dtype=torch.float32)
        .reshape(1, -1, 1, 1)
        .expand(2, -1, 2, 3)
        for t, k in enumerate(per_group)
    ]
    out = group_concat(tensors, groups)
    expected = [g * 1000 + t * 10 + j for g in range(groups) for t, k in enumerate(per_group) for j in range(k)]
    assert out.shape == (2, len(expected), 2, 3)
    assert out[0, :, 0, 0].tolist() == expected
    assert torch.equal(out, out[:1, :, :1, :1].expand_as(out))


def only_changes_frequency(module, x: torch.Tensor, *, frequency: tuple[int, int]) -> bool:
    """Perturb one frequency of every block; does the output change at that frequency only?"""
    u, v = frequency
    bumped = x.clone()
    bumped[..., u::8, v::8] += 1.0
    with torch.no_grad():
        change = (module(bumped) - module(x)).abs()
    mask = torch.zeros_like(change, dtype=torch.bool)
    mask[..., u::8, v::8] = True
    return bool(change[mask].max() > 1e-6) and bool(change[~mask].max() == 0)


@pytest.mark.parametrize("frequency", [(0, 0), (3, 5), (7, 7)])
def test_per_frequency_parts_never_mix_frequencies(frequency):
    x = torch.randn(1, 3, 24, 16)
    frequency_net = seeded(FrequencyNet(3, 2, 2))
    assert only_changes_frequency(frequency_net, x, frequency=frequency)
    fusion = seeded(FusionNet(3, 2))
    assert only_changes_frequency(lambda p: fusion([p[:, :1], p[:, 1:2], p[:, 2:]]), x, frequency=frequency)


def test_grouped_rrdb_keeps_frequencies_apart():
    rrdb = seeded(RRDB(64 * 2, groups=64))
    x = torch.randn(1, 128, 3, 2)
    bumped = x.clone()
    bumped[:, 2 * 17 : 2 * 18] += 1.0  # both channels of frequency 17
    with torch.no_grad():
        change = (rrdb(bumped) - rrdb(x)).abs().amax(dim=(0, 2, 3))
    assert change[34:36].min() > 0
    assert change[:34].max() == 0 and change[36:].max() == 0


@pytest.mark.parametrize("factor", [(1, 1), (1, 2), (2, 1), (2, 2), (1, 4), (4, 1), (4, 4)])
def test_learned_upsample_follows_the_sampling_factor(factor):
    upsample = LearnedUpsample(3)
    out = upsample(torch.randn(2, 3, 5, 7), factor)
    assert out.shape == (2, 3, 5 * factor[0], 7 * factor[1])


def test_learned_upsample_rejects_other_factors():
    with pytest.raises(ValueError, match="subsampling factor"):
        LearnedUpsample(3)(torch.randn(1, 3, 2, 2), (3, 1))


# ----------------------------------------------------------------------------- BlockNet bodies


@pytest.mark.parametrize("name", sorted(BLOCK_BODIES))
def test_block_bodies_keep_the_shape(name):
    body = block_body(name, 8, 2)
    x = torch.randn(2, 8, 5, 3)
    assert body(x).shape == x.shape


def test_fresh_naf_block_is_the_identity_and_learns_its_scales():
    block = NAFBlock(8)
    x = torch.randn(2, 8, 4, 6, requires_grad=True)
    out = block(x)
    assert torch.equal(out, x)
    out.square().sum().backward()
    assert block.spatial_scale.grad.abs().sum() > 0 and block.channel_scale.grad.abs().sum() > 0


def test_layer_norm_2d_normalizes_the_channels_of_each_position():
    x = torch.randn(2, 6, 3, 4) * 5 + 2
    out = LayerNorm2d(6)(x)
    torch.testing.assert_close(out, F.layer_norm(x.permute(0, 2, 3, 1), (6,), eps=1e-6).permute(0, 3, 1, 2))


def test_residual_block_adds_a_scaled_branch():
    block = seeded(ResidualBlock(4))
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + 0.2 * block.body(x))


def test_block_body_rejects_unknown_names_and_depths():
    with pytest.raises(ValueError, match="nafnet, residual, rrdb"):
        block_body("transformer", 8, 2)
    with pytest.raises(ValueError, match="at least 1"):
        block_body("residual", 8, 0)
