"""`emotion-perception bench gpu-check` (scripts/gpu_check.sh): the dry run end to end on CPU,
once with this environment and once with only PyTorch and numpy importable (the GPU machine's
case), and the functions its figures rest on (people agreement, target verdicts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emotion_perception.bench.gpu_check import (
    NEEDS_CUDA,
    PAPER_FP16_MS,
    PEOPLE_RATIO_LIMIT,
    people_agreement,
    people_ratios,
    target_verdicts,
)
from emotion_perception.runtime.predictor import PersonPrediction

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
# What a GPU machine with only PyTorch and numpy lacks (and what the check must not need).
BLOCKED = ("cv2", "onnxruntime", "onnx", "onnxslim", "tensorrt", "rclpy", "tqdm", "dlib", "matplotlib", "yaml",
           "scipy", "skimage", "rosbags", "pycocotools", "supervision", "sensor_msgs", "cv_bridge",
           "ament_index_python")


def _run_script(json_path: Path, cache_dir: Path, python_path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    if python_path is not None:
        env["PYTHONPATH"] = python_path
    return subprocess.run(["bash", str(SCRIPT), "--dry", "--json", str(json_path), "--cache-dir", str(cache_dir)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared by both runs: the seeded checkpoints are written once.
    return tmp_path_factory.mktemp("gpu_check_cache")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[subprocess.CompletedProcess, dict]:
    json_path = tmp_path_factory.mktemp("gpu_check") / "dry.json"
    done = _run_script(json_path, cache_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads(json_path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def bare_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict:
    """The dry run where only PyTorch, numpy and the standard library import (a sitecustomize
    on PYTHONPATH marks every other module the project may use as unimportable)."""
    site = tmp_path_factory.mktemp("bare_site")
    (site / "sitecustomize.py").write_text(
        f"import sys\nfor name in {BLOCKED!r}:\n    sys.modules[name] = None\n", encoding="utf-8")
    json_path = site / "bare.json"
    done = _run_script(json_path, cache_dir, python_path=str(site))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(json_path.read_text(encoding="utf-8"))


def _ordered(stats: dict) -> bool:
    return 0 < stats["p50"] <= stats["p90"] <= stats["p99"]


def test_the_script_is_executable_bash():
    assert os.access(SCRIPT, os.X_OK)
    text = SCRIPT.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text


def test_dry_run_reports_the_device_and_why_auto_picks_its_backend(dry_run):
    done, doc = dry_run
    import torch

    assert doc["dry"] is True
    assert doc["device"]["device"] == "cpu" and doc["device"]["name"]
    assert doc["device"]["torch"] == torch.__version__
    auto = doc["auto"]
    assert auto["availability"]["cuda"] is False
    assert auto["candidates"] and all(c["reason"] for c in auto["candidates"])
    # auto takes the first candidate that opens; on this CPU nothing fails to open.
    first = auto["candidates"][0]
    assert (auto["opened"]["backend"], auto["opened"]["device"]) == (first["backend"], first["device"])
    assert any(first["backend"] in line for line in auto["log"])
    assert f"auto (benet_lite_demo.pt): {first['backend']} on cpu" in done.stdout
    assert set(doc["modules"]) == {"tensorrt", "onnxruntime", "onnx", "cv2"}


def test_dry_run_measures_fp32_and_says_why_cuda_rows_are_skipped(dry_run):
    done, doc = dry_run
    rows = {(r["model"], r["variant"]): r for r in doc["model"]}
    assert set(rows) == {(m, v) for m in ("benet:paper", "benet:lite") for v in ("fp32", "fp16", "fp16+cuda_graph")}
    for model in ("benet:paper", "benet:lite"):
        measured = rows[(model, "fp32")]
        assert measured["status"] == "measured" and measured["device"] == "cpu"
        assert measured["input_size"] == [128, 128] and measured["iterations"] == doc["settings"]["iterations"]
        assert _ordered(measured["latency_ms"])
        for variant in ("fp16", "fp16+cuda_graph"):
            assert rows[(model, variant)]["status"] == "skipped"
            assert rows[(model, variant)]["reason"] == NEEDS_CUDA and rows[(model, variant)]["latency_ms"] is None
    assert "skipped: needs CUDA" in done.stdout


def test_dry_run_people_ratio_is_the_ratio_of_the_p50s_it_reports(dry_run):
    _, doc = dry_run
    pipeline = {(r["model"], r["variant"], r["people"]): r for r in doc["pipeline"]}
    ratios = {(r["model"], r["variant"]): r for r in doc["people_ratio"]}
    assert set(ratios) == {("benet:paper", "fp32"), ("benet:lite", "fp32")}
    for (model, variant), ratio in ratios.items():
        one, twenty = pipeline[(model, variant, 1)], pipeline[(model, variant, 20)]
        assert _ordered(one["latency_ms"]) and _ordered(twenty["latency_ms"])
        # Threshold 0 and top-K 20: both frames decode the same number of rows.
        assert one["notes"]["people_returned"] == twenty["notes"]["people_returned"] == 20
        assert ratio["ratio"] == pytest.approx(twenty["latency_ms"]["p50"] / one["latency_ms"]["p50"])
    assert all(r["status"] == "skipped" and r["reason"] == NEEDS_CUDA for r in doc["pipeline"]
               if r["variant"] != "fp32")


def test_dry_run_agreement_cpu_against_cpu_is_exact(dry_run):
    _, doc = dry_run
    agreement = doc["agreement"]
    assert Path(agreement["model"]).name == "benet_lite_demo.pt"
    rows = {r["variant"]: r for r in agreement["rows"]}
    same = rows["fp32"]
    assert (same["backend"], same["device"], same["precision"]) == ("torch", "cpu", "fp32")
    assert same["reference_people"] > 0 and same["matched"] == same["reference_people"] == same["other_people"]
    assert same["all_matched"] is True
    assert same["max_box_diff_px"] == 0.0 and same["max_score_diff"] == 0.0 and same["max_emotion_score_diff"] == 0.0
    assert rows["fp16"]["status"] == rows["fp16+cuda_graph"]["status"] == "skipped"
    auto = rows["auto"]  # another CPU backend (ONNX Runtime here): the same people, up to float rounding
    assert auto["backend"] == doc["auto"]["opened"]["backend"]
    assert auto["all_matched"] and auto["max_box_diff_px"] < 0.5 and auto["max_score_diff"] < 1e-3


def test_dry_run_target_verdicts(dry_run):
    done, doc = dry_run
    latency, stretch, ratio = doc["targets"]
    for verdict in (latency, stretch):
        assert verdict["verdict"] == "not measured" and verdict["reason"] == NEEDS_CUDA
    worst = max(r["ratio"] for r in doc["people_ratio"])
    assert ratio["value"] == pytest.approx(worst) and ratio["limit"] == PEOPLE_RATIO_LIMIT
    assert ratio["verdict"] == ("pass" if worst <= PEOPLE_RATIO_LIMIT else "miss")
    assert "NOT MEASURED" in done.stdout and doc["elapsed_s"] > 0


def test_dry_run_with_only_torch_and_numpy(bare_run):
    doc = bare_run
    assert not any(info["present"] for info in doc["modules"].values())
    auto = doc["auto"]
    assert auto["availability"]["onnxruntime_providers"] == []
    assert (auto["opened"]["backend"], auto["opened"]["device"]) == ("torch", "cpu")
    assert "onnxruntime is not installed" in auto["candidates"][0]["reason"]
    measured = [r for r in doc["model"] if r["status"] == "measured"]
    assert {r["model"] for r in measured} == {"benet:paper", "benet:lite"} and all(r["variant"] == "fp32"
                                                                                  for r in measured)
    # No OpenCV: no synthetic frames, so no pipeline or agreement rows, each saying why.
    assert all(r["status"] == "skipped" and "OpenCV" in r["reason"] for r in doc["pipeline"] if r["variant"] == "fp32")
    assert "OpenCV" in doc["agreement"]["reason"]
    assert doc["targets"][2]["verdict"] == "not measured"


def _person(box: tuple[float, float, float, float], score: float = 0.9, emotion: float = 0.5) -> PersonPrediction:
    return PersonPrediction(np.array(box, np.float32), score, np.full(26, emotion, np.float32),
                            np.full(3, np.nan, np.float32))


def test_people_agreement_of_a_shifted_box_and_a_missing_person():
    reference = [[_person((10, 10, 110, 210)), _person((300, 20, 380, 200), score=0.4)]]
    other = [[_person((13, 10, 113, 210), score=0.85, emotion=0.52)]]  # first shifted by 3 px, second missing
    result = people_agreement(reference, other)
    assert (result["matched"], result["reference_people"], result["other_people"]) == (1, 2, 1)
    assert (result["unmatched_reference"], result["unmatched_other"]) == (1, 0)
    assert result["unmatched_reference_scores"] == [pytest.approx(0.4)]
    assert result["max_box_diff_px"] == pytest.approx(3.0)
    assert result["max_score_diff"] == pytest.approx(0.05)
    assert result["max_emotion_score_diff"] == pytest.approx(0.02, abs=1e-6)
    assert result["max_vad_diff"] is None and result["all_matched"] is False


def test_people_agreement_needs_overlap_and_pairs_each_person_once():
    far = people_agreement([[_person((0, 0, 50, 100))]], [[_person((200, 0, 250, 100))]])
    assert far["matched"] == 0 and far["unmatched_other"] == 1 and far["max_box_diff_px"] is None
    # Two candidates for one reference person: the better overlap is its match, the other is extra.
    twice = people_agreement([[_person((0, 0, 100, 100))]], [[_person((30, 0, 130, 100)), _person((1, 0, 101, 100))]])
    assert twice["matched"] == 1 and twice["unmatched_other"] == 1 and twice["max_box_diff_px"] == pytest.approx(1.0)
    same = people_agreement([[_person((0, 0, 100, 100))], []], [[_person((0, 0, 100, 100))], []])
    assert same["all_matched"] and same["images"] == 2 and same["max_box_diff_px"] == 0.0
    with pytest.raises(ValueError, match="1 reference images but 2"):
        people_agreement([[]], [[], []])


def _model_row(variant: str, precision: str, p50: float) -> dict:
    return {"model": "benet:paper", "variant": variant, "status": "measured", "precision": precision,
            "input_size": [512, 512], "latency_ms": {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.2}}


def test_target_verdicts_judge_the_fastest_fp16_row_and_the_worst_ratio():
    rows = [_model_row("fp32", "fp32", 0.5), _model_row("fp16", "fp16", 1.6),
            _model_row("fp16+cuda_graph", "fp16", 1.2)]
    pipeline = [{"model": m, "variant": "fp16", "status": "measured", "people": n, "latency_ms": {"p50": p50}}
                for m, n, p50 in (("benet:paper", 1, 4.0), ("benet:paper", 20, 4.2),
                                  ("benet:lite", 1, 2.0), ("benet:lite", 20, 2.4))]
    ratios = people_ratios(pipeline)
    assert sorted(r["ratio"] for r in ratios) == [pytest.approx(1.05), pytest.approx(1.2)]
    latency, stretch, ratio = target_verdicts(rows, ratios, dry=False)
    # fp32 is faster here but is not an fp16 row: the target is judged on fp16 + CUDA graphs.
    assert (latency["verdict"], latency["value"], latency["row"]) == ("pass", 1.2, "benet:paper fp16+cuda_graph")
    assert latency["limit"] == PAPER_FP16_MS and stretch["verdict"] == "miss"
    assert ratio["verdict"] == "miss" and ratio["value"] == pytest.approx(1.2) and "benet:lite" in ratio["row"]
    failed = target_verdicts([], [], dry=False)
    assert [v["verdict"] for v in failed] == ["not measured"] * 3 and all(v["reason"] for v in failed)
