"""The setup's venv is an ament install prefix: what `ros2 run` / `ros2 launch` look for is there,
and the node starts from lib/emotion_perception/ as `ros2 run` would start it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PREFIX = Path(sys.prefix)
PACKAGE = "emotion_perception"


def _setup_script_layout():
    import importlib.util

    spec = importlib.util.spec_from_file_location("install_ament_layout", ROOT / "scripts" / "install_ament_layout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_venv_prefix_has_the_ament_install_layout():
    for executable in ("benet_node", "cahfw_node", "expression_node"):
        path = PREFIX / "lib" / PACKAGE / executable
        assert path.is_file() and os.access(path, os.X_OK), f"{path} missing or not executable"
    share = PREFIX / "share" / PACKAGE
    for relative in ("package.xml", "launch/benet.launch.py", "launch/cahfw.launch.py", "launch/expression.launch.py",
                     "launch/emotion_perception_launch.py", "config/expression.yaml", "config/benet.yaml",
                     "config/cahfw.yaml", "config/fastdds_large_images.xml", "models/benet_lite_demo.pt",
                     "models/cahfw_small_demo.pt"):
        assert (share / relative).is_file(), f"{share / relative} missing"
    assert (PREFIX / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()


def test_ament_index_finds_the_package_in_a_fresh_interpreter_without_a_sourced_environment():
    env = {k: v for k, v in os.environ.items() if k != "AMENT_PREFIX_PATH"}
    code = ("from ament_index_python.packages import get_package_prefix, get_package_share_directory as g;"
            "print(get_package_prefix('emotion_perception')); print(g('emotion_perception'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    prefix, share = out.stdout.split()
    assert Path(prefix).resolve() == PREFIX.resolve()
    assert Path(share).resolve() == (PREFIX / "share" / PACKAGE).resolve()


def test_share_entries_link_into_the_checkout_so_edits_are_live():
    # a symlink install, as the editable package: config edited in the checkout is what runs
    assert ((PREFIX / "share" / PACKAGE / "config" / "benet.yaml").resolve()
            == (ROOT / "config" / "benet.yaml").resolve())
    assert not (PREFIX / "share" / PACKAGE / "launch").is_symlink()  # os.walk (ros2launch) must enter it
    assert (PREFIX / "lib" / PACKAGE / "benet_node").resolve() == (PREFIX / "bin" / "benet_node").resolve()


@pytest.mark.parametrize("link", [True, False])
def test_install_layout_into_another_prefix(tmp_path, link):
    module = _setup_script_layout()
    (tmp_path / "bin").mkdir()
    for script in sorted((PREFIX / "bin").glob("*_node")):
        shutil.copy2(script, tmp_path / "bin" / script.name)
    # a file CMake installed there before (package.xml) is replaced, not an error
    (tmp_path / "share" / PACKAGE).mkdir(parents=True)
    (tmp_path / "share" / PACKAGE / "package.xml").write_text("old", encoding="utf-8")
    module.install_layout(tmp_path, ROOT, link=link)
    module.install_layout(tmp_path, ROOT, link=link)  # idempotent
    share = tmp_path / "share" / PACKAGE
    assert (share / "package.xml").read_text() == (ROOT / "package.xml").read_text()
    assert (share / "launch" / "benet.launch.py").is_file()
    assert (share / "config" / "benet.yaml").is_symlink() is link
    assert os.access(tmp_path / "lib" / PACKAGE / "benet_node", os.X_OK)
    assert (tmp_path / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()


def test_install_layout_refuses_a_wrong_source(tmp_path):
    module = _setup_script_layout()
    with pytest.raises(SystemExit, match="no package.xml"):
        module.install_layout(tmp_path, tmp_path, link=True)


@pytest.mark.ros
def test_the_node_starts_from_lib_emotion_perception_as_ros2_run_starts_it(ros_env, tmp_path):
    from ros_peer import Peer

    from emotion_perception.bench.replay import NodeProcess
    from emotion_perception.bench.replay_frames import synthetic_frames

    executable = PREFIX / "lib" / PACKAGE / "benet_node"
    node = NodeProcess("benet", {"backend": "torch", "device": "cpu"}, "/layout/image", ros_env,
                       log_path=tmp_path / "node.log", executable=executable)
    peer = Peer("/layout/image")
    try:
        rgb = synthetic_frames(1, width=320, height=240, seed=3)[0][0]
        peer.wait_for_node(node, rgb)
        out = peer.send_and_wait(peer.image(rgb, 1_700_500_000 * 10**9))
        assert out.model == "benet" and out.header.frame_id == "test_camera"
    finally:
        peer.close()
        node.stop()
