"""BENet targets and losses against hand computations, head routing and ablations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from emotion_perception.nets.factory import create_model
from emotion_perception.train.losses import (
    HEAD_ABLATIONS,
    BENetLossConfig,
    benet_batch_losses,
    benet_losses,
    binary_focal_loss,
    centernet_focal_loss,
)
from emotion_perception.train.targets import HEAD_ROUTING, build_targets, draw_gaussian, gaussian_radius

E = 4


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def batch_of(boxes, labels, vad, modes, image_label, size=(32, 32)) -> dict:
    return {"image": torch.zeros(len(modes), 3, *size), "boxes": boxes, "labels": labels, "vad": vad,
            "mode": modes, "image_label": image_label}


# ---------------------------------------------------------------- targets


def test_gaussian_radius_hand_values() -> None:
    # h = w = 10, overlap 0.7: the three quadratics give r1 = (20 + sqrt(400 - 4*30/1.7))/2,
    # r2 = (40 + sqrt(1120))/2, r3 = (-28 + sqrt(784 + 4*2.8*30))/2 = (-28 + sqrt(1120))/2.
    r3 = (-28 + math.sqrt(1120)) / 2
    assert gaussian_radius(10, 10, 0.7) == pytest.approx(r3)
    assert r3 < (20 + math.sqrt(400 - 120 / 1.7)) / 2 < (40 + math.sqrt(1120)) / 2
    # Tall box h=40, w=10: r3 = (-2*0.7*(-50) ... ) computed as (b3 + sqrt(b3^2 - 4 a3 c3)) / 2.
    b3, a3, c3 = -2 * 0.7 * 50, 4 * 0.7, -0.3 * 400
    assert gaussian_radius(40, 10) == pytest.approx((b3 + math.sqrt(b3 * b3 - 4 * a3 * c3)) / 2)


def test_draw_gaussian_hand_values() -> None:
    heat = np.zeros((7, 7), np.float32)
    heat[0, 0] = 0.9  # max-merge keeps larger existing values
    draw_gaussian(heat, 3, 3, radius=2)
    sigma = 5 / 6
    assert heat[3, 3] == 1.0
    assert heat[3, 4] == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-6)
    assert heat[1, 2] == pytest.approx(math.exp(-5 / (2 * sigma**2)), rel=1e-6)
    assert heat[0, 3] == 0.0 and heat[3, 6] == 0.0  # outside the radius
    assert heat[0, 0] == pytest.approx(0.9)
    edge = np.zeros((3, 3), np.float32)
    draw_gaussian(edge, 0, 0, radius=2)  # clipped at the border
    assert edge[0, 0] == 1.0 and edge[2, 2] == pytest.approx(math.exp(-8 / (2 * sigma**2)), rel=1e-6)


def test_build_targets_hand_values() -> None:
    boxes = [torch.tensor([[4.0, 8.0, 12.0, 24.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([[1.0, 0, 1, 0]]), torch.zeros(0, E)]
    vad = [torch.tensor([[0.5, float("nan"), 0.25]]), torch.zeros(0, 3)]
    targets = build_targets(batch_of(boxes, labels, vad, ["det", "mask_all"], torch.zeros(2, E)), E, sigma=0)
    # Centre (8, 16): stride 4 -> pixel (row 4, col 2) of an 8x8 map; stride 2 -> (8, 4) of 16x16.
    for stride, row, col, width in ((4, 4, 2, 8), (2, 8, 4, 16)):
        t = targets.by_stride[stride]
        assert t.heatmap.shape == (2, 1, width, width)
        assert t.heatmap[0, 0, row, col] == 1.0 and (t.heatmap[0] == 1).sum() == 1
        assert t.heatmap[1].sum() == 0
        assert t.index[0, 0].item() == row * width + col
        assert t.mask.tolist() == [[True], [False]]
        assert t.size[0, 0].tolist() == pytest.approx([8 / stride, 16 / stride])
        assert t.emotions[0, 0].tolist() == [1, 0, 1, 0]
        assert t.vad[0, 0, 0].item() == 0.5 and math.isnan(t.vad[0, 0, 1].item())
    # Stride 2: box 4x8 map px -> radius int(gaussian_radius(8, 4)); neighbour value checks sigma.
    radius = int(gaussian_radius(8, 4))
    sigma = (2 * radius + 1) / 6
    assert targets.by_stride[2].heatmap[0, 0, 8, 5].item() == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-5)
    assert targets.routes["det"].tolist() == [True, False]
    assert targets.routes["bg"].tolist() == [False, True]


def test_build_targets_fixed_sigma_of_the_public_configs() -> None:
    # SIGMA: 2 at both resolutions whatever the box size: neighbours exp(-d^2 / 8), cut at radius 7.
    boxes = [torch.tensor([[4.0, 8.0, 12.0, 24.0]])]
    targets = build_targets(batch_of(boxes, [torch.zeros(1, E)], [torch.zeros(1, 3)], ["det"], torch.zeros(1, E)), E)
    for stride, row, col in ((4, 4, 2), (2, 8, 4)):
        heat = targets.by_stride[stride].heatmap[0, 0]
        assert heat[row, col] == 1.0
        assert heat[row, col + 1].item() == pytest.approx(math.exp(-1 / 8), rel=1e-6)
        assert heat[row + 2, col + 1].item() == pytest.approx(math.exp(-5 / 8), rel=1e-6)
    heat = targets.by_stride[2].heatmap[0, 0]
    assert heat[8, 4 + 7].item() == pytest.approx(math.exp(-49 / 8), rel=1e-5) and heat[8, 4 + 8] == 0.0


def test_routing_table_is_one_task_per_image_as_the_public_code() -> None:
    # lib/dataset/build.py: a raw image trains the heatmap/size heads only, a masked-subjects image
    # the bottom-up maps only (VAD maps are our extension of the bottom-up task).
    assert HEAD_ROUTING["det"] == {"det"}
    assert HEAD_ROUTING["mask_subjects"] == {"bu", "vad"}
    assert HEAD_ROUTING["extract_subject"] == {"pc"} and HEAD_ROUTING["mask_all"] == {"bg"}


def test_build_targets_rejects_bad_input() -> None:
    good = {"boxes": [torch.tensor([[0.0, 0, 4, 4]])], "labels": [torch.zeros(1, E)], "vad": [torch.zeros(1, 3)],
                "image_label": torch.zeros(1, E)}
    with pytest.raises(ValueError, match="'mode'\\[0\\]"):
        build_targets(batch_of(modes=["flip"], **good), E)
    with pytest.raises(ValueError, match="'boxes'\\[0\\]"):
        build_targets(batch_of(modes=["det"], **{**good, "boxes": [torch.tensor([[5.0, 0, 4, 4]])]}), E)
    with pytest.raises(ValueError, match="'labels'\\[0\\]: expected \\(N, 4\\)"):
        build_targets(batch_of(modes=["det"], **{**good, "labels": [torch.zeros(1, 3)]}), E)
    with pytest.raises(ValueError, match="'image_label'"):
        build_targets(batch_of(modes=["det"], **{**good, "image_label": torch.zeros(2, E)}), E)


# ---------------------------------------------------------------- focal losses


def test_binary_focal_loss_hand_values() -> None:
    logits = torch.tensor([0.5, -1.0, 2.0])
    targets = torch.tensor([1.0, 0.0, 0.0])
    p = [sigmoid(0.5), sigmoid(-1.0), sigmoid(2.0)]
    expected = [-(1 - p[0]) ** 2 * math.log(p[0]), -(p[1] ** 2) * math.log(1 - p[1]), -(p[2] ** 2) * math.log(1 - p[2])]
    assert binary_focal_loss(logits, targets, 2.0).tolist() == pytest.approx(expected, rel=1e-5)


def test_binary_focal_loss_gamma_zero_is_log_loss() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=50)
    labels = rng.integers(0, 2, size=50)
    ours = binary_focal_loss(torch.tensor(logits), torch.tensor(labels, dtype=torch.float64), 0.0).mean().item()
    assert ours == pytest.approx(log_loss(labels, 1 / (1 + np.exp(-logits))), rel=1e-9)


def test_centernet_focal_loss_hand_values() -> None:
    # One image, 2x2 map: a positive (target 1), two Gaussian neighbours, one background pixel.
    logits = torch.tensor([[[[1.0, -1.0], [0.0, -2.0]]]])
    target = torch.tensor([[[[1.0, 0.5], [0.25, 0.0]]]])
    p = [sigmoid(1.0), sigmoid(-1.0), sigmoid(0.0), sigmoid(-2.0)]
    positive = (1 - p[0]) ** 2 * math.log(p[0])
    negative = sum((1 - t) ** 4 * q**2 * math.log(1 - q) for q, t in zip(p[1:], [0.5, 0.25, 0.0]))
    expected = -(positive + negative) / 1
    assert centernet_focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)
    # Per image, as the public code: each image's sum over its own positives (at least 1), then
    # the mean over images. A second image with no people adds its negatives over 1, halved.
    logits2 = torch.cat([logits, torch.full_like(logits, 0.5)])
    target2 = torch.cat([target, torch.zeros_like(target)])
    extra = -4 * sigmoid(0.5) ** 2 * math.log(1 - sigmoid(0.5))
    assert centernet_focal_loss(logits2, target2).item() == pytest.approx((expected + extra) / 2, rel=1e-5)
    # Two people in one image: that image's sum is divided by 2.
    two = torch.tensor([[[[1.0, 1.0], [0.0, -2.0]]]])
    ones = torch.tensor([[[[1.0, 1.0], [0.25, 0.0]]]])
    q = [sigmoid(1.0), sigmoid(0.0), sigmoid(-2.0)]
    pair = -(2 * (1 - q[0]) ** 2 * math.log(q[0]) + sum((1 - t) ** 4 * r**2 * math.log(1 - r)
                                                       for r, t in zip(q[1:], [0.25, 0.0]))) / 2
    assert centernet_focal_loss(two, ones).item() == pytest.approx(pair, rel=1e-5)


# ---------------------------------------------------------------- the multitask loss


def _outputs_from(values: dict[str, float], batch: int, size: int, pc_bg: bool = True) -> dict[str, torch.Tensor]:
    """Constant-valued leaf outputs for a batch at input size ``size`` (gradients checkable)."""
    outputs = {}
    for stride in (4, 2):
        side = size // stride
        for key, channels in (("heatmap", 1), ("size", 2), ("emotions", E), ("vad", 3)):
            outputs[f"{key}_{stride}"] = torch.full((batch, channels, side, side), values[key], requires_grad=True)
    if pc_bg:
        outputs["person_centric"] = torch.full((batch, E), values["pc"], requires_grad=True)
        outputs["background"] = torch.full((batch, E), values["bg"], requires_grad=True)
    return outputs


def test_multitask_loss_hand_values() -> None:
    boxes = [torch.tensor([[4.0, 8.0, 12.0, 24.0]])]
    labels = [torch.tensor([[1.0, 0, 0, 0]])]
    vad = [torch.tensor([[0.5, float("nan"), 0.25]])]
    # Image 0 trains detection, image 1 (same person) the bottom-up maps.
    batch = batch_of(boxes * 2, labels * 2, vad * 2, ["det", "mask_subjects"], torch.zeros(2, E))
    outputs = _outputs_from({"heatmap": -2.0, "size": 1.0, "emotions": 0.0, "vad": 0.0, "pc": 0.0, "bg": 0.0}, 2, 32)
    config = BENetLossConfig(heads=frozenset({"det", "bu", "vad", "pc", "bg"}))
    losses = benet_losses(outputs, build_targets(batch, E), config)
    # Eq. 2: |1 - 8/s| + |1 - 16/s| summed over width and height, averaged over the image's people.
    assert losses["size_4"].item() == pytest.approx(abs(1 - 2) + abs(1 - 4))
    assert losses["size_2"].item() == pytest.approx(abs(1 - 4) + abs(1 - 8))
    # Emotions at p = 0.5: each category costs 0.25 * log 2; summed over categories, one person.
    assert losses["emotions_4"].item() == pytest.approx(E * 0.25 * math.log(2), rel=1e-6)
    # VAD: sigmoid(0) = 0.5 against 0.5 and 0.25 (the NaN is ignored).
    assert losses["vad_2"].item() == pytest.approx((0.0 + 0.25) / 2)
    # No image is routed to the image-level heads: their terms are reported as 0, outside the total.
    assert losses["person_centric"].item() == 0.0 and losses["background"].item() == 0.0
    # Heatmap, recomputed from the target heatmap by hand with the same constant logit.
    target = build_targets(batch, E).by_stride[4].heatmap[0].numpy().ravel()
    q = sigmoid(-2.0)
    expected = -sum((1 - q) ** 2 * math.log(q) if t == 1 else (1 - t) ** 4 * q**2 * math.log(1 - q) for t in target)
    assert losses["heatmap_4"].item() == pytest.approx(expected, rel=1e-5)
    total = sum(losses[f"heatmap_{s}"] + 0.1 * losses[f"size_{s}"] + losses[f"emotions_{s}"] + losses[f"vad_{s}"]
                for s in (4, 2))
    assert losses["total"].item() == pytest.approx(total.item(), rel=1e-6)


def _routing_batch() -> dict:
    box = torch.tensor([[4.0, 4.0, 20.0, 28.0]])
    one = torch.tensor([[0.0, 1, 0, 0]])
    modes = ["det", "mask_subjects", "extract_subject", "mask_all"]
    return batch_of([box] * 4, [one] * 4, [torch.full((1, 3), 0.3)] * 4, modes, torch.ones(4, E))


def test_routing_zeroes_gradients_of_heads_not_drawn() -> None:
    batch = _routing_batch()
    outputs = _outputs_from({"heatmap": -1.0, "size": 1.0, "emotions": 0.3, "vad": 0.2, "pc": 0.1, "bg": -0.1}, 4, 32)
    config = BENetLossConfig(heads=frozenset({"det", "bu", "pc", "bg", "vad"}))
    benet_losses(outputs, build_targets(batch, E), config)["total"].backward()

    def touched(key: str) -> list[bool]:
        grad = outputs[key].grad
        return [bool(grad[i].abs().sum() > 0) for i in range(4)]

    for stride in (4, 2):
        for key in ("heatmap", "size"):
            assert touched(f"{key}_{stride}") == [True, False, False, False], key
        for key in ("emotions", "vad"):
            assert touched(f"{key}_{stride}") == [False, True, False, False], key
    assert touched("person_centric") == [False, False, True, False]
    assert touched("background") == [False, False, False, True]


def test_routing_on_the_network() -> None:
    # A batch of only "mask_all" images trains the background head and no other head; a "det"
    # batch leaves both image-level heads untouched.
    torch.manual_seed(0)
    model = create_model("benet", "tiny", num_emotions=E)
    full = _routing_batch()
    config = BENetLossConfig(heads=frozenset({"det", "bu", "pc", "bg", "vad"}))
    for mode, trained, untouched in (
        ("mask_all", "background_head",
         ("person_centric_head", "heatmap_head", "size_head", "emotion_head", "vad_head")),
        ("det", "heatmap_head", ("person_centric_head", "background_head", "emotion_head", "vad_head")),
        ("mask_subjects", "emotion_head", ("heatmap_head", "size_head", "person_centric_head", "background_head")),
    ):
        model.zero_grad(set_to_none=True)
        batch = {**full, "image": torch.randn(2, 3, 64, 64), "boxes": full["boxes"][:2], "labels": full["labels"][:2],
                 "vad": full["vad"][:2], "mode": [mode, mode], "image_label": torch.ones(2, E)}
        benet_batch_losses(model(batch["image"], heads="all"), batch, config)["total"].backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model, trained).parameters())
        for name in untouched:
            assert all(p.grad is None or p.grad.abs().sum() == 0 for p in getattr(model, name).parameters()), name


def test_each_head_runs_only_on_its_routed_images() -> None:
    # Public lib/models/BENet.py indexes the batch before each head: a head's BatchNorm sees only
    # the images routed to it. Routed outputs hold those rows, and the loss equals the loss of a
    # full forward evaluated on the same rows when the heads are in eval mode (same statistics).
    torch.manual_seed(1)
    model = create_model("benet", "tiny", num_emotions=E, vad_head=True)
    batch = {**_routing_batch(), "image": torch.randn(4, 3, 64, 64)}
    targets = build_targets(batch, E)
    config = BENetLossConfig(heads=frozenset({"det", "bu", "pc", "bg", "vad"}))
    model.eval()
    with torch.no_grad():
        routed = model(batch["image"], heads="all", routes=targets.routes)
        full = model(batch["image"], heads="all")
    assert routed["heatmap_4"].shape[0] == 1 and routed["emotions_2"].shape[0] == 1
    assert routed["person_centric"].shape[0] == 1 and routed["background"].shape[0] == 1
    torch.testing.assert_close(routed["heatmap_4"], full["heatmap_4"][:1])
    torch.testing.assert_close(routed["emotions_4"], full["emotions_4"][1:2])
    routed_losses = benet_losses(routed, targets, config)
    full_losses = benet_losses(full, targets, config)
    for key, value in full_losses.items():
        assert routed_losses[key].item() == pytest.approx(value.item(), rel=1e-5), key
    # In training mode the heads' BatchNorm statistics come from their routed rows only: the
    # heatmap head's output for the det image differs from a full-batch forward.
    model.train()
    with torch.no_grad():
        routed_train = model(batch["image"], heads="all", routes=targets.routes)
        full_train = model(batch["image"], heads="all")
    assert not torch.allclose(routed_train["heatmap_4"], full_train["heatmap_4"][:1])
    # A head with no routed image is not run.
    only_det = {k: v & torch.tensor([True, False, False, False]) for k, v in targets.routes.items()}
    outputs = model(batch["image"], heads="all", routes=only_det)
    assert set(outputs) == {"heatmap_4", "heatmap_2", "size_4", "size_2"}


def test_head_ablations_select_terms() -> None:
    batch = _routing_batch()
    outputs = _outputs_from({"heatmap": -1.0, "size": 1.0, "emotions": 0.3, "vad": 0.2, "pc": 0.1, "bg": -0.1}, 4, 32)
    targets = build_targets(batch, E)
    expected_keys = {
        "bu": {"emotions_4", "emotions_2"},
        "bu_det": {"emotions_4", "emotions_2", "heatmap_4", "heatmap_2", "size_4", "size_2"},
        "bu_det_pc": {"emotions_4", "emotions_2", "heatmap_4", "heatmap_2", "size_4", "size_2", "person_centric"},
    }
    expected_keys["bu_det_pc_bg"] = expected_keys["bu_det_pc"] | {"background"}
    for name, heads in HEAD_ABLATIONS.items():
        losses = benet_losses(outputs, targets, BENetLossConfig(heads=heads))
        assert set(losses) == expected_keys[name] | {"total"}, name
        assert losses["total"].item() == pytest.approx(
            sum((0.1 if k.startswith("size") else 1.0) * v.item() for k, v in losses.items() if k != "total"), rel=1e-6)


def test_loss_errors() -> None:
    batch = _routing_batch()
    targets = build_targets(batch, E)
    outputs = _outputs_from({"heatmap": -1.0, "size": 1.0, "emotions": 0.3, "vad": 0.2, "pc": 0.1, "bg": -0.1}, 4, 32,
                            pc_bg=False)
    with pytest.raises(KeyError, match="person_centric.*heads='all'"):
        benet_losses(outputs, targets, BENetLossConfig(heads=frozenset({"pc"})))
    del outputs["vad_4"]
    with pytest.raises(KeyError, match="vad_4.*vad_head"):
        benet_losses(outputs, targets, BENetLossConfig(heads=frozenset({"vad"})))
    outputs["emotions_4"] = torch.full_like(outputs["emotions_4"], float("nan"))
    with pytest.raises(FloatingPointError, match="emotions_4"):
        benet_losses(outputs, targets, BENetLossConfig(heads=frozenset({"bu"})))
    with pytest.raises(ValueError, match="unknown head"):
        BENetLossConfig(heads=frozenset({"face"}))
