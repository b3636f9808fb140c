#!/usr/bin/env bash
# Add `ros2 launch` / `ros2 run` to a wheel-based venv (scripts/setup.sh without a ROS distro).
#
# The ROS 2 `launch`, `launch_ros` and `ros2cli` Python packages are not published on PyPI, so
# the setup cannot install them. With source checkouts of them (the branch of your distro),
# this script installs them into the venv, together with composition_interfaces (which
# launch_ros imports; no wheel exists either), built from ros2/rcl_interfaces with the venv's
# rosidl. Nothing of theirs is kept in this repository.
#
#   scripts/ros_launch_from_source.sh SRC      SRC/{launch,launch_ros,ros2cli,rcl_interfaces}
#   EP_VENV=.venv-kilted scripts/ros_launch_from_source.sh SRC
#
# Then: .venv/bin/ros2 launch emotion_perception benet.launch.py  (no setup.bash to source:
# the venv puts itself on AMENT_PREFIX_PATH). With a ROS distro installed, none of this is
# needed: `source /opt/ros/<distro>/setup.bash` brings ros2 launch.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EP_VENV:-.venv}"
[[ "$VENV" == /* ]] || VENV="$ROOT/$VENV"
SRC="${1:?usage: $0 SRC  (SRC holds checkouts of ros2/launch, ros2/launch_ros, ros2/ros2cli, ros2/rcl_interfaces)}"
SRC="$(cd "$SRC" && pwd)"
VPY="$VENV/bin/python"
log() { printf '[launch-from-source] %s\n' "$*" >&2; }

[[ -x "$VPY" ]] || { log "$VENV does not exist: run scripts/setup.sh first"; exit 1; }
for repo in launch launch_ros ros2cli rcl_interfaces; do
  [[ -d "$SRC/$repo" ]] || { log "$SRC/$repo is missing"; exit 1; }
done

pip_install() {
  "$VPY" -m pip install --disable-pip-version-check -q "$@" 2> >(grep -v 'is ignored: it is neither' >&2)
}

log "Python dependencies of launch and ros2cli"
pip_install -c "$ROOT/scripts/constraints.txt" osrf-pycommon argcomplete psutil packaging lark pyyaml

log "composition_interfaces (built with the venv's rosidl)"
BUILD="$ROOT/build/composition_interfaces-$(basename "$VENV")"
cmake -S "$SRC/rcl_interfaces/composition_interfaces" -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VPY" \
  -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_RPATH="$VENV/lib" > "$BUILD.configure.log" 2>&1 \
  || { tail -30 "$BUILD.configure.log" >&2; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" > "$BUILD.build.log" 2>&1 || { tail -30 "$BUILD.build.log" >&2; exit 1; }
cmake --install "$BUILD" > "$BUILD.install.log" 2>&1

log "launch, launch_xml, launch_yaml, launch_ros, ros2launch, ros2cli, ros2run, ros2pkg"
pip_install --no-deps --no-build-isolation \
  "$SRC/launch/launch" "$SRC/launch/launch_xml" "$SRC/launch/launch_yaml" \
  "$SRC/launch_ros/launch_ros" "$SRC/launch_ros/ros2launch" \
  "$SRC/ros2cli/ros2cli" "$SRC/ros2cli/ros2run" "$SRC/ros2cli/ros2pkg"

"$VENV/bin/ros2" pkg prefix emotion_perception >/dev/null
log "ok: $VENV/bin/ros2 launch emotion_perception benet.launch.py"
