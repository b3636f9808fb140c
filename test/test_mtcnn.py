"""MTCNN face detector: NMS, the three networks with the published weights, detection on photos.

The weights (facenet-pytorch 2.6.0's, converted to one file by
``emotion_perception.nets.mtcnn.convert_facenet_pytorch``) come from ``$EP_MTCNN_WEIGHTS`` or the
installed ``external_models/mtcnn.pt``; without them the tests that need them skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from emotion_perception.eval.metrics import box_iou
from emotion_perception.nets.mtcnn import MTCNN_FORMAT, ONet, PNet, RNet, load_mtcnn_nets
from emotion_perception.runtime.face_detection import MTCNNDetector, box_overlap, nms

SKIP_REASON = "MTCNN weights not found: run scripts/setup.sh (it fetches facenet-pytorch 2.6.0)"
ASTRONAUT_FACE = (165, 55, 255, 155)  # by eye: hairline to chin, ear to ear
ASTRONAUT_PATCH = (130, 340, 215, 430)  # the round mission patch on her chest


def _weights_path() -> Path | None:
    env = os.environ.get("EP_MTCNN_WEIGHTS")
    if env:
        return Path(env) if Path(env).is_file() else None
    try:
        from emotion_perception.resources import find_external_model

        return find_external_model("mtcnn")
    except FileNotFoundError:
        return None


@pytest.fixture(scope="module")
def weights() -> Path:
    path = _weights_path()
    if path is None:
        pytest.skip(SKIP_REASON)
    return path


@pytest.fixture(scope="module")
def detector(weights) -> MTCNNDetector:
    return MTCNNDetector(weights)


# --------------------------------------------------------------------------- NMS


def _overlap_reference(a, b, mode: str) -> float:
    """Overlap of two boxes written out by hand, one pair at a time."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    denominator = area_a + area_b - inter if mode == "union" else min(area_a, area_b)
    return inter / denominator if denominator > 0 else 0.0


def _nms_reference(boxes, scores, threshold: float, mode: str) -> list[int]:
    """O(n^2) NMS: walk boxes by falling score; keep one if it overlaps no kept box by more than threshold."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if all(_overlap_reference(boxes[i], boxes[j], mode) <= threshold for j in kept):
            kept.append(i)
    return kept


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    # Clustered boxes so that many overlap, as PNet's proposals do.
    centres = rng.uniform(0, 100, size=(4, 2))[rng.integers(0, 4, size=n)] + rng.normal(0, 8, size=(n, 2))
    sizes = rng.uniform(5, 40, size=(n, 2))
    return np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)


@pytest.mark.parametrize("mode", ["union", "min"])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_matches_brute_force_reference(mode, threshold):
    rng = np.random.default_rng(int(threshold * 10) + (mode == "min"))
    for trial in range(20):
        n = int(rng.integers(0, 80))
        boxes = _random_boxes(rng, n)
        scores = rng.uniform(0, 1, size=n)
        if trial % 4 == 0 and n:  # ties keep input order
            scores = np.round(scores, 1)
        got = nms(boxes, scores, threshold, mode).tolist()
        assert got == _nms_reference(boxes.tolist(), scores.tolist(), threshold, mode)


def test_box_overlap_matches_reference_and_iou():
    rng = np.random.default_rng(5)
    a, b = _random_boxes(rng, 15), _random_boxes(rng, 12)
    for mode in ("union", "min"):
        expected = [[_overlap_reference(x, y, mode) for y in b.tolist()] for x in a.tolist()]
        np.testing.assert_allclose(box_overlap(a, b, mode), expected, atol=1e-12)
    np.testing.assert_allclose(box_overlap(a, b, "union"), box_iou(a, b), atol=1e-12)


def test_min_mode_suppresses_a_nested_box_that_union_keeps():
    boxes = np.array([[0, 0, 100, 100], [10, 10, 40, 40]], dtype=float)
    scores = np.array([0.9, 0.8])
    assert nms(boxes, scores, 0.7, "union").tolist() == [0, 1]  # IoU 0.09
    assert nms(boxes, scores, 0.7, "min").tolist() == [0]  # the small box lies inside


def test_nms_rejects_bad_input():
    with pytest.raises(ValueError, match="overlap mode"):
        nms(np.zeros((1, 4)), np.zeros(1), 0.5, "iou")
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        nms(np.zeros((2, 4)), np.zeros(1), 0.5)


# --------------------------------------------------------------------------- networks


def test_state_dicts_load_strictly_and_outputs_have_the_right_shapes(weights):
    state = torch.load(weights, map_location="cpu", weights_only=True)
    assert state["format"] == MTCNN_FORMAT
    for name, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        cls().load_state_dict(state[name], strict=True)
    pnet, rnet, onet = load_mtcnn_nets(state)
    with torch.inference_mode():
        prob, reg = pnet(torch.zeros(2, 3, 31, 40))
        # 31 -> conv 29 -> pool (ceil) 15 -> 13 -> 11; 40 -> 38 -> 19 -> 17 -> 15
        assert prob.shape == (2, 2, 11, 15) and reg.shape == (2, 4, 11, 15)
        torch.testing.assert_close(prob.sum(dim=1), torch.ones(2, 11, 15))
        prob, reg = rnet(torch.zeros(3, 3, 24, 24))
        assert prob.shape == (3, 2) and reg.shape == (3, 4)
        prob, reg, points = onet(torch.zeros(3, 3, 48, 48))
        assert prob.shape == (3, 2) and reg.shape == (3, 4) and points.shape == (3, 10)
        torch.testing.assert_close(prob.sum(dim=1), torch.ones(3))


def test_random_networks_refuse_a_checkpoint_of_the_wrong_format():
    state = {"format": MTCNN_FORMAT, "pnet": PNet().state_dict(), "rnet": RNet().state_dict(),
             "onet": ONet().state_dict()}
    load_mtcnn_nets(state)  # the right keys and shapes load
    state["rnet"] = dict(state["rnet"], **{"dense4.weight": torch.zeros(128, 575)})
    with pytest.raises(ValueError, match=r"rnet\.dense4\.weight.*\(128, 576\)"):
        load_mtcnn_nets(state)
    with pytest.raises(ValueError, match="'format'"):
        load_mtcnn_nets({"pnet": {}})


# --------------------------------------------------------------------------- detection


def test_astronaut_one_face_and_not_the_mission_patch(detector):
    skimage_data = pytest.importorskip("skimage.data")
    image = skimage_data.astronaut()
    boxes, landmarks = detector.detect_with_landmarks(image)
    assert boxes.dtype == np.float32 and boxes.shape[1] == 5 and landmarks.shape == (boxes.shape[0], 5, 2)
    assert np.all(np.diff(boxes[:, 4]) <= 0), "highest score first"
    confident = boxes[boxes[:, 4] >= 0.9]
    assert len(confident) == 1, boxes
    assert box_iou(confident[:, :4], [ASTRONAUT_FACE])[0, 0] > 0.5
    assert np.all(box_iou(boxes[:, :4], [ASTRONAUT_PATCH]) < 0.1), "the mission patch is not a face"
    # eyes above the nose above the mouth, all inside the face box
    eyes, nose, mouth = landmarks[0, :2], landmarks[0, 2], landmarks[0, 3:]
    assert eyes[0, 0] < eyes[1, 0] and mouth[0, 0] < mouth[1, 0]
    assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min()
    x1, y1, x2, y2 = boxes[0, :4]
    assert np.all((landmarks[0, :, 0] > x1) & (landmarks[0, :, 0] < x2))
    assert np.all((landmarks[0, :, 1] > y1) & (landmarks[0, :, 1] < y2))


def test_boxes_are_clipped_to_the_image(detector):
    skimage_data = pytest.importorskip("skimage.data")
    image = np.ascontiguousarray(skimage_data.astronaut()[40:, 200:])  # her face cut at the left edge
    boxes = detector.detect(image)
    assert len(boxes)
    assert np.all(boxes[:, [0, 1]] >= 0)
    assert np.all(boxes[:, 2] <= image.shape[1]) and np.all(boxes[:, 3] <= image.shape[0])


def test_flat_grey_image_has_no_face(detector):
    boxes, landmarks = detector.detect_with_landmarks(np.full((480, 640, 3), 128, dtype=np.uint8))
    assert boxes.shape == (0, 5) and boxes.dtype == np.float32 and landmarks.shape == (0, 5, 2)


def test_tiny_image_has_no_face_and_bad_input_is_refused(detector):
    assert detector.detect(np.zeros((10, 10, 3), dtype=np.uint8)).shape == (0, 5)
    with pytest.raises(TypeError, match="uint8"):
        detector.detect(np.zeros((20, 20, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        detector.detect(np.zeros((20, 20), dtype=np.uint8))


# --------------------------------------------------------------------------- bad weights


def test_missing_weights_give_one_clear_error(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=r"nope\.pt.*emotion_perception\.mtcnn/1"):
        MTCNNDetector(missing)


def test_corrupt_weights_give_one_clear_error(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file" * 10)
    with pytest.raises(ValueError,
                       match=r"corrupt\.pt.*not a readable torch checkpoint.*emotion_perception\.mtcnn/1") as info:
        MTCNNDetector(corrupt)
    assert info.value.__cause__ is None and info.value.__suppress_context__

    wrong = tmp_path / "wrong.pt"
    torch.save({"format": "something/else"}, wrong)
    with pytest.raises(ValueError, match=r"wrong\.pt.*'format'.*emotion_perception\.mtcnn/1"):
        MTCNNDetector(wrong)

    truncated = tmp_path / "truncated.pt"
    good = {"format": MTCNN_FORMAT, "pnet": PNet().state_dict(), "rnet": RNet().state_dict(),
            "onet": ONet().state_dict()}
    torch.save(good, truncated)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated\.pt.*not a readable torch checkpoint"):
        MTCNNDetector(truncated)


def test_convert_facenet_pytorch_folder_to_one_file(tmp_path):
    from emotion_perception.nets.mtcnn import convert_facenet_pytorch

    nets = {"pnet": PNet(), "rnet": RNet(), "onet": ONet()}
    for name, net in nets.items():
        torch.save(net.state_dict(), tmp_path / f"{name}.pt")
    out = tmp_path / "mtcnn.pt"
    torch.save(convert_facenet_pytorch(tmp_path), out)
    state = torch.load(out, weights_only=True)
    assert state["format"] == MTCNN_FORMAT
    for name, net in nets.items():
        for key, value in net.state_dict().items():
            torch.testing.assert_close(state[name][key], value)
    MTCNNDetector(out)  # loads

    (tmp_path / "rnet.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"rnet\.pt.*facenet-pytorch 2\.6\.0"):
        convert_facenet_pytorch(tmp_path)


# --------------------------------------------------------------------------- bench faces


def test_match_faces_is_greedy_by_score_one_detection_per_face():
    from emotion_perception.bench.face_detectors import match_faces

    truth = [[0, 0, 10, 10], [20, 0, 30, 10]]
    detections = [[0, 0, 10, 10, 0.5],   # face 0, but a better-scored detection took it first
                  [1, 0, 11, 10, 0.9],   # face 0
                  [21, 0, 31, 10, 0.8],  # face 1
                  [50, 50, 60, 60, 0.7]]  # nothing
    assert match_faces(detections, truth, 0.4) == (2, 2)
    assert match_faces(np.zeros((0, 5)), truth, 0.4) == (0, 0)
    assert match_faces(detections, np.zeros((0, 4)), 0.4) == (0, 4)


def test_bench_faces_command_on_the_astronaut(weights, tmp_path, capsys):
    pytest.importorskip("skimage.data")
    import argparse
    import json

    from emotion_perception.bench import face_detectors

    truth = Path(__file__).parent / "data" / "real_faces.json"
    parser = argparse.ArgumentParser()
    face_detectors.add_arguments(parser)
    out = tmp_path / "faces.json"
    args = parser.parse_args(["--images", "skimage:astronaut", "--truth", str(truth), "--detectors", "mtcnn",
                              "--mtcnn-weights", str(weights), "--warmup", "0", "--json", str(out)])
    assert face_detectors.main(args) == 0
    row = json.loads(out.read_text())["results"][0]
    assert (row["detector"], row["faces"], row["matched"], row["false_faces"]) == ("mtcnn", 1, 1, 0)
    assert "| mtcnn | 1 / 1 | 1.00 | 0 |" in capsys.readouterr().out

    args.images = [str(tmp_path / "elsewhere.jpg")]
    assert face_detectors.main(args) == 1
    assert "elsewhere.jpg: no such file" in capsys.readouterr().err
