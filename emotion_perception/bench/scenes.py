"""Synthetic camera streams for replays, with the truth of every frame.

Two sources, for two questions:
  * people=None: the training generator's scenes (1-8 people, occlusion, labelled emotions),
    what a demo or an accuracy check wants;
  * people=N: exactly N fully visible people on a grid (export.scenes.draw_scene, the scenes
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
        from emotion_perception.export.scenes import draw_scene

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
        scene = generate_emotic_scene(rng, config)
        frames.append(scene.image)
        notes.append({
            "boxes": [np.round(p.box, 1).tolist() for p in scene.people],
            "labels": [list(p.categories) for p in scene.people],
        })
    return frames, notes
