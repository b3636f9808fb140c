"""Keeping dataset paths inside their dataset.

Annotation files name images by relative paths (EMOTIC ``folder`` / ``filename``, HECO
``Image``); a value such as ``../../home/user/secret.png`` or an absolute path would make a
reader load pixels from anywhere on the machine into training. And a symlink inside a dataset
can point anywhere. Readers therefore (1) refuse annotation values that are absolute or climb
above their folder (``escape_problem``: the reader raises an AnnotationError naming the field), and (2) resolve
every image path and skip, reporting it, an image that resolves outside the resolved image
folder (``resolves_inside``). The folder itself is resolved first, so a dataset folder that is
a symlink to another disk is fine; links inside it that leave it are not.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

OUTSIDE_ROOT = "image resolves outside the dataset's image folder (a symlink leaving it)"


def escape_problem(relative: str) -> str | None:
    """Why joining ``relative`` to a folder could leave that folder, or None when it cannot.

    Both separators count (a Windows-made annotation file may use backslashes) and so does a
    drive letter; ``..`` is allowed only while it stays below the folder (``a/../b``).
    """
    if PurePosixPath(relative).is_absolute() or PureWindowsPath(relative).is_absolute() \
            or PureWindowsPath(relative).drive or relative.startswith(("\\", "/")):
        return f"{relative!r} is an absolute path (expected a path relative to the dataset)"
    depth = 0
    for part in relative.replace("\\", "/").split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return f"{relative!r} climbs out of the dataset folder"
        elif part not in ("", "."):
            depth += 1
    return None


def resolves_inside(path: Path, folder_resolved: Path) -> bool:
    """Whether ``path``, with every symlink followed, is ``folder_resolved`` or below it."""
    try:
        resolved = Path(os.path.realpath(path))
    except (OSError, ValueError):
        return False
    return resolved == folder_resolved or folder_resolved in resolved.parents
