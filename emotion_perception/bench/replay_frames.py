"""Synthetic camera streams for replays, with the truth of every frame.

Two sources, for two questions:
  * people=None: the training generator's scenes (1-8 people, occlusion, labelled emotions),
    what a demo or an accuracy check wants;
  * people=N: exactly N fully visible people on a grid (export.grid_scenes.draw_scene, the scenes
    `bench model` uses too), what a cost-versus-people comparison wants.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np


def synthetic_frames(count: int, people: int | None = None, width: int = 640, height: int = 480,
                     seed: int = 0) -> tuple[list[np.ndarray], list[dict]]:
    """``count`` RGB frames and per frame {"boxes": [[x1, y1, x2, y2], ...], "labels": [[names], ...]}
    (labels are empty lists for grid scenes, which carry no emotion truth)."""
    rng = np.random.default_rng(seed)
    frames, notes = [], []
    if people is not None:
        from emotion_perception.export.grid_scenes import draw_scene

        if people < 1:
            raise ValueError(f"people must be >= 1, got {people}")
        for _ in range(count):
            scene = draw_scene(rng, people, height=height, width=width)
            frames.append(scene.image)
            notes.append({"boxes": np.round(scene.person_boxes, 1).tolist(), "labels": [[] for _ in range(people)]})
        return frames, notes

    from emotion_perception.data.synth.scenes import EmoticSynthConfig, generate_emotic_scene

    config = replace(EmoticSynthConfig(), width=width, height=height, unannotated_prob=0.0)
    for _ in range(count):
        emotic_scene = generate_emotic_scene(rng, config)
        frames.append(emotic_scene.image)
        notes.append({
            "boxes": [np.round(p.box, 1).tolist() for p in emotic_scene.people],
            "labels": [list(p.categories) for p in emotic_scene.people],
        })
    return frames, notes


def photo_collage_frames(count: int, faces: int, photo: np.ndarray, face_box: tuple[float, float, float, float],
                         width: int = 640, height: int = 480, seed: int = 0) -> tuple[list[np.ndarray], list[dict]]:
    """Frames holding ``faces`` copies of a real photo's head region on a grid, for comparisons
    where a face detector must find real faces (dlib does not find the synthetic ones).

    photo: (H, W, 3) uint8 RGB with one face at ``face_box`` (x1, y1, x2, y2 pixels); each tile
    is the face box enlarged to a head-and-shoulders crop, mirrored at random.
    """
    import cv2

    if faces < 1:
        raise ValueError(f"faces must be >= 1, got {faces}")
    x1, y1, x2, y2 = face_box
    side = max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    crop_box = np.array([cx - side, cy - 0.9 * side, cx + side, cy + 1.5 * side])
    crop_box = np.clip(np.round(crop_box), 0,
                       [photo.shape[1], photo.shape[0], photo.shape[1], photo.shape[0]]).astype(int)
    crop = photo[crop_box[1]:crop_box[3], crop_box[0]:crop_box[2]]
    face_in_crop = np.array([x1 - crop_box[0], y1 - crop_box[1], x2 - crop_box[0], y2 - crop_box[1]], np.float64)
    columns = int(np.ceil(np.sqrt(faces * width / height)))
    rows = int(np.ceil(faces / columns))
    tile_w, tile_h = width // columns, height // rows
    scale = min(tile_w / crop.shape[1], tile_h / crop.shape[0])
    tile = cv2.resize(crop, (max(1, int(crop.shape[1] * scale)), max(1, int(crop.shape[0] * scale))),
                      interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(seed)
    frames, notes = [], []
    for _ in range(count):
        frame = np.full((height, width, 3), 40, np.uint8)
        frame[:] = rng.integers(30, 90, 3, dtype=np.uint8)
        boxes = []
        for index in range(faces):
            row, column = divmod(index, columns)
            left = column * tile_w + (tile_w - tile.shape[1]) // 2
            top = row * tile_h + (tile_h - tile.shape[0]) // 2
            mirrored = bool(rng.random() < 0.5)
            frame[top:top + tile.shape[0], left:left + tile.shape[1]] = tile[:, ::-1] if mirrored else tile
            fx1, fy1, fx2, fy2 = face_in_crop * scale
            if mirrored:
                fx1, fx2 = tile.shape[1] - fx2, tile.shape[1] - fx1
            boxes.append([round(left + fx1, 1), round(top + fy1, 1), round(left + fx2, 1), round(top + fy2, 1)])
        frames.append(frame)
        notes.append({"boxes": boxes, "labels": [[] for _ in range(faces)]})
    return frames, notes
