"""BENet evaluation on a tiny trained run: files, and every number recomputed independently."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from emotion_perception.eval import metrics as M
from emotion_perception.train import benet as TB
from emotion_perception.train.checkpoints import save_checkpoint
from emotion_perception.train.recipes import load_recipe

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from emotion_perception.data.synth.scenes import EMOTIC_SYNTH_PRESETS
    from emotion_perception.data.synth.writers import write_emotic_dataset

    root = tmp_path_factory.mktemp("synth_emotic")
    config = dataclasses.replace(EMOTIC_SYNTH_PRESETS["emotic"], width=128, height=96)
    write_emotic_dataset(root, 30, seed=5, config=config, workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def evaluated(synth_root: Path, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny BENet trained for a few steps with all heads, evaluated through the CLI."""
    from emotion_perception.cli import main

    run_dir = tmp_path_factory.mktemp("run")
    values = {**load_recipe(REPO / "config" / "train_benet_paper_512_adam_lr1e-3.yaml"), "preset": "tiny",
              "data_root": str(synth_root), "batch_size": 4, "workers": 0, "epochs": 2, "max_train_images": 8,
              "max_val_images": 2, "augmentation": "modes_only"}
    TB.train_benet(values, argparse.Namespace(out=run_dir, device="cpu", config="test"))
    out = tmp_path_factory.mktemp("eval")
    code = main(["eval", "benet", "--model", str(run_dir / "best.pt"), "--data", str(synth_root),
                 "--split", "test", "--out", str(out), "--device", "cpu", "--examples", "2",
                 # COCO's wide view (the defaults are the public test's: 15 peaks over 0.1, flip):
                 # a barely trained tiny model has few peaks over 0.1, and the hand recomputation
                 # below reads one forward pass.
                 "--max-people", "100", "--detection-threshold", "0.01", "--no-flip-test"])
    assert code == 0
    return run_dir, out


def test_eval_defaults_are_the_public_test_settings() -> None:
    from emotion_perception.cli import build_parser

    args = build_parser().parse_args(["eval", "benet", "--model", "x.pt", "--data", "d"])
    assert (args.max_people, args.detection_threshold, args.flip_test) == (15, 0.1, True)


def test_eval_writes_every_file(evaluated: tuple[Path, Path]) -> None:
    import matplotlib.image

    _, out = evaluated
    for name in ("metrics.json", "predictions.npz", "ap_per_category.png", "pr_curves_bu.png",
                 "pr_curves_fusion.png", "examples/example_00.png", "examples/example_01.png"):
        assert (out / name).is_file(), name
    assert not (out / "examples" / "example_02.png").exists()
    image = matplotlib.image.imread(out / "examples" / "example_00.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 500
    metrics = json.loads((out / "metrics.json").read_text())  # strict JSON: NaN written as null
    assert set(metrics["gt_centre"]) == {"bu", "pc", "fusion"}
    assert list(metrics["joint"]["mAP_per_iou"]) == [f"{t:.2f}" for t in M.COCO_IOU_THRESHOLDS]
    assert {"AP", "AP50", "AP75"} <= set(metrics["detection"])


def _sklearn_map(y_true: np.ndarray, y_score: np.ndarray) -> tuple[float, list[float | None]]:
    aps: list[float | None] = []
    for c in range(y_true.shape[1]):
        aps.append(average_precision_score(y_true[:, c], y_score[:, c]) if y_true[:, c].any() else None)
    defined = [ap for ap in aps if ap is not None]
    return float(np.mean(defined)), aps


def test_metrics_json_equals_sklearn_on_predictions(evaluated: tuple[Path, Path]) -> None:
    _, out = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    saved = np.load(out / "predictions.npz")
    y_true = saved["y_true"]
    assert y_true.shape == saved["y_score"].shape == (metrics["num_people"], 26)
    assert metrics["num_people"] > 5 and metrics["num_images"] == len(saved["image_paths"])
    np.testing.assert_allclose(saved["y_score_fusion"], (saved["y_score"] + saved["y_score_pc"]) / 2, rtol=1e-6)
    for method, key in (("bu", "y_score"), ("pc", "y_score_pc"), ("fusion", "y_score_fusion")):
        reference_map, reference_aps = _sklearn_map(y_true, saved[key])
        assert metrics["gt_centre"][method]["mAP"] == pytest.approx(reference_map, abs=1e-9), method
        for reference, ours in zip(reference_aps, metrics["gt_centre"][method]["AP"].values()):
            assert (ours is None) if reference is None else ours == pytest.approx(reference, abs=1e-9)
    assert metrics["mAP"] == metrics["gt_centre"]["bu"]["mAP"]


def test_detection_and_joint_numbers_recompute_from_predictions(evaluated: tuple[Path, Path]) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _, out = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    saved = np.load(out / "predictions.npz")
    num_images = len(saved["image_paths"])
    # COCO directly, detections through loadRes (the documented route), boxes as xywh.
    gt = COCO()
    gt.dataset = {
        "images": [{"id": i} for i in range(num_images)],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [
            {"id": k + 1, "image_id": int(i), "category_id": 1, "iscrowd": 0,
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
             "area": float((b[2] - b[0]) * (b[3] - b[1]))}
            for k, (i, b) in enumerate(zip(saved["person_image"], saved["gt_boxes"]))
        ],
    }
    gt.createIndex()
    results = [{"image_id": int(i), "category_id": 1, "score": float(s),
                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
               for i, b, s in zip(saved["det_image"], saved["det_boxes"], saved["det_scores"])]
    evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert metrics["detection"]["AP"] == pytest.approx(max(evaluator.stats[0], 0.0), abs=1e-9)
    assert metrics["detection"]["AP50"] == pytest.approx(max(evaluator.stats[1], 0.0), abs=1e-9)

    images = []
    for i in range(num_images):
        people, dets = saved["person_image"] == i, saved["det_image"] == i
        images.append(M.ImageDetections(saved["gt_boxes"][people], saved["y_true"][people], saved["det_boxes"][dets],
                                        saved["det_scores"][dets], saved["det_emotions"][dets]))
    joint = M.joint_protocol_map(images)
    assert metrics["joint"]["mAP"] == pytest.approx(joint["mAP"], abs=1e-9)


def test_scores_are_read_where_the_protocols_say(evaluated: tuple[Path, Path], synth_root: Path) -> None:
    """Recompute the first image's BU and PC scores from the network by hand."""
    import cv2

    from emotion_perception.data.imageio import read_rgb
    from emotion_perception.nets.factory import load_model_from_checkpoint

    run_dir, out = evaluated
    saved = np.load(out / "predictions.npz")
    model, _ = load_model_from_checkpoint(run_dir / "best.pt")
    size = model.config.input_size[0]
    image = read_rgb(saved["image_paths"][0])
    height, width = image.shape[:2]
    scale = min(size / width, size / height)
    new_w, new_h = round(width * scale), round(height * scale)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = (124, 116, 104)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    mean, std = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255
    x = torch.from_numpy(((canvas - mean) / std).transpose(2, 0, 1)[None].astype(np.float32))
    with torch.no_grad():
        outputs = model(x)
    # Emotion probability at half resolution: mean of the 1/2 map and the upsampled 1/4 map.
    quarter = torch.nn.functional.interpolate(torch.sigmoid(outputs["emotions_4"]), scale_factor=2.0, mode="bilinear")
    emotion_maps = ((quarter + torch.sigmoid(outputs["emotions_2"])) / 2)[0].numpy()
    # The best detection: the highest heatmap peak, its size read there, mapped back to the image.
    up = lambda t: torch.nn.functional.interpolate(t, scale_factor=2.0, mode="bilinear")  # noqa: E731
    heat = ((up(torch.sigmoid(outputs["heatmap_4"])) + torch.sigmoid(outputs["heatmap_2"])) / 2)[0, 0].numpy()
    sizes = ((up(torch.relu(outputs["size_4"]) * 2) + torch.relu(outputs["size_2"])) / 2)[0].numpy()
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    centre = np.array([(col + 0.5) * 2, (row + 0.5) * 2])
    half_size = sizes[:, row, col]  # (width, height) in 1/2-map pixels = half the size in input pixels
    expected_box = (np.r_[centre - half_size, centre + half_size] - np.array([pad_x, pad_y, pad_x, pad_y])) / scale
    first = np.flatnonzero(saved["det_image"] == 0)[0]
    assert saved["det_scores"][first] == pytest.approx(heat[row, col], abs=1e-5)
    np.testing.assert_allclose(saved["det_boxes"][first], expected_box, atol=1e-3)

    people = np.flatnonzero(saved["person_image"] == 0)
    assert len(people)
    for person in people:
        x1, y1, x2, y2 = saved["gt_boxes"][person] * scale + np.array([pad_x, pad_y, pad_x, pad_y])
        col, row = int(((x1 + x2) / 2) // 2), int(((y1 + y2) / 2) // 2)
        np.testing.assert_allclose(saved["y_score"][person], emotion_maps[:, row, col], atol=1e-5)

        # Person-centric: the person's pixels cropped, letterboxed, through the image-level head.
        bx1, by1, bx2, by2 = saved["gt_boxes"][person]
        crop = image[int(np.floor(by1)):int(np.ceil(by2)), int(np.floor(bx1)):int(np.ceil(bx2))]
        crop_scale = min(size / crop.shape[1], size / crop.shape[0])
        cw, ch = (min(size, max(1, round(crop.shape[1] * crop_scale))),
                  min(size, max(1, round(crop.shape[0] * crop_scale))))
        view = np.empty((size, size, 3), np.uint8)
        view[:] = (124, 116, 104)
        interpolation = cv2.INTER_AREA if crop_scale < 1 else cv2.INTER_LINEAR
        view[(size - ch) // 2:(size - ch) // 2 + ch, (size - cw) // 2:(size - cw) // 2 + cw] = cv2.resize(
            crop, (cw, ch), interpolation=interpolation)
        v = torch.from_numpy(((view - mean) / std).transpose(2, 0, 1)[None].astype(np.float32))
        with torch.no_grad():
            expected = torch.sigmoid(model(v, heads="all")["person_centric"])[0].numpy()
        np.testing.assert_allclose(saved["y_score_pc"][person], expected, atol=1e-5)


def test_eval_errors_are_one_line(tmp_path: Path, synth_root: Path) -> None:
    from emotion_perception.cli import main

    assert main(["eval", "benet", "--model", str(tmp_path / "none.pt"), "--data", str(synth_root),
                 "--out", str(tmp_path / "e")]) == 2
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert main(["eval", "benet", "--model", str(tmp_path / "junk.pt"), "--data", str(synth_root),
                 "--out", str(tmp_path / "e")]) == 2


def test_eval_cahfw_dispatches(tmp_path: Path) -> None:
    from sklearn.metrics import accuracy_score

    from emotion_perception.cli import main
    from emotion_perception.data.synth.scenes import CAER_SYNTH_PRESETS
    from emotion_perception.data.synth.writers import write_caer_dataset
    from emotion_perception.nets.factory import create_model

    write_caer_dataset(tmp_path / "caer", 16, seed=1,
                       config=dataclasses.replace(CAER_SYNTH_PRESETS["caer"], width=64, height=64), progress=False)
    torch.manual_seed(0)
    model = create_model("cahfw", "tiny")
    save_checkpoint(tmp_path / "cahfw.pt", model=model, model_name="cahfw", model_config=model.config)
    assert main(["eval", "cahfw", "--model", str(tmp_path / "cahfw.pt"), "--data", str(tmp_path / "caer"),
                 "--split", "test", "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    saved = np.load(tmp_path / "out" / "predictions.npz")
    assert metrics["accuracy"] == pytest.approx(accuracy_score(saved["y_true"], saved["y_score"].argmax(1)))


def test_eval_skips_and_reports_unusable_images(tmp_path: Path, synth_root: Path, caplog) -> None:
    import logging
    import shutil

    from emotion_perception.cli import main
    from emotion_perception.data.emotic import load_emotic
    from emotion_perception.nets.factory import create_model

    root = tmp_path / "emotic"
    shutil.copytree(synth_root, root)
    test_images = [record.path for record in load_emotic(root, "test")]
    test_images[0].unlink()
    test_images[1].write_bytes(b"not an image")
    jpeg = test_images[2].read_bytes()
    test_images[2].write_bytes(jpeg[:jpeg.find(b"\xff\xda")])  # header (and size) readable, no pixels
    torch.manual_seed(0)
    model = create_model("benet", "tiny")
    save_checkpoint(tmp_path / "benet.pt", model=model, model_name="benet", model_config=model.config)
    with caplog.at_level(logging.WARNING):
        code = main(["eval", "benet", "--model", str(tmp_path / "benet.pt"), "--data", str(root),
                     "--split", "test", "--out", str(tmp_path / "out"), "--device", "cpu", "--examples", "0"])
    assert code == 0
    saved = np.load(tmp_path / "out" / "predictions.npz")
    assert len(set(saved["person_image"].tolist())) <= len(test_images) - 3
    warning = " ".join(record.getMessage() for record in caplog.records)
    assert "3 images skipped" in warning
    assert all(path.name in warning for path in test_images[:3])


def test_eval_cahfw_skips_and_reports_unusable_images(tmp_path: Path, caplog) -> None:
    import logging

    from emotion_perception.cli import main
    from emotion_perception.data.synth.scenes import CAER_SYNTH_PRESETS
    from emotion_perception.data.synth.writers import write_caer_dataset
    from emotion_perception.nets.factory import create_model

    write_caer_dataset(tmp_path / "caer", 16, seed=1,
                       config=dataclasses.replace(CAER_SYNTH_PRESETS["caer"], width=64, height=64), progress=False)
    broken = sorted((tmp_path / "caer" / "CAER-S" / "test").rglob("*.png"))[0]
    broken.write_bytes(b"\x89PNG truncated")
    torch.manual_seed(0)
    model = create_model("cahfw", "tiny")
    save_checkpoint(tmp_path / "cahfw.pt", model=model, model_name="cahfw", model_config=model.config)
    with caplog.at_level(logging.WARNING):
        assert main(["eval", "cahfw", "--model", str(tmp_path / "cahfw.pt"), "--data", str(tmp_path / "caer"),
                     "--split", "test", "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    tested = len(list((tmp_path / "caer" / "CAER-S" / "test").rglob("*.png")))
    assert len(np.load(tmp_path / "out" / "predictions.npz")["y_true"]) == tested - 1
    warning = " ".join(record.getMessage() for record in caplog.records)
    assert "1 images skipped" in warning and broken.name in warning
