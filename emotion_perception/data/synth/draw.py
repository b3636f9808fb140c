"""Drawing of the synthetic scenes: backgrounds, stylised people with faces, props (cv2, RGB uint8).

Geometry of a person is computed once (:func:`figure_layout`) and used both to draw it and to
give its exact box and head circle, so annotations and pixels cannot disagree. Sizes are
fractions of the person's height ``h``: head radius 0.12 h, limbs 0.06 h thick, so that at the
sizes the generator uses (h >= 0.38 x image height) face and pose cues stay several pixels wide
after BENet's 4x downsampling.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import cv2
import numpy as np

Color = tuple[int, int, int]

INK: Color = (25, 25, 30)
WHITE: Color = (250, 250, 250)
SKIN_TONES: tuple[Color, ...] = (
    (255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (234, 192, 160),
)
# Face tints that carry an expression (blended 60% into the skin).
FACE_TINTS: dict[str, Color] = {"angry": (230, 40, 30), "scared": (140, 175, 255), "disgusted": (100, 195, 60)}
TEAR_BLUE: Color = (30, 110, 255)
HEART_PINK: Color = (255, 50, 150)
SCREEN_CYAN: Color = (60, 225, 255)
GOLD: Color = (245, 190, 20)
GIFT_RED: Color = (220, 25, 60)
RIBBON_YELLOW: Color = (255, 235, 60)
CROSS_RED: Color = (215, 25, 35)
CONE_ORANGE: Color = (255, 120, 20)
HAZARD_YELLOW: Color = (250, 205, 20)
LIGHTNING_YELLOW: Color = (255, 245, 110)

_AA = cv2.LINE_AA


def _p(x: float, y: float) -> tuple[int, int]:
    return int(round(x)), int(round(y))


def hsv_color(h: float, s: float, v: float) -> Color:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def blend(a: Color, b: Color, t: float) -> Color:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def shade(color: Color, factor: float) -> Color:
    return tuple(int(min(255, max(0, round(c * factor)))) for c in color)  # type: ignore[return-value]


def vertical_gradient(canvas: np.ndarray, y0: int, y1: int, top: Color, bottom: Color) -> None:
    y0, y1 = max(0, y0), min(canvas.shape[0], y1)
    if y1 <= y0:
        return
    t = np.linspace(0.0, 1.0, y1 - y0, dtype=np.float32)[:, None, None]
    canvas[y0:y1] = (np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t).astype(np.uint8)


# --------------------------------------------------------------------------- backgrounds


def _ground(canvas: np.ndarray, horizon: int, top: Color, bottom: Color) -> None:
    vertical_gradient(canvas, horizon, canvas.shape[0], top, bottom)


def _distractors(canvas: np.ndarray, rng: np.random.Generator, horizon: int, count: int) -> None:
    """Windows, frames and doors in muted colours: structure that carries no emotion."""
    height, width = canvas.shape[:2]
    for _ in range(count):
        w = rng.uniform(0.08, 0.2) * width
        h = rng.uniform(0.12, 0.3) * height
        x = rng.uniform(0, width - w)
        y = rng.uniform(0.03 * height, max(0.04 * height, horizon - h))
        color = hsv_color(rng.random(), rng.uniform(0.05, 0.25), rng.uniform(0.35, 0.8))
        cv2.rectangle(canvas, _p(x, y), _p(x + w, y + h), color, -1)
        cv2.rectangle(canvas, _p(x, y), _p(x + w, y + h), shade(color, 0.6), max(1, int(width / 160)))


def draw_plain(canvas: np.ndarray, rng: np.random.Generator) -> int:
    height, _width = canvas.shape[:2]
    horizon = int(rng.uniform(0.55, 0.7) * height)
    wall = hsv_color(rng.random(), rng.uniform(0.05, 0.22), rng.uniform(0.55, 0.85))
    vertical_gradient(canvas, 0, horizon, shade(wall, 1.05), shade(wall, 0.95))
    floor = hsv_color(rng.random(), rng.uniform(0.05, 0.25), rng.uniform(0.35, 0.6))
    _ground(canvas, horizon, floor, shade(floor, 0.8))
    _distractors(canvas, rng, horizon, int(rng.integers(1, 4)))
    return horizon


def draw_party(canvas: np.ndarray, rng: np.random.Generator) -> int:
    height, width = canvas.shape[:2]
    horizon = int(rng.uniform(0.6, 0.72) * height)
    wall = hsv_color(rng.choice([0.78, 0.85, 0.92, 0.05]), rng.uniform(0.55, 0.8), rng.uniform(0.45, 0.65))
    vertical_gradient(canvas, 0, horizon, wall, shade(wall, 0.8))
    _ground(canvas, horizon, (120, 70, 50), (90, 50, 35))
    # bunting
    y = rng.uniform(0.05, 0.12) * height
    xs = np.linspace(0, width, 9)
    for i in range(len(xs) - 1):
        color = hsv_color(rng.random(), 0.9, 1.0)
        tri = np.array([_p(xs[i], y), _p(xs[i + 1], y), _p((xs[i] + xs[i + 1]) / 2, y + 0.07 * height)], np.int32)
        cv2.fillConvexPoly(canvas, tri, color, _AA)
    for _ in range(int(rng.integers(4, 8))):
        r = rng.uniform(0.035, 0.055) * width
        cx, cy = rng.uniform(r, width - r), rng.uniform(0.15, 0.42) * height
        color = hsv_color(rng.random(), 0.85, 1.0)
        cv2.line(canvas, _p(cx, cy + r), _p(cx + rng.uniform(-5, 5), cy + r * 3.5), (230, 230, 230), 1, _AA)
        cv2.ellipse(canvas, _p(cx, cy), _p(r, r * 1.2), 0, 0, 360, color, -1, _AA)
        cv2.circle(canvas, _p(cx - r * 0.35, cy - r * 0.4), max(1, int(r * 0.2)), WHITE, -1, _AA)
    n = int(rng.integers(40, 80))
    xs, ys = rng.uniform(0, width, n), rng.uniform(0, height, n)
    for x, y in zip(xs, ys):
        cv2.circle(canvas, _p(x, y), max(1, int(width / 200)), hsv_color(rng.random(), 0.9, 1.0), -1)
    return horizon


def draw_park(canvas: np.ndarray, rng: np.random.Generator) -> int:
    height, width = canvas.shape[:2]
    horizon = int(rng.uniform(0.5, 0.62) * height)
    vertical_gradient(canvas, 0, horizon, (90, 160, 245), (190, 225, 255))
    _ground(canvas, horizon, (95, 185, 70), (45, 130, 40))
    sun_x = rng.choice([0.12, 0.88]) * width
    cv2.circle(canvas, _p(sun_x, 0.12 * height), int(0.06 * width), (255, 225, 60), -1, _AA)
    for _ in range(int(rng.integers(1, 3))):
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.08, 0.25) * height
        for dx in (-1, 0, 1):
            cv2.circle(canvas, _p(cx + dx * 0.04 * width, cy), int(0.035 * width), WHITE, -1, _AA)
    for _ in range(int(rng.integers(1, 4))):
        x = rng.uniform(0.05, 0.95) * width
        trunk_h = rng.uniform(0.12, 0.2) * height
        cv2.rectangle(canvas, _p(x - 0.012 * width, horizon - trunk_h), _p(x + 0.012 * width, horizon + 4),
                      (110, 70, 35), -1)
        cv2.circle(canvas, _p(x, horizon - trunk_h), int(rng.uniform(0.05, 0.08) * width), (40, 140, 50), -1, _AA)
    return horizon


def draw_storm(canvas: np.ndarray, rng: np.random.Generator) -> int:
    height, width = canvas.shape[:2]
    horizon = int(rng.uniform(0.52, 0.65) * height)
    vertical_gradient(canvas, 0, horizon, (35, 40, 55), (85, 90, 105))
    _ground(canvas, horizon, (60, 62, 70), (35, 36, 42))
    x = rng.uniform(0.15, 0.85) * width
    points = [_p(x, 0)]
    y = 0.0
    while y < horizon * 0.8:
        y += rng.uniform(0.06, 0.1) * height
        x += rng.uniform(-0.06, 0.06) * width
        points.append(_p(x, y))
    cv2.polylines(canvas, [np.array(points, np.int32)], False, LIGHTNING_YELLOW, max(2, int(width / 100)), _AA)
    n = int(rng.integers(60, 100))
    starts = np.stack([rng.uniform(0, width + 40, n), rng.uniform(0, height, n)], axis=1)
    length = rng.uniform(0.04, 0.08, n)[:, None] * height
    ends = starts + np.concatenate([-0.4 * length, length], axis=1)
    lines = [np.array([_p(*s), _p(*e)], np.int32) for s, e in zip(starts, ends)]
    cv2.polylines(canvas, lines, False, (175, 185, 210), 1, _AA)
    return horizon


def draw_hospital(canvas: np.ndarray, rng: np.random.Generator) -> int:
    height, width = canvas.shape[:2]
    horizon = int(rng.uniform(0.58, 0.7) * height)
    vertical_gradient(canvas, 0, horizon, (220, 245, 235), (200, 232, 222))
    _ground(canvas, horizon, (205, 210, 212), (170, 175, 178))
    for _ in range(int(rng.integers(1, 3))):
        s = rng.uniform(0.05, 0.08) * height
        cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.12, 0.35) * height
        cv2.rectangle(canvas, _p(cx - s, cy - s / 3), _p(cx + s, cy + s / 3), CROSS_RED, -1)
        cv2.rectangle(canvas, _p(cx - s / 3, cy - s), _p(cx + s / 3, cy + s), CROSS_RED, -1)
    bx = rng.uniform(0.05, 0.6) * width
    bw, by = rng.uniform(0.25, 0.35) * width, horizon - 0.05 * height
    cv2.rectangle(canvas, _p(bx, by - 0.05 * height), _p(bx + bw, by + 0.06 * height), WHITE, -1)
    cv2.rectangle(canvas, _p(bx + 0.3 * bw, by - 0.04 * height), _p(bx + bw, by + 0.04 * height), (150, 190, 235), -1)
    return horizon


def draw_construction(canvas: np.ndarray, rng: np.random.Generator) -> int:
    height, width = canvas.shape[:2]
    horizon = int(rng.uniform(0.55, 0.68) * height)
    vertical_gradient(canvas, 0, horizon, (200, 205, 210), (170, 175, 180))
    _ground(canvas, horizon, (140, 135, 125), (100, 95, 88))
    band_h = int(rng.uniform(0.08, 0.13) * height)
    y0 = int(rng.uniform(0.12, 0.3) * height)
    period = max(6, int(width / 14))
    ys, xs = np.mgrid[y0 : y0 + band_h, 0:width]
    stripes = ((xs + ys) // period) % 2 == 0
    canvas[y0 : y0 + band_h][stripes] = HAZARD_YELLOW
    canvas[y0 : y0 + band_h][~stripes] = INK
    for _ in range(int(rng.integers(1, 4))):
        x, base = rng.uniform(0.05, 0.95) * width, horizon + rng.uniform(0.02, 0.25) * height
        s = rng.uniform(0.05, 0.08) * height
        cone = np.array([_p(x, base - 2 * s), _p(x - s * 0.7, base), _p(x + s * 0.7, base)], np.int32)
        cv2.fillConvexPoly(canvas, cone, CONE_ORANGE, _AA)
        cv2.line(canvas, _p(x - s * 0.4, base - s * 0.9), _p(x + s * 0.4, base - s * 0.9), WHITE, max(2, int(s / 4)))
    return horizon


def draw_garbage(canvas: np.ndarray, rng: np.random.Generator) -> int:
    height, width = canvas.shape[:2]
    horizon = int(rng.uniform(0.55, 0.68) * height)
    vertical_gradient(canvas, 0, horizon, (120, 110, 60), (95, 85, 45))
    _ground(canvas, horizon, (90, 70, 40), (60, 45, 25))
    for _ in range(int(rng.integers(2, 4))):
        x = rng.uniform(0.05, 0.95) * width
        w, h = 0.09 * width, 0.2 * height
        base = horizon + rng.uniform(0.0, 0.2) * height
        cv2.rectangle(canvas, _p(x - w / 2, base - h), _p(x + w / 2, base), (40, 95, 55), -1)
        cv2.rectangle(canvas, _p(x - w * 0.6, base - h - 0.02 * height), _p(x + w * 0.6, base - h), (30, 70, 40), -1)
        for k in range(3):
            cx = x + (k - 1) * w * 0.3
            pts = np.array([_p(cx + 3 * math.sin(t * 1.6), base - h - 6 - t * 3) for t in range(8)], np.int32)
            cv2.polylines(canvas, [pts], False, (140, 230, 60), max(1, int(width / 150)), _AA)
    for _ in range(int(rng.integers(2, 4))):
        cx, cy = rng.uniform(0, width), horizon + rng.uniform(0.1, 0.35) * height
        cv2.ellipse(canvas, _p(cx, cy), _p(0.1 * width, 0.04 * height), 0, 0, 360, (110, 85, 40), -1, _AA)
    n = int(rng.integers(15, 30))
    for x, y in zip(rng.uniform(0, width, n), rng.uniform(0, height, n)):
        cv2.circle(canvas, _p(x, y), max(1, int(width / 180)), INK, -1)
    return horizon


BACKGROUNDS = {
    "plain": draw_plain, "party": draw_party, "park": draw_park, "storm": draw_storm,
    "hospital": draw_hospital, "construction": draw_construction, "garbage": draw_garbage,
}


def draw_background(canvas: np.ndarray, scene: str, rng: np.random.Generator) -> int:
    """Fill ``canvas`` with a scene; returns the horizon row (where the floor starts)."""
    return BACKGROUNDS[scene](canvas, rng)


# --------------------------------------------------------------------------- faces


def draw_face(canvas: np.ndarray, cx: float, cy: float, r: float, expression: str, tear: bool, skin: Color,
              tear_side: int = -1) -> None:
    """Head disc with eyes, brows and mouth drawn for ``expression`` (see rules.EMOTIC_RULES)."""
    t = max(1, int(round(0.13 * r)))
    face = blend(skin, FACE_TINTS[expression], 0.6) if expression in FACE_TINTS else skin
    cv2.circle(canvas, _p(cx, cy), int(round(r)), face, -1, _AA)
    cv2.circle(canvas, _p(cx, cy), int(round(r)), shade(face, 0.6), max(1, t // 2), _AA)

    ex, ey = 0.38 * r, cy - 0.08 * r
    for side in (-1, 1):
        x = cx + side * ex
        if expression in ("surprised", "scared"):
            cv2.circle(canvas, _p(x, ey), max(2, int(round(0.22 * r))), WHITE, -1, _AA)
            cv2.circle(canvas, _p(x, ey), max(1, int(round(0.11 * r))), INK, -1, _AA)
        elif expression == "disgusted":
            cv2.line(canvas, _p(x - 0.16 * r, ey), _p(x + 0.16 * r, ey), INK, t, _AA)
        else:
            cv2.circle(canvas, _p(x, ey), max(1, int(round(0.13 * r))), INK, -1, _AA)

    # brows: (inner y, outer y) offsets in units of r, per side
    brows = {
        "neutral": ((-0.42, -0.42), (-0.42, -0.42)), "smile": ((-0.45, -0.45), (-0.45, -0.45)),
        "frown": ((-0.58, -0.36), (-0.58, -0.36)), "angry": ((-0.24, -0.56), (-0.24, -0.56)),
        "surprised": ((-0.7, -0.64), (-0.7, -0.64)), "scared": ((-0.72, -0.6), (-0.72, -0.6)),
        "disgusted": ((-0.3, -0.46), (-0.3, -0.46)), "puzzled": ((-0.74, -0.74), (-0.28, -0.4)),
    }[expression]
    for side, (inner, outer) in zip((-1, 1), brows):
        cv2.line(canvas, _p(cx + side * 0.14 * r, cy + inner * r), _p(cx + side * 0.62 * r, cy + outer * r), INK,
                 t + 1, _AA)

    my, half = cy + 0.45 * r, 0.42 * r
    if expression == "smile":
        cv2.ellipse(canvas, _p(cx, cy + 0.28 * r), _p(half, 0.3 * r), 0, 15, 165, INK, t + 1, _AA)
    elif expression == "frown":
        cv2.ellipse(canvas, _p(cx, cy + 0.66 * r), _p(half * 0.95, 0.24 * r), 0, 195, 345, INK, t + 1, _AA)
    elif expression == "angry":
        cv2.rectangle(canvas, _p(cx - half, my - 0.1 * r), _p(cx + half, my + 0.12 * r), WHITE, -1)
        cv2.rectangle(canvas, _p(cx - half, my - 0.1 * r), _p(cx + half, my + 0.12 * r), INK, max(1, t // 2 + 1))
    elif expression == "surprised":
        cv2.ellipse(canvas, _p(cx, my + 0.04 * r), _p(0.2 * r, 0.27 * r), 0, 0, 360, INK, -1, _AA)
    elif expression == "scared":
        xs = np.linspace(cx - half, cx + half, 7)
        ys = my + np.array([0, -1, 1, -1, 1, -1, 0]) * 0.09 * r
        cv2.polylines(canvas, [np.array([_p(x, y) for x, y in zip(xs, ys)], np.int32)], False, INK, t, _AA)
    elif expression == "disgusted":
        xs = np.linspace(cx - half, cx + half, 9)
        ys = my + np.sin(np.linspace(0, 2 * math.pi, 9)) * 0.07 * r
        cv2.polylines(canvas, [np.array([_p(x, y) for x, y in zip(xs, ys)], np.int32)], False, INK, t, _AA)
        cv2.ellipse(canvas, _p(cx + 0.1 * r, my + 0.14 * r), _p(0.15 * r, 0.13 * r), 0, 0, 180, (255, 110, 140), -1,
                    _AA)
    elif expression == "puzzled":
        cv2.line(canvas, _p(cx - half * 0.9, my + 0.08 * r), _p(cx + half * 0.9, my - 0.08 * r), INK, t + 1, _AA)
    else:
        cv2.line(canvas, _p(cx - half * 0.8, my), _p(cx + half * 0.8, my), INK, t + 1, _AA)

    if tear:
        tx, ty, tr = cx + tear_side * ex, ey + 0.32 * r, max(2.0, 0.14 * r)
        cv2.circle(canvas, _p(tx, ty + tr * 0.4), int(round(tr)), TEAR_BLUE, -1, _AA)
        tri = np.array([_p(tx - tr, ty + tr * 0.4), _p(tx + tr, ty + tr * 0.4), _p(tx, ty - tr * 1.4)], np.int32)
        cv2.fillConvexPoly(canvas, tri, TEAR_BLUE, _AA)


# --------------------------------------------------------------------------- people


@dataclass
class Figure:
    """A stylised person: where it stands, how tall, its cues and colours."""

    cx: float
    foot_y: float
    height: float
    expression: str = "neutral"
    tear: bool = False
    pose: str = "neutral"
    side: int = 1  # which arm/direction one-sided poses use (+1 right, -1 left in the image)
    skin: Color = SKIN_TONES[0]
    shirt: Color = (60, 90, 160)
    trousers: Color = (50, 50, 70)


@dataclass
class FigureLayout:
    """Image-space geometry of a figure: joints, head circle, limb widths and the body box."""

    points: dict[str, np.ndarray]
    head: tuple[float, float, float]  # cx, cy, r
    limb: float
    leg: float
    box: np.ndarray  # (4,) x1 y1 x2 y2 enclosing everything drawn


# Arm joints (elbow, hand) in units of h relative to the feet centre (y up is negative), for the
# arm on side ``sign`` (-1 image-left, +1 image-right); the second entry is the one-sided
# gesture arm (used when sign == figure.side) where it differs.
_ARMS: dict[str, tuple[tuple[tuple[float, float], tuple[float, float]], ...]] = {
    "neutral": (((0.19, -0.56), (0.21, -0.43)),),
    "arms_up": (((0.25, -0.86), (0.28, -1.03)),),
    "hands_on_hips": (((0.31, -0.56), (0.13, -0.45)),),
    "arms_crossed": (((0.2, -0.55), (-0.11, -0.6)),),
    "slumped": (((0.17, -0.53), (0.17, -0.38)),),
    "bent_holding_belly": (((0.21, -0.56), (0.05, -0.5)),),
    "hand_on_cheek": (((0.19, -0.56), (0.21, -0.43)), ((0.25, -0.64), (0.11, -0.82))),
    "reaching": (((0.19, -0.56), (0.21, -0.43)), ((0.31, -0.7), (0.5, -0.72))),
}
_LEAN_DEG = {"slumped": 12.0, "bent_holding_belly": 35.0}


def figure_layout(figure: Figure) -> FigureLayout:
    h, s = figure.height, figure.side
    rel: dict[str, tuple[float, float]] = {
        "foot_l": (-0.09, 0.0), "foot_r": (0.09, 0.0), "hip_l": (-0.07, -0.42), "hip_r": (0.07, -0.42),
        "shoulder_l": (-0.15, -0.7), "shoulder_r": (0.15, -0.7), "head": (0.0, -0.845),
    }
    if figure.pose == "slumped":
        rel["head"] = (0.0, -0.8)  # sunk between the shoulders
    arms = _ARMS[figure.pose]
    for name, sign in (("l", -1), ("r", 1)):
        (ex, ey), (hx, hy) = arms[1] if len(arms) > 1 and sign == s else arms[0]
        rel[f"elbow_{name}"] = (sign * ex, ey)
        rel[f"hand_{name}"] = (sign * hx, hy)
    points = {k: np.array([figure.cx + x * h, figure.foot_y + y * h]) for k, (x, y) in rel.items()}

    lean = math.radians(_LEAN_DEG.get(figure.pose, 0.0)) * s
    if lean:
        pivot = (points["hip_l"] + points["hip_r"]) / 2
        rot = np.array([[math.cos(lean), -math.sin(lean)], [math.sin(lean), math.cos(lean)]])
        # clockwise in the image (y down) for s=+1: the upper body bends towards the image right
        for key in ("shoulder_l", "shoulder_r", "head", "elbow_l", "elbow_r", "hand_l", "hand_r"):
            points[key] = pivot + rot @ (points[key] - pivot)

    r = 0.12 * h
    limb, leg = max(2.0, 0.06 * h), max(2.0, 0.075 * h)
    hx, hy = points["head"]
    xs = [hx - r, hx + r] + [p[0] - limb / 2 for p in points.values()] + [p[0] + limb / 2 for p in points.values()]
    ys = [hy - r, hy + r] + [p[1] - limb / 2 for p in points.values()] + [p[1] + leg / 2 for p in points.values()]
    box = np.array([min(xs), min(ys), max(xs), max(ys)], dtype=np.float32)
    return FigureLayout(points=points, head=(float(hx), float(hy), float(r)), limb=limb, leg=leg, box=box)


def draw_figure(canvas: np.ndarray, figure: Figure, layout: FigureLayout | None = None) -> FigureLayout:
    layout = layout if layout is not None else figure_layout(figure)
    p = layout.points
    leg, limb = int(round(layout.leg)), int(round(layout.limb))
    for side in ("l", "r"):
        cv2.line(canvas, _p(*p[f"hip_{side}"]), _p(*p[f"foot_{side}"]), figure.trousers, leg, _AA)
        cv2.ellipse(canvas, _p(*p[f"foot_{side}"]), _p(leg * 0.8, leg * 0.45), 0, 0, 360, INK, -1, _AA)
    torso = np.array([_p(*p["shoulder_l"]), _p(*p["shoulder_r"]), _p(*(p["hip_r"] + [0.03 * figure.height, 0])),
                      _p(*(p["hip_l"] - [0.03 * figure.height, 0]))], np.int32)
    cv2.fillConvexPoly(canvas, torso, figure.shirt, _AA)
    neck_top = np.array(layout.head[:2]) + [0, layout.head[2] * 0.8]
    cv2.line(canvas, _p(*neck_top), _p(*((p["shoulder_l"] + p["shoulder_r"]) / 2)), figure.skin, limb, _AA)
    cheek_arm = "r" if figure.side > 0 else "l"
    sleeve = shade(figure.shirt, 0.75)

    def arm(side: str) -> None:
        cv2.line(canvas, _p(*p[f"shoulder_{side}"]), _p(*p[f"elbow_{side}"]), sleeve, limb, _AA)
        cv2.line(canvas, _p(*p[f"elbow_{side}"]), _p(*p[f"hand_{side}"]), sleeve, limb, _AA)
        cv2.circle(canvas, _p(*p[f"hand_{side}"]), max(2, int(round(limb * 0.7))), figure.skin, -1, _AA)

    for side in ("l", "r"):
        if not (figure.pose == "hand_on_cheek" and side == cheek_arm):
            arm(side)
    draw_face(canvas, *layout.head, figure.expression, figure.tear, figure.skin, tear_side=-figure.side)
    if figure.pose == "hand_on_cheek":
        arm(cheek_arm)  # in front of the face
    return layout


# --------------------------------------------------------------------------- props


def prop_rect(prop: str, figure: Figure, side: int, ground_y: float) -> np.ndarray | None:
    """(4,) rectangle a prop occupies (for occlusion checks); None for no prop."""
    h = figure.height
    head_y = figure.foot_y - 0.845 * h
    if prop == "screen":
        cx = figure.cx + side * 0.47 * h
        return np.array([cx - 0.17 * h, head_y - 0.12 * h, cx + 0.17 * h, head_y + 0.13 * h], np.float32)
    if prop == "podium":
        return np.array([figure.cx - 0.28 * h, figure.foot_y, figure.cx + 0.28 * h, ground_y], np.float32)
    if prop == "gift":
        cx = figure.cx + side * 0.34 * h
        return np.array([cx - 0.1 * h, ground_y - 0.2 * h, cx + 0.1 * h, ground_y], np.float32)
    return None


def draw_prop(canvas: np.ndarray, prop: str, figure: Figure, side: int, ground_y: float) -> None:
    rect = prop_rect(prop, figure, side, ground_y)
    if rect is None:
        return
    h = figure.height
    x1, y1, x2, y2 = rect
    if prop == "screen":
        cx = (x1 + x2) / 2
        cv2.line(canvas, _p(cx, y2), _p(cx, ground_y), INK, max(2, int(0.03 * h)))
        cv2.rectangle(canvas, _p(x1, y1), _p(x2, y2), INK, -1)
        m = max(2.0, 0.025 * h)
        cv2.rectangle(canvas, _p(x1 + m, y1 + m), _p(x2 - m, y2 - m), SCREEN_CYAN, -1)
    elif prop == "podium":
        cv2.rectangle(canvas, _p(x1, y1), _p(x2, y2), GOLD, -1)
        cv2.rectangle(canvas, _p(x1, y1), _p(x2, y2), shade(GOLD, 0.6), max(1, int(0.015 * h)))
        cx, cy, s = (x1 + x2) / 2, (y1 + y2) / 2, 0.45 * (y2 - y1)
        star = [_p(cx + s * math.sin(k * 4 * math.pi / 5), cy - s * math.cos(k * 4 * math.pi / 5)) for k in range(5)]
        cv2.fillPoly(canvas, [np.array(star, np.int32)], WHITE, _AA)
    elif prop == "gift":
        cv2.rectangle(canvas, _p(x1, y1), _p(x2, y2), GIFT_RED, -1)
        w = max(2, int(0.035 * h))
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        cv2.line(canvas, _p(cx, y1), _p(cx, y2), RIBBON_YELLOW, w)
        cv2.line(canvas, _p(x1, cy), _p(x2, cy), RIBBON_YELLOW, w)
        cv2.circle(canvas, _p(cx - w, y1 - w * 0.6), w, RIBBON_YELLOW, -1, _AA)
        cv2.circle(canvas, _p(cx + w, y1 - w * 0.6), w, RIBBON_YELLOW, -1, _AA)


def draw_heart(canvas: np.ndarray, cx: float, cy: float, size: float) -> None:
    r = size / 2
    cv2.circle(canvas, _p(cx - r * 0.55, cy), int(round(r * 0.6)), HEART_PINK, -1, _AA)
    cv2.circle(canvas, _p(cx + r * 0.55, cy), int(round(r * 0.6)), HEART_PINK, -1, _AA)
    tri = np.array([_p(cx - r * 1.12, cy + r * 0.15), _p(cx + r * 1.12, cy + r * 0.15), _p(cx, cy + r * 1.4)], np.int32)
    cv2.fillConvexPoly(canvas, tri, HEART_PINK, _AA)


def draw_bust(canvas: np.ndarray, cx: float, cy: float, r: float, shirt: Color, skin: Color) -> None:
    """Neck and shoulders under a big head (CAER-style close-up)."""
    cv2.line(canvas, _p(cx, cy + r * 0.8), _p(cx, cy + r * 1.5), skin, max(2, int(r * 0.55)), _AA)
    cv2.ellipse(canvas, _p(cx, cy + r * 2.5), _p(r * 1.9, r * 1.15), 0, 180, 360, shirt, -1, _AA)
    cv2.rectangle(canvas, _p(cx - r * 1.9, cy + r * 2.5), _p(cx + r * 1.9, cy + r * 4.5), shirt, -1)
