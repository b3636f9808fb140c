"""Shared test configuration.

ROS tests run on an isolated DDS domain, discovered on localhost only, so that parallel test
runs (and other ROS processes on the machine) never see each other's topics.
"""

from __future__ import annotations

import os
import random

import pytest
import torch

# Tests are small; one intra-op thread keeps them predictable on 2-core CI machines.
torch.set_num_threads(1)


def _pick_domain_id() -> int:
    # 0..101 are valid domain ids on Linux with Fast DDS's default port mapping.
    return random.Random(os.getpid()).randint(1, 101)


@pytest.fixture(scope="session")
def ros_env() -> dict[str, str]:
    """Environment for ROS processes started by a test (and set for this process too)."""
    env = {
        "ROS_DOMAIN_ID": os.environ.get("EP_TEST_ROS_DOMAIN_ID", str(_pick_domain_id())),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "RMW_IMPLEMENTATION": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"),
        # Nodes share the 2 CI cores with the test process: one intra-op thread each avoids the
        # OpenMP oversubscription slowdown measured in docs/BENCHMARKS.md.
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    os.environ.update(env)
    from emotion_perception.ros.dds_profile import apply_large_image_profile

    apply_large_image_profile()  # this process and the nodes it starts, as in production
    return dict(os.environ)


def pytest_collection_modifyitems(config, items):
    # rclpy is optional for the ROS-free layers: ROS tests skip cleanly where it is absent
    # (the setup script always installs it, so CI runs them).
    try:
        import rclpy  # noqa: F401
    except ImportError:
        skip = pytest.mark.skip(reason="rclpy not installed")
        for item in items:
            if "ros" in item.keywords:
                item.add_marker(skip)
