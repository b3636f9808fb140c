"""Tracked ids over real DDS: two real faces swap their left-right order in the image and each
keeps its id, also across dropped frames; /diagnostics reports the active tracks. And the raw
(per-frame) values on emotions/raw beside their smoothing on /emotions."""

from __future__ import annotations

import pytest
from ros_peer import Peer

from emotion_perception.bench.replay import NodeProcess
from emotion_perception.eval.metrics import box_iou

pytestmark = pytest.mark.ros


def test_expression_node_keeps_each_face_id_when_they_swap_order_and_frames_drop(ros_env, tmp_path):
    from emotion_perception.data.synth.sequence import SequenceSettings, generate_sequence
    from emotion_perception.resources import external_model_dir

    if not (external_model_dir() / "face_expression.pt").is_file():
        pytest.skip("face-expression model not installed: run scripts/setup.sh")
    # Two lanes walking towards each other at 10 Hz (0.3 image widths per second): they swap order.
    frames = list(generate_sequence(SequenceSettings(frames=24, people=2, seed=12, kind="faces", speed=0.3)))
    first, last = frames[0].objects, frames[-1].objects
    assert (first[0].box[0] < first[1].box[0]) != (last[0].box[0] < last[1].box[0])
    node = NodeProcess("expression", {"backend": "torch", "device": "cpu", "track_lost_timeout": 1.0,
                                      "track_confirmation_frames": 2, "diagnostics_period": 0.5},
                       "/test_track/image", ros_env, log_path=tmp_path / "node.log")
    peer = Peer("/test_track/image")
    try:
        peer.wait_for_node(node, frames[0].image)
        lane_ids: dict[int, set[str]] = {0: set(), 1: set()}
        dropped = {9, 10, 11}  # 0.3 s the node never sees
        base = 1_700_100_000 * 10**9
        for frame in frames:
            if frame.index in dropped:
                continue
            out = peer.send_and_wait(peer.image(frame.image, base + (frame.index - 1) * 100_000_000), timeout=60.0)
            boxes = [(p.x_min, p.y_min, p.x_max, p.y_max) for p in out.people]
            overlap = box_iou([o.box for o in frame.objects], boxes) if boxes else None
            assert overlap is not None and (overlap.max(axis=1) > 0.3).all(), (
                f"frame {frame.index}: a face was not found")
            for lane in (0, 1):
                match = out.people[int(overlap[lane].argmax())]
                if match.id:  # empty: not confirmed yet (the first frames)
                    lane_ids[lane].add(match.id)
        assert all(len(ids) == 1 for ids in lane_ids.values()), lane_ids  # one id per person, all along
        assert lane_ids[0] != lane_ids[1]
        assert peer.spin_until(lambda: peer.latest_counters("/expression_node").get("active_tracks") == "2", 10.0)
    finally:
        peer.close()
        node.stop()


def test_raw_emotions_are_the_frame_values_and_emotions_their_smoothing_over_dds(ros_env, tmp_path):
    # publish_raw_emotions: emotions/raw carries the same people and ids as /emotions, with the
    # frame's own values; /emotions carries each track's exponential smoothing of them, which is
    # recomputed here by hand from the raw values and the header stamps.
    import math

    import numpy as np
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from emotion_perception.data.synth.sequence import SequenceSettings, generate_sequence
    from emotion_perception.msg import PersonEmotions

    tau, period_ns = 0.5, 100_000_000
    frames = list(generate_sequence(SequenceSettings(frames=8, people=3, seed=5, kind="bodies", cue_changes=4)))
    node = NodeProcess("benet", {"backend": "torch", "device": "cpu", "publish_raw_emotions": True,
                                 "smoothing_time_constant": tau, "track_confirmation_frames": 2},
                       "/test_raw/image", ros_env, log_path=tmp_path / "node.log")
    peer = Peer("/test_raw/image")
    raw: dict[int, PersonEmotions] = {}
    peer.node.create_subscription(
        PersonEmotions, "/emotions/raw",
        lambda m: raw.__setitem__(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, m),
        QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    try:
        peer.wait_for_node(node, frames[0].image)
        base = 1_700_200_000 * 10**9
        previous: dict[str, np.ndarray] = {}
        checked = differed = 0
        for frame in frames:
            stamp = base + frame.index * period_ns
            smoothed = peer.send_and_wait(peer.image(frame.image, stamp), timeout=60.0)
            assert peer.spin_until(lambda stamp=stamp: stamp in raw, 10.0), "no emotions/raw for the frame"
            frame_raw = raw[stamp]
            assert frame_raw.header == smoothed.header
            assert [p.id for p in frame_raw.people] == [p.id for p in smoothed.people]
            assert [(p.x_min, p.y_min, p.x_max, p.y_max) for p in frame_raw.people] == [
                (p.x_min, p.y_min, p.x_max, p.y_max) for p in smoothed.people]
            weight = 1.0 - math.exp(-(period_ns * 1e-9) / tau)
            current = {}
            for r, s in zip(frame_raw.people, smoothed.people):
                raw_scores, smooth_scores = np.asarray(r.scores), np.asarray(s.scores)
                if s.id and s.id in previous:
                    expected = previous[s.id] + weight * (raw_scores - previous[s.id])
                    np.testing.assert_allclose(smooth_scores, expected, atol=1e-5)
                    checked += 1
                    differed += int(np.abs(smooth_scores - raw_scores).max() > 1e-3)
                if s.id:
                    current[s.id] = smooth_scores
            previous = current
        assert checked >= 5 and differed >= 1, (checked, differed)
    finally:
        peer.close()
        node.stop()
