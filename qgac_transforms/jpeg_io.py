"""Where a JPEG becomes coefficients: reading and writing DCT coefficients and tables.

jpeglib does the entropy decoding. It has sharp edges (not thread-safe, silent on
corrupt data, no size limit, leaks descriptors on bad headers), so every file is
first vetted here: a marker scan and Pillow's header parser decide whether the
file is one we support, calls into jpeglib are serialized, and libjpeg's warnings
are captured and turned into errors instead of silently zero-filled blocks.
"""

from __future__ import annotations

import hashlib
import io
import operator
import os
import struct
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple, Union

import numpy as np
import torch
from PIL import Image, JpegImagePlugin

from .dct import BLOCK, block_grid, deblockify

JPEGSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image]

#: jpeglib (and the libjpeg state behind it) is process-global and not thread-safe.
_JPEGLIB_LOCK = threading.Lock()
#: jpeglib refuses files with more APPn/COM markers than this; we strip them first.
_JPEGLIB_MAX_MARKERS = 50

_SOF_LOSSLESS = {0xC3, 0xC7, 0xCB, 0xCF}
_SOF_ARITHMETIC = {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_SOF_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
_SOF_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class InvalidJPEGError(ValueError):
    """A file is not a JPEG this library can read; names the file and the reason."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class CoefficientTensors(NamedTuple):
    """Torch view of :class:`JPEGCoefficients` for one image.

    ``planes``: one ``(1, 8*h_blocks, 8*w_blocks)`` float tensor per component, in
    image layout; dequantized (coefficient x step) unless asked otherwise.
    ``tables``: ``(n_components, 8, 8)`` float tensor, natural order.
    """

    planes: list[torch.Tensor]
    tables: torch.Tensor


#: The start-of-image marker every JPEG stream begins with.
JPEG_SOI = b"\xff\xd8"
#: Chroma subsampling names -> how many luma samples one chroma sample covers, (vertical, horizontal).
SUBSAMPLINGS: dict[str, tuple[int, int]] = {
    "4:4:4": (1, 1),
    "4:2:2": (1, 2),
    "4:2:0": (2, 2),
    "4:4:0": (2, 1),
    "4:1:1": (1, 4),
    "4:1:0": (2, 4),
}
#: Pillow's ``subsampling`` save option for the names it writes.
PILLOW_SUBSAMPLING: dict[str, int] = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def chroma_factor_of(subsampling: str | tuple[int, int]) -> tuple[int, int]:
    """``"4:2:0"`` (or a ``(vertical, horizontal)`` pair) -> ``(vertical, horizontal)`` factor."""
    if isinstance(subsampling, str):
        if subsampling not in SUBSAMPLINGS:
            raise ValueError(f"unknown chroma subsampling {subsampling!r}; choose one of {', '.join(SUBSAMPLINGS)}")
        return SUBSAMPLINGS[subsampling]
    try:
        factor = tuple(_whole_number(f) for f in subsampling)
    except TypeError:  # not a sequence either
        factor = None
    if factor not in SUBSAMPLINGS.values():
        raise ValueError(f"unsupported chroma subsampling {subsampling!r}; give a name ({', '.join(SUBSAMPLINGS)}) "
                         f"or a (vertical, horizontal) pair of whole numbers such as (2, 2)")
    return factor  # type: ignore[return-value]


def _whole_number(value: object) -> int | None:
    """``value`` as an int when it is a whole number (``2``, ``np.int64(2)``, ``2.0``, a
    one-element tensor), else ``None``: a bool, or a fraction that ``int`` would cut."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        pass
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def subsampling_name(factor: tuple[int, int]) -> str:
    """``(2, 2)`` -> ``"4:2:0"``; a factor with no name is written as the pair."""
    return next((name for name, known in SUBSAMPLINGS.items() if known == tuple(factor)), f"{tuple(factor)}")


@dataclass(frozen=True, eq=False)
class JPEGCoefficients:
    """The quantized DCT coefficients of a JPEG file and everything needed to use them.

    ``blocks[i]`` is component i's block grid, int16 of shape (h_blocks, w_blocks, 8, 8)
    in natural frequency order; ``tables[i]`` is the (8, 8) int32 table that quantized
    it; ``sampling[i]`` is its (vertical, horizontal) sampling factor.
    """

    blocks: tuple[np.ndarray, ...]
    tables: tuple[np.ndarray, ...]
    sampling: tuple[tuple[int, int], ...]
    width: int
    height: int
    color_space: str  # "gray" or "ycbcr"
    progressive: bool = False
    orientation: int = 1
    source: str = "<coefficients>"

    @property
    def is_gray(self) -> bool:
        return len(self.blocks) == 1

    @property
    def y(self) -> np.ndarray:
        return self.blocks[0]

    @property
    def cb(self) -> np.ndarray | None:
        return None if self.is_gray else self.blocks[1]

    @property
    def cr(self) -> np.ndarray | None:
        return None if self.is_gray else self.blocks[2]

    @property
    def max_sampling(self) -> tuple[int, int]:
        return max(v for v, _ in self.sampling), max(h for _, h in self.sampling)

    @property
    def chroma_factor(self) -> tuple[int, int]:
        """How many luma samples one chroma sample covers, (vertical, horizontal)."""
        if self.is_gray:
            return (1, 1)
        (yv, yh), (cv, ch) = self.sampling[0], self.sampling[1]
        return yv // cv, yh // ch

    @property
    def subsampling(self) -> str:
        """Human-readable chroma subsampling, e.g. ``"4:2:0"``."""
        return "gray" if self.is_gray else subsampling_name(self.chroma_factor)

    def to_tensors(
        self,
        dequantize: bool = True,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> CoefficientTensors:
        """Coefficients and tables as torch tensors (see :class:`CoefficientTensors`)."""
        tables = torch.from_numpy(np.stack(self.tables).astype(np.float64)).to(dtype=dtype, device=device)
        planes = []
        for grid, table in zip(self.blocks, tables):
            blocks = torch.from_numpy(grid.astype(np.float32)).to(dtype=dtype, device=device)
            if dequantize:
                blocks = blocks * table
            planes.append(deblockify(blocks)[None])
        return CoefficientTensors(planes, tables)


# --------------------------------------------------------------------------- source handling


def _source_name(source: JPEGSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, Image.Image):
        return os.fsdecode(getattr(source, "filename", "") or "<PIL image>")  # bytes for Image.open(b"...")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return getattr(source, "name", None) if isinstance(getattr(source, "name", None), str) else "<file object>"


def read_pillow_file(image: Image.Image, name: str) -> bytes:
    """All bytes of the file a Pillow image was opened from: its open file, else its filename."""
    for fp in (getattr(image, "fp", None), getattr(image, "_fp", None)):  # MPO keeps its file in _fp
        if hasattr(fp, "read") and not getattr(fp, "closed", False):
            position = fp.tell()
            try:
                fp.seek(0)
                return fp.read()
            finally:
                fp.seek(position)
    if getattr(image, "filename", ""):
        return _read_source_bytes(Path(os.fsdecode(image.filename)), name)  # a bytes filename is a path too
    raise InvalidJPEGError(name, "the Pillow image's file is closed and it has no filename")


def header_tables(image: Image.Image) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The quantization tables ``(C, 8, 8)`` (natural order) and the chroma factor
    ``(vertical, horizontal)`` that Pillow parsed from a JPEG image's header when it was
    opened: they stay with the image once its file is closed or gone. ``None`` for other
    images, and for layouts this library does not correct."""
    quantization, layer = getattr(image, "quantization", None), getattr(image, "layer", None)
    if not quantization or not layer or len(layer) not in (1, 3):
        return None
    try:  # Pillow's layer: (component id, horizontal sampling, vertical sampling, table id)
        tables = np.array([quantization[component[3]] for component in layer], dtype=np.int32).reshape(-1, BLOCK, BLOCK)
    except (KeyError, ValueError):
        return None
    if len(layer) == 1:
        return tables, (1, 1)
    (_, luma_h, luma_v, _), (_, chroma_h, chroma_v, _) = layer[0], layer[1]
    if layer[2][1:3] != layer[1][1:3] or luma_h % chroma_h or luma_v % chroma_v:
        return None
    return tables, (luma_v // chroma_v, luma_h // chroma_h)


def current_frame(image: Image.Image, data: bytes) -> bytes:
    """The JPEG stream of a Pillow image's current frame in its file's bytes: an MPO file
    holds one JPEG per frame, and ``seek`` moves to another."""
    offset = getattr(image, "offset", 0) if image.format == "MPO" else 0
    return data[offset:] if offset else data


def pixel_digest(image: Image.Image) -> bytes:
    """A short hash of a Pillow image's pixels: what the Pillow hook records of a correction."""
    return hashlib.blake2b(image.tobytes(), digest_size=16).digest()


def shows_its_file(image: Image.Image, stream: bytes) -> bool:
    """Whether a JPEG Pillow image still shows what its current frame's JPEG ``stream`` decodes to
    (for an image the hook corrected, that correction): not edited in place (``paste``,
    ``ImageDraw``, ``exif_transpose(in_place=True)``), not decoded by ``draft()``, and not
    loaded from a file that was replaced since."""
    if image.tile:  # not loaded yet: nothing has touched the pixels, and they will come from this stream
        return True
    expected = getattr(image, "_qgac_corrected_digest", None)
    if expected is not None:
        return pixel_digest(image) == expected
    reference = _pillow_decoder(stream)
    return (reference.mode, reference.size) == (image.mode, image.size) and reference.tobytes() == image.tobytes()


def _pillow_decoder(stream: bytes) -> JpegImagePlugin.JpegImageFile:
    """Pillow's own JPEG decoder (libjpeg) on ``stream``, never the hook's."""
    return JpegImagePlugin.JpegImageFile(io.BytesIO(stream))


def _read_file_object(source: BinaryIO, name: str) -> bytes:
    if isinstance(source, io.TextIOBase):
        raise InvalidJPEGError(name, "file object must be opened in binary mode")
    data = source.read()
    if not isinstance(data, (bytes, bytearray)):
        raise InvalidJPEGError(name, "file object must be opened in binary mode")
    position = source.tell() if not data and getattr(source, "seekable", lambda: False)() else 0
    if position:
        raise InvalidJPEGError(name, f"the file object is at its end (position {position}): nothing left to read; seek(0) first")
    return bytes(data)


def _read_source_bytes(source: JPEGSource, name: str) -> bytes:
    """All bytes of the JPEG behind ``source`` (for a Pillow image, its current frame's)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            return Path(source).read_bytes()
        except OSError as error:
            raise InvalidJPEGError(name, f"cannot read file ({error.strerror or error})") from error
    if isinstance(source, Image.Image):
        data = getattr(source, "qgac_jpeg_bytes", None)  # set by the Pillow hook
        if data is not None:
            return data
        if source.format not in ("JPEG", "MPO"):
            raise InvalidJPEGError(name, f"Pillow image is {source.format or 'not from a file'}, not a JPEG")
        return current_frame(source, read_pillow_file(source, name))
    if callable(getattr(source, "read", None)):
        return _read_file_object(source, name)
    raise TypeError(f"cannot read JPEG coefficients from {type(source).__name__}")


def read_jpeg_stream(source: JPEGSource) -> tuple[bytes, str]:
    """The bytes of the JPEG behind ``source`` (see :func:`read_coefficients`) and the
    name errors give it (the path, ``<bytes>``, ``<file object>``, ``<PIL image>``)."""
    name = _source_name(source)
    return _read_source_bytes(source, name), name


# --------------------------------------------------------------------------- header checks


@dataclass(frozen=True)
class _FrameHeader:
    marker: int
    precision: int
    components: int
    app_markers: int
    height: int
    width: int
    component_ids: bytes = b""
    first_scan: int = 0  # offset of the first SOS marker


class _Segment(NamedTuple):
    """One marker segment of the header: ``data[start:end]`` is ``FF``, the marker code
    and its payload; ``data[stray]`` are the bytes (not fill bytes) before it."""

    stray: slice
    start: int
    marker: int
    length: int  # the segment's length field; 0 for a marker without payload

    @property
    def end(self) -> int:
        return self.start + 2 + self.length


def _is_app_or_comment(marker: int) -> bool:
    return 0xE0 <= marker <= 0xEF or marker == 0xFE


def _header_segments(data: bytes, name: str) -> Iterator[_Segment]:
    """The marker segments after SOI, up to and including the first scan (SOS).

    Fill bytes (``FF FF ...``) before a marker are skipped; stray bytes between segments
    are tolerated as libjpeg does (it warns) and left to the caller.
    """
    pos = 2
    while True:
        after_previous = pos
        while pos < len(data) and data[pos] != 0xFF:
            pos += 1
        stray = slice(after_previous, pos)
        while pos + 1 < len(data) and data[pos + 1] == 0xFF:
            pos += 1
        if pos + 1 >= len(data):
            raise InvalidJPEGError(name, "truncated file: header ends before the image data")
        marker, length = data[pos + 1], 0
        if marker == 0xD9:
            raise InvalidJPEGError(name, "no image data (EOI before any scan)")
        if not (marker == 0x01 or 0xD0 <= marker <= 0xD7):
            if pos + 4 > len(data):
                raise InvalidJPEGError(name, "truncated file inside a marker")
            (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
            if length < 2 or pos + 2 + length > len(data):
                raise InvalidJPEGError(name, f"truncated or corrupt marker 0x{marker:02X}")
        yield _Segment(stray, pos, marker, length)
        if marker == 0xDA:
            return
        pos += 2 + length


def _scan_header(data: bytes, name: str) -> _FrameHeader:
    """Walk the markers up to the first scan; enough to refuse unsupported codings."""
    if not data:
        raise InvalidJPEGError(name, "empty: no bytes to read")
    if len(data) < 4 or data[:2] != JPEG_SOI:
        raise InvalidJPEGError(name, "not a JPEG file (no SOI marker)")
    frame, app_markers = None, 0
    for segment in _header_segments(data, name):
        payload = data[segment.start + 4 : segment.end]
        if segment.marker in _SOF_MARKERS:
            if segment.length < 8:
                raise InvalidJPEGError(name, "corrupt frame header")
            precision, height, width, components = struct.unpack(">BHHB", payload[:6])
            frame = (segment.marker, precision, components, payload[6::3][:components], height, width)
        elif _is_app_or_comment(segment.marker):
            app_markers += 1
    if frame is None:  # the walk ended at the first scan
        raise InvalidJPEGError(name, "scan before frame header")
    marker, precision, components, component_ids, height, width = frame
    return _FrameHeader(marker, precision, components, app_markers, height, width, component_ids, segment.start)


def _check_scans_complete(data: bytes, name: str, header: _FrameHeader) -> None:
    """Refuse a file whose scans do not carry every coefficient to full precision.

    libjpeg silently accepts a progressive file cut at a scan boundary and closed
    with EOI (the missing coefficients or bits stay zero); only the scan headers tell.
    ``FF DA`` and ``FF D9`` cannot occur inside entropy-coded data, so scans are found
    by search, stopping at the first image's EOI (an MPO file has more images).
    """
    missing = {component: set(range(64)) for component in header.component_ids}
    scan = header.first_scan
    while True:
        (length,) = struct.unpack(">H", data[scan + 2 : scan + 4].rjust(2, b"\0"))
        segment = data[scan + 4 : scan + 2 + length]
        count = segment[0] if segment else 0
        if count and len(segment) >= 4 + 2 * count:
            first, last, approximation = segment[1 + 2 * count : 4 + 2 * count]
            if approximation & 0x0F == 0:  # Al = 0: these coefficients are now complete
                for component in segment[1 : 1 + 2 * count : 2]:
                    missing.get(component, set()).difference_update(range(first, last + 1))
        if not any(missing.values()):
            return
        following = data.find(b"\xff\xda", scan + 2)
        if following < 0 or data.find(b"\xff\xd9", scan + 2, following) >= 0:
            break
        scan = following
    index = next(i for i, component in enumerate(header.component_ids) if missing[component])
    raise InvalidJPEGError(
        name, f"truncated or incomplete file: the scans do not complete the coefficients of component {index}"
    )


def _strip_app_markers(data: bytes, name: str) -> bytes:
    """Drop APPn/COM segments before the first scan (jpeglib fails on too many).

    Fill bytes before a marker go too; stray bytes are kept, so libjpeg still reports
    them as damage.
    """
    out = bytearray(data[:2])
    for segment in _header_segments(data, name):
        out += data[segment.stray]
        if segment.marker == 0xDA:
            out += data[segment.start :]
        elif not _is_app_or_comment(segment.marker):
            out += data[segment.start : segment.end]
    return bytes(out)


def _check_supported(data: bytes, name: str) -> tuple[_FrameHeader, Image.Image]:
    header = _scan_header(data, name)
    _check_scans_complete(data, name, header)
    if header.marker in _SOF_LOSSLESS:
        raise InvalidJPEGError(name, "lossless JPEG is not supported (it has no DCT coefficients)")
    if header.marker in _SOF_ARITHMETIC:
        raise InvalidJPEGError(name, "arithmetic-coded JPEG is not supported")
    if header.precision != 8:
        raise InvalidJPEGError(name, f"{header.precision}-bit JPEG is not supported (only 8-bit)")
    if header.components not in (1, 3):
        raise InvalidJPEGError(name, f"{header.components}-component JPEG (CMYK/YCCK) is not supported")
    limit = Image.MAX_IMAGE_PIXELS  # checked before Pillow, which warns or raises in its own words
    if limit is not None and header.width * header.height > limit:
        raise InvalidJPEGError(
            name,
            f"image too large: {header.width}x{header.height} pixels exceeds PIL.Image.MAX_IMAGE_PIXELS ({limit})",
        )
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as error:  # Pillow raises several types for bad headers
        raise InvalidJPEGError(name, f"Pillow cannot parse the header ({error})") from error
    if image.format not in ("JPEG", "MPO"):
        raise InvalidJPEGError(name, f"not a JPEG file (Pillow reads it as {image.format})")
    if image.mode not in ("L", "RGB"):
        raise InvalidJPEGError(name, f"colour mode {image.mode} is not supported (only grayscale and YCbCr)")
    if image.mode == "RGB" and image.info.get("adobe") is not None and image.info.get("adobe_transform") == 0:
        raise InvalidJPEGError(name, "RGB-coded (Adobe transform 0) JPEG is not supported (only YCbCr)")
    return header, image


# --------------------------------------------------------------------------- jpeglib calls


def _jpeglib():  # noqa: ANN202 - the module
    """jpeglib, imported on first use: what only compresses in torch (training on a GPU
    machine, say) needs neither it nor its bundled libjpeg builds."""
    import jpeglib  # noqa: PLC0415

    return jpeglib


@contextmanager
def _captured_stderr() -> Iterator[io.StringIO]:
    """Capture what C code writes to file descriptor 2 (libjpeg's warnings)."""
    captured = io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield captured
            finally:
                os.dup2(saved, 2)
                sink.seek(0)
                captured.write(sink.read().decode("utf-8", errors="replace"))
    finally:
        os.close(saved)


#: Starts of libjpeg's warnings about damaged data (jerror.h). Other lines written to
#: stderr while a file was read (another thread's output) are passed on, not blamed on it.
_CORRUPTION_WARNINGS = (
    "Corrupt JPEG data",
    "Premature end of JPEG file",
    "Invalid SOS parameters",
    "Inconsistent progression sequence",
    "Huffman code size table overflow",
)


def _corruption_warnings(messages: str) -> list[str]:
    """libjpeg's data-damage warnings among ``messages``; every other line goes back to stderr."""
    corruption, other = [], []
    for line in messages.splitlines():
        (corruption if line.startswith(_CORRUPTION_WARNINGS) else other).append(line)
    if other:
        sys.stderr.write("\n".join(other) + "\n")
    return corruption


@contextmanager
def _as_file(data: bytes) -> Iterator[str]:
    handle, path = tempfile.mkstemp(suffix=".jpg", prefix="qgac-")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        yield path
    finally:
        os.unlink(path)


def _exif_orientation(image: Image.Image) -> int:
    try:
        orientation = int(image.getexif().get(0x0112, 1))
    except Exception:  # malformed EXIF must not stop us reading pixels
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def _supported_sampling(sampling: tuple[tuple[int, int], ...]) -> bool:
    """Whether a colour file's (vertical, horizontal) sampling factors have one chroma factor
    that the model's chroma upsampling follows: 1, 2 or 4 luma samples per chroma sample."""
    luma, cb, cr = sampling
    return cb == cr and all(y % c == 0 and y // c in (1, 2, 4) for y, c in zip(luma, cb))


def read_coefficients(source: JPEGSource, *, name: str | None = None) -> JPEGCoefficients:
    """Read the DCT coefficients, quantization tables and layout of a JPEG.

    ``source`` is a path, bytes-like, a binary file object (read from its position) or
    an open Pillow JPEG image (for an MPO phone photo, its current frame). Raises
    :class:`InvalidJPEGError` naming the file (``name``, if given) and the reason for
    anything that is not a supported, intact 8-bit Huffman-coded grayscale or YCbCr JPEG.
    """
    data, found = read_jpeg_stream(source)
    name = name or found
    header, image = _check_supported(data, name)
    if header.app_markers > _JPEGLIB_MAX_MARKERS - 5:
        data = _strip_app_markers(data, name)
    with _JPEGLIB_LOCK, _as_file(data) as path, _captured_stderr() as libjpeg_messages:
        try:
            jpeg = _jpeglib().read_dct(path)
            jpeg.load()
            planes = [jpeg.Y] if jpeg.Cb is None else [jpeg.Y, jpeg.Cb, jpeg.Cr]
            planes = [np.ascontiguousarray(p, dtype=np.int16) for p in planes]
            qt = np.asarray(jpeg.qt).astype(np.int32)
            table_ids = list(jpeg.quant_tbl_no)
            sampling = tuple((int(v), int(h)) for v, h in np.asarray(jpeg.samp_factor)[: len(planes)])
            color_space = str(jpeg.jpeg_color_space)
            width, height = int(jpeg.width), int(jpeg.height)
            progressive = bool(jpeg.progressive_mode)
        except (OSError, ValueError, RuntimeError) as error:
            raise InvalidJPEGError(name, f"libjpeg could not decode the file ({error})") from error
    corruption = _corruption_warnings(libjpeg_messages.getvalue())
    if corruption:
        raise InvalidJPEGError(name, f"corrupt or truncated data ({corruption[0]})")
    if color_space not in ("JCS_GRAYSCALE", "JCS_YCbCr"):
        raise InvalidJPEGError(name, f"colour space {color_space} is not supported")
    if len(sampling) == 3 and not _supported_sampling(sampling):
        raise InvalidJPEGError(
            name, f"sampling factors {sampling} (Y, Cb, Cr) are not supported: Cb and Cr must share one "
            "sampling, and Y's must be 1, 2 or 4 times it on each axis"
        )
    tables = tuple(qt[table_ids[i]].copy() for i in range(len(planes)))
    return JPEGCoefficients(
        blocks=tuple(planes),
        tables=tables,
        sampling=sampling,
        width=width,
        height=height,
        color_space="gray" if len(planes) == 1 else "ycbcr",
        progressive=progressive or header.marker in _SOF_PROGRESSIVE,
        orientation=_exif_orientation(image),
        source=name,
    )


def write_coefficients(coefficients: JPEGCoefficients, destination: str | os.PathLike | BinaryIO) -> None:
    """Write a baseline JPEG whose coefficients, tables and orientation read back identically.

    The orientation is written as a one-tag EXIF segment; other metadata of the file the
    coefficients came from (the rest of its EXIF, its ICC profile) is not part of them.
    Raises ``ValueError`` for coefficients that are not one baseline JPEG: block grids that
    do not match ``width``, ``height`` and ``sampling``, non-integer or out-of-range values,
    steps outside 1..255, or a component without its table or sampling.
    """
    data = _baseline_stream(coefficients)
    if coefficients.orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = coefficients.orientation
        segment = exif.tobytes()
        data = data[:2] + b"\xff\xe1" + struct.pack(">H", 2 + len(segment)) + segment + data[2:]
    if isinstance(destination, (str, os.PathLike)):
        Path(destination).write_bytes(data)
    else:
        destination.write(data)


def libjpeg_decode(coefficients: JPEGCoefficients) -> Image.Image:
    """What libjpeg (Pillow's decoder) decodes ``coefficients`` to, loaded, in stored
    orientation: the picture a viewer shows of the file they came from. Raises
    ``ValueError`` for coefficients no baseline JPEG can hold."""
    image = _pillow_decoder(_baseline_stream(coefficients))
    image.load()
    return image


def _check_writable(coefficients: JPEGCoefficients) -> None:
    """Refuse coefficients that do not describe one baseline JPEG (``ValueError``): libjpeg
    would write them wrongly, or abort the process, rather than say so."""
    blocks, tables, sampling = coefficients.blocks, coefficients.tables, coefficients.sampling
    if len(blocks) not in (1, 3) or len(tables) != len(blocks) or len(sampling) != len(blocks):
        raise ValueError(f"{len(blocks)} block grids, {len(tables)} tables and {len(sampling)} sampling factors: "
                         "a JPEG here has 1 or 3 components, each with all three")
    width, height = coefficients.width, coefficients.height
    if not 1 <= width <= 65535 or not 1 <= height <= 65535:
        raise ValueError(f"a JPEG is 1 to 65535 pixels a side, not {width}x{height}")
    if any(not (isinstance(f, (int, np.integer)) and 1 <= f <= 4) for factor in sampling for f in factor):
        raise ValueError(f"sampling factors are whole numbers from 1 to 4, got {tuple(sampling)}")
    tallest, widest = coefficients.max_sampling
    if any(tallest % v or widest % h for v, h in sampling):
        raise ValueError(f"sampling {tuple(sampling)}: each component's factors must divide the largest ones")
    for index, (grid, table, (v, h)) in enumerate(zip(blocks, tables, sampling)):
        grid, table = np.asarray(grid), np.asarray(table)
        expected = (*block_grid(height, width, (tallest // v, widest // h)), BLOCK, BLOCK)
        if grid.shape != expected:
            raise ValueError(f"component {index}: a block grid of shape {grid.shape}, but a {width}x{height} image "
                             f"with sampling {tuple(sampling)} has {expected}")
        if not np.issubdtype(grid.dtype, np.integer):
            raise ValueError(f"component {index}: coefficients are integers, not {grid.dtype}")
        dc, ac = grid[..., 0, 0], grid.reshape(-1, BLOCK * BLOCK)[:, 1:]  # views: no copy of a large plane
        if grid.size and (int(dc.min()) < -2047 or int(dc.max()) > 2047 or int(ac.min()) < -1023 or int(ac.max()) > 1023):
            raise ValueError(f"component {index}: a baseline JPEG holds DC coefficients of at most +-2047 and AC "
                             "coefficients of at most +-1023")
        if (table.shape != (BLOCK, BLOCK) or not np.issubdtype(table.dtype, np.integer)
                or int(table.min()) < 1 or int(table.max()) > 255):
            raise ValueError(f"component {index}: a baseline quantization table is 8x8 whole steps of 1 to 255, "
                             f"got {table.dtype} of shape {table.shape} from {table.min()} to {table.max()}")


def _baseline_stream(coefficients: JPEGCoefficients) -> bytes:
    """A baseline JPEG stream of ``coefficients`` with no metadata, written by libjpeg."""
    _check_writable(coefficients)
    planes = [np.ascontiguousarray(p, dtype=np.int16) for p in coefficients.blocks]
    unique: list[np.ndarray] = []
    table_ids = []
    for table in coefficients.tables:
        table = np.asarray(table, dtype=np.uint16)
        for index, known in enumerate(unique):
            if np.array_equal(known, table):
                table_ids.append(index)
                break
        else:
            table_ids.append(len(unique))
            unique.append(table)
    with _JPEGLIB_LOCK, tempfile.TemporaryDirectory(prefix="qgac-") as folder:
        path = os.path.join(folder, "out.jpg")
        jpeg = _jpeglib().from_dct(
            Y=planes[0],
            Cb=None if len(planes) == 1 else planes[1],
            Cr=None if len(planes) == 1 else planes[2],
            qt=np.stack(unique),
            quant_tbl_no=table_ids,
        )
        jpeg.height, jpeg.width = coefficients.height, coefficients.width
        jpeg.samp_factor = np.array(coefficients.sampling, dtype=np.int32)
        try:
            jpeg.write_dct(path)
        except OSError as error:  # libjpeg's own checks (a DC difference beyond 11 bits); it names the temporary file
            raise ValueError("libjpeg cannot write these coefficients as a baseline JPEG (a DC difference between "
                             "neighbouring blocks beyond +-2047, or another value out of its range)") from error
        return Path(path).read_bytes()
