"""sensor_msgs/Image and CompressedImage to numpy RGB, without ROS imports.

The functions take any object with the message's fields (``height``, ``width``, ``encoding``,
``is_bigendian``, ``step``, ``data``; ``format`` and ``data`` for compressed images), so they
are tested without rclpy. The numpy path is the default and needs nothing but numpy and
OpenCV; cv_bridge is used only when asked for (``to_rgb(prefer_cv_bridge=True)``, the nodes'
``image_converter: cv_bridge``), because an apt cv_bridge built for numpy 1 beside a numpy 2
imports fine and then fails on the first frame.

Every frame is checked against a pixel limit before anything is converted or decoded: a raw
image by its declared width x height, a compressed one by the size in its encoded header
(``data.imageio.check_encoded_size``: PNG, JPEG, BMP, WebP; other formats are refused), so a
small PNG declaring 30000x30000 pixels costs a header read, not gigabytes. Values from the wire
appear in error texts only through ``quote_untrusted``.

Raw images are viewed in place (``np.frombuffer`` over the message buffer, ``step`` as the row
stride): the only copy is the colour conversion to contiguous RGB that the network needs anyway.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from emotion_perception.data.imageio import DEFAULT_MAX_IMAGE_PIXELS, ImageError, check_encoded_size, decode_rgb
from emotion_perception.errors import quote_untrusted

# encoding -> (channels, how to reach RGB from the raw layout)
_LAYOUTS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    # 4:2:2 packed, 2 bytes per pixel. ROS's "yuv422" is UYVY; "yuv422_yuy2" is YUYV.
    "yuv422": (2, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": (2, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, cv2.COLOR_YUV2RGB_YUYV),
    "yuyv": (2, cv2.COLOR_YUV2RGB_YUYV),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)


class ImageConversionError(ValueError):
    """The message cannot be read as an image (the text says why)."""


def raw_view(msg: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """A zero-copy (H, W, C) uint8 view of a sensor_msgs/Image's pixels, in its own encoding."""
    encoding = str(msg.encoding).lower()
    if encoding not in _LAYOUTS:
        raise ImageConversionError(
            f"unsupported encoding {quote_untrusted(msg.encoding)} (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    channels, _ = _LAYOUTS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"empty image: {width}x{height}")
    if width * height > max_pixels:
        raise ImageConversionError(f"{width}x{height} = {width * height} pixels is over the limit of {max_pixels}")
    if channels == 2 and width % 2:
        # 4:2:2 packs two pixels in four bytes: an odd width has no valid layout (OpenCV
        # raises on it), and one such frame must be a rejected frame, not a failed worker.
        raise ImageConversionError(f"{encoding} needs an even width, got {width}")
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width*bytes_per_pixel = {width}*{channels} = {row_bytes}"
        )
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    needed = step * (height - 1) + row_bytes
    if buffer.size < needed:
        raise ImageConversionError(
            f"truncated data: {buffer.size} bytes for {width}x{height} {encoding} with step {step} (need {needed})"
        )
    rows = np.lib.stride_tricks.as_strided(
        buffer, shape=(height, row_bytes), strides=(step, 1), writeable=False
    )
    return rows.reshape(height, width, channels)


def image_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """sensor_msgs/Image -> contiguous (H, W, 3) uint8 RGB, with numpy and OpenCV only."""
    view = raw_view(msg, max_pixels)
    encoding = str(msg.encoding).lower()
    _, conversion = _LAYOUTS[encoding]
    if conversion is None:
        return np.ascontiguousarray(view)
    if encoding in ("mono8",):
        return cv2.cvtColor(np.ascontiguousarray(view[..., 0]), conversion)
    return cv2.cvtColor(np.ascontiguousarray(view), conversion)


def check_compressed(msg: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """The bytes of a sensor_msgs/CompressedImage whose header passed the pixel limit."""
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    if buffer.size == 0:
        raise ImageConversionError("empty compressed image")
    source = f"compressed image (format {quote_untrusted(msg.format)}, {buffer.size} bytes)"
    try:
        check_encoded_size(buffer, max_pixels, source)
    except ImageError as err:
        raise ImageConversionError(str(err)) from err
    return buffer


def compressed_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG, PNG, BMP or WebP) -> (H, W, 3) uint8 RGB."""
    buffer = check_compressed(msg, max_pixels)
    try:
        # The size is checked once more inside; a header read costs microseconds.
        return decode_rgb(buffer, max_pixels, source=f"compressed image (format {quote_untrusted(msg.format)})")
    except (ImageError, FileNotFoundError) as err:
        raise ImageConversionError(f"cannot decode: {err}") from err


def cv_bridge_available() -> bool:
    try:
        import cv_bridge  # noqa: F401
    except ImportError:
        return False
    return True


def to_rgb(msg: Any, compressed: bool = False, prefer_cv_bridge: bool = False,
           max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Message -> RGB array, with numpy, or through cv_bridge when asked for and importable.

    Either path raises ImageConversionError for bad input (cv_bridge's own errors are wrapped),
    including a frame over ``max_pixels`` (checked before decoding); a broken cv_bridge raises
    whatever it raises (the node counts that frame as failed).
    """
    if prefer_cv_bridge and cv_bridge_available():
        from cv_bridge import CvBridge, CvBridgeError

        bridge = CvBridge()
        try:
            # cv_bridge checks neither the pixel limit nor step/size as strictly; run our checks
            # first so both paths reject the same messages.
            if compressed:
                check_compressed(msg, max_pixels)
                return bridge.compressed_imgmsg_to_cv2(msg, desired_encoding="rgb8")
            raw_view(msg, max_pixels)
            return bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
        except (CvBridgeError, TypeError, cv2.error) as err:
            raise ImageConversionError(quote_untrusted(str(err), 200)) from err
    return compressed_to_rgb(msg, max_pixels) if compressed else image_to_rgb(msg, max_pixels)


def rgb_to_image_fields(rgb: np.ndarray) -> dict[str, Any]:
    """Fields of a sensor_msgs/Image holding ``rgb`` (rgb8), for publishing debug images."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    return {
        "height": height,
        "width": width,
        "encoding": "rgb8",
        "is_bigendian": 0,
        "step": width * 3,
        "data": rgb.tobytes(),
    }
