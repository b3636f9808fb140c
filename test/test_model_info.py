"""MAC counter against hand-computed MACs and against torch's own FLOP counter, parameter counts,
BENet's published figures and the `model-info` command over every registered model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from emotion_perception import cli
from emotion_perception.nets.factory import create_model, get_entry, model_names
from emotion_perception.nets.profile import count_parameters, matmul_macs, profile_model


def torch_counted_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """MACs of one forward as torch.utils.flop_counter counts them (at the aten level: convolution,
    mm/addmm/bmm, attention), an implementation independent of nets/profile.py.

    It counts 2 FLOPs per multiply-accumulate and, like the profiler, leaves out bias additions,
    normalisation, activations, softmax, pooling and resampling, so FLOPs / 2 must equal the
    profiler's MACs exactly: any difference is an operation one of the two misses.
    """
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)  # 16x16 -> 16x16
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2)  # -> 8x8, grouped
        self.up = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)  # -> 16x16
        self.seq = nn.Conv1d(4, 6, 5, padding=2)
        self.fc = nn.Linear(6, 10)
        self.unused = nn.Linear(100, 100)  # never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.down(self.conv(x)))  # (B,4,16,16)
        sequence = self.seq(y.flatten(2))  # (B,6,256)
        tokens = self.fc(sequence.transpose(1, 2))  # (B,256,10)
        attention = tokens @ tokens.transpose(1, 2)  # (B,256,256)
        return torch.bmm(attention, tokens)  # (B,256,10)


def test_mac_counter_matches_hand_counts() -> None:
    batch = 2
    conv = 16 * 16 * 8 * (3 * 9)  # output pixels x out channels x (in channels x kernel)
    down = 8 * 8 * 8 * (4 * 9)  # groups=2: each output sums 4 input channels
    up = 8 * 8 * 8 * (4 * 16)  # transpose: each input element scatters to out channels x kernel
    seq = 256 * 6 * (4 * 5)
    fc = 256 * 10 * 6
    attention = 256 * 256 * 10
    bmm = 256 * 10 * 256
    profile = profile_model(SmallNet(), (torch.randn(batch, 3, 16, 16),))
    assert profile.macs_by_type == {
        "Conv2d": batch * (conv + down), "ConvTranspose2d": batch * up, "Conv1d": batch * seq,
        "Linear": batch * fc, "matmul": batch * (attention + bmm),
    }
    assert profile.macs == batch * (conv + down + up + seq + fc + attention + bmm)
    assert profile.output_shapes == {"output": (batch, 256, 10)}
    assert profile.input_shapes == [(batch, 3, 16, 16)]


def test_parameter_counts_hand_values() -> None:
    net = SmallNet()
    executed = (3 * 8 * 9 + 8) + (4 * 8 * 9 + 8) + (8 * 4 * 16 + 4) + (4 * 6 * 5 + 6) + (6 * 10 + 10)
    assert count_parameters(net) == executed + 100 * 100 + 100
    assert profile_model(net, (torch.randn(1, 3, 16, 16),)).inference_params == executed


def test_fused_attention_counts_both_products() -> None:
    # softmax(Q K^T) V with Q (2, 3, 4), K (2, 5, 4), V (2, 5, 6): Q K^T is 2 x 3 x 5 outputs of
    # 4 products each, A V is 2 x 3 x 6 outputs of 5 products each.
    class Attend(nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, k, v)

    inputs = (torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 6))
    assert profile_model(Attend(), inputs).macs == 2 * 3 * 5 * 4 + 2 * 3 * 6 * 5


def test_matmul_broadcasting() -> None:
    assert matmul_macs(torch.empty(5), torch.empty(5)) == 5
    assert matmul_macs(torch.empty(3, 4), torch.empty(4)) == 12
    assert matmul_macs(torch.empty(7, 1, 3, 4), torch.empty(2, 4, 5)) == 7 * 2 * 3 * 5 * 4


def test_meta_device_counts_equal_real_ones() -> None:
    torch.manual_seed(0)
    real = create_model("benet", "tiny").eval()
    with torch.device("meta"):
        meta = create_model("benet", "tiny").eval()
    a = profile_model(real, real.example_inputs(1))
    b = profile_model(meta, meta.example_inputs(1))
    assert ((a.macs, a.params, a.inference_params, a.output_shapes)
            == (b.macs, b.params, b.inference_params, b.output_shapes))


def _head_conv_macs(pixels_4: int, channels: int, k: int, blocks: int) -> int:
    """Hand count of one dense head's conv MACs (BasicBlocks, final convs, deconv)."""
    basic = 2 * 9 * channels * channels
    mid = (channels + k) // 2
    final = 9 * channels * mid + mid * k
    at_4 = pixels_4 * (blocks * basic + final)
    deconv = pixels_4 * (channels + k) * channels * 16
    at_2 = 4 * pixels_4 * (blocks * basic + final)
    return at_4 + deconv + at_2


def test_benet_paper_published_figures() -> None:
    with torch.device("meta"):
        model = create_model("benet", "paper").eval()
    profile = profile_model(model, model.example_inputs(1))
    # BENet paper: about 19.5 M parameters and about 41 GMACs at 512x512.
    assert 19.3e6 < profile.params < 19.7e6
    assert 40.0 < profile.gmacs < 42.0
    # Each dense head's conv MACs recounted by hand (attention MLPs counted apart as Linear).
    pixels_4 = 128 * 128
    spatial_conv = 3 * (pixels_4 + 4 * pixels_4) * 2  # 2->1 1x1 conv of 3 blocks at 1/4 and 3 at 1/2
    for head, k in ((model.heatmap_head, 1), (model.size_head, 2), (model.emotion_head, 26)):
        counted = profile_model(head, (torch.empty(1, 32, 128, 128, device="meta"),)).macs_by_type
        assert counted["Conv2d"] + counted["ConvTranspose2d"] - spatial_conv == _head_conv_macs(pixels_4, 32, k, 3)
    # Inference skips the image-level heads and the last module's fusions into branches 1..3.
    last = model.backbone.stages[-1][-1]
    unused_fuse = sum(count_parameters(path) for target in list(last.fuse)[1:] for path in target)
    training_heads = count_parameters(model.person_centric_head) + count_parameters(model.background_head)
    assert profile.inference_params == profile.params - training_heads - unused_fuse


def _run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["model-info", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_model_info_json_matches_forward(capsys) -> None:
    code, out, _ = _run_cli(capsys, "--preset", "benet:tiny", "--input-size", "96", "64", "--json")
    assert code == 0
    info = json.loads(out)
    model = create_model("benet", "tiny").eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 96, 64))
    assert info["input_shapes"] == [[1, 3, 96, 64]]
    assert info["output_shapes"] == {k: list(v.shape) for k, v in outputs.items()}
    assert info["params"] == count_parameters(model)
    # The command profiles on the meta device; torch's counter here runs a real forward.
    macs = torch_counted_macs(model, (torch.randn(1, 3, 96, 64),))
    assert info["macs"] == macs
    assert info["gmacs"] == pytest.approx(macs / 1e9, abs=1e-4)
    # Inference runs neither image-level head nor the last module's fusions into branches 1..3.
    last = model.backbone.stages[-1][-1]
    unused_fuse = sum(count_parameters(path) for target in list(last.fuse)[1:] for path in target)
    training_heads = count_parameters(model.person_centric_head) + count_parameters(model.background_head)
    assert info["inference_params"] == info["params"] - training_heads - unused_fuse


def test_model_info_table_and_errors(capsys) -> None:
    code, out, _ = _run_cli(capsys, "--preset", "lite")
    assert code == 0
    assert "benet (lite)" in out and "GMACs" in out and "1x3x256x256" in out and "emotions_2" in out
    code, _, err = _run_cli(capsys, "--preset", "huge")
    assert code == 2 and "no preset 'huge'" in err
    code, _, err = _run_cli(capsys, "--preset", "tiny", "--input-size", "50", "64")
    assert code == 2 and "multiples of 32" in err


@pytest.mark.parametrize("name", model_names())
def test_model_info_works_for_every_registered_model(capsys, name: str) -> None:
    entry = get_entry(name)
    code, out, _ = _run_cli(capsys, "--preset", name, "--json")
    assert code == 0
    info = json.loads(out)
    assert info["preset"] == entry.default_preset
    assert info["params"] > 0 and info["gmacs"] > 0 and info["output_shapes"]
    with torch.device("meta"):
        model = create_model(name, entry.default_preset).eval()
    assert info["macs"] == torch_counted_macs(model, model.example_inputs(1))
