"""Latest-frame hand-over between the subscription callback and the inference worker.

A camera publishes faster than a CPU robot can infer. Queuing frames would grow latency
without bound, so the slot holds one frame: a frame that arrives while the previous one still
waits is replaced, and the replaced one is counted as dropped. Every frame therefore ends as
exactly one of processed, dropped, rejected (by conversion) or failed, which the benchmarks check.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class FrameCounters:
    received: int = 0  # frames the subscription delivered
    processed: int = 0  # frames inferred and published
    dropped: int = 0  # frames replaced by a newer one before the worker took them
    rejected: int = 0  # frames that could not be converted (bad encoding, size, ...)
    failed: int = 0  # frames whose inference raised (logged, node keeps running)


class LatestFrameSlot:
    """A one-element mailbox with drop counting; thread-safe."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._frame: Any = None
        self._closed = False
        self.counters = FrameCounters()

    def put(self, frame: Any) -> bool:
        """Offer a frame; returns True when it replaced (dropped) a waiting one."""
        with self._condition:
            self.counters.received += 1
            replaced = self._frame is not None
            if replaced:
                self.counters.dropped += 1
            self._frame = frame
            self._condition.notify()
            return replaced

    def take(self, timeout: float | None = None) -> Any:
        """Wait for a frame and take it; None on timeout or once closed."""
        with self._condition:
            if self._frame is None and not self._closed:
                self._condition.wait(timeout)
            frame, self._frame = self._frame, None
            return frame

    def count(self, outcome: str) -> None:
        """Record the outcome of a taken frame: 'processed', 'rejected' or 'failed'."""
        with self._condition:
            setattr(self.counters, outcome, getattr(self.counters, outcome) + 1)

    def snapshot(self) -> FrameCounters:
        with self._condition:
            return FrameCounters(**vars(self.counters))

    def close(self) -> None:
        """Wake a waiting ``take`` and make further ones return at once (node deactivating)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def reopen(self) -> None:
        """Accept frames again after ``close`` (node reactivated). A frame still waiting from
        before is discarded and counted as dropped, so the counters keep balancing."""
        with self._condition:
            if self._frame is not None:
                self.counters.dropped += 1
                self._frame = None
            self._closed = False
