"""Face pipeline: dlib detectors on a real photograph, face crop / masked context geometry,
input normalisation and the CAHFW dataset."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skdata

from emotion_perception.data.faces import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CAHFWDataset,
    FaceDetector,
    box_to_pixels,
    cnn_model_path,
    face_and_context,
    faces_and_contexts,
    fallback_face_box,
    mask_face,
    normalize_nchw,
)
from emotion_perception.data.records import AnnotationError, FaceRecord

# The astronaut's face in skimage's 512x512 photograph, read off the image by eye: forehead
# to chin, ear to ear; and the inner region (eyes, nose, mouth) any face box must contain.
FACE_REGION_512 = np.array([172.0, 72.0, 265.0, 172.0])
FACE_CORE_512 = np.array([195.0, 100.0, 250.0, 155.0])
SMALL = 200  # the CNN detector on CPU costs about 4x per doubling of the side


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def astronaut_small() -> np.ndarray:
    return cv2.resize(skdata.astronaut(), (SMALL, SMALL), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("method", ["hog", "cnn"])
def test_detector_finds_the_astronaut_face(astronaut_small, method):
    boxes = FaceDetector(method, upsample=1).detect(astronaut_small)
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 5
    assert len(boxes) >= 1
    assert np.all(np.diff(boxes[:, 4]) <= 0)  # sorted by score
    assert np.all(boxes[:, [0, 1]] >= 0) and np.all(boxes[:, [2, 3]] <= SMALL)
    best = boxes[0, :4] * (512 / SMALL)
    assert iou(best, FACE_REGION_512) > 0.6
    assert best[0] <= FACE_CORE_512[0] and best[1] <= FACE_CORE_512[1]
    assert best[2] >= FACE_CORE_512[2] and best[3] >= FACE_CORE_512[3]


def test_hog_one_box_per_face_in_a_two_face_frame(astronaut_small):
    twice = np.concatenate([astronaut_small, astronaut_small], axis=1)  # (200, 400, 3)
    boxes = FaceDetector("hog", upsample=1, min_score=0.5).detect(twice)
    assert len(boxes) == 2
    centres = np.sort((boxes[:, 0] + boxes[:, 2]) / 2)
    assert centres[0] < SMALL < centres[1]
    faces, contexts = faces_and_contexts(twice, boxes, size=32)
    assert faces.shape == contexts.shape == (2, 32, 32, 3)


def test_hog_finds_no_face_in_a_cup_of_coffee():
    coffee = cv2.resize(skdata.coffee(), (300, 200), interpolation=cv2.INTER_AREA)
    boxes = FaceDetector("hog", upsample=1).detect(coffee)
    assert boxes.shape == (0, 5) and boxes.dtype == np.float32


def test_detector_input_errors():
    with pytest.raises(ValueError, match="method"):
        FaceDetector("haar")
    with pytest.raises(ValueError, match="upsample"):
        FaceDetector("hog", upsample=-1)
    detector = FaceDetector("hog", upsample=0)
    with pytest.raises(TypeError, match="uint8"):
        detector.detect(np.zeros((20, 20, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        detector.detect(np.zeros((20, 20), dtype=np.uint8))
    with pytest.raises(TypeError, match="numpy array"):
        detector.detect([[0, 0, 0]])


def test_cnn_model_is_the_packaged_file(monkeypatch):
    # As on a Python without pkg_resources (which face_recognition_models' __init__ imports).
    monkeypatch.setitem(sys.modules, "pkg_resources", None)
    monkeypatch.delitem(sys.modules, "face_recognition_models", raising=False)
    path = cnn_model_path()
    assert path.name == "mmod_human_face_detector.dat" and path.is_file()
    assert path.parent.parent.name == "face_recognition_models"
    assert path.stat().st_size > 500_000  # the real MMOD weights, not an empty placeholder


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    # Strictly positive pixels, so any zero in the output comes from the mask.
    return np.random.default_rng(seed).integers(1, 256, size=(height, width, 3), dtype=np.uint8)


def test_box_to_pixels_floor_ceil_and_clip():
    assert box_to_pixels([10.2, 5.7, 30.0, 20.1], 64, 48) == (10, 5, 30, 21)
    assert box_to_pixels([-5, -3, 100, 70], 64, 48) == (0, 0, 64, 48)
    with pytest.raises(ValueError, match="covers no pixel"):
        box_to_pixels([70, 10, 80, 20], 64, 48)
    with pytest.raises(ValueError, match="finite"):
        box_to_pixels([np.nan, 1, 2, 3], 64, 48)
    with pytest.raises(ValueError, match="4 finite numbers"):
        box_to_pixels([1, 2, 3], 64, 48)


def test_mask_zeroes_exactly_the_face_box():
    image = random_image(48, 64)
    masked = mask_face(image, [10.2, 5.7, 30.0, 20.1])
    # Columns 10..29 and rows 5..20 (floor of the start, ceil of the end), worked out by hand.
    inside = np.zeros((48, 64), dtype=bool)
    inside[5:21, 10:30] = True
    assert np.all(masked[inside] == 0)
    np.testing.assert_array_equal(masked[~inside], image[~inside])
    assert np.all(image > 0)  # the input is untouched


def test_face_and_context_at_native_size_are_exact():
    image = random_image(64, 64, seed=1)
    box = [20, 12, 52, 44]  # 32x32
    face, context = face_and_context(image, box, size=32)
    np.testing.assert_array_equal(face, image[12:44, 20:52])
    face, context = face_and_context(image, box, size=64)  # the whole frame is 64x64: no resize
    expected = image.copy()
    expected[12:44, 20:52] = 0
    np.testing.assert_array_equal(context, expected)
    assert face.dtype == context.dtype == np.uint8
    assert face.shape == context.shape == (64, 64, 3)


def test_face_scale_enlarges_only_the_crop():
    image = random_image(64, 64, seed=2)
    face, context = face_and_context(image, [20, 20, 40, 40], size=30, face_scale=1.5)
    np.testing.assert_array_equal(face, image[15:45, 15:45])  # 30x30 about the same centre
    face, context = face_and_context(image, [20, 20, 40, 40], size=64, face_scale=1.5)
    assert np.all(context[20:40, 20:40] == 0)
    assert np.count_nonzero(np.all(context == 0, axis=-1)) == 20 * 20


def test_context_resized_keeps_the_face_dark():
    image = np.full((120, 200, 3), 180, dtype=np.uint8)
    face, context = face_and_context(image, [50, 30, 110, 90], size=40)
    # Box mapped to 40x40: x 10..22, y 10..30; interior strictly zero, away from it untouched.
    assert np.all(context[11:29, 11:21] == 0)
    outside = np.ones((40, 40), dtype=bool)
    outside[8:32, 8:24] = False
    assert np.all(context[outside] == 180)
    assert np.all(face == 180)


def test_several_faces_each_mask_only_their_own():
    image = random_image(40, 80, seed=3)
    boxes = np.array([[5, 5, 25, 25, 0.9], [50, 10, 70, 30, 0.8]], dtype=np.float32)
    faces, contexts = faces_and_contexts(image, boxes, size=40)
    assert faces.shape == contexts.shape == (2, 40, 40, 3)
    # size 40 on an 80-wide frame halves x: box 0 -> x 2.5..12.5, box 1 -> x 25..35.
    assert np.all(contexts[0, 6:12, 4:12] == 0) and np.all(contexts[0, 12:28, 26:34] > 0)
    assert np.all(contexts[1, 12:28, 26:34] == 0) and np.all(contexts[1, 6:12, 4:12] > 0)
    empty_faces, empty_contexts = faces_and_contexts(image, np.zeros((0, 5)), size=16)
    assert empty_faces.shape == empty_contexts.shape == (0, 16, 16, 3)


def test_face_and_context_errors():
    image = random_image(32, 32)
    with pytest.raises(ValueError, match="covers no pixel"):
        face_and_context(image, [40, 40, 50, 50])
    with pytest.raises(TypeError, match="uint8"):
        face_and_context(image.astype(np.float64), [1, 1, 10, 10])
    with pytest.raises(ValueError, match="face_scale"):
        face_and_context(image, [1, 1, 10, 10], face_scale=0)
    with pytest.raises(ValueError, match=r"\(K, 4\)"):
        faces_and_contexts(image, np.zeros(4))


def test_fallback_box_hand_values():
    # 712x400: side 0.4 * 400 = 160, centre (356, 140).
    np.testing.assert_allclose(fallback_face_box(712, 400), [276, 60, 436, 220])


def test_normalize_nchw():
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    images[1, 2, 3] = (255, 0, 51)
    out = normalize_nchw(images)
    assert out.shape == (2, 3, 4, 4) and out.dtype == np.float32
    assert out[1, 0, 2, 3] == pytest.approx((1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], rel=1e-6)
    assert out[1, 2, 2, 3] == pytest.approx((0.2 - IMAGENET_MEAN[2]) / IMAGENET_STD[2], rel=1e-6)
    assert out[0, 1, 0, 0] == pytest.approx(-IMAGENET_MEAN[1] / IMAGENET_STD[1], rel=1e-6)
    assert normalize_nchw(images[0]).shape == (1, 3, 4, 4)
    with pytest.raises(TypeError, match="uint8"):
        normalize_nchw(images.astype(np.float32))


def write_grey_image(path, height: int, width: int, seed: int) -> np.ndarray:
    # Grey (R = G = B) and 80..200: colour jitter can neither saturate a channel nor reach 0.
    grey = np.random.default_rng(seed).integers(80, 201, size=(height, width), dtype=np.uint8)
    image = np.repeat(grey[..., None], 3, axis=2)
    cv2.imwrite(str(path), image)  # PNG: lossless
    return image


@pytest.fixture
def face_records(tmp_path) -> tuple[list[FaceRecord], list[np.ndarray]]:
    images, records = [], []
    for index in range(3):
        path = tmp_path / f"frame{index}.png"
        images.append(write_grey_image(path, 40, 64, seed=index))
        box = None if index == 2 else np.array([8, 6, 24, 26], dtype=np.float32)
        records.append(FaceRecord(path=path, label=index, face_box=box, split="train"))
    return records, images


def test_dataset_eval_samples_are_the_pipeline_output(face_records):
    records, images = face_records
    dataset = CAHFWDataset(records, size=32, train=False, seed=0, num_classes=7)
    face, context, label = dataset[0]
    assert face.shape == context.shape == (3, 32, 32) and face.dtype == torch.float32
    assert label.dtype == torch.int64 and int(label) == 0
    expected_face, expected_context = face_and_context(images[0], records[0].face_box, 32)
    np.testing.assert_allclose(face.numpy(), normalize_nchw(expected_face)[0])
    np.testing.assert_allclose(context.numpy(), normalize_nchw(expected_context)[0])
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=3)))
    assert batch[0].shape == batch[1].shape == (3, 3, 32, 32)
    assert batch[2].tolist() == [0, 1, 2]


def test_dataset_without_face_box_masks_the_fallback(face_records):
    records, _images = face_records
    dataset = CAHFWDataset(records, size=64, train=False)
    _, context, _ = dataset.sample_arrays(2)
    # 64x40 frame: side 16, centre (32, 14) -> box 24..40 x 6..22; resize 64x40 -> 64x64
    # stretches y by 1.6: rows 9.6..35.2.
    zero = np.all(context == 0, axis=-1)
    assert np.all(zero[11:34, 25:39])
    assert not zero[:, :23].any() and not zero[:, 41:].any() and not zero[:8].any() and not zero[37:].any()


def test_dataset_training_augmentation_is_consistent_and_reproducible(face_records):
    records, _ = face_records
    dataset = CAHFWDataset(records, size=64, train=True, seed=5)
    replay = CAHFWDataset(records, size=64, train=True, seed=5)
    other_seed = CAHFWDataset(records, size=64, train=True, seed=6)
    seen_flipped = seen_plain = differs = False
    for epoch in range(12):  # the same frame in 12 epochs: fresh draws each
        for data in (dataset, replay, other_seed):
            data.set_epoch(epoch)
        face, context, _label = dataset.sample_arrays(0)
        again = replay.sample_arrays(0)
        np.testing.assert_array_equal(context, again[1])  # same seed: same draws
        np.testing.assert_array_equal(face, again[0])
        differs |= not np.array_equal(face, other_seed.sample_arrays(0)[0])
        zero = np.all(context == 0, axis=-1)
        # Box x 8..24 (width 64, no resize in x); flipped: x 40..56. Rows 6..26 -> 9.6..41.6.
        if zero[12:40, 9:23].all():
            seen_plain = True
            assert not zero[:, 30:].any()
        else:
            assert zero[12:40, 41:55].all() and not zero[:, :34].any()
            seen_flipped = True
    assert seen_plain and seen_flipped and differs


def test_dataset_draws_depend_on_the_item_not_on_workers(face_records):
    records, _ = face_records
    dataset = CAHFWDataset([records[0]] * 8, size=32, train=True, seed=1)

    def faces(workers: int, seed: int) -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=workers,
                                             generator=torch.Generator().manual_seed(seed))
        return [batch[0] for batch in loader]

    in_workers = faces(2, 0)
    # The same frame as items 0 and 1 (served by different workers): different draws.
    assert not torch.equal(in_workers[0], in_workers[1])
    # A sample is a function of (seed, epoch, index): neither the worker count nor the loader's
    # generator changes it, so a run resumed with other workers sees the same data.
    for other in (faces(0, 0), faces(2, 7)):
        assert all(torch.equal(a, b) for a, b in zip(in_workers, other))


def test_dataset_errors_name_file_and_field(tmp_path, face_records):
    records, _ = face_records
    with pytest.raises(AnnotationError, match=r"frame0\.png: field 'label'"):
        CAHFWDataset([FaceRecord(records[0].path, 9, None)], size=32, train=False, num_classes=7)
    missing = CAHFWDataset([FaceRecord(tmp_path / "gone.png", 0, None)], size=32, train=False)
    with pytest.raises(AnnotationError, match=r"gone\.png: field 'path'"):
        missing[0]
    outside = CAHFWDataset([FaceRecord(records[0].path, 0, np.array([100, 100, 120, 120]))], size=32, train=False)
    with pytest.raises(AnnotationError, match=r"frame0\.png: field 'face_box'"):
        outside[0]


def test_colour_jitter_ranges():
    from emotion_perception.data.faces import colour_jitter

    image = random_image(16, 16, seed=4)
    np.testing.assert_array_equal(colour_jitter(image, np.random.default_rng(0), strength=0.0), image)
    grey = np.full((8, 8, 3), 100, dtype=np.uint8)
    # Uniform grey: contrast and saturation change nothing, brightness scales by [0.8, 1.2].
    values = {int(colour_jitter(grey, np.random.default_rng(s))[0, 0, 0]) for s in range(50)}
    assert min(values) >= 80 and max(values) <= 120 and len(values) > 10
