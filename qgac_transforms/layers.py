"""Building blocks of QGAC: Convolutional Filter Manifolds and QGAC's RRDB variant."""

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
