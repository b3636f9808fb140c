"""``eval benet|cahfw --backend onnxruntime [--precision int8]``: the deployed graph scored with the
papers' metrics, against the checkpoint's module in PyTorch as the reference."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from emotion_perception.train.checkpoints import save_checkpoint

pytest.importorskip("onnxruntime")


def _eval(command: str, model: Path, data: Path, out: Path, cache: Path, *extra: str) -> dict:
    from emotion_perception.cli import main

    code = main(["eval", command, "--model", str(model), "--data", str(data), "--split", "test", "--out", str(out),
                 "--device", "cpu", "--threads", "1", "--cache-dir", str(cache), *extra])
    assert code == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def benet_case(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(checkpoint, EMOTIC root, cache): a tiny BENet with every head (PC included) and random
    weights (their heatmaps have peaks everywhere, so decoding and matching are exercised), on
    small synthetic scenes."""
    from emotion_perception.data.synth.scenes import EMOTIC_SYNTH_PRESETS
    from emotion_perception.data.synth.writers import write_emotic_dataset
    from emotion_perception.nets.factory import create_model

    root = tmp_path_factory.mktemp("eval_backends_benet")
    config = dataclasses.replace(EMOTIC_SYNTH_PRESETS["emotic"], width=128, height=96)
    write_emotic_dataset(root / "emotic", 30, seed=5, config=config, workers=1, progress=False)
    torch.manual_seed(0)
    model = create_model("benet", "tiny")
    assert model.config.person_centric_head
    save_checkpoint(root / "benet.pt", model=model, model_name="benet", model_config=model.config)
    return root / "benet.pt", root / "emotic", root / "cache"


BENET_OPTIONS = ("--examples", "1", "--max-people", "100", "--detection-threshold", "0.01")


def test_benet_onnxruntime_fp32_scores_as_torch(benet_case, tmp_path: Path, caplog) -> None:
    model, data, cache = benet_case
    reference = _eval("benet", model, data, tmp_path / "torch", cache, *BENET_OPTIONS)
    with caplog.at_level(logging.WARNING):
        deployed = _eval("benet", model, data, tmp_path / "ort", cache, *BENET_OPTIONS, "--backend", "onnxruntime")
    assert reference["deployment"]["backend"] == "torch"
    assert (deployed["deployment"]["backend"], deployed["deployment"]["precision"]) == ("onnxruntime", "fp32")
    assert deployed["deployment"]["card"]["precision"] == "fp32"
    assert deployed["num_people"] == reference["num_people"] > 5
    # Same tensors, same metrics: every protocol's headline and per-category numbers.
    assert deployed["gt_centre"]["bu"]["mAP"] == pytest.approx(reference["gt_centre"]["bu"]["mAP"], abs=1e-3)
    for name, ap in reference["gt_centre"]["bu"]["AP"].items():
        assert (deployed["gt_centre"]["bu"]["AP"][name] is None) if ap is None else \
            deployed["gt_centre"]["bu"]["AP"][name] == pytest.approx(ap, abs=1e-3)
    for key in ("AP", "AP50", "AP75"):
        assert deployed["detection"][key] == pytest.approx(reference["detection"][key], abs=1e-3)
    assert deployed["joint"]["mAP"] == pytest.approx(reference["joint"]["mAP"], abs=1e-3)
    ours, theirs = np.load(tmp_path / "ort" / "predictions.npz"), np.load(tmp_path / "torch" / "predictions.npz")
    # Random weights give scores that spread little (std ~2e-3 at the people): tolerances well below it.
    assert theirs["y_score"].std() > 100 * 1e-5
    np.testing.assert_allclose(ours["y_score"], theirs["y_score"], atol=1e-5)
    assert len(ours["det_scores"]) == len(theirs["det_scores"]) > 0
    np.testing.assert_allclose(ours["det_scores"], theirs["det_scores"], atol=1e-5)
    np.testing.assert_allclose(ours["det_boxes"], theirs["det_boxes"], atol=1e-2)
    # The deploy graph has no person-centric head: said once, and left out rather than faked.
    assert set(reference["gt_centre"]) == {"bu", "pc", "fusion"}
    assert set(deployed["gt_centre"]) == {"bu"} and set(deployed["not_available"]) == {"pc", "fusion"}
    assert "y_score_pc" not in ours.files
    assert sum("PC and fusion mAP are not available" in r.getMessage() for r in caplog.records) == 1
    assert (tmp_path / "ort" / "examples" / "example_00.png").is_file()


def test_benet_int8_runs_and_records_its_graph(benet_case, tmp_path: Path) -> None:
    model, data, cache = benet_case
    reference = _eval("benet", model, data, tmp_path / "torch", cache, *BENET_OPTIONS)
    int8 = _eval("benet", model, data, tmp_path / "int8", cache, *BENET_OPTIONS, "--backend", "onnxruntime",
                 "--precision", "int8")
    record = int8["deployment"]
    assert (record["backend"], record["precision"], record["int8_target"]) == ("onnxruntime", "int8", "onnxruntime")
    assert record["card"]["precision"] == "int8" and record["card"]["source"]["calibration_inputs"] > 0
    for value in (int8["gt_centre"]["bu"]["mAP"], int8["detection"]["AP"], int8["joint"]["mAP"]):
        assert 0.0 <= value <= 1.0
    assert set(int8["timing"]) == {"open_s", "predict_s", "total_s"}
    assert 0 < int8["timing"]["predict_s"] <= int8["timing"]["total_s"]
    # Quantised (not bit-equal), yet the same function: its scores at the people follow fp32's.
    ours, theirs = np.load(tmp_path / "int8" / "predictions.npz"), np.load(tmp_path / "torch" / "predictions.npz")
    assert not np.allclose(ours["y_score"], theirs["y_score"], atol=1e-6)
    assert np.corrcoef(ours["y_score"].ravel(), theirs["y_score"].ravel())[0, 1] > 0.95
    assert reference["num_people"] == int8["num_people"]


@pytest.mark.parametrize("args", [("--precision", "int8"), ("--backend", "torch", "--precision", "int8"),
                                  ("--precision", "fp32", "--int8-target", "tensorrt"),
                                  ("--backend", "onnxruntime", "--precision", "fp16")])
def test_impossible_forms_are_one_line_before_any_work(benet_case, tmp_path: Path, capsys, args) -> None:
    from emotion_perception.cli import main

    model, data, _ = benet_case
    capsys.readouterr()
    code = main(["eval", "benet", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "out"),
                 "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), *args])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("emotion-perception eval benet: ") and "\n" not in error
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def _fitted_tiny_cahfw(data: Path) -> torch.nn.Module:
    """A tiny CAHFW-Net after 30 full-batch Adam steps on the train split: at random weights its
    outputs barely depend on the input, which would make any two runtimes agree."""
    from emotion_perception.data.caer import load_caer
    from emotion_perception.data.faces import CAHFWDataset
    from emotion_perception.nets.factory import create_model

    torch.manual_seed(0)
    model = create_model("cahfw", "tiny")
    dataset = CAHFWDataset(load_caer(data, "train", progress=False), model.config.input_size, train=False,
                           num_classes=model.config.num_classes)
    face, context, label = next(iter(torch.utils.data.DataLoader(dataset, batch_size=len(dataset))))
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(face, context), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_cahfw_onnxruntime_fp32_and_int8(tmp_path: Path) -> None:
    from sklearn.metrics import accuracy_score

    from emotion_perception.data.synth.scenes import CAER_SYNTH_PRESETS
    from emotion_perception.data.synth.writers import write_caer_dataset

    write_caer_dataset(tmp_path / "caer", 16, seed=1,
                       config=dataclasses.replace(CAER_SYNTH_PRESETS["caer"], width=64, height=64), progress=False)
    model = _fitted_tiny_cahfw(tmp_path / "caer")
    save_checkpoint(tmp_path / "cahfw.pt", model=model, model_name="cahfw", model_config=model.config)
    checkpoint, data, cache = tmp_path / "cahfw.pt", tmp_path / "caer", tmp_path / "cache"
    reference = _eval("cahfw", checkpoint, data, tmp_path / "torch", cache)
    deployed = _eval("cahfw", checkpoint, data, tmp_path / "ort", cache, "--backend", "onnxruntime")
    ours, theirs = np.load(tmp_path / "ort" / "predictions.npz"), np.load(tmp_path / "torch" / "predictions.npz")
    np.testing.assert_array_equal(ours["y_true"], theirs["y_true"])
    assert theirs["y_score"].std(axis=0).max() > 0.05  # the images get different scores
    np.testing.assert_allclose(ours["y_score"], theirs["y_score"], atol=1e-5)
    assert deployed["accuracy"] == pytest.approx(reference["accuracy"], abs=1e-3)
    assert deployed["accuracy"] == pytest.approx(accuracy_score(ours["y_true"], ours["y_score"].argmax(1)))
    assert deployed["deployment"]["precision"] == "fp32"

    # The symmetric form TensorRT takes, run by ONNX Runtime on the CPU.
    int8 = _eval("cahfw", checkpoint, data, tmp_path / "int8", cache, "--backend", "onnxruntime",
                 "--precision", "int8", "--int8-target", "tensorrt")
    record = int8["deployment"]
    assert (record["precision"], record["int8_target"], record["card"]["source"]["int8_target"]) == (
        "int8", "tensorrt", "tensorrt")
    assert 0.0 <= int8["accuracy"] <= 1.0 and int8["num_images"] == reference["num_images"]
    quantised = np.load(tmp_path / "int8" / "predictions.npz")["y_score"]
    assert np.abs(quantised - theirs["y_score"]).max() < 0.1
    np.testing.assert_allclose(quantised.sum(axis=1), 1.0, atol=1e-5)


def test_int8_keeps_the_box_size_branch_float(benet_case, tmp_path: Path) -> None:
    """What the measurement with the demo model led to (export/quantize.py FLOAT_BRANCHES): the
    size head runs in float32 whole, the other heads and the backbone in int8; a cached INT8 model
    made by an older quantiser is made again."""
    import onnx

    from emotion_perception.export.quantize import QUANTISER_REVISION
    from emotion_perception.runtime.model_files import cached_int8_onnx, cached_onnx

    checkpoint, _, _ = benet_case
    fp32, _ = cached_onnx(checkpoint, tmp_path, "fp32")
    int8, card = cached_int8_onnx(fp32, tmp_path)
    graph = onnx.load(str(int8)).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}

    def quantised_weight(node: onnx.NodeProto) -> bool:
        return producers.get(node.input[1]) == "DequantizeLinear"

    convs = [node for node in graph.node if node.op_type == "Conv"]
    size_convs = [node for node in convs if node.name.startswith("/net/size_head/")]
    heatmap_convs = [node for node in convs if node.name.startswith("/net/heatmap_head/")]
    assert size_convs and not any(quantised_weight(node) for node in size_convs)
    assert not any(node.op_type == "QuantizeLinear" and node.name.startswith("/net/size_head/") for node in graph.node)
    # The other heads' blocks stay int8 (only their logits convs are float, as before).
    blocks = [node for node in heatmap_convs if "/blocks_" in node.name]
    assert blocks and all(quantised_weight(node) for node in blocks)
    assert card.source["quantiser_revision"] == QUANTISER_REVISION

    from emotion_perception.export.model_card import write_sidecar

    stale = card.replace(source={k: v for k, v in card.source.items() if k != "quantiser_revision"})
    proto = onnx.load(str(int8))
    for entry in proto.metadata_props:
        if entry.key == "emotion_perception.model_card":
            entry.value = stale.to_json()
    onnx.save(proto, str(int8))
    write_sidecar(stale, int8)
    again, remade = cached_int8_onnx(fp32, tmp_path)
    assert again == int8 and remade.source["quantiser_revision"] == QUANTISER_REVISION
