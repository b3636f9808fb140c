"""A cv_bridge that imports but cannot convert: what an apt cv_bridge built for numpy 1 does
beside a numpy 2 (its compiled boost module fails to load at the first conversion).

Only on the PYTHONPATH of node processes started by test_lifecycle.py; never installed.
"""


class CvBridgeError(TypeError):
    pass


class CvBridge:
    def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
        # As the real one: the compiled module is imported lazily, inside the conversion.
        from cv_bridge.boost.cv_bridge_boost import cvtColor2  # noqa: F401  (does not exist)

    def compressed_imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
        from cv_bridge.boost.cv_bridge_boost import cvtColor2  # noqa: F401
