"""PersonEmotions over real DDS: a publisher in another process, a subscriber here."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.ros

PUBLISHER = textwrap.dedent(
    """
    import math, sys, time
    import rclpy
    from emotion_perception.msg import PersonEmotion, PersonEmotions

    rclpy.init()
    node = rclpy.create_node("roundtrip_publisher")
    pub = node.create_publisher(PersonEmotions, "emotions_roundtrip", 10)
    msg = PersonEmotions()
    msg.header.stamp.sec = 1700000000
    msg.header.stamp.nanosec = 123456789
    msg.header.frame_id = "camera_color_optical_frame"
    msg.model = "benet"
    msg.categories = ["Anger", "Happiness", "Peace"]
    msg.people = [
        PersonEmotion(id="0", score=0.875, x_min=10.5, y_min=20.25, x_max=110.0, y_max=300.75,
                      scores=[0.125, 0.75, 0.5], labels=["Happiness", "Peace"],
                      valence=0.8125, arousal=0.25, dominance=0.5),
        PersonEmotion(id="track-7", score=0.5, x_min=0.0, y_min=0.0, x_max=640.0, y_max=480.0,
                      scores=[0.0, 0.0, 1.0], labels=["Peace"],
                      valence=math.nan, arousal=math.nan, dominance=math.nan),
    ]
    deadline = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < deadline:
        pub.publish(msg)
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.shutdown()
    """
)


def test_person_emotions_roundtrip_over_dds(ros_env):
    import rclpy

    from emotion_perception.msg import PersonEmotions

    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, "30"], env=ros_env)
    received: list[PersonEmotions] = []
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("roundtrip_subscriber", context=context)
        node.create_subscription(PersonEmotions, "emotions_roundtrip", received.append, 10)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 30.0
        while not received and time.monotonic() < deadline and publisher.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        publisher.terminate()
        publisher.wait(timeout=10)

    assert received, "no PersonEmotions received over DDS within 30 s"
    msg = received[0]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1700000000, 123456789)
    assert msg.header.frame_id == "camera_color_optical_frame"
    assert msg.model == "benet"
    assert list(msg.categories) == ["Anger", "Happiness", "Peace"]
    assert len(msg.people) == 2
    first, second = msg.people
    assert first.id == "0" and first.score == 0.875
    assert (first.x_min, first.y_min, first.x_max, first.y_max) == (10.5, 20.25, 110.0, 300.75)
    assert list(first.scores) == [0.125, 0.75, 0.5]
    assert list(first.labels) == ["Happiness", "Peace"]
    assert (first.valence, first.arousal, first.dominance) == (0.8125, 0.25, 0.5)
    assert second.id == "track-7" and list(second.labels) == ["Peace"]
    assert (second.x_max, second.y_max) == (640.0, 480.0)
    assert all(math.isnan(v) for v in (second.valence, second.arousal, second.dominance))
