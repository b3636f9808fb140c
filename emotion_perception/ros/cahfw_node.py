"""cahfw_node: faces found with dlib, each classified into 7 CAER-S emotions by CAHFW-Net.

    cahfw_node --ros-args --params-file config/cahfw.yaml -r image:=/camera/image_raw
"""

from __future__ import annotations

from emotion_perception.ros.perception_node import run


def main(argv: list[str] | None = None) -> int:
    return run("cahfw", "cahfw_node", argv)


if __name__ == "__main__":
    raise SystemExit(main())
