"""rosbag2 tools (no ROS needed) and one short replay benchmark through a real node over DDS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emotion_perception.bench.bag_io import (
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    START_NS,
    BagError,
    decode_frame,
    read_annotations,
    read_image_bag,
    write_image_bag,
)
from emotion_perception.bench.replay_frames import photo_collage_frames, synthetic_frames
from emotion_perception.cli import main as cli_main
from emotion_perception.data.imageio import write_rgb
from emotion_perception.eval.metrics import box_iou

ROOT = Path(__file__).resolve().parents[1]


def _frames(count: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(count)]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_raw_bag_round_trip_keeps_pixels_stamps_and_truth(tmp_path, storage):
    frames = _frames()
    count = write_image_bag(tmp_path / "bag", frames, rate_hz=20.0, storage=storage,
                            annotations=[{"index": i} for i in range(4)])
    assert count == 4
    read = list(read_image_bag(tmp_path / "bag"))
    assert [f.msgtype for f in read] == [IMAGE_TYPE] * 4
    stamps = []
    for frame, original in zip(read, frames):
        stamp, rgb = decode_frame(frame)
        assert stamp == frame.timestamp_ns  # header stamp = bag time
        np.testing.assert_array_equal(rgb, original)
        stamps.append(stamp)
    assert stamps == [START_NS + i * 50_000_000 for i in range(4)]  # 20 Hz
    assert read_annotations(tmp_path / "bag") == {s: {"index": i} for i, s in enumerate(stamps)}


def test_compressed_bag_png_is_lossless_and_rclpy_reads_the_cdr(tmp_path):
    frames = _frames(2)
    write_image_bag(tmp_path / "bag", frames, rate_hz=10.0, compressed="png")
    read = list(read_image_bag(tmp_path / "bag"))
    assert read[0].msgtype == COMPRESSED_TYPE
    np.testing.assert_array_equal(decode_frame(read[1])[1], frames[1])
    rclpy_serialization = pytest.importorskip("rclpy.serialization")
    from sensor_msgs.msg import CompressedImage

    message = rclpy_serialization.deserialize_message(read[0].cdr, CompressedImage)
    assert message.format == "png" and message.header.frame_id == "camera"


def test_bag_errors_are_clear(tmp_path):
    with pytest.raises(BagError, match="not a rosbag2 directory"):
        list(read_image_bag(tmp_path))
    write_image_bag(tmp_path / "bag", _frames(1), rate_hz=10.0)
    with pytest.raises(BagError, match="no image topic named /other"):
        list(read_image_bag(tmp_path / "bag", topic="/other"))
    with pytest.raises(ValueError, match="expected \\(H, W, 3\\)"):
        write_image_bag(tmp_path / "bad", [np.zeros((4, 4), np.uint8)], rate_hz=10.0)
    with pytest.raises(ValueError, match="rate_hz must be positive"):
        write_image_bag(tmp_path / "bad2", _frames(1), rate_hz=0)


def test_bag_make_synthetic_with_a_fixed_number_of_people(tmp_path):
    assert cli_main(["bench", "make-bag", "--synthetic", "3", "--people", "5", "--size", "320", "240",
                     "--out", str(tmp_path / "bag"), "--rate", "15"]) == 0
    frames = list(read_image_bag(tmp_path / "bag"))
    truth = read_annotations(tmp_path / "bag")
    assert len(frames) == 3 and all(len(t["boxes"]) == 5 for t in truth.values())
    stamp, rgb = decode_frame(frames[0])
    assert rgb.shape == (240, 320, 3)
    for x1, y1, x2, y2 in truth[stamp]["boxes"]:
        assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240


def test_generator_frames_carry_their_people_and_labels():
    frames, notes = synthetic_frames(2, people=None, width=320, height=240, seed=3)
    assert frames[0].shape == (240, 320, 3)
    for note in notes:
        assert 1 <= len(note["boxes"]) <= 8 and len(note["labels"]) == len(note["boxes"])


def test_photo_collage_places_real_faces_that_dlib_finds():
    from skimage import data

    from emotion_perception.data.faces import FaceDetector

    photo = data.astronaut()
    face = FaceDetector("hog").detect(photo)[0, :4]
    frames, notes = photo_collage_frames(1, 2, photo, tuple(face), width=480, height=240, seed=0)
    found = FaceDetector("hog").detect(frames[0])
    assert len(found) == 2
    # every placed face is found
    assert (box_iou(notes[0]["boxes"], found[:, :4]).max(axis=1) > 0.5).all()


@pytest.mark.ros
def test_bench_bag_through_the_real_node_counts_add_up(tmp_path, ros_env):
    bag = tmp_path / "bag"
    write_image_bag(bag, synthetic_frames(4, people=2, width=320, height=240, seed=0)[0], rate_hz=10.0)
    report_path = tmp_path / "report.json"
    code = cli_main(["bench", "bag", "--bag", str(bag), "--node", "benet", "--backends", "torch",
                     "--rate", "4,40", "--frames", "12", "--param", "device=cpu", "--json", str(report_path)])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["header"]["cpu"] and report["header"]["versions"]["torch"]
    assert [run["rate_hz"] for run in report["runs"]] == [4.0, 40.0]
    for run in report["runs"]:
        assert run["sent"] == 12
        assert run["sent"] == run["received"] + run["dropped"]
        assert run["received"] >= 1
        latency = run["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
        assert len(run["latencies_ms_raw"]) == run["received"]
        assert all(v > 0 for v in run["latencies_ms_raw"])
        counters = run["node_counters"]
        assert int(counters["frames_received"]) >= 1
    slow, fast = report["runs"]
    assert fast["dropped"] >= slow["dropped"]  # 40 Hz outruns a CPU node; 4 Hz should not
    assert report_path.with_suffix(".png").is_file()


def _bag_with_a_garbled_message(path: Path) -> Path:
    """A well-formed rosbag2 whose second Image message is 40 bytes of garbage (a truncated
    recording, a writer bug): the container opens, the message does not deserialize."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    write_image_bag(path.with_name("good"), _frames(1), rate_hz=10.0)
    (good,) = list(read_image_bag(path.with_name("good")))
    store = get_typestore(Stores.ROS2_KILTED)
    with Writer(path, version=9) as writer:
        connection = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=store)
        writer.write(connection, good.timestamp_ns, good.cdr)
        writer.write(connection, good.timestamp_ns + 1, b"\x00\x01\x00\x00" + b"\xff" * 36)
    return path


def test_a_garbled_message_or_annotation_file_is_a_bag_error_naming_it(tmp_path):
    from emotion_perception.bench.bag_io import check_bag, decode_frame

    bag = _bag_with_a_garbled_message(tmp_path / "bag")
    first, second = list(read_image_bag(bag))
    assert decode_frame(first)[1].shape[2] == 3
    with pytest.raises(BagError, match="not a readable sensor_msgs/msg/Image"):
        decode_frame(second)
    with pytest.raises(BagError, match="not a readable"):
        check_bag(bag)
    write_image_bag(tmp_path / "noted", _frames(1), rate_hz=10.0)
    (tmp_path / "noted" / "annotations.jsonl").write_text("{not json\n")
    with pytest.raises(BagError, match="annotations.jsonl: not one JSON object"):
        check_bag(tmp_path / "noted")


def test_bench_bag_refuses_a_damaged_bag_in_one_line(tmp_path):
    bag = _bag_with_a_garbled_message(tmp_path / "bag")
    with pytest.raises(SystemExit) as stop:
        cli_main(["bench", "bag", "--bag", str(bag), "--rate", "5", "--json", str(tmp_path / "out.json")])
    message = str(stop.value.code)
    assert message.startswith("bench bag: ") and "not a readable" in message and "\n" not in message


def test_bag_make_from_images_names_an_unusable_image_in_one_line(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_rgb(images / "a.png", _frames(1)[0])
    (images / "b.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit) as stop:
        cli_main(["bench", "make-bag", "--images", str(images), "--out", str(tmp_path / "bag")])
    message = str(stop.value.code)
    assert message.startswith("bench make-bag: ") and "b.png" in message and "\n" not in message
