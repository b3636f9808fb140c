"""People over time: stable track ids and time-smoothed emotions (ROS-free).

The association is not ours: ByteTrack from Roboflow's ``trackers`` package
(``trackers.ByteTrackTracker``), chosen because it is maintained, depends on numpy 2 and no
torch, and is timestamp-aware: given each frame's capture time, its Kalman steps scale with the
elapsed time and a lost track ends after a budget in seconds, so a replayed bag, a live camera,
sim time and dropped frames all behave alike. This module adds what a robot needs around it:

* ids that are strings, numbered from 1 in order of confirmation and never reused during the
  life of one ``PersonTracker`` (also across ``reset``), where the library's integer ids restart;
* per-track smoothing of the category scores and VAD (``runtime.smoothing``), with the raw
  per-frame values kept beside the smoothed ones;
* a reset when time goes backwards (a bag replayed from its start), where the library would only
  skip the frame.

Data flow: predictor (PersonPrediction list, strongest first) -> ``PersonTracker.update(people,
stamp)`` -> TrackedPerson list in the same order.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from emotion_perception.runtime.smoothing import ExponentialSmoother, SmoothingSettings

if TYPE_CHECKING:
    from emotion_perception.runtime.predictor import PersonPrediction

# ByteTrack expresses its lost-track budget in frames of a 30 fps video
# (seconds = lost_track_buffer / 30); our timeout is in seconds.
_LIBRARY_REFERENCE_FPS = 30.0


@dataclass(frozen=True)
class TrackingSettings:
    # Consecutive frames a person must be seen before the track gets an id. At least 2: ByteTrack
    # confirms a track at a match, and the frame that starts a track is no match.
    confirmation_frames: int = 3
    lost_timeout_s: float = 1.0  # a track not seen for this long (capture-time seconds) ends
    minimum_iou: float = 0.1  # least overlap of a detection with a track's predicted box to match it

    def __post_init__(self) -> None:
        if self.confirmation_frames < 2:
            raise ValueError(f"confirmation frames must be >= 2, got {self.confirmation_frames}")
        if not (self.lost_timeout_s >= 0.0 and math.isfinite(self.lost_timeout_s)):
            raise ValueError(f"lost timeout must be a finite number >= 0 s, got {self.lost_timeout_s}")
        if not 0.0 < self.minimum_iou <= 1.0:
            raise ValueError(f"minimum IoU must be in (0, 1], got {self.minimum_iou}")


@dataclass(frozen=True)
class TrackedPerson:
    """One detection of one frame, with its track and its emotions over time."""

    prediction: PersonPrediction  # the frame's own detection (box, score, raw scores, raw VAD)
    track_id: str  # "" while the track is not confirmed yet
    scores: np.ndarray  # (C,) smoothed category scores (smoothing starts at confirmation; raw before)
    vad: np.ndarray  # (3,) smoothed VAD, NaN when the model has none

    @property
    def raw_scores(self) -> np.ndarray:
        return np.asarray(self.prediction.scores, dtype=np.float32)

    @property
    def raw_vad(self) -> np.ndarray:
        return np.asarray(self.prediction.vad, dtype=np.float32).reshape(3)


class _TrackEmotions:
    def __init__(self, smoothing: SmoothingSettings) -> None:
        self.scores = ExponentialSmoother(smoothing)
        self.vad = ExponentialSmoother(smoothing)


class PersonTracker:
    """Stable ids and smoothed emotions for the people a predictor finds, frame after frame."""

    def __init__(self, settings: TrackingSettings = TrackingSettings(),
                 smoothing: SmoothingSettings = SmoothingSettings()) -> None:
        self.settings = settings
        self.smoothing = smoothing
        self._next_id = 1
        self._tracker = self._new_library_tracker()
        self._public_ids: dict[int, str] = {}  # library tracker_id -> our id
        self._emotions: dict[str, _TrackEmotions] = {}
        self._last_stamp: float | None = None

    def _new_library_tracker(self):
        from trackers import ByteTrackTracker

        return ByteTrackTracker(
            lost_track_buffer=int(round(self.settings.lost_timeout_s * _LIBRARY_REFERENCE_FPS)),
            frame_rate=_LIBRARY_REFERENCE_FPS,
            minimum_consecutive_frames=self.settings.confirmation_frames,
            minimum_iou_threshold=self.settings.minimum_iou,
            # The node's detection_threshold already decided who is a person: every detection it
            # reports may start and keep a track (ByteTrack's low-score second stage stays unused).
            track_activation_threshold=0.0,
            high_conf_det_threshold=0.0,
        )

    @property
    def active_tracks(self) -> int:
        """Confirmed tracks alive now (seen within the lost timeout)."""
        return sum(1 for track in self._tracker.tracks if track.tracker_id != -1)

    def reset(self) -> None:
        """Forget every track (ids already given out are not reused)."""
        self._tracker = self._new_library_tracker()
        self._public_ids.clear()
        self._emotions.clear()
        self._last_stamp = None

    def set_smoothing(self, smoothing: SmoothingSettings) -> None:
        """New time constant from the next frame on; running estimates are kept."""
        self.smoothing = smoothing
        for emotions in self._emotions.values():
            emotions.scores.settings = emotions.vad.settings = smoothing

    def update(self, people: list[PersonPrediction], stamp: float) -> list[TrackedPerson]:
        """Associate one frame's people (taken at ``stamp``, seconds) with the tracks; same order
        as ``people``."""
        import supervision as sv

        if not math.isfinite(stamp):
            raise ValueError(f"frame stamp must be finite, got {stamp}")
        if self._last_stamp is not None and stamp < self._last_stamp:
            self.reset()  # time went backwards: a bag replayed from its start is a new scene
        self._last_stamp = stamp
        boxes = np.array([p.box for p in people], dtype=np.float32).reshape(-1, 4)
        detections = sv.Detections(
            xyxy=boxes, confidence=np.array([p.score for p in people], dtype=np.float32),
            data={"index": np.arange(len(people))},
        )
        with warnings.catch_warnings():
            # A duplicate stamp (two frames with one capture time) only skips the Kalman step.
            warnings.simplefilter("ignore", UserWarning)
            tracked = self._tracker.update(detections, timestamp=stamp)
        library_ids = {int(i): int(t) for i, t in zip(tracked.data.get("index", []), tracked.tracker_id)}
        self._forget_ended_tracks()
        out = []
        for index, person in enumerate(people):
            library_id = library_ids.get(index, -1)
            raw_scores = np.asarray(person.scores, dtype=np.float32)
            raw_vad = np.asarray(person.vad, dtype=np.float32).reshape(3)
            if library_id == -1:
                out.append(TrackedPerson(person, "", raw_scores, raw_vad))
                continue
            track_id = self._public_ids.get(library_id)
            if track_id is None:
                track_id = self._public_ids[library_id] = str(self._next_id)
                self._next_id += 1
            emotions = self._emotions.setdefault(track_id, _TrackEmotions(self.smoothing))
            out.append(TrackedPerson(person, track_id, emotions.scores.update(raw_scores, stamp),
                                     emotions.vad.update(raw_vad, stamp)))
        return out

    def _forget_ended_tracks(self) -> None:
        alive = {int(track.tracker_id) for track in self._tracker.tracks if track.tracker_id != -1}
        for library_id in [i for i in self._public_ids if i not in alive]:
            self._emotions.pop(self._public_ids.pop(library_id), None)
