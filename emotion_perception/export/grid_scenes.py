"""Real-looking synthetic scenes for parity checks, INT8 calibration and benchmarks.

People and backgrounds are drawn with the synthetic-data generator's primitives
(:mod:`emotion_perception.data.synth.draw`); unlike its training scenes (random depths, so
people occlude each other), people here stand on a grid, so a scene holds exactly the
requested number of fully visible people, with their person and face boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from emotion_perception.data.faces import faces_and_contexts, normalize_nchw
from emotion_perception.data.geometry import letterbox
from emotion_perception.data.synth import draw
from emotion_perception.data.synth.rules import EXPRESSIONS, POSES, SCENES
from emotion_perception.export.model_card import ModelCard


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    person_boxes: np.ndarray  # (N, 4) float32 x1y1x2y2
    face_boxes: np.ndarray  # (N, 4) float32 x1y1x2y2 (the head disc's bounding square)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return draw.hsv_color(float(rng.uniform()), float(rng.uniform(0.3, 0.8)), float(rng.uniform(0.35, 0.9)))


def draw_scene(rng: np.random.Generator, num_people: int, height: int = 480, width: int = 640) -> Scene:
    """A scene with exactly ``num_people`` non-overlapping people, one per cell of a grid."""
    if num_people < 0:
        raise ValueError(f"num_people must be >= 0, got {num_people}")
    image = np.zeros((height, width, 3), np.uint8)
    draw.draw_background(image, SCENES[int(rng.integers(len(SCENES)))], rng)
    columns = math.ceil(math.sqrt(num_people * width / height)) if num_people else 1
    rows = math.ceil(num_people / columns) if num_people else 1
    cell_w, cell_h = width / columns, height / rows
    cells = sorted(int(c) for c in rng.permutation(rows * columns)[:num_people])
    person_boxes, face_boxes = [], []
    for cell in cells:
        row, col = divmod(cell, columns)
        # A figure is about 0.45 of its height wide (arms included): fit it in the cell.
        figure_height = min(cell_h * rng.uniform(0.75, 0.92), cell_w / 0.5)
        figure = draw.Figure(
            cx=(col + 0.5) * cell_w + rng.uniform(-0.1, 0.1) * cell_w,
            foot_y=(row + 1) * cell_h - 0.04 * cell_h,
            height=figure_height,
            expression=EXPRESSIONS[int(rng.integers(len(EXPRESSIONS)))],
            tear=bool(rng.random() < 0.1),
            pose=POSES[int(rng.integers(len(POSES)))],
            side=int(rng.choice([-1, 1])),
            skin=draw.SKIN_TONES[int(rng.integers(len(draw.SKIN_TONES)))],
            shirt=_colour(rng),
            trousers=_colour(rng),
        )
        layout = draw.draw_figure(image, figure)
        cx, cy, r = layout.head
        person_boxes.append(np.clip(layout.box, 0, [width, height, width, height]).astype(np.float32))
        face_boxes.append(np.array([max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r)],
                                   np.float32))
    empty = np.zeros((0, 4), np.float32)
    return Scene(image, np.stack(person_boxes) if person_boxes else empty,
                 np.stack(face_boxes) if face_boxes else empty.copy())


def benet_scene_inputs(
    card: ModelCard, count: int, seed: int = 0, image_size: tuple[int, int] = (480, 640),
    canvas: tuple[int, int] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Letterboxed, normalised synthetic scenes (1 to 12 people) as BENet graph inputs, on the
    model's export canvas or ``canvas`` (H, W)."""
    rng = np.random.default_rng(seed)
    height, width = card.input_size if canvas is None else canvas
    inputs = []
    for _ in range(count):
        scene = draw_scene(rng, int(rng.integers(1, 13)), *image_size)
        letterboxed, params = letterbox(scene.image, (width, height), card.stride)
        feed = {"image": normalize_nchw(letterboxed)}
        if "letterbox" in card.input_names:
            feed["letterbox"] = np.array([[params.scale, params.pad_x, params.pad_y]], np.float32)
        inputs.append(feed)
    return inputs


def cahfw_scene_inputs(card: ModelCard, count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Face and context crops of synthetic people as CAHFW-Net graph inputs (batches of faces)."""
    rng = np.random.default_rng(seed)
    inputs: list[dict[str, np.ndarray]] = []
    while len(inputs) < count:
        scene = draw_scene(rng, int(rng.integers(1, 7)), 480, 640)
        faces, contexts = faces_and_contexts(scene.image, scene.face_boxes, card.input_size[0])
        inputs.append({"face": normalize_nchw(faces), "context": normalize_nchw(contexts)})
    return inputs


def scene_inputs(card: ModelCard, count: int = 16, seed: int = 0,
                 canvas: tuple[int, int] | None = None) -> list[dict[str, np.ndarray]]:
    """Graph inputs (per the model card) built from ``count`` synthetic scenes (BENet: on the
    export canvas or ``canvas``)."""
    if card.model_name == "benet":
        return benet_scene_inputs(card, count, seed, canvas=canvas)
    return cahfw_scene_inputs(card, count, seed)
