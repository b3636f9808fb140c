"""Fast DDS transport profile for camera-sized images (config/fastdds_large_images.xml).

Best-effort images larger than Fast DDS's 512 KB shared-memory segment go over fragmented UDP
and are often lost whole (measured: 8 of 12 640x480 frames at 3 Hz). The shipped profile
gives shared memory a 16 MB segment. It is applied to processes we start (nodes, replays,
tests) unless the user chose a Fast DDS profile or another RMW, or set
EMOTION_PERCEPTION_DDS_PROFILE=0. It must be set before rclpy initialises.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def apply_large_image_profile(env: MutableMapping[str, str] = os.environ) -> str | None:
    """Point ``env`` at the shipped profile where nothing else is chosen; returns its path or None."""
    from emotion_perception.resources import find_resource

    if env.get("EMOTION_PERCEPTION_DDS_PROFILE", "1") == "0":
        return None
    if env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") not in ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp"):
        return None
    if any(env.get(name) for name in PROFILE_VARIABLES):
        return None
    try:
        path = str(find_resource("config/fastdds_large_images.xml"))
    except FileNotFoundError:
        return None
    # Fast DDS 3 (Kilted) reads FASTDDS_DEFAULT_PROFILES_FILE; Fast DDS 2.14 (Jazzy) reads only
    # the old FASTRTPS_DEFAULT_PROFILES_FILE (measured: with the new name alone, Jazzy lost 10 of
    # 10 512x512 frames). Both name the same file.
    for name in PROFILE_VARIABLES:
        env[name] = path
    return path
