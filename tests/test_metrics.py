"""Metrics against independent references: scikit-image, direct window loops, a hand-computed PSNR-B."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from qgac_transforms.metrics import blocking_effect_factor, mse, psnr, psnr_b, ssim


def _pair(seed: int, channels: int, height: int, width: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """A random reference (smooth plus texture) and a noisy uint8 copy, both (C, H, W)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = 128 + 60 * np.sin(x / 5 + rng.uniform(0, 6)) * np.cos(y / 7) + rng.normal(0, 20, (channels, height, width))
    reference = np.clip(base, 0, 255).round().astype(np.uint8)
    degraded = np.clip(reference + rng.normal(0, noise, reference.shape), 0, 255).round().astype(np.uint8)
    return reference, degraded


images = st.tuples(
    st.integers(0, 2**31 - 1),
    st.sampled_from([1, 3]),
    st.integers(11, 40),
    st.integers(11, 40),
    st.floats(1.0, 60.0),
)


@settings(deadline=None, max_examples=20)
@given(images)
def test_ssim_gaussian_matches_skimage(case):
    reference, degraded = _pair(*case)
    expected = structural_similarity(
        degraded.astype(np.float64), reference.astype(np.float64), channel_axis=0, gaussian_weights=True,
        sigma=1.5, use_sample_covariance=False, data_range=255,
    )  # fmt: skip
    ours = ssim(torch.from_numpy(degraded).double(), torch.from_numpy(reference).double())
    assert float(ours) == pytest.approx(expected, abs=1e-4)


def _ssim_uniform8_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Direct 8x8-window SSIM: every valid window's population statistics, averaged."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    wx = sliding_window_view(x.astype(np.float64), (8, 8), axis=(-2, -1))
    wy = sliding_window_view(y.astype(np.float64), (8, 8), axis=(-2, -1))
    mx, my = wx.mean(axis=(-2, -1)), wy.mean(axis=(-2, -1))
    vx, vy = wx.var(axis=(-2, -1)), wy.var(axis=(-2, -1))
    cov = ((wx - mx[..., None, None]) * (wy - my[..., None, None])).mean(axis=(-2, -1))
    values = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(values.mean())


@settings(deadline=None, max_examples=15)
@given(images)
def test_ssim_uniform8_matches_direct_windows(case):
    reference, degraded = _pair(*case)
    ours = ssim(torch.from_numpy(degraded).double(), torch.from_numpy(reference).double(), window="uniform8")
    assert float(ours) == pytest.approx(_ssim_uniform8_reference(degraded, reference), abs=1e-6)


@settings(deadline=None, max_examples=20)
@given(images)
def test_psnr_matches_skimage(case):
    reference, degraded = _pair(*case)
    expected = peak_signal_noise_ratio(reference, degraded, data_range=255)
    assert float(psnr(torch.from_numpy(degraded), torch.from_numpy(reference))) == pytest.approx(expected, abs=1e-4)


def test_psnr_b_hand_computed_step_edges():
    # 16x16, one channel: columns 0-3 are 100, 4-7 are 104, 8-15 are 114.
    image = torch.full((1, 16, 16), 114.0)
    image[:, :, :4] = 100.0
    image[:, :, 4:8] = 104.0
    reference = image + 2.0  # MSE 4
    # Neighbour pairs across block boundaries: 16 rows x column pair 7|8 (diff 10) plus
    # 16 columns x row pair 7|8 (diff 0): D_B = 16 * 100 / 32 = 50.
    # Other pairs: 16 * 14 horizontal, of which the 16 at 3|4 differ by 4, and
    # 16 * 14 vertical, all equal: D_B^c = 16 * 16 / 448 = 4 / 7.
    # eta = log2(8) / log2(16) = 3 / 4.
    bef = 0.75 * (50 - 4 / 7)
    assert float(blocking_effect_factor(image)) == pytest.approx(bef, rel=1e-6)
    assert float(psnr_b(image, reference)) == pytest.approx(10 * math.log10(255**2 / (4 + bef)), rel=1e-6)
    # The blocking term is the degraded image's (the first argument's) only.
    assert float(psnr_b(image, image)) == pytest.approx(10 * math.log10(255**2 / bef), rel=1e-6)
    flat = torch.full((1, 16, 16), 108.0)
    assert float(psnr_b(flat, image)) == pytest.approx(float(psnr(flat, image)), rel=1e-9)

def _bef_loops(x: np.ndarray) -> float:
    """Blocking effect factor of one (H, W) channel by visiting every neighbour pair."""
    height, width = x.shape
    boundary, inside = [], []
    for r in range(height):
        for c in range(width - 1):
            (boundary if c % 8 == 7 else inside).append((x[r, c] - x[r, c + 1]) ** 2)
    for r in range(height - 1):
        for c in range(width):
            (boundary if r % 8 == 7 else inside).append((x[r, c] - x[r + 1, c]) ** 2)
    d_b = np.mean(boundary) if boundary else 0.0
    d_bc = np.mean(inside) if inside else 0.0
    return math.log2(8) / math.log2(min(height, width)) * max(d_b - d_bc, 0.0)


@settings(deadline=None, max_examples=15)
@given(st.integers(0, 2**31 - 1), st.integers(2, 30), st.integers(2, 30))
def test_psnr_b_is_per_channel_average_with_loop_bef(seed, height, width):
    reference, degraded = _pair(seed, 3, height, width, 15.0)
    x = degraded.astype(np.float64)
    per_channel = [
        10 * math.log10(255**2 / (np.mean((x[c] - reference[c]) ** 2) + _bef_loops(x[c]))) for c in range(3)
    ]
    ours = psnr_b(torch.from_numpy(degraded), torch.from_numpy(reference).double())
    assert float(ours) == pytest.approx(np.mean(per_channel), rel=1e-9)


@settings(deadline=None, max_examples=20)
@given(images)
def test_bounds(case):
    reference, degraded = (torch.from_numpy(a).double() for a in _pair(*case))
    assert torch.allclose(ssim(reference, reference), torch.ones((), dtype=torch.float64))
    assert torch.allclose(ssim(reference, reference, window="uniform8"), torch.ones((), dtype=torch.float64))
    assert -1 <= float(ssim(degraded, reference)) <= 1
    assert math.isinf(float(psnr(reference, reference)))
    for c in range(reference.shape[0]):  # BEF >= 0: never above the PSNR of the same channel
        assert float(psnr_b(degraded[c : c + 1], reference[c : c + 1])) <= float(psnr(degraded[c : c + 1], reference[c : c + 1])) + 1e-9
    assert float(blocking_effect_factor(degraded)) >= 0


def test_uint8_inputs_match_float_and_do_not_wrap():
    reference, degraded = (torch.from_numpy(a) for a in _pair(3, 3, 24, 24, 30.0))
    assert reference.dtype == torch.uint8
    for metric in (mse, psnr, psnr_b, ssim):
        assert float(metric(degraded, reference)) == pytest.approx(float(metric(degraded.double(), reference.double())), rel=1e-5)
    assert float(mse(torch.zeros(1, 2, 2, dtype=torch.uint8), torch.full((1, 2, 2), 255, dtype=torch.uint8))) == 255**2


def test_batched_leading_dims_match_single_images():
    pairs = [_pair(seed, 3, 20, 24, 10.0) for seed in range(4)]
    references = torch.stack([torch.from_numpy(r) for r, _ in pairs]).double().reshape(2, 2, 3, 20, 24)
    degraded = torch.stack([torch.from_numpy(d) for _, d in pairs]).double().reshape(2, 2, 3, 20, 24)
    for metric in (psnr, psnr_b, ssim):
        batched = metric(degraded, references)
        assert batched.shape == (2, 2)
        single = torch.stack([metric(d, r) for d, r in zip(degraded.reshape(4, 3, 20, 24), references.reshape(4, 3, 20, 24))])
        assert torch.allclose(batched.reshape(4), single)


def test_bad_inputs_raise():
    x = torch.zeros(3, 16, 16)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(x, torch.zeros(3, 16, 17))
    with pytest.raises(ValueError, match="window"):
        ssim(x, x, window="box")
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.zeros(1, 10, 30), torch.zeros(1, 10, 30))
    with pytest.raises(ValueError, match=r"\(\.\.\., C, H, W\)"):
        psnr(torch.zeros(4, 4), torch.zeros(4, 4))
