"""ROS-free parts of the nodes: image conversion, parameters, launch files (executed), frame slot, labels."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from emotion_perception.ros.frame_slot import LatestFrameSlot
from emotion_perception.ros.image_conversion import (
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
    raw_view,
    rgb_to_image_fields,
    to_rgb,
)
from emotion_perception.ros.params import NODE_PARAMETERS, load_defaults
from emotion_perception.runtime.labels import labels_over_threshold

ROOT = Path(__file__).resolve().parents[1]


def _rgb(height: int = 6, width: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _msg(pixels: np.ndarray, encoding: str, pad: int = 0) -> SimpleNamespace:
    """An Image-like message; ``pad`` garbage bytes end each row (step > width * channels)."""
    pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
    height, width, channels = pixels.shape
    rows = pixels.reshape(height, width * channels)
    padded = np.concatenate([rows, np.full((height, pad), 0xAB, np.uint8)], axis=1)
    return SimpleNamespace(height=height, width=width, encoding=encoding, is_bigendian=0,
                           step=width * channels + pad, data=padded.tobytes())


@pytest.mark.parametrize("pad", [0, 5])
def test_rgb_bgr_rgba_bgra_mono_convert_to_the_same_pixels(pad):
    rgb = _rgb()
    cases = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2),
        "bgra8": np.concatenate([rgb[..., ::-1], np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2),
    }
    for encoding, pixels in cases.items():
        np.testing.assert_array_equal(image_to_rgb(_msg(pixels, encoding, pad)), rgb, err_msg=encoding)
    gray = rgb[..., 0]
    np.testing.assert_array_equal(image_to_rgb(_msg(gray, "mono8", pad)), np.repeat(gray[..., None], 3, axis=2))


def _pack_yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """Pack an image whose pixel pairs share one colour into UYVY or YUYV by hand, with the
    limited-range ("video", Y in 16..235) BT.601 equations that cameras use."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    y, u, v = (np.clip(np.round(c), 0, 255).astype(np.uint8) for c in (y, u, v))
    packed = np.empty(rgb.shape[:2] + (2,), np.uint8)
    if order == "uyvy":
        packed[:, 0::2, 0], packed[:, 1::2, 0] = u[:, 0::2], v[:, 0::2]
        packed[..., 1] = y
    else:
        packed[..., 0] = y
        packed[:, 0::2, 1], packed[:, 1::2, 1] = u[:, 0::2], v[:, 0::2]
    return packed


@pytest.mark.parametrize("encoding,order",
                         [("yuv422", "uyvy"), ("uyvy", "uyvy"), ("yuv422_yuy2", "yuyv"), ("yuyv", "yuyv")])
def test_yuv422_variants_decode_to_the_source_colours(encoding, order):
    # Pixel pairs share a colour, so 4:2:2 subsampling loses nothing but rounding; colours
    # stay inside the range that limited-range YUV represents without clipping.
    rgb = np.repeat(np.clip(_rgb(4, 4, seed=1), 20, 235), 2, axis=1)
    converted = image_to_rgb(_msg(_pack_yuv422(rgb, order), encoding))
    assert converted.shape == rgb.shape
    assert np.abs(converted.astype(int) - rgb.astype(int)).max() <= 6


def test_raw_view_is_zero_copy_and_respects_step():
    msg = _msg(_rgb(), "rgb8", pad=3)
    view = raw_view(msg)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))
    assert view.shape == (6, 8, 3)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"encoding": "bayer_rggb8"}, "unsupported encoding"),
        ({"encoding": "16UC1"}, "unsupported encoding"),
        ({"step": 10}, "step 10 is smaller"),
        ({"height": 0}, "empty image"),
        ({"width": 0}, "empty image"),
        ({"data": b"\x00" * 20}, "truncated data"),
    ],
)
def test_malformed_images_raise_one_clear_error(change, match):
    msg = _msg(_rgb(), "rgb8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ImageConversionError, match=match):
        image_to_rgb(msg)


def test_compressed_jpeg_and_png_decode_and_garbage_is_rejected():
    rgb = _rgb(16, 16)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    np.testing.assert_array_equal(compressed_to_rgb(SimpleNamespace(format="png", data=png.tobytes())), rgb)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert compressed_to_rgb(SimpleNamespace(format="jpeg", data=jpeg.tobytes())).shape == (16, 16, 3)
    with pytest.raises(ImageConversionError, match="not a PNG, JPEG, BMP, WebP image"):
        compressed_to_rgb(SimpleNamespace(format="jpeg", data=b"not an image"))
    with pytest.raises(ImageConversionError, match="cannot decode"):  # a valid header, then garbage
        compressed_to_rgb(SimpleNamespace(format="png", data=png.tobytes()[:40]))
    with pytest.raises(ImageConversionError, match="empty"):
        compressed_to_rgb(SimpleNamespace(format="jpeg", data=b""))


def test_compressed_bomb_is_rejected_from_its_header_before_decoding():
    from encoded_images import png_bomb

    bomb = SimpleNamespace(format="png", data=png_bomb(16000, 16000))  # 250 KB, 256 M pixels
    started = time.perf_counter()
    with pytest.raises(ImageConversionError, match="PNG of 16000x16000 = 256000000 pixels is over the limit"):
        to_rgb(bomb, compressed=True)
    assert time.perf_counter() - started < 1.0  # decoding it takes seconds and 1.5 GB
    small = SimpleNamespace(format="png", data=png_bomb(40, 30))
    assert compressed_to_rgb(small, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(ImageConversionError, match="over the limit of 1199"):
        compressed_to_rgb(small, max_pixels=1199)
    # a format whose size we do not read is rejected, not decoded blind
    _ok, tiff = cv2.imencode(".tiff", _rgb(8, 8))
    with pytest.raises(ImageConversionError, match="cannot be checked before decoding"):
        compressed_to_rgb(SimpleNamespace(format="tiff", data=tiff.tobytes()))


def test_raw_images_over_the_pixel_limit_are_rejected():
    msg = _msg(_rgb(6, 8), "rgb8")
    assert image_to_rgb(msg, max_pixels=48).shape == (6, 8, 3)
    with pytest.raises(ImageConversionError, match="8x6 = 48 pixels is over the limit of 47"):
        to_rgb(msg, max_pixels=47)


@pytest.mark.parametrize("compressed, field", [(False, "encoding"), (True, "format")])
def test_strings_from_the_wire_are_quoted_and_cut_in_errors(compressed, field):
    forged = "x\n[ERROR] [benet_node]: forged line \x1b[31mred" + "A" * 1_000_000
    msg = _msg(_rgb(), "rgb8") if not compressed else SimpleNamespace(format="png", data=b"garbage bytes")
    setattr(msg, field, forged)
    with pytest.raises(ImageConversionError) as err:
        to_rgb(msg, compressed=compressed)
    text = str(err.value)
    assert "\n" not in text and "\x1b" not in text  # no raw newline or escape reaches a log line
    assert "\\n[ERROR]" in text and "\\x1b" in text  # shown escaped, inside quotes
    assert len(text) < 400 and f"({len(forged)} characters)" in text


def test_debug_image_fields_round_trip():
    rgb = _rgb()
    np.testing.assert_array_equal(image_to_rgb(SimpleNamespace(**rgb_to_image_fields(rgb))), rgb)
    assert "rgb8" in SUPPORTED_ENCODINGS


@pytest.mark.parametrize("model", sorted(NODE_PARAMETERS))
def test_params_yaml_gives_a_valid_default_for_every_declared_parameter(model):
    defaults = load_defaults(ROOT / "config" / f"{model}.yaml", model)
    assert set(defaults) == {spec.name for spec in NODE_PARAMETERS[model]}


def test_params_yaml_typos_and_bad_values_are_errors(tmp_path):
    good = (ROOT / "config" / "benet.yaml").read_text()
    typo = tmp_path / "typo.yaml"
    typo.write_text(good.replace("max_people:", "max_peple:"))
    with pytest.raises(ValueError, match="unknown parameters"):
        load_defaults(typo, "benet")
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.replace("detection_threshold: 0.2", "detection_threshold: 1.5"))
    with pytest.raises(ValueError, match="detection_threshold must be <= 1.0"):
        load_defaults(bad, "benet")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(good.replace("backend: auto", "backend: cuda"))
    with pytest.raises(ValueError, match="backend must be one of"):
        load_defaults(wrong, "benet")


def _launch_api() -> SimpleNamespace:
    """The launch/launch_ros names emotion_perception_launch.py imports, plus LaunchContext.

    The real packages where a ROS distro provides them; here (they are not on PyPI, and the
    repository's launch/ folder even shadows ``launch`` as an empty namespace package) a
    stand-in with the same names and the same calls (``entities``, ``name``, ``execute``,
    ``perform``, ``launch_configurations``). ``Node`` is always a recorder: what matters is
    what the node is started with, and test/test_launch.py starts it for real.
    """
    try:
        from launch.actions import DeclareLaunchArgument, OpaqueFunction
        from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
        from launch_ros.substitutions import FindPackageShare

        from launch import LaunchContext, LaunchDescription
    except ImportError:
        return SimpleNamespace(real=False, **_FAKE_LAUNCH)
    return SimpleNamespace(real=True, LaunchContext=LaunchContext, LaunchDescription=LaunchDescription,
                           DeclareLaunchArgument=DeclareLaunchArgument, OpaqueFunction=OpaqueFunction,
                           LaunchConfiguration=LaunchConfiguration, PathJoinSubstitution=PathJoinSubstitution,
                           FindPackageShare=FindPackageShare)


class _FakeLaunchConfiguration:
    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context) -> str:
        return context.launch_configurations[self.name]  # KeyError where launch raises


class _FakeDeclareLaunchArgument:
    def __init__(self, name: str, default_value=None, description: str = "") -> None:
        self.name, self.default_value, self.description = name, default_value, description


class _FakeOpaqueFunction:
    def __init__(self, function) -> None:
        self._function = function

    def execute(self, context) -> list:
        return self._function(context)


class _FakeLaunchDescription:
    def __init__(self, entities) -> None:
        self.entities = list(entities)


class _FakeLaunchContext:
    def __init__(self) -> None:
        self.launch_configurations: dict[str, str] = {}


class _Unresolvable:
    """PathJoinSubstitution / FindPackageShare: need an installed package; tests pass params_file."""

    def __init__(self, *args, **kwargs) -> None:
        pass


_FAKE_LAUNCH = {
    "LaunchContext": _FakeLaunchContext, "LaunchDescription": _FakeLaunchDescription,
    "DeclareLaunchArgument": _FakeDeclareLaunchArgument, "OpaqueFunction": _FakeOpaqueFunction,
    "LaunchConfiguration": _FakeLaunchConfiguration, "PathJoinSubstitution": _Unresolvable,
    "FindPackageShare": _Unresolvable,
}


class _RecordedNode:
    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs


def _perform(value, context):
    """A substitution (or list of them and strings) resolved as launch does."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "".join(_perform(part, context) for part in value)
    return value.perform(context)


@pytest.fixture()
def launch_api(monkeypatch) -> SimpleNamespace:
    """emotion_perception_launch.py imported against ``_launch_api()``, as the launch files import it."""
    api = _launch_api()
    if not api.real:
        stand_ins = {
            "launch": SimpleNamespace(LaunchDescription=api.LaunchDescription, LaunchContext=api.LaunchContext),
            "launch.actions": SimpleNamespace(DeclareLaunchArgument=api.DeclareLaunchArgument,
                                              OpaqueFunction=api.OpaqueFunction),
            "launch.substitutions": SimpleNamespace(LaunchConfiguration=api.LaunchConfiguration,
                                                    PathJoinSubstitution=api.PathJoinSubstitution),
            "launch_ros": SimpleNamespace(),
            "launch_ros.actions": SimpleNamespace(Node=_RecordedNode),
            "launch_ros.substitutions": SimpleNamespace(FindPackageShare=api.FindPackageShare),
        }
        for name, module in stand_ins.items():
            monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("emotion_perception_launch",
                                                  ROOT / "launch" / "emotion_perception_launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "Node", _RecordedNode)
    # The <model>.launch.py files put their folder on sys.path and import this module by name.
    monkeypatch.setitem(sys.modules, "emotion_perception_launch", module)
    monkeypatch.setattr(sys, "path", list(sys.path))
    api.module = module
    return api


def _generated_description(model: str):
    spec = importlib.util.spec_from_file_location(f"{model}_launch", ROOT / "launch" / f"{model}.launch.py")
    launch_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_file)
    return launch_file.generate_launch_description()


def _launch(api: SimpleNamespace, description, arguments: dict[str, str]) -> tuple[_RecordedNode, object]:
    """Execute ``description`` as ``ros2 launch ... name:=value`` would: declared arguments take
    the given value or their default, then the opaque function builds the node."""
    context = api.LaunchContext()
    declared = [e for e in description.entities if isinstance(e, api.DeclareLaunchArgument)]
    assert set(arguments) <= {a.name for a in declared}, "passing an undeclared launch argument"
    for argument in declared:
        given = arguments.get(argument.name)
        context.launch_configurations[argument.name] = (
            given if given is not None else _perform(argument.default_value, context))
    (opaque,) = [e for e in description.entities if isinstance(e, api.OpaqueFunction)]
    (node,) = opaque.execute(context)
    assert isinstance(node, _RecordedNode)
    return node, context


_FIXED_ARGUMENTS = {"image_topic": "/cam/image", "params_file": "/tmp/params.yaml", "namespace": "robot"}


def _parameter_arguments(api: SimpleNamespace, description) -> set[str]:
    declared = {e.name for e in description.entities if isinstance(e, api.DeclareLaunchArgument)}
    assert set(_FIXED_ARGUMENTS) <= declared
    return declared - set(_FIXED_ARGUMENTS)


@pytest.mark.parametrize("model", sorted(NODE_PARAMETERS))
def test_launch_file_starts_its_node_with_the_params_file_and_remapped_image(launch_api, model: str) -> None:
    description = _generated_description(model)
    # Parameter arguments left out: their default is empty and they override nothing.
    node, context = _launch(launch_api, description, _FIXED_ARGUMENTS)
    kwargs = node.kwargs
    assert ((kwargs["package"], kwargs["executable"], kwargs["name"])
            == ("emotion_perception", f"{model}_node", f"{model}_node"))
    assert ([_perform(p, context) if not isinstance(p, dict) else p for p in kwargs["parameters"]]
            == ["/tmp/params.yaml", {}])
    assert _perform(kwargs["namespace"], context) == "robot"
    remapped = [(source, _perform(target, context)) for source, target in kwargs["remappings"]]
    assert remapped == [("image", "/cam/image"), ("image/compressed", "/cam/image/compressed")]


@pytest.mark.parametrize("model", sorted(NODE_PARAMETERS))
def test_launch_arguments_override_declared_parameters_with_their_types(launch_api, model: str) -> None:
    description = _generated_description(model)
    specs = {spec.name: spec for spec in NODE_PARAMETERS[model]}
    arguments = _parameter_arguments(launch_api, description)
    assert arguments, f"{model}: no parameter launch arguments"
    undeclared = arguments - set(specs)
    assert not undeclared, f"{model}: launch arguments for parameters the node does not declare: {undeclared}"
    # Each argument gets a valid value as text, as on a command line; booleans in mixed case.
    given, expected = {}, {}
    for index, name in enumerate(sorted(arguments)):
        spec = specs[name]
        if spec.type is bool:
            given[name], expected[name] = ("True", True) if index % 2 else ("false", False)
        else:
            assert spec.type is str, f"{model}: launch would pass {name} as a string, the node declares {spec.type}"
            given[name] = expected[name] = spec.choices[-1] if spec.choices else f"/value/of/{name}"
    node, context = _launch(launch_api, description, {**_FIXED_ARGUMENTS, **given})
    params_file, overrides = node.kwargs["parameters"]
    assert _perform(params_file, context) == "/tmp/params.yaml"
    assert overrides == expected
    assert all(type(overrides[name]) is specs[name].type for name in overrides)


def test_frame_slot_keeps_the_latest_frame_and_counts_drops():
    slot = LatestFrameSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True
    assert slot.put(3) is True
    assert slot.take(timeout=0) == 3
    slot.count("processed")
    assert slot.take(timeout=0.01) is None
    counters = slot.snapshot()
    assert (counters.received, counters.dropped, counters.processed) == (3, 2, 1)


def test_frame_slot_accounts_for_every_frame_under_concurrency():
    slot = LatestFrameSlot()
    done = threading.Event()

    def consume():
        while not (done.is_set() and slot.snapshot().received == 5000):
            if slot.take(timeout=0.01) is not None:
                slot.count("processed")
        while slot.take(timeout=0) is not None:
            slot.count("processed")

    worker = threading.Thread(target=consume)
    worker.start()
    for frame in range(5000):
        slot.put(frame)
    done.set()
    worker.join(timeout=30)
    counters = slot.snapshot()
    assert counters.received == 5000
    assert counters.processed + counters.dropped == counters.received


def test_labels_over_threshold_strongest_first():
    categories = ("A", "B", "C", "D")
    assert labels_over_threshold(np.array([0.2, 0.9, 0.5, 0.5]), categories, 0.5) == ["B", "C", "D"]
    assert labels_over_threshold(np.array([0.2, 0.1, 0.3, 0.0]), categories, 0.5) == []
    with pytest.raises(ValueError):
        labels_over_threshold(np.array([0.2, 0.1]), categories, 0.5)


def test_readme_documents_every_node_parameter():
    readme = (ROOT / "README.md").read_text()
    for specs in NODE_PARAMETERS.values():
        for spec in specs:
            assert f"`{spec.name}`" in readme, f"README does not document parameter {spec.name}"


def test_large_image_dds_profile_applies_only_where_nothing_else_is_chosen():
    from emotion_perception.ros.dds_profile import apply_large_image_profile

    env: dict[str, str] = {}
    path = apply_large_image_profile(env)
    assert path and Path(path).is_file()
    # Exactly one variable, the one this venv's Fast DDS reads (both load the file twice on Kilted).
    from importlib import metadata
    try:
        expected = "FASTDDS_DEFAULT_PROFILES_FILE" if metadata.version("ros-fastdds") else ""
    except metadata.PackageNotFoundError:
        expected = "FASTRTPS_DEFAULT_PROFILES_FILE"
    assert env == {expected: path}
    assert "<segment_size>16777216</segment_size>" in Path(path).read_text()
    assert apply_large_image_profile({"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}) is None
    assert apply_large_image_profile({"FASTRTPS_DEFAULT_PROFILES_FILE": "/mine.xml"}) is None
    assert apply_large_image_profile({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) is None
    assert apply_large_image_profile({"EMOTION_PERCEPTION_DDS_PROFILE": "0"}) is None


def test_dds_profile_variable_follows_a_sourced_distro(monkeypatch):
    from importlib import metadata

    from emotion_perception.ros import dds_profile

    def no_wheels(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", no_wheels)
    assert dds_profile.profile_variable({"ROS_DISTRO": "jazzy"}) == "FASTRTPS_DEFAULT_PROFILES_FILE"
    assert dds_profile.profile_variable({"ROS_DISTRO": "kilted"}) == "FASTDDS_DEFAULT_PROFILES_FILE"


def test_yuv422_with_an_odd_width_is_rejected_not_raised_by_opencv():
    # One such 12-byte frame used to make cv2.cvtColor raise inside the node's worker.
    for encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv"):
        msg = SimpleNamespace(height=2, width=3, encoding=encoding, is_bigendian=0, step=6, data=bytes(12))
        with pytest.raises(ImageConversionError, match="even width"):
            image_to_rgb(msg)


def test_slot_reopens_after_close_and_counts_a_stale_frame_as_dropped():
    slot = LatestFrameSlot()
    slot.put("a")
    slot.close()
    slot.reopen()  # deactivate then activate: the frame from before is not processed
    assert slot.take(timeout=0.01) is None
    counters = slot.snapshot()
    assert (counters.received, counters.dropped) == (1, 1)
    slot.put("b")
    assert slot.take(timeout=0.01) == "b"


def test_demo_output_quotes_the_frame_id_it_received():
    from emotion_perception.demo import _describe

    header = SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=0),
                             frame_id="cam\n[ERROR] forged\x1b[2J" + "x" * 10_000)
    text = _describe(0, SimpleNamespace(header=header, people=[], categories=[]))
    assert "\n" not in text and "\x1b" not in text and len(text) < 300
    assert "frame_id 'camera'" in _describe(0, SimpleNamespace(header=SimpleNamespace(
        stamp=header.stamp, frame_id="camera"), people=[], categories=[]))
