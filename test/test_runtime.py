"""Runtime: backends agree through load_predictor, preprocessing, backend choice, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deploy_models import peaky_benet, save_checkpoint, tiny_cahfw, with_card_changes
from emotion_perception.data.geometry import boxes_to_letterbox
from emotion_perception.export.onnx_export import export_onnx
from emotion_perception.eval.metrics import box_iou
from emotion_perception.export.scenes import draw_scene
from emotion_perception.nets.decode import DecodeConfig
from emotion_perception.runtime import PersonPrediction, load_predictor
from emotion_perception.runtime.backend import BackendInputError
from emotion_perception.runtime.model_files import (
    Availability,
    ModelFileError,
    choose_backend,
    detect_model_kind,
    resolve_device,
)
from emotion_perception.runtime.onnxruntime_backend import choose_providers, physical_cores
from emotion_perception.runtime.predictor import detection_confidence
from emotion_perception.runtime.preprocess import canvas_geometry, preprocess_numpy, preprocess_torch


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny BENet and CAHFW-Net checkpoint, a BENet export with decoding, and a cache dir."""
    root = tmp_path_factory.mktemp("runtime")
    benet = peaky_benet()
    paths = {
        "benet": save_checkpoint(benet, root / "benet.pt", "benet"),
        "cahfw": save_checkpoint(tiny_cahfw(), root / "cahfw.pt", "cahfw"),
        "cache": root / "cache",
    }
    paths["benet_decode"] = export_onnx(benet, root / "benet_decode.onnx", with_decode=True,
                                        decode_config=DecodeConfig(top_k=15, threshold=0.0)).onnx_path
    return paths


@pytest.fixture(scope="module")
def scene():
    return draw_scene(np.random.default_rng(3), 4, 96, 128)


@pytest.fixture(scope="module")
def benet_torch(files):
    return load_predictor(files["benet"], backend="torch", device="cpu", cache_dir=files["cache"])


@pytest.fixture(scope="module")
def benet_ort(files):
    return load_predictor(files["benet"], backend="onnxruntime", device="cpu", cache_dir=files["cache"])


def _assert_same_people(a: list[PersonPrediction], b: list[PersonPrediction], box_tol: float, score_tol: float) -> None:
    assert len(a) == len(b) > 0
    for pa, pb in zip(a, b):
        np.testing.assert_allclose(pa.box, pb.box, atol=box_tol)
        assert abs(pa.score - pb.score) < score_tol
        np.testing.assert_allclose(pa.scores, pb.scores, atol=score_tol)
        np.testing.assert_allclose(pa.vad, pb.vad, atol=score_tol)


# --------------------------------------------------------------------------- the interface


def test_predictor_describes_its_model(benet_torch, benet_ort):
    for predictor, backend in ((benet_torch, "torch"), (benet_ort, "onnxruntime")):
        assert predictor.model_name == "benet"
        assert len(predictor.categories) == 26 and predictor.categories[0] == "Affection"
        assert predictor.has_vad  # the tiny preset has the VAD head
        assert predictor.backend_name == backend and predictor.device == "cpu"


def test_predictions_follow_the_contract(benet_torch, scene):
    people = benet_torch.predict(scene.image, detection_threshold=0.0, max_people=6)
    assert len(people) == 6
    scores = [p.score for p in people]
    assert scores == sorted(scores, reverse=True)
    for person in people:
        assert person.box.shape == (4,) and person.box.dtype == np.float32
        assert 0 <= person.box[0] <= person.box[2] <= 128 and 0 <= person.box[1] <= person.box[3] <= 96
        assert person.scores.shape == (26,) and person.scores.dtype == np.float32
        assert np.all((person.scores >= 0) & (person.scores <= 1))
        assert person.vad.shape == (3,) and np.all((person.vad >= 0) & (person.vad <= 1))
    strict = benet_torch.predict(scene.image, detection_threshold=scores[2], max_people=6)
    assert [p.score for p in strict] == scores[:3]  # thresholds are call arguments
    assert benet_torch.predict(scene.image, max_people=0) == []


# --------------------------------------------------------------------------- backends agree


def test_torch_and_onnxruntime_agree_when_no_resampling_is_involved(benet_torch, benet_ort):
    # At the training size (64x64 for the tiny preset) the letterbox is the identity, so both
    # preprocessing paths produce the same tensor and any difference is the backends'.
    image = draw_scene(np.random.default_rng(7), 2, 64, 64).image
    a = benet_torch.predict(image, detection_threshold=0.0, max_people=10)
    b = benet_ort.predict(image, detection_threshold=0.0, max_people=10)
    _assert_same_people(a, b, box_tol=1e-3, score_tol=1e-5)


def test_torch_and_onnxruntime_agree_on_a_camera_frame(benet_torch, benet_ort, scene):
    # With resizing, cv2 (ORT on CPU) and torch (on-device) resamplers differ slightly.
    a = benet_torch.predict(scene.image, detection_threshold=0.0, max_people=5)
    b = benet_ort.predict(scene.image, detection_threshold=0.0, max_people=5)
    assert len(a) == len(b) == 5
    np.testing.assert_allclose([p.score for p in a], [p.score for p in b], atol=0.02)


def test_decoding_in_the_graph_agrees_with_decoding_in_torch(files, benet_ort):
    graph = load_predictor(files["benet_decode"], device="cpu", cache_dir=files["cache"])
    assert graph.backend_name == "onnxruntime" and graph.card.with_decode  # auto on CPU, card read from the file
    image = draw_scene(np.random.default_rng(11), 3, 64, 64).image
    _assert_same_people(graph.predict(image, 0.0, 10), benet_ort.predict(image, 0.0, 10), box_tol=1e-3, score_tol=1e-5)
    with pytest.raises(ValueError, match="without flip test"):
        graph.predict(image, flip_test=True)


def test_flip_test_averages_with_the_mirror(benet_torch, benet_ort):
    image = draw_scene(np.random.default_rng(5), 2, 64, 64).image
    plain = benet_torch.predict(image, 0.0, 5)
    flipped = benet_torch.predict(image, 0.0, 5, flip_test=True)
    assert len(flipped) == 5 and any(abs(p.score - q.score) > 1e-6 for p, q in zip(plain, flipped))
    _assert_same_people(flipped, benet_ort.predict(image, 0.0, 5, flip_test=True), box_tol=1e-3, score_tol=1e-5)


def test_cahfw_backends_agree_and_score_given_faces(files, scene):
    torch_predictor = load_predictor(files["cahfw"], backend="torch", device="cpu", face_detector="hog")
    ort_predictor = load_predictor(files["cahfw"], backend="onnxruntime", device="cpu", cache_dir=files["cache"],
                                   face_detector="hog")
    assert torch_predictor.model_name == ort_predictor.model_name == "cahfw"
    assert len(torch_predictor.categories) == 7 and not torch_predictor.has_vad
    a = torch_predictor.classify_faces(scene.image, scene.face_boxes)
    b = ort_predictor.classify_faces(scene.image, scene.face_boxes)
    assert a.shape == (4, 7)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)
    # One batch of 4 equals 4 batches of 1: faces do not leak into each other.
    single = np.concatenate([torch_predictor.classify_faces(scene.image, box[None]) for box in scene.face_boxes])
    np.testing.assert_allclose(a, single, atol=1e-5)
    # dlib's detector finds no face on stylised drawings: an empty, well-formed answer.
    assert ort_predictor.predict(scene.image) == []


def test_detection_confidence_maps_dlib_scores_to_unit_interval():
    raw = np.array([-3.0, 0.0, 0.5, 2.0, 40.0])
    mapped = detection_confidence(raw)
    assert mapped[1] == pytest.approx(0.5)  # dlib's own operating point
    assert np.all(np.diff(mapped) > 0) and np.all((mapped >= 0) & (mapped <= 1))


def test_int8_predictor_quantises_once_and_stays_close(files, benet_ort):
    int8 = load_predictor(files["benet"], backend="onnxruntime", device="cpu", precision="int8",
                          cache_dir=files["cache"])
    assert int8.precision == "int8" and int8.card.precision == "int8"
    quantised = sorted((files["cache"] / "onnx").glob("*-int8.onnx"))
    assert len(quantised) == 1
    stamp = quantised[0].stat().st_mtime_ns
    load_predictor(files["benet"], backend="onnxruntime", device="cpu", precision="int8", cache_dir=files["cache"])
    assert quantised[0].stat().st_mtime_ns == stamp  # served from the cache
    image = draw_scene(np.random.default_rng(2), 2, 64, 64).image
    fp32_scores = [p.score for p in benet_ort.predict(image, 0.0, 5)]
    int8_scores = [p.score for p in int8.predict(image, 0.0, 5)]
    np.testing.assert_allclose(int8_scores, fp32_scores, atol=0.05)
    with pytest.raises(ValueError, match="fp16 is for GPUs"):
        load_predictor(files["benet"], backend="onnxruntime", device="cpu", precision="fp16", cache_dir=files["cache"])


# --------------------------------------------------------------------------- preprocessing


def test_canvas_keeps_aspect_and_pads_to_the_stride(files, benet_ort):
    card = benet_ort.card  # tiny preset: trained at 64x64
    params = canvas_geometry(480, 640, card)
    assert (params.output_height, params.output_width) == (64, 64)  # short side at least 2 strides
    paper_like = card.replace(input_size=(512, 512))
    params = canvas_geometry(480, 640, paper_like)
    assert (params.output_height, params.output_width) == (384, 512) and params.scale == pytest.approx(0.8)
    params = canvas_geometry(480, 640, paper_like, input_size=(512, 512))
    assert (params.output_height, params.output_width, params.pad_y) == (512, 512, 64)
    with pytest.raises(ValueError, match="multiples of 32"):
        canvas_geometry(480, 640, paper_like, input_size=(500, 512))


def test_torch_and_numpy_preprocessing_agree(benet_ort):
    card = benet_ort.card.replace(input_size=(256, 256))
    image = draw_scene(np.random.default_rng(1), 3, 300, 400).image
    params = canvas_geometry(300, 400, card)
    on_host = preprocess_numpy(image, params, card.normalisation)
    on_device = preprocess_torch(image, params, card.normalisation, "cpu").numpy()
    assert on_host.shape == on_device.shape == (1, 3, 192, 256)
    # One preprocessing for every backend: the training resize, then the same normalisation.
    np.testing.assert_allclose(on_host, on_device, atol=1e-6)
    # The image content lands where the letterbox says: a person's box maps onto bright pixels.
    assert boxes_to_letterbox(np.array([[0, 0, 400, 300]]), params)[0].tolist() == \
        [params.pad_x, params.pad_y, params.pad_x + 256, params.pad_y + 192]


# --------------------------------------------------------------------------- choosing backends


CPU_ONLY = Availability(cuda=False, tensorrt=False, onnxruntime_providers=("CPUExecutionProvider",))
GPU_FULL = Availability(cuda=True, tensorrt=True,
                        onnxruntime_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"))
GPU_ORT = Availability(cuda=True, tensorrt=False, onnxruntime_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
GPU_TORCH = Availability(cuda=True, tensorrt=False, onnxruntime_providers=("CPUExecutionProvider",))


@pytest.mark.parametrize("kind, available, expected", [
    ("checkpoint", CPU_ONLY, ("onnxruntime", "cpu")),
    ("onnx", CPU_ONLY, ("onnxruntime", "cpu")),
    ("checkpoint", GPU_FULL, ("tensorrt", "cuda:0")),
    ("onnx", GPU_FULL, ("tensorrt", "cuda:0")),
    ("engine", GPU_FULL, ("tensorrt", "cuda:0")),
    ("checkpoint", GPU_ORT, ("onnxruntime", "cuda:0")),
    ("checkpoint", GPU_TORCH, ("torch", "cuda:0")),
    ("onnx", GPU_TORCH, ("onnxruntime", "cpu")),
])
def test_auto_picks_the_fastest_available_backend(kind, available, expected):
    backend, device, reason = choose_backend(kind, "auto", "auto", available)
    assert (backend, device) == expected and reason


def test_impossible_backend_requests_are_refused_clearly():
    with pytest.raises(ValueError, match="needs a checkpoint"):
        choose_backend("onnx", "torch", "cpu", CPU_ONLY)
    with pytest.raises(ValueError, match="TensorRT is not installed"):
        choose_backend("onnx", "tensorrt", "auto", CPU_ONLY)
    with pytest.raises(ValueError, match="TensorRT is not installed"):
        choose_backend("engine", "auto", "auto", CPU_ONLY)
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        choose_backend("onnx", "onnxruntime", "cuda", GPU_TORCH)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda:0", CPU_ONLY)
    assert choose_backend("checkpoint", "torch", "cpu", GPU_FULL)[:2] == ("torch", "cpu")


def test_onnxruntime_providers_are_ordered_tensorrt_cuda_cpu(tmp_path):
    assert choose_providers(["CPUExecutionProvider"], "cpu", "fp32", None) == [("CPUExecutionProvider", {})]
    chain = choose_providers(["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"],
                             "cuda:1", "fp32", tmp_path)
    assert [name for name, _ in chain] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt_options = chain[0][1]
    assert trt_options["device_id"] == 1 and trt_options["trt_fp16_enable"] and trt_options["trt_engine_cache_enable"]
    assert chain[1][1]["device_id"] == 1
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        choose_providers(["CPUExecutionProvider"], "cuda:0", "fp32", None)


def test_physical_cores_ignore_hyperthreads_and_respect_affinity():
    block = "processor\t: {p}\nphysical id\t: {s}\ncore id\t\t: {c}\n\n"
    # 2 sockets x 2 cores x 2 hyper-threads
    text = "".join(block.format(p=i, s=i // 4, c=(i // 2) % 2) for i in range(8))
    assert physical_cores(text, allowed_cpus=8) == 4
    assert physical_cores(text, allowed_cpus=2) == 2
    assert physical_cores("processor : 0\n\nprocessor : 1\n\n", allowed_cpus=2) == 2  # no topology given
    assert physical_cores() >= 1


# --------------------------------------------------------------------------- clear errors


def test_missing_and_corrupt_model_files(tmp_path, files):
    with pytest.raises(FileNotFoundError, match="missing.pt: model file not found"):
        load_predictor(tmp_path / "missing.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ValueError, match="corrupt.pt.*not a readable torch checkpoint"):
        load_predictor(tmp_path / "corrupt.pt", backend="torch")
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(ValueError, match="corrupt.onnx"):
        load_predictor(tmp_path / "corrupt.onnx", device="cpu")
    (tmp_path / "weights.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="unknown model file type"):
        detect_model_kind(tmp_path / "weights.bin")
    with pytest.raises(ValueError, match="needs a checkpoint"):
        load_predictor(files["benet_decode"], backend="torch")


def test_wrong_inputs_are_named(benet_ort, benet_torch):
    for backend in (benet_ort.backend, benet_torch.backend):
        with pytest.raises(BackendInputError, match="multiple of 32"):
            backend.infer({"image": np.zeros((1, 3, 50, 64), np.float32)})
        with pytest.raises(BackendInputError, match=r"input 'image': expected shape \(B, 3"):
            backend.infer({"image": np.zeros((1, 4, 64, 64), np.float32)})
        with pytest.raises(BackendInputError, match="expected dtype float32, got float64"):
            backend.infer({"image": np.zeros((1, 3, 64, 64))})
        with pytest.raises(BackendInputError, match="missing"):
            backend.infer({})
    with pytest.raises(TypeError, match="uint8"):
        benet_ort.predict(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        benet_ort.predict(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="detection_threshold"):
        benet_ort.predict(np.zeros((64, 64, 3), np.uint8), detection_threshold=1.5)


def test_backend_outputs_are_named_like_the_card(benet_torch, benet_ort):
    image = torch.zeros(1, 3, 64, 96)
    for predictor in (benet_torch, benet_ort):
        outputs = predictor.backend.infer({"image": image if predictor.backend.array_type == "torch" else image.numpy()})
        assert tuple(outputs) == predictor.card.output_names
        assert tuple(outputs["emotions_2"].shape) == (1, 26, 32, 48)


@pytest.mark.parametrize("model", ["benet_lite_demo.pt", "cahfw_small_demo.pt"])
def test_backends_agree_on_the_shipped_demo_models(model, tmp_path):
    """The weights a robot runs: PyTorch and ONNX Runtime give the same people."""
    from pathlib import Path

    from skimage import data

    path = Path(__file__).resolve().parents[1] / "models" / model
    frame = draw_scene(np.random.default_rng(5), 3).image if model.startswith("benet") else data.astronaut()
    results = []
    for backend in ("torch", "onnxruntime"):
        predictor = load_predictor(path, backend=backend, device="cpu", cache_dir=tmp_path)
        results.append(predictor.predict(frame, detection_threshold=0.0, max_people=5))
    torch_people, ort_people = results
    assert len(torch_people) == len(ort_people) >= 1
    # One preprocessing for every backend: what differs is float arithmetic in the two runtimes.
    for person, other in zip(torch_people, ort_people):
        assert abs(person.score - other.score) < 1e-4
        np.testing.assert_allclose(person.box, other.box, atol=1e-2)
        np.testing.assert_allclose(person.scores, other.scores, atol=1e-4)


def test_torch_and_onnxruntime_agree_to_1e4_on_a_320x240_frame(benet_torch, benet_ort):
    # The frame size where the old on-device antialiased resize differed by up to 26 grey levels.
    frame = draw_scene(np.random.default_rng(9), 2, 240, 320).image
    torch_input, params = benet_torch.preprocess(frame)
    ort_input, ort_params = benet_ort.preprocess(frame)
    assert params == ort_params
    np.testing.assert_allclose(torch_input.numpy(), ort_input, atol=1e-6)
    torch_people = benet_torch.predict(frame, detection_threshold=0.0, max_people=5)
    ort_people = benet_ort.predict(frame, detection_threshold=0.0, max_people=5)
    assert len(torch_people) == len(ort_people)
    for person, other in zip(torch_people, ort_people):
        np.testing.assert_allclose(person.scores, other.scores, atol=1e-4)
        assert abs(person.score - other.score) < 1e-4



@pytest.fixture(scope="module")
def card_exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("cards")
    return {"benet": export_onnx(peaky_benet(), root / "benet_maps.onnx").onnx_path,
            "benet_decode": export_onnx(peaky_benet(), root / "benet_decode.onnx", with_decode=True).onnx_path,
            "cahfw": export_onnx(tiny_cahfw(), root / "cahfw.onnx").onnx_path}


@pytest.mark.parametrize("model, changes, field", [
    ("benet", {"stride": 0}, "stride"),
    ("benet", {"stride": 48}, "stride"),
    ("benet", {"input_size": ["64", 64]}, "input_size"),
    ("benet", {"input_size": [0, 64]}, "input_size"),
    ("benet", {"output_names": lambda names: [n.replace("emotions_4", "emotion_4") for n in names]}, "output_names"),
    ("benet", {"input_names": ["pixels"]}, "input_names"),
    ("benet", {"categories": lambda names: names[:7]}, "categories"),
    ("benet", {"has_vad": False}, "has_vad"),
    ("benet", {"normalisation.std": [0.229, 0.0, 0.225]}, "normalisation.std"),
    ("benet", {"normalisation.colour_order": "BGR"}, "normalisation.colour_order"),
    ("benet_decode", {"categories": lambda names: names + ["Extra"]}, "categories"),
    ("benet_decode", {"decode": None}, "decode"),
    ("cahfw", {"input_size": [48, 48], "stride": 48}, "input_size"),
    ("cahfw", {"categories": lambda names: names[:3]}, "categories"),
])
def test_a_model_card_that_does_not_describe_its_graph_is_refused_at_load(card_exports, tmp_path, model, changes, field):
    from emotion_perception.export.model_card import ModelCardError

    bad = tmp_path / "bad.onnx"
    with_card_changes(card_exports[model], bad, changes)
    with pytest.raises(ModelCardError) as err:
        load_predictor(bad, backend="onnxruntime", device="cpu", face_detector="hog")
    message = str(err.value)
    assert message.startswith(f"{bad}: model card: field '{field}': ") and "\n" not in message


def test_the_untouched_cards_load(card_exports):
    for model in ("benet", "benet_decode", "cahfw"):
        predictor = load_predictor(card_exports[model], backend="onnxruntime", device="cpu", face_detector="hog")
        assert predictor.model_name == model.split("_")[0]


def test_partials_of_killed_exports_are_cleaned_and_a_failed_export_leaves_none(files, tmp_path):
    import subprocess
    import sys

    from emotion_perception.runtime.model_files import cached_onnx

    cache = tmp_path / "cache"
    onnx_dir = cache / "onnx"
    onnx_dir.mkdir(parents=True)
    path, _ = cached_onnx(files["benet"], cache)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [path.with_name(f"{path.stem}.partial-{dead_pid}.onnx"),
                 path.with_name(f"{path.stem}.partial-{dead_pid}.onnx.json")]
        busy = path.with_name(f"{path.stem}.partial-{alive.pid}.onnx")
        for leftover in (*stale, busy):
            leftover.write_bytes(b"half an export")
        again, _ = cached_onnx(files["benet"], cache)  # reused from the cache, and the stale ones go
        assert again == path
        assert not any(p.exists() for p in stale) and busy.exists()
    finally:
        alive.kill()
        alive.wait()

    # an export that fails midway removes its own partial
    import emotion_perception.export.onnx_export as onnx_export

    def half_then_fail(model, out, **kwargs):
        Path(out).write_bytes(b"half")
        raise RuntimeError("exporter crashed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx_export, "export_onnx", half_then_fail)
        with pytest.raises(RuntimeError, match="exporter crashed"):
            cached_onnx(files["benet"], tmp_path / "other_cache")
    assert not list((tmp_path / "other_cache" / "onnx").glob("*partial*"))
