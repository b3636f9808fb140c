"""Render the documentation gallery: generated scenes with their boxes and labels drawn.

``emotion-perception synth gallery --out docs/images/synth_gallery.png`` (or :func:`write_gallery`).
EMOTIC-style scenes on top (green: annotated people with their categories; grey: people drawn
but not annotated), CAER-style images below with their class and face box.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from emotion_perception.data.categories import CAER_CATEGORIES
from emotion_perception.data.imageio import write_rgb
from emotion_perception.data.synth.scenes import (
    CaerSynthConfig,
    EmoticSynthConfig,
    generate_caer_scene,
    generate_emotic_scene,
)

SCALE = 1.5  # EMOTIC tiles are upscaled so that the label text stays readable
FONT = cv2.FONT_HERSHEY_SIMPLEX
ANNOTATED = (40, 220, 60)
UNANNOTATED = (170, 170, 170)
MAX_PEOPLE_SHOWN = 3  # scenes with more annotated people are skipped: their labels overlap


def _label_height(lines: list[str], scale: float = 0.42) -> int:
    line_h = max(cv2.getTextSize(line, FONT, scale, 1)[0][1] for line in lines) + 4
    return line_h * len(lines) + 2


def _label(canvas: np.ndarray, lines: list[str], x: int, y: int, color: tuple[int, int, int]) -> None:
    """Text lines in a filled box whose top-left is near (x, y), kept inside the canvas."""
    scale, thickness, pad = 0.42, 1, 2
    sizes = [cv2.getTextSize(line, FONT, scale, thickness)[0] for line in lines]
    width = max(w for w, _ in sizes) + 2 * pad
    line_h = max(h for _, h in sizes) + 4
    height = line_h * len(lines) + pad
    x = int(min(max(0, x), canvas.shape[1] - width))
    y = int(min(max(0, y), canvas.shape[0] - height))
    cv2.rectangle(canvas, (x, y), (x + width, y + height), color, -1)
    for i, line in enumerate(lines):
        cv2.putText(canvas, line, (x + pad, y + (i + 1) * line_h - 2), FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)


def emotic_tile(seed: int, index: int, config: EmoticSynthConfig = EmoticSynthConfig()) -> np.ndarray | None:
    """One annotated scene, or None when it has no/too many annotated people to show legibly."""
    scene = generate_emotic_scene(np.random.default_rng([seed, index]), config)
    shown = scene.annotated()
    if not shown or len(shown) > MAX_PEOPLE_SHOWN:
        return None
    tile = cv2.resize(scene.image, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_LINEAR)
    for person in scene.people:
        x1, y1, x2, y2 = (int(round(v * SCALE)) for v in person.box)
        cv2.rectangle(tile, (x1, y1), (x2, y2), ANNOTATED if person.annotated else UNANNOTATED, 2)
    for person in shown:
        x1, _, _, y2 = (int(round(v * SCALE)) for v in person.box)
        lines = person.categories + ["VAD " + " ".join(f"{v:g}" for v in person.vad)]
        # over the legs (they carry no cue), never over the face
        _label(tile, lines, x1 + 2, y2 - 2 - _label_height(lines), ANNOTATED)
    _label(tile, [f"scene: {scene.scene}"], 2, tile.shape[0] - 18, (230, 230, 230))
    return tile


def caer_tile(seed: int, label: int, config: CaerSynthConfig = CaerSynthConfig()) -> np.ndarray:
    scene = generate_caer_scene(np.random.default_rng([seed, 1000 + label]), config, label=label)
    tile = scene.image.copy()
    x1, y1, x2, y2 = (int(round(v)) for v in scene.face_box)
    cv2.rectangle(tile, (x1, y1), (x2, y2), ANNOTATED, 2)
    _label(tile, [CAER_CATEGORIES[label], f"context: {scene.context}"], 2, tile.shape[0] - 40, ANNOTATED)
    return tile


def render_gallery(seed: int = 0, columns: int = 3, rows: int = 3) -> np.ndarray:
    """(H, W, 3) uint8 RGB gallery image."""
    tiles: list[np.ndarray] = []
    index = 0
    while len(tiles) < columns * rows:
        tile = emotic_tile(seed, index)
        index += 1
        if tile is not None:
            tiles.append(tile)
    gap = 6
    tile_h, tile_w = tiles[0].shape[:2]
    width = columns * tile_w + (columns - 1) * gap
    top = np.full((rows * tile_h + (rows - 1) * gap, width, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        top[r * (tile_h + gap) : r * (tile_h + gap) + tile_h, c * (tile_w + gap) : c * (tile_w + gap) + tile_w] = tile
    caer = [caer_tile(seed, label) for label in range(len(CAER_CATEGORIES))]
    strip = np.concatenate([np.pad(t, ((0, 0), (0, gap), (0, 0)), constant_values=255) for t in caer], axis=1)
    strip = cv2.resize(strip, (width, int(round(strip.shape[0] * width / strip.shape[1]))),
                       interpolation=cv2.INTER_AREA)
    return np.concatenate([top, np.full((gap * 2, width, 3), 255, np.uint8), strip], axis=0)


def write_gallery(path: str | Path, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_rgb(path, render_gallery(seed))
    return path
