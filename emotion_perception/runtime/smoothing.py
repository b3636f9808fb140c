"""Time-constant smoothing of per-person scores (ROS-free).

An exponential moving average whose weight comes from the time between two observations, not
from their count: ``s += (1 - exp(-dt / tau)) * (x - s)``. A frame that is dropped, or a camera
that slows down, therefore does not change how fast the estimate follows the person: after a gap
``dt`` the old estimate keeps the weight ``exp(-dt / tau)`` whatever happened in between. This is
the discretisation of the first-order low-pass ``tau * ds/dt = x - s`` for an input held between
samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SmoothingSettings:
    time_constant_s: float = 0.5  # tau in seconds; 0 turns smoothing off (the raw values pass through)

    def __post_init__(self) -> None:
        if not (self.time_constant_s >= 0.0 and math.isfinite(self.time_constant_s)):
            raise ValueError(f"smoothing time constant must be a finite number >= 0 s, got {self.time_constant_s}")


class ExponentialSmoother:
    """One person's smoothed vector (category scores, or VAD). NaN entries (a model without VAD)
    stay NaN and never poison the estimate of the others."""

    def __init__(self, settings: SmoothingSettings) -> None:
        self.settings = settings
        self._value: np.ndarray | None = None
        self._stamp: float | None = None

    @property
    def value(self) -> np.ndarray | None:
        return None if self._value is None else self._value.copy()

    def update(self, observation: np.ndarray, stamp: float) -> np.ndarray:
        """Blend ``observation`` taken at ``stamp`` (seconds) into the estimate; returns the estimate."""
        observation = np.asarray(observation, dtype=np.float64)
        tau = self.settings.time_constant_s
        if self._value is None or self._stamp is None or tau == 0.0 or self._value.shape != observation.shape:
            self._value, self._stamp = observation.copy(), stamp
            return self._value.astype(np.float32)
        elapsed = stamp - self._stamp
        if elapsed < 0.0:
            # Time went backwards (a bag restarted): nothing before it describes this moment.
            self._value, self._stamp = observation.copy(), stamp
            return self._value.astype(np.float32)
        weight_new = 1.0 - math.exp(-elapsed / tau)
        blended = self._value + weight_new * (observation - self._value)
        # An entry unknown before (NaN) takes the new observation as it is.
        self._value = np.where(np.isnan(self._value), observation, blended)
        self._stamp = stamp
        return self._value.astype(np.float32)
