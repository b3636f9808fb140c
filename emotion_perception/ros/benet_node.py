"""benet_node: all people and their 26 EMOTIC emotions from one BENet pass per image.

    benet_node --ros-args --params-file config/benet.yaml -r image:=/camera/image_raw
"""

from __future__ import annotations

from emotion_perception.ros.perception_node import run


def main(argv: list[str] | None = None) -> int:
    return run("benet", "benet_node", argv)


if __name__ == "__main__":
    raise SystemExit(main())
