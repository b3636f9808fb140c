"""The nodes as managed (lifecycle) nodes, driven over real DDS through the standard
lifecycle services (change_state / get_state), and a worker that survives a broken converter."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ros_peer import Peer

from emotion_perception.bench.replay import NodeProcess

pytestmark = pytest.mark.ros
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def frame():
    from emotion_perception.bench.replay_frames import synthetic_frames

    return synthetic_frames(1, width=320, height=240, seed=5)[0][0]


def _answered(peer: Peer, rgb: np.ndarray, first_stamp: int, timeout: float = 60.0) -> bool:
    """Publish frames until one is answered on emotions (best-effort frames sent before the
    reader matched are lost by DDS, so one frame is not enough)."""
    deadline = time.monotonic() + timeout
    stamp = first_stamp
    while time.monotonic() < deadline:
        stamp += 1
        peer.images.publish(peer.image(rgb, stamp))
        if peer.spin_until(lambda: bool(peer.emotions), 1.0):
            return True
    return False


def test_lifecycle_transitions_gate_processing_and_diagnostics_name_the_namespace(ros_env, tmp_path, frame):
    node = NodeProcess("benet", {"autostart": False, "backend": "torch", "device": "cpu", "diagnostics_period": 0.5},
                       "/lc/image", ros_env, log_path=tmp_path / "node.log", ros_args=["-r", "__ns:=/robot1"])
    peer = Peer("/lc/image", emotions_topic="/robot1/emotions")
    name = "/robot1/benet_node"
    try:
        assert peer.lifecycle_state(name) == "unconfigured"
        # diagnostics run in every state, under the node's fully qualified name
        assert peer.spin_until(lambda: peer.latest_status(name) is not None, 20.0), "no diagnostics"
        status = peer.latest_status(name)
        assert status.name == "/robot1/benet_node: emotion perception"
        assert status.level == b"\x00" and "unconfigured" in status.message
        assert peer.images.get_subscription_count() == 0  # not subscribed before activation

        assert peer.change_state(name, "configure")
        assert peer.lifecycle_state(name) == "inactive"
        peer.spin_until(lambda: False, 1.0)
        assert peer.images.get_subscription_count() == 0  # configured is not yet processing

        assert peer.change_state(name, "activate")
        assert peer.lifecycle_state(name) == "active"
        assert _answered(peer, frame, 1_700_100_000 * 10**9), "no answer once active"

        assert peer.change_state(name, "deactivate")
        assert peer.lifecycle_state(name) == "inactive"
        assert peer.spin_until(lambda: peer.images.get_subscription_count() == 0, 10.0)
        peer.emotions.clear()
        for index in range(3):
            peer.images.publish(peer.image(frame, 1_700_200_000 * 10**9 + index))
            peer.spin_until(lambda: False, 0.5)
        assert not peer.emotions, "an inactive node published"
        assert peer.spin_until(lambda: "inactive" in (peer.latest_status(name).message or ""), 5.0)

        assert peer.change_state(name, "activate")  # the model stayed loaded: fast
        assert _answered(peer, frame, 1_700_300_000 * 10**9), "no answer after reactivation"

        assert peer.change_state(name, "deactivate") and peer.change_state(name, "cleanup")
        assert peer.lifecycle_state(name) == "unconfigured"
        assert peer.spin_until(lambda: peer.latest_counters(name).get("lifecycle_state") == "unconfigured", 5.0)
        assert peer.change_state(name, "configure")  # and it can be configured again
        assert node.alive()
    finally:
        peer.close()
        node.stop()
    log = (tmp_path / "node.log").read_text()
    assert "model freed" in log and "autostart is false" in log


def test_a_failed_configure_leaves_the_node_unconfigured_and_diagnostics_say_why(ros_env, tmp_path):
    missing = tmp_path / "no_such_model.pt"
    node = NodeProcess("benet", {"autostart": False, "model_path": str(missing), "diagnostics_period": 0.5},
                       "/lc_fail/image", ros_env, log_path=tmp_path / "node.log")
    peer = Peer("/lc_fail/image")
    try:
        assert not peer.change_state("/benet_node", "configure")
        assert peer.lifecycle_state("/benet_node") == "unconfigured"
        assert peer.spin_until(
            lambda: (s := peer.latest_status("/benet_node")) is not None and s.level == b"\x02", 10.0)
        assert "does not exist" in peer.latest_status("/benet_node").message
        assert node.alive()
    finally:
        peer.close()
        node.stop()


def test_with_autostart_a_model_that_cannot_load_stops_the_process_with_one_line(ros_env, tmp_path):
    executable = Path(sys.executable).parent / "benet_node"
    result = subprocess.run(
        [str(executable), "--ros-args", "-p", f"model_path:={tmp_path / 'missing.pt'}"],
        env=ros_env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert f"benet_node: cannot start: model_path '{tmp_path / 'missing.pt'}' does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_broken_cv_bridge_fails_frames_turns_diagnostics_error_and_the_node_keeps_running(ros_env, tmp_path, frame):
    # An apt cv_bridge beside the wrong numpy: imports, then raises ModuleNotFoundError inside
    # every conversion. The worker used to die on the first frame with diagnostics at WARN.
    fake = HERE / "fake_site" / "broken_cv_bridge"
    env = dict(ros_env, PYTHONPATH=os.pathsep.join(filter(None, [str(fake), ros_env.get("PYTHONPATH", "")])))
    node = NodeProcess("benet", {"image_converter": "cv_bridge", "backend": "torch", "device": "cpu",
                                 "diagnostics_period": 0.5},
                       "/lc_bridge/image", env, log_path=tmp_path / "node.log")
    peer = Peer("/lc_bridge/image")
    try:
        assert peer.spin_until(lambda: peer.images.get_subscription_count() > 0 or not node.alive(), 120.0)
        assert node.alive(), (tmp_path / "node.log").read_text()
        deadline = time.monotonic() + 60.0
        stamp = 1_700_400_000 * 10**9
        while time.monotonic() < deadline and int(peer.latest_counters().get("frames_failed", 0)) < 4:
            stamp += 1
            peer.images.publish(peer.image(frame, stamp))
            peer.spin_until(lambda: False, 0.3)  # one at a time: failed, not dropped
        counters = peer.latest_counters()
        assert int(counters.get("frames_failed", 0)) >= 4, counters
        assert peer.spin_until(lambda: peer.latest_status().level == b"\x02", 5.0)
        status = peer.latest_status()
        assert "failed" in status.message and "ModuleNotFoundError" in status.message
        assert not peer.emotions
        # still alive and still taking frames: the failure count keeps growing
        before = int(peer.latest_counters()["frames_failed"])
        for index in range(3):
            peer.images.publish(peer.image(frame, stamp + 100 + index))
            peer.spin_until(lambda: False, 0.4)
        assert peer.spin_until(lambda: int(peer.latest_counters()["frames_failed"]) > before, 5.0)
        assert node.alive()
    finally:
        peer.close()
        node.stop()
    assert "frame failed: ModuleNotFoundError" in (tmp_path / "node.log").read_text()


@pytest.mark.parametrize("parameter, value, says", [
    ("diagnostics_period", "0.0", "diagnostics_period"),  # out of the descriptor's range (rclpy raises)
    ("model_path", "/tmp", "is a directory"),
    ("backend", "cuda", "backend must be one of"),
])
def test_every_start_up_failure_is_one_line_and_exit_1(ros_env, parameter, value, says):
    executable = Path(sys.executable).parent / "benet_node"
    result = subprocess.run([str(executable), "--ros-args", "-p", f"{parameter}:={value}"],
                            env=ros_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert len(lines) == 1 and says in lines[0], result.stderr[-2000:]


def test_input_size_parameter_sets_the_canvas(ros_env, tmp_path, frame):
    # A documented parameter that used to crash start-up (an int where (H, W) was indexed).
    node = NodeProcess("benet", {"input_size": 256, "backend": "torch", "device": "cpu"}, "/lc_size/image", ros_env,
                       log_path=tmp_path / "node.log")
    peer = Peer("/lc_size/image")
    try:
        assert _answered(peer, frame, 1_700_500_000 * 10**9), (tmp_path / "node.log").read_text()[-2000:]
        assert node.alive()
    finally:
        peer.close()
        node.stop()


def _peak_rss_mb(pid: int) -> float:
    """The process's resident-memory high-water mark (VmHWM), in MB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def test_a_png_bomb_on_image_compressed_is_rejected_before_decoding(ros_env, tmp_path, frame):
    # 250 KB of valid PNG that decode to 16000 x 16000 pixels: OpenCV (limit 2^30 pixels) used to
    # decode it in full, 768 MB twice over and seconds of stall, before the model even ran.
    from encoded_images import png_bomb
    from sensor_msgs.msg import CompressedImage

    log = tmp_path / "node.log"
    node = NodeProcess("benet", {"input_transport": "compressed", "backend": "torch", "device": "cpu",
                                 "diagnostics_period": 0.5}, "/lc_bomb/image", ros_env, log_path=log)
    peer = Peer("/lc_bomb/image", compressed=True)
    try:
        peer.wait_for_node(node, frame)
        started = time.monotonic()
        peer.send_and_wait(peer.image(frame, 1_700_600_000 * 10**9))
        normal_s = time.monotonic() - started
        peak_before = _peak_rss_mb(node.process.pid)

        bomb = CompressedImage(format="png", data=png_bomb(16000, 16000))
        bomb.header.stamp.sec = 1_700_600_001
        peer.images.publish(bomb)
        assert peer.spin_until(lambda: int(peer.latest_counters().get("frames_rejected", 0)) >= 1, 10.0), \
            (peer.latest_counters(), log.read_text()[-2000:])

        started = time.monotonic()
        out = peer.send_and_wait(peer.image(frame, 1_700_600_002 * 10**9))
        assert out.header.stamp.sec == 1_700_600_002
        assert time.monotonic() - started < max(3 * normal_s, normal_s + 1.0)  # its normal latency
        assert 1_700_600_001 * 10**9 not in peer.emotions
        assert _peak_rss_mb(node.process.pid) - peak_before < 200.0
        assert node.alive()

        # the limit is a parameter, changeable at run time: 320x240 frames are over 76799 pixels
        (result,) = peer.set_parameters("benet_node", {"max_image_pixels": 320 * 240 - 1})
        assert result.successful
        rejected = int(peer.latest_counters()["frames_rejected"])
        peer.images.publish(peer.image(frame, 1_700_600_003 * 10**9))
        assert peer.spin_until(lambda: int(peer.latest_counters()["frames_rejected"]) > rejected, 10.0)
        assert 1_700_600_003 * 10**9 not in peer.emotions
    finally:
        peer.close()
        node.stop()
    assert "PNG of 16000x16000 = 256000000 pixels is over the limit" in log.read_text()


def test_a_model_card_that_does_not_fit_its_graph_stops_start_up_with_one_line(ros_env, tmp_path):
    # Accepted before: the node then failed every frame (or found nobody) while reporting OK.
    from deploy_models import peaky_benet, with_card_changes

    from emotion_perception.export.onnx_export import export_onnx

    good = export_onnx(peaky_benet(), tmp_path / "benet.onnx").onnx_path
    bad = tmp_path / "bad_card.onnx"
    with_card_changes(good, bad, {"categories": lambda names: names[:7]})
    executable = Path(sys.executable).parent / "benet_node"
    result = subprocess.run([str(executable), "--ros-args", "-p", f"model_path:={bad}", "-p", "backend:=onnxruntime",
                             "-p", "device:=cpu"], env=ros_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "model card: field 'categories': 7 names, but the graph's output" in lines[0], \
        result.stderr[-2000:]


def test_strings_from_the_wire_cannot_forge_or_flood_log_lines(ros_env, tmp_path, frame):
    log = tmp_path / "node.log"
    node = NodeProcess("benet", {"backend": "torch", "device": "cpu"}, "/lc_log/image", ros_env, log_path=log)
    peer = Peer("/lc_log/image")
    try:
        peer.wait_for_node(node, frame)
        size_before = log.stat().st_size
        forged = "rgb8\n[ERROR] [1700000000.0] [benet_node]: forged by a peer \x1b[2J" + "A" * 1_000_000
        peer.images.publish(peer.image(frame, 1_700_700_000 * 10**9, encoding=forged))
        assert peer.spin_until(lambda: int(peer.latest_counters().get("frames_rejected", 0)) >= 1, 10.0)
        out = peer.send_and_wait(peer.image(frame, 1_700_700_001 * 10**9))
        assert out.header.stamp.sec == 1_700_700_001
    finally:
        peer.close()
        node.stop()
    text = log.read_text()
    added = text[size_before:]
    assert "frame rejected: unsupported encoding 'rgb8\\n[ERROR]" in added
    assert not any(line.startswith("[ERROR] [1700000000.0]") for line in text.splitlines())
    assert "\x1b" not in text
    assert len(added) < 2000  # not the megabyte
