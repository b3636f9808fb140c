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
# Distros whose Fast DDS is 2.x (reads only the FASTRTPS_ name).
FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")


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
    env[profile_variable(env)] = path
    return path


def profile_variable(env: MutableMapping[str, str] = os.environ) -> str:
    """The one variable the installed Fast DDS reads.

    Fast DDS 2.14 (Jazzy) reads only FASTRTPS_DEFAULT_PROFILES_FILE (measured: with the new name
    alone, Jazzy lost 10 of 10 512x512 frames). Fast DDS 3 (Kilted) reads
    FASTDDS_DEFAULT_PROFILES_FILE, and its rmw loads a FASTRTPS_DEFAULT_PROFILES_FILE too, so
    setting both loads the file twice ("There is other transport with the same id" errors at every
    start). Wheels name their Fast DDS; a sourced distro names itself in ROS_DISTRO.
    """
    from importlib import metadata

    for distribution, variable in (("ros-fastdds", PROFILE_VARIABLES[0]), ("ros-fastrtps", PROFILE_VARIABLES[1])):
        try:
            metadata.version(distribution)
            return variable
        except metadata.PackageNotFoundError:
            pass
    if env.get("ROS_DISTRO", "") in FAST_DDS_2_DISTROS:
        return PROFILE_VARIABLES[1]
    return PROFILE_VARIABLES[0]
