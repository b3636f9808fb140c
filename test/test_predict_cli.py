"""`emotion-perception predict` and `emotion-perception bench model` end to end (tiny models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from deploy_models import peaky_benet, save_checkpoint, tiny_cahfw

from emotion_perception.cli import build_parser
from emotion_perception.cli import main as cli_main
from emotion_perception.data.categories import EMOTIC_CATEGORIES, VAD_NAMES
from emotion_perception.data.imageio import read_rgb, write_rgb
from emotion_perception.export.grid_scenes import draw_scene
from emotion_perception.runtime import load_predictor


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    images = []
    for index, (people, size) in enumerate([(3, (96, 128)), (1, (64, 64))]):
        path = root / f"scene{index}.png"
        write_rgb(path, draw_scene(np.random.default_rng(index), people, *size).image)
        images.append(path)
    return {"root": root, "images": images, "benet": save_checkpoint(peaky_benet(), root / "benet.pt", "benet"),
            "cahfw": save_checkpoint(tiny_cahfw(), root / "cahfw.pt", "cahfw")}


def test_predict_writes_the_documented_json_and_drawings(workspace, capsys):
    out = workspace["root"] / "out.json"
    draw = workspace["root"] / "drawn"
    code = cli_main(["predict", "--model", str(workspace["benet"]), "--backend", "torch", "--device", "cpu",
                     "--detection-threshold", "0", "--max-people", "4", "--json", str(out), "--draw", str(draw),
                     *map(str, workspace["images"])])
    assert code == 0
    printed = capsys.readouterr().out
    assert "scene0.png: 4 people" in printed and f"wrote {out}" in printed
    document = json.loads(out.read_text())
    model = document["model"]
    assert ((model["model_name"], model["backend"], model["device"], model["preset"])
            == ("benet", "torch", "cpu", "tiny"))
    assert model["categories"] == list(EMOTIC_CATEGORIES) and model["has_vad"] is True
    assert document["settings"] == {"detection_threshold": 0.0, "max_people": 4, "flip_test": False}
    assert [image["path"] for image in document["images"]] == [str(p) for p in workspace["images"]]
    first = document["images"][0]
    assert (first["width"], first["height"]) == (128, 96) and len(first["people"]) == 4
    for person in first["people"]:
        assert set(person) == {"box", "score", "scores", "top_labels", "vad"}
        assert len(person["box"]) == 4 and 0 <= person["score"] <= 1
        assert list(person["scores"]) == list(EMOTIC_CATEGORIES)
        best = max(person["scores"].values())
        assert len(person["top_labels"]) == 3 and person["top_labels"][0]["score"] == best
        assert list(person["vad"]) == list(VAD_NAMES)
    # The JSON is what the predictor returns, not a re-computation.
    direct = load_predictor(workspace["benet"], backend="torch", device="cpu").predict(
        read_rgb(workspace["images"][0]), detection_threshold=0.0, max_people=4)
    np.testing.assert_allclose([p["box"] for p in first["people"]], [p.box for p in direct], atol=0.01)
    drawn = sorted(path.name for path in draw.iterdir())
    assert drawn == ["scene0.pred.png", "scene1.pred.png"]
    assert not np.array_equal(read_rgb(draw / "scene0.pred.png"), read_rgb(workspace["images"][0]))


def test_predict_cahfw_reports_no_vad(workspace):
    out = workspace["root"] / "cahfw.json"
    code = cli_main(["predict", "--model", str(workspace["cahfw"]), "--backend", "torch", "--device", "cpu",
                     "--face-detector", "hog", "--json", str(out), str(workspace["images"][0])])
    assert code == 0
    document = json.loads(out.read_text())
    assert document["model"]["model_name"] == "cahfw" and document["model"]["has_vad"] is False
    assert document["images"][0]["people"] == []  # dlib finds no face on stylised drawings


def test_predict_errors_are_one_clear_line(workspace, capsys):
    assert cli_main(["predict", "--model", str(workspace["root"] / "none.pt"), str(workspace["images"][0])]) == 2
    assert "none.pt: model file not found" in capsys.readouterr().err
    assert cli_main(["predict", "--model", str(workspace["benet"]), str(workspace["root"] / "none.png")]) == 2
    assert "none.png" in capsys.readouterr().err
    assert cli_main(["predict", "--model", str(workspace["benet"]), "--backend", "torch", "--detection-threshold", "2",
                     str(workspace["images"][0])]) == 2
    assert "detection_threshold must be in [0, 1]" in capsys.readouterr().err


def test_predict_streams_images_one_at_a_time(workspace, monkeypatch):
    import emotion_perception.data.imageio as imageio
    import emotion_perception.runtime.predictor as predictor_module

    events: list[str] = []
    real_read, real_load = imageio.read_rgb, predictor_module.load_predictor

    def read(path, **kwargs):
        events.append(f"read {path.name}")
        return real_read(path, **kwargs)

    def load(*args, **kwargs):
        predictor = real_load(*args, **kwargs)
        real_predict = predictor.predict
        predictor.predict = lambda image, **options: events.append("predict") or real_predict(image, **options)
        return predictor

    monkeypatch.setattr(imageio, "read_rgb", read)
    monkeypatch.setattr(predictor_module, "load_predictor", load)
    paths = workspace["images"]
    assert cli_main(["predict", "--model", str(workspace["benet"]), "--backend", "torch", "--device", "cpu",
                     *map(str, paths)]) == 0
    # each image is read just before its inference (not every image decoded first)
    assert events == [f"read {paths[0].name}", "predict", f"read {paths[1].name}", "predict"]


def test_predict_skips_and_reports_unusable_images(workspace, tmp_path, capsys):
    import cv2
    from encoded_images import png_bomb

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(16000, 16000))
    tiff = tmp_path / "scene.tiff"
    cv2.imwrite(str(tiff), np.zeros((8, 8, 3), np.uint8))
    good = workspace["images"][1]
    out = tmp_path / "out.json"
    code = cli_main(["predict", "--model", str(workspace["benet"]), "--backend", "torch", "--device", "cpu",
                     "--json", str(out), str(bomb), str(tmp_path / "missing.png"), str(good), str(tiff)])
    assert code == 2  # something was skipped
    captured = capsys.readouterr()
    assert f"{good}: " in captured.out  # the usable image is still predicted
    lines = [line for line in captured.err.splitlines() if line.startswith("skipped: ")]
    assert len(lines) == 3 and "Traceback" not in captured.err
    assert "16000x16000 = 256000000 pixels is over the limit" in lines[0]
    assert "missing.png: image missing or unreadable" in lines[1]
    assert "scene.tiff: not a PNG, JPEG, BMP, WebP image" in lines[2]
    assert "3 of 4 images skipped" in captured.err
    document = json.loads(out.read_text())
    assert [image["path"] for image in document["images"]] == [str(good)]
    assert [entry["path"] for entry in document["skipped"]] == [str(bomb), str(tmp_path / "missing.png"), str(tiff)]
    # the limit is an option
    assert cli_main(["predict", "--model", str(workspace["benet"]), "--backend", "torch", "--device", "cpu",
                     "--max-image-pixels", str(64 * 64 - 1), str(good)]) == 2
    assert "64x64 = 4096 pixels is over the limit of 4095" in capsys.readouterr().err


def test_predict_draw_keeps_the_drawings_of_inputs_sharing_a_stem(workspace, tmp_path):
    first, second = tmp_path / "a" / "scene.png", tmp_path / "b" / "scene.jpg"
    for path, source in ((first, workspace["images"][0]), (second, workspace["images"][1])):
        path.parent.mkdir()
        write_rgb(path, read_rgb(source))
    draw = tmp_path / "drawn"
    assert cli_main(["predict", "--model", str(workspace["benet"]), "--backend", "torch", "--device", "cpu",
                     "--draw", str(draw), str(first), str(second)]) == 0
    assert sorted(p.name for p in draw.iterdir()) == ["scene-2.pred.png", "scene.pred.png"]
    assert read_rgb(draw / "scene.pred.png").shape == read_rgb(first).shape
    assert read_rgb(draw / "scene-2.pred.png").shape == read_rgb(second).shape


@pytest.mark.parametrize("option, target, says", [
    ("--draw", "file", "is a file, not a folder"),
    ("--json", "folder", "is a folder, not a file"),
    ("--json", "file/out.json", "is a file, not a folder"),
])
def test_predict_output_targets_of_the_wrong_kind_are_one_line(workspace, tmp_path, capsys, option, target, says):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    code = cli_main(["predict", "--model", str(workspace["benet"]), "--backend", "torch", "--device", "cpu",
                     option, str(tmp_path / target), str(workspace["images"][0])])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err


def test_bench_model_reports_latency_and_people_scaling(workspace, capsys):
    out = workspace["root"] / "bench.json"
    code = cli_main(["bench", "model", "--preset", "benet:tiny", "--backends", "onnxruntime", "--device", "cpu",
                     "--people", "1,3", "--iterations", "2", "--warmup", "0", "--cache-dir",
                     str(workspace["root"] / "cache"), "--json", str(out)])
    assert code == 0
    document = json.loads(out.read_text())
    assert document["environment"]["cpu"] and "onnxruntime" in document["environment"]["versions"]
    kinds = [(row["kind"], row["people"]) for row in document["results"]]
    assert kinds == [("model", None), ("pipeline", 1), ("pipeline", 3)]
    for row in document["results"]:
        assert set(row["latency_ms"]) >= {"p50", "p90", "p99", "mean"} and row["fps"] > 0
        assert row["latency_ms"]["p50"] <= row["latency_ms"]["p99"]
        assert row["backend"] == "onnxruntime" and row["device"] == "cpu"
    summary = document["summary"]
    assert "pipeline_latency_ratio_3_vs_1_people[onnxruntime,fp32]" in summary
    assert summary["gmacs"] > 0
    # the floor: the model's GMACs at the conv-stack rate measured in this run, same threads
    floor = summary["cpu_floor"]
    assert floor["model_gmacs"] == summary["gmacs"] and floor["gmacs_per_s"] > 0 and floor["probe_runs"] == 2
    assert floor["floor_ms"] == pytest.approx(summary["gmacs"] / floor["gmacs_per_s"] * 1000.0)
    model_p50 = document["results"][0]["latency_ms"]["p50"]
    assert summary["latency_over_floor[onnxruntime,fp32]"] == pytest.approx(model_p50 / floor["floor_ms"])


def test_bench_cahfw_measures_classification_per_face_count(workspace):
    out = workspace["root"] / "bench_cahfw.json"
    code = cli_main(["bench", "model", "--model", str(workspace["cahfw"]), "--backends", "torch", "--device", "cpu",
                     "--people", "1,4", "--iterations", "2", "--warmup", "0", "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())["results"]
    classify = {row["people"]: row for row in rows if row["kind"] == "classify_faces"}
    assert set(classify) == {1, 4} and classify[4]["batch"] == 4
    assert [row["kind"] for row in rows].count("face_detection") == 2


def test_bench_is_a_group_of_subcommands():
    parser = build_parser()
    args = parser.parse_args(["bench", "model", "--preset", "benet:tiny"])
    assert args.bench_command == "model"
    with pytest.raises(SystemExit):
        parser.parse_args(["bench"])


@pytest.mark.parametrize("target", ["folder", "file/out.json"])
def test_bench_json_targets_of_the_wrong_kind_are_one_line_before_any_work(workspace, tmp_path, capsys, target):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    code = cli_main(["bench", "model", "--model", str(workspace["benet"]), "--backends", "torch",
                     "--json", str(tmp_path / target)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--json" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as stop:
        cli_main(["bench", "bag", "--bag", str(tmp_path), "--rate", "5", "--json", str(tmp_path / target)])
    assert str(stop.value.code).startswith("bench bag: --json") and "\n" not in str(stop.value.code)


def test_graph_options_reach_the_predictor_from_predict_and_bench(workspace, monkeypatch):
    import emotion_perception.runtime.predictor as predictor_module

    asked = []
    real = predictor_module.load_predictor

    def recording(*args, **kwargs):
        asked.append((kwargs.get("cuda_graph"), kwargs.get("compile")))
        return real(*args, **{**kwargs, "cuda_graph": False, "compile": False})  # CPU here: run plainly

    monkeypatch.setattr(predictor_module, "load_predictor", recording)
    out = workspace["root"] / "graph_opts"
    assert cli_main(["predict", "--model", str(workspace["benet"]), str(workspace["images"][1]), "--backend", "torch",
                     "--device", "cpu", "--cuda-graph", "--compile", "--json", str(out / "p.json")]) == 0
    assert cli_main(["bench", "model", "--model", str(workspace["benet"]), "--backends", "torch", "--device", "cpu",
                     "--people", "1", "--iterations", "1", "--warmup", "0", "--cuda-graph",
                     "--cache-dir", str(workspace["root"] / "cache"), "--json", str(out / "b.json")]) == 0
    assert asked[0] == (True, True) and asked[-1] == (True, False)
