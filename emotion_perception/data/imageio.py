"""Reading images and their sizes for the dataset readers.

``image_size`` reads only the header of PNG and JPEG files (the formats of EMOTIC, HECO and
CAER-S), so readers that need sizes (HECO's CSV has none) do not decode thousands of images.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers that carry the image size (baseline, progressive, lossless ...);
# 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) share the range but are not frames.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def read_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB image; FileNotFoundError naming the path when it cannot be read."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"{path}: image missing or unreadable")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_rgb(path: str | Path, image_rgb: np.ndarray, jpeg_quality: int = 92) -> None:
    """Write an RGB image; the format follows the suffix (.jpg/.png)."""
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if str(path).lower().endswith((".jpg", ".jpeg")) else []
    if not cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"{path}: could not write image")


def _png_size(header: bytes) -> tuple[int, int] | None:
    if header[:8] == _PNG_SIGNATURE and header[12:16] == b"IHDR":
        width, height = struct.unpack(">II", header[16:24])
        return int(width), int(height)
    return None


def _jpeg_size(handle) -> tuple[int, int] | None:
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
        length_bytes = handle.read(2)
        if len(length_bytes) < 2:
            return None
        (length,) = struct.unpack(">H", length_bytes)
        if marker in _JPEG_SOF:
            data = handle.read(5)
            if len(data) < 5:
                return None
            height, width = struct.unpack(">HH", data[1:5])
            return int(width), int(height)
        handle.seek(length - 2, 1)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image, from its header for PNG/JPEG, by decoding otherwise."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            header = handle.read(32)
            size = _png_size(header)
            if size is None and header[:2] == b"\xff\xd8":
                size = _jpeg_size(handle)
    except OSError as err:
        raise FileNotFoundError(f"{path}: image missing or unreadable ({err})") from err
    if size is not None and size[0] > 0 and size[1] > 0:
        return size
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FileNotFoundError(f"{path}: image missing or unreadable")
    return int(image.shape[1]), int(image.shape[0])
