"""`ros2 launch` / `ros2 run` for real, on the venv prefix.

The ROS 2 launch and CLI packages are not on PyPI: these tests run where they are installed
(a sourced distro, or scripts/ros_launch_from_source.sh on the setup's venv) and are skipped
elsewhere, CI included. Each test starts the real `ros2` CLI and talks to the launched node
over DDS only.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

ROS2 = shutil.which("ros2", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
try:
    import launch_ros  # noqa: F401
    import ros2launch  # noqa: F401
    HAVE_LAUNCH = ROS2 is not None
except ImportError:
    HAVE_LAUNCH = False
requires_launch = pytest.mark.skipif(
    not HAVE_LAUNCH, reason="ros2 launch is not installed (no ROS distro; see scripts/ros_launch_from_source.sh)")


class Launched:
    """A `ros2 ...` process group, stopped with SIGINT as Ctrl-C in a terminal does."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        # Open for the process's whole life, closed by stop(): no with-block can span that.
        self._log = open(log, "w", encoding="utf-8")  # noqa: SIM115
        self.process = subprocess.Popen([ROS2, *args], env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode


def _round_trip(peer, launched: Launched, timeout: float = 180.0):
    from emotion_perception.bench.replay_frames import synthetic_frames

    rgb = synthetic_frames(1, width=320, height=240, seed=21)[0][0]
    deadline = time.monotonic() + timeout
    stamp = 1_700_600_000 * 10**9
    while time.monotonic() < deadline and launched.alive() and not peer.emotions:
        stamp += 1
        peer.images.publish(peer.image(rgb, stamp))
        peer.spin_until(lambda: bool(peer.emotions), 1.0)
    assert peer.emotions, f"no /emotions from the launched node:\n{launched.log_path.read_text()[-3000:]}"
    return next(iter(peer.emotions.values()))


@requires_launch
def test_ros2_launch_with_defaults_round_trips_a_frame(ros_env, tmp_path):
    from ros_peer import Peer

    launched = Launched(["launch", "emotion_perception", "benet.launch.py"], ros_env, tmp_path / "launch.log")
    peer = Peer("/camera/image_raw")
    try:
        out = _round_trip(peer, launched)
        assert out.model == "benet" and out.header.frame_id == "test_camera"
    finally:
        peer.close()
        code = launched.stop()
    log = launched.log_path.read_text()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log


@requires_launch
def test_ros2_launch_with_overrides_remaps_namespaces_and_sets_parameters(ros_env, tmp_path):
    import yaml
    from ros_peer import Peer

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "benet.yaml").read_text())
    params["/**"]["ros__parameters"]["emotion_threshold"] = 0.61
    params_file = tmp_path / "robot1.yaml"
    params_file.write_text(yaml.safe_dump(params))
    launched = Launched(["launch", "emotion_perception", "benet.launch.py", "image_topic:=/cam/image",
                         f"params_file:={params_file}", "backend:=onnxruntime", "namespace:=robot1"],
                        ros_env, tmp_path / "launch.log")
    peer = Peer("/cam/image", emotions_topic="/robot1/emotions")
    try:
        _round_trip(peer, launched)
        assert peer.spin_until(lambda: peer.latest_status("/robot1/benet_node") is not None, 10.0)
        assert peer.latest_counters("/robot1/benet_node")["backend"] == "onnxruntime"
        from rcl_interfaces.srv import GetParameters

        reply = peer._call(GetParameters, "/robot1/benet_node/get_parameters",
                           GetParameters.Request(names=["emotion_threshold", "backend"]))
        assert reply.values[0].double_value == pytest.approx(0.61)
        assert reply.values[1].string_value == "onnxruntime"
    finally:
        peer.close()
        code = launched.stop()
    assert code == 0, launched.log_path.read_text()[-3000:]


@requires_launch
def test_ros2_run_finds_the_executable(ros_env, tmp_path):
    from ros_peer import Peer

    launched = Launched(["run", "emotion_perception", "benet_node", "--ros-args", "-r", "image:=/run/image",
                         "-p", "backend:=torch"], ros_env, tmp_path / "run.log")
    peer = Peer("/run/image")
    try:
        assert _round_trip(peer, launched).model == "benet"
    finally:
        peer.close()
        launched.stop()


@requires_launch
def test_ros2_launch_serves_the_expression_model(ros_env, tmp_path):
    from ros_peer import Peer
    from skimage import data

    from emotion_perception.resources import external_model_dir

    if not (external_model_dir() / "face_expression.pt").is_file():
        pytest.skip("face-expression model not installed: run scripts/setup.sh")
    launched = Launched(["launch", "emotion_perception", "expression.launch.py", "image_topic:=/expr/image",
                         "backend:=torch"], ros_env, tmp_path / "launch.log")
    peer = Peer("/expr/image")
    try:
        photo = data.astronaut()
        deadline = time.monotonic() + 180.0
        stamp = 1_700_700_000 * 10**9
        while time.monotonic() < deadline and launched.alive() and not peer.emotions:
            stamp += 1
            peer.images.publish(peer.image(photo, stamp))
            peer.spin_until(lambda: bool(peer.emotions), 1.0)
        assert peer.emotions, launched.log_path.read_text()[-3000:]
        out = next(iter(peer.emotions.values()))
        assert out.model == "expression" and [list(p.labels) for p in out.people] == [["Happy"]]
    finally:
        peer.close()
        code = launched.stop()
    assert code == 0, launched.log_path.read_text()[-3000:]
