"""Building blocks of QGAC: Convolutional Filter Manifolds, QGAC's RRDB variant and cheaper BlockNet bodies."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dct import BLOCK


class FilterManifold(nn.Module):
    """The three-layer CNN of a Convolutional Filter Manifold (paper Fig. 3).

    Maps a spatial side channel ``(B, S, k, k)`` (in QGAC the 8x8 quantization table
    scaled to [0, 1]) to ``kernels`` 8x8 kernels and ``bias_size`` biases per sample.
    """

    def __init__(
        self, kernels: int, bias_size: int, hidden: int = 64, side_channels: int = 1, side_size: int = BLOCK
    ) -> None:
        super().__init__()
        self.encode = nn.Sequential(
            nn.Conv2d(side_channels, hidden, kernel_size=side_size),
            nn.PReLU(),
            nn.Conv2d(hidden, hidden, kernel_size=1),
            nn.PReLU(),
        )
        self.weight = nn.ConvTranspose2d(hidden, kernels, kernel_size=BLOCK)
        self.bias = nn.Conv2d(hidden, bias_size, kernel_size=1)

    def forward(self, side: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, S, k, k) -> ((B, kernels, 8, 8), (B, bias_size))``."""
        code = self.encode(side)
        return self.weight(code), self.bias(code).flatten(1)


class CFMConv(nn.Module):
    """8x8 stride-8 convolution whose kernel is generated per sample from a side channel.

    ``(B, in, 8h, 8w) -> (B, out, h, w)``. All blocks of all samples go through one
    batched matrix multiply, so a batch with a different table per sample is one op.
    """

    def __init__(
        self, in_channels: int, out_channels: int, hidden: int = 64, side_channels: int = 1, side_size: int = BLOCK
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.manifold = FilterManifold(out_channels * in_channels, out_channels, hidden, side_channels, side_size)

    def forward(self, x: Tensor, side: Tensor) -> Tensor:
        kernels, bias = self.manifold(side)
        b, _, height, width = x.shape
        weight = kernels.reshape(b, self.out_channels, -1)  # (B, out, in*64)
        columns = F.unfold(x, kernel_size=BLOCK, stride=BLOCK)  # (B, in*64, h*w)
        out = torch.baddbmm(bias[:, :, None], weight, columns)
        return out.view(b, -1, height // BLOCK, width // BLOCK)


class TransposedCFMConv(nn.Module):
    """Transposed CFM: ``(B, in, h, w) -> (B, out, 8h, 8w)``, each position to one 8x8 tile."""

    def __init__(
        self, in_channels: int, out_channels: int, hidden: int = 64, side_channels: int = 1, side_size: int = BLOCK
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.manifold = FilterManifold(in_channels * out_channels, out_channels, hidden, side_channels, side_size)

    def forward(self, x: Tensor, side: Tensor) -> Tensor:
        kernels, bias = self.manifold(side)
        b, c, h, w = x.shape
        weight = kernels.reshape(b, self.in_channels, -1).transpose(1, 2)  # (B, out*64, in)
        columns = torch.bmm(weight, x.reshape(b, c, h * w))  # (B, out*64, h*w)
        out = F.fold(columns, output_size=(h * BLOCK, w * BLOCK), kernel_size=BLOCK, stride=BLOCK)
        return out + bias[:, :, None, None]


def group_concat(tensors: list[Tensor], groups: int) -> Tensor:
    """Concatenate channels so that each of ``groups`` groups keeps its own channels together.

    With ``groups=64`` and frequency-major tensors, the result is still frequency-major,
    so a following grouped convolution never mixes frequencies.
    """
    if groups == 1:
        return torch.cat(tensors, dim=1)
    b, _, h, w = tensors[0].shape
    parts = [t.reshape(b, groups, -1, h, w) for t in tensors]
    return torch.cat(parts, dim=2).reshape(b, -1, h, w)


class DenseBlock(nn.Module):
    """Five 3x3 convs, each seeing all earlier features, PReLU after every one, 0.2 residual."""

    def __init__(self, channels: int, groups: int = 1, layers: int = 5, residual_scale: float = 0.2) -> None:
        super().__init__()
        self.groups, self.residual_scale = groups, residual_scale
        self.convs = nn.ModuleList(
            nn.Conv2d(channels * (i + 1), channels, kernel_size=3, padding=1, groups=groups) for i in range(layers)
        )
        self.activations = nn.ModuleList(nn.PReLU() for _ in range(layers))

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for conv, activation in zip(self.convs, self.activations):
            features.append(activation(conv(group_concat(features, self.groups))))
        return x + self.residual_scale * features[-1]


class RRDB(nn.Module):
    """QGAC's Residual-in-Residual Dense Block: growth equal to width, PReLU, 0.2 scaling twice.

    ``groups > 1`` makes every convolution grouped (FrequencyNet's per-frequency RRDB).
    """

    def __init__(self, channels: int, groups: int = 1, dense_blocks: int = 3, residual_scale: float = 0.2) -> None:
        super().__init__()
        self.residual_scale = residual_scale
        self.blocks = nn.Sequential(*(DenseBlock(channels, groups, residual_scale=residual_scale) for _ in range(dense_blocks)))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.residual_scale * self.blocks(x)


class ResidualBlock(nn.Module):
    """Two dense 3x3 convs with a PReLU between and an identity skip (EDSR-style, no normalization).

    Dense (ungrouped) 3x3 convolutions are what CPUs run closest to their peak, so this
    is the cheap-per-MAC alternative to RRDB's many narrow concatenating convs. The
    branch is scaled by ``residual_scale`` (0.2, as in RRDB) to keep a deep stack
    stable at the paper's learning rate.
    """

    def __init__(self, channels: int, residual_scale: float = 0.2) -> None:
        super().__init__()
        self.residual_scale = residual_scale
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.PReLU(), nn.Conv2d(channels, channels, 3, padding=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.residual_scale * self.body(x)


class LayerNorm2d(nn.Module):
    """Layer normalization over the channels of each position of a ``(B, C, H, W)`` map."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def simple_gate(x: Tensor) -> Tensor:
    """NAFNet's SimpleGate: split the channels in two halves and multiply them."""
    first, second = x.chunk(2, dim=1)
    return first * second


class NAFBlock(nn.Module):
    """A NAFNet block (Chen et al., 2022): activation-free, gated, with simplified channel attention.

    Spatial part: LayerNorm -> 1x1 (2x expansion) -> depthwise 3x3 -> SimpleGate ->
    simplified channel attention (global pool, 1x1, product) -> 1x1. Channel part:
    LayerNorm -> 1x1 (2x) -> SimpleGate -> 1x1. Each part is added back scaled by a
    learned per-channel factor that starts at zero, so a fresh block is the identity.
    """

    def __init__(self, channels: int, expansion: int = 2) -> None:
        super().__init__()
        hidden = expansion * channels
        self.spatial_norm = LayerNorm2d(channels)
        self.expand = nn.Conv2d(channels, hidden, 1)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(hidden // 2, hidden // 2, 1))
        self.project = nn.Conv2d(hidden // 2, channels, 1)
        self.channel_norm = LayerNorm2d(channels)
        self.channel_expand = nn.Conv2d(channels, hidden, 1)
        self.channel_project = nn.Conv2d(hidden // 2, channels, 1)
        self.spatial_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.channel_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        gated = simple_gate(self.depthwise(self.expand(self.spatial_norm(x))))
        x = x + self.spatial_scale * self.project(gated * self.attention(gated))
        gated = simple_gate(self.channel_expand(self.channel_norm(x)))
        return x + self.channel_scale * self.channel_project(gated)


#: Bodies of a BlockNet at block resolution: ``name -> (width, depth) -> module``.
#: ``depth`` counts RRDB's dense blocks (the paper: 3), or residual or NAFNet blocks.
BLOCK_BODIES = {
    "rrdb": lambda width, depth: RRDB(width, dense_blocks=depth),
    "residual": lambda width, depth: nn.Sequential(*(ResidualBlock(width) for _ in range(depth))),
    "nafnet": lambda width, depth: nn.Sequential(*(NAFBlock(width) for _ in range(depth))),
}


def block_body(name: str, width: int, depth: int) -> nn.Module:
    """The named body (:data:`BLOCK_BODIES`) of ``depth`` blocks, ``width`` channels wide."""
    if name not in BLOCK_BODIES:
        raise ValueError(f"unknown block body {name!r}; choose one of {', '.join(sorted(BLOCK_BODIES))}")
    if depth < 1:
        raise ValueError(f"block_depth must be at least 1, got {depth}")
    return BLOCK_BODIES[name](width, depth)
