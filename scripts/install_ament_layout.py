#!/usr/bin/env python3
"""Give a prefix the layout an ament (colcon) install of emotion_perception has.

    install_ament_layout.py --prefix .venv --source . [--link]

A ROS 2 tool finds a package through its install prefix, not through Python:

- the ament index marker ``share/ament_index/resource_index/packages/emotion_perception``
  (``ros2 pkg``, ``FindPackageShare``, ``get_package_share_directory``);
- ``lib/emotion_perception/<executable>`` (``ros2 run``, ``launch_ros.actions.Node``);
- ``share/emotion_perception/{package.xml,launch,config,models}`` (``ros2 launch``, the nodes'
  default parameters and demo models).

CMakeLists.txt installs exactly this for ``colcon build``. ``scripts/setup.sh`` builds only the
messages with CMake and installs the Python package editable, so it calls this script to add
the rest. ``--link`` makes symlinks to the source checkout's files (a symlink install: edits are
live, as with the editable package; a new file needs the setup again, as with colcon);
without it the files are copied. The executables are the
package's ``*_node`` console scripts, which pip wrote into ``<prefix>/bin`` with this prefix's
interpreter in their shebang: they run without a sourced environment.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

PACKAGE = "emotion_perception"
SHARE_ITEMS = ("package.xml", "launch", "config", "models")


def node_executables(prefix: Path) -> list[Path]:
    """The package's ROS executables: its ``*_node`` console scripts in ``prefix/bin``."""
    try:
        entry_points = metadata.distribution(PACKAGE).entry_points
    except metadata.PackageNotFoundError:
        raise SystemExit(f"{PACKAGE} is not installed in this interpreter ({sys.executable}): "
                         "pip install it first") from None
    names = sorted(ep.name for ep in entry_points if ep.group == "console_scripts" and ep.name.endswith("_node"))
    scripts = [prefix / "bin" / name for name in names]
    missing = [str(s) for s in scripts if not s.is_file()]
    if not names or missing:
        raise SystemExit(f"console scripts not found in {prefix / 'bin'}: {missing or 'no *_node entry points'}")
    return scripts


def _replace(target: Path, make) -> None:
    # Replace whatever is there (a file CMake installed, an old link, a directory) atomically
    # enough for a setup script: remove, then create.
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    make(target)


def install_layout(prefix: Path, source: Path, link: bool) -> list[Path]:
    """Create the layout under ``prefix``; returns the paths it wrote."""
    prefix, source = prefix.resolve(), source.resolve()
    if not (source / "package.xml").is_file():
        raise SystemExit(f"{source} is not the emotion_perception source (no package.xml)")
    written: list[Path] = []

    share = prefix / "share" / PACKAGE
    for item in SHARE_ITEMS:
        origin = source / item
        # Directories are real and files are links (as colcon's --symlink-install): ros2launch
        # and ament look files up with os.walk, which does not enter symlinked directories.
        files = sorted(p for p in origin.rglob("*") if p.is_file() and "__pycache__" not in p.parts) \
            if origin.is_dir() else [origin]
        if origin.is_dir():
            _replace(share / item, lambda t: t.mkdir())
        for file in files:
            target = share / file.relative_to(source)
            if link:
                _replace(target, lambda t, o=file: t.symlink_to(o))
            else:
                _replace(target, lambda t, o=file: shutil.copy2(o, t))
            written.append(target)

    libexec = prefix / "lib" / PACKAGE
    for script in node_executables(prefix):
        target = libexec / script.name
        # A relative link keeps working when the prefix is moved together with its bin/.
        _replace(target, lambda t, s=script: t.symlink_to(os.path.relpath(s, t.parent)))
        written.append(target)

    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE
    marker.parent.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        marker.write_text("", encoding="utf-8")  # ament markers are empty files
    written.append(marker)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix),
                        help="install prefix (default: this interpreter's)")
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[1], help="the source checkout")
    parser.add_argument("--link", action="store_true", help="symlink share/ items into the checkout instead of copying")
    args = parser.parse_args(argv)
    written = install_layout(args.prefix, args.source, args.link)
    print(f"[setup] ament layout in {args.prefix}: {len(written)} entries "
          f"({'symlinks into ' + str(args.source) if args.link else 'copies'})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
