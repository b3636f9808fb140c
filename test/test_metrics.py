"""Metrics against independent references: scikit-learn, pycocotools and hand computations."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from emotion_perception.eval import metrics as M


def _random_multilabel(rng: np.random.Generator, n: int, c: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    y_true = (rng.random((n, c)) < 0.3).astype(np.float32)
    y_score = rng.random((n, c))
    if ties:
        # Few distinct values: many tied scores, across positives and negatives.
        y_score = np.round(y_score * 4) / 4
    return y_true, y_score


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_average_precision_equals_sklearn(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    y_true, y_score = _random_multilabel(rng, n=int(rng.integers(5, 60)), c=26, ties=ties)
    y_true[:, 3] = 0  # a category absent from the split
    y_true[0, 5] = 1  # and one with a single positive
    ours = M.per_category_ap(y_true, y_score)
    for c in range(26):
        if y_true[:, c].sum() == 0:
            assert np.isnan(ours[c])
            continue
        assert ours[c] == pytest.approx(skm.average_precision_score(y_true[:, c], y_score[:, c]), abs=1e-12)
    with_positives = y_true.sum(axis=0) > 0
    reference_mean = skm.average_precision_score(y_true[:, with_positives], y_score[:, with_positives], average="macro")
    assert M.mean_average_precision(y_true, y_score) == pytest.approx(reference_mean, abs=1e-12)


def test_average_precision_hand_case() -> None:
    # Scores .9(+) .8(-) .7(+) .6(-): P at the positives 1 and 2/3, recall steps of 1/2 each.
    y_true = np.array([1, 0, 1, 0])
    y_score = np.array([0.9, 0.8, 0.7, 0.6])
    assert M.average_precision(y_true, y_score) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # A tie between a positive and a negative at the top counts as one threshold: P = 1/2 there.
    assert M.average_precision(np.array([1, 0, 1]), np.array([0.5, 0.5, 0.1])) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_no_positive_is_nan_and_excluded() -> None:
    y_true = np.zeros((4, 2))
    y_true[1, 1] = 1
    y_score = np.array([[0.1, 0.2], [0.2, 0.9], [0.3, 0.1], [0.4, 0.3]])
    aps = M.per_category_ap(y_true, y_score)
    assert np.isnan(aps[0]) and aps[1] == pytest.approx(1.0)
    assert M.mean_average_precision(y_true, y_score) == pytest.approx(1.0)
    assert np.isnan(M.mean_average_precision(np.zeros((3, 2)), np.ones((3, 2))))


@pytest.mark.parametrize("ties", [False, True])
def test_precision_recall_curve_equals_sklearn(ties: bool) -> None:
    rng = np.random.default_rng(7)
    y_true, y_score = _random_multilabel(rng, 40, 1, ties)
    y_true[0] = 1
    precision, recall, thresholds = M.precision_recall_curve(y_true[:, 0], y_score[:, 0])
    ref_p, ref_r, ref_t = skm.precision_recall_curve(y_true[:, 0], y_score[:, 0])
    np.testing.assert_allclose(precision, ref_p)
    np.testing.assert_allclose(recall, ref_r)
    np.testing.assert_allclose(thresholds, ref_t)


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        M.per_category_ap(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="binary"):
        M.per_category_ap(np.full((3, 2), 0.5), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        M.per_category_ap(np.ones((2, 1)), np.array([[np.nan], [0.1]]))


def test_fusion_is_the_mean() -> None:
    bu = np.array([[0.2, 0.8]])
    pc = np.array([[0.6, 0.0]])
    np.testing.assert_allclose(M.fuse_scores(bu, pc), [[0.4, 0.4]])


@pytest.mark.parametrize("seed", range(3))
def test_classification_metrics_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 6, 50)  # class 6 never occurs in y_true
    y_pred = rng.integers(0, 7, 50)
    np.testing.assert_array_equal(M.confusion_matrix(y_true, y_pred, 7),
                                  skm.confusion_matrix(y_true, y_pred, labels=range(7)))
    assert M.accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recall = skm.recall_score(y_true, y_pred, labels=range(7), average=None, zero_division=np.nan)
    np.testing.assert_allclose(M.per_class_accuracy(y_true, y_pred, 7), recall)
    assert np.isnan(M.per_class_accuracy(y_true, y_pred, 7)[6])
    with pytest.raises(ValueError, match="outside"):
        M.confusion_matrix([0, 9], [0, 1], 7)


# --------------------------------------------------------------------------- detection


def _image(gt_boxes, det_boxes, det_scores, gt_labels=None, det_emotions=None) -> M.ImageDetections:
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    return M.ImageDetections(
        gt_boxes=gt_boxes,
        gt_labels=np.zeros((len(gt_boxes), 2)) if gt_labels is None else np.asarray(gt_labels, dtype=np.float64),
        det_boxes=det_boxes,
        det_scores=np.asarray(det_scores, dtype=np.float64),
        det_emotions=(np.zeros((len(det_boxes), 2)) if det_emotions is None
                      else np.asarray(det_emotions, dtype=np.float64)),
    )


def test_box_iou_hand_values() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(M.box_iou(a, b), [[1.0, 50 / 150, 0.0]])
    np.testing.assert_allclose(M.xyxy_to_xywh(np.array([[10, 20, 40, 80]])), [[10, 20, 30, 60]])


def test_detection_ap_hand_built_case() -> None:
    # Image 1: GT A found exactly (score .9) plus a false positive (score .8) far away.
    # Image 2: GT B found with IoU 0.637 (score .7): a hit for IoU thresholds 0.50,
    # 0.55, 0.60 and a miss above. The boxes sit far from the origin with x2 < width, so
    # reading x1y1x2y2 as xywh would change every IoU.
    a = [100, 100, 140, 180]
    b = [300, 50, 400, 150]
    images = [
        _image([a], [a, [500, 500, 540, 560]], [0.9, 0.8]),
        _image([b], [[300, 50, 400, 207]], [0.7]),
    ]
    # IoU of B (area 10000) and its detection (area 15700): 10000/15700 = 0.637.
    assert M.box_iou(images[1].det_boxes, images[1].gt_boxes)[0, 0] == pytest.approx(10000 / 15700)
    # COCO interpolates precision at 101 recall points (monotone from the right).
    # Hit at all 3 detections: PR points (R=.5,P=1), (.5,.5), (1, 2/3) -> 51 points at 1, 50 at 2/3.
    ap_hit = (51 * 1.0 + 50 * 2 / 3) / 101
    # B missed: only R=.5 reachable -> 51 points at 1, the rest 0.
    ap_miss = 51 / 101
    expected_ap = (3 * ap_hit + 7 * ap_miss) / 10
    stats = M.detection_ap(images)
    assert stats["AP50"] == pytest.approx(ap_hit, abs=1e-9)
    assert stats["AP75"] == pytest.approx(ap_miss, abs=1e-9)
    assert stats["AP"] == pytest.approx(expected_ap, abs=1e-9)
    assert stats["AR100"] == pytest.approx((3 * 1.0 + 7 * 0.5) / 10, abs=1e-9)


def test_detection_ap_keeps_the_best_detections_per_image_and_a_headline_ap() -> None:
    # The public decoding keeps 15 detections: the headline AP must stay defined (COCOeval's
    # summary reads AP at maxDets 100 only), computed on each image's best-scored detections.
    a, b = [100, 100, 140, 180], [300, 50, 400, 150]
    images = [
        _image([a], [[500, 500, 540, 560], a], [0.8, 0.9]),  # the hit scores higher
        _image([b], [[300, 50, 400, 207]], [0.7]),
    ]
    stats = M.detection_ap(images, max_detections=1)
    # Kept: a (hit at every IoU) and B's detection (IoU 0.637: a hit at 0.50-0.60 only).
    assert stats["AP"] == pytest.approx((3 * 1.0 + 7 * 51 / 101) / 10, abs=1e-9)
    assert stats["AP50"] == pytest.approx(1.0)


def test_detection_ap_without_detections_is_zero() -> None:
    stats = M.detection_ap([_image([[0, 0, 50, 50]], np.zeros((0, 4)), [])])
    assert stats["AP"] == 0.0 and stats["AR100"] == 0.0


def test_greedy_match_prefers_high_scores() -> None:
    gt = np.array([[0, 0, 10, 10], [100, 100, 110, 110]])
    det = np.array([[0, 0, 10, 9], [0, 0, 10, 10], [101, 100, 110, 110]])
    # The better-scored det 0 takes GT 0 although det 1 overlaps it more; det 1 is left over.
    np.testing.assert_array_equal(M.greedy_match(gt, det, [0.9, 0.5, 0.8], 0.5), [0, 2])
    np.testing.assert_array_equal(M.greedy_match(gt, det, [0.9, 0.5, 0.8], 0.95), [1, -1])


def test_joint_protocol_hand_built_case() -> None:
    # Two categories, three GT people over two images.
    gt1 = [[0, 0, 100, 100], [200, 0, 300, 100]]
    labels1 = [[1, 0], [0, 1]]
    gt2 = [[0, 0, 50, 50]]
    labels2 = [[1, 1]]
    # Image 1: person 0 detected exactly; person 1 detected with IoU 0.82 (box 82 wide inside it);
    # a false positive far away with confident emotions that must not count.
    det1 = [[0, 0, 100, 100], [200, 0, 282, 100], [500, 500, 600, 600]]
    emo1 = [[0.9, 0.2], [0.3, 0.6], [1.0, 1.0]]
    # Image 2: the person is missed (no detection) -> all-zero prediction.
    images = [
        _image(gt1, det1, [0.9, 0.8, 0.7], labels1, emo1),
        _image(gt2, np.zeros((0, 4)), [], labels2, np.zeros((0, 2))),
    ]
    y_true, y_score = M.joint_protocol_scores(images, 0.5)
    np.testing.assert_allclose(y_true, [[1, 0], [0, 1], [1, 1]])
    np.testing.assert_allclose(y_score, [[0.9, 0.2], [0.3, 0.6], [0.0, 0.0]])
    # Above IoU 0.82 person 1 is missed too.
    _, y_score_strict = M.joint_protocol_scores(images, 0.85)
    np.testing.assert_allclose(y_score_strict, [[0.9, 0.2], [0.0, 0.0], [0.0, 0.0]])

    # Hand APs. IoU <= 0.82 (0.50..0.80, 7 thresholds):
    #   cat 0 scores (.9+, .3-, 0+): AP = .5*1 + .5*(2/3) = 5/6
    #   cat 1 scores (.2-, .6+, 0+): AP = .5*1 + .5*(2/3) = 5/6
    # IoU >= 0.85 (3 thresholds):
    #   cat 0 scores (.9+, 0-, 0+): tie at 0 -> AP = .5*1 + .5*(2/3) = 5/6
    #   cat 1 scores (.2-, 0+, 0+): P at .2 is 0, at 0 is 2/3, recall 0 -> 1: AP = 2/3
    result = M.joint_protocol_map(images)
    assert list(result["mAP_per_iou"]) == [f"{t:.2f}" for t in np.linspace(0.5, 0.95, 10)]
    for key in ("0.50", "0.60", "0.80"):
        assert result["mAP_per_iou"][key] == pytest.approx(5 / 6)
    for key in ("0.85", "0.90", "0.95"):
        assert result["mAP_per_iou"][key] == pytest.approx((5 / 6 + 2 / 3) / 2)
    assert result["mAP"] == pytest.approx((7 * 5 / 6 + 3 * 0.75) / 10)
    # The same numbers from scikit-learn on the scores the protocol produced.
    reference = np.mean([skm.average_precision_score(y_true[:, c], y_score[:, c]) for c in range(2)])
    assert result["mAP_per_iou"]["0.50"] == pytest.approx(reference)
