"""Test side of the ROS tests: publishes images, collects /emotions, debug images and
diagnostics, and calls the nodes' parameter and lifecycle services (real DDS)."""

from __future__ import annotations

import time

import numpy as np

from emotion_perception.bench.replay import NodeProcess


class Peer:
    """Test side: publishes images, collects /emotions, debug images and diagnostics."""

    def __init__(self, image_topic: str, emotions_topic: str = "/emotions", compressed: bool = False) -> None:
        """``compressed``: publish PNG CompressedImage frames on ``image_topic``/compressed
        (for nodes with input_transport compressed) instead of raw Images."""
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        from emotion_perception.msg import PersonEmotions

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("node_test_peer", context=self.context)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.compressed = compressed
        self.images = self.node.create_publisher(
            CompressedImage if compressed else Image, f"{image_topic}/compressed" if compressed else image_topic,
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self.emotions: dict[int, PersonEmotions] = {}
        self.debug: list[Image] = []
        self.diagnostics: list = []
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(PersonEmotions, emotions_topic, self._on_emotions, reliable)
        self.node.create_subscription(Image, f"{emotions_topic}/debug_image", self.debug.append, reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)

    def _on_emotions(self, msg) -> None:
        self.emotions[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = msg

    def spin_until(self, condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return condition()

    def wait_for_node(self, node: NodeProcess, probe_rgb: np.ndarray, timeout: float = 120.0) -> None:
        """Wait until the node subscribes and has answered one probe frame (best-effort frames
        sent before its reader has matched our writer are lost by DDS, not by the node)."""
        ok = self.spin_until(lambda: self.images.get_subscription_count() > 0 or not node.alive(), timeout)
        assert node.alive(), "the node exited during start-up"
        assert ok, "the node did not subscribe in time"
        deadline = time.monotonic() + timeout
        stamp = 1_000_000_000 * 10**9
        while not self.emotions and time.monotonic() < deadline and node.alive():
            stamp += 1
            self.images.publish(self.image(probe_rgb, stamp))
            self.spin_until(lambda: bool(self.emotions), 1.0)
        assert self.emotions, "the node never answered a probe frame"
        self.emotions.clear()

    def image(self, rgb: np.ndarray, stamp_ns: int, encoding: str = "rgb8", **override):
        """A frame of ``rgb``: a raw Image, or a PNG CompressedImage when the peer is compressed."""
        from sensor_msgs.msg import CompressedImage, Image

        height, width = rgb.shape[:2]
        if self.compressed:
            import cv2

            ok, png = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
            assert ok
            msg = CompressedImage(format="png", data=png.tobytes())
        else:
            msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0, step=width * 3,
                        data=np.ascontiguousarray(rgb).tobytes())
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        msg.header.frame_id = "test_camera"
        for key, value in override.items():
            setattr(msg, key, value)
        return msg

    def send_and_wait(self, msg, timeout: float = 30.0):
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        self.images.publish(msg)
        assert self.spin_until(lambda: stamp in self.emotions, timeout), "no /emotions for the frame"
        return self.emotions[stamp]

    def set_parameters(self, node_name: str, values: dict):
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        client = self.node.create_client(SetParameters, f"/{node_name}/set_parameters")
        assert self.spin_until(client.service_is_ready, 30.0), "parameter service not available"
        request = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        future = client.call_async(request)
        assert self.spin_until(future.done, 30.0)
        return future.result().results

    def latest_status(self, name_part: str = "emotion perception"):
        for array in reversed(self.diagnostics):
            for status in array.status:
                if name_part in status.name:
                    return status
        return None

    def latest_counters(self, name_part: str = "emotion perception") -> dict[str, str]:
        status = self.latest_status(name_part)
        return {kv.key: kv.value for kv in status.values} if status else {}

    def _call(self, srv_type, service: str, request, timeout: float = 30.0):
        client = self.node.create_client(srv_type, service)
        try:
            assert self.spin_until(client.service_is_ready, timeout), f"{service} not available"
            future = client.call_async(request)
            assert self.spin_until(future.done, timeout), f"{service} did not answer"
            return future.result()
        finally:
            self.node.destroy_client(client)

    def lifecycle_state(self, node_name: str) -> str:
        from lifecycle_msgs.srv import GetState

        return self._call(GetState, f"{node_name}/get_state", GetState.Request()).current_state.label

    def change_state(self, node_name: str, transition: str) -> bool:
        """Ask for a transition by its label (configure, activate, deactivate, cleanup, shutdown)."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        ids = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP,
               "shutdown": Transition.TRANSITION_UNCONFIGURED_SHUTDOWN}
        request = ChangeState.Request(transition=Transition(id=ids[transition]))
        return self._call(ChangeState, f"{node_name}/change_state", request, timeout=120.0).success

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.context)
