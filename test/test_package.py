"""The package as a whole: package.xml, dependencies, layering, ROS-free imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "emotion_perception"

# What each layer must not import (docs/ARCHITECTURE.md): imports only go downwards, and
# export/runtime sit beside train, using nets and data but never train or eval.
FORBIDDEN = {
    "data": {"nets", "train", "eval", "export", "runtime", "ros", "bench"},
    "nets": {"train", "eval", "export", "runtime", "ros", "bench"},
    "train": {"eval", "export", "runtime", "ros", "bench"},
    "eval": {"export", "runtime", "ros", "bench"},
    "export": {"train", "eval", "ros", "bench"},
    "runtime": {"train", "eval", "ros", "bench"},
    "ros": {"train", "eval", "bench"},
    "bench": {"train", "eval"},
}

# Third-party import name -> the package.xml key that provides it.
IMPORT_TO_ROSDEP = {
    "rclpy": "rclpy",
    "sensor_msgs": "sensor_msgs",
    "std_msgs": "std_msgs",
    "diagnostic_msgs": "diagnostic_msgs",
    "lifecycle_msgs": "lifecycle_msgs",
    "builtin_interfaces": "std_msgs",
    "rcl_interfaces": "rclpy",
    "cv_bridge": "cv_bridge",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "ament_index_python": "rclpy",
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "scipy": "python3-scipy",
    "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib",
    "torch": "python3-torch",
    "onnxruntime": "python3-onnxruntime-pip",
    "dlib": "python3-dlib-pip",
    "face_recognition_models": "python3-dlib-pip",
    "rosbags": "python3-rosbags-pip",
    "trackers": "python3-trackers-pip",
    "supervision": "python3-supervision-pip",
}
# Imported only by training/evaluation/export tooling, not by the robot at run time: these are
# pip extras (setup.py extras_require), not package.xml run dependencies.
TOOLING_ONLY = {"tensorboard", "sklearn", "pycocotools", "onnx", "onnxslim", "onnxsim", "tensorrt",
                "skimage", "hypothesis", "pytest", "catkin_pkg", "psutil", "mcap", "trackeval"}


def _python_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            # resolve relative imports against the module's package
            rel = path.relative_to(ROOT).with_suffix("").parts[: -node.level]
            names.add(".".join(rel + ((node.module,) if node.module else ())))
    return names


def test_package_xml_is_valid_format3():
    from catkin_pkg.package import parse_package

    package = parse_package(str(ROOT / "package.xml"))
    package.validate()
    assert package.name == "emotion_perception"
    assert package.package_format == 3
    assert any("@" in m.email for m in package.maintainers)
    assert package.get_build_type() == "ament_cmake"
    assert "rosidl_interface_packages" in {g.name for g in package.member_of_groups}


def test_package_xml_lists_every_runtime_dependency():
    from catkin_pkg.package import parse_package

    package = parse_package(str(ROOT / "package.xml"))
    declared = {d.name for d in package.exec_depends + package.build_export_depends + package.build_depends}
    stdlib = set(sys.stdlib_module_names)
    missing: dict[str, str] = {}
    unknown: set[str] = set()
    for path in _python_files():
        for name in _imports(path):
            top = name.split(".")[0]
            if top in stdlib or top in ("emotion_perception", "__future__") or top in TOOLING_ONLY:
                continue
            key = IMPORT_TO_ROSDEP.get(top)
            if key is None:
                unknown.add(f"{top} ({path.relative_to(ROOT)})")
            elif key not in declared:
                missing[top] = key
    assert not unknown, f"imports with no package.xml mapping in this test: {sorted(unknown)}"
    assert not missing, f"package.xml lacks run dependencies for: {missing}"


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downwards(layer):
    offenders = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "emotion_perception" and len(parts) > 1 and parts[1] in FORBIDDEN[layer]:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_ros_free_layers_import_without_rclpy():
    # A fresh interpreter where importing rclpy fails, as on a machine without ROS.
    modules = []
    for path in _python_files():
        rel = path.relative_to(ROOT).with_suffix("")
        # ros/ is the one layer allowed to need rclpy at import time.
        if rel.parts[1:2] == ("ros",) or rel.name == "__main__":
            continue
        modules.append(".".join(p for p in rel.parts if p != "__init__"))
    code = (
        "import sys, importlib\n"
        "sys.modules['rclpy'] = None\n"
        f"mods = {modules!r}\n"
        "for m in mods:\n"
        "    importlib.import_module(m)\n"
        "assert 'rclpy' not in sys.modules or sys.modules['rclpy'] is None\n"
        "print(len(mods))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.strip().splitlines()[-1]) == len(modules)


def test_cli_help_lists_subcommands_without_ros():
    code = (
        "import sys\n"
        "sys.modules['rclpy'] = None\n"
        "from emotion_perception.cli import build_parser\n"
        "print(build_parser().format_help())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "emotion-perception" in result.stdout
