"""The nodes' health, as /diagnostics reports it (ROS-free, so it is tested without rclpy).

A node that fails every frame must not say OK, and one that is paused on purpose (lifecycle
inactive) must not say ERROR. The level follows, in this order: the lifecycle state, the
outcomes of the last frames the worker finished, then input and drop rates.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

# diagnostic_msgs/DiagnosticStatus levels
OK, WARN, ERROR = 0, 1, 2
# Frames that must all have failed before the node reports ERROR (one bad frame is a WARN).
ALL_FAILED_MIN_FRAMES = 3


@dataclass(frozen=True)
class Health:
    level: int
    message: str


@dataclass(frozen=True)
class OutcomeSummary:
    frames: int  # frames in the window
    failures: int  # of which failed
    last_failure: str | None  # "<ExceptionType>: <text>" of the newest failure in the window


class RecentOutcomes:
    """Whether each of the last ``window`` finished frames was processed or failed; thread-safe."""

    def __init__(self, window: int = 20) -> None:
        self._outcomes: deque[str | None] = deque(maxlen=window)  # None: processed; text: failure
        self._lock = threading.Lock()

    def record_processed(self) -> None:
        with self._lock:
            self._outcomes.append(None)

    def record_failure(self, reason: str) -> None:
        with self._lock:
            self._outcomes.append(reason)

    def clear(self) -> None:
        with self._lock:
            self._outcomes.clear()

    def summary(self) -> OutcomeSummary:
        with self._lock:
            outcomes = list(self._outcomes)
        failures = [reason for reason in outcomes if reason is not None]
        return OutcomeSummary(len(outcomes), len(failures), failures[-1] if failures else None)


def assess(state: str, configure_error: str | None, outcomes: OutcomeSummary,
           received: int, dropped: int) -> Health:
    """The node's health. ``received`` / ``dropped``: frames since the previous report."""
    if state != "active":
        if configure_error:
            return Health(ERROR, f"{state}: configure failed: {configure_error}")
        return Health(OK, f"{state}: not processing (lifecycle)")
    if outcomes.frames >= ALL_FAILED_MIN_FRAMES and outcomes.failures == outcomes.frames:
        return Health(ERROR, f"every one of the last {outcomes.frames} frames failed: {outcomes.last_failure}")
    if outcomes.failures:
        return Health(WARN, f"{outcomes.failures} of the last {outcomes.frames} frames failed: {outcomes.last_failure}")
    if received == 0:
        return Health(WARN, "no input images")
    drop_share = dropped / received
    if drop_share > 0.5:
        return Health(WARN, f"dropping {drop_share:.0%} of input frames")
    return Health(OK, "running")
