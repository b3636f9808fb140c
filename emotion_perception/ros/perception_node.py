"""The emotion perception node shared by benet_node and cahfw_node: a managed (lifecycle) node.

image (sensor_msgs/Image, or image/compressed) -> preprocess -> backend -> decode ->
emotions (emotion_perception/PersonEmotions), emotions/debug_image, /diagnostics.

Lifecycle (the standard change_state / get_state services): configure loads the model (a
failure leaves the node unconfigured, with the reason in the log and on /diagnostics);
activate subscribes to the camera and starts the inference worker; deactivate unsubscribes and
stops it (the model stays loaded); cleanup frees the model. ``autostart`` (default true) walks
configure + activate at start-up, so `ros2 run` and the launch files behave as a plain node.

Threading: the subscription callback only drops the message into a one-frame slot
(latest-frame semantics); a worker thread converts, infers and publishes. The executor is
never blocked by inference, so parameter updates, lifecycle requests and new frames are served
while a frame is being processed. Frames that arrive while the worker is busy replace the
waiting one and are counted as dropped. Any exception on a frame is caught, counted as failed
and logged (throttled); the worker keeps running, and /diagnostics turns ERROR when every
recent frame failed.
"""

from __future__ import annotations

import contextlib
import gc
import math
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from emotion_perception.errors import quote_untrusted
from emotion_perception.msg import PersonEmotion, PersonEmotions
from emotion_perception.resources import find_resource
from emotion_perception.ros.frame_slot import LatestFrameSlot
from emotion_perception.ros.health import RecentOutcomes, assess
from emotion_perception.ros.image_conversion import ImageConversionError, rgb_to_image_fields, to_rgb
from emotion_perception.ros.params import NODE_PARAMETERS, ParameterSpec, load_defaults
from emotion_perception.runtime.labels import confident_labels

DEMO_MODELS = {"benet": "models/benet_lite_demo.pt", "cahfw": "models/cahfw_small_demo.pt"}
# Models without a shipped demo file: installed by the setup (emotion-perception models fetch).
INSTALLED_MODELS = {"expression": "expression"}
_PARAM_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


def _descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(
        name=spec.name, type=_PARAM_TYPES[spec.type], description=spec.description, read_only=spec.read_only
    )
    if spec.choices:
        descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
    # A ROS range needs both ends (every ranged spec in ros.params declares both).
    if spec.type is float and spec.min_value is not None and spec.max_value is not None:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.min_value),
                                                              to_value=float(spec.max_value), step=0.0)]
    if spec.type is int and spec.min_value is not None and spec.max_value is not None:
        descriptor.integer_range = [IntegerRange(from_value=int(spec.min_value), to_value=int(spec.max_value), step=1)]
    return descriptor


class RollingStats:
    """Latency percentiles over the last N frames and event rates between two reads."""

    def __init__(self, window: int = 300) -> None:
        self._latencies_ms: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def add_latency(self, milliseconds: float) -> None:
        with self._lock:
            self._latencies_ms.append(milliseconds)

    def percentiles(self) -> dict[str, float]:
        with self._lock:
            values = np.asarray(self._latencies_ms, dtype=np.float64)
        if values.size == 0:
            return {"p50": math.nan, "p90": math.nan, "p99": math.nan}
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}


class EmotionPerceptionNode(LifecycleNode):
    """Publishes every processed camera image's people and emotions on ``emotions``."""

    def __init__(self, model_kind: str, node_name: str, **kwargs: Any) -> None:
        # Set by activate / ended by deactivate. Set before the base class registers the node with
        # the context: a constructor that fails on a bad parameter leaves a node that rclpy's
        # shutdown still destroys, and destroy_node must find these.
        self._subscription: Any = None
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._slot = LatestFrameSlot()
        super().__init__(node_name, **kwargs)
        if model_kind not in NODE_PARAMETERS:
            raise ValueError(f"unknown model kind '{model_kind}'")
        self._model_kind = model_kind
        self._specs = {spec.name: spec for spec in NODE_PARAMETERS[model_kind]}
        defaults = load_defaults(find_resource(f"config/{model_kind}.yaml"), model_kind)
        # Calibrated per-category thresholds (model card) apply while emotion_threshold is left here.
        self._default_emotion_threshold = float(defaults["emotion_threshold"])
        for name, spec in self._specs.items():
            self.declare_parameter(name, defaults[name], _descriptor(spec))
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._settings = {name: self.get_parameter(name).value for name in self._specs}
        for name, value in self._settings.items():
            problem = self._specs[name].check(value)
            if problem:
                raise ValueError(f"parameter {problem}")

        # Set by configure / freed by cleanup.
        self._predictor: Any = None
        self._categories: tuple[str, ...] = ()
        self._configure_error: str | None = None
        self._emotions_pub: Any = None
        self._raw_pub: Any = None
        self._debug_pub: Any = None
        # One tracker for the node's life, so that track ids stay unique across deactivate /
        # activate (activate forgets the tracks, not the ids given out); made at first configure.
        self._tracker: Any = None
        self._active_tracks = 0

        self._compressed = self._settings["input_transport"] == "compressed"
        self._use_cv_bridge = self._settings["image_converter"] == "cv_bridge"
        self._stats = RollingStats()
        self._outcomes = RecentOutcomes()
        self._last_warning: dict[str, float] = {}
        # Diagnostics run in every state: a node that failed to configure says why, and a
        # paused one says it is paused.
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._last_diag = (time.monotonic(), self._slot.snapshot())
        self._diag_timer = self.create_timer(self._settings["diagnostics_period"], self._publish_diagnostics)

    @property
    def autostart(self) -> bool:
        return bool(self._settings["autostart"])

    def lifecycle_state(self) -> str:
        """Label of the current lifecycle state: unconfigured, inactive, active, finalized..."""
        return str(self._state_machine.current_state[1])

    def start(self) -> str | None:
        """configure + activate (autostart); None on success, else why it did not start."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return self._configure_error or "configure failed"
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            return "activate failed (see the log)"
        return None

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            if self._use_cv_bridge:
                from emotion_perception.ros.image_conversion import cv_bridge_available

                if not cv_bridge_available():
                    raise ImportError("image_converter is cv_bridge, but cv_bridge cannot be imported")
            self._predictor = self._load_predictor()
        except Exception as err:  # any reason: the node stays unconfigured and says why
            self._predictor = None
            self._configure_error = one_line_reason(err)
            self.get_logger().error(f"configure failed, staying unconfigured: {self._configure_error}")
            return TransitionCallbackReturn.FAILURE
        self._configure_error = None
        self._categories = tuple(self._predictor.categories)
        # Outputs are few and small and the dialogue stack must not miss one: reliable, depth 10.
        # Lifecycle publishers: nothing is published while the node is inactive.
        output_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self._emotions_pub = self.create_lifecycle_publisher(PersonEmotions, "emotions", output_qos)
        self._debug_pub = self.create_lifecycle_publisher(Image, "emotions/debug_image", output_qos)
        self._raw_pub = self.create_lifecycle_publisher(PersonEmotions, "emotions/raw", output_qos)
        if self._settings["tracking"] and self._tracker is None:
            from emotion_perception.runtime.smoothing import SmoothingSettings
            from emotion_perception.runtime.tracking import PersonTracker, TrackingSettings

            self._tracker = PersonTracker(
                TrackingSettings(confirmation_frames=self._settings["track_confirmation_frames"],
                                 lost_timeout_s=self._settings["track_lost_timeout"]),
                SmoothingSettings(self._settings["smoothing_time_constant"]))
        self.get_logger().info(
            f"configured: {self._predictor.model_name} on {self._predictor.backend_name}/{self._predictor.device}: "
            f"{len(self._categories)} categories, VAD {'on' if self._predictor.has_vad else 'off'}, "
            f"trained on {self._predictor.card.trained_on}"
        )
        if self._predictor.card.trained_on in ("synthetic", "unknown"):
            # Said once here and on every /diagnostics message: a dialogue stack must not take a
            # pipeline demo for a model of human emotion.
            self.get_logger().warning(
                f"this model was trained on {self._predictor.card.trained_on} data only: its emotions are not "
                f"evidence about real people (for real faces today: expression_node; README)")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        # Latest frame wins: depth 1 at every hop; best effort (sensor data) unless asked.
        reliability = (ReliabilityPolicy.RELIABLE if self._settings["qos_reliability"] == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        input_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=reliability,
                               durability=DurabilityPolicy.VOLATILE)
        topic, msg_type = ("image/compressed", CompressedImage) if self._compressed else ("image", Image)
        self._outcomes.clear()
        if self._tracker is not None:
            self._tracker.reset()  # frames before a pause say nothing about who is there now
            self._active_tracks = 0
        self._slot.reopen()
        self._stop.clear()
        self._worker = threading.Thread(target=self._run_worker, name=f"{self.get_name()}_inference", daemon=True)
        self._worker.start()
        self._subscription = self.create_subscription(msg_type, topic, self._on_image, input_qos)
        self.get_logger().info(
            f"active: listening on {self.resolve_topic_name(topic)} ({self._settings['qos_reliability']}, depth 1), "
            f"publishing {self.resolve_topic_name('emotions')}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self.get_logger().info("inactive: not subscribed, worker stopped (model kept loaded)")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_model()
        self.get_logger().info("unconfigured: model freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._release_model()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # A transition callback raised: drop everything, back to unconfigured.
        self._stop_processing()
        self._release_model()
        return TransitionCallbackReturn.SUCCESS

    def _stop_processing(self) -> None:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        self._stop.set()
        self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=30.0)  # at most one inference
            self._worker = None

    def _release_model(self) -> None:
        for publisher in (self._emotions_pub, self._raw_pub, self._debug_pub):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self._emotions_pub = self._raw_pub = self._debug_pub = None
        device = str(getattr(self._predictor, "device", "cpu"))
        self._predictor = None
        self._categories = ()
        gc.collect()
        if device.startswith("cuda") and "torch" in sys.modules:
            sys.modules["torch"].cuda.empty_cache()  # give the GPU back to the robot

    # ---------------------------------------------------------------- model
    def _load_predictor(self):
        # Imported here: the runtime pulls in torch/onnxruntime, and a node that cannot load its
        # model must fail at configure with the reason, not at the first frame.
        from emotion_perception.runtime import load_predictor

        if self._settings["model_path"]:
            path = self._settings["model_path"]
        elif self._model_kind in INSTALLED_MODELS:
            from emotion_perception.resources import resolve_model_path

            path = str(resolve_model_path(INSTALLED_MODELS[self._model_kind]))
        else:
            path = str(find_resource(DEMO_MODELS[self._model_kind]))
        if Path(path).is_dir():
            raise FileNotFoundError(f"model_path '{path}' is a directory, not a model file")
        if not Path(path).is_file():
            raise FileNotFoundError(f"model_path '{path}' does not exist")
        options: dict[str, Any] = {"cuda_graph": self._settings["cuda_graph"],
                                   "compile": self._settings["torch_compile"]}
        if "face_detector" in self._settings:
            options["face_detector"] = self._settings["face_detector"]
        predictor = load_predictor(
            path, backend=self._settings["backend"], device=self._settings["device"],
            # The parameter is one side (square canvas); the predictor takes (H, W).
            input_size=(self._settings["input_size"],) * 2 if self._settings["input_size"] else None, **options,
        )
        if predictor.model_name != self._model_kind:
            raise ValueError(f"{path} holds a '{predictor.model_name}' model, this node runs '{self._model_kind}'")
        return predictor

    # ---------------------------------------------------------------- parameters
    def _validate_parameters(self, parameters) -> SetParametersResult:
        # rclpy has already enforced read_only and the descriptor ranges; choices and types
        # are ours. A request is applied (in _apply_parameters) only if all of it is valid.
        for parameter in parameters:
            spec = self._specs.get(parameter.name)
            problem = spec.check(parameter.value) if spec else None
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters) -> None:
        # The worker reads a copy of this dict per frame: new thresholds apply from the next frame.
        for parameter in parameters:
            spec = self._specs.get(parameter.name)
            if spec is not None:
                self._settings[parameter.name] = float(parameter.value) if spec.type is float else parameter.value

    # ---------------------------------------------------------------- inference
    def _warn_throttled(self, key: str, text: str, period: float = 5.0) -> None:
        now = time.monotonic()
        if now - self._last_warning.get(key, -math.inf) >= period:
            self._last_warning[key] = now
            self.get_logger().warning(text)

    def _on_image(self, msg: Any) -> None:
        """Subscription callback: hand the frame to the worker (whether it replaced one is counted there)."""
        self._slot.put(msg)

    def _run_worker(self) -> None:
        # Nothing that happens on one frame may end this loop: a dead worker is a node that
        # looks alive and never answers again.
        while not self._stop.is_set():
            msg = self._slot.take(timeout=0.2)
            if msg is None:
                continue
            try:
                self._process(msg)
            except Exception as err:
                # The text may carry values from the wire: quoted and cut for the log and /diagnostics.
                reason = f"{type(err).__name__}: {quote_untrusted(str(err), 200)}"
                self._slot.count("failed")
                self._outcomes.record_failure(reason)
                self._warn_throttled("failed", f"frame failed: {reason}")

    def _process(self, msg) -> None:
        started = time.perf_counter()  # latency includes the image conversion / decoding
        try:
            rgb = to_rgb(msg, compressed=self._compressed, prefer_cv_bridge=self._use_cv_bridge,
                         max_pixels=self._settings["max_image_pixels"])
        except ImageConversionError as err:
            self._slot.count("rejected")
            self._warn_throttled("convert", f"frame rejected: {err}")
            return
        settings = dict(self._settings)
        options = {"flip_test": settings["flip_test"]} if self._model_kind == "benet" else {}
        people = self._predictor.predict(
            rgb, detection_threshold=settings["detection_threshold"],
            max_people=settings["max_people"], **options,
        )
        ids = [str(index) for index in range(len(people))]
        raw = [(p.scores, p.vad) for p in people]
        smoothed = raw
        if self._tracker is not None:
            if self._tracker.smoothing.time_constant_s != settings["smoothing_time_constant"]:
                from emotion_perception.runtime.smoothing import SmoothingSettings

                self._tracker.set_smoothing(SmoothingSettings(settings["smoothing_time_constant"]))
            # Header stamps, not arrival times: a replayed bag, sim time and a live camera alike.
            tracked = self._tracker.update(people, msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
            self._active_tracks = self._tracker.active_tracks
            ids = [person.track_id for person in tracked]
            smoothed = [(person.scores, person.vad) for person in tracked]
        self._stats.add_latency((time.perf_counter() - started) * 1000.0)
        out = self._to_message(msg.header, people, ids, smoothed, settings["emotion_threshold"])
        self._emotions_pub.publish(out)
        if settings["publish_raw_emotions"]:
            self._raw_pub.publish(self._to_message(msg.header, people, ids, raw, settings["emotion_threshold"]))
        if settings["publish_debug_image"]:
            self._publish_debug_image(msg.header, rgb, out)
        self._slot.count("processed")
        self._outcomes.record_processed()
    def _to_message(self, header, people, ids: list[str], emotions: list[tuple[Any, Any]],
                    emotion_threshold: float) -> PersonEmotions:
        """``ids`` and ``emotions`` ((scores, vad) per person: smoothed or raw) in the order of ``people``."""
        calibrated = self._predictor.card.label_thresholds
        per_category = calibrated if calibrated and emotion_threshold == self._default_emotion_threshold else None
        out = PersonEmotions(header=header, model=self._predictor.model_name, categories=list(self._categories))
        for person, person_id, (person_scores, person_vad) in zip(people, ids, emotions):
            scores = np.asarray(person_scores, dtype=np.float32)
            vad = np.asarray(person_vad, dtype=np.float32).reshape(3)
            x_min, y_min, x_max, y_max = (float(v) for v in person.box)
            out.people.append(PersonEmotion(
                id=person_id, score=float(person.score),
                x_min=x_min, y_min=y_min, x_max=x_max, y_max=y_max,
                scores=scores.tolist(),
                labels=confident_labels(scores, self._categories, emotion_threshold,
                                        exclusive=self._predictor.model_name != "benet", per_category=per_category),
                valence=float(vad[0]), arousal=float(vad[1]), dominance=float(vad[2]),
            ))
        return out

    def _publish_debug_image(self, header, rgb: np.ndarray, message: PersonEmotions) -> None:
        from emotion_perception.ros.debug_image import draw_person_emotions

        image = Image(header=header, **rgb_to_image_fields(draw_person_emotions(rgb, message)))
        self._debug_pub.publish(image)

    # ---------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        counters = self._slot.snapshot()
        last_time, last = self._last_diag
        elapsed = max(now - last_time, 1e-6)
        self._last_diag = (now, counters)
        latency = self._stats.percentiles()
        predictor = self._predictor  # the worker never changes it; cleanup may, between two reads
        state = self.lifecycle_state()
        outcomes = self._outcomes.summary()
        health = assess(state, self._configure_error, outcomes,
                        received=counters.received - last.received, dropped=counters.dropped - last.dropped)
        # The fully qualified name: two namespaced nodes must not publish the same status name.
        status = DiagnosticStatus(
            name=f"{self.get_fully_qualified_name()}: emotion perception",
            hardware_id=f"{predictor.backend_name}/{predictor.device}" if predictor else "",
            level=bytes([health.level]), message=health.message,
        )
        values = {
            "lifecycle_state": state,
            "model": predictor.model_name if predictor else self._model_kind,
            "backend": predictor.backend_name if predictor else "",
            "device": str(predictor.device) if predictor else "",
            "input_rate_hz": f"{(counters.received - last.received) / elapsed:.2f}",
            "output_rate_hz": f"{(counters.processed - last.processed) / elapsed:.2f}",
            "frames_received": str(counters.received),
            "frames_processed": str(counters.processed),
            "frames_dropped": str(counters.dropped),
            "frames_rejected": str(counters.rejected),
            "frames_failed": str(counters.failed),
            "latency_ms_p50": f"{latency['p50']:.2f}",
            "latency_ms_p90": f"{latency['p90']:.2f}",
            "latency_ms_p99": f"{latency['p99']:.2f}",
            "last_failure": outcomes.last_failure or "",
            "trained_on": predictor.card.trained_on if predictor else "",
            # Confirmed tracks alive after the last processed frame (0 with tracking off).
            "active_tracks": str(self._active_tracks),
        }
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    def destroy_node(self) -> None:
        self._stop_processing()
        super().destroy_node()


def one_line_reason(err: Exception) -> str:
    """Why a start-up step failed, in one line: our own errors' text says it all; any other
    exception is named by its type."""
    if isinstance(err, (FileNotFoundError, ValueError, ImportError)):
        return str(err)
    return f"{type(err).__name__}: {err}"


@contextlib.contextmanager
def ros_context(args: list[str]) -> Iterator[None]:
    """rclpy.init() ... shutdown, on every supported distro: Jazzy's rclpy 7 ``init()`` returns
    None, only Kilted's (rclpy 9) returns a context manager."""
    rclpy.init(args=args)
    try:
        yield
    finally:
        rclpy.try_shutdown()


def run(model_kind: str, node_name: str, argv: list[str] | None = None) -> int:
    """Console-script body: ``<node> --ros-args --params-file FILE -r image:=/camera/image_raw``."""
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from emotion_perception.ros.dds_profile import apply_large_image_profile

    profile = apply_large_image_profile()
    try:
        with ros_context(argv if argv is not None else sys.argv):
            try:
                node = EmotionPerceptionNode(model_kind, node_name)
            except Exception as err:  # bad parameters (rclpy's own exceptions too): one line, exit 1
                print(f"{node_name}: cannot start: {one_line_reason(err)}", file=sys.stderr)
                return 1
            if profile:
                node.get_logger().info(f"Fast DDS profile for large images: {profile}")
            if node.autostart:
                # As a plain node: a model that cannot load stops the process with the reason.
                problem = node.start()
                if problem:
                    print(f"{node_name}: cannot start: {problem}", file=sys.stderr)
                    node.destroy_node()
                    return 1
            else:
                node.get_logger().info("autostart is false: unconfigured, waiting for lifecycle transitions")
            # The worker thread does the inference, so one executor thread is enough to keep
            # subscriptions, timers, parameter and lifecycle services responsive.
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            try:
                executor.spin()
            finally:
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ctrl-C reaches a launched node twice (from the terminal's process group, then
        # forwarded by ros2 launch): the second must not print a traceback from the exiting
        # interpreter. SIGTERM / SIGKILL still end a shutdown that hangs.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return 0
