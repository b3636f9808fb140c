"""Where the package's shipped files (config/, models/, launch/) are on this machine.

Three installs are supported, tried in this order:
  1. a ROS install (colcon / apt): the ament index gives the package's share directory;
  2. a source checkout (editable pip install, or running from the repository);
  3. a non-editable pip install: setup.py's data_files put them under <prefix>/share/emotion_perception.
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "emotion_perception"
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_directories() -> list[Path]:
    """Candidate share directories, most specific first (existing ones only)."""
    candidates: list[Path] = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            candidates.append(Path(get_package_share_directory(PACKAGE)))
        except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset (no ROS sourced)
            pass
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
