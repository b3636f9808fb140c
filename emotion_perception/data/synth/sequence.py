"""Synthetic video sequences with known identities and slowly changing emotions (MOT ground truth).

Two kinds, for the two tracking paths:

* ``bodies``: the EMOTIC generator's people (``draw.Figure``, the scenes the BENet demo model was
  trained on) walking left and right at several depths in one fixed scene. People at different
  depths pass each other, the nearer one drawn over the farther one, so they cross and occlude;
  each changes its facial expression or pose (its emotion cues) a few times per sequence, and its
  labels follow ``rules.person_categories`` (face, pose and scene cues; no pair, prop or "apart"
  relations, which would change with every step).
* ``faces``: a real face (scikit-image's astronaut photo, smiling) as head-and-shoulders tiles that
  walk in lanes and pass each other, for the face detector + expression path. Its truth label is
  CAER-S "Happy" throughout (the expression does not change; flicker there is the model's own).

Files (MOTChallenge layout, frames numbered from 1):
  DIR/seqinfo.ini       [Sequence] name, imDir, frameRate, seqLength, imWidth, imHeight, imExt, labelSet
  DIR/img1/000001.jpg   the frames
  DIR/gt/gt.txt         frame, id, x, y, w, h, conf (1), class (1 = pedestrian), visibility in [0, 1]
  DIR/gt/emotions.csv   frame, id, labels (';'-separated category names, EMOTIC or CAER-S per labelSet)
"""

from __future__ import annotations

import configparser
import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion_perception.data.synth import draw
from emotion_perception.data.synth.rules import EXPRESSIONS, POSES, person_categories
from emotion_perception.data.synth.scenes import _appearance

KINDS = ("bodies", "faces")
# Scenes whose palette carries no category, so a person's labels are its own cues.
_NEUTRAL_SCENES = ("plain",)


@dataclass(frozen=True)
class SequenceSettings:
    frames: int
    people: int
    seed: int = 0
    kind: str = "bodies"  # bodies | faces
    width: int = 640
    height: int = 480
    rate_hz: float = 10.0  # frames per second of the recording (stamps are index / rate)
    speed: float = 0.12  # walking speed in image widths per second
    cue_changes: int = 2  # emotion-cue changes per person over the sequence (bodies)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"sequence kind must be one of {', '.join(KINDS)}, got '{self.kind}'")
        if self.frames < 1 or self.people < 1:
            raise ValueError(f"a sequence needs >= 1 frame and >= 1 person, got {self.frames} frames, "
                             f"{self.people} people")
        if self.rate_hz <= 0:
            raise ValueError(f"rate must be > 0 Hz, got {self.rate_hz}")


@dataclass(frozen=True)
class SequenceObject:
    """One person in one frame."""

    track_id: int  # 1..K, constant for the person over the sequence
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 pixels
    visibility: float  # fraction of the box not covered by nearer people
    labels: tuple[str, ...]


@dataclass(frozen=True)
class SequenceFrame:
    index: int  # 1-based, as in MOTChallenge
    image: np.ndarray
    objects: tuple[SequenceObject, ...]


def _box(box: np.ndarray) -> tuple[float, float, float, float]:
    """x1, y1, x2, y2 of a (4,) box as floats."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return x1, y1, x2, y2


def _walk(x0: float, velocity: float, t: float, low: float, high: float) -> float:
    """Position at time t of a walker bouncing between low and high (turning back at the edges)."""
    span = high - low
    phase = (x0 - low + velocity * t) % (2 * span)
    return low + (phase if phase <= span else 2 * span - phase)


def _visibility(boxes: list[np.ndarray], order: list[int], width: int, height: int) -> list[float]:
    """Fraction of each box (in the image) left visible by the boxes drawn after it."""
    covered = np.zeros((height, width), dtype=bool)
    visible = [0.0] * len(boxes)
    for i in reversed(order):  # nearest first
        x1, y1, x2, y2 = (int(round(v)) for v in np.clip(boxes[i], 0, [width, height, width, height]))
        area = max(0, x2 - x1) * max(0, y2 - y1)
        if area:
            visible[i] = 1.0 - covered[y1:y2, x1:x2].sum() / area
            covered[y1:y2, x1:x2] = True
    return visible


def _bodies(settings: SequenceSettings) -> Iterator[SequenceFrame]:
    rng = np.random.default_rng(settings.seed)
    width, height, k = settings.width, settings.height, settings.people
    background = np.empty((height, width, 3), dtype=np.uint8)
    scene = str(rng.choice(_NEUTRAL_SCENES))
    draw.draw_background(background, scene, rng)
    # Depth lanes spread over the floor; neighbours in depth overlap when they pass.
    depth = np.linspace(0.1, 0.6, k) + rng.uniform(-0.04, 0.04, k) if k > 1 else np.array([0.35])
    heights = height * (0.3 + 0.3 * depth)
    ground = height * (0.62 + 0.43 * depth)
    starts = rng.uniform(0.1, 0.9, k) * width
    directions = np.where(np.arange(k) % 2 == 0, 1.0, -1.0)
    speeds = settings.speed * width * rng.uniform(0.7, 1.3, k) * directions
    appearance = [_appearance(rng) for _ in range(k)]
    duration = settings.frames / settings.rate_hz
    # Each person's cue timeline: change times and the (expression, pose) held from each on.
    changes = [np.sort(rng.uniform(0.15, 0.85, settings.cue_changes)) * duration for _ in range(k)]
    cues = [[(str(rng.choice(EXPRESSIONS)), str(rng.choice(POSES))) for _ in range(settings.cue_changes + 1)]
            for _ in range(k)]
    for index in range(1, settings.frames + 1):
        t = (index - 1) / settings.rate_hz
        figures, boxes, labels = [], [], []
        for i in range(k):
            expression, pose = cues[i][int(np.searchsorted(changes[i], t, side="right"))]
            margin = 0.25 * heights[i]
            cx = _walk(starts[i], speeds[i], t, margin, width - margin)
            moving_right = _walk(starts[i], speeds[i], t + 1e-3, margin, width - margin) > cx
            figure = draw.Figure(cx=cx, foot_y=float(ground[i]), height=float(heights[i]), expression=expression,
                                 pose=pose, side=1 if moving_right else -1, **appearance[i])
            figures.append(figure)
            boxes.append(draw.figure_layout(figure).box.astype(np.float64))
            labels.append(tuple(person_categories(expression, False, pose, scene, "none", False, False, False)))
        order = sorted(range(k), key=lambda i: (ground[i], i))  # far to near
        image = background.copy()
        for i in order:
            draw.draw_figure(image, figures[i])
        visible = _visibility(boxes, order, width, height)
        yield SequenceFrame(index, image, tuple(
            SequenceObject(i + 1, _box(boxes[i]), float(visible[i]), labels[i]) for i in range(k)))


def _faces(settings: SequenceSettings) -> Iterator[SequenceFrame]:
    import cv2
    from skimage import data as skimage_data

    rng = np.random.default_rng(settings.seed)
    width, height, k = settings.width, settings.height, settings.people
    photo = skimage_data.astronaut()
    face = np.array([165.0, 55.0, 255.0, 155.0])  # her face in the photo (hand-drawn, test/data/real_faces.json)
    side = face[2] - face[0]
    cx, cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
    crop = np.round([cx - side, cy - 0.9 * side, cx + side, cy + 1.5 * side]).astype(int)
    crop = np.clip(crop, 0, [photo.shape[1], photo.shape[0]] * 2)
    tile_h = int(height / max(1.0, k * 0.75))  # lanes overlap a little in height: neighbours pass close
    scale = min(tile_h / (crop[3] - crop[1]), 0.45 * width / (crop[2] - crop[0]))
    tile = cv2.resize(photo[crop[1]:crop[3], crop[0]:crop[2]],
                      (int((crop[2] - crop[0]) * scale), int((crop[3] - crop[1]) * scale)),
                      interpolation=cv2.INTER_AREA)
    face_in_tile = (face - [crop[0], crop[1], crop[0], crop[1]]) * scale
    tops = np.linspace(0, height - tile.shape[0], k) if k > 1 else np.array([(height - tile.shape[0]) / 2])
    starts = rng.uniform(0.0, 1.0, k) * (width - tile.shape[1])
    directions = np.where(np.arange(k) % 2 == 0, 1.0, -1.0)
    speeds = settings.speed * width * rng.uniform(0.7, 1.3, k) * directions
    background = np.empty((height, width, 3), dtype=np.uint8)
    background[:] = rng.integers(30, 90, 3, dtype=np.uint8)
    for index in range(1, settings.frames + 1):
        t = (index - 1) / settings.rate_hz
        image = background.copy()
        boxes = []
        for i in range(k):  # later lanes are drawn over earlier ones
            left = int(round(_walk(starts[i], speeds[i], t, 0.0, float(width - tile.shape[1]))))
            top = int(round(tops[i]))
            image[top:top + tile.shape[0], left:left + tile.shape[1]] = tile
            boxes.append(np.array(face_in_tile) + [left, top, left, top])
        visible = _visibility(boxes, list(range(k)), width, height)
        yield SequenceFrame(index, image, tuple(
            SequenceObject(i + 1, _box(boxes[i]), float(visible[i]), ("Happy",)) for i in range(k)))


def generate_sequence(settings: SequenceSettings) -> Iterator[SequenceFrame]:
    """The frames of one sequence, in order (same settings, same frames)."""
    return _bodies(settings) if settings.kind == "bodies" else _faces(settings)


class _CaseConfigParser(configparser.ConfigParser):
    """ConfigParser that keeps the case of keys: MOTChallenge keys are camelCase."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def write_sequence(out_dir: str | Path, settings: SequenceSettings) -> Path:
    """Write a sequence in the MOTChallenge layout (module docstring); returns ``out_dir``."""
    from emotion_perception.data.imageio import write_rgb

    out = Path(out_dir)
    (out / "img1").mkdir(parents=True, exist_ok=True)
    (out / "gt").mkdir(exist_ok=True)
    with open(out / "gt" / "gt.txt", "w", encoding="utf-8") as gt, \
            open(out / "gt" / "emotions.csv", "w", encoding="utf-8", newline="") as emotions:
        writer = csv.writer(emotions)
        writer.writerow(["frame", "id", "labels"])
        for frame in generate_sequence(settings):
            write_rgb(out / "img1" / f"{frame.index:06d}.jpg", frame.image, jpeg_quality=95)
            for obj in frame.objects:
                x1, y1, x2, y2 = obj.box
                gt.write(f"{frame.index},{obj.track_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},"
                         f"1,1,{obj.visibility:.3f}\n")
                writer.writerow([frame.index, obj.track_id, ";".join(obj.labels)])
    info = _CaseConfigParser()
    info["Sequence"] = {
        "name": out.name, "imDir": "img1", "frameRate": f"{settings.rate_hz:g}", "seqLength": str(settings.frames),
        "imWidth": str(settings.width), "imHeight": str(settings.height), "imExt": ".jpg",
        "labelSet": "emotic" if settings.kind == "bodies" else "caer",
    }
    with open(out / "seqinfo.ini", "w", encoding="utf-8") as f:
        info.write(f, space_around_delimiters=False)
    return out


@dataclass(frozen=True)
class SequenceInfo:
    root: Path
    frame_paths: tuple[Path, ...]
    rate_hz: float
    label_set: str  # emotic | caer


def read_sequence_info(root: str | Path) -> SequenceInfo:
    """The frames and frame rate of a MOTChallenge-layout folder (``seqinfo.ini`` + ``img1/``).
    ``root`` may also be the image folder itself."""
    root = Path(root)
    if root.name == "img1" and not (root / "seqinfo.ini").exists():
        root = root.parent
    ini = root / "seqinfo.ini"
    if not ini.is_file():
        raise FileNotFoundError(f"{root}: no seqinfo.ini "
                                "(expected a MOTChallenge sequence folder, e.g. from synth sequence)")
    info = _CaseConfigParser()
    info.read(ini, encoding="utf-8")
    section = info["Sequence"]
    image_dir = root / section.get("imDir", "img1")
    frames = tuple(sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")))
    if not frames:
        raise FileNotFoundError(f"{image_dir}: no frames")
    return SequenceInfo(root, frames, float(section.get("frameRate", "10")), section.get("labelSet", "emotic"))


def track_emotions_path(pred_path: str | Path) -> Path:
    """The per-track emotions file written beside a tracker's MOT output: PRED.emotions.csv."""
    pred_path = Path(pred_path)
    return pred_path.with_name(pred_path.stem + ".emotions.csv")
