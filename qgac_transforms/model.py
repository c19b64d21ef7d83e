"""The QGAC network (paper section 3): Y network, colour network and the full model.

All tensors are coefficient planes in image layout (see :mod:`qgac_transforms.dct`),
dequantized (level x step), with tables as raw quantization steps ``(B, C, 8, 8)``.

Where the paper and the author's later port (``m3l``) differ, this follows the paper;
the few choices the paper leaves open follow the port and are noted where made.

Following the paper (section 3, Figs. 3-9):

- CFM: a three-layer CNN from the 8x8 table to one kernel and bias per sample,
  applied with stride 8, and its transposed form (:mod:`.layers`).
- RRDB: 3 dense blocks of 5 3x3 convs, growth equal to width, PReLU after every
  conv, 0.2 residual scaling at both levels; grouped (64 groups) in FrequencyNet.
- Y network: BlockNet -> FrequencyNet -> BlockNet, a three-layer fusion of all
  three, the result a residual in the normalized coefficient domain.
- Colour network: chroma CFM, RRDB, learned upsampling, CFM of the restored Y,
  concatenation, RRDB, transposed CFM; the residual is added to nearest-neighbour
  upsampled input chroma (``chroma_upsampling="nearest"``); one set of weights for
  Cb and Cr.
- Each chroma plane is processed with its own table (Cb with the Cb table, Cr with
  the Cr table), as the paper describes. The port feeds the Cb table for Cr too.

From the port, where the paper is silent or only shows a figure:

- Filter manifold layers: ``Conv 8x8 -> PReLU -> Conv 1x1 -> PReLU``, then an 8x8
  transposed conv for the kernel and a 1x1 conv for the bias.
- BlockNet ends in PReLU and outputs ``features`` channels (the port: 64), so
  FrequencyNet and the fusion net take ``features`` channels per frequency.
- FrequencyNet's 3x3 grouped convs and the fusion widths (``fusion_width``
  channels per frequency in the two hidden layers; the port: 4).
- Tables are divided by 255 before a filter manifold.

Our own choices, beyond both:

- Learned upsampling (:class:`LearnedUpsample`) is separable, one 4-tap stride-2
  transposed conv per halving and axis, so one set of weights follows any
  sampling factor (4:2:0, 4:2:2, 4:4:0, 4:1:1, 4:1:0; none for 4:4:4). The paper and the
  port use one 4x4 stride-2 transposed conv, i.e. 4:2:0 only.
- Normalization statistics are buffers of the model and part of its config, not a
  global file.
- ``chroma_upsampling="fancy"`` adds the colour residual to libjpeg's triangular
  upsampling instead, the chroma decoders show, so that at high quality the network
  need not first undo the blocks of nearest-neighbour upsampling. A zero residual
  then gives the decoder's image but for a last row or column, where the model
  filters the chroma the encoder padded beyond the image and a decoder repeats the
  last real sample (the model is not told the image's size).
- Any size: the model itself needs whole MCUs; :mod:`.correction` pads the file's
  block grids to them with edge blocks and crops after (the port crashes when luma
  is not exactly twice the chroma grid).
"""

from __future__ import annotations

import inspect
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from torch import Tensor, nn

from .color import UPSAMPLING_MODES, upsample_chroma
from .dct import BLOCK, blocks_to_channels, channels_to_blocks, image_dct, image_idct
from .layers import RRDB, CFMConv, TransposedCFMConv, block_body, group_concat
from .hub import CONFIG_NAME, HubOptions, argument_type_problem, load_folder, resolve, write_folder
from .model_card import ModelCardInfo, render_card

FREQUENCIES = BLOCK * BLOCK
#: Quantization steps are divided by this before entering a filter manifold (paper: [0, 1]).
TABLE_SCALE = 255.0


class BlockNet(nn.Module):
    """Paper Fig. 5: CFM (8x8 stride 8) -> RRDB -> transposed CFM, both CFMs fed the table.

    ``body`` and ``depth`` choose what runs at block resolution between the two CFMs
    (:func:`.layers.block_body`; the paper: ``"rrdb"`` of 3 dense blocks).
    """

    def __init__(
        self, in_channels: int, width: int, out_channels: int, manifold_width: int, body: str = "rrdb", depth: int = 3
    ) -> None:
        super().__init__()
        self.encode = CFMConv(in_channels, width, manifold_width)
        self.encode_activation = nn.PReLU()
        self.body = block_body(body, width, depth)
        self.decode = TransposedCFMConv(width, out_channels, manifold_width)
        self.decode_activation = nn.PReLU()

    def forward(self, x: Tensor, table: Tensor) -> Tensor:
        blocks = self.encode_activation(self.encode(x, table))
        return self.decode_activation(self.decode(self.body(blocks), table))


class FrequencyNet(nn.Module):
    """Paper Fig. 6: frequency rearrangement, then per-frequency (64-group) convs and RRDB.

    ``per_frequency`` channels are computed for every frequency (the paper: 4, i.e. an
    RRDB of 256 channels in 64 groups).
    """

    def __init__(self, in_channels: int, per_frequency: int, out_channels: int) -> None:
        super().__init__()
        width = FREQUENCIES * per_frequency
        self.expand = nn.Conv2d(FREQUENCIES * in_channels, width, 3, padding=1, groups=FREQUENCIES)
        self.expand_activation = nn.PReLU()
        self.body = RRDB(width, groups=FREQUENCIES)
        self.reduce = nn.Conv2d(width, FREQUENCIES * out_channels, 3, padding=1, groups=FREQUENCIES)
        self.reduce_activation = nn.PReLU()

    def forward(self, x: Tensor) -> Tensor:
        features = self.expand_activation(self.expand(blocks_to_channels(x)))
        return channels_to_blocks(self.reduce_activation(self.reduce(self.body(features))))


class FusionNet(nn.Module):
    """Paper Fig. 7: three per-frequency convolutions fuse the subnetworks into one residual."""

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        f = FREQUENCIES
        self.layers = nn.Sequential(
            nn.Conv2d(f * in_channels, f * hidden, 3, padding=1, groups=f),
            nn.PReLU(),
            nn.Conv2d(f * hidden, f * hidden, 3, padding=1, groups=f),
            nn.PReLU(),
            nn.Conv2d(f * hidden, f, 3, padding=1, groups=f),
        )

    def forward(self, parts: Sequence[Tensor]) -> Tensor:
        stacked = group_concat([blocks_to_channels(p) for p in parts], FREQUENCIES)
        return channels_to_blocks(self.layers(stacked))


class YNetwork(nn.Module):
    """Paper Fig. 8: BlockNet -> FrequencyNet -> BlockNet, all three fused into a residual.

    Without FrequencyNet (``frequency_net=False``, an ablation) it is BlockNet -> BlockNet
    and the fusion takes the two BlockNets' outputs.
    """

    def __init__(
        self,
        block_width: int,
        features: int,
        per_frequency: int,
        manifold_width: int,
        fusion_width: int,
        block_body: str = "rrdb",
        block_depth: int = 3,
        frequency_net: bool = True,
    ) -> None:
        super().__init__()
        self.block1 = BlockNet(1, block_width, features, manifold_width, block_body, block_depth)
        self.frequency = FrequencyNet(features, per_frequency, features) if frequency_net else None
        self.block2 = BlockNet(features, block_width, features, manifold_width, block_body, block_depth)
        self.fusion = FusionNet((3 if frequency_net else 2) * features, fusion_width)

    def forward(self, y: Tensor, table: Tensor) -> Tensor:
        """Normalized Y coefficients ``(B, 1, H, W)`` -> normalized residual of the same shape."""
        parts = [self.block1(y, table)]
        if self.frequency is not None:
            parts.append(self.frequency(parts[-1]))
        parts.append(self.block2(parts[-1], table))
        return self.fusion(parts)


class LearnedUpsample(nn.Module):
    """Learned 2x upsampling of block features along each axis the file subsampled.

    The paper uses one 4x4 stride-2 transposed convolution for 4:2:0. To follow any
    sampling factor (4:2:2, 4:4:0, 4:1:1, 4:1:0) with one set of weights, this applies a
    1-D 4-tap stride-2 transposed convolution per halving, vertical then horizontal.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.vertical = nn.ConvTranspose2d(channels, channels, (4, 1), stride=(2, 1), padding=(1, 0))
        self.horizontal = nn.ConvTranspose2d(channels, channels, (1, 4), stride=(1, 2), padding=(0, 1))
        self.activation = nn.PReLU()

    def forward(self, x: Tensor, factor: tuple[int, int]) -> Tensor:
        for axis_factor, layer in ((factor[0], self.vertical), (factor[1], self.horizontal)):
            if axis_factor not in (1, 2, 4):
                raise ValueError(f"unsupported chroma subsampling factor {factor}")
            while axis_factor > 1:
                x = layer(x)
                axis_factor //= 2
        return self.activation(x) if factor != (1, 1) else x


class ColorNetwork(nn.Module):
    """Paper Fig. 9: restores one chroma plane to luma resolution, guided by the restored Y."""

    def __init__(self, width: int, manifold_width: int) -> None:
        super().__init__()
        self.encode = CFMConv(1, width, manifold_width)
        self.encode_activation = nn.PReLU()
        self.chroma_body = RRDB(width)
        self.upsample = LearnedUpsample(width)
        self.guide = CFMConv(1, width, manifold_width)
        self.guide_activation = nn.PReLU()
        self.body = RRDB(2 * width)
        self.decode = TransposedCFMConv(2 * width, 1, manifold_width)

    def forward(
        self, chroma: Tensor, chroma_table: Tensor, y: Tensor, y_table: Tensor, factor: tuple[int, int]
    ) -> Tensor:
        """Normalized chroma ``(B, 1, H/v, W/h)`` and restored Y ``(B, 1, H, W)`` ->
        normalized residual ``(B, 1, H, W)``."""
        blocks = self.encode_activation(self.encode(chroma, chroma_table))
        blocks = self.upsample(self.chroma_body(blocks), factor)
        guide = self.guide_activation(self.guide(y, y_table))
        return self.decode(self.body(torch.cat([blocks, guide], dim=1)), chroma_table)


def upsample_coefficients(plane: Tensor, factor: tuple[int, int], mode: str) -> Tensor:
    """A coefficient plane upsampled by ``factor`` in the pixel domain, ``mode`` one of
    :data:`.color.UPSAMPLING_MODES`."""
    if factor == (1, 1):
        return plane
    return image_dct(upsample_chroma(image_idct(plane), factor, mode))


class QGAC(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="qgac-transforms",
    license="mit",
    pipeline_tag="image-to-image",
    tags=["jpeg", "jpeg-artifact-correction", "image-restoration", "qgac"],
    paper_url="https://arxiv.org/abs/2004.09320",
):
    """The full QGAC model: the Y network, then (for colour) the colour network on Cb and Cr.

    The constructor arguments are the whole configuration (see :mod:`.configs`);
    ``block_body`` and ``block_depth`` pick the Y network's BlockNet bodies (the paper:
    ``"rrdb"``, 3 dense blocks; ``"residual"`` and ``"nafnet"`` are cheaper per MAC on a
    CPU), ``frequency_net=False`` drops FrequencyNet (an ablation);
    ``chroma_upsampling`` is how the chroma that the colour residual is added to is
    upsampled (the paper's ``"nearest"``, or libjpeg's ``"fancy"``, which decoders show);
    ``coefficient_mean`` and ``coefficient_std`` are the per-channel (Y, Cb, Cr),
    per-frequency (natural order) statistics used to normalize coefficients.

    ``save_pretrained`` and ``push_to_hub`` come from
    :class:`huggingface_hub.PyTorchModelHubMixin`, through its ``_save_pretrained`` hook;
    ``from_pretrained`` takes the mixin's arguments and goes straight to its
    ``_from_pretrained`` hook. The folder format, strict loading and the Hub download are
    in :mod:`.hub`.
    """

    def __init__(
        self,
        block_width: int = 256,
        features: int = 64,
        per_frequency: int = 4,
        manifold_width: int = 64,
        fusion_width: int = 4,
        color_width: int = 32,
        color: bool = True,
        block_body: str = "rrdb",
        block_depth: int = 3,
        frequency_net: bool = True,
        chroma_upsampling: str = "nearest",
        coefficient_mean: Sequence[Sequence[float]] | None = None,
        coefficient_std: Sequence[Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        plain = {  # numpy integers as ints: config.json must hold what loading accepts
            name: int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
            for name, value in dict(
                block_width=block_width, features=features, per_frequency=per_frequency,
                manifold_width=manifold_width, fusion_width=fusion_width, color_width=color_width, color=color,
                block_body=block_body, block_depth=block_depth, frequency_net=frequency_net,
                chroma_upsampling=chroma_upsampling,
            ).items()
        }
        if problem := argument_type_problem(plain, QGAC):
            name, kind = problem
            raise TypeError(f"{name} must be {kind}, got {plain[name]!r}")
        with torch.device("cpu"):  # checked here, so the model can also be built under torch.device("meta")
            mean = torch.zeros(3, FREQUENCIES) if coefficient_mean is None else torch.tensor(coefficient_mean)
            std = torch.ones(3, FREQUENCIES) if coefficient_std is None else torch.tensor(coefficient_std)
        if mean.shape != (3, FREQUENCIES) or std.shape != (3, FREQUENCIES):
            raise ValueError("coefficient_mean and coefficient_std must be 3 x 64 (Y, Cb, Cr by frequency)")
        if not bool((std > 0).all()):
            raise ValueError("coefficient_std must be positive")
        if chroma_upsampling not in UPSAMPLING_MODES:
            raise ValueError(f"chroma_upsampling must be one of {UPSAMPLING_MODES}, got {chroma_upsampling!r}")
        #: The constructor arguments: everything needed to rebuild this model.
        self.config = {**plain, "coefficient_mean": mean.tolist(), "coefficient_std": std.tolist()}
        y_arguments = inspect.signature(YNetwork).parameters
        self.y_network = YNetwork(**{name: value for name, value in plain.items() if name in y_arguments})
        self.color_network = ColorNetwork(plain["color_width"], plain["manifold_width"]) if plain["color"] else None
        # on the device the model is built on (under torch.device("cuda"), the GPU), except on
        # "meta", where the statistics keep their values: loading checks the file against them
        place = torch.get_default_device()
        place = torch.device("cpu") if place.type == "meta" else place
        self.register_buffer("coefficient_mean", mean.reshape(3, BLOCK, BLOCK).to(place, torch.float32))
        self.register_buffer("coefficient_std", std.reshape(3, BLOCK, BLOCK).to(place, torch.float32))

    @property
    def chroma_upsampling(self) -> str:
        """The upsampling of the chroma that the colour residual is added to (from :attr:`config`)."""
        return self.config["chroma_upsampling"]

    # ------------------------------------------------------------ Hub integration
    def save_pretrained(self, save_directory: str | os.PathLike[str], **kwargs: Any) -> str | None:
        """The mixin's ``save_pretrained`` (its arguments; ``push_to_hub=True`` uploads too),
        except that a save that fails leaves an earlier one in ``save_directory`` loadable:
        the mixin deletes ``config.json`` before writing, and it is put back."""
        config_path = Path(save_directory) / CONFIG_NAME
        earlier = config_path.read_bytes() if config_path.is_file() else None
        try:
            return super().save_pretrained(save_directory, **kwargs)
        except BaseException:
            if earlier is not None and not config_path.exists():
                config_path.write_bytes(earlier)
            raise

    def _save_pretrained(self, save_directory: Path) -> None:
        """The mixin's hook for ``save_pretrained`` and ``push_to_hub``: the folder format of :mod:`.hub`."""
        write_folder(self, save_directory)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        *,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        map_location: str | torch.device = "cpu",
    ) -> QGAC:
        """A saved folder or Hub repo id, as the mixin's ``from_pretrained`` takes them, read
        and checked by :mod:`.hub` alone: the mixin's own method parses ``config.json`` before
        its hook runs, so a bad folder or an uncached repo would raise its untyped errors
        instead of :class:`~.hub.InvalidWeightsError` or :class:`~.hub.WeightsNotFoundError`."""
        return cls._from_pretrained(
            model_id=os.fspath(pretrained_model_name_or_path), revision=revision, cache_dir=cache_dir,
            force_download=force_download, local_files_only=local_files_only, token=token, map_location=map_location,
        )

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | os.PathLike[str] | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str | torch.device = "cpu",
        **config: Any,
    ) -> QGAC:
        """The mixin's hook for ``from_pretrained``: a saved folder or a Hub repo id, loaded strictly
        (:func:`~.hub.load_folder` reads and checks ``config.json`` itself, so the ``config``
        the mixin passes is not used); eval mode. Registered names and the default model
        are :func:`~qgac_transforms.configs.create_model`'s."""
        options = HubOptions(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token,
                             force_download=force_download)
        return load_folder(resolve(model_id, options), cls, map_location=map_location)

    def generate_model_card(
        self, *args: Any, card: ModelCardInfo | Mapping[str, Any] | None = None, shards: int = 1, **kwargs: Any
    ) -> ModelCard:
        """The model card written by ``save_pretrained(..., model_card_kwargs={"card": ...})``;
        ``shards``: how many files hold the weights (:func:`~.hub.save_model`)."""
        info = ModelCardInfo.coerce(card if card is not None else {"model_name": type(self).__name__})
        mixin = self._hub_mixin_info
        return render_card(
            info, mixin.model_card_data, parameters=sum(p.numel() for p in self.parameters()),
            repo_url=mixin.repo_url, paper_url=mixin.paper_url, shards=shards,
        )

    def _tiled_stats(self, channel: int, plane: Tensor) -> tuple[Tensor, Tensor]:
        rows, cols = plane.shape[-2] // BLOCK, plane.shape[-1] // BLOCK
        mean = self.coefficient_mean[channel].to(plane.dtype).repeat(rows, cols)
        std = self.coefficient_std[channel].to(plane.dtype).repeat(rows, cols)
        return mean, std

    def normalize(self, plane: Tensor, channel: int) -> Tensor:
        mean, std = self._tiled_stats(channel, plane)
        return (plane - mean) / std

    def correct_y(self, y: Tensor, y_table: Tensor) -> Tensor:
        """Corrected Y coefficients; a zero residual returns ``y`` exactly."""
        side = (y_table / TABLE_SCALE).to(y.dtype)[:, None]
        residual = self.y_network(self.normalize(y, 0), side)
        return y + residual * self._tiled_stats(0, y)[1]

    def forward(
        self,
        y: Tensor,
        tables: Tensor,
        chroma: Tensor | None = None,
        chroma_factor: tuple[int, int] = (2, 2),
    ) -> Tensor:
        """Correct one batch of coefficients.

        ``y``: ``(B, 1, H, W)``; ``tables``: ``(B, 1 or 3, 8, 8)`` steps per component;
        ``chroma``: ``(B, 2, H/v, W/h)`` with ``(v, h) = chroma_factor`` or ``None``
        (grayscale). Returns ``(B, 1, H, W)`` or ``(B, 3, H, W)``: Y, Cb, Cr at full
        resolution, dequantized.
        """
        y_table = tables[:, 0]
        corrected_y = self.correct_y(y, y_table)
        if chroma is None:
            return corrected_y
        if self.color_network is None:
            raise ValueError("this model was built without a colour network (color=False)")
        b, _, height, width = y.shape
        v, h = chroma_factor = (int(chroma_factor[0]), int(chroma_factor[1]))  # a list would miss the (1, 1) checks
        if chroma.shape[-2] * v != height or chroma.shape[-1] * h != width:
            raise ValueError(
                f"chroma {tuple(chroma.shape[-2:])} x factor {chroma_factor} does not cover Y {(height, width)}; "
                "pad both to a whole MCU first (see qgac_transforms.correction)"
            )
        # Cb and Cr share one set of weights: run them as one batch of 2B planes.
        planes = torch.cat([chroma[:, 0:1], chroma[:, 1:2]], dim=0)
        chroma_tables = torch.cat([tables[:, 1], tables[:, 2]], dim=0)
        side = (chroma_tables / TABLE_SCALE).to(y.dtype)[:, None]
        y_side = (y_table / TABLE_SCALE).to(y.dtype)[:, None].repeat(2, 1, 1, 1)
        normalized_y = self.normalize(corrected_y, 0).repeat(2, 1, 1, 1)
        normalized = torch.cat([self.normalize(planes[:b], 1), self.normalize(planes[b:], 2)], dim=0)
        residual = self.color_network(normalized, side, normalized_y, y_side, chroma_factor)
        base = upsample_coefficients(planes, chroma_factor, self.chroma_upsampling)
        std = torch.cat([self._tiled_stats(1, base)[1].expand(b, 1, -1, -1), self._tiled_stats(2, base)[1].expand(b, 1, -1, -1)])
        restored = base + residual * std
        return torch.cat([corrected_y, restored[:b], restored[b:]], dim=1)
