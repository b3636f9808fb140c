#!/usr/bin/env bash
# One-environment setup: creates .venv/ at the repository root with everything the project needs.
#
#   * a ROS 2 distro sourced (ROS_DISTRO set, /opt/ros/<distro>): the venv sees the distro's
#     Python packages (--system-site-packages) and the messages are built against it;
#   * no ROS: ROS 2 comes from PyPI wheels into the venv, which then is a ROS prefix.
#     ROS_DISTRO=jazzy (default, the LTS) or ROS_DISTRO=kilted picks the wheel set.
#
# Then: Python dependencies, the messages (rosidl, built with CMake into the venv prefix), the
# emotion_perception package itself (editable), and the layout an ament install has in its
# prefix (lib/emotion_perception/<executables>, share/emotion_perception/{launch,config,models},
# the ament index marker) so that `ros2 run` / `ros2 launch` find the package. Idempotent: a
# stamp records the hash of every input, a second run with nothing changed returns in about a
# second.
#
# Usage: scripts/setup.sh [--force]        (EP_VENV=DIR: another venv than .venv/)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EP_VENV:-.venv}"
[[ "$VENV" == /* ]] || VENV="$ROOT/$VENV"
PY="${PYTHON:-python3}"
STAMP="$VENV/.setup-stamp"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { printf '[setup] %s\n' "$*" >&2; }

WHEEL_DISTROS=(jazzy kilted)
if [[ -n "${ROS_DISTRO:-}" && -d "/opt/ros/${ROS_DISTRO}" ]]; then
  MODE="system-ros-${ROS_DISTRO}"
else
  DISTRO="${ROS_DISTRO:-jazzy}"
  if [[ ! " ${WHEEL_DISTROS[*]} " == *" $DISTRO "* ]]; then
    log "ROS_DISTRO=$DISTRO: no /opt/ros/$DISTRO is installed, and the PyPI wheel sets here are: ${WHEEL_DISTROS[*]}"
    exit 1
  fi
  MODE="ros-wheels-$DISTRO"
fi

# Everything that changes what this script would produce goes into the stamp.
inputs_hash() {
  (cd "$ROOT" && cat scripts/setup.sh scripts/requirements.txt scripts/requirements-nodeps.txt scripts/constraints.txt scripts/ros-*-build-packages.txt scripts/install_ament_layout.py emotion_perception/export/external_models.py setup.py package.xml CMakeLists.txt msg/*.msg
   ls -R launch config models; echo "$MODE"; "$PY" --version) | sha256sum | cut -d' ' -f1
}
WANT="$(inputs_hash)"

# A venv holds one ROS distro: switching (jazzy <-> kilted <-> a sourced distro) starts afresh
# rather than mixing two wheel sets in one prefix.
if [[ -x "$VENV/bin/python" && "$(cat "$VENV/.setup-mode" 2>/dev/null)" != "$MODE" ]]; then
  log "$VENV was set up for $(cat "$VENV/.setup-mode" 2>/dev/null || echo 'an older setup'), now $MODE: recreating it"
  rm -rf "$VENV"
fi

if [[ $FORCE == 0 && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] \
   && "$VENV/bin/python" -c "import emotion_perception.msg, torch" 2>/dev/null \
   && [[ -x "$VENV/lib/emotion_perception/benet_node" ]] \
   && [[ -f "$VENV/share/emotion_perception/external_models/external_models.json" ]]; then
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
echo "$MODE" > "$VENV/.setup-mode"
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
if [[ $MODE == ros-wheels-* ]]; then
  # The build wheels' (ament_cmake*, rosidl*, CMake modules) dependency metadata is incomplete:
  # name them all.
  mapfile -t ROS_BUILD_PKGS < <(grep -vE '^[[:space:]]*(#|$)' "$ROOT/scripts/ros-$DISTRO-build-packages.txt")
  log "installing ROS 2 ${DISTRO^} wheels (${#ROS_BUILD_PKGS[@]} build packages)"
  "${PIP[@]}" "ros-$DISTRO-rclpy[fastrtps]" "ros-$DISTRO-std-msgs" "ros-$DISTRO-sensor-msgs" \
    "ros-$DISTRO-diagnostic-msgs" "ros-$DISTRO-lifecycle-msgs" "ros-$DISTRO-ament-package" \
    "ros-$DISTRO-ament-index-python" colcon-common-extensions "${ROS_BUILD_PKGS[@]}"
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
if [[ $MODE == ros-wheels-* ]]; then
  # The pinned set is what CI runs.
  CONSTRAINTS=(-c "$ROOT/scripts/constraints.txt")
else
  # With a distro, its own numpy must win: the distro's compiled Python modules (cv_bridge,
  # the message packages) are built against it, and a numpy 2 pulled in beside an apt
  # cv_bridge built for numpy 1 breaks it at the first frame. Pin numpy to the distro's, and
  # keep OpenCV at a release that still supports numpy 1 when the distro's numpy is 1.x.
  SYSTEM_CONSTRAINTS="$VENV/.system-constraints.txt"
  : > "$SYSTEM_CONSTRAINTS"
  SYSTEM_NUMPY="$("$VPY" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)"
  if [[ -n "$SYSTEM_NUMPY" ]]; then
    echo "numpy==$SYSTEM_NUMPY" >> "$SYSTEM_CONSTRAINTS"
    [[ "$SYSTEM_NUMPY" == 1.* ]] && echo "opencv-python-headless<4.11" >> "$SYSTEM_CONSTRAINTS"
    log "keeping the distro's numpy $SYSTEM_NUMPY ($SYSTEM_CONSTRAINTS)"
  fi
  CONSTRAINTS=(-c "$SYSTEM_CONSTRAINTS")
fi
"${PIP[@]}" -r "$ROOT/scripts/requirements.txt" "${CONSTRAINTS[@]}"
# Packages whose declared opencv-python would add a second OpenCV (their other dependencies are in
# requirements.txt): scripts/requirements-nodeps.txt says which and why.
"${PIP[@]}" --no-deps -r "$ROOT/scripts/requirements-nodeps.txt" "${CONSTRAINTS[@]}"

# --- 5. messages -----------------------------------------------------------------------------
# Built with CMake straight into the venv prefix: libraries land in .venv/lib (on the library
# path: RPATH below, and the wheels' bootstrapper), the generated Python in site-packages, so
# `import emotion_perception.msg` works with no environment variables. `colcon build` works
# too (README) but would add a second install tree to source.
log "building messages"
# One build tree per venv: CMake caches the ROS prefix it found.
BUILD="$ROOT/build/msgs-$(basename "$VENV")"
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

# --- 7. the ament install layout in the venv prefix ------------------------------------------
# What `colcon build` / CMakeLists.txt install, in the form of a symlink install, so that edits
# in the checkout are live (as the editable package is): `ros2 run emotion_perception
# benet_node` looks in lib/<package>/, `ros2 launch` and FindPackageShare in share/<package>/,
# and both find the package through the ament index marker.
"$VPY" "$ROOT/scripts/install_ament_layout.py" --prefix "$VENV" --source "$ROOT" --link
# The venv is a ROS prefix (wheels) or an overlay on the sourced distro: every Python started
# from it (the nodes, a `ros2` CLI installed into it, launch) puts it first on AMENT_PREFIX_PATH
# unless it already is there, so no setup.bash must be sourced. (The wheels' bootstrapper does
# the same for the library path.)
echo "import os, sys; p = os.environ.get('AMENT_PREFIX_PATH', ''); sys.prefix in p.split(os.pathsep) or os.environ.__setitem__('AMENT_PREFIX_PATH', os.pathsep.join(filter(None, [sys.prefix, p])))" \
  > "$SITE/emotion_perception_ament_prefix.pth"
# For shells and tools outside the venv (a distro's ros2 CLI): the counterpart of a colcon
# workspace's install/setup.bash.
cat > "$VENV/setup.bash" <<SETUP_BASH
# source $VENV/setup.bash: this venv first on PATH, and on AMENT_PREFIX_PATH for ros2 run / launch
source "$VENV/bin/activate"
case ":\${AMENT_PREFIX_PATH:-}:" in *":$VENV:"*) ;; *) export AMENT_PREFIX_PATH="$VENV\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}" ;; esac
SETUP_BASH

# --- 8. third-party models with real weights --------------------------------------------------
# face-api's face-expression model (npm) and MTCNN (PyPI facenet-pytorch), pinned by version
# and SHA-256, converted once into the venv's share/ (emotion_perception/export/external_models.py).
# Without npm or registry access the rest still works (BENet, CAHFW-Net with dlib faces): a
# warning says what is missing; CI must have them.
log "third-party models"
if ! "$VENV/bin/emotion-perception" models fetch; then
  if [[ -n "${CI:-}" ]]; then log "third-party models could not be obtained (see above)"; exit 1; fi
  log "WARNING: third-party models not installed: the expression model and MTCNN are unavailable until" \
      "'emotion-perception models fetch' succeeds (docs/DEPLOYMENT.md, offline install)"
fi

# --- 9. check --------------------------------------------------------------------------------
MODE="$MODE" "$VPY" - <<'EOF'
import emotion_perception, torch, rclpy
from emotion_perception.msg import PersonEmotion, PersonEmotions
from rclpy.serialization import serialize_message, deserialize_message
msg = PersonEmotions(model="check", people=[PersonEmotion(id="0", score=1.0)])
assert deserialize_message(serialize_message(msg), PersonEmotions).model == "check"
from ament_index_python.packages import get_package_prefix, get_package_share_directory
import os
share = get_package_share_directory("emotion_perception")
assert os.path.isfile(os.path.join(share, "launch", "benet.launch.py")), share
assert os.access(os.path.join(get_package_prefix("emotion_perception"), "lib", "emotion_perception", "benet_node"), os.X_OK)
print(f"[setup] ok: {os.environ['MODE']}, torch {torch.__version__}, "
      f"messages import from {emotion_perception.__path__[-1]}, share {share}")
EOF
echo "$WANT" > "$STAMP"
log "done in $(( $(date +%s) - START )) s"
