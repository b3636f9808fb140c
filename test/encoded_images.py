"""Encoded images built by hand for the tests: a PNG "decompression bomb" (a valid PNG whose
few hundred KB decode to width x height pixels) and headers OpenCV cannot write."""

from __future__ import annotations

import struct
import zlib


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A valid 8-bit greyscale PNG of width x height black pixels (16000 x 16000: 250 KB)."""
    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0 + the row's pixels
    stream = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", stream) + _png_chunk(b"IEND", b"")


def webp_vp8x_header(width: int, height: int) -> bytes:
    """The first 30 bytes of an extended-format WebP (VP8X) with that canvas."""
    body = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(body)) + b"WEBP" + b"VP8X" + struct.pack("<I", len(body)) + body


def jpeg_with_app_segment(jpeg: bytes, payload_size: int = 60000) -> bytes:
    """``jpeg`` with a large APP1 segment right after SOI (as a camera's EXIF block would be),
    so the frame header is far from the start of the file."""
    segment = b"\xff\xe1" + struct.pack(">H", payload_size + 2) + b"\xff\xc0" * (payload_size // 2)
    return jpeg[:2] + segment + jpeg[2:]
