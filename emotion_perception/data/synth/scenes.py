"""Sampling and rendering of synthetic scenes with a known generative answer.

:func:`generate_emotic_scene` draws 1-8 people (EMOTIC/HECO style) and returns the image with
every person's box, cues, labels and VAD; :func:`generate_caer_scene` draws one main face in a
context (CAER-S style). Both are pure functions of a numpy Generator and a config.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emotion_perception.data.categories import CAER_CATEGORIES
from emotion_perception.data.synth import draw
from emotion_perception.data.synth.rules import (
    APART_GAP,
    APART_MIN_PEOPLE,
    CAER_CONTEXT_CLASSES,
    CAER_FACE_CLASSES,
    CAER_NEUTRAL_CONTEXTS,
    DISTRESS_EXPRESSIONS,
    DISTRESS_POSES,
    EXPRESSIONS,
    POSES,
    PROPS,
    SCENES,
    person_categories,
    person_vad,
)


@dataclass(frozen=True)
class EmoticSynthConfig:
    """EMOTIC/HECO-style scene generator. Probabilities are over the vocabularies in rules.py."""

    width: int = 320
    height: int = 240
    # P(number of people = 1..8): mostly few people, as in EMOTIC.
    people_probs: tuple[float, ...] = (0.24, 0.22, 0.16, 0.12, 0.09, 0.07, 0.05, 0.05)
    expression_probs: tuple[float, ...] = (0.16, 0.12, 0.12, 0.12, 0.12, 0.12, 0.12, 0.12)  # EXPRESSIONS
    tear_prob: float = 0.08
    pose_probs: tuple[float, ...] = (0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)  # POSES
    scene_probs: tuple[float, ...] = (0.25, 0.15, 0.15, 0.15, 0.15, 0.15)  # SCENES
    prop_probs: tuple[float, ...] = (0.76, 0.08, 0.08, 0.08)  # PROPS
    pair_prob: float = 0.35  # images with >= 2 people: two of them stand together
    loner_prob: float = 0.35  # images with >= 3 people: one stands apart from the group
    unannotated_prob: float = 0.12  # people drawn but left out of the annotations
    min_head_visible: float = 0.7  # annotated people keep this much of the head square visible
    # person height = image height x (near..far range) x jitter, by depth
    far_height: float = 0.38
    near_height: float = 0.85
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train, val, test
    annotators: tuple[int, int] = (2, 4)  # val/test annotators per person, inclusive
    annotator_drop: float = 0.2  # an annotator misses each true category with this probability
    annotator_extra: float = 0.1  # ... and adds one random category with this probability
    folder: str = "synthetic/images"
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        for name, vocabulary in (("expression_probs", EXPRESSIONS), ("pose_probs", POSES), ("scene_probs", SCENES),
                                 ("prop_probs", PROPS), ("people_probs", None), ("split_fractions", None)):
            probs = np.asarray(getattr(self, name), dtype=np.float64)
            if vocabulary is not None and len(probs) != len(vocabulary):
                raise ValueError(f"EmoticSynthConfig.{name}: {len(probs)} values for {len(vocabulary)} options "
                                 f"{vocabulary}")
            if np.any(probs < 0) or probs.sum() <= 0:
                raise ValueError(f"EmoticSynthConfig.{name}: expected non-negative values with a positive sum, "
                                 f"got {probs}")
        if self.width < 64 or self.height < 64:
            raise ValueError(f"EmoticSynthConfig: images must be at least 64x64, got {self.width}x{self.height}")


@dataclass(frozen=True)
class CaerSynthConfig:
    """CAER-S-style generator: one big face, a context, 7 classes (rules.CAER_RULES)."""

    width: int = 224
    height: int = 224
    face_radius: tuple[float, float] = (0.14, 0.2)  # fraction of min(width, height)
    background_people: tuple[int, int] = (0, 3)  # inclusive
    test_fraction: float = 0.3


EMOTIC_SYNTH_PRESETS: dict[str, EmoticSynthConfig] = {"emotic": EmoticSynthConfig()}
CAER_SYNTH_PRESETS: dict[str, CaerSynthConfig] = {"caer": CaerSynthConfig()}


@dataclass
class SyntheticPerson:
    figure: draw.Figure
    layout: draw.FigureLayout
    ground_y: float
    prop: str
    prop_side: int
    partner: int | None
    annotated: bool
    categories: list[str]
    vad: np.ndarray  # (3,) 1..10
    gender: str
    age: str

    @property
    def box(self) -> np.ndarray:
        return self.layout.box


@dataclass
class SyntheticScene:
    image: np.ndarray
    scene: str
    people: list[SyntheticPerson] = field(default_factory=list)

    def annotated(self) -> list[SyntheticPerson]:
        return [p for p in self.people if p.annotated]


@dataclass
class CaerScene:
    image: np.ndarray
    label: int
    context: str
    face_box: np.ndarray  # (4,) x1 y1 x2 y2


def _choice(rng: np.random.Generator, options: tuple, probs: tuple[float, ...]):
    p = np.asarray(probs, dtype=np.float64)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def _appearance(rng: np.random.Generator) -> dict:
    return {
        "skin": draw.SKIN_TONES[int(rng.integers(len(draw.SKIN_TONES)))],
        # Clothes avoid the saturated cue colours: mid saturation, any hue.
        "shirt": draw.hsv_color(rng.random(), rng.uniform(0.25, 0.55), rng.uniform(0.35, 0.75)),
        "trousers": draw.hsv_color(rng.random(), rng.uniform(0.1, 0.4), rng.uniform(0.15, 0.4)),
    }


def _apart(boxes: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """rules.APART_* on the people's boxes: (N,) bool."""
    n = len(boxes)
    if n < APART_MIN_PEOPLE:
        return np.zeros(n, dtype=bool)
    gap = np.maximum(boxes[None, :, 0] - boxes[:, None, 2], boxes[:, None, 0] - boxes[None, :, 2])
    np.fill_diagonal(gap, np.inf)
    return gap.min(axis=1) >= APART_GAP * heights


def _overlap_fraction(rect: np.ndarray, others: list[np.ndarray]) -> float:
    """Fraction of ``rect`` covered by the union of ``others`` (exact, on a small raster)."""
    if not others:
        return 0.0
    x1, y1, x2, y2 = rect
    res = 16
    xs = np.linspace(x1, x2, res, endpoint=False) + (x2 - x1) / (2 * res)
    ys = np.linspace(y1, y2, res, endpoint=False) + (y2 - y1) / (2 * res)
    gx, gy = np.meshgrid(xs, ys)
    covered = np.zeros_like(gx, dtype=bool)
    for o in others:
        covered |= (gx >= o[0]) & (gx <= o[2]) & (gy >= o[1]) & (gy <= o[3])
    return float(covered.mean())


def heart_geometry(head_a: tuple[float, float, float], head_b: tuple[float, float, float]
                   ) -> tuple[float, float, float]:
    """(cx, cy, size) of the heart drawn above a pair, clear of both heads."""
    (ax, ay, ar), (bx, by, br) = head_a, head_b
    size = 0.7 * (ar + br)
    return (ax + bx) / 2, min(ay - ar, by - br) - 0.55 * (ar + br), size


def generate_emotic_scene(rng: np.random.Generator, config: EmoticSynthConfig = EmoticSynthConfig()) -> SyntheticScene:
    """Sample, lay out and draw one scene; labels follow rules.person_categories exactly."""
    width, height = config.width, config.height
    scene = _choice(rng, SCENES, config.scene_probs)
    n = int(rng.choice(np.arange(1, len(config.people_probs) + 1),
                       p=np.asarray(config.people_probs) / sum(config.people_probs)))
    loner = n >= 3 and rng.random() < config.loner_prob
    paired = n >= 2 and rng.random() < config.pair_prob
    group_left = rng.random() < 0.5

    # depth t in [0, 1]: 0 far (small, high on the floor), 1 near (big, feet at the bottom edge)
    depth = rng.uniform(0.0, 0.45 if loner else 1.0, size=n)
    heights = (height * (config.far_height + (config.near_height - config.far_height) * depth)
               * rng.uniform(0.92, 1.08, n))
    ground = height * (0.62 + 0.43 * depth)
    if loner:
        cxs = rng.uniform(0.05, 0.4, n) * width
        cxs[-1] = rng.uniform(0.83, 0.95) * width
        if not group_left:
            cxs = width - cxs
    else:
        cxs = rng.uniform(0.04, 0.96, n) * width
    if paired:
        # person 1 stands shoulder to shoulder with person 0 (the loner, if any, is the last one)
        depth[1] = depth[0]
        heights[1] = heights[0] * rng.uniform(0.9, 1.1)
        ground[1] = ground[0]
        direction = 1 if (cxs[0] < width / 2) else -1
        cxs[1] = cxs[0] + direction * 0.4 * (heights[0] + heights[1]) / 2

    props = [_choice(rng, PROPS, config.prop_probs) for _ in range(n)]
    prop_sides = rng.choice([-1, 1], size=n)
    people: list[SyntheticPerson] = []
    for i in range(n):
        foot_y = ground[i] - (0.14 * heights[i] if props[i] == "podium" else 0.0)
        figure = draw.Figure(
            cx=float(cxs[i]), foot_y=float(foot_y), height=float(heights[i]),
            expression=_choice(rng, EXPRESSIONS, config.expression_probs),
            tear=bool(rng.random() < config.tear_prob),
            pose=_choice(rng, POSES, config.pose_probs),
            side=int(rng.choice([-1, 1])),
            **_appearance(rng),
        )
        partner = (1 - i) if paired and i < 2 else None
        people.append(SyntheticPerson(
            figure=figure, layout=draw.figure_layout(figure), ground_y=float(ground[i]), prop=props[i],
            prop_side=int(prop_sides[i]), partner=partner, annotated=bool(rng.random() >= config.unannotated_prob),
            categories=[], vad=np.zeros(3), gender=str(rng.choice(["Male", "Female"])),
            age=str(rng.choice(["Adult", "Adult", "Teenager", "Kid"])),
        ))

    heart = None
    if paired:
        heart = heart_geometry(people[0].layout.head, people[1].layout.head)
        if heart[1] - 0.6 * heart[2] < 0:
            # The heart is the pair's cue: no room above their heads, no pair.
            paired, heart = False, None
            people[0].partner = people[1].partner = None

    boxes = np.stack([p.box for p in people])
    apart = _apart(boxes, heights)
    for i, person in enumerate(people):
        partner_distressed = False
        if person.partner is not None:
            other = people[person.partner].figure
            partner_distressed = other.expression in DISTRESS_EXPRESSIONS or other.pose in DISTRESS_POSES
        person.categories = person_categories(
            person.figure.expression, person.figure.tear, person.figure.pose, scene, person.prop,
            person.partner is not None, partner_distressed, bool(apart[i]))
        person.vad = person_vad(person.categories)

    # far to near: later people (and their props) occlude earlier ones
    order = sorted(range(n), key=lambda i: (people[i].ground_y, i))
    for rank, i in enumerate(order):
        person = people[i]
        hx, hy, r = person.layout.head
        head = np.array([hx - r, hy - r, hx + r, hy + r])
        inside = _overlap_fraction(head, [np.array([0, 0, width, height])])
        occluders = []
        for j in order[rank + 1 :]:
            occluders.append(people[j].box)
            rect = draw.prop_rect(people[j].prop, people[j].figure, people[j].prop_side, people[j].ground_y)
            if rect is not None:
                occluders.append(rect)
        visible = inside - _overlap_fraction(head, occluders) * inside
        if visible < config.min_head_visible or not person.categories:
            person.annotated = False

    image = np.empty((height, width, 3), dtype=np.uint8)
    draw.draw_background(image, scene, rng)
    for i in order:
        person = people[i]
        if person.prop in ("podium", "screen"):
            draw.draw_prop(image, person.prop, person.figure, person.prop_side, person.ground_y)
        draw.draw_figure(image, person.figure, person.layout)
        if person.prop == "gift":
            draw.draw_prop(image, person.prop, person.figure, person.prop_side, person.ground_y)
    if heart is not None:
        draw.draw_heart(image, *heart)
    return SyntheticScene(image=image, scene=scene, people=people)


def generate_caer_scene(rng: np.random.Generator, config: CaerSynthConfig = CaerSynthConfig(),
                        label: int | None = None) -> CaerScene:
    """One CAER-style image: class drawn uniformly (or given), cue per rules.CAER_RULES."""
    width, height = config.width, config.height
    label = int(rng.integers(len(CAER_CATEGORIES))) if label is None else int(label)
    name = CAER_CATEGORIES[label]
    expression = CAER_FACE_CLASSES.get(name, "neutral")
    context = CAER_CONTEXT_CLASSES.get(name) or CAER_NEUTRAL_CONTEXTS[int(rng.integers(len(CAER_NEUTRAL_CONTEXTS)))]

    image = np.empty((height, width, 3), dtype=np.uint8)
    horizon = draw.draw_background(image, context, rng)
    for _ in range(int(rng.integers(config.background_people[0], config.background_people[1] + 1))):
        h = rng.uniform(0.3, 0.45) * height
        figure = draw.Figure(
            cx=float(rng.choice([rng.uniform(0.02, 0.22), rng.uniform(0.78, 0.98)]) * width),
            foot_y=float(horizon + rng.uniform(0.05, 0.2) * height), height=float(h),
            # distractors: any expression and pose, so the context alone never tells the class
            expression=EXPRESSIONS[int(rng.integers(len(EXPRESSIONS)))], pose=POSES[int(rng.integers(len(POSES)))],
            side=int(rng.choice([-1, 1])), **_appearance(rng))
        draw.draw_figure(image, figure)
    r = rng.uniform(*config.face_radius) * min(width, height)
    cx = rng.uniform(0.35, 0.65) * width
    cy = rng.uniform(0.3, 0.45) * height
    look = _appearance(rng)
    draw.draw_bust(image, cx, cy, r, look["shirt"], look["skin"])
    draw.draw_face(image, cx, cy, r, expression, False, look["skin"])
    face_box = np.array([max(0.0, cx - r), max(0.0, cy - r), min(width, cx + r), min(height, cy + r)], dtype=np.float32)
    return CaerScene(image=image, label=label, context=context, face_box=face_box)

