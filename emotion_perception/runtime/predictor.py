"""Predictors: an RGB image in, a list of people with emotion scores out (docs/ARCHITECTURE.md,
"Runtime interface"). One class per model family, both behind :func:`load_predictor`.

* BENet (bottom-up, one pass whatever the number of people): letterbox + normalise on the
  backend's device, the network, then decoding (inside the graph for ``--with-decode`` exports,
  else :func:`emotion_perception.nets.decode.decode` in torch on the same device).
* CAHFW-Net (top-down): face detection (MTCNN by default, dlib HOG/CNN as options), one face
  crop + masked context per face (:func:`emotion_perception.data.faces.faces_and_contexts`, the
  function training uses), all faces classified in one batch; box = face box, score = detector
  confidence in [0, 1], scores = softmax over the 7 CAER-S classes, VAD NaN.
* The expression model (face-api's FaceExpressionNet, real weights): the same top-down path
  with a face crop only, its 7 classes named as CAER-S's.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emotion_perception.errors import FieldError
from emotion_perception.export.model_card import ModelCard, ModelCardError
from emotion_perception.runtime.backend import (
    Availability,
    Backend,
    OpenOptions,
    auto_candidates,
    backend_entry,
    choose_backend,
    probe_availability,
)
from emotion_perception.runtime.model_files import ModelFileError, detect_model_kind
from emotion_perception.runtime.preprocess import (
    canvas_geometry,
    check_image,
    letterbox_row,
    normalise_numpy,
    preprocess_numpy,
    preprocess_torch,
)

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class PersonPrediction:
    """One person: box (4,) float32 x1y1x2y2 in pixels of the input image, detection score,
    per-category scores (C,) float32 in [0, 1], VAD (3,) float32 in [0, 1] (NaN if not predicted)."""

    box: np.ndarray
    score: float
    scores: np.ndarray
    vad: np.ndarray


def top_labels(scores: np.ndarray, categories: tuple[str, ...], count: int = 3) -> list[tuple[str, float]]:
    """The ``count`` highest-scoring categories, best first."""
    order = np.argsort(-np.asarray(scores), kind="stable")[:count]
    return [(categories[i], float(scores[i])) for i in order]


def _check_call(detection_threshold: float, max_people: int) -> None:
    if not 0.0 <= float(detection_threshold) <= 1.0:
        raise ValueError(f"detection_threshold must be in [0, 1], got {detection_threshold}")
    if int(max_people) != max_people or max_people < 0:
        raise ValueError(f"max_people must be a non-negative integer, got {max_people}")


class Predictor(ABC):
    """Shared attributes of the predictors (see docs/ARCHITECTURE.md, "Runtime interface")."""

    # The largest batch this predictor hands its backend in one call; TensorRT engines built for
    # it get a profile up to this batch (OpenOptions.max_batch). Each subclass says why.
    max_batch: int

    def __init__(self, backend: Backend, card: ModelCard, input_size: tuple[int, int] | None = None) -> None:
        self.backend = backend
        self.card = card
        self.input_size = tuple(input_size) if input_size is not None else None
        self._warned: set[str] = set()

    @property
    def model_name(self) -> str:
        return self.card.model_name

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.card.categories)

    @property
    def has_vad(self) -> bool:
        return bool(self.card.has_vad)

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def precision(self) -> str:
        return self.backend.precision

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            LOGGER.warning(message)

    def _to_backend(self, array: np.ndarray) -> Any:
        """A host array as the backend wants it (a torch tensor on its device for GPU backends)."""
        if self.backend.array_type == "numpy":
            return array
        import torch

        return torch.from_numpy(np.ascontiguousarray(array)).to(self.backend.device, non_blocking=True)

    @abstractmethod
    def predict(self, image_rgb: np.ndarray, detection_threshold: float = 0.3, max_people: int = 15,
                flip_test: bool = False) -> list[PersonPrediction]:
        """People in an (H, W, 3) uint8 RGB image, strongest first (boxes in its pixels)."""

    def close(self) -> None:
        self.backend.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={self.model_name}, preset={self.card.preset}, "
                f"backend={self.backend_name}, device={self.device}, precision={self.precision})")


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    return value.detach().float().cpu().numpy() if value.dtype.is_floating_point else value.detach().cpu().numpy()


class BENetPredictor(Predictor):
    """Bottom-up: every person from one network pass (see module docstring)."""

    max_batch = 2  # one frame per call; flip test runs it with its mirror as one batch of 2

    def preprocess(self, image_rgb: np.ndarray) -> tuple[Any, Any]:
        """(network input (1, 3, H, W), letterbox parameters) on the backend's device."""
        image_rgb = check_image(image_rgb)
        params = canvas_geometry(image_rgb.shape[0], image_rgb.shape[1], self.card, self.input_size)
        if self.backend.array_type == "torch":
            return preprocess_torch(image_rgb, params, self.card.normalisation, self.backend.device), params
        return preprocess_numpy(image_rgb, params, self.card.normalisation), params

    def predict(self, image_rgb: np.ndarray, detection_threshold: float = 0.3, max_people: int = 15,
                flip_test: bool = False) -> list[PersonPrediction]:
        _check_call(detection_threshold, max_people)
        image, params = self.preprocess(image_rgb)
        if max_people == 0:
            return []
        if self.card.with_decode:
            decoded = self._run_decoding_graph(image, params, max_people, flip_test)
        else:
            decoded = self._run_maps_and_decode(image, params, detection_threshold, max_people, flip_test)
        boxes, scores, emotions, vad, valid = (decoded[name]
                                               for name in ("boxes", "scores", "emotions", "vad", "valid"))
        keep = np.flatnonzero(valid[0] & (scores[0] >= detection_threshold))[:max_people]
        width, height = params.input_width, params.input_height
        people = []
        for row in keep:
            box = boxes[0, row].astype(np.float32).copy()
            box[[0, 2]] = box[[0, 2]].clip(0, width)
            box[[1, 3]] = box[[1, 3]].clip(0, height)
            people.append(PersonPrediction(box, float(scores[0, row]), emotions[0, row].astype(np.float32),
                                           vad[0, row].astype(np.float32)))
        return people

    def _run_decoding_graph(self, image: Any, params: Any, max_people: int, flip_test: bool) -> dict[str, np.ndarray]:
        decode = self.card.decode
        assert decode is not None  # ModelCard refuses with_decode without a decode section
        graph_flips = bool(decode.get("flip_test"))
        if flip_test and not graph_flips:
            raise ValueError("flip_test: this model was exported with decoding in the graph and without flip test; "
                             "export it with --flip-test, or without --with-decode")
        if graph_flips and not flip_test:
            self._warn_once("flip", "this model's graph always averages with the mirrored image "
                                    "(exported with --flip-test)")
        top_k = int(decode["top_k"])
        if max_people > top_k:
            self._warn_once("top_k", f"max_people={max_people} > the {top_k} rows of this model's decoding graph; "
                                     f"returning at most {top_k}")
        outputs = self.backend.infer({"image": image, "letterbox": self._to_backend(letterbox_row(params))})
        return {name: _to_numpy(value) for name, value in outputs.items()}

    def _run_maps_and_decode(self, image: Any, params: Any, threshold: float, max_people: int,
                             flip_test: bool) -> dict[str, np.ndarray]:
        import torch

        from emotion_perception.nets.decode import DecodeConfig, decode

        if flip_test:
            image = np.concatenate([image, image[..., ::-1]]) if isinstance(image, np.ndarray) else \
                torch.cat([image, image.flip(-1)])
        maps = self.backend.infer({"image": np.ascontiguousarray(image) if isinstance(image, np.ndarray) else image})
        maps = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in maps.items()}
        outputs = {k: v[:1] for k, v in maps.items()}
        flipped = {k: v[1:] for k, v in maps.items()} if flip_test else None
        map_pixels = maps["heatmap_2"].shape[2] * maps["heatmap_2"].shape[3]
        config = DecodeConfig(top_k=max(1, min(max_people, map_pixels)), threshold=threshold)
        letterbox = torch.from_numpy(letterbox_row(params)).to(maps["heatmap_2"].device)
        on_cpu = maps["heatmap_2"].device.type == "cpu"
        with torch.inference_mode(), (single_torch_thread() if on_cpu else contextlib.nullcontext()):
            decoded = decode(outputs, letterbox, config, flipped)
        return {name: _to_numpy(value) for name, value in decoded.items()}


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run the enclosed torch CPU ops on one thread, then restore the previous setting.

    Decoding works on maps of a few hundred kilobytes: OpenMP threads cost more than they save
    there, and on a CPU shared with other processes (a robot's other nodes) a parallel region
    waits for its slowest, descheduled thread. Measured on this project's 2-core machines under
    load: 12 ms with one thread against 80 ms with two for BENet ``lite`` maps.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def detection_confidence(raw_scores: np.ndarray) -> np.ndarray:
    """dlib detector scores (SVM / MMOD margins, 0 at the default operating point) -> [0, 1]
    by the logistic function: 0.5 at dlib's own threshold, monotonic, so rankings are kept."""
    return (1.0 / (1.0 + np.exp(-np.asarray(raw_scores, dtype=np.float64)))).astype(np.float32)


def face_confidence(detector: Any, raw_scores: np.ndarray) -> np.ndarray:
    """A face detector's scores in [0, 1]: probabilities as they are (MTCNN), dlib margins
    through :func:`detection_confidence`."""
    if getattr(detector, "scores_are_probabilities", False):
        return np.asarray(raw_scores, dtype=np.float32)
    return detection_confidence(raw_scores)


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    stacked = np.asarray(logits, dtype=np.float64)
    stacked = stacked - stacked.max(axis=1, keepdims=True)
    probabilities = np.exp(stacked)
    return (probabilities / probabilities.sum(axis=1, keepdims=True)).astype(np.float32)


class TopDownPredictor(Predictor):
    """Detect faces, then classify every face in one batch; box = face box, score = detector
    confidence in [0, 1], scores = softmax over the classes, VAD NaN."""

    # The faces of one frame in one batch (twice that with flip test); more than the backend
    # takes at once (an engine's profile) run in chunks of its limit.
    max_batch = 16

    def __init__(self, backend: Backend, card: ModelCard, face_detector: Any) -> None:
        super().__init__(backend, card)
        self.face_detector = face_detector
        spec = backend.inputs[0]
        self._backend_batch_limit = int(spec.max_shape[0]) if spec.max_shape is not None else None

    def predict(self, image_rgb: np.ndarray, detection_threshold: float = 0.3, max_people: int = 15,
                flip_test: bool = False) -> list[PersonPrediction]:
        _check_call(detection_threshold, max_people)
        image_rgb = check_image(image_rgb)
        detections = self.face_detector.detect(image_rgb)
        confidence = face_confidence(self.face_detector, detections[:, 4])
        keep = np.flatnonzero(confidence >= detection_threshold)[:max_people]
        if len(keep) == 0:
            return []
        boxes = detections[keep, :4]
        probabilities = self.classify_faces(image_rgb, boxes, flip_test)
        vad = np.full(3, np.nan, dtype=np.float32)
        return [PersonPrediction(boxes[i].astype(np.float32), float(confidence[keep[i]]), probabilities[i], vad.copy())
                for i in range(len(keep))]

    @abstractmethod
    def network_inputs(self, image_rgb: np.ndarray, face_boxes: np.ndarray) -> dict[str, np.ndarray]:
        """The backend inputs (name -> (K, 3, S, S) float32) for K faces."""

    def classify_faces(self, image_rgb: np.ndarray, face_boxes: np.ndarray, flip_test: bool = False) -> np.ndarray:
        """(K, C) float32 class probabilities of the faces at ``face_boxes`` (K, 4) in one batch."""
        image_rgb = check_image(image_rgb)
        face_boxes = np.asarray(face_boxes, dtype=np.float32).reshape(-1, 4)
        if len(face_boxes) == 0:
            return np.zeros((0, len(self.categories)), dtype=np.float32)
        inputs = self.network_inputs(image_rgb, face_boxes)
        if flip_test:
            inputs = {name: np.concatenate([batch, batch[..., ::-1]]) for name, batch in inputs.items()}
        count = len(next(iter(inputs.values())))
        logits = []
        step = self._backend_batch_limit or count
        for start in range(0, count, step):
            outputs = self.backend.infer({name: self._to_backend(np.ascontiguousarray(batch[start:start + step]))
                                          for name, batch in inputs.items()})
            logits.append(_to_numpy(outputs["logits"]).astype(np.float64))
        probabilities = softmax_rows(np.concatenate(logits))
        if flip_test:
            faces = len(face_boxes)
            probabilities = (probabilities[:faces] + probabilities[faces:]) / 2
        return probabilities.astype(np.float32)


class CAHFWPredictor(TopDownPredictor):
    """CAHFW-Net: each face crop with its context (the face masked), the training inputs
    (:func:`emotion_perception.data.faces.faces_and_contexts`)."""

    def __init__(self, backend: Backend, card: ModelCard, face_detector: Any, face_scale: float = 1.0) -> None:
        super().__init__(backend, card, face_detector)
        self.face_scale = float(face_scale)

    def network_inputs(self, image_rgb: np.ndarray, face_boxes: np.ndarray) -> dict[str, np.ndarray]:
        from emotion_perception.data.faces import faces_and_contexts

        size = int(self.card.input_size[0])
        faces, contexts = faces_and_contexts(image_rgb, face_boxes, size, self.face_scale)
        return {"face": normalise_numpy(faces, self.card.normalisation),
                "context": normalise_numpy(contexts, self.card.normalisation)}


class ExpressionPredictor(TopDownPredictor):
    """face-api's FaceExpressionNet: each face box's pixels padded to a square and resized with
    TensorFlow's legacy bilinear (:func:`emotion_perception.runtime.preprocess.face_crops`), as
    face-api feeds it."""

    def network_inputs(self, image_rgb: np.ndarray, face_boxes: np.ndarray) -> dict[str, np.ndarray]:
        from emotion_perception.runtime.preprocess import face_crops

        crops = face_crops(image_rgb, face_boxes, int(self.card.input_size[0]))
        return {"face": normalise_numpy(crops, self.card.normalisation)}


# --------------------------------------------------------------------------- loading


# The predictor of each model family (ModelCard.model_name).
PREDICTORS: dict[str, type[Predictor]] = {
    "benet": BENetPredictor, "cahfw": CAHFWPredictor, "expression": ExpressionPredictor,
}


FACE_DETECTORS = ("auto", "mtcnn", "hog", "cnn")


def _face_detector(method: str, device: str) -> Any:
    """A face detector by name. ``auto`` is MTCNN (a CNN, real weights from facenet-pytorch;
    docs/BENCHMARKS.md "Face detectors on real photos") where its converted weights are
    installed, else dlib HOG with a warning saying how to get MTCNN."""
    from emotion_perception.resources import find_external_model

    if method not in FACE_DETECTORS:
        raise ValueError(f"face_detector must be one of {', '.join(FACE_DETECTORS)}, got {method!r}")
    if method == "auto":
        try:
            find_external_model("mtcnn")
            method = "mtcnn"
        except FileNotFoundError as err:
            LOGGER.warning("face detector: dlib HOG, because MTCNN is not installed (%s)", err)
            method = "hog"
    if method == "mtcnn":
        from emotion_perception.runtime.face_detection import MTCNNDetector

        return MTCNNDetector(find_external_model("mtcnn"), device="cpu" if device == "cpu" else device)
    from emotion_perception.data.faces import FaceDetector

    return FaceDetector(method=method)


# Errors that say the model file itself is wrong: no other backend would do better, so ``auto``
# reports them at once instead of trying the next backend.
_FILE_ERRORS: tuple[type[Exception], ...] = (FileNotFoundError, FieldError, ModelCardError, ModelFileError)


def _open_first_that_works(model_path: Path, kind: str, device: str, precision: str,
                           cache_dir: str | Path | None, options: OpenOptions,
                           available: Availability) -> tuple[Backend, str]:
    """``backend="auto"``: open the candidates of :func:`auto_candidates` in turn (TensorRT, then
    ONNX Runtime's GPU providers or PyTorch fp16 on the GPU, then the CPU) until one opens; a
    backend that is installed but fails (TensorRT parse or build, an ONNX Runtime provider that
    cannot be created, a CUDA error) is logged with its reason and the next one is tried."""
    failures: list[str] = []
    for name, target, reason in auto_candidates(kind, device, available):
        entry = backend_entry(name)
        try:
            entry.check_precision(precision, target)
        except ValueError as err:
            failures.append(f"{name} on {target}: {err}")
            continue
        try:
            runner = entry.open(model_path, kind, target, precision, cache_dir, options)
        except _FILE_ERRORS:
            raise
        except Exception as err:
            failures.append(f"{name} on {target}: {type(err).__name__}: {err}")
            LOGGER.warning("%s: backend %s on %s failed, trying the next one: %s: %s", model_path.name, name, target,
                           type(err).__name__, err)
            continue
        if failures:
            reason += f" (after: {'; '.join(failures)})"
        LOGGER.info("%s: backend %s on %s (%s)", model_path.name, name, target, reason)
        return runner, target
    raise ValueError(f"{model_path}: no backend could open it here: {'; '.join(failures)}")


def load_predictor(
    model_path: str | Path,
    backend: str = "auto",
    device: str = "auto",
    input_size: tuple[int, int] | None = None,
    *,
    precision: str = "auto",
    cache_dir: str | Path | None = None,
    face_detector: str | Any = "auto",
    face_scale: float = 1.0,
    threads: int | None = None,
    compile: bool = False,
    cuda_graph: bool = False,
) -> Predictor:
    """A predictor for a checkpoint (.pt), an ONNX export or a TensorRT engine.

    The model family, categories and input normalisation come from the file's own metadata
    (checkpoint config / model card). ``backend`` is auto | tensorrt | onnxruntime | torch and
    ``device`` auto | cpu | cuda[:N]; the backend table (:mod:`emotion_perception.runtime.backend`)
    says what auto picks and which ``precision`` each backend runs. ``input_size`` (H, W) fixes
    BENet's canvas (default: longer side at the training size, padded to the stride).
    ``face_detector`` (top-down models) is "auto", "mtcnn", "hog", "cnn" or an object with
    ``detect(image_rgb) -> (K, 5)``. ``model_path`` may be an alias of an installed third-party
    model (``expression``). ``threads``: CPU intra-op threads
    (ONNX Runtime default: the physical cores; PyTorch: ``torch.set_num_threads``, process-wide).
    """
    from emotion_perception.resources import resolve_model_path

    model_path = resolve_model_path(model_path)
    kind = detect_model_kind(model_path)
    available = probe_availability()
    if input_size is not None:
        input_size = (int(input_size[0]), int(input_size[1]))
    options = OpenOptions(threads=threads, compile=compile, cuda_graph=cuda_graph,
                          max_batch={name: family.max_batch for name, family in PREDICTORS.items()},
                          onnxruntime_providers=available.onnxruntime_providers)
    if backend == "auto":
        runner, resolved_device = _open_first_that_works(model_path, kind, device, precision, cache_dir, options,
                                                         available)
    else:
        backend_name, resolved_device, reason = choose_backend(kind, backend, device, available)
        LOGGER.info("%s: backend %s on %s (%s)", model_path.name, backend_name, resolved_device, reason)
        runner = backend_entry(backend_name).open(model_path, kind, resolved_device, precision, cache_dir, options)
    card = runner.card  # read from the model file's own metadata (checkpoint config / model card)

    if card.model_name in ("cahfw", "expression"):
        if input_size is not None and tuple(input_size) != tuple(card.input_size):
            raise ValueError(f"{card.model_name} takes fixed {tuple(card.input_size)} face inputs; input_size "
                             f"{tuple(input_size)} does not apply")
        detector = _face_detector(face_detector, resolved_device) if isinstance(face_detector, str) else face_detector
        if card.model_name == "expression":
            return ExpressionPredictor(runner, card, detector)
        return CAHFWPredictor(runner, card, detector, face_scale)
    if input_size is not None:
        canvas_geometry(input_size[0], input_size[1], card, input_size)  # validates before the first frame
    return BENetPredictor(runner, card, input_size)
