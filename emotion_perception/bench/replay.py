"""Replay camera frames over real DDS to a node under test and watch what it publishes.

The node runs in its own process (its console script, as on a robot). A player publishes the
frames at a fixed rate; each frame is restamped with the wall-clock time it is sent, so its
header stamp is both the key that matches outputs to inputs and the start of the end-to-end
latency (receive time - stamp: conversion, inference, publishing and DDS both ways included).
Frames the node never answers are dropped (latest-frame semantics: the node replaces a
waiting frame with a newer one).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from emotion_perception.bench.bag_io import COMPRESSED_TYPE, BagFrame


@dataclass
class ProcessUsage:
    """CPU and memory of a process, from /proc (Linux)."""

    cpu_percent: float = float("nan")  # of one core, averaged over the measured interval
    rss_peak_mb: float = float("nan")


@dataclass
class ReplayResult:
    rate_hz: float
    duration_s: float
    sent: int
    received: int
    latencies_ms: np.ndarray  # per received frame, in send order
    outputs: dict[int, Any] = field(default_factory=dict)  # stamp_ns -> PersonEmotions
    frame_of_stamp: dict[int, int] = field(default_factory=dict)  # stamp_ns -> index in the input
    node_usage: ProcessUsage = field(default_factory=ProcessUsage)
    node_counters: dict[str, str] = field(default_factory=dict)  # from the node's last /diagnostics

    @property
    def dropped(self) -> int:
        return self.sent - self.received

    @property
    def output_rate_hz(self) -> float:
        return self.received / self.duration_s if self.duration_s > 0 else float("nan")

    def latency_summary(self) -> dict[str, float]:
        values = self.latencies_ms
        if values.size == 0:
            return {k: float("nan") for k in ("p50", "p90", "p99", "max", "mean", "jitter")}
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(values.max()),
                "mean": float(values.mean()), "jitter": float(values.std())}


def _read_proc(pid: int) -> tuple[float, float]:
    """(CPU seconds used, resident MB) of a process and its threads."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_seconds = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    rss_mb = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu_seconds, rss_mb


class NodeProcess:
    """A perception node started from its console script, stopped with SIGINT like ros2 run."""

    def __init__(self, kind: str, parameters: dict[str, Any], remap_image: str, env: dict[str, str],
                 log_path: Path | None = None, executable: str | Path | None = None,
                 ros_args: Sequence[str] = ()) -> None:
        # Default: this interpreter's console script (the one pip wrote beside it) before PATH's.
        beside = Path(sys.executable).parent / f"{kind}_node"
        executable = str(executable or (beside if beside.exists() else shutil.which(f"{kind}_node") or beside))
        if not Path(executable).exists():
            raise FileNotFoundError(f"{executable} not found (run the setup first)")
        args = [executable, "--ros-args", *ros_args, "-r", f"image:={remap_image}",
                "-r", f"image/compressed:={remap_image}/compressed"]
        for name, value in parameters.items():
            value = str(value).lower() if isinstance(value, bool) else value
            args += ["-p", f"{name}:={value}"]
        # The log stays open while the node runs; stop() closes it, so no context manager here.
        self._log: IO[str] | None = open(log_path, "w", encoding="utf-8") if log_path else None  # noqa: SIM115
        stdout = self._log if self._log is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(args, env=env, stdout=stdout, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self._cpu_start: tuple[float, float] | None = None
        self._rss_peak = 0.0

    def alive(self) -> bool:
        return self.process.poll() is None

    def start_usage(self) -> None:
        self._cpu_start = (time.monotonic(), _read_proc(self.process.pid)[0])
        self._rss_peak = 0.0

    def sample_usage(self) -> None:
        if self.alive():
            self._rss_peak = max(self._rss_peak, _read_proc(self.process.pid)[1])

    def usage(self) -> ProcessUsage:
        if self._cpu_start is None or not self.alive():
            return ProcessUsage()
        wall0, cpu0 = self._cpu_start
        cpu1, rss = _read_proc(self.process.pid)
        return ProcessUsage(cpu_percent=100.0 * (cpu1 - cpu0) / max(time.monotonic() - wall0, 1e-6),
                            rss_peak_mb=max(self._rss_peak, rss))

    def stop(self, timeout: float = 10.0) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
        return self.process.returncode


class Replayer:
    """Player and monitor in this process, on one rclpy context of its own."""

    def __init__(self, image_topic: str = "/bench/image", emotions_topic: str = "/emotions") -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        from emotion_perception.msg import PersonEmotions
        from emotion_perception.ros.dds_profile import apply_large_image_profile

        # Our writer must use the same large-image transport as the node (set before init).
        apply_large_image_profile()
        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("emotion_replay", context=self.context)
        # Reliable depth 1 matches both reliabilities a node may subscribe with.
        self._image_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        self.image_topic = image_topic
        self._publishers: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._outputs: dict[int, tuple[int, Any]] = {}  # stamp -> (receive ns, message)
        self.last_diagnostics: dict[str, str] = {}
        self.node.create_subscription(PersonEmotions, emotions_topic, self._on_emotions,
                                      QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._spin = threading.Thread(target=self._spin_forever, daemon=True)
        self._running = True
        self._spin.start()

    def _spin_forever(self) -> None:
        while self._running and self.context.ok():
            self._executor.spin_once(timeout_sec=0.05)

    def _on_emotions(self, msg) -> None:
        received = time.time_ns()
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        with self._lock:
            self._outputs[stamp] = (received, msg)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if "emotion perception" in status.name:
                self.last_diagnostics = {kv.key: kv.value for kv in status.values}

    def _publisher(self, msgtype: str):
        if msgtype not in self._publishers:
            from sensor_msgs.msg import CompressedImage, Image

            cls, topic = (CompressedImage, self.image_topic + "/compressed") if msgtype == COMPRESSED_TYPE \
                else (Image, self.image_topic)
            self._publishers[msgtype] = self.node.create_publisher(cls, topic, self._image_qos)
        return self._publishers[msgtype]

    def load(self, frames: Sequence[BagFrame]) -> list[tuple[Any, Any]]:
        """Deserialize bag frames once, before timing starts: [(publisher, message)]."""
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import CompressedImage, Image

        loaded = []
        for frame in frames:
            cls = CompressedImage if frame.msgtype == COMPRESSED_TYPE else Image
            loaded.append((self._publisher(frame.msgtype), deserialize_message(frame.cdr, cls)))
        return loaded

    def wait_for_subscriber(self, timeout: float = 60.0, node: NodeProcess | None = None,
                            probe: Any = None) -> None:
        """Block until the node under test subscribes to the image topic (it loads its model
        first) and, with ``probe`` (a loaded frame), until it has answered one frame.

        The writer can see the match before the node's reader has matched the writer; best-effort
        frames sent in between are lost (DDS discovery), which a replay must not count as drops.
        """
        deadline = time.monotonic() + timeout
        publishers = list(self._publishers.values())

        def check_alive() -> None:
            if node is not None and not node.alive():
                raise RuntimeError(f"the node exited with code {node.process.returncode} before answering")

        while not (publishers and all(p.get_subscription_count() > 0 for p in publishers)):
            check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no subscriber on {self.image_topic} after {timeout:.0f} s")
            time.sleep(0.05)
        if probe is None:
            return
        with self._lock:
            self._outputs.clear()
        publisher, message = probe
        while True:
            check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the node did not answer a probe frame within {timeout:.0f} s")
            stamp = time.time_ns()
            message.header.stamp.sec, message.header.stamp.nanosec = divmod(stamp, 10**9)
            publisher.publish(message)
            answered_by = time.monotonic() + 1.0
            while time.monotonic() < answered_by:
                with self._lock:
                    if self._outputs:
                        self._outputs.clear()
                        return
                time.sleep(0.02)

    def play(self, loaded: list[tuple[Any, Any]], rate_hz: float, count: int | None = None,
             settle_s: float = 2.0, node: NodeProcess | None = None) -> ReplayResult:
        """Publish ``count`` frames (cycling through ``loaded``) at ``rate_hz``, then wait for answers."""
        count = len(loaded) if count is None else count
        with self._lock:
            self._outputs.clear()
        period = 1.0 / rate_hz
        sent_stamps: list[int] = []
        frame_of_stamp: dict[int, int] = {}
        if node is not None:
            node.start_usage()
        start = time.perf_counter()
        for index in range(count):
            # Sleep to the frame's deadline (no drift: deadlines come from the start time).
            delay = start + index * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            publisher, message = loaded[index % len(loaded)]
            stamp = time.time_ns()
            message.header.stamp.sec, message.header.stamp.nanosec = divmod(stamp, 10**9)
            publisher.publish(message)
            sent_stamps.append(stamp)
            frame_of_stamp[stamp] = index % len(loaded)
            if node is not None and index % 10 == 0:
                node.sample_usage()
        sent_duration = time.perf_counter() - start
        # Let in-flight frames finish: the last one may still be in inference.
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._outputs) >= count or sent_stamps[-1] in self._outputs:
                    break
            time.sleep(0.02)
        usage = node.usage() if node is not None else ProcessUsage()
        with self._lock:
            outputs = dict(self._outputs)
        latencies = np.array([(outputs[s][0] - s) / 1e6 for s in sent_stamps if s in outputs], dtype=np.float64)
        return ReplayResult(
            rate_hz=rate_hz, duration_s=max(sent_duration, period * count), sent=count,
            received=sum(1 for s in sent_stamps if s in outputs), latencies_ms=latencies,
            outputs={s: outputs[s][1] for s in sent_stamps if s in outputs},
            frame_of_stamp=frame_of_stamp, node_usage=usage, node_counters=dict(self.last_diagnostics),
        )

    def close(self) -> None:
        self._running = False
        self._spin.join(timeout=5)
        self._executor.shutdown()
        self.node.destroy_node()
        self._rclpy.shutdown(context=self.context)
