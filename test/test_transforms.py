"""BENet transforms: letterbox geometry, pre-transformations (masks, 40% rule, isolated subject,
probability redistribution), box consistency under flip/warp (property tests), determinism,
eval transform, BENetDataset and collate_benet."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from emotion_perception.data.datasets import BENetDataset, collate_benet
from emotion_perception.data.geometry import (
    IMAGENET_MEAN_RGB,
    boxes_from_letterbox,
    boxes_to_letterbox,
    letterbox,
    letterbox_params,
    transform_boxes,
    union_coverage,
)
from emotion_perception.data.records import ImageRecord, PersonRecord
from emotion_perception.data.transforms import (
    MODES,
    BENetEvalTransform,
    BENetTransform,
    allowed_modes,
    apply_pre_transform,
    choose_mode,
    extractable_subjects,
    mode_probabilities,
    random_masked_subjects,
    transform_preset,
)

MODES_ONLY = transform_preset("modes_only", size=64)


def random_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    # values 0..99: never equal to the mask colour (124, 116, 104)
    return rng.integers(0, 100, size=(h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- letterbox


def test_letterbox_hand_computed():
    image = np.full((240, 320, 3), 200, np.uint8)
    out, p = letterbox(image, 256)
    assert out.shape == (256, 256, 3)
    assert (p.scale, p.pad_x, p.pad_y) == (0.8, 0, 32)
    assert (out[:32] == IMAGENET_MEAN_RGB).all() and (out[-32:] == IMAGENET_MEAN_RGB).all()
    assert (out[32:224] == 200).all()
    boxes = np.array([[0, 0, 320, 240], [10, 20, 110, 220]], np.float32)
    np.testing.assert_allclose(boxes_to_letterbox(boxes, p), [[0, 32, 256, 224], [8, 48, 88, 208]])
    np.testing.assert_allclose(boxes_from_letterbox(boxes_to_letterbox(boxes, p), p), boxes, atol=1e-4)
    # portrait image into a rectangular canvas whose sides round up to the stride
    q = letterbox_params(100, 200, (250, 300), stride=32)
    assert (q.output_width, q.output_height) == (256, 320)
    assert q.scale == pytest.approx(1.6) and (q.pad_x, q.pad_y) == (48, 0)


def test_union_coverage_hand_computed_and_raster():
    overlap = np.array([[0, 0, 50, 50], [25, 25, 75, 75]], np.float32)  # 2500 + 2500 - 625
    assert union_coverage(overlap, 100, 100) == pytest.approx(4375 / 10000)
    assert union_coverage(np.array([[-10, -10, 20, 10]]), 100, 100) == pytest.approx(200 / 10000)
    rng = np.random.default_rng(0)
    for _ in range(20):
        xy = rng.integers(-5, 45, size=(4, 2))
        wh = rng.integers(1, 25, size=(4, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        raster = np.zeros((40, 40), bool)
        for x1, y1, x2, y2 in boxes.astype(int):
            raster[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
        assert union_coverage(boxes, 40, 40) == pytest.approx(raster.mean())


# --------------------------------------------------------------------------- pre-transformations


def test_forty_percent_rule_sums_box_areas():
    # Public rule: the summed box area (not the union) at most 40% of the image.
    over = np.array([[0, 0, 50, 50], [30, 30, 80, 80]], np.float32)  # 2500 + 2500 = 50% (union 46%)
    at_limit = np.array([[0, 0, 40, 50], [60, 0, 100, 50]], np.float32)  # exactly 40%
    overlapping = np.array([[0, 0, 50, 40], [10, 0, 60, 40]], np.float32)  # union 24%, sum 40%
    assert not allowed_modes(over, 100, 100, MODES_ONLY)[MODES.index("mask_all")]
    assert allowed_modes(at_limit, 100, 100, MODES_ONLY)[MODES.index("mask_all")]
    assert allowed_modes(overlapping, 100, 100, MODES_ONLY)[MODES.index("mask_all")]
    rng = np.random.default_rng(1)
    seen = {choose_mode(over, 100, 100, MODES_ONLY, rng) for _ in range(300)}
    assert "mask_all" not in seen and {"det", "mask_subjects", "extract_subject"} <= seen


def test_masks_cover_exactly_the_boxes_in_black():
    rng = np.random.default_rng(2)
    image = random_image(rng, 50, 60) | 1  # no black pixel before masking
    boxes = np.array([[3.2, 4.7, 20.0, 30.5], [40.5, 10.0, 55.1, 12.2]], np.float32)
    labels = np.zeros((2, 26), np.float32)
    labels[0, 3] = labels[1, 7] = labels[1, 3] = 1
    out = apply_pre_transform("mask_all", image, boxes, labels, np.zeros((2, 3), np.float32), rng, 26)
    expected = np.zeros((50, 60), bool)
    expected[4:31, 3:20] = True  # floor(y1):ceil(y2), floor(x1):ceil(x2)
    expected[10:13, 40:56] = True
    changed = (out.image != image).any(axis=2)
    np.testing.assert_array_equal(changed, expected)
    assert (out.image[expected] == 0).all()  # the public fill: black
    assert out.boxes.shape == (0, 4)
    np.testing.assert_array_equal(out.image_label, labels.max(axis=0))


def test_random_mask_subjects_follows_the_public_rule():
    # Far-apart people on a diagonal (no shared x or y range): each one but the first of a
    # random order is masked with probability 0.5.
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]], np.float32)
    rng = np.random.default_rng(3)
    draws = np.array([random_masked_subjects(boxes, rng) for _ in range(4000)])
    assert not draws.all(axis=1).any()  # somebody is always kept
    masked_count = draws.sum(axis=1)
    # Binomial(3, 0.5) over the three people after the first.
    frequencies = np.bincount(masked_count, minlength=4) / len(draws)
    np.testing.assert_allclose(frequencies, [1 / 8, 3 / 8, 3 / 8, 1 / 8], atol=0.03)
    # Side by side (same y range): a mask would cross a kept person's centre row -> never masked.
    row = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32)
    assert not np.array([random_masked_subjects(row, rng) for _ in range(200)]).any()
    # One person: RandomMaskSubject still applies (trains the bottom-up maps), masking nobody.
    assert not random_masked_subjects(boxes[:1], rng).any()
    assert allowed_modes(boxes[:1], 100, 100, MODES_ONLY)[MODES.index("mask_subjects")]


def test_random_mask_subjects_keeps_60_percent_of_kept_boxes_visible():
    # A mask may not cross a kept centre's lines, so one mask covers at most a quarter of a kept
    # box; two quadrant masks (boxes 1 and 2 each cover 19x19 = 22.6% of box 0) would leave it
    # 55% visible < 60%: never both while box 0 is kept, though each alone happens.
    boxes = np.array([[0, 0, 40, 40], [21, 21, 61, 61], [21, -30, 61, 19]], np.float32)
    rng = np.random.default_rng(6)
    draws = np.array([random_masked_subjects(boxes, rng) for _ in range(2000)])
    kept_0 = ~draws[:, 0]
    assert not (draws[kept_0, 1] & draws[kept_0, 2]).any()
    assert (draws[kept_0, 1] & ~draws[kept_0, 2]).any() and (draws[kept_0, 2] & ~draws[kept_0, 1]).any()


def test_extract_subject_takes_a_person_overlapped_by_at_most_forty_percent():
    # box 1 lies 25% inside box 0 (900 / 3600 of box 0, 900 / 900 of box 1); box 2 alone
    boxes = np.array([[0, 0, 60, 60], [30, 30, 60, 60], [100, 0, 120, 30]], np.float32)
    assert extractable_subjects(boxes).tolist() == [0, 2]
    rng = np.random.default_rng(4)
    image = random_image(rng, 100, 130)
    labels = np.eye(3, 26, dtype=np.float32)
    seen = set()
    for _ in range(40):
        out = apply_pre_transform("extract_subject", image, boxes, labels, np.zeros((3, 3), np.float32), rng, 26)
        chosen = int(out.image_label.argmax())
        seen.add(chosen)
        x1, y1, x2, y2 = boxes[chosen].astype(int)
        np.testing.assert_array_equal(out.image, image[y1:y2, x1:x2])
        np.testing.assert_array_equal(out.boxes, [[0, 0, x2 - x1, y2 - y1]])
    assert seen == {0, 2}


def test_a_disabled_mode_is_split_equally_over_the_others():
    config = MODES_ONLY
    rng = np.random.default_rng(5)
    cases = [
        # (boxes, width, height, expected probabilities of det, mask_subjects, extract_subject, mask_all)
        (np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), 100, 100, [0.25, 0.25, 0.25, 0.25]),
        # summed area over 40%: no mask_all; the big box is overlapped by 4% only: extractable
        (np.array([[0, 0, 100, 100], [40, 40, 60, 60]]), 100, 100, [1 / 3, 1 / 3, 1 / 3, 0]),
        (np.zeros((0, 4)), 100, 100, [1, 0, 0, 0]),
    ]
    for boxes, w, h, expected in cases:
        np.testing.assert_allclose(mode_probabilities(boxes, w, h, config), expected)
        n = 4000
        draws = [choose_mode(boxes, w, h, config, rng) for _ in range(n)]
        freq = np.array([draws.count(m) / n for m in MODES])
        sigma = np.sqrt(np.array(expected) * (1 - np.array(expected)) / n)
        assert np.all(np.abs(freq - expected) <= 4 * sigma + 1e-9), (freq, expected)
    custom = replace(config, mode_probs=(0.1, 0.2, 0.3, 0.4))
    # mask_all disabled (summed area 100%): its 0.4 goes equally to the three others
    np.testing.assert_allclose(mode_probabilities(np.array([[0, 0, 100, 100]]), 100, 100, custom),
                               [0.1 + 0.4 / 3, 0.2 + 0.4 / 3, 0.3 + 0.4 / 3, 0])
    only_mask_all = replace(config, mode_probs=(0, 0, 0, 1))
    np.testing.assert_allclose(mode_probabilities(np.array([[0, 0, 100, 100]]), 100, 100, only_mask_all), [1, 0, 0, 0])


# --------------------------------------------------------------------------- augmentation geometry


def _colour_bbox(image: np.ndarray) -> np.ndarray | None:
    r, g, b = (image[..., k].astype(int) for k in range(3))
    red = (r > 64) & (r > 2 * g) & (r > 2 * b)  # not a blend of black and the grey padding
    ys, xs = np.nonzero(red)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


# Derandomized: every run (a fresh clone included) draws the same examples, so a failure
# reproduces; an unseeded run once drew a flipped case the warp got one pixel wrong.
@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    width=st.integers(40, 160),
    height=st.integers(40, 160),
    frac=st.tuples(st.floats(0.05, 0.6), st.floats(0.05, 0.6), st.floats(0.2, 0.9), st.floats(0.2, 0.9)),
    flip=st.booleans(),
    perspective=st.floats(0.0, 0.08),
)
def test_boxes_follow_flip_and_warp(seed, width, height, frac, flip, perspective):
    x1, y1 = frac[0] * width, frac[1] * height
    x2, y2 = x1 + (width - x1) * frac[2], y1 + (height - y1) * frac[3]
    box = np.array([[round(x1), round(y1), round(x2), round(y2)]], np.float32)
    image = np.zeros((height, width, 3), np.uint8)
    bx1, by1, bx2, by2 = box[0].astype(int)
    image[by1:by2, bx1:bx2] = (255, 0, 0)
    config = replace(MODES_ONLY, size=96, mode_probs=(1, 0, 0, 0), flip_prob=float(flip), warp_prob=1.0,
                     perspective=perspective, rotation_deg=15.0, min_visible_fraction=0.0, min_box_size=0.0)
    sample = BENetTransform(config)(image, box, np.eye(1, 26, dtype=np.float32), np.zeros((1, 3)),
                                    np.random.default_rng(seed))
    assert sample.mode == "det" and sample.image.shape == (96, 96, 3)
    seen = _colour_bbox(sample.image)
    if seen is None:
        return  # the person left the canvas entirely
    assert len(sample.boxes) == 1
    predicted = sample.boxes[0]
    # Interpolation blurs edges over about one source pixel: (letterbox x warp scale) output
    # pixels, widened by the rotation (a rotated pixel spans cos + sin of its side) and by the
    # perspective's local magnification (corners move up to `perspective` x size each way).
    rotation = np.deg2rad(config.rotation_deg)
    footprint = 96 / max(width, height) * config.scale_range[1] * (np.cos(rotation) + np.sin(rotation))
    tol = 1.0 + footprint * (1.0 + 2.0 * perspective)
    # the visible red pixels always lie inside the predicted box ...
    assert seen[0] >= predicted[0] - tol and seen[1] >= predicted[1] - tol
    assert seen[2] <= predicted[2] + tol and seen[3] <= predicted[3] + tol
    # ... and touch all four sides of it when the warped person is fully on the canvas
    inside = (predicted[0] > 1) and (predicted[1] > 1) and (predicted[2] < 95) and (predicted[3] < 95)
    if inside and (predicted[2] - predicted[0]) > 4 and (predicted[3] - predicted[1]) > 4:
        np.testing.assert_allclose(seen, predicted, atol=tol)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(width=st.integers(20, 300), x1=st.floats(0, 0.5), x2=st.floats(0.55, 1.0))
def test_horizontal_flip_mirrors_boxes(width, x1, x2):
    flip = np.array([[-1.0, 0, width], [0, 1, 0], [0, 0, 1]])
    box = np.array([[x1 * width, 3, x2 * width, 9]])
    np.testing.assert_allclose(transform_boxes(box, flip), [[width - x2 * width, 3, width - x1 * width, 9]], atol=1e-4)


def test_flip_alone_mirrors_the_pixels_with_their_boxes():
    # A canvas-sized image (no resize) flipped without warp: the pixels must be exactly the
    # mirrored array and the box must still frame its pixels, to the pixel.
    rng = np.random.default_rng(3)
    image = random_image(rng, 64, 64)
    image[..., 0] //= 2  # red below 64: only the person counts as red
    image[20:30, 5:17] = (255, 0, 0)
    config = replace(MODES_ONLY, size=64, mode_probs=(1, 0, 0, 0), flip_prob=1.0, warp_prob=0.0)
    sample = BENetTransform(config)(image, np.array([[5, 20, 17, 30]], np.float32), np.eye(1, 26, dtype=np.float32),
                                    np.zeros((1, 3)), np.random.default_rng(0))
    np.testing.assert_array_equal(sample.image, image[:, ::-1])
    np.testing.assert_array_equal(sample.boxes, [[64 - 17, 20, 64 - 5, 30]])
    np.testing.assert_array_equal(_colour_bbox(sample.image), sample.boxes[0])


def test_drops_people_pushed_off_the_canvas():
    image = np.zeros((100, 100, 3), np.uint8)
    boxes = np.array([[0, 0, 100, 100], [0, 40, 6, 60]], np.float32)
    config = replace(MODES_ONLY, size=64, mode_probs=(1, 0, 0, 0), warp_prob=1.0, rotation_deg=0.0,
                     scale_range=(1.0, 1.0), perspective=0.0, translate=0.3, min_visible_fraction=0.5)
    kept_small = 0
    for seed in range(40):
        sample = BENetTransform(config)(image, boxes, np.eye(2, 26, dtype=np.float32), np.zeros((2, 3)),
                                        np.random.default_rng(seed))
        for b in sample.boxes:
            assert b[0] >= 0 and b[1] >= 0 and b[2] <= 64 and b[3] <= 64
        kept_small += len(sample.boxes) == 2
    assert 0 < kept_small < 40  # the thin person at the left edge leaves when shifted left


def test_training_transform_is_deterministic_and_typed():
    rng = np.random.default_rng(6)
    image = random_image(rng, 120, 160)
    boxes = np.array([[10, 10, 50, 80], [90, 20, 140, 100]], np.float32)  # 25.5% of the image
    labels = np.eye(2, 26, dtype=np.float32)
    vad = np.array([[0.1, 0.2, 0.3], [np.nan, np.nan, np.nan]], np.float32)
    transform = BENetTransform(transform_preset("benet", size=64))
    a = transform(image, boxes, labels, vad, np.random.default_rng(42))
    b = transform(image, boxes, labels, vad, np.random.default_rng(42))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert a.mode == b.mode
    samples = [transform(image, boxes, labels, vad, np.random.default_rng(s)) for s in range(30)]
    assert len({s.image.tobytes() for s in samples}) == 30
    assert {s.mode for s in samples} == set(MODES)
    for s in samples:
        assert s.image.dtype == np.uint8 and s.image.shape == (64, 64, 3)
        assert s.boxes.dtype == np.float32 and s.labels.shape == (len(s.boxes), 26) and s.vad.shape == (len(s.boxes), 3)
        assert s.image_label.shape == (26,)
        if s.mode == "mask_all":
            assert len(s.boxes) == 0 and s.image_label.sum() == 2
        if s.mode in ("det", "mask_subjects"):
            assert s.image_label.sum() == 0


def test_eval_transform_maps_back():
    image = np.zeros((90, 200, 3), np.uint8)
    boxes = np.array([[10, 5, 100, 80], [150, 0, 199, 90]], np.float32)
    sample = BENetEvalTransform(size=128)(image, boxes, np.eye(2, 26), np.zeros((2, 3)))
    assert sample.mode == "det" and sample.image.shape == (128, 128, 3)
    p = sample.letterbox
    assert p.scale == pytest.approx(0.64) and (p.pad_x, p.pad_y) == (0, 35)
    np.testing.assert_allclose(sample.boxes[0], [6.4, 35 + 3.2, 64, 35 + 51.2], atol=1e-4)
    np.testing.assert_allclose(boxes_from_letterbox(sample.boxes, p), boxes, atol=1e-3)


# --------------------------------------------------------------------------- dataset and collate


@pytest.fixture()
def records(tmp_path: Path) -> list[ImageRecord]:
    rng = np.random.default_rng(7)
    out = []
    for i, (w, h) in enumerate([(80, 60), (64, 64), (50, 100)]):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), random_image(rng, h, w))
        people = [PersonRecord(box=np.array([5, 5, 30, 40], np.float32), categories=np.eye(26, dtype=np.float32)[i],
                               vad=np.array([0.5, 0.5, np.nan], np.float32))]
        if i == 0:
            people.append(PersonRecord(box=np.array([40, 10, 70, 50], np.float32),
                                       categories=np.eye(26, dtype=np.float32)[25]))
        out.append(ImageRecord(path=path, width=w, height=h, people=people, split="train"))
    return out


def test_dataset_and_collate(records):
    dataset = BENetDataset(records, BENetTransform(transform_preset("benet", size=64)), seed=3)
    first = dataset[0]
    np.testing.assert_array_equal(first.image, dataset[0].image)  # (seed, epoch, index) fixes a sample
    dataset.set_epoch(1)
    assert not np.array_equal(first.image, dataset[0].image) or first.mode != dataset[0].mode
    batch = collate_benet([dataset[i] for i in range(3)])
    assert batch["image"].shape == (3, 3, 64, 64) and batch["image"].dtype == torch.float32
    assert batch["image_label"].shape == (3, 26)
    assert len(batch["boxes"]) == len(batch["labels"]) == len(batch["vad"]) == len(batch["mode"]) == 3
    assert batch["num_people"].tolist() == [len(b) for b in batch["boxes"]]
    for b, labels, v in zip(batch["boxes"], batch["labels"], batch["vad"]):
        assert b.shape[1] == 4 and labels.shape == (b.shape[0], 26) and v.shape == (b.shape[0], 3)


def test_collate_normalises_with_imagenet_statistics(records):
    dataset = BENetDataset(records, BENetEvalTransform(size=64))
    sample = dataset[2]
    batch = collate_benet([sample])
    pixel = sample.image[10, 20].astype(np.float64)
    expected = (pixel / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(batch["image"][0, :, 10, 20].numpy(), expected, rtol=1e-5, atol=1e-5)
    # the padding colour normalises to ~0
    assert batch["image"][0, :, 0, 0].abs().max() < 0.02
    assert batch["letterbox"][0].input_width == 50


def test_dataset_rejects_unmapped_heco_labels(records):
    bad = [ImageRecord(path=records[0].path, width=80, height=60,
                       people=[PersonRecord(box=np.zeros(4, np.float32), categories=np.zeros(8, np.float32))])]
    with pytest.raises(ValueError, match="heco_to_emotic"):
        BENetDataset(bad, BENetEvalTransform())
