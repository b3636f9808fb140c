"""The package as a whole: package.xml, dependencies, layering, ROS-free imports."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "emotion_perception"

# The layer rule, stated here once (docs/ARCHITECTURE.md points here): which of our modules each
# layer may import besides itself. Imports only go downwards; export/runtime sit beside train,
# using nets and data but never training code; eval sits above them: it may read training runs
# (the ablation report parses their recipes) and score a model's deployed forms (eval/deployed.py
# opens ONNX Runtime / TensorRT graphs through runtime's backend table; neither runtime nor export
# imports eval). The leaves import nothing of ours, so every layer may use them.
LEAVES = {"errors", "resources", "devices", "serialization", "cli_options", "msg", "__init__", "__main__"}
ALLOWED = {
    "data": set(),
    "nets": {"data"},
    "train": {"nets", "data"},
    "eval": {"runtime", "export", "train", "nets", "data"},
    "export": {"nets", "data"},
    "runtime": {"export", "nets", "data"},
    "ros": {"runtime", "export", "nets", "data"},
    "bench": {"ros", "runtime", "export", "nets", "data"},
    "demo": {"bench", "ros", "runtime", "export", "nets", "data"},
    "cli": set(),  # commands are loaded by name (cli_options.load_command_module), not imported
    **{leaf: set() for leaf in LEAVES - {"msg", "__init__", "__main__"}},
}


def _layer_of(path: Path) -> str:
    """``emotion_perception/train/loop.py`` -> ``train``; ``emotion_perception/demo.py`` -> ``demo``."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


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


def test_every_module_belongs_to_a_layer_of_the_rule():
    layers = {_layer_of(path) for path in _python_files()} - {"msg", "__init__", "__main__"}
    assert layers == set(ALLOWED), (f"add {sorted(layers - set(ALLOWED))} to ALLOWED, "
                                    f"or drop {sorted(set(ALLOWED) - layers)}")


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_downwards(layer):
    permitted = ALLOWED[layer] | (LEAVES if layer not in LEAVES else set()) | {layer}
    offenders = []
    for path in _python_files():
        if _layer_of(path) != layer:
            continue
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "emotion_perception" and len(parts) > 1 and parts[1] not in permitted:
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


def _listed_commands(help_text: str) -> list[str]:
    """Command names of an argparse help's subcommand list (the indented lines under COMMAND)."""
    lines = help_text.split("positional arguments:", 1)[1].split("options:", 1)[0].splitlines()
    return [line.split()[0] for line in lines if line.startswith("    ") and not line.startswith("      ")]


def test_cli_help_lists_subcommands_without_ros():
    from emotion_perception.cli import SUBCOMMANDS

    code = (
        "import sys\n"
        "sys.modules['rclpy'] = None\n"
        "from emotion_perception.cli import main\n"
        "main(['--help'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: emotion-perception")
    # Every command of the table, in its order, and nothing else.
    assert _listed_commands(result.stdout) == list(SUBCOMMANDS)


def _every_command_path() -> list[list[str]]:
    """Every runnable command as its words (['train', 'benet'], ['bench', 'make-bag'], ...)."""
    from emotion_perception.cli import build_parser

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups:
            return [prefix]
        return [path for name, sub in groups[0].choices.items() for path in walk(sub, prefix + [name])]

    return walk(build_parser(), [])


def test_every_subcommand_has_a_working_help(capsys):
    from emotion_perception.cli import SUBCOMMANDS, main

    paths = _every_command_path()
    assert {path[0] for path in paths} == set(SUBCOMMANDS)
    assert ["bench", "make-bag"] in paths and ["ship"] in paths and ["bag", "make"] not in paths
    for path in paths:
        with pytest.raises(SystemExit) as stop:
            main([*path, "--help"])
        assert stop.value.code == 0, path
        assert capsys.readouterr().out.startswith(f"usage: emotion-perception {' '.join(path)}"), path


@pytest.mark.parametrize("broken", ["emotion_perception.runtime.clii", "emotion_perception.errors"])
def test_a_missing_or_broken_subcommand_module_is_an_error_not_a_vanished_command(monkeypatch, broken):
    # A typo in the table (no such module) or a module without add_arguments/main.
    from emotion_perception import cli

    monkeypatch.setitem(cli.SUBCOMMANDS, "predict", (broken, "run a model on images"))
    with pytest.raises(ImportError, match=f"emotion-perception predict: .*{broken}"):
        cli.build_parser()


def test_a_missing_model_module_is_an_error_not_a_vanished_model(monkeypatch):
    from emotion_perception.nets import factory

    monkeypatch.setitem(factory.MODEL_MODULES, "typo", "emotion_perception.nets.typo")
    with pytest.raises(ImportError, match="model 'typo': cannot import its module emotion_perception.nets.typo"):
        factory.model_names()
    # A module that imports but never registers the name is an error too.
    monkeypatch.setitem(factory.MODEL_MODULES, "typo", "emotion_perception.nets.blocks")
    with pytest.raises(ImportError, match="does not register it"):
        factory.model_names()


# --------------------------------------------------------------------------- one vocabulary
# (README, "Command-line vocabulary"; emotion_perception/cli_options.py)


def _parse(*argv: str) -> argparse.Namespace:
    from emotion_perception.cli import build_parser

    return build_parser().parse_args(list(argv))


def _options(path: list[str]) -> dict[str, argparse.Action]:
    from emotion_perception.cli import build_parser

    parser = build_parser()
    for word in path:
        (group,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = group.choices[word]
    return {name: action for action in parser._actions for name in action.option_strings
            if action.help is not argparse.SUPPRESS}


def test_each_option_name_has_one_meaning_in_every_command():
    paths = _every_command_path()
    retired = {"--checkpoint", "--threshold", "--decode-threshold", "--top-k", "--batch", "--data-root", "--frames"}
    seen_model = []
    for path in paths:
        options = _options(path)
        # Old spellings are hidden aliases only; --frames is a count where it is shown (synth, bench bag, demo).
        assert not (retired - {"--frames"}) & set(options), (path, retired & set(options))
        if "--frames" in options:
            assert options["--frames"].type is int, path
        if "--device" in options:
            assert options["--device"].type("cuda:1") == "cuda:1", path
        if "--model" in options:
            seen_model.append(path)
            assert options["--model"].metavar == "FILE", path
        if "--preset" in options and path[0] != "train":
            assert options["--preset"].metavar == "ARCH[:PRESET]", path  # an architecture, never a file
    assert len(seen_model) >= 8  # eval benet/cahfw, ship, export, predict, track, bench model, demo


def test_device_accepts_cuda_n_everywhere_and_refuses_other_spellings():
    for argv in (["train", "benet"], ["train", "cahfw"], ["eval", "benet", "--model", "m.pt", "--data", "d"],
                 ["predict", "--model", "m.pt", "x.png"], ["bench", "model", "--model", "m.pt"]):
        assert _parse(*argv, "--device", "cuda:1").device == "cuda:1"
        with pytest.raises(SystemExit):
            _parse(*argv, "--device", "gpu0")


def test_old_option_spellings_still_work_and_say_they_are_deprecated(capsys):
    args = _parse("eval", "benet", "--checkpoint", "m.pt", "--data", "d", "--top-k", "100", "--threshold", "0.01")
    assert (args.model, args.max_people, args.detection_threshold) == ("m.pt", 100, 0.01)
    err = capsys.readouterr().err
    assert "--checkpoint is deprecated, use --model" in err and "--threshold is deprecated" in err
    args = _parse("export", "--checkpoint", "m.pt", "--out", "m.onnx", "--decode-threshold", "0.2")
    assert (args.model, args.detection_threshold) == ("m.pt", 0.2)
    assert _parse("predict", "--model", "m.pt", "--threshold", "0.5", "x.png").detection_threshold == 0.5
    assert _parse("model-info", "--batch", "3").batch_size == 3
    assert str(_parse("track", "--model", "m.pt", "--frames", "seq", "--out", "p.txt").sequence) == "seq"
    # Without the old spelling the new option's default stands.
    assert _parse("predict", "--model", "m.pt", "x.png").detection_threshold == 0.3
    assert "deprecated" in capsys.readouterr().err
