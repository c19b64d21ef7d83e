"""Training objectives of QGAC (paper section 3.4)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qgac_transforms.metrics import ssim


def regression_loss(output: Tensor, target: Tensor, ssim_weight: float = 0.05) -> Tensor:
    """Eq. 1: ``L1 - lambda * SSIM`` on pixels scaled to ``[0, 1]``."""
    output, target = output / 255.0, target / 255.0
    return F.l1_loss(output, target) - ssim_weight * ssim(output, target, data_range=1.0).mean()


def relativistic_generator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Relativistic average GAN loss for the generator (Jolicoeur-Martineau, 2018)."""
    real_rel = real_logits - fake_logits.mean()
    fake_rel = fake_logits - real_logits.mean()
    return 0.5 * (
        F.binary_cross_entropy_with_logits(real_rel, torch.zeros_like(real_rel))
        + F.binary_cross_entropy_with_logits(fake_rel, torch.ones_like(fake_rel))
    )


def relativistic_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Relativistic average GAN loss for the discriminator."""
    return relativistic_generator_loss(fake_logits, real_logits)


class TextureLoss(nn.Module):
    """Eq. 2: L1 distance between features of a frozen network at one layer.

    The paper uses conv5_3 of a MINC-trained VGG, which cannot be downloaded here;
    any ``features`` module works: its output is the compared feature map, or the
    output of ``layer`` (see :func:`layer_output`) when one is named.
    Inputs are pixels in ``[0, 255]``; ``mean``/``std`` normalize them for the network.
    """

    def __init__(self, features: nn.Module, layer: str | None = None,
                 mean: tuple[float, ...] = (0.485, 0.456, 0.406),
                 std: tuple[float, ...] = (0.229, 0.224, 0.225)) -> None:
        super().__init__()
        if layer is not None:
            features = layer_output(features, layer)
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean)[:, None, None])
        self.register_buffer("std", torch.tensor(std)[:, None, None])

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        prepare = lambda x: (x / 255.0 - self.mean) / self.std  # noqa: E731
        return F.l1_loss(self.features(prepare(output)), self.features(prepare(target)))


class _LayerOutput(nn.Module):
    """The one output of a torchvision feature extractor built by :func:`layer_output`, as a tensor."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, x: Tensor) -> Tensor:
        return self.extractor(x)["features"]


def layer_output(network: nn.Module, layer: str) -> nn.Module:
    """``network`` run up to ``layer``, returning that layer's output.

    ``layer`` is a node name as :func:`torchvision.models.feature_extraction.get_graph_node_names`
    lists them: ``"28"`` for the 29th module of an ``nn.Sequential``, ``"features.28"``
    for conv5_3 of ``torchvision.models.vgg16()``. Parameters keep their names.
    """
    from torchvision.models.feature_extraction import (  # noqa: PLC0415 - only the GAN stage needs torchvision
        create_feature_extractor,
        get_graph_node_names,
    )

    _, nodes = get_graph_node_names(network)
    if layer not in nodes:
        shown = ", ".join(nodes[:40]) + (", ..." if len(nodes) > 40 else "")
        raise ValueError(f"texture layer {layer!r} is not a node of {type(network).__name__}; its nodes: {shown}")
    return _LayerOutput(create_feature_extractor(network, return_nodes={layer: "features"}))


def vgg16_conv5_3() -> nn.Module:
    """VGG-16 up to conv5_3, before its ReLU (the pre-activation features of ESRGAN), randomly initialised.

    The same layers, with the same state-dict keys (``0.weight`` ... ``28.bias``), as
    ``torchvision.models.vgg16(weights=None).features[:29]``, without building the
    classifier. This is the architecture of the paper's MINC network; without trained
    weights (a safetensors file of this module's state dict) the texture term is only
    a placeholder.
    """
    from torchvision.models.vgg import cfgs, make_layers  # noqa: PLC0415 - only the GAN stage needs torchvision

    return make_layers(cfgs["D"])[:29]


def load_texture_network(spec: str, weights: str | Path | None = None) -> nn.Module:
    """Build the feature network named ``"module.path:callable"`` and load ``weights`` into it.

    The callable takes no arguments and returns an ``nn.Module`` whose output is the
    compared feature map; ``weights`` is a safetensors file of that module's state dict.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"texture network {spec!r}: expected 'module.path:callable'")
    try:
        factory: Callable[[], nn.Module] = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"texture network {spec!r}: cannot import it ({error})") from error
    try:
        network = factory()
    except TypeError as error:
        raise ValueError(f"texture network {spec!r}: cannot call it without arguments ({error})") from error
    if not isinstance(network, nn.Module):
        raise ValueError(f"texture network {spec!r}: returned {type(network).__name__}, not an nn.Module")
    if weights is not None:
        from safetensors import SafetensorError  # noqa: PLC0415
        from safetensors.torch import load_file  # noqa: PLC0415

        try:
            network.load_state_dict(load_file(str(weights)))
        except (OSError, RuntimeError, SafetensorError) as error:
            raise ValueError(f"{weights}: cannot load texture network weights for {spec!r} ({error})") from error
    return network


def gan_generator_loss(
    output: Tensor, target: Tensor, real_logits: Tensor, fake_logits: Tensor, texture: TextureLoss,
    gamma: float = 5e-3, nu: float = 1e-2,
) -> Tensor:
    """Eq. 3: texture loss + gamma * RaGAN loss + nu * L1 (pixels in [0, 255] scaled to [0, 1])."""
    l1 = F.l1_loss(output / 255.0, target / 255.0)
    return texture(output, target) + gamma * relativistic_generator_loss(real_logits, fake_logits) + nu * l1


class DCGANDiscriminator(nn.Module):
    """The DCGAN discriminator (Radford et al.): strided 4x4 convs, batch norm, LeakyReLU.

    Ends in a global average so it takes any patch size that is a multiple of 16.
    """

    def __init__(self, in_channels: int = 3, width: int = 64, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        channels = width
        for _ in range(depth - 1):
            layers += [nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(channels * 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            channels *= 2
        layers.append(nn.Conv2d(channels, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x / 127.5 - 1).mean(dim=(1, 2, 3))
