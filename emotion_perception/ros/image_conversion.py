"""sensor_msgs/Image and CompressedImage to numpy RGB, without ROS imports.

The functions take any object with the message's fields (``height``, ``width``, ``encoding``,
``is_bigendian``, ``step``, ``data``; ``format`` and ``data`` for compressed images), so they
are tested without rclpy. The numpy path is the default and needs nothing but numpy and
OpenCV; cv_bridge is used only when asked for (``to_rgb(prefer_cv_bridge=True)``, the nodes'
``image_converter: cv_bridge``), because an apt cv_bridge built for numpy 1 beside a numpy 2
imports fine and then fails on the first frame.

Raw images are viewed in place (``np.frombuffer`` over the message buffer, ``step`` as the row
stride): the only copy is the colour conversion to contiguous RGB that the network needs anyway.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

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


def raw_view(msg: Any) -> np.ndarray:
    """A zero-copy (H, W, C) uint8 view of a sensor_msgs/Image's pixels, in its own encoding."""
    encoding = str(msg.encoding).lower()
    if encoding not in _LAYOUTS:
        raise ImageConversionError(
            f"unsupported encoding '{msg.encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    channels, _ = _LAYOUTS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"empty image: {width}x{height}")
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


def image_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> contiguous (H, W, 3) uint8 RGB, with numpy and OpenCV only."""
    view = raw_view(msg)
    encoding = str(msg.encoding).lower()
    _, conversion = _LAYOUTS[encoding]
    if conversion is None:
        return np.ascontiguousarray(view)
    if encoding in ("mono8",):
        return cv2.cvtColor(np.ascontiguousarray(view[..., 0]), conversion)
    return cv2.cvtColor(np.ascontiguousarray(view), conversion)


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG) -> (H, W, 3) uint8 RGB."""
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    if buffer.size == 0:
        raise ImageConversionError("empty compressed image")
    decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if decoded is None:
        raise ImageConversionError(f"cannot decode compressed image (format '{msg.format}', {buffer.size} bytes)")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def cv_bridge_available() -> bool:
    try:
        import cv_bridge  # noqa: F401
    except ImportError:
        return False
    return True


def to_rgb(msg: Any, compressed: bool = False, prefer_cv_bridge: bool = False) -> np.ndarray:
    """Message -> RGB array, with numpy, or through cv_bridge when asked for and importable.

    Either path raises ImageConversionError for bad input (cv_bridge's own errors are wrapped);
    a broken cv_bridge raises whatever it raises (the node counts that frame as failed).
    """
    if prefer_cv_bridge and cv_bridge_available():
        from cv_bridge import CvBridge, CvBridgeError

        bridge = CvBridge()
        try:
            if compressed:
                return bridge.compressed_imgmsg_to_cv2(msg, desired_encoding="rgb8")
            # cv_bridge does not validate step/size as strictly; run our checks first so both
            # paths reject the same malformed messages.
            raw_view(msg)
            return bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
        except (CvBridgeError, TypeError, cv2.error) as err:
            raise ImageConversionError(str(err)) from err
    return compressed_to_rgb(msg) if compressed else image_to_rgb(msg)


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
