"""Reading images and their sizes, with the size checked before any pixel is decoded.

Every image this package decodes (dataset files, ``predict`` inputs, the nodes' CompressedImage
frames) has its dimensions read from the encoded header first (PNG IHDR, JPEG SOF, BMP, WebP)
and is refused when it has more pixels than a limit: a few hundred KB of PNG can declare
30000x30000 pixels, and decoding it costs gigabytes and tens of seconds (OpenCV's own ceiling
is 2^30 pixels). A format whose header we do not parse is refused too, since its size cannot be
checked. ``image_size`` reads only the header, so readers that need sizes (HECO's CSV has none)
do not decode thousands of images.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

# 2^25: an 8K UHD frame (7680x4320 = 33.2 M) fits; one decoded RGB copy is then at most 96 MB.
DEFAULT_MAX_IMAGE_PIXELS = 2**25
HEADER_FORMATS = ("PNG", "JPEG", "BMP", "WebP")  # the formats whose size is read before decoding

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers that carry the image size (baseline, progressive, lossless ...);
# 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) share the range but are not frames.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageError(ValueError):
    """An image that is refused before decoding: too many pixels, or a format whose size
    cannot be read from its header. The message names the image and says which."""


def read_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB image.

    FileNotFoundError naming the path when it is missing or does not decode; ImageError when
    its header declares more than ``max_pixels`` pixels or is not one of HEADER_FORMATS.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise FileNotFoundError(f"{path}: image missing or unreadable ({err.strerror or err})") from err
    return decode_rgb(data, max_pixels, source=str(path))


def decode_rgb(data: bytes | bytearray | memoryview | np.ndarray, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
               source: str = "image") -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 RGB, after ``check_encoded_size``.

    FileNotFoundError (``source``: image missing or unreadable) when the bytes do not decode.
    """
    buffer = np.frombuffer(data, dtype=np.uint8)
    check_encoded_size(buffer, max_pixels, source)
    decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if decoded is None:
        raise FileNotFoundError(f"{source}: image missing or unreadable")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def check_encoded_size(data: bytes | bytearray | memoryview | np.ndarray, max_pixels: int,
                       source: str = "image") -> tuple[int, int]:
    """(width, height) from the header of encoded image bytes; ImageError when the format is
    not one of HEADER_FORMATS, the header gives no size, or width * height > ``max_pixels``."""
    # ndarray.data is the array's memoryview (numpy's stubs do not declare ndarray a Buffer on Python 3.11).
    found = encoded_size(io.BytesIO(np.frombuffer(data, dtype=np.uint8).data))
    if found is None:
        raise ImageError(f"{source}: not a {', '.join(HEADER_FORMATS)} image with a readable size in its header "
                         "(other formats are refused: their size cannot be checked before decoding)")
    image_format, width, height = found
    if width * height > max_pixels:
        raise ImageError(f"{source}: {image_format} of {width}x{height} = {width * height} pixels is over the "
                         f"limit of {max_pixels} pixels (refused before decoding)")
    return width, height


def write_rgb(path: str | Path, image_rgb: np.ndarray, jpeg_quality: int = 92) -> None:
    """Write an RGB image; the format follows the suffix (.jpg/.png)."""
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if str(path).lower().endswith((".jpg", ".jpeg")) else []
    if not cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"{path}: could not write image")


def encoded_size(handle: BinaryIO) -> tuple[str, int, int] | None:
    """(format, width, height) from an encoded image's header, or None when the format is not
    one of HEADER_FORMATS or its header has no positive size. Reads the header only."""
    header = handle.read(32)
    size: tuple[int, int] | None = None
    image_format = ""
    if header[:8] == _PNG_SIGNATURE:
        image_format, size = "PNG", _png_size(header)
    elif header[:2] == b"\xff\xd8":
        image_format, size = "JPEG", _jpeg_size(handle)
    elif header[:2] == b"BM":
        image_format, size = "BMP", _bmp_size(header)
    elif header[:4] == b"RIFF" and header[8:12] == b"WEBP":
        image_format, size = "WebP", _webp_size(header)
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return image_format, size[0], size[1]


def _png_size(header: bytes) -> tuple[int, int] | None:
    # IHDR is the first chunk by the PNG specification; decoders refuse a file without it there.
    if len(header) >= 24 and header[12:16] == b"IHDR":
        width, height = struct.unpack(">II", header[16:24])
        return int(width), int(height)
    return None


def _jpeg_size(handle: BinaryIO) -> tuple[int, int] | None:
    handle.seek(2)
    while True:
        byte = handle.read(1)
        while byte and byte != b"\xff":
            byte = handle.read(1)
        while byte == b"\xff":
            byte = handle.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue  # markers without a length field
        if marker in (0xDA, 0xD9):
            return None  # scan data or end of image before any frame header
        length_bytes = handle.read(2)
        if len(length_bytes) < 2:
            return None
        (length,) = struct.unpack(">H", length_bytes)
        if marker in _JPEG_SOF:
            data = handle.read(5)
            if len(data) < 5:
                return None
            height, width = struct.unpack(">HH", data[1:5])
            return int(width), int(height)  # height 0 (defined later by a DNL marker): no size
        handle.seek(length - 2, 1)


def _bmp_size(header: bytes) -> tuple[int, int] | None:
    if len(header) < 26:
        return None
    (dib_size,) = struct.unpack("<I", header[14:18])
    if dib_size == 12:  # BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack("<HH", header[18:22])
    else:  # BITMAPINFOHEADER and later: signed 32-bit, negative height = top-down rows
        width, height = struct.unpack("<ii", header[18:26])
    return abs(int(width)), abs(int(height))


def _webp_size(header: bytes) -> tuple[int, int] | None:
    chunk = header[12:16]
    if chunk == b"VP8 " and len(header) >= 30 and header[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", header[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(header) >= 25 and header[20] == 0x2F:
        (bits,) = struct.unpack("<I", header[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(header) >= 30:
        width = int.from_bytes(header[24:27], "little") + 1
        height = int.from_bytes(header[27:30], "little") + 1
        return width, height
    return None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of a PNG/JPEG/BMP/WebP image, from its header (nothing is decoded).

    FileNotFoundError when the file cannot be read, ImageError when it is not one of
    HEADER_FORMATS with a size in its header (``read_rgb`` would refuse it too).
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            found = encoded_size(handle)
    except OSError as err:
        raise FileNotFoundError(f"{path}: image missing or unreadable ({err.strerror or err})") from err
    if found is None:
        raise ImageError(f"{path}: not a {', '.join(HEADER_FORMATS)} image with a readable size in its header")
    return found[1], found[2]
