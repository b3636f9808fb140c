"""The nodes' parameters: names, types, ranges and descriptions (ROS-free, so tests and docs
can read them without rclpy).

Default values are not here: they live in one place, ``config/<node>.yaml``, which the node
reads for its defaults and which ``--params-file`` / launch overrides on top of.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    type: type  # bool, int, float or str
    description: str
    read_only: bool = False  # fixed once the node runs (changing it needs a model reload)
    choices: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None

    def check(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable for this parameter, or None if it is."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            return f"{self.name} must be a {self.type.__name__}, got {type(value).__name__}"
        if self.choices is not None and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}, got '{value}'"
        if self.min_value is None and self.max_value is None:
            return None
        # Ranges are declared for int and float parameters only (value passed the type check above).
        assert isinstance(value, (int, float)), f"{self.name}: a range on a {self.type.__name__} parameter"
        if self.min_value is not None and value < self.min_value:
            return f"{self.name} must be >= {self.min_value}, got {value}"
        if self.max_value is not None and value > self.max_value:
            return f"{self.name} must be <= {self.max_value}, got {value}"
        return None


COMMON_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("model_path", str,
                  "Checkpoint (.pt), ONNX file or TensorRT engine; empty: the demo model shipped in models/.",
                  read_only=True),
    ParameterSpec("backend", str,
                  "Inference backend; auto picks the fastest available and logs why.",
                  read_only=True, choices=BACKENDS),
    ParameterSpec("device", str, "auto, cpu, cuda or cuda:N.", read_only=True),
    ParameterSpec("cuda_graph", bool,
                  "GPU: capture the network once per input shape as a CUDA graph and replay it "
                  "(torch and tensorrt backends; saves per-layer launch overhead).", read_only=True),
    ParameterSpec("torch_compile", bool,
                  "torch backend: torch.compile the network (slow first frames while it compiles).",
                  read_only=True),
    ParameterSpec("input_size", int,
                  "Network input side in pixels (multiple of 32); 0: the model's own size.",
                  read_only=True, min_value=0, max_value=2048),
    ParameterSpec("detection_threshold", float,
                  "Minimum person (or face) confidence to report.", min_value=0.0, max_value=1.0),
    ParameterSpec("max_people", int,
                  "At most this many people per image, strongest first.", min_value=1, max_value=100),
    ParameterSpec("emotion_threshold", float,
                  "A category enters PersonEmotion.labels when its score reaches this.", min_value=0.0, max_value=1.0),
    ParameterSpec("publish_debug_image", bool, "Publish an annotated image on emotions/debug_image."),
    ParameterSpec("max_image_pixels", int,
                  "Frames with more pixels (width x height) are rejected before conversion; compressed frames by the "
                  "size in their PNG/JPEG/BMP/WebP header, before decoding (other formats are rejected).",
                  min_value=1, max_value=2**30),
    ParameterSpec("input_transport", str,
                  "raw: sensor_msgs/Image on 'image'; compressed: sensor_msgs/CompressedImage (JPEG/PNG) on "
                  "'image/compressed'.", read_only=True, choices=("raw", "compressed")),
    ParameterSpec("qos_reliability", str,
                  "Input subscription reliability: best_effort (sensor data, default for cameras) or reliable.",
                  read_only=True, choices=("best_effort", "reliable")),
    ParameterSpec("diagnostics_period", float,
                  "Seconds between /diagnostics messages.", read_only=True, min_value=0.1, max_value=60.0),
    ParameterSpec("image_converter", str,
                  "How raw images become RGB: numpy (default, no compiled ROS code involved) or cv_bridge (only where "
                  "the installed cv_bridge is known to work with this numpy).",
                  read_only=True, choices=("numpy", "cv_bridge")),
    ParameterSpec("tracking", bool,
                  "Track people over frames: PersonEmotion.id is a stable track id and scores are smoothed per track; "
                  "false: id is the index in the message and scores are per frame.", read_only=True),
    ParameterSpec("track_confirmation_frames", int,
                  "Consecutive frames a new person must be seen before the track is confirmed and gets an id (before "
                  "that: id is empty); at least 2.", read_only=True, min_value=2, max_value=30),
    ParameterSpec("track_lost_timeout", float,
                  "Seconds (of image header stamps) a track survives without a detection before it ends; its id is "
                  "never reused.", read_only=True, min_value=0.0, max_value=60.0),
    ParameterSpec("smoothing_time_constant", float,
                  "Time constant in seconds of the per-track exponential smoothing of scores and VAD (stamp-based); "
                  "0: no smoothing. Labels come from the smoothed scores.", min_value=0.0, max_value=60.0),
    ParameterSpec("publish_raw_emotions", bool,
                  "Also publish the unsmoothed per-frame scores, labels and VAD (same ids) on emotions/raw."),
    ParameterSpec("autostart", bool,
                  "Walk the lifecycle through configure and activate at start-up; false: wait unconfigured for "
                  "lifecycle transitions (change_state).", read_only=True),
)

NODE_PARAMETERS: dict[str, tuple[ParameterSpec, ...]] = {
    "benet": COMMON_PARAMETERS + (
        ParameterSpec("flip_test", bool, "Average the image and its mirror image (about 2x the cost)."),
    ),
    "cahfw": COMMON_PARAMETERS + (
        ParameterSpec("face_detector", str,
                      "Face detector: mtcnn (CNN, real weights, default), hog (dlib, fast, frontal faces only), cnn "
                      "(dlib MMOD, slow on CPU) or auto (mtcnn where installed, else hog).",
                      read_only=True, choices=("mtcnn", "hog", "cnn", "auto")),
    ),
    "expression": COMMON_PARAMETERS + (
        ParameterSpec("face_detector", str,
                      "Face detector: mtcnn (CNN, real weights, default), hog (dlib, fast, frontal faces only), cnn "
                      "(dlib MMOD, slow on CPU) or auto (mtcnn where installed, else hog).",
                      read_only=True, choices=("mtcnn", "hog", "cnn", "auto")),
    ),
}


def load_defaults(yaml_path: str | Path, model: str) -> dict[str, Any]:
    """Read a node's default parameters from its params YAML (``/**`` or any node-name key).

    Every declared parameter must be there, with a valid value; unknown keys are an error too
    (a typo in a params file must not be silently ignored).
    """
    specs = {spec.name: spec for spec in NODE_PARAMETERS[model]}
    with open(yaml_path, encoding="utf-8") as f:
        document = yaml.safe_load(f) or {}
    if not isinstance(document, dict) or len(document) != 1:
        raise ValueError(f"{yaml_path}: expected one top-level node key (e.g. '/**') with ros__parameters")
    (section,) = document.values()
    values = (section or {}).get("ros__parameters")
    if not isinstance(values, dict):
        raise ValueError(f"{yaml_path}: missing 'ros__parameters' mapping")
    unknown = sorted(set(values) - set(specs))
    missing = sorted(set(specs) - set(values))
    if unknown:
        raise ValueError(f"{yaml_path}: unknown parameters {unknown}")
    if missing:
        raise ValueError(f"{yaml_path}: parameters without a default {missing}")
    for name, value in values.items():
        problem = specs[name].check(value)
        if problem:
            raise ValueError(f"{yaml_path}: {problem}")
        if specs[name].type is float:
            values[name] = float(value)
    return values
