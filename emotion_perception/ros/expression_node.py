"""expression_node: every face and its expression (7 classes, CAER-S names) from a real
face-expression model (face-api's FaceExpressionNet) behind the MTCNN face detector.

    expression_node --ros-args --params-file config/expression.yaml -r image:=/camera/image_raw
"""

from __future__ import annotations

from emotion_perception.ros.perception_node import run


def main(argv: list[str] | None = None) -> int:
    return run("expression", "expression_node", argv)


if __name__ == "__main__":
    raise SystemExit(main())
