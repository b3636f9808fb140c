#!/usr/bin/env bash
# One-environment setup: creates .venv/ at the repository root with everything the project needs.
#
#   * a ROS 2 distro sourced (ROS_DISTRO set, /opt/ros/<distro>): the venv sees the distro's
#     Python packages (--system-site-packages) and the messages are built against it;
#   * no ROS: ROS 2 Kilted comes from PyPI wheels into the venv, which then is a ROS prefix.
#
# Then: Python dependencies, the messages (rosidl, built with CMake into the venv prefix), and
# the emotion_perception package itself (editable). Idempotent: a stamp records the hash of
# every input, a second run with nothing changed returns in about a second.
#
# Usage: scripts/setup.sh [--force]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
STAMP="$VENV/.setup-stamp"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { printf '[setup] %s\n' "$*" >&2; }

if [[ -n "${ROS_DISTRO:-}" && -d "/opt/ros/${ROS_DISTRO}" ]]; then
  MODE="system-ros-${ROS_DISTRO}"
else
  MODE="ros-wheels-kilted"
fi

# Everything that changes what this script would produce goes into the stamp.
inputs_hash() {
  (cd "$ROOT" && cat scripts/setup.sh scripts/requirements.txt scripts/constraints.txt scripts/ros-kilted-build-packages.txt setup.py package.xml CMakeLists.txt msg/*.msg
   echo "$MODE"; "$PY" --version) | sha256sum | cut -d' ' -f1
}
WANT="$(inputs_hash)"

if [[ $FORCE == 0 && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] \
   && "$VENV/bin/python" -c "import emotion_perception.msg, torch" 2>/dev/null; then
  exit 0
fi

START=$(date +%s)
log "mode: $MODE"

# --- 1. the virtual environment -------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV"
  if [[ $MODE == system-ros-* ]]; then
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
VPY="$VENV/bin/python"
# pip's "Location ... is ignored" lines come from this machine's index configuration, not from
# us: drop them so real warnings stay visible.
pip_install() {
  "$VPY" -m pip install --disable-pip-version-check -q "$@" 2> >(grep -v 'is ignored: it is neither' >&2)
}
PIP=(pip_install)
"${PIP[@]}" --upgrade "pip<26" "setuptools<80" wheel

# --- 2. torch first, pinned, so that nothing later pulls another build ------------------------
# TORCH_SPEC overrides (e.g. a CUDA build on a robot); the default is the build this project is
# tested with.
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if ! "$VPY" -c "import torch" 2>/dev/null; then
  log "installing $TORCH_SPEC"
  "${PIP[@]}" "$TORCH_SPEC"
fi

# --- 3. ROS 2 from wheels (only without a sourced distro) ------------------------------------
if [[ $MODE == ros-wheels-kilted ]]; then
  # The ament_cmake*/rosidl* wheels' dependency metadata is incomplete: name them all.
  mapfile -t ROS_BUILD_PKGS < <(grep -E '^ros-kilted-(ament-cmake|rosidl)' "$ROOT/scripts/ros-kilted-build-packages.txt")
  log "installing ROS 2 Kilted wheels (${#ROS_BUILD_PKGS[@]} build packages)"
  "${PIP[@]}" "ros-kilted-rclpy[fastrtps]" ros-kilted-std-msgs ros-kilted-sensor-msgs \
    ros-kilted-diagnostic-msgs ros-kilted-lifecycle-msgs ros-kilted-ament-package \
    colcon-common-extensions "${ROS_BUILD_PKGS[@]}"
  # The wheels' exported CMake targets hard-code the include directories of the machine they
  # were built on; point them at this interpreter's headers and this venv's numpy.
  PYINC="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  NPINC="$("$VPY" -c 'import numpy; print(numpy.get_include())')"
  [[ -f "$PYINC/Python.h" ]] || { log "Python headers not found at $PYINC (install python3-dev)"; exit 1; }
  # (grep finds nothing once the paths are rewritten: that is not an error)
  { grep -rlF '/opt/python/cp311-cp311/' "$VENV/share" --include='*.cmake' || true; } \
    | xargs -r sed -i -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" \
                      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g"
  export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
fi

# --- 4. Python dependencies ------------------------------------------------------------------
log "installing Python dependencies"
CONSTRAINTS=()
# The pinned set is what CI runs; with a distro, its own numpy etc. must win.
[[ $MODE == ros-wheels-kilted ]] && CONSTRAINTS=(-c "$ROOT/scripts/constraints.txt")
"${PIP[@]}" -r "$ROOT/scripts/requirements.txt" "${CONSTRAINTS[@]}"

# --- 5. messages -----------------------------------------------------------------------------
# Built with CMake straight into the venv prefix: libraries land in .venv/lib (on the library
# path: RPATH below, and the wheels' bootstrapper), the generated Python in site-packages, so
# `import emotion_perception.msg` works with no environment variables. `colcon build` works
# too (README) but would add a second install tree to source.
log "building messages"
BUILD="$ROOT/build/msgs"
mkdir -p "$BUILD"
SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_BUILD_TYPE=Release \
  -DEMOTION_PERCEPTION_INSTALL_PYTHON=OFF -DBUILD_TESTING=OFF \
  -DPython3_EXECUTABLE="$VPY" -DCMAKE_INSTALL_RPATH="$VENV/lib" > "$BUILD/configure.log" 2>&1 \
  || { log "CMake configure failed, see $BUILD/configure.log"; tail -30 "$BUILD/configure.log" >&2; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" > "$BUILD/build.log" 2>&1 \
  || { log "message build failed, see $BUILD/build.log"; tail -30 "$BUILD/build.log" >&2; exit 1; }
cmake --install "$BUILD" > "$BUILD/install.log" 2>&1
# rosidl installs an empty emotion_perception/__init__.py and an egg-info beside the messages.
# Without them that directory is a plain portion of the package that the editable source
# package (whose __init__ extends __path__) merges in; with them it would shadow the source.
rm -f "$SITE/emotion_perception/__init__.py"
rm -rf "$SITE"/emotion_perception-*.egg-info

# --- 6. the package itself -------------------------------------------------------------------
# compat mode puts the repository root on sys.path after site-packages, so Python finds the
# source package (a regular package) and merges the messages' directory into it.
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT" --config-settings editable_mode=compat

# --- 7. check --------------------------------------------------------------------------------
"$VPY" - <<'EOF'
import emotion_perception, torch, rclpy
from emotion_perception.msg import PersonEmotion, PersonEmotions
from rclpy.serialization import serialize_message, deserialize_message
msg = PersonEmotions(model="check", people=[PersonEmotion(id="0", score=1.0)])
assert deserialize_message(serialize_message(msg), PersonEmotions).model == "check"
print(f"[setup] ok: torch {torch.__version__}, messages import from {emotion_perception.__path__[-1]}")
EOF
echo "$WANT" > "$STAMP"
log "done in $(( $(date +%s) - START )) s"
