"""CAHFW-Net: shapes, hand-counted parameters per block, the attention maths against numpy,
the ablation variants, the factory and ONNX export parity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from emotion_perception.nets.cahfw import (
    CAHFW_PRESETS,
    VARIANTS,
    CAHFWConfig,
    CAHFWNet,
    CrossAttention,
    ElementRecalibration,
    HighlightAttention,
    HybridWeighting,
)
from emotion_perception.nets.factory import build_config, create_model, model_names


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# Hand counts from the layer settings: a 3x3 conv with bias is 9*ci*co + co, a BN adds
# 2*co (weight, bias; running stats are buffers), a 1x1 Conv1d / Linear is ci*co + co.
def conv_bn(ci: int, co: int) -> int:
    return 9 * ci * co + co + 2 * co


def dense(ci: int, co: int) -> int:
    return ci * co + co


PAPER_ENCODER = conv_bn(3, 32) + conv_bn(32, 64) + conv_bn(64, 128) + conv_bn(128, 256) + conv_bn(256, 256)
PAPER_HIGHLIGHT = conv_bn(256, 256) + conv_bn(256, 128) + 9 * 128 * 1  # last conv: no bias
PAPER_CROSS = 3 * (9 * 256 * 256 + 256) + conv_bn(256, 256)
PAPER_RECALIBRATION = dense(256, 256)
PAPER_PAIR_WEIGHTS = 2 * (dense(256, 128) + dense(128, 1))
PAPER_DEEP_FUSION = 2 * dense(512, 128) + dense(256, 128) + dense(128, 7)
PAPER_ADAPTIVE_FUSION = PAPER_PAIR_WEIGHTS + dense(512, 128) + dense(128, 7)


@pytest.fixture(scope="module")
def paper_models() -> dict[str, CAHFWNet]:
    return {variant: create_model("cahfw", "paper", variant=variant) for variant in VARIANTS}


def test_paper_block_parameter_counts(paper_models):
    full = paper_models["SE+CA+ER+AA"]
    # 960 + 18624 + 74112 + 295680 + 590592, worked out by hand from the formula above.
    assert PAPER_ENCODER == 979_968
    assert n_params(full.face_encoder) == PAPER_ENCODER
    assert n_params(full.context_encoder) == PAPER_ENCODER
    assert n_params(full.highlight) == PAPER_HIGHLIGHT
    assert n_params(full.pair1.cross) == PAPER_CROSS
    assert n_params(full.pair2.cross) == PAPER_CROSS
    assert n_params(full.pair1.recalibration) == PAPER_RECALIBRATION
    assert n_params(full.hybrid.shallow_weights) == PAPER_PAIR_WEIGHTS
    assert n_params(full.hybrid.deep_weights) == PAPER_PAIR_WEIGHTS
    assert n_params(full.fusion) == PAPER_DEEP_FUSION


def test_paper_variant_totals(paper_models):
    shared = 2 * PAPER_ENCODER + PAPER_HIGHLIGHT
    interaction = 2 * PAPER_CROSS + 2 * PAPER_PAIR_WEIGHTS + PAPER_DEEP_FUSION
    assert n_params(paper_models["SE+AF"]) == shared + PAPER_ADAPTIVE_FUSION
    assert n_params(paper_models["SE+CA+AA"]) == shared + interaction
    assert n_params(paper_models["SE+CA+ER+AA"]) == shared + interaction + 2 * PAPER_RECALIBRATION
    # The ablations differ by exactly the modules they drop.
    assert not hasattr(paper_models["SE+AF"], "pair1")
    assert isinstance(paper_models["SE+CA+AA"].pair1.recalibration, torch.nn.Identity)


def test_width_multiplier_halves_every_width():
    small = create_model("cahfw", "small")
    widths = [m.out_channels for m in small.face_encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [16, 32, 64, 128, 128]
    assert small.fusion.face[0].in_features == 256 and small.fusion.face[0].out_features == 64


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_shapes_tiny(variant):
    model = create_model("cahfw", "tiny", variant=variant).eval()
    face, context = model.example_inputs(3)
    assert face.shape == context.shape == (3, 3, 32, 32)
    with torch.no_grad():
        logits = model(face, context)
        feature_map = model.face_encoder(face)
    assert logits.shape == (3, 7)
    assert torch.isfinite(logits).all()
    assert feature_map.shape == (3, 32, 2, 2)  # 256 / 8 channels, stride 16


def test_paper_forward_shape(paper_models):
    model = paper_models["SE+CA+ER+AA"].eval()
    face, context = model.example_inputs(1)
    assert face.shape == (1, 3, 224, 224)
    with torch.no_grad():
        assert model.face_encoder(face).shape == (1, 256, 14, 14)
        assert model(face, context).shape == (1, 7)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_receives_gradient(variant):
    torch.manual_seed(0)
    model = create_model("cahfw", "tiny", variant=variant).train()
    face, context = model.example_inputs(4)
    loss = torch.nn.functional.cross_entropy(model(face, context), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_cross_attention_matches_numpy():
    torch.manual_seed(1)
    module = CrossAttention(6).eval()
    query_source, key_source = torch.randn(2, 6, 3, 4), torch.randn(2, 6, 3, 4)
    with torch.no_grad():
        q = module.query(query_source).flatten(2).numpy().astype(np.float64)
        k = module.key(key_source).flatten(2).numpy().astype(np.float64)
        v = module.value(query_source).flatten(2).numpy().astype(np.float64)
        # Channel-to-channel attention, D = H*W = 12.
        weights = softmax(q @ k.transpose(0, 2, 1) / np.sqrt(12.0), axis=-1)
        y = (weights @ v).reshape(2, 6, 3, 4)
        expected = module.out(torch.from_numpy(y).float())
        actual = module(query_source, key_source)
    assert weights.shape == (2, 6, 6)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_element_recalibration_is_eq_13_14_by_hand():
    # Eq. 13: G = Softmax(Z (W Z)^T) Z with Z (C, HW) and W a kernel-1 Conv1d: a C x C channel
    # affinity, softmax over its rows; Eq. 14: R = Z * G (element-wise). Written out entry by entry.
    torch.manual_seed(2)
    module = ElementRecalibration(5).eval()
    x = torch.randn(1, 5, 2, 3)
    w = module.channel_map.weight[:, :, 0].detach().numpy().astype(np.float64)
    b = module.channel_map.bias.detach().numpy().astype(np.float64)
    z = x[0].flatten(1).numpy().astype(np.float64)  # (C, N)
    channels, positions = z.shape
    wz = np.array([[sum(w[c, k] * z[k, n] for k in range(channels)) + b[c] for n in range(positions)]
                   for c in range(channels)])
    affinity = np.array([[sum(z[c, n] * wz[d, n] for n in range(positions)) for d in range(channels)]
                         for c in range(channels)])
    attention = softmax(affinity, axis=1)
    g = np.array([[sum(attention[c, d] * z[d, n] for d in range(channels)) for n in range(positions)]
                  for c in range(channels)])
    expected = z * g
    with torch.no_grad():
        actual = module(x)[0].flatten(1).double().numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_element_recalibration_keeps_the_scale_of_its_input():
    # Each channel of G is a convex combination of Z's channels, so |G| <= max |Z|: the output
    # is bounded by max|Z|^2 (the earlier H*W x H*W version reached 26-58 at initialisation).
    torch.manual_seed(5)
    module = ElementRecalibration(64).eval()
    x = torch.relu(torch.randn(2, 64, 14, 14))
    with torch.no_grad():
        out = module(x)
    assert out.abs().max() <= x.abs().max() ** 2 + 1e-5


def test_highlight_softmax_over_positions():
    torch.manual_seed(3)
    module = HighlightAttention(4, (4, 2)).eval()
    x = torch.rand(2, 4, 3, 5)
    with torch.no_grad():
        attention = module.attention(x)
        out = module(x)
    assert attention.shape == (2, 1, 3, 5)
    torch.testing.assert_close(attention.sum(dim=(1, 2, 3)), torch.ones(2))
    torch.testing.assert_close(out, x * attention * 15)


def test_hybrid_weighting_crosses_levels():
    torch.manual_seed(4)
    module = HybridWeighting(3, 4).eval()
    shallow = (torch.randn(2, 3), torch.randn(2, 3))
    deep = (torch.randn(2, 3), torch.randn(2, 3))

    def score(branch, x):
        l1, l2 = branch.layers[0], branch.layers[2]
        hidden = np.maximum(l1.weight[:, :, 0].detach().numpy() @ x + l1.bias.detach().numpy(), 0)
        return float((l2.weight[:, :, 0].detach().numpy() @ hidden + l2.bias.detach().numpy())[0])

    with torch.no_grad():
        (shallow_face, shallow_context), (deep_face, deep_context) = module(shallow, deep)
    weighted_shallow = torch.cat([shallow_face, shallow_context], dim=1)
    weighted_deep = torch.cat([deep_face, deep_context], dim=1)
    for row in range(2):
        s = [t[row].numpy() for t in shallow]
        d = [t[row].numpy() for t in deep]
        shallow_weights, deep_weights = module.shallow_weights, module.deep_weights
        alpha = softmax(np.array([score(shallow_weights.face, s[0]), score(shallow_weights.context, s[1])]), 0)
        beta = softmax(np.array([score(deep_weights.face, d[0]), score(deep_weights.context, d[1])]), 0)
        np.testing.assert_allclose(weighted_shallow[row].numpy(), np.r_[beta[0] * s[0], beta[1] * s[1]], rtol=1e-5)
        np.testing.assert_allclose(weighted_deep[row].numpy(), np.r_[alpha[0] * d[0], alpha[1] * d[1]], rtol=1e-5)


def test_deep_fusion_groups_per_stream_shallow_with_deep_and_drops_out_in_the_head():
    from emotion_perception.nets.cahfw import DeepFusion

    torch.manual_seed(6)
    module = DeepFusion(3, 4, 7, dropout=0.5).eval()
    shallow = (torch.randn(2, 3), torch.randn(2, 3))
    deep = (torch.randn(2, 3), torch.randn(2, 3))
    with torch.no_grad():
        out = module(shallow, deep)
        face = torch.relu(module.face[0](torch.cat([shallow[0], deep[0]], dim=1)))  # Eq. 22
        context = torch.relu(module.context[0](torch.cat([shallow[1], deep[1]], dim=1)))  # Eq. 23
        hidden = torch.relu(module.head[0](torch.cat([face, context], dim=1).unsqueeze(-1)))
        expected = module.head[3](hidden).squeeze(-1)
    torch.testing.assert_close(out, expected)
    # Eq. 25: Dropout between the two classifier Conv1ds
    assert isinstance(module.head[2], torch.nn.Dropout)


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="variant"):
        CAHFWConfig(variant="SE+XX")
    with pytest.raises(ValueError, match="input_size"):
        CAHFWConfig(input_size=100)
    with pytest.raises(ValueError, match="width"):
        CAHFWConfig(width=0)
    with pytest.raises(ValueError, match="unknown config field"):
        build_config("cahfw", "tiny", depth=3)
    config = build_config("cahfw", "tiny", variant="SE+AF")
    assert config.variant == "SE+AF" and CAHFW_PRESETS["tiny"].variant == "SE+CA+ER+AA"
    assert dataclasses.asdict(CAHFW_PRESETS["paper"]) == {
        "variant": "SE+CA+ER+AA", "num_classes": 7, "input_size": 224, "width": 1.0, "dropout": 0.5,
    }
    assert "cahfw" in model_names()


def test_example_inputs_custom_size():
    model = create_model("cahfw", "tiny")
    face, context = model.example_inputs(2, input_size=(48, 64))
    assert face.shape == context.shape == (2, 3, 48, 64)
    with torch.no_grad():
        assert model.eval()(face, context).shape == (2, 7)


@pytest.mark.parametrize("variant", VARIANTS)
def test_onnx_export_parity_dynamic_batch(tmp_path, variant):
    import warnings

    import onnxruntime as ort

    model = create_model("cahfw", "tiny", variant=variant).eval()
    path = tmp_path / "cahfw.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
        torch.onnx.export(
            model, model.example_inputs(2), str(path), dynamo=False, opset_version=17,
            input_names=["face", "context"], output_names=["logits"],
            dynamic_axes={"face": {0: "batch"}, "context": {0: "batch"}, "logits": {0: "batch"}},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["face", "context"]
    face, context = model.example_inputs(5)  # a batch size the export never saw
    (onnx_logits,) = session.run(None, {"face": face.numpy(), "context": context.numpy()})
    with torch.no_grad():
        torch_logits = model(face, context).numpy()
    assert onnx_logits.shape == (5, 7)
    np.testing.assert_allclose(onnx_logits, torch_logits, rtol=1e-4, atol=1e-5)
