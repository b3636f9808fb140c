"""Evaluation of a BENet checkpoint on an EMOTIC split with the paper's three protocols.

1. Emotions at ground-truth centres (paper Table 1): bottom-up (BU) probabilities read at each
   annotated person's centre pixel (``nets/decode.read_at_centres``); person-centric (PC)
   probabilities of the person's box cropped and letterboxed (the ``extract_subject`` view the
   head was trained on); their mean (fusion, Table 4). mAP over the categories with positives
   and per-category AP (``eval/metrics.py``).
2. Person detection: COCO AP / AP50 / AP75 (pycocotools) of the decoded centres and sizes.
3. Joint detection + emotions (Table 3): per IoU threshold 0.50:0.05:0.95, emotions read at the
   detection matched to each person (missed people predict all zeros), mAP and its average.

The network is the checkpoint's module by default, or a deployed form of it (ONNX Runtime or
TensorRT, fp32 / fp16 / INT8; :mod:`emotion_perception.eval.deployed`). A deployed graph holds
the dense heads only, so PC and fusion are not available there (said in one log line and in
``metrics.json`` ``not_available``).

Writes to ``out_dir``:

* ``metrics.json``: every number above (NaN as null), image/person counts, decoding settings,
  ``deployment`` (backend, precision, device, INT8 target, the graph's model card) and
  ``timing`` (seconds to open the network, to run the split, in all);
* ``predictions.npz``: per person ``y_true`` (N, E) and ``y_score`` (N, E) (BU at GT centres),
  ``y_score_pc``, ``y_score_fusion``, ``gt_boxes`` (N, 4) original pixels, ``person_image`` (N,);
  per detection ``det_image`` (D,), ``det_boxes`` (D, 4), ``det_scores`` (D,),
  ``det_emotions`` (D, E); ``image_paths`` (I,). Enough to recompute every metric;
* plots: ``ap_per_category.png``, ``pr_curves_bu.png``, ``pr_curves_fusion.png`` and
  ``examples/example_XX.png`` (detections, centre heatmap and emotion maps).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from emotion_perception.data.categories import EMOTIC_CATEGORIES
from emotion_perception.data.datasets import drop_unusable_images
from emotion_perception.data.records import ImageRecord
from emotion_perception.data.report import ReadReport
from emotion_perception.eval import metrics as M
from emotion_perception.eval.deployed import (
    Deployment,
    EvalNetwork,
    checked_load_device,
    eval_network,
)
from emotion_perception.serialization import jsonable

if TYPE_CHECKING:
    from emotion_perception.nets.benet import BENetConfig

LOGGER = logging.getLogger(__name__)


def _category_names(num_emotions: int) -> list[str]:
    if num_emotions == len(EMOTIC_CATEGORIES):
        return list(EMOTIC_CATEGORIES)
    return [f"category {i}" for i in range(num_emotions)]


def _benet_config(model: torch.nn.Module) -> BENetConfig:
    """A BENet's config (nn.Module's attribute lookup is typed Tensor | Module, hence the cast)."""
    return cast("BENetConfig", model.config)


def _subject_views(image_rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S, 3) uint8: each person's box cropped and letterboxed, as ``extract_subject`` trains."""
    from emotion_perception.data.geometry import box_pixel_bounds, letterbox

    height, width = image_rgb.shape[:2]
    views = []
    for box in boxes:
        x1, y1, x2, y2 = box_pixel_bounds(box, width, height)
        # A degenerate box still yields one pixel so every person gets a prediction.
        crop = image_rgb[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)]
        views.append(letterbox(crop, size)[0])
    return np.stack(views) if views else np.zeros((0, size, size, 3), np.uint8)


@torch.no_grad()
def _person_centric(model: torch.nn.Module, views: np.ndarray, device: torch.device, batch_size: int) -> np.ndarray:
    from emotion_perception.data.transforms import normalize_image

    scores = []
    for start in range(0, len(views), batch_size):
        images = torch.from_numpy(normalize_image(views[start:start + batch_size])).to(device)
        scores.append(torch.sigmoid(model(images, heads="all")["person_centric"]).float().cpu().numpy())
    return np.concatenate(scores) if scores else np.zeros((0, _benet_config(model).num_emotions), np.float32)


def _letterbox_tensor(params: Sequence[Any], device: torch.device) -> torch.Tensor:
    return torch.tensor([[p.scale, p.pad_x, p.pad_y] for p in params], dtype=torch.float32, device=device)


@dataclass
class BENetPredictions:
    """Everything the three protocols read, flattened over a split (arrays as in predictions.npz)."""

    y_true: np.ndarray  # (N, E) multi-hot of every ground-truth person
    y_bu: np.ndarray  # (N, E) bottom-up probabilities at their centres
    y_pc: np.ndarray | None  # (N, E) person-centric probabilities (None without that head)
    gt_boxes: np.ndarray  # (N, 4) x1y1x2y2 original pixels
    person_image: np.ndarray  # (N,) image index of each person
    det_image: np.ndarray  # (D,) image index of each detection
    det_boxes: np.ndarray  # (D, 4) x1y1x2y2 original pixels
    det_scores: np.ndarray  # (D,)
    det_emotions: np.ndarray  # (D, E) emotion probabilities read at the detection
    num_images: int

    def images(self) -> list[M.ImageDetections]:
        """Per-image ground truth and detections (the detection and joint protocols' input)."""
        result = []
        for index in range(self.num_images):
            people, dets = self.person_image == index, self.det_image == index
            result.append(M.ImageDetections(self.gt_boxes[people], self.y_true[people], self.det_boxes[dets],
                                            self.det_scores[dets], self.det_emotions[dets]))
        return result


def predict_benet(
    model: torch.nn.Module,
    dataset,
    decode_config,
    *,
    batch_size: int,
    workers: int,
    device: torch.device,
    progress: bool,
    desc: str = "eval BENet",
    network: EvalNetwork | None = None,
) -> BENetPredictions:
    """Run ``model`` over a ``BENetDataset`` built with ``BENetEvalTransform``; see BENetPredictions.

    ``network`` computes the dense maps instead of ``model`` (a deployed form of it, on
    ``device``); the person-centric head then runs only if ``network.all_heads``.
    """
    from tqdm import tqdm

    from emotion_perception.data.datasets import collate_benet
    from emotion_perception.data.geometry import boxes_from_letterbox
    from emotion_perception.nets.decode import decode, read_at_centres

    config = _benet_config(model)
    size = config.input_size[0]
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=collate_benet)
    columns: dict[str, list[np.ndarray]] = {key: [] for key in (
        "y_true", "y_bu", "y_pc", "gt_boxes", "person_image", "det_image", "det_boxes", "det_scores", "det_emotions")}
    image_index = 0
    model.eval()
    net = network if network is not None else model
    person_centric = config.person_centric_head and (network is None or network.all_heads)
    for batch in tqdm(loader, desc=desc, disable=not progress, dynamic_ncols=True):
        images = batch["image"].to(device)
        with torch.no_grad():
            outputs = net(images)
            flipped = net(images.flip(-1)) if decode_config.flip_test else None
            at_centres = read_at_centres(outputs, [b.to(device) for b in batch["boxes"]], flipped)
            decoded = decode(outputs, _letterbox_tensor(batch["letterbox"], device), decode_config, flipped)
        for b in range(images.shape[0]):
            valid = decoded["valid"][b].cpu().numpy()
            labels = batch["labels"][b].numpy()
            columns["y_true"].append(labels)
            columns["y_bu"].append(at_centres["emotions"][b].float().cpu().numpy())
            columns["gt_boxes"].append(boxes_from_letterbox(batch["boxes"][b].numpy(), batch["letterbox"][b]))
            columns["person_image"].append(np.full(len(labels), image_index))
            columns["det_image"].append(np.full(int(valid.sum()), image_index))
            for key in ("boxes", "scores", "emotions"):
                columns[f"det_{key}"].append(decoded[key][b].float().cpu().numpy()[valid])
            if person_centric:
                image_rgb, original_boxes, _, _ = dataset.arrays(image_index)
                views = _subject_views(image_rgb, original_boxes, size)
                columns["y_pc"].append(_person_centric(model, views, device, batch_size))
            image_index += 1

    emotions = config.num_emotions
    shapes: dict[str, tuple[int, ...]] = {"y_true": (-1, emotions), "y_bu": (-1, emotions), "y_pc": (-1, emotions),
                                          "gt_boxes": (-1, 4), "det_boxes": (-1, 4), "det_emotions": (-1, emotions)}

    def joined(key: str, dtype) -> np.ndarray:
        return np.concatenate(columns[key]).astype(dtype).reshape(shapes.get(key, (-1,)))

    return BENetPredictions(
        y_true=joined("y_true", np.float32), y_bu=joined("y_bu", np.float32),
        y_pc=joined("y_pc", np.float32) if person_centric else None,
        gt_boxes=joined("gt_boxes", np.float32), person_image=joined("person_image", np.int64),
        det_image=joined("det_image", np.int64), det_boxes=joined("det_boxes", np.float32),
        det_scores=joined("det_scores", np.float32), det_emotions=joined("det_emotions", np.float32),
        num_images=image_index,
    )


def benet_metrics(predictions: BENetPredictions, categories: Sequence[str], max_detections: int = 100
                  ) -> dict[str, Any]:
    """The three protocols' numbers (see the module docstring) from a split's predictions."""

    def ranking(y_score: np.ndarray) -> dict[str, Any]:
        aps = M.per_category_ap(predictions.y_true, y_score)
        return {"mAP": M.mean_average_precision(predictions.y_true, y_score),
                "AP": {name: float(ap) for name, ap in zip(categories, aps)}}

    gt_centre = {"bu": ranking(predictions.y_bu)}
    if predictions.y_pc is not None:
        gt_centre["pc"] = ranking(predictions.y_pc)
        gt_centre["fusion"] = ranking(M.fuse_scores(predictions.y_bu, predictions.y_pc))
    images = predictions.images()
    return {
        "num_images": predictions.num_images,
        "num_people": int(len(predictions.y_true)),
        "categories_with_positives": int((predictions.y_true.sum(axis=0) > 0).sum()),
        "mAP": gt_centre["bu"]["mAP"],
        "gt_centre": gt_centre,
        "detection": M.detection_ap(images, max_detections=max_detections),
        "joint": M.joint_protocol_map(images),
        "note": "AP of a category without positives is null and left out of mAP",
    }


def evaluate_benet(
    checkpoint: str | Path,
    data_root: str | Path | None,
    split: str = "test",
    out_dir: str | Path = "eval_benet",
    *,
    batch_size: int = 8,
    workers: int = 0,
    device: str = "auto",
    top_k: int = 15,
    threshold: float = 0.1,
    flip_test: bool = True,
    num_examples: int = 4,
    max_images: int = 0,
    records: Sequence[ImageRecord] | None = None,
    progress: bool = True,
    deployment: Deployment | None = None,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on EMOTIC ``split`` under ``data_root`` (or on ``records``).

    Detection keeps the ``top_k`` best peaks above ``threshold`` per image, with flip test: by
    default the public BENet test settings (15, 0.1, flip on); ``top_k=100, threshold=0.01``
    give COCO's view of the whole precision-recall curve (the setting of this project's earlier
    figures). ``deployment`` picks the form of the network that runs (None: the
    checkpoint's module in PyTorch fp32). Writes the files of the module docstring and returns
    the metrics written to ``metrics.json``.
    """
    from emotion_perception.data.datasets import BENetDataset
    from emotion_perception.data.transforms import BENetEvalTransform
    from emotion_perception.nets.decode import DecodeConfig
    from emotion_perception.nets.factory import CheckpointError, load_model_from_checkpoint

    deployment = deployment or Deployment()
    started = time.perf_counter()
    # Before minutes of reading data or exporting: a form that cannot run here says so now.
    run_device = checked_load_device(deployment, device)
    model, state = load_model_from_checkpoint(checkpoint, map_location=run_device)
    if state["model_name"] != "benet":
        raise CheckpointError(checkpoint, "model_name", f"expected 'benet', got {state['model_name']!r}")
    config = _benet_config(model)
    if records is None:
        from emotion_perception.data.datasets import load_benet_records

        if data_root is None:
            raise ValueError("evaluate_benet: give data_root (an EMOTIC folder) or records")
        records = load_benet_records(data_root, split)
    records = list(records)[:max_images] if max_images else list(records)
    unusable = ReadReport(source=f"eval benet {split}")
    records = drop_unusable_images(records, unusable, decode=True)  # skipped and reported, not a crash mid-run
    unusable.log(LOGGER)
    if not records:
        raise ValueError(f"evaluate_benet: no images in split {split!r} of {data_root}")
    categories = _category_names(config.num_emotions)
    size = config.input_size[0]
    decode_config = DecodeConfig(top_k=min(top_k, (size // 2) ** 2), threshold=threshold, flip_test=flip_test)
    dataset = BENetDataset(records, BENetEvalTransform(size=size, num_categories=config.num_emotions),
                           num_categories=config.num_emotions)

    open_started = time.perf_counter()
    network = eval_network(model, "benet", checkpoint, deployment, device, run_device, batch_size)
    run_device = network.device
    not_available: dict[str, str] = {}
    if config.person_centric_head and not network.all_heads:
        reason = f"the {network.record['backend']} graph has no person-centric head (deploy graphs run the dense heads)"
        not_available = {"pc": reason, "fusion": reason}
        LOGGER.warning("eval benet: PC and fusion mAP are not available for %s: %s", network.label(), reason)
    predict_started = time.perf_counter()
    try:
        predictions = predict_benet(model, dataset, decode_config, batch_size=batch_size, workers=workers,
                                    device=run_device, progress=progress, desc=f"eval BENet {split}",
                                    network=network)
        predicted = time.perf_counter()
        metrics = {
            "split": split,
            "checkpoint": str(checkpoint),
            "epoch": state.get("epoch"),
            "preset_input_size": list(config.input_size),
            **benet_metrics(predictions, categories, decode_config.top_k),
            "decode": asdict(decode_config),
            "deployment": network.record,
            "not_available": not_available,
        }
        _write_outputs(predictions, metrics, records, categories, split, Path(out_dir))
        for index in range(min(num_examples, len(dataset))):
            _plot_example(network, dataset, index, predictions, categories, run_device,
                          Path(out_dir) / "examples" / f"example_{index:02d}.png", Path(records[index].path).name)
    finally:
        network.close()
    metrics["timing"] = {"open_s": predict_started - open_started, "predict_s": predicted - predict_started,
                         "total_s": time.perf_counter() - started}
    (Path(out_dir) / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=1, allow_nan=False) + "\n")
    return metrics


def _write_outputs(predictions: BENetPredictions, metrics: dict[str, Any], records: Sequence[ImageRecord],
                   categories: list[str], split: str, out_dir: Path) -> None:
    """predictions.npz and the ranking plots (metrics.json is written last, with the timing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "y_true": predictions.y_true, "y_score": predictions.y_bu, "gt_boxes": predictions.gt_boxes,
        "person_image": predictions.person_image, "det_image": predictions.det_image,
        "det_boxes": predictions.det_boxes, "det_scores": predictions.det_scores,
        "det_emotions": predictions.det_emotions,
        "image_paths": np.array([str(r.path) for r in records]), "categories": np.array(categories),
    }
    if predictions.y_pc is not None:
        arrays["y_score_pc"] = predictions.y_pc
        arrays["y_score_fusion"] = M.fuse_scores(predictions.y_bu, predictions.y_pc).astype(np.float32)
    # allow_pickle given (its default) so the stubs match **arrays to the arrays alone.
    np.savez(out_dir / "predictions.npz", allow_pickle=True, **arrays)
    _plot_rankings(predictions, metrics, categories, split, out_dir)


def _plot_rankings(predictions: BENetPredictions, metrics: dict[str, Any], categories: list[str], split: str,
                   out_dir: Path) -> None:
    from emotion_perception.eval import plots

    names = {"bu": "BU", "pc": "PC", "fusion": "fusion"}
    aps_by_method = {names[method]: np.array([np.nan if v is None else v for v in result["AP"].values()])
                     for method, result in metrics["gt_centre"].items()}
    plots.plot_per_category_ap(aps_by_method, categories, out_dir / "ap_per_category.png",
                               title=f"BENet, EMOTIC {split}: AP at ground-truth centres")
    plots.plot_pr_curves(predictions.y_true, predictions.y_bu, categories, out_dir / "pr_curves_bu.png",
                         title=f"BENet bottom-up, EMOTIC {split}")
    if predictions.y_pc is not None:
        plots.plot_pr_curves(predictions.y_true, M.fuse_scores(predictions.y_bu, predictions.y_pc), categories,
                             out_dir / "pr_curves_fusion.png", title=f"BENet fusion (BU + PC), EMOTIC {split}")


@torch.no_grad()
def _plot_example(network: EvalNetwork, dataset, index: int, predictions: BENetPredictions,
                  categories: list[str], device: torch.device, path: Path, title: str) -> None:
    """One example on the letterboxed canvas the network saw, with its merged output maps.

    Detections shown are those above the deployment threshold (``DecodeConfig`` default).
    """
    from emotion_perception.data.geometry import boxes_to_letterbox
    from emotion_perception.data.transforms import normalize_image
    from emotion_perception.eval import plots
    from emotion_perception.nets.decode import DecodeConfig, merge_resolutions

    sample = dataset[index]
    maps = merge_resolutions(network(torch.from_numpy(normalize_image(sample.image[None])).to(device)))
    mine = (predictions.det_image == index) & (predictions.det_scores >= DecodeConfig().threshold)
    plots.plot_detection_example(
        sample.image, path, categories,
        gt_boxes=sample.boxes,
        det_boxes=boxes_to_letterbox(predictions.det_boxes[mine][:10], sample.letterbox),
        det_scores=predictions.det_scores[mine][:10],
        det_emotions=predictions.det_emotions[mine][:10],
        heatmap=maps["heatmap"][0, 0].float().cpu().numpy(),
        emotion_maps=maps["emotions"][0].float().cpu().numpy(),
        title=title,
    )
