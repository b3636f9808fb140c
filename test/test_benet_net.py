"""BENet network: structure of the paper preset, attention maths, output contract, the
inference/all paths, the factory and checkpoint loading."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from emotion_perception.nets.attention import (
    AttentionBlock,
    ChannelAttention,
    MeanAsConvSpatialAttention,
    SpatialAttention,
    with_mean_as_conv,
)
from emotion_perception.nets.benet import BENET_PRESETS, BENet, BENetConfig
from emotion_perception.nets.blocks import BasicBlock, Bottleneck
from emotion_perception.nets.factory import (
    MODEL_REGISTRY,
    CheckpointError,
    build_config,
    create_model,
    load_model_from_checkpoint,
    model_names,
)
from emotion_perception.nets.hrnet import HighResolutionModule


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def tiny() -> BENet:
    torch.manual_seed(0)
    return create_model("benet", "tiny").eval()


@pytest.fixture(scope="module")
def paper_meta() -> BENet:
    with torch.device("meta"):
        return create_model("benet", "paper")


# ---------------------------------------------------------------- attention against numpy


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def test_channel_attention_matches_numpy() -> None:
    torch.manual_seed(1)
    block = ChannelAttention(4, reduction=2)
    x = torch.randn(2, 4, 3, 5)
    w0 = block.mlp[0].weight.detach().numpy()  # (2, 4)
    w1 = block.mlp[2].weight.detach().numpy()  # (4, 2)
    b0 = block.mlp[0].bias.detach().numpy()  # the public code's MLP has biases
    b1 = block.mlp[2].bias.detach().numpy()
    xn = x.numpy()
    avg, mx = xn.mean(axis=(2, 3)), xn.max(axis=(2, 3))

    def mlp(v: np.ndarray) -> np.ndarray:
        return np.maximum(v @ w0.T + b0, 0) @ w1.T + b1

    expected = xn * _sigmoid(mlp(avg) + mlp(mx))[:, :, None, None]
    np.testing.assert_allclose(block(x).detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert w0.shape == (2, 4) and w1.shape == (4, 2)


def test_the_half_resolution_stage_takes_backbone_features_and_the_quarter_output() -> None:
    # Public lib/models/BENet.py: deconv input = cat(backbone branch-0 features, 1/4 output).
    from emotion_perception.nets.benet import DenseHead

    torch.manual_seed(3)
    head = DenseHead(8, 3, num_blocks=1, attention=True, attention_reduction=2, bn_momentum=0.1).eval()
    x = torch.randn(2, 8, 6, 6)
    seen = {}
    head.deconv.register_forward_hook(lambda module, inputs, output: seen.update(input=inputs[0]))
    with torch.no_grad():
        out_4, _ = head(x)
    torch.testing.assert_close(seen["input"], torch.cat([x, out_4], dim=1))
    legacy = DenseHead(8, 3, num_blocks=1, attention=True, attention_reduction=2, bn_momentum=0.1,
                       deconv_from_backbone=False).eval()
    seen.clear()
    legacy.deconv.register_forward_hook(lambda module, inputs, output: seen.update(input=inputs[0]))
    with torch.no_grad():
        out_4, _ = legacy(x)
    torch.testing.assert_close(seen["input"], torch.cat([legacy.blocks_4(x), out_4], dim=1))


def test_checkpoints_without_the_new_fields_load_as_they_were_built(tmp_path) -> None:
    # Checkpoints older than published_biases / deconv_from_backbone (the first demo models)
    # lack the fields, which then take the legacy values (not today's defaults), so their
    # weights still fit; the shipped demo model is trained with the published ones.
    from emotion_perception.nets.factory import config_from_dict, load_model_from_checkpoint

    fields = {k: v for k, v in dataclasses.asdict(create_model("benet", "tiny").config).items()
              if k not in ("published_biases", "deconv_from_backbone")}
    config = config_from_dict("benet", fields)
    assert (config.published_biases, config.deconv_from_backbone) == (False, False)
    legacy = create_model("benet", "tiny", published_biases=False, deconv_from_backbone=False)
    path = tmp_path / "legacy.pt"
    torch.save({"model": legacy.state_dict(), "model_name": "benet", "config": fields}, path)
    model, _ = load_model_from_checkpoint(path)
    assert not model.config.published_biases and model.heatmap_head.final_4[0].bias is None
    demo, _ = load_model_from_checkpoint(Path(__file__).resolve().parents[1] / "models" / "benet_lite_demo.pt")
    assert demo.config.published_biases and demo.config.deconv_from_backbone


def test_spatial_attention_matches_numpy() -> None:
    block = SpatialAttention()
    with torch.no_grad():
        block.conv.weight.copy_(torch.tensor([0.7, -1.3]).view(1, 2, 1, 1))
    x = torch.randn(1, 6, 4, 4)
    xn = x.numpy()
    expected = xn * _sigmoid(0.7 * xn.max(axis=1, keepdims=True) - 1.3 * xn.mean(axis=1, keepdims=True))
    np.testing.assert_allclose(block(x).detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert block.conv.bias is None


def test_inference_form_of_spatial_attention_matches_numpy() -> None:
    # The export form (channel mean as a 1x1 convolution) against the same numpy formula.
    block = SpatialAttention()
    with torch.no_grad():
        block.conv.weight.copy_(torch.tensor([0.7, -1.3]).view(1, 2, 1, 1))
    x = torch.randn(2, 6, 4, 5, dtype=torch.float64)
    xn = x.numpy()
    w_max, w_mean = (float(np.float32(w)) for w in (0.7, -1.3))  # the weights as stored, float32
    expected = xn * _sigmoid(w_max * xn.max(axis=1, keepdims=True) + w_mean * xn.mean(axis=1, keepdims=True))
    rewritten = MeanAsConvSpatialAttention(block, channels=6).double()
    # w_mean / C is stored in float32 too: agreement to float32 precision, not float64.
    np.testing.assert_allclose(rewritten(x).numpy(), expected, rtol=1e-6, atol=1e-7)


def test_with_mean_as_conv_rewrites_a_copy_and_keeps_outputs(tiny: BENet) -> None:
    rewritten = with_mean_as_conv(tiny)
    kinds = [type(b.spatial) for b in rewritten.modules() if isinstance(b, AttentionBlock)]
    assert kinds and set(kinds) == {MeanAsConvSpatialAttention}
    assert all(isinstance(b.spatial, SpatialAttention) for b in tiny.modules() if isinstance(b, AttentionBlock))
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        before, after = tiny(image), rewritten(image)
    for name, value in before.items():
        torch.testing.assert_close(after[name], value, rtol=1e-5, atol=1e-5)
    plain = create_model("benet", "tiny", attention=False)
    assert with_mean_as_conv(plain) is plain  # nothing to rewrite: no copy


def test_attention_block_hand_computed() -> None:
    # Two channels, two positions, weights picked so every step is exact by hand. The public
    # code pools the spatial maps from the channel-reweighted tensor, so the order matters.
    block = AttentionBlock(2, reduction=2)
    log3 = math.log(3.0)
    with torch.no_grad():
        block.channel.mlp[0].weight.copy_(torch.tensor([[1.0, 0.0]]))  # hidden = channel 0
        block.channel.mlp[0].bias.zero_()
        block.channel.mlp[2].weight.copy_(torch.tensor([[log3 / 3], [-log3 / 3]]))
        block.channel.mlp[2].bias.zero_()
        block.spatial.conv.weight.copy_(torch.tensor([1.0, -2.0]).view(1, 2, 1, 1))
    x = torch.tensor([[[[2.0, 0.0]], [[1.0, 3.0]]]])  # (1, 2, 1, 2)
    # Channel 0: mean 1, max 2, so the hidden unit sums 1 + 2 = 3 and the logits are +-ln 3:
    # channel weights sigmoid(ln 3) = 3/4 and sigmoid(-ln 3) = 1/4.
    reweighted = [[1.5, 0.0], [0.25, 0.75]]
    # Per position: max over channels (1.5, 0.75), mean (0.875, 0.375); logit max - 2 mean.
    logits = [1.5 - 2 * 0.875, 0.75 - 2 * 0.375]
    gate = [1 / (1 + math.exp(-v)) for v in logits]
    expected = torch.tensor([[[[reweighted[c][p] * gate[p] for p in range(2)]] for c in range(2)]])
    torch.testing.assert_close(block(x), expected)


def test_channel_attention_without_output_weights_scales_by_twice_the_bias() -> None:
    # With the second layer's weights zeroed, both descriptors map to its bias b, so every
    # channel is scaled by sigmoid(2 b) whatever the input.
    torch.manual_seed(4)
    block = ChannelAttention(6, reduction=2)
    bias = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    with torch.no_grad():
        block.mlp[2].weight.zero_()
        block.mlp[2].bias.copy_(bias)
    x = torch.randn(3, 6, 4, 5)
    scale = torch.tensor([1 / (1 + math.exp(-2 * b)) for b in bias.tolist()])
    torch.testing.assert_close(block(x), x * scale[None, :, None, None])


def test_spatial_attention_is_channel_permutation_equivariant() -> None:
    # The gate depends on the channel max and mean only, which ignore the channel order.
    torch.manual_seed(5)
    block = SpatialAttention()
    x = torch.randn(2, 7, 5, 6)
    order = torch.randperm(7)
    torch.testing.assert_close(block(x[:, order]), block(x)[:, order])
    # and every channel at a position is scaled by the same factor, in (0, 1).
    factor = block(x) / x
    torch.testing.assert_close(factor, factor[:, :1].expand_as(factor))
    assert bool(((factor > 0) & (factor < 1)).all())


def test_attention_sits_before_residual_add() -> None:
    # With the attention forced to output zeros, the block reduces to relu(x + shortcut(x)).
    block = BasicBlock(4, 4).eval()
    block.attention = _Zero()
    x = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(block(x), torch.relu(x))
    bottleneck = Bottleneck(8, 2, expansion=4).eval()
    bottleneck.attention = _Zero()
    torch.testing.assert_close(bottleneck(x.repeat(1, 2, 1, 1)), torch.relu(x.repeat(1, 2, 1, 1)))


class _Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


# ---------------------------------------------------------------- paper structure


def test_paper_backbone_structure(paper_meta: BENet) -> None:
    backbone = paper_meta.backbone
    assert [m.out_channels for m in backbone.layer1] == [256] * 4
    assert [len(stage) for stage in backbone.stages] == [2, 2, 2]
    for stage_index, stage in enumerate(backbone.stages):
        for module in stage:
            assert isinstance(module, HighResolutionModule)
            assert module.channels == (32, 64, 128, 256)[: stage_index + 2]
            assert all(len(branch) == 3 for branch in module.branches)
    # Stem: two stride-2 3x3 convs with 64 channels.
    convs = [m for m in backbone.stem.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.stride, c.kernel_size) for c in convs] == [(64, (2, 2), (3, 3))] * 2


def test_every_residual_block_has_attention(paper_meta: BENet) -> None:
    blocks = [m for m in paper_meta.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    # 4 layer1 + 3 stages x 2 modules x (2+3+4 branches) x 3 blocks... counted independently:
    branch_blocks = 2 * 3 * (2 + 3 + 4)
    head_blocks = 3 * 2 * 3  # three dense heads, 3 blocks at 1/4 and at 1/2
    classification_blocks = 2 * 4  # person-centric and background, one block per branch
    assert len(blocks) == 4 + branch_blocks + head_blocks + classification_blocks
    assert all(isinstance(b.attention, AttentionBlock) for b in blocks)
    # The channel-attention MLP halves the channels.
    for block in blocks:
        assert block.attention.channel.mlp[0].out_features == block.out_channels // 2


def test_paper_heads_structure(paper_meta: BENet) -> None:
    for head, k in ((paper_meta.heatmap_head, 1), (paper_meta.size_head, 2), (paper_meta.emotion_head, 26)):
        for final in (head.final_4, head.final_2):
            assert final[0].in_channels == 32 and final[0].out_channels == (32 + k) // 2
            assert final[0].kernel_size == (3, 3) and final[-1].kernel_size == (1, 1)
            assert final[-1].out_channels == k
        deconv = head.deconv[0]
        assert isinstance(deconv, nn.ConvTranspose2d)
        assert ((deconv.in_channels, deconv.out_channels, deconv.kernel_size, deconv.stride)
                == (32 + k, 32, (4, 4), (2, 2)))
    for classifier in (paper_meta.person_centric_head, paper_meta.background_head):
        assert [b.out_channels for b in classifier.branch_blocks] == [32, 64, 128, 256]
        linears = [m for m in classifier.classifier if isinstance(m, nn.Linear)]
        assert [(linear.in_features, linear.out_features) for linear in linears] == [(128, 64), (64, 26)]
    assert paper_meta.vad_head is None  # the paper has no continuous head


def test_paper_parameter_count_is_published_one(paper_meta: BENet) -> None:
    total = n_params(paper_meta)
    training_only = n_params(paper_meta.person_centric_head) + n_params(paper_meta.background_head)
    # BENet paper: about 19.5 M parameters, about 16.5 M without the training-only heads; the
    # public model has 19,499,851, of which 4,121 are an unused fusion head.
    assert total == 19_499_851 - 4_121
    assert 16.3e6 < total - training_only < 16.7e6


def test_lite_is_much_smaller_than_paper(paper_meta: BENet) -> None:
    with torch.device("meta"):
        lite = create_model("benet", "lite")
    assert n_params(lite) < n_params(paper_meta) / 5
    assert lite.config.input_size == (256, 256)
    assert lite.config.widths == (16, 32, 64, 128)


# ---------------------------------------------------------------- outputs


def test_output_contract(tiny: BENet) -> None:
    e = tiny.config.num_emotions
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        inference = tiny(x)
        everything = tiny(x, heads="all")
    expected = {
        "heatmap_4": (2, 1, 16, 24), "heatmap_2": (2, 1, 32, 48),
        "size_4": (2, 2, 16, 24), "size_2": (2, 2, 32, 48),
        "emotions_4": (2, e, 16, 24), "emotions_2": (2, e, 32, 48),
        "vad_4": (2, 3, 16, 24), "vad_2": (2, 3, 32, 48),
    }
    assert {k: tuple(v.shape) for k, v in inference.items()} == expected
    assert {k: tuple(v.shape) for k, v in everything.items()} == {
        **expected, "person_centric": (2, e), "background": (2, e)}
    # Fusing the last module into branch 0 only must not change the dense outputs.
    for key in expected:
        torch.testing.assert_close(inference[key], everything[key])


def test_heatmap_head_starts_with_the_centernet_prior_and_live_weights(tiny: BENet) -> None:
    with torch.no_grad():
        out = tiny(torch.randn(1, 3, 64, 64))
    for key in ("heatmap_4", "heatmap_2"):
        probability = torch.sigmoid(out[key])
        assert 0.01 < probability.mean().item() < 0.95  # not saturated: the focal loss has gradient
    for final in (tiny.heatmap_head.final_4[-1], tiny.heatmap_head.final_2[-1]):
        assert final.bias.item() == pytest.approx(-2.19)
        # PyTorch's default conv init (std 1/sqrt(3 fan_in)), not the near-zero init of the
        # regression heads: near-zero weights starve the trunk of heatmap gradient (peaks stayed
        # at the prior for hundreds of steps, measured on the lite preset).
        assert final.weight.abs().max().item() > 50 * 0.001
    assert tiny.size_head.final_4[-1].weight.std().item() < 0.01


def test_inference_forward_does_not_touch_training_heads() -> None:
    torch.manual_seed(0)
    model = create_model("benet", "tiny")
    out = model(torch.randn(2, 3, 64, 64))
    sum(v.sum() for v in out.values()).backward()
    assert all(p.grad is None for p in model.person_centric_head.parameters())
    assert all(p.grad is None for p in model.background_head.parameters())
    assert all(p.grad is not None for p in model.emotion_head.parameters())


def test_heads_can_be_switched_off() -> None:
    model = create_model("benet", "tiny", vad_head=False, person_centric_head=False, background_head=False,
                         attention=False)
    out = model(torch.randn(2, 3, 64, 64), heads="all")
    assert set(out) == {"heatmap_4", "heatmap_2", "size_4", "size_2", "emotions_4", "emotions_2"}
    assert not any(isinstance(m, AttentionBlock) for m in model.modules())


def test_bad_inputs_are_rejected(tiny: BENet) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        tiny(torch.randn(1, 3, 64, 70))
    with pytest.raises(ValueError, match="heads"):
        tiny(torch.randn(1, 3, 64, 64), heads="training")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny(torch.randn(1, 1, 64, 64))


def test_example_inputs(tiny: BENet) -> None:
    (x,) = tiny.example_inputs(3)
    assert x.shape == (3, 3, 64, 64)
    (x,) = tiny.example_inputs(1, (96, 32))
    assert x.shape == (1, 3, 96, 32)


# ---------------------------------------------------------------- config and factory


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="input_size"):
        BENetConfig(input_size=(500, 500))
    with pytest.raises(ValueError, match="stage_modules"):
        BENetConfig(stage_modules=(2, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        BENET_PRESETS["paper"].num_emotions = 3  # type: ignore[misc]


def test_factory_overrides_and_errors() -> None:
    assert "benet" in model_names() and "benet" in MODEL_REGISTRY
    config = build_config("benet", "tiny", num_emotions=7, widths=[8, 16, 16, 32])
    assert config.num_emotions == 7 and config.widths == (8, 16, 16, 32)
    assert BENET_PRESETS["tiny"].num_emotions == 26  # presets are never mutated
    assert build_config("benet") == BENET_PRESETS["paper"]  # default preset
    model = create_model("benet", "tiny", num_emotions=7)
    assert model.eval()(torch.randn(1, 3, 32, 32))["emotions_2"].shape[1] == 7
    with pytest.raises(ValueError, match="no preset 'huge'"):
        create_model("benet", "huge")
    with pytest.raises(ValueError, match="unknown config field.*depth"):
        create_model("benet", "tiny", depth=3)
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        create_model("resnet")


def _save(path, model: BENet, **replace) -> None:
    checkpoint = {"model": model.state_dict(), "model_name": "benet",
                  "config": dataclasses.asdict(model.config), "epoch": 3}
    checkpoint.update(replace)
    torch.save(checkpoint, path)


def test_checkpoint_roundtrip(tmp_path, tiny: BENet) -> None:
    path = tmp_path / "benet.pt"
    _save(path, tiny)
    loaded, checkpoint = load_model_from_checkpoint(path, "cpu")
    assert checkpoint["epoch"] == 3 and isinstance(loaded, BENet)
    assert loaded.config == tiny.config and not loaded.training
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for key, value in tiny(x).items():
            torch.testing.assert_close(loaded(x)[key], value)


def test_checkpoint_errors(tmp_path, tiny: BENet) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model_from_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt.pt.*<file>"):
        load_model_from_checkpoint(corrupt)
    no_config = tmp_path / "no_config.pt"
    torch.save({"model": tiny.state_dict(), "model_name": "benet"}, no_config)
    with pytest.raises(CheckpointError, match="no_config.pt: field 'config': missing"):
        load_model_from_checkpoint(no_config)
    bad_field = tmp_path / "bad_field.pt"
    _save(bad_field, tiny, config={**dataclasses.asdict(tiny.config), "depth": 3})
    with pytest.raises(CheckpointError, match="bad_field.pt: field 'config.depth'"):
        load_model_from_checkpoint(bad_field)
    bad_name = tmp_path / "bad_name.pt"
    _save(bad_name, tiny, model_name="yolo")
    with pytest.raises(CheckpointError, match="bad_name.pt: field 'model_name'"):
        load_model_from_checkpoint(bad_name)
    mismatch = tmp_path / "mismatch.pt"
    _save(mismatch, tiny, config={**dataclasses.asdict(tiny.config), "num_emotions": 7})
    with pytest.raises(CheckpointError, match="mismatch.pt: field 'model'"):
        load_model_from_checkpoint(mismatch)
