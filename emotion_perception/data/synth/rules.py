"""The generative rules of the synthetic scenes: which visible cue gives which emotion label.

Every EMOTIC category has exactly one cue, of one kind:

* ``face``: drawn on the head (mouth, brows, eyes, skin tint, tear): decidable from the face alone;
* ``body``: the pose of arms and torso: decidable from the body alone;
* ``context``: the scene's palette and objects, a prop next to the person, or the person's
  relation to others (a heart between two people standing together, standing apart from the
  group): decidable only from outside the person.

A person's labels are the union of the categories of its cues (usually 1 to 3), and its VAD is
a fixed function of those labels (:func:`person_vad`). The same tables feed the generator, the
documentation (:func:`rules_markdown`, docs/DATA.md) and the tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from emotion_perception.data.categories import CAER_CATEGORIES, EMOTIC_CATEGORIES

# --------------------------------------------------------------------------- factor vocabularies

EXPRESSIONS: tuple[str, ...] = ("neutral", "smile", "frown", "angry", "surprised", "scared", "disgusted", "puzzled")
POSES: tuple[str, ...] = (
    "neutral", "arms_up", "hands_on_hips", "arms_crossed", "slumped", "bent_holding_belly", "hand_on_cheek", "reaching",
)
SCENES: tuple[str, ...] = ("plain", "party", "park", "storm", "hospital", "construction")
PROPS: tuple[str, ...] = ("none", "screen", "podium", "gift")
# CAER-style contexts: "storm" and "garbage" carry a class, the others carry none.
CAER_CONTEXTS: tuple[str, ...] = ("plain", "park", "party", "hospital", "construction", "storm", "garbage")
CAER_NEUTRAL_CONTEXTS: tuple[str, ...] = ("plain", "park", "party", "hospital", "construction")

EXPRESSION_CATEGORY: dict[str, str] = {
    "smile": "Happiness",
    "frown": "Sadness",
    "angry": "Anger",
    "surprised": "Surprise",
    "scared": "Fear",
    "disgusted": "Aversion",
    "puzzled": "Doubt/Confusion",
}
TEAR_CATEGORY = "Sensitivity"
POSE_CATEGORY: dict[str, str] = {
    "arms_up": "Excitement",
    "hands_on_hips": "Confidence",
    "arms_crossed": "Disapproval",
    "slumped": "Fatigue",
    "bent_holding_belly": "Pain",
    "hand_on_cheek": "Embarrassment",
    "reaching": "Yearning",
}
SCENE_CATEGORY: dict[str, str] = {
    "party": "Pleasure",
    "park": "Peace",
    "storm": "Disquietment",
    "hospital": "Suffering",
    "construction": "Annoyance",
}
PROP_CATEGORY: dict[str, str] = {"screen": "Engagement", "podium": "Esteem", "gift": "Anticipation"}
PAIR_CATEGORY = "Affection"
SYMPATHY_CATEGORY = "Sympathy"  # paired with a partner who shows Sadness or Pain
APART_CATEGORY = "Disconnection"
# A partner showing one of these makes the other person of the pair sympathetic.
DISTRESS_EXPRESSIONS: frozenset[str] = frozenset({"frown"})
DISTRESS_POSES: frozenset[str] = frozenset({"bent_holding_belly"})
# "Apart": at least this many people in the image, and the horizontal gap between this
# person's box and every other person's box is at least APART_GAP x this person's height.
APART_MIN_PEOPLE = 3
APART_GAP = 0.3

# CAER-style scenes: 4 classes shown by the main face on a non-informative context, 2 by the
# context behind a neutral face, Neutral by both being neutral.
CAER_FACE_CLASSES: dict[str, str] = {"Happy": "smile", "Sad": "frown", "Anger": "angry", "Surprise": "surprised"}
CAER_CONTEXT_CLASSES: dict[str, str] = {"Fear": "storm", "Disgust": "garbage"}


@dataclass(frozen=True)
class CueRule:
    """One row of the rule table."""

    category: str
    kind: str  # "face", "body" or "context"
    cue: str  # generator factor (e.g. "expression=smile")
    drawing: str  # what it looks like


EMOTIC_RULES: tuple[CueRule, ...] = (
    CueRule("Happiness", "face", "expression=smile", "upward mouth arc"),
    CueRule("Sadness", "face", "expression=frown", "downward mouth arc, brows raised at the inner ends"),
    CueRule("Anger", "face", "expression=angry", "red face, V-shaped brows, bared white teeth"),
    CueRule("Surprise", "face", "expression=surprised", "round open mouth, wide eyes, brows raised high"),
    CueRule("Fear", "face", "expression=scared", "pale blue face, wide eyes, raised brows, zigzag mouth"),
    CueRule("Aversion", "face", "expression=disgusted", "green face, squinting eyes, wavy mouth with pink tongue"),
    CueRule("Doubt/Confusion", "face", "expression=puzzled", "one brow raised, the other lowered, slanted mouth"),
    CueRule("Sensitivity", "face", "tear", "blue tear drop under one eye (independent of the expression)"),
    CueRule("Excitement", "body", "pose=arms_up", "both arms raised above the head"),
    CueRule("Confidence", "body", "pose=hands_on_hips", "hands on hips, elbows out"),
    CueRule("Disapproval", "body", "pose=arms_crossed", "forearms crossed over the chest"),
    CueRule("Fatigue", "body", "pose=slumped", "torso leaning 12 degrees, head sunk, arms hanging"),
    CueRule("Pain", "body", "pose=bent_holding_belly", "torso bent 35 degrees, both hands on the belly"),
    CueRule("Embarrassment", "body", "pose=hand_on_cheek", "one hand raised to the cheek"),
    CueRule("Yearning", "body", "pose=reaching", "one arm stretched out sideways"),
    CueRule("Pleasure", "context", "scene=party", "saturated wall, balloons, confetti (everyone in the image)"),
    CueRule("Peace", "context", "scene=park", "blue sky, green grass, sun, trees (everyone in the image)"),
    CueRule("Disquietment", "context", "scene=storm", "dark sky, rain streaks, yellow lightning (everyone)"),
    CueRule("Suffering", "context", "scene=hospital", "pale mint wall, red crosses, bed (everyone)"),
    CueRule("Annoyance", "context", "scene=construction", "yellow-black hazard stripes, orange cones (everyone)"),
    CueRule("Engagement", "context", "prop=screen", "cyan screen on a stand beside the person's head"),
    CueRule("Esteem", "context", "prop=podium", "person stands on a gold podium with a star"),
    CueRule("Anticipation", "context", "prop=gift", "red gift box with yellow ribbon at the person's feet"),
    CueRule("Affection", "context", "pair", "stands next to a partner, a pink heart above the two heads"),
    CueRule("Sympathy", "context", "pair with a distressed partner",
            "in a pair whose partner shows Sadness (frown) or Pain (bent pose)"),
    CueRule("Disconnection", "context", "apart",
            f">= {APART_MIN_PEOPLE} people and a horizontal gap >= {APART_GAP} x own height to everyone else"),
)

CAER_RULES: tuple[CueRule, ...] = (
    CueRule("Happy", "face", "expression=smile", "smiling main face, non-informative context"),
    CueRule("Sad", "face", "expression=frown", "frowning main face, non-informative context"),
    CueRule("Anger", "face", "expression=angry", "red face with V brows and teeth, non-informative context"),
    CueRule("Surprise", "face", "expression=surprised", "open mouth, raised brows, non-informative context"),
    CueRule("Fear", "context", "context=storm", "neutral main face in a dark storm (rain, lightning)"),
    CueRule("Disgust", "context", "context=garbage", "neutral main face among trash cans, stink lines, flies"),
    CueRule("Neutral", "face+context", "neutral face, neutral context", "neutral main face, non-informative context"),
)

# Per-category VAD contributions (valence, arousal, dominance), added to 5 and clipped to 1..10
# (integers, so the result is an integer rating like the annotators give).
VAD_BASE = 5.0
VAD_OFFSETS: dict[str, tuple[float, float, float]] = {
    "Affection": (3, 0, 1), "Anger": (-3, 3, 2), "Annoyance": (-2, 2, 0), "Anticipation": (1, 2, 0),
    "Aversion": (-2, 1, 0), "Confidence": (2, 1, 3), "Disapproval": (-2, 1, 2), "Disconnection": (-1, -2, -1),
    "Disquietment": (-2, 2, -1), "Doubt/Confusion": (-1, 0, -2), "Embarrassment": (-2, 1, -2),
    "Engagement": (1, 2, 1), "Esteem": (2, 0, 2), "Excitement": (2, 3, 1), "Fatigue": (-1, -3, -2),
    "Fear": (-3, 3, -3), "Happiness": (3, 1, 1), "Pain": (-3, 1, -3), "Peace": (2, -3, 0),
    "Pleasure": (3, 1, 1), "Sadness": (-3, -2, -2), "Sensitivity": (-1, -1, -1), "Suffering": (-3, 0, -2),
    "Surprise": (1, 3, 0), "Sympathy": (1, 0, 0), "Yearning": (0, 1, -1),
}

# HECO has one category per person: the first of these that the person's EMOTIC labels map from.
HECO_PRIORITY: tuple[tuple[str, str], ...] = (
    ("Happiness", "Happiness"), ("Sadness", "Sadness"), ("Anger", "Anger"), ("Surprise", "Surprise"),
    ("Fear", "Fear"), ("Aversion", "Disgust"), ("Excitement", "Excitement"), ("Peace", "Peace"),
)


def _check_tables() -> None:
    covered = [rule.category for rule in EMOTIC_RULES]
    assert sorted(covered) == sorted(EMOTIC_CATEGORIES), "every EMOTIC category needs exactly one rule"
    assert sorted(VAD_OFFSETS) == sorted(EMOTIC_CATEGORIES)
    assert sorted(rule.category for rule in CAER_RULES) == sorted(CAER_CATEGORIES)


_check_tables()


def person_categories(
    expression: str, tear: bool, pose: str, scene: str, prop: str, paired: bool, partner_distressed: bool, apart: bool
) -> list[str]:
    """Labels of one person from its cues, in EMOTIC's canonical order."""
    names = set()
    if expression in EXPRESSION_CATEGORY:
        names.add(EXPRESSION_CATEGORY[expression])
    if tear:
        names.add(TEAR_CATEGORY)
    if pose in POSE_CATEGORY:
        names.add(POSE_CATEGORY[pose])
    if scene in SCENE_CATEGORY:
        names.add(SCENE_CATEGORY[scene])
    if prop in PROP_CATEGORY:
        names.add(PROP_CATEGORY[prop])
    if paired:
        names.add(PAIR_CATEGORY)
        if partner_distressed:
            names.add(SYMPATHY_CATEGORY)
    if apart:
        names.add(APART_CATEGORY)
    return [name for name in EMOTIC_CATEGORIES if name in names]


def person_vad(categories: Iterable[str]) -> np.ndarray:
    """(3,) VAD on the 1..10 scale: 5 plus the categories' offsets, clipped to 1..10."""
    total = np.full(3, VAD_BASE)
    for name in categories:
        total += np.asarray(VAD_OFFSETS[name], dtype=np.float64)
    return np.clip(np.round(total), 1, 10)


def heco_category(categories: Iterable[str]) -> str | None:
    """HECO's single label for a person with these EMOTIC labels (None: no HECO counterpart)."""
    present = set(categories)
    for emotic_name, heco_name in HECO_PRIORITY:
        if emotic_name in present:
            return heco_name
    return None


def rules_markdown(rules: Iterable[CueRule] = EMOTIC_RULES, label: str = "category") -> str:
    """The rule table as Markdown (pasted into docs/DATA.md; a test keeps the two in sync)."""
    lines = [f"| {label} | cue kind | generator factor | how it is drawn |", "|---|---|---|---|"]
    for rule in rules:
        lines.append(f"| {rule.category} | {rule.kind} | `{rule.cue}` | {rule.drawing} |")
    return "\n".join(lines)
