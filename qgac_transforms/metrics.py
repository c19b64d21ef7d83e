"""Image quality metrics as batched torch functions: PSNR, PSNR-B and SSIM.

Images are ``(..., C, H, W)`` tensors on a ``[0, data_range]`` scale; every function
returns one value per image (the leading dims), averaging over channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _flatten(image: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    lead = image.shape[:-3]
    return image.reshape(-1, *image.shape[-3:]).to(torch.float64 if image.dtype == torch.float64 else torch.float32), lead


def mse(image: Tensor, reference: Tensor) -> Tensor:
    """Mean squared error per image."""
    return (image.to(reference.dtype) - reference).square().mean(dim=(-3, -2, -1))


def psnr(image: Tensor, reference: Tensor, data_range: float = 255.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per image (``inf`` for identical images)."""
    error = mse(image, reference)
    return 10 * torch.log10(data_range**2 / error)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(
    image: Tensor,
    reference: Tensor,
    data_range: float = 255.0,
    window: str = "gaussian",
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Structural similarity per image, averaged over channels and valid window positions.

    ``window="gaussian"``: the 11x11, sigma 1.5 window of the original SSIM paper and
    MATLAB's ``ssim`` (as ``skimage.metrics.structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)``). ``window="uniform8"``: an 8x8 uniform window, as
    the author's torchjpeg computes it; it reads about 0.01-0.02 higher.
    """
    x, lead = _flatten(image)
    y, _ = _flatten(reference.to(image.dtype))
    channels = x.shape[1]
    if window == "gaussian":
        kernel = _gaussian_window(window_size, sigma, x.dtype, x.device)
    elif window == "uniform8":
        kernel = torch.full((8, 8), 1 / 64, dtype=x.dtype, device=x.device)
    else:
        raise ValueError(f"unknown SSIM window {window!r}")
    kernel = kernel.expand(channels, 1, *kernel.shape).contiguous()

    def filt(t: Tensor) -> Tensor:
        return F.conv2d(t, kernel, groups=channels)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = filt(x), filt(y)
    sigma_x = filt(x * x) - mu_x**2
    sigma_y = filt(y * y) - mu_y**2
    sigma_xy = filt(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2)
    return (numerator / denominator).mean(dim=(-3, -2, -1)).reshape(lead)


def blocking_effect_factor(image: Tensor, block: int = 8) -> Tensor:
    """Blocking effect factor (Yim & Bovik 2011) per image, averaged over channels.

    Compares squared differences of neighbouring pixels across 8x8 block boundaries
    with those inside blocks, weighted by ``log2(block) / log2(min(H, W))``.
    """
    x, lead = _flatten(image)
    height, width = x.shape[-2:]
    dh = (x[..., :, :-1] - x[..., :, 1:]).square()  # horizontal neighbours, (N, C, H, W-1)
    dv = (x[..., :-1, :] - x[..., 1:, :]).square()
    col = torch.arange(width - 1, device=x.device)
    row = torch.arange(height - 1, device=x.device)
    across_h, across_v = (col % block) == block - 1, (row % block) == block - 1
    n_hb = height * int(across_h.sum())
    n_vb = width * int(across_v.sum())
    n_hbc = height * (width - 1) - n_hb
    n_vbc = width * (height - 1) - n_vb
    d_b = (dh[..., across_h].sum(dim=(-2, -1)) + dv[..., across_v, :].sum(dim=(-2, -1))) / max(n_hb + n_vb, 1)
    d_bc = (dh[..., ~across_h].sum(dim=(-2, -1)) + dv[..., ~across_v, :].sum(dim=(-2, -1))) / max(n_hbc + n_vbc, 1)
    eta = math.log2(block) / math.log2(min(height, width)) if min(height, width) > block else 0.0
    bef = eta * (d_b - d_bc).clamp(min=0)
    return bef.mean(dim=-1).reshape(lead)


def psnr_b(image: Tensor, reference: Tensor, data_range: float = 255.0) -> Tensor:
    """PSNR-B in dB per image: PSNR with the image's blocking effect factor added to the MSE.

    Defined per channel (MSE and BEF of each RGB or gray channel), then averaged over
    channels, as the author's torchjpeg computes it.
    """
    x, lead = _flatten(image)
    y, _ = _flatten(reference.to(image.dtype))
    per_channel_mse = (x - y).square().mean(dim=(-2, -1))  # (N, C)
    per_channel_bef = torch.stack(
        [blocking_effect_factor(x[:, c : c + 1]) for c in range(x.shape[1])], dim=-1
    )
    values = 10 * torch.log10(data_range**2 / (per_channel_mse + per_channel_bef))
    return values.mean(dim=-1).reshape(lead)
