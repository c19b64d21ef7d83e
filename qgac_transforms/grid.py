"""Decoded JPEG pixels back on their JPEG's grid: block phase, orientation, tables, subsampling.

A JPEG decode keeps the 8x8 block grid of its file. Where the file's blocks were, the
DCT of the decoded pixels gives the file's coefficients up to rounding noise, each a
multiple of its quantization step; a pixel off, the blocks straddle the file's block
edges and the coefficients are multiples of nothing. So the grid of a crop at any
offset, a flip or a quarter turn of a decode can be read off its pixels
(:func:`find_grid`):

1. **Luma phase.** At the right column phase, 8-pixel row segments lie inside the
   file's blocks, and many of their 1-D DCT coefficients are near zero: those the
   quantization zeroed. Up to quality 50 or so, one phase per axis stands out by far.
2. **Steps, quality, orientation.** Each frequency's step is read where most of the
   unclipped blocks' coefficients sit near its multiples (:func:`read_steps`).
   libjpeg's scaled standard tables are fitted to the steps (blind mode), as they are
   and transposed: a quarter turn, a transpose or an ``exif_transpose`` of
   orientations 5 to 8 transposes every block, and so the tables. Where no phase
   stands out (quality 85 and above, or no JPEG at all), all 64 phases are screened
   and the one whose steps are a standard (or the given) table's at the most
   frequencies is taken; pixels whose steps match no table at any phase show no grid.
3. **Chroma subsampling and MCU phase.** Each subsampling and each MCU phase that
   agrees with the luma phase (a 4:2:0 MCU is 16 pixels: two chroma phases per axis)
   is scored by how well the chroma is explained by chroma subsampled that way (the
   least-squares inverse of the decoder's upsampling) and quantized by the chroma table.

:func:`recover_inputs` then re-encodes the pixels on that grid, in the JPEG's stored
orientation. Pixels the decoder clipped at 0 or 255, and the parts of the edge MCUs
that a crop cut off, are unknown: it alternates between quantizing and decoding
(projecting onto the coefficients on the quantization lattice, then onto the pixels
that agree with the known ones), which finds coefficients that decode to the known
pixels.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import Tensor

from .codec import coefficients_to_pixels, pixels_to_coefficients
from .color import downsample_chroma, rgb_to_ycbcr, upsample_chroma
from .correction import ModelInputs
from .dct import BLOCK, ZIGZAG, block_dct, blockify, dct_matrix
from .jpeg_io import SUBSAMPLINGS, subsampling_name
from .quantization import all_quality_tables, dequantize, quality_tables, quality_to_table, quantize

logger = logging.getLogger("qgac_transforms")

#: How many non-zero coefficients (and textured blocks) it takes to read a quantization step.
MIN_SUPPORT = 20
#: The luma grid is searched in a central window of at most this many pixels a side, the
#: chroma grid in the part of it of at most :data:`CHROMA_WINDOW` (twice that where over a
#: tenth of the pixels are clipped) where the chroma changes most (cut at multiples of 32
#: pixels from the top left, so that every MCU phase is the whole image's).
SEARCH_WINDOW, CHROMA_WINDOW = 512, 256
#: The luma phases are ranked on a central part of the search window this many pixels a side.
RANKING_WINDOW = 320
#: The chroma subsamplings blind mode tells apart, the likeliest first (4:1:1 only when given).
BLIND_SUBSAMPLINGS = ("4:2:0", "4:2:2", "4:4:4", "4:4:0")
#: Largest quantization step that is looked for (baseline tables: 255).
MAX_STEP = 255
#: How far (in coefficient units) decoded AC and DC coefficients may lie from their
#: multiples, at most, to count as on the grid (see :func:`read_steps`).
_AC_TOLERANCE, _DC_TOLERANCE = 2, 8
#: Histogram bins, in quarter units: orthonormal 8x8 DCT coefficients of 8-bit pixels stay below 1024 + noise.
_BINS = 4 * 1100
#: Every step q and each of its multiples (in quarter units) inside the histogram, as two flat index tensors.
_MULTIPLES = tuple(
    torch.tensor(values)
    for values in zip(*[(q, 4 * q * m) for q in range(1, MAX_STEP + 1) for m in range(1, (_BINS - 1) // (4 * q) + 1)])
)
#: Luma blocks whose steps are read, at most (the most textured ones carry the evidence).
MAX_BLOCKS = 4096
#: A phase stands out when the share of its 1-D DCT coefficients that are not near zero is
#: below this fraction of the runner-up's on both axes: JPEG decodes of quality 50 and
#: below are far below it, lossless and resized images at 0.95 or more. A phase that does
#: not stand out (quality 90 and above) is accepted only where the steps read there are
#: those of the fitted (or given) tables at :data:`MIN_MATCHES` frequencies.
STANDOUT = 0.9
MIN_MATCHES = 3
#: Fewest textured blocks (any 8x8 AC coefficient of 2 or more) whose lack of any grid
#: shows that pixels are no JPEG decode; with fewer, it may be a small or smooth crop of one.
GRID_EVIDENCE = 256
#: Where no phase stands out, all 64 are screened on this many of the lowest frequencies
#: (zigzag order) of this many blocks.
SCREENED, SCREENED_BLOCKS = 15, 512
#: A chroma subsampling and phase replaces the likelier one before it (4:2:0 first, at the
#: luma offset) only if its misfit is below this fraction of that one's, and misfits below
#: :data:`CHROMA_NOISE` (squared levels per sample: the decoder's rounding) are equal: flat
#: chroma fits every one.
CHROMA_MARGIN, CHROMA_NOISE = 0.8, 0.05
#: Fewest MCUs a chroma subsampling and phase is judged on.
MIN_MCUS = 2
#: Rounds of :func:`recover_inputs` where pixels are clipped or missing.
RECOVERY_ROUNDS = 3


@dataclass(frozen=True)
class JPEGGrid:
    """How decoded pixels sit on the JPEG they were decoded from.

    ``transposed``: the pixels are the transpose of the JPEG's stored orientation (a
    quarter turn, or a transpose or transverse); everything else here is in that
    stored orientation. ``offset``: rows and columns of the JPEG's first MCU that lie
    above and left of the pixels (0 for an uncropped decode). ``factor``: chroma
    subsampling ``(vertical, horizontal)``, ``(1, 1)`` for grayscale. ``tables``:
    ``(C, 8, 8)`` int32 steps. ``quality``: the libjpeg quality of the tables, if they
    were estimated or given as a quality.
    """

    offset: tuple[int, int]
    transposed: bool
    factor: tuple[int, int]
    tables: Tensor
    quality: int | None = None

    @property
    def subsampling(self) -> str:
        """``"4:2:0"`` and so on; ``"gray"`` for one channel."""
        return "gray" if self.tables.shape[0] == 1 else subsampling_name(self.factor)

    def describe(self) -> str:
        """One line for logs and ``qgac info``."""
        quality = f"quality {self.quality}" if self.quality is not None else "given tables"
        turned = ", transposed (a quarter turn of the JPEG)" if self.transposed else ""
        return f"{quality}, {self.subsampling}, grid offset {self.offset[0]},{self.offset[1]}{turned}"


# --------------------------------------------------------------------------- reading steps


def read_steps(coefficients: Tensor, min_support: int = MIN_SUPPORT) -> tuple[Tensor, Tensor]:
    """Per-frequency quantization steps of ``(N, 64)`` DCT coefficients of decoded blocks.

    A frequency's step is first the largest ``q`` (up to 255) such that, of the
    coefficients ``q`` does not round to zero (at least ``min_support`` of them), 90% lie
    within a tolerance of a multiple of ``q``: decoding adds only rounding noise to
    coefficients that were exact multiples of their step. The tolerance is ``min(2, q/4)``,
    ``min(8, q/4)`` for the DC coefficient: the decoder rounds every luma sample and then
    every RGB value, and in a flat block all 64 round the same way, moving the DC by up
    to 8. The step is then refined
    to the least-squares ratio of the coefficients to their levels, which averages that
    noise out. Counted on a histogram of the magnitudes in quarter units. Returns
    ``(steps, support)``, ``(64,)`` int64; a step is 0 where too few coefficients were
    non-zero to tell.
    """
    device = coefficients.device
    quarters = (coefficients.abs().to(torch.float32) * 4).round().to(torch.int64).clamp(max=_BINS - 1)
    histogram = torch.zeros(coefficients.shape[1], _BINS, dtype=torch.float32, device=device)
    histogram.scatter_add_(1, quarters.T.contiguous(), torch.ones(quarters.T.shape, device=device))
    at_least = histogram.flip(-1).cumsum(-1).flip(-1)  # at_least[f, b]: magnitudes of b quarters or more
    pad = 4 * _DC_TOLERANCE
    running = nnf.pad(nnf.pad(histogram, (pad, pad)).cumsum(-1), (1, 0))  # running[f, b + pad]: below b
    step, multiple = _MULTIPLES
    tolerance = torch.full((coefficients.shape[1], 1), 4 * _AC_TOLERANCE, device=device)
    tolerance[0] = 4 * _DC_TOLERANCE
    tolerance = tolerance.clamp(max=step.to(device)[None])  # (frequencies, pairs): min(T, q/4) in quarters
    centre = multiple.to(device)[None] + pad
    within = running.gather(1, centre + tolerance + 1) - running.gather(1, centre - tolerance)
    near = torch.zeros(coefficients.shape[1], MAX_STEP, device=device).index_add_(1, step.to(device) - 1, within).T
    count = at_least[:, 2 * torch.arange(1, MAX_STEP + 1, device=device)].T  # |c| >= q/2: not rounded to zero
    steps = torch.arange(1, MAX_STEP + 1, device=device)[:, None]
    found = (count >= min_support) & (near >= 0.9 * count)
    coarse = torch.where(found, steps, 0).amax(0)
    support = count.gather(0, (coarse - 1).clamp(min=0)[None])[0].to(torch.int64) * (coarse > 0)
    # least squares c = step * level over the coefficients not rounded to zero
    magnitude = torch.arange(_BINS, device=device, dtype=torch.float32) / 4
    levels = torch.round(magnitude[None] / coarse.clamp(min=1)[:, None])
    weights = histogram * levels
    refined = (weights * magnitude).sum(1) / (weights * levels).sum(1).clamp(min=1)
    return torch.where(coarse > 0, refined.round().to(torch.int64).clamp(min=1), 0), support


def luma_plane(pixels: Tensor) -> Tensor:
    """The JPEG luma of ``(C, H, W)`` pixels in ``[0, 255]`` (the one channel of a grayscale image)."""
    return rgb_to_ycbcr(pixels.to(torch.float32))[0] if pixels.shape[0] == 3 else pixels[0].to(torch.float32)


def clipped_pixels(pixels: Tensor) -> Tensor:
    """``(H, W)`` mask of the pixels where a channel is 0 or 255: the decoder clipped there,
    so they say little about the coefficients."""
    return ((pixels <= 0) | (pixels >= 255)).any(0)


def _blocks(plane: Tensor, phase: tuple[int, int]) -> Tensor:
    """The whole 8x8 blocks of ``(..., H, W)`` whose grid starts at ``phase``: ``(..., N, 8, 8)``."""
    top, left = phase
    rows, cols = (plane.shape[-2] - top) // BLOCK, (plane.shape[-1] - left) // BLOCK
    window = plane[..., top : top + rows * BLOCK, left : left + cols * BLOCK]
    return blockify(window).flatten(-4, -3)


def _unclipped_coefficients(luma: Tensor, clipped: Tensor, phase: tuple[int, int], most: int = MAX_BLOCKS) -> Tensor:
    """``(N, 64)`` DCT coefficients of the unclipped luma blocks at ``phase``, the ``most``
    textured of them (the flat ones still show the DC step)."""
    keep = ~_blocks(clipped, phase).flatten(-2).any(-1)
    coefficients = block_dct(_blocks(luma - 128.0, phase)[keep]).flatten(-2)
    if coefficients.shape[0] > most:
        coefficients = coefficients[coefficients[:, 1:].abs().sum(1).topk(most).indices]
    return coefficients


def _phase_steps(luma: Tensor, clipped: Tensor, phase: tuple[int, int], screening: bool) -> Tensor:
    """The ``(64,)`` steps read at ``phase``; ``screening``: read only the lowest
    :data:`SCREENED` frequencies of the most textured blocks (the rest 0), for a quick look."""
    if not screening:
        return read_steps(_unclipped_coefficients(luma, clipped, phase))[0]
    lowest = list(ZIGZAG[:SCREENED])
    steps = torch.zeros(BLOCK * BLOCK, dtype=torch.int64, device=luma.device)
    steps[lowest] = read_steps(_unclipped_coefficients(luma, clipped, phase, SCREENED_BLOCKS)[:, lowest])[0]
    return steps


def _near_zero_share(plane: Tensor) -> Tensor:
    """``(8,)``: for each column phase, the share of near-zero (below 0.5) 1-D DCT AC
    coefficients of the 8-pixel row segments that start there. Highest on the grid,
    where the coefficients quantized to zero are."""
    width = plane.shape[-1]
    if width < 2 * BLOCK:
        return torch.zeros(BLOCK)
    ac = plane.unfold(-1, BLOCK, 1) @ dct_matrix(plane.dtype, plane.device)[1:].T  # (H, W - 7, 7)
    near = (ac.abs() < 0.5).to(torch.float32).mean((0, 2))
    return torch.stack([near[phase::BLOCK].mean() for phase in range(BLOCK)]).cpu()


def _phase_candidates(luma: Tensor) -> tuple[list[tuple[int, int]], bool]:
    """The 64 luma block phases (first whole block row and column), the likeliest first,
    and whether the first stands out on both axes (:data:`STANDOUT`)."""
    luma = luma[_window(luma, RANKING_WINDOW)]
    shares = _near_zero_share(luma.T), _near_zero_share(luma)
    tops = [share.topk(2).values for share in shares]
    stands_out = all(float(1 - top[0]) < STANDOUT * float(1 - top[1]) for top in tops)
    pairs = [(r, c) for r in range(BLOCK) for c in range(BLOCK)]
    return sorted(pairs, key=lambda rc: -float(shares[0][rc[0]] + shares[1][rc[1]])), stands_out


def _window(pixels: Tensor, size: int, weight: Tensor | None = None) -> tuple[slice, slice]:
    """Where to look in ``(..., H, W)`` pixels: at most ``size`` a side, starting at
    multiples of 32 pixels so that its grid offsets are the image's; the central one, or,
    given a ``(H, W)`` ``weight``, the one of those on a 64-pixel lattice with the most."""
    height, width = pixels.shape[-2:]
    if weight is None:
        top, left = max(0, (height - size) // 2) // 32 * 32, max(0, (width - size) // 2) // 32 * 32
    else:
        tops, lefts = range(0, max(1, height - size + 1), 64), range(0, max(1, width - size + 1), 64)
        top, left = max(((t, l) for t in tops for l in lefts), key=lambda tl: float(weight[tl[0] : tl[0] + size, tl[1] : tl[1] + size].sum()))
    return slice(top, top + size), slice(left, left + size)


def _chroma_detail(pixels: Tensor, clipped: Tensor) -> Tensor:
    """``(H, W)``: how much the chroma of ``(3, H, W)`` pixels changes at each unclipped pixel
    (the chroma grid shows where the chroma changes, and clipped pixels hide it)."""
    chroma = rgb_to_ycbcr(pixels.to(torch.float32))[1:]
    change = nnf.pad((chroma[:, 1:] - chroma[:, :-1]).abs().sum(0), (0, 0, 0, 1)) + nnf.pad(
        (chroma[..., 1:] - chroma[..., :-1]).abs().sum(0), (0, 1)
    )
    return change * ~clipped


# --------------------------------------------------------------------------- fitting tables


def _misfits(candidates: Tensor, steps: Tensor) -> Tensor:
    """How badly ``(K, 64)`` candidate tables explain the read steps: the sum over the read
    steps of ``|candidate - step| / candidate``, or a quarter more than that for half the
    step (where few coefficients are non-zero, their levels can all be even, and the step
    read is twice the table's), each capped at 0.5 so that one misread step cannot
    outweigh the others."""
    known = steps >= 2  # a step of 1 is read off rounding noise as often as off a grid
    chosen = candidates[:, known].to(torch.float64)
    read = steps[known].to(chosen)
    errors = torch.minimum((chosen - read).abs() / chosen, (chosen - read / 2).abs() / chosen + 0.25)
    return errors.clamp(max=0.5).sum(1)


@functools.cache
def _standard_tables() -> Tensor:
    """``(200, 64)``: libjpeg's luma tables for qualities 1..100, then the same transposed."""
    tables = all_quality_tables()
    return torch.cat([tables, tables.transpose(-2, -1)]).flatten(1)


def fit_quality(steps: Tensor) -> tuple[int, bool]:
    """The libjpeg quality whose luma table, as is or transposed, best explains the read
    ``steps`` (64,), and whether it is the transposed one. Where several explain them
    equally (few steps read), the untransposed ones and, among them, the middle quality."""
    misfits = _misfits(_standard_tables(), steps.cpu())
    best = torch.nonzero(misfits <= misfits.min() + 1e-9).flatten()
    if bool((best < 100).any()):
        best = best[best < 100]
    index = int(best[len(best) // 2])
    return index % 100 + 1, index >= 100


def fits_transposed(steps: Tensor, table: Tensor) -> bool:
    """Whether the read luma ``steps`` fit the transpose of ``table`` (8, 8) better than ``table``."""
    candidates = torch.stack([table, table.T]).flatten(1)
    errors = _misfits(candidates, steps.cpu())
    return bool(errors[1] < errors[0])


# --------------------------------------------------------------------------- chroma


#: Terms kept of the least-squares inverse of "fancy" upsampling, whose weights fall by 3 per term.
_UNSAMPLE_TERMS = 10


def _unsample_axis(samples: Tensor) -> Tensor:
    """Least-squares inverse of libjpeg's "fancy" 2x upsampling (3/4 nearer + 1/4 farther
    sample) along the last axis of ``(..., 2n)`` samples: ``(..., n)``. Away from the edges
    it is ``c[i] = 2/3 * sum_k (-1/3)^k (y[2i - 2k] + y[2i + 1 + 2k])``; the edges are
    replicated, as the upsampling replicates them."""
    even, odd = samples[..., 0::2], samples[..., 1::2]
    pad = _UNSAMPLE_TERMS
    lead, n = even.shape[:-1], even.shape[-1]
    even = nnf.pad(even.reshape(-1, 1, n), (pad, 0), mode="replicate").reshape(*lead, n + pad)
    odd = nnf.pad(odd.reshape(-1, 1, n), (0, pad), mode="replicate").reshape(*lead, n + pad)
    total = even[..., pad:] + odd[..., :n]
    weight = 1.0
    for k in range(1, pad + 1):
        weight *= -1 / 3
        total = total + weight * (even[..., pad - k : pad - k + n] + odd[..., k : k + n])
    return total * (2 / 3)


def unsample_chroma(plane: Tensor, factor: tuple[int, int]) -> Tensor:
    """Undo a decoder's chroma upsampling of ``(..., H, W)`` by ``factor``, whose sides
    are multiples of it: least squares along each axis that libjpeg upsamples with its
    "fancy" filter (a factor of 2), the box average along others (it replicates samples)."""
    v, h = factor
    if h == 2 and plane.shape[-1] > 2 * 2:
        plane = _unsample_axis(plane)
    elif h > 1:
        plane = downsample_chroma(plane, (1, h))
    if v == 2 and plane.shape[-2] > 2:
        plane = _unsample_axis(plane.transpose(-2, -1)).transpose(-2, -1)
    elif v > 1:
        plane = downsample_chroma(plane, (v, 1))
    return plane


def _chroma_misfits(
    chroma: Tensor, clipped: Tensor, table: Tensor, factor: tuple[int, int], luma_offset: tuple[int, int]
) -> dict[tuple[int, int], float]:
    """For each MCU offset of chroma subsampling ``factor`` whose luma part is
    ``luma_offset``: how far the ``(2, H, W)`` chroma of its whole MCUs is from a decode
    of chroma subsampled by ``factor`` and quantized by ``table``, the mean squared error
    per sample of what subsampling loses plus what quantizing moves. Counted over the
    MCUs with at most 1/8 of their pixels clipped (clipped pixels themselves not at all);
    ``inf`` where there are fewer than :data:`MIN_MCUS` of them. Every offset pairs the
    pixels the same way, so the chroma is subsampled once for all."""
    v, h = factor
    first = ((-luma_offset[0]) % v, (-luma_offset[1]) % h)  # where the samples' pixel pairs start
    rows, cols = (chroma.shape[-2] - first[0]) // v, (chroma.shape[-1] - first[1]) // h
    if rows < BLOCK or cols < BLOCK:  # not one whole MCU at any offset
        return {(luma_offset[0] + BLOCK * a, luma_offset[1] + BLOCK * b): float("inf")
                for a in range(v) for b in range(h)}
    window = chroma[:, first[0] : first[0] + rows * v, first[1] : first[1] + cols * h]
    mask = clipped[first[0] : first[0] + rows * v, first[1] : first[1] + cols * h].to(window.dtype)
    samples = unsample_chroma(window, factor)
    lost = ((upsample_chroma(samples, factor) - window) * (1 - mask)).square().sum(0)
    lost = nnf.avg_pool2d(lost[None, None], (v, h))[0, 0] * (v * h)  # per sample
    clip = nnf.avg_pool2d(mask[None, None], (v, h))[0, 0]
    misfits = {}
    for a in range(v):
        for b in range(h):
            offset = (luma_offset[0] + BLOCK * a, luma_offset[1] + BLOCK * b)
            top = ((-offset[0]) % (BLOCK * v) - first[0]) // v  # the first whole MCU, in samples
            left = ((-offset[1]) % (BLOCK * h) - first[1]) // h
            blocks = (rows - top) // BLOCK, (cols - left) // BLOCK
            area = (slice(top, top + BLOCK * blocks[0]), slice(left, left + BLOCK * blocks[1]))
            usable = nnf.avg_pool2d(clip[area][None, None], BLOCK)[0, 0] <= 1 / 8 if min(blocks) > 0 else None
            if usable is None or int(usable.sum()) < MIN_MCUS:
                misfits[offset] = float("inf")
                continue
            coefficients = block_dct(blockify(samples[(slice(None), *area)] - 128.0))  # (2, rows, cols, 8, 8)
            steps = table.to(coefficients)
            moved = (coefficients - torch.round(coefficients / steps) * steps).square().sum((0, -2, -1))
            missed = nnf.avg_pool2d(lost[area][None, None], BLOCK)[0, 0] * BLOCK * BLOCK
            total = (missed + v * h * moved)[usable]
            misfits[offset] = float(total.sum()) / (total.numel() * 2 * BLOCK * BLOCK * v * h)
    return misfits


def _chroma_grid(
    pixels: Tensor, clipped: Tensor, luma_offset: tuple[int, int], table: Tensor, factors: Sequence[tuple[int, int]]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The chroma subsampling among ``factors`` and the MCU offset (whose luma part is
    ``luma_offset``) that explain the chroma best (:func:`_chroma_misfits`, weighed for the
    number of samples; the first ones unless a later one is clearly better); the first
    factor at the luma offset when no MCU can tell."""
    chroma = rgb_to_ycbcr(pixels.to(torch.float32))[1:]
    best, best_misfit = (factors[0], luma_offset), float("inf")
    for factor in factors:
        for offset, misfit in _chroma_misfits(chroma, clipped, table, factor, luma_offset).items():
            # fewer samples fit noise less well: halve the misfit per factor of 4 fewer
            misfit = max(misfit / (factor[0] * factor[1]) ** 0.5, CHROMA_NOISE)
            if misfit < CHROMA_MARGIN * best_misfit:
                best, best_misfit = (factor, offset), misfit
    return best


# --------------------------------------------------------------------------- the grid


def _no_grid_reason(luma: Tensor, clipped: Tensor, stands_out: bool) -> tuple[str, bool]:
    """Why no quantization steps could be read, and whether that is because the pixels
    show no grid: too little texture on the grid (where a phase ``stands_out``, the grid
    is there), or texture without a JPEG's grid, told apart from too few blocks to be sure."""
    too_smooth = (
        "cannot estimate the JPEG quality: too few unclipped textured 8x8 blocks to read the quantization "
        "steps from (an image this smooth or small); pass quality= or tables=",
        False,
    )
    if stands_out:
        return too_smooth
    coefficients = _unclipped_coefficients(luma, clipped, (0, 0))
    textured = int((coefficients[:, 1:].abs() >= 2).any(1).sum())
    if textured < MIN_SUPPORT:
        return too_smooth
    if textured < GRID_EVIDENCE:
        return (
            f"the {textured} textured 8x8 blocks show no 8x8 quantization grid at any phase, and they are too few "
            "to tell a small crop of a JPEG decode (of a high quality, or smooth) from pixels that never were one "
            "(a lossless image, a resized JPEG, pixels already corrected); pass the JPEG file itself",
            True,
        )
    return (
        f"the {textured} textured 8x8 blocks show no 8x8 quantization grid at any phase, so these pixels are not "
        "a JPEG decode (a lossless image such as a PNG, a JPEG resized or rotated by other than quarter turns, "
        "or pixels already corrected); pass the JPEG file itself",
        True,
    )


def _matches(steps: Tensor, table: Tensor) -> int:
    """At how many frequencies the read ``steps`` (64,) are those of ``table`` (8, 8), as is or transposed."""
    read = steps >= 2
    return max(int((read & (steps == t.flatten().to(steps))).sum()) for t in (table, table.T))


def _offset(phase: tuple[int, int]) -> tuple[int, int]:
    """The grid offset (rows and columns of the first block above and left of the pixels) of a block phase."""
    return (-phase[0]) % BLOCK, (-phase[1]) % BLOCK


def _luma_grid(
    luma: Tensor, clipped: Tensor, table: Tensor | None, candidates: list[tuple[int, int]], stands_out: bool
) -> tuple[tuple[int, int], int | None, bool] | None:
    """The luma block offset of the phase that shows quantization steps, the quality of
    the fitted standard table (``None`` when ``table`` (8, 8) is given) and whether the
    table is transposed there. The likeliest of the phase ``candidates`` when it
    ``stands_out``; otherwise the one whose steps match the fitted standard table, or
    ``table``, at the most frequencies (at least :data:`MIN_MATCHES`)."""
    best, best_matches = candidates[0], MIN_MATCHES - 1
    if not stands_out:
        for phase in candidates:
            steps = _phase_steps(luma, clipped, phase, screening=True)
            if not bool((steps >= 2).any()):
                continue
            matches = _matches(steps, quality_to_table(fit_quality(steps)[0]))
            if table is not None:
                matches = max(matches, _matches(steps, table))
            if matches > best_matches:
                best, best_matches = phase, matches
        if best_matches < MIN_MATCHES:
            return None
    steps = _phase_steps(luma, clipped, best, screening=False)
    if int((steps >= 2).sum()) < (1 if table is not None else 2):  # one step fits many qualities
        return None
    quality, transposed = fit_quality(steps) if table is None else (None, fits_transposed(steps, table))
    return _offset(best), quality, transposed


def find_grid(
    pixels: Tensor,
    tables: Tensor | None = None,
    quality: int | None = None,
    subsampling: tuple[int, int] | None = None,
) -> JPEGGrid:
    """Where the JPEG grid of decoded ``(C, H, W)`` pixels in ``[0, 255]`` lies, and its tables.

    ``tables`` ``(C, 8, 8)`` (in the JPEG's stored orientation) are used as given, with
    ``quality`` recorded if they are that quality's; without them libjpeg's standard
    tables are fitted (blind mode). ``subsampling`` restricts the chroma search to one
    factor. Raises ``ValueError`` for pixels that show no grid, or, without tables,
    are too flat to show one; with tables, such flat pixels get the grid that stands out
    if one does, the decoder's own otherwise.
    """
    window = pixels[(..., *_window(pixels, SEARCH_WINDOW))]
    luma, clipped = luma_plane(window), clipped_pixels(window)
    candidates, stands_out = _phase_candidates(luma)
    found = _luma_grid(luma, clipped, None if tables is None else tables[0], candidates, stands_out)
    if found is None:
        reason, off_grid = _no_grid_reason(luma, clipped, stands_out)
        if tables is None or off_grid:
            raise ValueError(reason)
        offset, transposed = _offset(candidates[0]) if stands_out else (0, 0), False
    else:
        offset, fitted, transposed = found
        if tables is None:
            quality, tables = fitted, quality_tables(fitted, pixels.shape[0])
    if transposed:
        window, clipped, offset = window.transpose(-2, -1), clipped.T, (offset[1], offset[0])
    factor = (1, 1)
    if pixels.shape[0] == 3:
        factors = [subsampling] if subsampling is not None else [SUBSAMPLINGS[name] for name in BLIND_SUBSAMPLINGS]
        size = CHROMA_WINDOW * (2 if float(clipped.to(torch.float32).mean()) > 0.1 else 1)  # clipped MCUs do not count
        part = _window(window, size, _chroma_detail(window, clipped))
        factor, offset = _chroma_grid(window[(..., *part)], clipped[part], offset, tables[1], factors)
    return JPEGGrid(offset, transposed, factor, tables, quality)


# --------------------------------------------------------------------------- recovering the coefficients


def to_stored(pixels: Tensor, grid: JPEGGrid) -> Tensor:
    """``(..., H, W)`` pixels in the JPEG's stored orientation."""
    return pixels.transpose(-2, -1) if grid.transposed else pixels


def pixel_inputs(pixels: Tensor, tables: Tensor, chroma_factor: tuple[int, int]) -> ModelInputs:
    """Re-encode decoded ``(B, C, H, W)`` pixels in ``[0, 255]`` whose JPEG grid starts at
    their top left: JPEG's forward path (:func:`~qgac_transforms.codec.pixels_to_coefficients`),
    quantized and dequantized with ``tables`` (``(C, 8, 8)`` or ``(B, C, 8, 8)``)."""
    batch, channels, height, width = pixels.shape
    factor = chroma_factor if channels == 3 else (1, 1)
    tables = tables.to(device=pixels.device, dtype=pixels.dtype).expand(batch, channels, BLOCK, BLOCK)
    planes = [
        dequantize(quantize(plane, tables[:, index]), tables[:, index])
        for index, plane in enumerate(pixels_to_coefficients(pixels, factor))
    ]
    chroma = torch.stack(planes[1:], dim=1) if channels == 3 else None
    network_tables = tables if channels == 3 else tables.expand(batch, 3, BLOCK, BLOCK)
    return ModelInputs(planes[0][:, None], network_tables, chroma, factor, height, width)


def recover_inputs(pixels: Tensor, grid: JPEGGrid, tables: Tensor, rounds: int = RECOVERY_ROUNDS) -> ModelInputs:
    """The JPEG's dequantized planes behind decoded ``(B, C, H, W)`` pixels in its stored
    orientation, on ``grid`` (its offset and factor; ``tables`` ``(B, C, 8, 8)``).

    The pixels are placed at the grid's offset in whole MCUs. Padding, and pixels the
    decoder clipped, are unknown: for up to ``rounds`` rounds (until nothing changes),
    the planes are decoded and the unknown pixels replaced by the decode (clipped ones
    only on their side of 0 or 255), then encoded and quantized again. The planes cover
    the whole MCUs; ``height`` and ``width`` count the offset.
    """
    channels, height, width = pixels.shape[1:]
    factor = grid.factor if channels == 3 else (1, 1)
    top, left = grid.offset
    pad = (left, -(left + width) % (BLOCK * factor[1]), top, -(top + height) % (BLOCK * factor[0]))
    observed = nnf.pad(pixels.to(torch.float32), pad, mode="replicate") if any(pad) else pixels.to(torch.float32)
    known = nnf.pad(torch.ones_like(pixels[:, :1], dtype=torch.bool), pad)
    low, high, free = known & (observed <= 0), known & (observed >= 255), ~known
    inputs = pixel_inputs(observed, tables, factor)
    for _ in range(rounds if bool((low | high | free).any()) else 0):
        planes = [inputs.y[:, 0]] if inputs.chroma is None else [inputs.y[:, 0], *inputs.chroma.unbind(1)]
        decoded = coefficients_to_pixels(planes, observed.shape[-2], observed.shape[-1], factor, clamp=False)
        guess = torch.where(low, decoded.clamp(max=0), torch.where(high, decoded.clamp(min=255), observed))
        previous, inputs = inputs, pixel_inputs(torch.where(free, decoded, guess), tables, factor)
        if torch.equal(inputs.y, previous.y) and (inputs.chroma is None or torch.equal(inputs.chroma, previous.chroma)):
            break  # a fixed point
    return inputs


def from_stored(corrected: Tensor, grid: JPEGGrid, height: int, width: int) -> Tensor:
    """Undo :func:`recover_inputs`'s placement and :func:`to_stored` on ``(B, C, H', W')`` corrected pixels."""
    top, left = grid.offset
    rows, cols = (width, height) if grid.transposed else (height, width)
    return to_stored(corrected[..., top : top + rows, left : left + cols], grid)
