"""Image sizes from encoded headers, and the pixel limit checked before any decoding."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from encoded_images import jpeg_with_app_segment, png_bomb, webp_vp8x_header

from emotion_perception.data.imageio import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageError,
    check_encoded_size,
    decode_rgb,
    image_size,
    read_rgb,
)

SIZES = [(17, 9), (640, 480), (33, 101)]


def _encode(suffix: str, width: int, height: int, params: tuple[int, ...] = ()) -> bytes:
    pixels = np.random.default_rng(width * height).integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(suffix, pixels, list(params))
    assert ok
    return encoded.tobytes()


@pytest.mark.parametrize("suffix, params", [
    (".png", ()), (".jpg", ()), (".bmp", ()),
    (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80)),    # lossy: VP8
    (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)),   # lossless: VP8L
])
def test_header_size_matches_the_decoder(suffix, params):
    for width, height in SIZES:
        data = _encode(suffix, width, height, params)
        assert check_encoded_size(data, DEFAULT_MAX_IMAGE_PIXELS) == (width, height)
        assert decode_rgb(data).shape == (height, width, 3)


def test_jpeg_frame_header_is_found_after_a_large_exif_like_segment():
    data = jpeg_with_app_segment(_encode(".jpg", 40, 30))
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (30, 40, 3)
    assert check_encoded_size(data, DEFAULT_MAX_IMAGE_PIXELS) == (40, 30)


def test_webp_extended_header_gives_the_canvas():
    assert check_encoded_size(webp_vp8x_header(70000, 2), 10**9) == (70000, 2)
    with pytest.raises(ImageError, match="over the limit"):
        check_encoded_size(webp_vp8x_header(70000, 70000), DEFAULT_MAX_IMAGE_PIXELS)


def test_the_limit_is_inclusive():
    data = _encode(".png", 20, 10)
    assert check_encoded_size(data, 200) == (20, 10)
    with pytest.raises(ImageError, match="PNG of 20x10 = 200 pixels is over the limit of 199"):
        check_encoded_size(data, 199)


def test_a_png_bomb_is_refused_from_its_header_in_milliseconds(tmp_path: Path):
    bomb = png_bomb(16000, 16000)  # 250 KB that decode to 256 M pixels (768 MB as RGB)
    assert len(bomb) < 400_000
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    started = time.perf_counter()
    with pytest.raises(ImageError, match=r"bomb.png: PNG of 16000x16000 = 256000000 pixels is over the limit"):
        read_rgb(path)
    with pytest.raises(ImageError, match="over the limit"):
        decode_rgb(bomb)
    assert time.perf_counter() - started < 1.0  # decoding it takes seconds
    # the limit is the caller's: a small bomb under a raised limit decodes
    assert read_rgb(_write(tmp_path / "small.png", png_bomb(300, 200)), max_pixels=60_000).shape == (200, 300, 3)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_formats_without_a_parsed_header_are_refused_not_decoded(tmp_path: Path):
    tiff = _write(tmp_path / "a.tiff", _encode(".tiff", 8, 8))
    assert cv2.imread(str(tiff)) is not None  # OpenCV would decode it, with no size check
    with pytest.raises(ImageError, match="not a PNG, JPEG, BMP, WebP image"):
        read_rgb(tiff)
    with pytest.raises(ImageError, match="not a PNG, JPEG, BMP, WebP image"):
        image_size(tiff)
    # a truncated PNG (signature, no IHDR) has no size either
    with pytest.raises(ImageError):
        check_encoded_size(_encode(".png", 8, 8)[:10], DEFAULT_MAX_IMAGE_PIXELS)


def test_missing_and_corrupt_files_are_file_not_found(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="missing.png: image missing or unreadable"):
        read_rgb(tmp_path / "missing.png")
    corrupt = _write(tmp_path / "corrupt.png", _encode(".png", 32, 32)[:60])  # header intact, pixels cut
    with pytest.raises(FileNotFoundError, match="corrupt.png: image missing or unreadable"):
        read_rgb(corrupt)
