"""rosbag2 recordings of camera images, written and read with `rosbags` (no ROS needed).

Bags hold ``sensor_msgs/msg/Image`` (rgb8) or ``sensor_msgs/msg/CompressedImage`` (jpeg/png)
in CDR, exactly as a ROS 2 recorder stores them, in sqlite3 or MCAP storage. The header stamp of
each message equals its bag timestamp, so replays can match outputs to inputs by stamp.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
DEFAULT_TOPIC = "/camera/image_raw"
START_NS = 1_700_000_000 * 10**9  # a fixed epoch: bags are reproducible byte for byte


class BagError(ValueError):
    """A bag that cannot be read as an image recording (the text names the bag and why)."""


@dataclass(frozen=True)
class BagFrame:
    topic: str
    msgtype: str  # IMAGE_TYPE or COMPRESSED_TYPE
    timestamp_ns: int
    cdr: bytes  # the serialized message, as on the wire


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def _storage_plugin(storage: str):
    from rosbags.rosbag2 import StoragePlugin

    plugins = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
    if storage not in plugins:
        raise ValueError(f"storage must be one of {sorted(plugins)}, got '{storage}'")
    return plugins[storage]


def write_image_bag(
    out: str | Path,
    frames: Iterable[np.ndarray],
    rate_hz: float,
    topic: str = DEFAULT_TOPIC,
    frame_id: str = "camera",
    compressed: str | None = None,
    storage: str = "sqlite3",
    annotations: Iterable[dict] | None = None,
) -> int:
    """Write RGB frames (H, W, 3 uint8) as a rosbag2 at ``rate_hz``; returns the frame count.

    compressed: None for raw rgb8 Images, "jpeg" or "png" for CompressedImages.
    annotations: optional per-frame dicts (e.g. ground-truth boxes of synthetic scenes), saved
    next to the bag in ``annotations.jsonl`` keyed by stamp, for checks and demos.
    """
    from rosbags.rosbag2 import Writer

    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be positive, got {rate_hz}")
    if compressed not in (None, "jpeg", "png"):
        raise ValueError(f"compressed must be None, 'jpeg' or 'png', got '{compressed}'")
    out = Path(out)
    store = _typestore()
    Image = store.types[IMAGE_TYPE]
    CompressedImage = store.types[COMPRESSED_TYPE]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    msgtype = COMPRESSED_TYPE if compressed else IMAGE_TYPE
    period_ns = int(round(1e9 / rate_hz))
    notes = iter(annotations) if annotations is not None else None
    count = 0
    lines = []
    with Writer(out, version=9, storage_plugin=_storage_plugin(storage)) as writer:
        connection = writer.add_connection(topic, msgtype, typestore=store)
        for index, rgb in enumerate(frames):
            rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
            if rgb.ndim != 3 or rgb.shape[2] != 3:
                raise ValueError(f"frame {index}: expected (H, W, 3) uint8 RGB, got shape {rgb.shape}")
            stamp_ns = START_NS + index * period_ns
            header = Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id)
            if compressed:
                ok, encoded = cv2.imencode(".jpg" if compressed == "jpeg" else ".png",
                                           cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                if not ok:
                    raise ValueError(f"frame {index}: {compressed} encoding failed")
                message = CompressedImage(header=header, format=compressed, data=encoded.reshape(-1))
            else:
                height, width = rgb.shape[:2]
                message = Image(header=header, height=height, width=width, encoding="rgb8",
                                is_bigendian=0, step=width * 3, data=rgb.reshape(-1))
            writer.write(connection, stamp_ns, store.serialize_cdr(message, msgtype))
            if notes is not None:
                lines.append(json.dumps({"stamp_ns": stamp_ns, **next(notes)}))
            count += 1
    if lines:
        (out / "annotations.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return count


def read_image_bag(path: str | Path, topic: str | None = None) -> Iterator[BagFrame]:
    """The image messages of a bag in time order (raw CDR, ready to publish or decode).

    topic: which topic to read; None takes the bag's only image topic (an error if several).
    """
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        raise BagError(f"{path}: not a rosbag2 directory (no metadata.yaml)")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as err:  # rosbags raises its own types for every kind of damage
        raise BagError(f"{path}: cannot open bag: {err}") from err
    try:
        images = [c for c in reader.connections if c.msgtype in (IMAGE_TYPE, COMPRESSED_TYPE)]
        if topic is not None:
            images = [c for c in images if c.topic == topic]
        topics = sorted({c.topic for c in images})
        if not topics:
            raise BagError(f"{path}: no image topic{f' named {topic}' if topic else ''} "
                           f"(topics: {sorted({c.topic for c in reader.connections})})")
        if len(topics) > 1:
            raise BagError(f"{path}: several image topics {topics}; choose one with --topic")
        messages = reader.messages(connections=images)
        while True:
            try:
                connection, timestamp, data = next(messages)
            except StopIteration:
                break
            except Exception as err:  # a damaged chunk or row, whatever the storage raises
                raise BagError(f"{path}: damaged bag: {type(err).__name__}: {err}") from err
            yield BagFrame(connection.topic, connection.msgtype, int(timestamp), bytes(data))
    finally:
        reader.close()


def decode_frame(frame: BagFrame) -> tuple[int, np.ndarray]:
    """(header stamp in ns, RGB image) of a bag frame, without ROS."""
    from emotion_perception.ros.image_conversion import ImageConversionError, compressed_to_rgb, image_to_rgb

    try:
        message = _typestore().deserialize_cdr(frame.cdr, frame.msgtype)
    except Exception as err:  # truncated or garbled CDR: rosbags raises struct / index / its own errors
        raise BagError(f"frame at {frame.timestamp_ns} ns on {frame.topic}: not a readable "
                       f"{frame.msgtype} ({type(err).__name__}: {err})") from err
    stamp_ns = message.header.stamp.sec * 10**9 + message.header.stamp.nanosec
    try:
        rgb = compressed_to_rgb(message) if frame.msgtype == COMPRESSED_TYPE else image_to_rgb(message)
    except ImageConversionError as err:
        raise BagError(f"frame at {frame.timestamp_ns} ns on {frame.topic}: {err}") from err
    return stamp_ns, rgb


def check_bag(path: str | Path, topic: str | None = None) -> int:
    """The number of image frames of a bag after reading and decoding every one (BagError
    naming the bag or the frame otherwise), so tools can refuse a damaged bag up front."""
    count = 0
    for frame in read_image_bag(path, topic):
        decode_frame(frame)
        count += 1
    read_annotations(path)
    return count


def read_annotations(path: str | Path) -> dict[int, dict]:
    """Ground truth saved by :func:`write_image_bag`, keyed by stamp (empty if none)."""
    file = Path(path) / "annotations.jsonl"
    if not file.is_file():
        return {}
    try:
        records = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        return {record.pop("stamp_ns"): record for record in records}
    except (ValueError, KeyError, AttributeError, TypeError) as err:
        raise BagError(f"{file}: not one JSON object with 'stamp_ns' per line ({type(err).__name__}: {err})") from err
