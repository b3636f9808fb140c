"""Runtime: backends agree through load_predictor, preprocessing, backend choice, clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from deploy_models import peaky_benet, save_checkpoint, tiny_cahfw, with_card_changes

from emotion_perception.data.geometry import boxes_to_letterbox
from emotion_perception.export.grid_scenes import draw_scene
from emotion_perception.export.onnx_export import export_onnx
from emotion_perception.nets.decode import DecodeConfig
from emotion_perception.runtime import PersonPrediction, load_predictor
from emotion_perception.runtime.backend import (
    Availability,
    BackendInputError,
    auto_candidates,
    backend_entry,
    choose_backend,
    resolve_device,
)
from emotion_perception.runtime.model_files import ModelFileError, detect_model_kind
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


def _probability_maps(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """BENet's maps at 1/2 resolution from one image's raw outputs, by the definition in
    docs/ARCHITECTURE.md ("Decoding") and with other tools than nets/decode.py: numpy's sigmoid,
    cv2's bilinear x2 upsampling of the 1/4 maps (pixel centres, edges repeated), the mean of the
    two resolutions; sizes are non-negative and a 1/4-map pixel spans two 1/2-map pixels."""
    def upsampled(maps: np.ndarray) -> np.ndarray:  # (C, h, w) -> (C, 2h, 2w)
        height, width = maps.shape[1:]
        return np.stack([cv2.resize(channel, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
                         for channel in maps])

    def sigmoid(x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-x.astype(np.float64)))

    maps = {name: (upsampled(sigmoid(raw[f"{name}_4"][0]).astype(np.float32)) + sigmoid(raw[f"{name}_2"][0])) / 2
            for name in ("heatmap", "emotions", "vad")}
    size_4, size_2 = (np.maximum(raw[name][0], 0) for name in ("size_4", "size_2"))
    maps["size"] = (upsampled(size_4 * 2) + size_2) / 2
    return maps


def test_flip_test_averages_with_the_mirrored_pass_flipped_back(benet_torch, benet_ort):
    # At the training size (64x64) the letterbox is the identity: input pixels are map pixels x 2.
    image = draw_scene(np.random.default_rng(5), 2, 64, 64).image
    network_input, _ = benet_torch.preprocess(image)

    def raw(x: torch.Tensor) -> dict[str, np.ndarray]:  # one plain network pass
        return {name: value.numpy() for name, value in benet_torch.backend.infer({"image": x}).items()}

    plain = _probability_maps(raw(network_input))
    mirrored = _probability_maps(raw(network_input.flip(-1)))
    # Flip test: each map is the mean of the plain pass and the mirrored pass flipped back. No
    # channel is swapped: emotions, VAD, widths and heights are the same seen in a mirror.
    reference = {name: (plain[name] + mirrored[name][..., ::-1]) / 2 for name in plain}
    assert np.abs(reference["heatmap"] - plain["heatmap"]).max() > 1e-3  # the mirror changes the maps here

    people = benet_torch.predict(image, 0.0, 5, flip_test=True)
    heat = reference["heatmap"][0]
    local_max = np.lib.stride_tricks.sliding_window_view(np.pad(heat, 2, mode="edge"), (5, 5)).max(axis=(2, 3))
    peaks = np.sort(heat[heat == local_max])[::-1][:5]
    np.testing.assert_allclose([p.score for p in people], peaks, atol=1e-5)  # the 5 strongest 5x5 peaks
    for person in people:
        centre_x, centre_y = (person.box[0] + person.box[2]) / 2, (person.box[1] + person.box[3]) / 2
        row, col = int(centre_y // 2), int(centre_x // 2)
        assert person.score == pytest.approx(heat[row, col], abs=1e-5)
        np.testing.assert_allclose(person.scores, reference["emotions"][:, row, col], atol=1e-5)
        np.testing.assert_allclose(person.vad, reference["vad"][:, row, col], atol=1e-5)
        width, height = reference["size"][:, row, col] * 2  # sizes in 1/2-map pixels
        box = [centre_x - width / 2, centre_y - height / 2, centre_x + width / 2, centre_y + height / 2]
        np.testing.assert_allclose(person.box, np.clip(box, 0, 64), atol=1e-3)

    # So the mirror image's people are these people mirrored.
    mirror_people = benet_torch.predict(np.ascontiguousarray(image[:, ::-1]), 0.0, 5, flip_test=True)
    np.testing.assert_allclose([p.score for p in mirror_people], [p.score for p in people], atol=1e-5)
    np.testing.assert_allclose([[64 - p.box[2], p.box[1], 64 - p.box[0], p.box[3]] for p in mirror_people],
                               [p.box for p in people], atol=1e-3)
    _assert_same_people(people, benet_ort.predict(image, 0.0, 5, flip_test=True), box_tol=1e-3, score_tol=1e-5)


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


def test_preprocessing_letterboxes_and_normalises_as_specified(benet_ort):
    card = benet_ort.card.replace(input_size=(256, 256))
    # A 400x300 image, red left half, blue right half, into a 256x256 canvas: scale 256/400 =
    # 0.64, so the image is 256x192 with 32 rows of padding above and below, the colour edge at
    # column 200 x 0.64 = 128.
    image = np.zeros((300, 400, 3), np.uint8)
    image[:, :200] = (255, 0, 0)
    image[:, 200:] = (0, 0, 255)
    params = canvas_geometry(300, 400, card, input_size=(256, 256))
    assert (params.scale, params.pad_x, params.pad_y) == (pytest.approx(0.64), 0, 32)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])  # ImageNet, RGB

    def normalised(rgb: tuple[int, int, int]) -> np.ndarray:
        return ((np.array(rgb) / 255 - mean) / std)[:, None, None]

    expected = np.empty((3, 256, 256))
    expected[...] = normalised((124, 116, 104))  # padding: the ImageNet mean colour in uint8
    expected[:, 32:224, :128] = normalised((255, 0, 0))
    expected[:, 32:224, 128:] = normalised((0, 0, 255))
    on_host = preprocess_numpy(image, params, card.normalisation)
    on_device = preprocess_torch(image, params, card.normalisation, "cpu").numpy()
    for network_input in (on_host, on_device):
        assert network_input.shape == (1, 3, 256, 256) and network_input.dtype == np.float32
        np.testing.assert_allclose(network_input[0], expected, atol=1e-5)
    # Boxes follow the pixels: the whole image and its red half.
    np.testing.assert_allclose(boxes_to_letterbox(np.array([[0, 0, 400, 300], [0, 0, 200, 300]]), params),
                               [[0, 32, 256, 224], [0, 32, 128, 224]], atol=1e-4)


def test_torch_and_numpy_preprocessing_agree(benet_ort):
    card = benet_ort.card.replace(input_size=(256, 256))
    image = draw_scene(np.random.default_rng(1), 3, 300, 400).image
    params = canvas_geometry(300, 400, card)
    on_host = preprocess_numpy(image, params, card.normalisation)
    on_device = preprocess_torch(image, params, card.normalisation, "cpu").numpy()
    assert on_host.shape == on_device.shape == (1, 3, 192, 256)
    # One preprocessing for every backend: the training resize, then the same normalisation.
    np.testing.assert_allclose(on_host, on_device, atol=1e-6)


# --------------------------------------------------------------------------- choosing backends


CPU_ONLY = Availability(cuda=False, tensorrt=False, onnxruntime_providers=("CPUExecutionProvider",))
GPU_FULL = Availability(cuda=True, tensorrt=True,
                        onnxruntime_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                               "CPUExecutionProvider"))
GPU_ORT = Availability(cuda=True, tensorrt=False,
                       onnxruntime_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
GPU_TORCH = Availability(cuda=True, tensorrt=False, onnxruntime_providers=("CPUExecutionProvider",))


@pytest.mark.parametrize("kind, available, expected", [
    ("checkpoint", CPU_ONLY, ("onnxruntime", "cpu")),
    ("onnx", CPU_ONLY, ("onnxruntime", "cpu")),
    ("checkpoint", GPU_FULL, ("tensorrt", "cuda:0")),
    ("onnx", GPU_FULL, ("tensorrt", "cuda:0")),
    ("engine", GPU_FULL, ("tensorrt", "cuda:0")),
    ("checkpoint", GPU_ORT, ("torch", "cuda:0")),  # PyTorch fp16 beats ORT's CUDA provider on an fp32 graph
    ("onnx", GPU_ORT, ("onnxruntime", "cuda:0")),
    ("checkpoint", GPU_TORCH, ("torch", "cuda:0")),
    ("onnx", GPU_TORCH, ("onnxruntime", "cpu")),
])
def test_auto_picks_the_fastest_available_backend(kind, available, expected):
    backend, device, reason = choose_backend(kind, "auto", "auto", available)
    assert (backend, device) == expected and reason


def test_auto_lists_every_backend_that_can_run_here_best_first():
    # The order a fallback would follow: the GPU's backends in table order, then the CPU's.
    assert [c[:2] for c in auto_candidates("checkpoint", "auto", GPU_FULL)] == [
        ("tensorrt", "cuda:0"), ("onnxruntime", "cuda:0"), ("torch", "cuda:0"),
        ("onnxruntime", "cpu"), ("torch", "cpu")]
    assert [c[:2] for c in auto_candidates("onnx", "auto", GPU_TORCH)] == [("onnxruntime", "cpu")]
    reason = auto_candidates("onnx", "auto", GPU_TORCH)[0][2]
    assert "TensorRT is not installed" in reason and "no GPU provider" in reason  # why the GPU was passed over
    assert [c[:2] for c in auto_candidates("engine", "cuda:1", GPU_FULL)] == [("tensorrt", "cuda:1")]
    with pytest.raises(ValueError, match="no backend can run an onnx file here: .*onnxruntime is not installed"):
        auto_candidates("onnx", "cpu", Availability(cuda=False, tensorrt=False, onnxruntime_providers=()))


def test_impossible_backend_requests_are_refused_clearly():
    with pytest.raises(ValueError, match="torch backend opens checkpoint files, not an onnx file; that runs on "
                                         "tensorrt or onnxruntime"):
        choose_backend("onnx", "torch", "cpu", CPU_ONLY)
    with pytest.raises(ValueError, match="backend must be auto, tensorrt, onnxruntime, torch, got 'openvino'"):
        choose_backend("onnx", "openvino", "cpu", CPU_ONLY)
    with pytest.raises(ValueError, match="tensorrt backend runs on a CUDA device"):
        choose_backend("onnx", "tensorrt", "cpu", GPU_FULL)
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


def test_auto_falls_back_along_the_chain_and_says_why(files, monkeypatch, caplog):
    """TensorRT installed but its build fails, ONNX Runtime lists a GPU provider it cannot create,
    PyTorch hits a CUDA error: ``auto`` ends on the CPU and logs each reason."""
    import logging

    import emotion_perception.runtime.onnxruntime_backend as onnxruntime_backend
    import emotion_perception.runtime.predictor as predictor_module
    import emotion_perception.runtime.tensorrt_backend as tensorrt_backend
    import emotion_perception.runtime.torch_backend as torch_backend
    from emotion_perception.export.tensorrt_build import TensorRTBuildError

    tried = []
    real_ort_open = onnxruntime_backend.open_backend

    def tensorrt_fails(path, kind, device, precision, cache, options):
        tried.append(("tensorrt", device))
        raise TensorRTBuildError(f"{path}: TensorRT could not parse the ONNX graph: node 3: unsupported op")

    def onnxruntime_gpu_fails(path, kind, device, precision, cache, options):
        tried.append(("onnxruntime", device))
        if device != "cpu":
            raise ValueError(f"{path}: no GPU provider could be created on {device} (got ('CPUExecutionProvider',))")
        return real_ort_open(path, kind, device, precision, cache, options)

    def torch_cuda_fails(path, kind, device, precision, cache, options):
        tried.append(("torch", device))
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    monkeypatch.setattr(predictor_module, "probe_availability", lambda: GPU_FULL)
    monkeypatch.setattr(tensorrt_backend, "open_backend", tensorrt_fails)
    monkeypatch.setattr(onnxruntime_backend, "open_backend", onnxruntime_gpu_fails)
    monkeypatch.setattr(torch_backend, "open_backend", torch_cuda_fails)
    with caplog.at_level(logging.WARNING, logger="emotion_perception.runtime.predictor"):
        predictor = load_predictor(files["benet"], device="auto", cache_dir=files["cache"])
    assert tried == [("tensorrt", "cuda:0"), ("onnxruntime", "cuda:0"), ("torch", "cuda:0"), ("onnxruntime", "cpu")]
    assert predictor.backend.name == "onnxruntime" and predictor.backend.device == "cpu"
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "could not parse" in logged and "no GPU provider could be created" in logged and "CUDA error" in logged

    # When nothing opens, one error gives every backend's reason.
    monkeypatch.setattr(onnxruntime_backend, "open_backend", lambda *args: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(ValueError, match="no backend could open it here: tensorrt on cuda:0: .*disk full"):
        load_predictor(files["benet"], device="auto", cache_dir=files["cache"])


def test_auto_does_not_hide_a_broken_model_file_behind_the_next_backend(tmp_path, monkeypatch):
    import emotion_perception.runtime.predictor as predictor_module

    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 truncated zip")
    monkeypatch.setattr(predictor_module, "probe_availability", lambda: CPU_ONLY)
    with pytest.raises(ValueError, match="bad.pt.*not a readable torch checkpoint") as err:
        load_predictor(tmp_path / "bad.pt", device="cpu")
    assert "no backend could open" not in str(err.value)


# --------------------------------------------------------------------------- the backend table


def test_every_backend_opens_its_kinds_and_refuses_unknown_precisions(files):
    openable_here = {"torch": ["checkpoint"], "onnxruntime": ["checkpoint", "onnx"]}  # tensorrt: GPU machines
    sources = {"checkpoint": files["benet"], "onnx": files["benet_decode"]}
    for name, kinds in openable_here.items():
        entry = backend_entry(name)
        assert set(kinds) <= set(entry.kinds)
        for kind in kinds:
            backend = entry.open(sources[kind], kind, "cpu", "auto", files["cache"])
            assert backend.name == name and backend.device == "cpu" and backend.precision == "fp32"
            assert backend.card.model_name == "benet" and backend.card.with_decode == (kind == "onnx")
    for entry in (backend_entry(name) for name in ("tensorrt", "onnxruntime", "torch")):
        with pytest.raises(ValueError, match=f"the {entry.name} backend runs precision auto .* not 'bf16'"):
            entry.open(files["benet"], "checkpoint", "cuda:0", "bf16", files["cache"])
    with pytest.raises(ValueError, match="torch backend runs precision .*fp32, fp16, not 'int8'"):
        backend_entry("torch").open(files["benet"], "checkpoint", "cpu", "int8", files["cache"])
    with pytest.raises(ValueError, match="fp16 on CPU is slower"):
        backend_entry("torch").open(files["benet"], "checkpoint", "cpu", "fp16", files["cache"])
    with pytest.raises(ValueError, match="fp16 is for GPUs"):
        backend_entry("onnxruntime").open(files["benet"], "checkpoint", "cpu", "fp16", files["cache"])
    with pytest.raises(ValueError, match="onnxruntime backend opens checkpoint or onnx files, not an engine file"):
        backend_entry("onnxruntime").open(files["benet"], "engine", "cpu", "auto", files["cache"])


def test_torch_and_onnxruntime_backends_agree_to_1e4_on_the_same_input(files):
    torch_backend = backend_entry("torch").open(files["benet"], "checkpoint", "cpu", "fp32", files["cache"])
    ort_backend = backend_entry("onnxruntime").open(files["benet"], "checkpoint", "cpu", "fp32", files["cache"])
    image = torch.from_numpy(np.random.default_rng(4).standard_normal((2, 3, 64, 96)).astype(np.float32))
    torch_maps, ort_maps = torch_backend.infer({"image": image}), ort_backend.infer({"image": image.numpy()})
    assert tuple(torch_maps) == tuple(ort_maps) == torch_backend.card.output_names
    for name, value in torch_maps.items():
        np.testing.assert_allclose(value.numpy(), ort_maps[name], atol=1e-4, err_msg=name)


def test_a_closed_backend_says_so_instead_of_failing_inside_its_runtime(files):
    image = np.zeros((1, 3, 64, 64), np.float32)
    for name in ("torch", "onnxruntime"):
        backend = backend_entry(name).open(files["benet"], "checkpoint", "cpu", "fp32", files["cache"])
        backend.infer({"image": torch.from_numpy(image) if backend.array_type == "torch" else image})
        backend.close()
        backend.close()  # twice is harmless
        with pytest.raises(RuntimeError, match="is closed; load the model again"):
            backend.infer({"image": image})


class _FixedFaces:
    def detect(self, image_rgb):
        return np.array([[8, 8, 40, 40, 0.9]], np.float32)


@pytest.mark.parametrize("model, max_batch", [("benet", 2), ("cahfw", 16)])
def test_tensorrt_engines_are_sized_for_the_predictors_batches(files, monkeypatch, model, max_batch):
    # What load_predictor asks the tensorrt opener for, without TensorRT: the opener records the
    # batch it would build the engine for and hands back an ONNX Runtime backend instead.
    import emotion_perception.runtime.predictor as predictor_module
    import emotion_perception.runtime.tensorrt_backend as tensorrt_backend

    asked = []

    def fake_open(path, kind, device, precision, cache, options):
        backend = backend_entry("onnxruntime").open(path, kind, "cpu", "fp32", cache)
        asked.append((device, precision, options.max_batch_for(backend.card.model_name)))
        return backend

    monkeypatch.setattr(predictor_module, "probe_availability", lambda: GPU_FULL)
    monkeypatch.setattr(tensorrt_backend, "open_backend", fake_open)
    predictor = load_predictor(files[model], device="auto", cache_dir=files["cache"], face_detector=_FixedFaces())
    assert asked == [("cuda:0", "auto", max_batch)] and predictor.max_batch == max_batch


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
    with pytest.raises(ValueError, match="torch backend opens checkpoint files, not an onnx file"):
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
        outputs = predictor.backend.infer(
            {"image": image if predictor.backend.array_type == "torch" else image.numpy()})
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
def test_a_model_card_that_does_not_describe_its_graph_is_refused_at_load(card_exports, tmp_path, model, changes,
                                                                          field):
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


def test_exports_of_an_older_exporter_are_made_again(files, tmp_path, monkeypatch):
    import emotion_perception.export.onnx_export as onnx_export
    from emotion_perception.runtime.model_files import cached_onnx

    path, card = cached_onnx(files["benet"], tmp_path)
    assert card.source["export_revision"] == onnx_export.EXPORT_REVISION
    again, _ = cached_onnx(files["benet"], tmp_path)
    assert again == path and again.stat().st_mtime_ns == path.stat().st_mtime_ns
    stamp = path.stat().st_mtime_ns
    monkeypatch.setattr(onnx_export, "EXPORT_REVISION", onnx_export.EXPORT_REVISION + 1)
    newer, newer_card = cached_onnx(files["benet"], tmp_path)
    assert newer_card.source["export_revision"] == onnx_export.EXPORT_REVISION
    assert newer.stat().st_mtime_ns != stamp


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
