"""Decoding: hand-built maps with known peaks, resolution merging, NMS, letterbox mapping,
flip test, reading at centres, agreement with the training targets, and ONNX parity."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch

from emotion_perception.nets.decode import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    BENetWithDecode,
    DecodeConfig,
    average_with_flipped,
    decode,
    decode_maps,
    merge_resolutions,
    read_at_centres,
)
from emotion_perception.nets.factory import create_model
from emotion_perception.train.targets import build_targets

E = 5


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def blank_outputs(batch: int, h2: int, w2: int, vad: bool = True) -> dict[str, torch.Tensor]:
    """Raw outputs whose maps are 'nothing here' (very negative logits, zero sizes)."""
    h4, w4 = h2 // 2, w2 // 2
    outputs = {
        "heatmap_4": torch.full((batch, 1, h4, w4), -30.0), "heatmap_2": torch.full((batch, 1, h2, w2), -30.0),
        "size_4": torch.zeros(batch, 2, h4, w4), "size_2": torch.zeros(batch, 2, h2, w2),
        "emotions_4": torch.full((batch, E, h4, w4), -30.0), "emotions_2": torch.full((batch, E, h2, w2), -30.0),
    }
    if vad:
        outputs["vad_4"] = torch.zeros(batch, 3, h4, w4)
        outputs["vad_2"] = torch.zeros(batch, 3, h2, w2)
    return outputs


def test_merge_resolutions_hand_values() -> None:
    outputs = blank_outputs(1, 8, 8)
    outputs["heatmap_4"].fill_(logit(0.2))
    outputs["heatmap_2"].fill_(logit(0.6))
    outputs["size_4"].fill_(3.0)  # 3 px of the 1/4 map = 6 px of the 1/2 map
    outputs["size_2"].fill_(5.0)
    outputs["size_2"][0, 1] = -4.0  # negative sizes are clipped to 0 before averaging
    outputs["emotions_4"].fill_(logit(0.1))
    outputs["emotions_2"].fill_(logit(0.5))
    merged = merge_resolutions(outputs)
    assert merged["heatmap"].shape == (1, 1, 8, 8)
    torch.testing.assert_close(merged["heatmap"], torch.full((1, 1, 8, 8), 0.4))
    torch.testing.assert_close(merged["size"][0, 0], torch.full((8, 8), (6.0 + 5.0) / 2))
    torch.testing.assert_close(merged["size"][0, 1], torch.full((8, 8), (6.0 + 0.0) / 2))
    torch.testing.assert_close(merged["emotions"], torch.full((1, E, 8, 8), 0.3))
    torch.testing.assert_close(merged["vad"], torch.full((1, 3, 8, 8), 0.5))


def test_upsampling_is_bilinear_half_pixel() -> None:
    outputs = blank_outputs(1, 4, 4)
    outputs["size_4"][0, 0] = torch.tensor([[0.0, 2.0], [0.0, 2.0]])
    merged = merge_resolutions(outputs)
    # Doubled to 1/2-map px: [0, 4]; bilinear (half-pixel centres) -> [0, 1, 3, 4]; averaged with 0.
    torch.testing.assert_close(merged["size"][0, 0, 0], torch.tensor([0.0, 1.0, 3.0, 4.0]) / 2)


def _peaked_maps(peaks: list[tuple[int, int, float, float, float]], h: int = 16, w: int = 16
                 ) -> dict[str, torch.Tensor]:
    """Merged maps with peaks (row, col, score, width, height) in 1/2-map pixels."""
    heat = torch.zeros(1, 1, h, w)
    size = torch.zeros(1, 2, h, w)
    emotions = torch.zeros(1, E, h, w)
    for number, (row, col, score, box_w, box_h) in enumerate(peaks):
        heat[0, 0, row, col] = score
        size[0, :, row, col] = torch.tensor([box_w, box_h])
        emotions[0, number % E, row, col] = 0.9
    return {"heatmap": heat, "size": size, "emotions": emotions}


def test_decode_boxes_scores_and_letterbox() -> None:
    maps = _peaked_maps([(3, 5, 0.9, 4.0, 6.0), (10, 12, 0.5, 2.0, 2.0), (12, 2, 0.05, 2.0, 2.0)])
    # The original image was scaled by 0.5 and padded by (4, 8) into the network input.
    letterbox = torch.tensor([[0.5, 4.0, 8.0]])
    out = decode_maps(maps, letterbox, DecodeConfig(top_k=4, threshold=0.1))
    assert out["boxes"].shape == (1, 4, 4) and out["emotions"].shape == (1, 4, E) and out["vad"].shape == (1, 4, 3)
    torch.testing.assert_close(out["scores"][0, :3], torch.tensor([0.9, 0.5, 0.05]))
    assert out["valid"][0].tolist() == [True, True, False, False]
    # Peak (row 3, col 5): centre (5.5, 3.5) map px = (11, 7) input px; half size (4, 6) input px.
    x1, y1, x2, y2 = 11 - 4, 7 - 6, 11 + 4, 7 + 6
    expected = [(x1 - 4) / 0.5, (y1 - 8) / 0.5, (x2 - 4) / 0.5, (y2 - 8) / 0.5]
    torch.testing.assert_close(out["boxes"][0, 0], torch.tensor(expected))
    # Peak (10, 12): centre (25, 21) input px, half size (2, 2).
    torch.testing.assert_close(out["boxes"][0, 1],
                               torch.tensor([(23 - 4) / 0.5, (19 - 8) / 0.5, (27 - 4) / 0.5, (23 - 8) / 0.5]))
    assert out["emotions"][0, 0].tolist() == pytest.approx([0.9, 0, 0, 0, 0])
    assert out["emotions"][0, 1].tolist() == pytest.approx([0, 0.9, 0, 0, 0])
    assert torch.isnan(out["vad"]).all()  # no VAD head -> NaN


def test_nms_keeps_one_peak_per_5x5_window() -> None:
    # Two peaks 2 px apart: the weaker is suppressed; a third 3 px from the first survives.
    maps = _peaked_maps([(5, 5, 0.8, 1, 1), (5, 7, 0.7, 1, 1), (8, 5, 0.6, 1, 1)])
    out = decode_maps(maps, torch.tensor([[1.0, 0.0, 0.0]]), DecodeConfig(top_k=3, threshold=0.1))
    assert out["scores"][0].tolist() == pytest.approx([0.8, 0.6, 0.0])
    assert out["valid"][0].tolist() == [True, True, False]
    # A 3x3 window keeps the second peak.
    out = decode_maps(maps, torch.tensor([[1.0, 0.0, 0.0]]), DecodeConfig(top_k=3, nms_kernel=3))
    assert out["scores"][0].tolist() == pytest.approx([0.8, 0.7, 0.6])


def test_decode_config_validation_and_topk_limit() -> None:
    with pytest.raises(ValueError, match="nms_kernel"):
        DecodeConfig(nms_kernel=4)
    with pytest.raises(ValueError, match="top_k"):
        DecodeConfig(top_k=0)
    with pytest.raises(ValueError, match="exceeds"):
        decode_maps(_peaked_maps([], 2, 2), torch.tensor([[1.0, 0, 0]]), DecodeConfig(top_k=5))


def test_targets_decode_back_to_their_boxes() -> None:
    # Training targets and decoding share the centre convention: maps built from targets decode
    # to the annotated boxes within one 1/2-map pixel (2 input px), before and after letterboxing.
    boxes = torch.tensor([[10.0, 20.0, 50.0, 90.0], [70.0, 8.0, 120.0, 40.0]])
    batch = {"image": torch.zeros(1, 3, 96, 128), "boxes": [boxes], "labels": [torch.eye(E)[:2]],
             "vad": [torch.tensor([[0.2, 0.4, 0.6], [0.9, 0.1, 0.5]])], "mode": ["det"],
             "image_label": torch.zeros(1, E)}
    targets = build_targets(batch, E)
    outputs = {}
    for stride in (4, 2):
        t = targets.by_stride[stride]
        h, w = t.heatmap.shape[-2:]
        outputs[f"heatmap_{stride}"] = torch.logit(t.heatmap.clamp(1e-4, 1 - 1e-4))
        for key, values, channels in (("size", t.size, 2), ("emotions", t.emotions, E), ("vad", t.vad, 3)):
            flat = torch.zeros(1, channels, h * w)
            if key == "emotions":
                flat.fill_(-20.0)
                values = (values * 40 - 20)  # logits of ~0 and ~1
            elif key == "vad":
                values = torch.logit(values)
            flat[0][:, t.index[0]] = values[0].T
            outputs[f"{key}_{stride}"] = flat.view(1, channels, h, w)
    scale, pad_x, pad_y = 0.8, 5.0, 3.0
    out = decode(outputs, torch.tensor([[scale, pad_x, pad_y]]), DecodeConfig(top_k=4))
    assert out["valid"][0].tolist() == [True, True, False, False]
    order = out["boxes"][0, :2, 0].argsort()
    decoded = out["boxes"][0, :2][order] * scale + torch.tensor([pad_x, pad_y, pad_x, pad_y])
    # The 1/4 maps add bilinear blur to the size maps: sizes are exact only at the 1/2 map.
    assert (decoded[:, :2] + decoded[:, 2:] - boxes[:, :2] - boxes[:, 2:]).abs().max() / 2 <= 2.0
    assert out["emotions"][0, :2][order].argmax(1).tolist() == [0, 1]


def test_flip_test_is_mirror_symmetric() -> None:
    # With flip test, decoding the mirrored image gives the mirrored people (same scores).
    torch.manual_seed(0)
    net = create_model("benet", "tiny").eval()
    wrapper = BENetWithDecode(net, DecodeConfig(top_k=6, threshold=0.0, flip_test=True)).eval()
    image = torch.randn(1, 3, 64, 96)
    identity = torch.tensor([[1.0, 0.0, 0.0]])
    with torch.no_grad():
        boxes, scores, emotions, _, _ = wrapper(image, identity)
        m_boxes, m_scores, m_emotions, _, _ = wrapper(image.flip(-1), identity)
    torch.testing.assert_close(m_scores, scores, rtol=1e-5, atol=1e-6)
    mirrored = torch.stack([96 - boxes[..., 2], boxes[..., 1], 96 - boxes[..., 0], boxes[..., 3]], dim=-1)
    torch.testing.assert_close(m_boxes, mirrored, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(m_emotions, emotions, rtol=1e-4, atol=1e-5)
    # And it is the explicit average of the two passes.
    with torch.no_grad():
        maps = average_with_flipped(merge_resolutions(net(image)), merge_resolutions(net(image.flip(-1))))
    expected = decode_maps(maps, identity, wrapper.config)
    torch.testing.assert_close(scores, expected["scores"])


def test_read_at_centres() -> None:
    outputs = blank_outputs(2, 8, 8, vad=False)
    outputs["emotions_2"][1, 3, 2, 5] = 30.0  # 1/2-map pixel (2, 5) = input x in [10,12), y in [4,6)
    boxes = [torch.zeros(0, 4), torch.tensor([[8.0, 2.0, 14.0, 8.0], [0.0, 0.0, 2.0, 2.0]])]
    read = read_at_centres(outputs, boxes)
    assert read["emotions"][0].shape == (0, E)
    # Centre (11, 5): merged = (upsampled 1/4 sigmoid(-30) ~ 0 + sigmoid(30) ~ 1) / 2.
    assert read["emotions"][1][0, 3].item() == pytest.approx(0.5, abs=1e-6)
    assert read["emotions"][1][1].max().item() < 1e-6
    assert torch.isnan(read["vad"][1]).all() and read["vad"][1].shape == (2, 3)
    with pytest.raises(ValueError, match="batch of 2"):
        read_at_centres(outputs, boxes[:1])


def test_onnx_export_matches_torch() -> None:
    import onnxruntime as ort

    torch.manual_seed(0)
    net = create_model("benet", "tiny").eval()
    for flip in (False, True):
        wrapper = BENetWithDecode(net, DecodeConfig(top_k=5, threshold=0.1, flip_test=flip)).eval()
        buffer = io.BytesIO()
        dynamic = {"image": {0: "batch", 2: "height", 3: "width"}, "letterbox": {0: "batch"}}
        dynamic.update({name: {0: "batch"} for name in OUTPUT_NAMES})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (torch.randn(1, 3, 64, 64), torch.tensor([[1.0, 0.0, 0.0]])), buffer,
                              opset_version=17, dynamo=False, input_names=list(INPUT_NAMES),
                              output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic)
        session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
        # A different batch size and image size than at export time.
        image = torch.randn(3, 3, 96, 128)
        letterbox = torch.tensor([[0.5, 3.0, 7.0], [1.0, 0.0, 0.0], [2.0, 1.0, 1.0]])
        with torch.no_grad():
            expected = wrapper(image, letterbox)
        got = session.run(None, {"image": image.numpy(), "letterbox": letterbox.numpy()})
        for name, reference, value in zip(OUTPUT_NAMES, expected, got):
            assert value.shape == tuple(reference.shape), name
            np.testing.assert_allclose(value, reference.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
