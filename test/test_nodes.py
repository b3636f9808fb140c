"""The nodes end to end over real DDS: each runs in its own process from its console script,
as on a robot, and this test talks to it only through topics and parameter services."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from ros_peer import Peer

from emotion_perception.bench.replay import NodeProcess
from emotion_perception.data.categories import CAER_CATEGORIES, EMOTIC_CATEGORIES
from emotion_perception.eval.metrics import box_iou

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scenes():
    from emotion_perception.bench.replay_frames import synthetic_frames

    return synthetic_frames(6, people=None, width=320, height=240, seed=11)


@pytest.fixture(scope="module")
def benet(ros_env, tmp_path_factory):
    log = tmp_path_factory.mktemp("benet") / "node.log"
    # Diagnostics five times a second: the flood test samples the frames in flight from them.
    node = NodeProcess("benet", {"publish_debug_image": True, "backend": "torch", "device": "cpu",
                                 "diagnostics_period": 0.2},
                       "/test/image", ros_env, log_path=log)
    peer = Peer("/test/image")
    try:
        from emotion_perception.bench.replay_frames import synthetic_frames

        peer.wait_for_node(node, synthetic_frames(1, width=320, height=240, seed=99)[0][0])
        yield node, peer, log
    finally:
        peer.close()
        node.stop()


def test_benet_node_publishes_people_with_the_input_header(benet, scenes):
    node, peer, _ = benet
    frames, truth = scenes
    overlaps = []
    for index, (rgb, notes) in enumerate(zip(frames, truth)):
        stamp = 1_700_000_100 * 10**9 + index * 1_000_000
        out = peer.send_and_wait(peer.image(rgb, stamp))
        assert out.header.frame_id == "test_camera"
        assert out.model == "benet"
        assert list(out.categories) == list(EMOTIC_CATEGORIES)
        for person in out.people:
            assert 0.0 <= person.x_min <= person.x_max <= 320.0 and 0.0 <= person.y_min <= person.y_max <= 240.0
            assert len(person.scores) == 26 and 0.0 <= person.score <= 1.0
            assert all(0.0 <= s <= 1.0 for s in person.scores)
            assert set(person.labels) <= set(EMOTIC_CATEGORIES)
            scores = [person.scores[EMOTIC_CATEGORIES.index(n)] for n in person.labels]
            assert scores == sorted(scores, reverse=True)
        for box in notes["boxes"]:
            found = [(p.x_min, p.y_min, p.x_max, p.y_max) for p in out.people]
            overlaps.append(float(box_iou([box], found).max()) if found else 0.0)
    # The demo model is small and trained briefly: most people must be found, not all.
    assert np.mean(np.array(overlaps) >= 0.5) >= 0.6, f"people found (IoU >= 0.5): {np.round(overlaps, 2)}"
    assert node.alive()


def test_benet_node_keeps_running_after_malformed_images(benet, scenes):
    node, peer, log = benet
    rgb = scenes[0][0]
    bad = [
        peer.image(rgb, 1, encoding="bayer_grbg8"),
        peer.image(rgb, 2, step=10),
        peer.image(rgb, 3, data=rgb.tobytes()[:1000]),
        peer.image(rgb, 4, height=0),
        peer.image(rgb, 5, encoding="16UC1"),
    ]
    for msg in bad:
        peer.images.publish(msg)
        peer.spin_until(lambda: False, 0.2)
    assert node.alive()
    out = peer.send_and_wait(peer.image(rgb, 1_700_000_200 * 10**9))
    assert out.header.stamp.sec == 1_700_000_200
    assert all(s not in peer.emotions for s in (1, 2, 3, 4, 5))
    assert peer.spin_until(lambda: int(peer.latest_counters().get("frames_rejected", 0)) >= 1, 5.0)
    assert "frame rejected" in log.read_text()


def test_benet_node_debug_image_and_diagnostics(benet, scenes):
    _node, peer, _ = benet
    rgb = scenes[0][0]
    peer.send_and_wait(peer.image(rgb, 1_700_000_300 * 10**9))
    assert peer.spin_until(lambda: any(d.header.stamp.sec == 1_700_000_300 for d in peer.debug), 10.0)
    debug = next(d for d in peer.debug if d.header.stamp.sec == 1_700_000_300)
    assert (debug.width, debug.height, debug.encoding) == (320, 240, "rgb8")
    assert peer.spin_until(lambda: bool(peer.latest_counters()), 5.0)
    counters = peer.latest_counters()
    assert counters["model"] == "benet" and counters["backend"] == "torch"
    for key in ("input_rate_hz", "output_rate_hz", "frames_dropped", "latency_ms_p50", "latency_ms_p99"):
        assert key in counters
    assert float(counters["latency_ms_p50"]) > 0


def test_benet_node_parameter_updates_apply_and_model_changes_are_rejected(benet, scenes):
    _node, peer, _ = benet
    rgb = scenes[0][0]
    (result,) = peer.set_parameters("benet_node", {"detection_threshold": 1.0})
    assert result.successful
    out = peer.send_and_wait(peer.image(rgb, 1_700_000_400 * 10**9))
    assert len(out.people) == 0  # sigmoid peaks never reach 1.0
    results = peer.set_parameters("benet_node", {"detection_threshold": 0.05, "max_people": 2})
    assert all(r.successful for r in results)
    out = peer.send_and_wait(peer.image(rgb, 1_700_000_500 * 10**9))
    assert 1 <= len(out.people) <= 2
    (result,) = peer.set_parameters("benet_node", {"detection_threshold": 3.0})
    assert not result.successful
    (result,) = peer.set_parameters("benet_node", {"model_path": "/tmp/other.pt"})
    assert not result.successful and "read-only" in result.reason.lower()
    results = peer.set_parameters("benet_node",
                                  {"emotion_threshold": 0.0, "detection_threshold": 0.05, "max_people": 15})
    assert all(r.successful for r in results)
    out = peer.send_and_wait(peer.image(rgb, 1_700_000_600 * 10**9))
    assert out.people and all(len(p.labels) == 26 for p in out.people)  # every score >= 0


_OUTCOMES = ("frames_processed", "frames_dropped", "frames_rejected", "frames_failed")


def _frame_counters(array, node_name: str = "/benet_node") -> dict[str, int] | None:
    """The frame counters of ``node_name`` in one /diagnostics message, or None."""
    for status in array.status:
        if status.name == f"{node_name}: emotion perception":
            values = {kv.key: kv.value for kv in status.values}
            return {key: int(values[key]) for key in ("frames_received", *_OUTCOMES)}
    return None


def _in_flight(counters: dict[str, int]) -> int:
    """Frames received but not yet ended: the one waiting in the slot plus the one being inferred."""
    return counters["frames_received"] - sum(counters[key] for key in _OUTCOMES)


def _settled_counters(peer, timeout: float = 10.0) -> dict[str, int]:
    """Counters from a /diagnostics message newer than this call with no frame in flight."""
    start = len(peer.diagnostics)
    found: list[dict[str, int]] = []

    def settled() -> bool:
        samples = (_frame_counters(array) for array in peer.diagnostics[start:])
        found[:] = [c for c in samples if c is not None and _in_flight(c) == 0][-1:]
        return bool(found)

    assert peer.spin_until(settled, timeout), f"counters never balanced: {peer.latest_counters()}"
    return found[0]


def test_benet_node_keeps_only_the_latest_frame_under_a_flood(benet, scenes):
    # The latest-frame policy, whatever the host's speed: every frame the node receives is
    # answered once or dropped, answers come in the order sent and end with the newest frame,
    # and no more than one frame ever waits. How many are dropped depends on the hardware
    # (a fast GPU may answer all of them) and is not asserted.
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from emotion_perception.msg import PersonEmotions

    node, peer, _ = benet
    rgb = scenes[0][0]
    answers: list[int] = []  # stamps in arrival order, repeats kept (peer.emotions is a dict)
    subscription = peer.node.create_subscription(
        PersonEmotions, "/emotions",
        lambda msg: answers.append(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec),
        QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    try:
        before = _settled_counters(peer)
        samples_from = len(peer.diagnostics)
        stamps = [1_700_000_700 * 10**9 + i for i in range(60)]
        for stamp in stamps:  # as fast as the peer can publish
            peer.images.publish(peer.image(rgb, stamp))
            peer.executor.spin_once(timeout_sec=0.001)
        assert peer.spin_until(lambda: stamps[-1] in answers, 30.0), "the newest frame must be processed"
        after = _settled_counters(peer)
    finally:
        peer.node.destroy_subscription(subscription)
    assert node.alive()
    flood = set(stamps)
    answered = [stamp for stamp in answers if stamp in flood]
    # In the order sent, none twice, the newest last.
    assert answered == sorted(set(answered)) and answered[-1] == stamps[-1], answered
    delta = {key: after[key] - before[key] for key in after}
    # Each received frame ended as exactly one answer or one drop (DDS, depth 1, may lose some first).
    assert delta["frames_processed"] == len(answered)
    assert delta["frames_received"] == delta["frames_processed"] + delta["frames_dropped"] <= len(stamps)
    assert delta["frames_rejected"] == delta["frames_failed"] == 0
    # Never a queue: at every /diagnostics sample at most one frame waited beside the one in inference.
    samples = [c for c in map(_frame_counters, peer.diagnostics[samples_from:]) if c is not None]
    assert samples  # the settled one at least; more while the node was busy
    assert all(0 <= _in_flight(c) <= 2 for c in samples), [_in_flight(c) for c in samples]


def test_cahfw_node_classifies_a_real_face(ros_env, tmp_path):
    from skimage import data

    node = NodeProcess("cahfw", {"backend": "torch", "device": "cpu"}, "/test_cahfw/image", ros_env,
                       log_path=tmp_path / "cahfw.log")
    peer = Peer("/test_cahfw/image")
    try:
        photo = data.astronaut()  # one frontal face, about x 170-250, y 60-150 in 512x512
        peer.wait_for_node(node, photo)
        out = peer.send_and_wait(peer.image(photo, 1_700_000_800 * 10**9), timeout=60.0)
        assert out.model == "cahfw" and list(out.categories) == list(CAER_CATEGORIES)
        assert len(out.people) >= 1  # dlib HOG may add weaker false positives (the flag patch)
        face = out.people[0]  # strongest first
        assert box_iou([(face.x_min, face.y_min, face.x_max, face.y_max)], [(165, 55, 255, 155)])[0, 0] > 0.3
        assert math.isclose(sum(face.scores), 1.0, abs_tol=1e-3)
        assert math.isnan(face.valence)
        empty = peer.send_and_wait(peer.image(np.full((240, 320, 3), 90, np.uint8), 1_700_000_900 * 10**9))
        assert len(empty.people) == 0
        assert node.alive()
    finally:
        peer.close()
        node.stop()


def test_expression_node_reads_the_astronaut_as_happy_and_says_what_it_was_trained_on(ros_env, tmp_path):
    from skimage import data

    from emotion_perception.resources import external_model_dir

    if not (external_model_dir() / "face_expression.pt").is_file():
        pytest.skip("face-expression model not installed: run scripts/setup.sh")
    node = NodeProcess("expression", {"backend": "torch", "device": "cpu"}, "/test_expr/image", ros_env,
                       log_path=tmp_path / "expression.log")
    peer = Peer("/test_expr/image")
    try:
        photo = data.astronaut()
        peer.wait_for_node(node, photo)
        out = peer.send_and_wait(peer.image(photo, 1_700_001_000 * 10**9), timeout=60.0)
        assert out.model == "expression" and list(out.categories) == list(CAER_CATEGORIES)
        assert len(out.people) == 1  # her face, not the round mission patch on her suit
        face = out.people[0]
        assert box_iou([(face.x_min, face.y_min, face.x_max, face.y_max)], [(165, 55, 255, 155)])[0, 0] > 0.5
        assert list(face.labels) == ["Happy"] and face.score >= 0.9
        assert peer.spin_until(
            lambda: peer.latest_counters("/expression_node").get("trained_on", "").startswith("real:"), 10.0)
        empty = peer.send_and_wait(peer.image(np.full((240, 320, 3), 90, np.uint8), 1_700_001_100 * 10**9))
        assert len(empty.people) == 0
    finally:
        peer.close()
        node.stop()


def test_a_synthetic_model_says_so_at_start_up_and_on_diagnostics(benet):
    _node, peer, log = benet
    assert peer.spin_until(lambda: peer.latest_counters("/benet_node").get("trained_on") == "synthetic", 10.0)
    assert "trained on synthetic data only" in log.read_text()
