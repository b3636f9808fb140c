"""The real face-expression model (face-api's FaceExpressionNet, ported to PyTorch): the port
against face-api's own runtime, the weights pipeline, the predictor on real photos, backends.

Photos come only from installed packages: scikit-image's astronaut and cameraman, and the demo
photos of the npm package @vladmandic/face-api that the setup installs with the model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from emotion_perception.data.categories import CAER_CATEGORIES
from emotion_perception.eval.metrics import box_iou
from emotion_perception.nets.expression import (
    FACE_API_CLASSES,
    FACE_API_TO_CAER,
    TfjsWeightsError,
    decode_tfjs_weights,
    state_dict_from_face_api,
)
from emotion_perception.resources import external_model_dir

ROOT = Path(__file__).resolve().parents[1]
MODELS = external_model_dir()
ARCHIVE = MODELS / ".archives" / "vladmandic-face-api-1.7.15.tgz"
needs_models = pytest.mark.skipif(
    not (MODELS / "face_expression.pt").is_file() or not (MODELS / "mtcnn.pt").is_file(),
    reason=f"third-party models not installed in {MODELS}: run scripts/setup.sh (emotion-perception models fetch)")
ASTRONAUT_FACE = (165, 55, 255, 155)  # x1, y1, x2, y2 of her face in skimage's 512x512 astronaut


@pytest.fixture(scope="module")
def face_api_package(tmp_path_factory):
    """The unpacked npm package (the setup keeps its verified archive)."""
    if not ARCHIVE.is_file():
        pytest.skip(f"{ARCHIVE} not found: run scripts/setup.sh")
    out = tmp_path_factory.mktemp("face_api")
    with tarfile.open(ARCHIVE, "r:gz") as tar:
        members = [m for m in tar.getmembers()
                   if m.name.startswith(("package/dist/face-api.esm.js", "package/model/face_expression"))]
        tar.extractall(out, members=members, filter="data")
    return out / "package"


@pytest.fixture(scope="module")
def predictor():
    from emotion_perception.runtime.predictor import load_predictor

    if not (MODELS / "face_expression.pt").is_file():
        pytest.skip("face_expression.pt not installed: run scripts/setup.sh")
    return load_predictor("expression", backend="torch", device="cpu")


def _real_face_crops() -> list[np.ndarray]:
    from skimage import data

    from emotion_perception.data.imageio import read_rgb

    astronaut, camera = data.astronaut(), np.repeat(data.camera()[..., None], 3, axis=2)
    crops = [astronaut[55:160, 165:255], astronaut[40:175, 150:270], camera[60:160, 215:300]]
    sample = read_rgb(MODELS / "samples" / "face-api" / "sample1.jpg") if (MODELS / "samples").is_dir() else None
    if sample is not None:  # faces of real people in the package's group photo (boxes by MTCNN, rounded)
        crops += [sample[350:600, 405:605], sample[415:665, 825:1040], sample[210:440, 1475:1685]]
    return [np.ascontiguousarray(c) for c in crops]


@needs_models
@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed (needed for face-api's runtime)")
def test_the_port_matches_face_api_own_runtime_on_real_faces(face_api_package, predictor, tmp_path):
    crops = _real_face_crops()
    request = {"crops": []}
    for index, crop in enumerate(crops):
        (tmp_path / f"crop{index}.rgb").write_bytes(crop.tobytes())
        request["crops"].append({"file": f"crop{index}.rgb", "height": crop.shape[0], "width": crop.shape[1]})
    (tmp_path / "request.json").write_text(json.dumps(request))
    run = subprocess.run(["node", str(ROOT / "scripts" / "face_api_reference.mjs"), str(face_api_package),
                          str(tmp_path / "request.json")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    reference = json.loads(run.stdout)
    assert reference["classes"] == list(FACE_API_CLASSES)
    expected = np.array(reference["probabilities"], dtype=np.float64)
    ours = np.stack([predictor.classify_faces(crop, np.array([[0, 0, crop.shape[1], crop.shape[0]]]))[0]
                     for crop in crops])
    ours_in_face_api_order = ours[:, [CAER_CATEGORIES.index(FACE_API_TO_CAER[c]) for c in FACE_API_CLASSES]]
    assert np.abs(ours_in_face_api_order - expected).max() < 1e-3, np.round(
        np.stack([ours_in_face_api_order, expected]), 4)


def _manifest(shapes: dict[str, tuple[int, ...]], quantise: set[str]) -> tuple[list, bytes]:
    rng = np.random.default_rng(0)
    specs, blobs = [], []
    for name, shape in shapes.items():
        values = rng.normal(size=shape).astype(np.float32)
        if name in quantise:
            low, high = float(values.min()), float(values.max())
            scale = (high - low) / 255
            q = np.round((values - low) / scale).astype(np.uint8)
            specs.append({"name": name, "shape": list(shape), "dtype": "float32",
                          "quantization": {"dtype": "uint8", "scale": scale, "min": low}})
            blobs.append(q.tobytes())
        else:
            specs.append({"name": name, "shape": list(shape), "dtype": "float32"})
            blobs.append(values.tobytes())
    return [{"paths": ["x.bin"], "weights": specs}], b"".join(blobs)


def test_tfjs_weights_decode_quantised_and_float_values_by_hand():
    manifest, data = _manifest({"a": (2, 3), "b": (4,)}, quantise={"a"})
    arrays = decode_tfjs_weights(manifest, data)
    quant = manifest[0]["weights"][0]["quantization"]
    q = np.frombuffer(data[:6], np.uint8).reshape(2, 3)
    np.testing.assert_allclose(arrays["a"], q * quant["scale"] + quant["min"], rtol=1e-6)
    np.testing.assert_array_equal(arrays["b"], np.frombuffer(data[6:], "<f4"))
    with pytest.raises(TfjsWeightsError, match="binary ends"):
        decode_tfjs_weights(manifest, data[:-1])
    with pytest.raises(TfjsWeightsError, match="describes"):
        decode_tfjs_weights(manifest, data + b"\0")


def test_a_foreign_weight_map_is_refused_with_the_missing_name():
    with pytest.raises(TfjsWeightsError, match="dense0/conv0/filters"):
        state_dict_from_face_api({"fc/weights": np.zeros((256, 7), np.float32)})


def test_tf_same_padding_is_asymmetric_for_stride_two():
    from emotion_perception.nets.expression import _same_padding

    # TensorFlow pads (total // 2, rest): 112 -> 56 with a 3x3 stride-2 kernel needs one pixel,
    # at the bottom/right only; stride 1 pads one on each side.
    assert _same_padding(112, 3, 2) == (0, 1)
    assert _same_padding(7, 3, 2) == (1, 1)
    assert _same_padding(56, 3, 1) == (1, 1)


def test_pad_to_square_and_legacy_resize_by_hand():
    from emotion_perception.runtime.preprocess import pad_to_square, resize_bilinear_legacy

    crop = np.arange(2 * 5 * 1, dtype=np.uint8).reshape(2, 5, 1) + 1
    square = pad_to_square(crop)
    # d = 3: round(1.5) = 2 rows after (half up, as JavaScript's Math.round), 1 before
    assert square.shape == (5, 5, 1)
    assert square[0].sum() == 0 and square[3:].sum() == 0 and (square[1:3] == crop).all()
    image = np.array([[0.0, 10.0], [20.0, 30.0]])[..., None]
    # out 4x4 from 2x2: source = index * 0.5; row 1 -> 0.5 between rows, col 3 -> 1.5 clamps to col 1
    resized = resize_bilinear_legacy(image, 4, 4)[..., 0]
    assert resized[0, 1] == pytest.approx(5.0) and resized[1, 0] == pytest.approx(10.0)
    assert resized[1, 1] == pytest.approx(15.0) and resized[0, 3] == pytest.approx(10.0)
    assert resized[3, 3] == pytest.approx(30.0)


@needs_models
def test_predict_on_the_astronaut_finds_one_face_and_reads_it_as_happy(tmp_path):
    from skimage import data

    from emotion_perception.data.imageio import write_rgb

    write_rgb(tmp_path / "astronaut.png", data.astronaut())
    out = subprocess.run([sys.executable, "-m", "emotion_perception.cli", "predict", "--model", "expression",
                          "--backend", "torch", "--json", str(tmp_path / "out.json"),
                          str(tmp_path / "astronaut.png")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (image,) = json.loads((tmp_path / "out.json").read_text())["images"]
    assert len(image["people"]) == 1, image["people"]  # her face; not the round mission patch
    person = image["people"][0]
    assert box_iou([person["box"]], [ASTRONAUT_FACE])[0, 0] > 0.5
    assert person["top_labels"][0]["label"] == "Happy" and person["top_labels"][0]["score"] > 0.9


@needs_models
def test_the_model_card_says_what_it_is(predictor):
    card = predictor.card
    assert card.model_name == "expression" and tuple(card.categories) == CAER_CATEGORIES
    assert card.trained_on.startswith("real:") and "does not name" in card.trained_on
    checkpoint = torch.load(MODELS / "face_expression.pt", weights_only=True)
    assert (checkpoint["provenance"]["package"] == "@vladmandic/face-api"
            and checkpoint["provenance"]["license"] == "MIT")


@needs_models
def test_onnxruntime_and_torch_agree_on_real_faces(predictor, tmp_path):
    from skimage import data

    from emotion_perception.runtime.predictor import load_predictor

    onnx = load_predictor("expression", backend="onnxruntime", device="cpu", cache_dir=tmp_path)
    image = data.astronaut()
    torch_people = predictor.predict(image, detection_threshold=0.9)
    onnx_people = onnx.predict(image, detection_threshold=0.9)
    assert len(torch_people) == len(onnx_people) == 1
    np.testing.assert_allclose(torch_people[0].box, onnx_people[0].box, atol=1e-4)
    np.testing.assert_allclose(torch_people[0].scores, onnx_people[0].scores, atol=1e-4)


def test_softmax_labels_must_clearly_beat_chance():
    from emotion_perception.runtime.labels import confident_labels

    names = tuple("ABCDEFG")
    uniform = np.full(7, 1 / 7)
    assert confident_labels(uniform, names, 0.0, exclusive=True) == []  # nothing beats chance twice
    peaked = np.array([0.05, 0.05, 0.6, 0.1, 0.1, 0.05, 0.05])
    assert confident_labels(peaked, names, 0.3, exclusive=True) == ["C"]
    assert confident_labels(peaked, names, 0.0, exclusive=True) == ["C"]  # 0.1 < 2/7
    # multi-label sigmoids (BENet): the threshold alone
    assert confident_labels(np.full(7, 0.2), names, 0.1, exclusive=False) == list(names)


@needs_models
def test_clear_open_smiles_in_real_photos_are_read_as_happy(predictor):
    from emotion_perception.data.imageio import read_rgb

    truth = json.loads((ROOT / "test" / "data" / "real_faces.json").read_text())
    happy = CAER_CATEGORIES.index("Happy")
    checked = 0
    for name, indices in truth["open_smiles"].items():
        image = read_rgb(MODELS / "samples" / "face-api" / name)
        boxes = np.array(truth["images"][name]["faces"], dtype=np.float32)[indices]
        probabilities = predictor.classify_faces(image, boxes)
        assert (probabilities.argmax(axis=1) == happy).all(), (name, np.round(probabilities, 2))
        assert (probabilities[:, happy] > 0.9).all(), (name, np.round(probabilities[:, happy], 3))
        checked += len(indices)
    assert checked == 8


def test_calibrated_per_category_thresholds_replace_the_global_one():
    from emotion_perception.runtime.labels import confident_labels

    names = ("A", "B", "C")
    scores = np.array([0.30, 0.20, 0.50])
    assert confident_labels(scores, names, 0.4, exclusive=False) == ["C"]
    # A calibrated at 0.25 and C at 0.6; B has none (global 0.4 applies)
    assert confident_labels(scores, names, 0.4, exclusive=False, per_category={"A": 0.25, "C": 0.6}) == ["A"]
