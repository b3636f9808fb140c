"""The CPU floor probe (bench/cpu_floor.py): its graph computes what it says, its MACs are counted
by hand and checked against the project's own MAC counter."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from emotion_perception.bench.cpu_floor import ConvStack, FloorProbe, conv_stack_model
from emotion_perception.nets.profile import profile_model


def test_conv_stack_macs_are_counted_by_hand_and_by_the_profiler():
    stack = ConvStack(channels=8, size=16, layers=3)
    assert stack.gmacs == pytest.approx(3 * 9 * 8 * 8 * 16 * 16 / 1e9)
    # the same stack in torch, counted by the project's profiler (the one bench model uses)
    torch_stack = nn.Sequential(*[nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()) for _ in range(3)])
    assert profile_model(torch_stack, (torch.zeros(1, 8, 16, 16),)).gmacs == pytest.approx(stack.gmacs, rel=1e-3)


def test_conv_stack_model_is_a_valid_relu_conv_chain_matching_torch():
    stack = ConvStack(channels=4, size=8, layers=2)
    model = onnx.load_from_string(conv_stack_model(stack))
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Conv", "Relu", "Conv", "Relu"]
    weights = {t.name: torch.from_numpy(onnx.numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    probe = FloorProbe(threads=1, stack=stack)
    x = probe._feed["x"]
    expected = torch.from_numpy(x)
    for index in range(stack.layers):
        expected = torch.relu(nn.functional.conv2d(expected, weights[f"w{index}"], weights[f"b{index}"], padding=1))
    (got,) = probe._session.run(None, probe._feed)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_floor_report_divides_the_model_macs_by_the_measured_rate():
    probe = FloorProbe(threads=1, stack=ConvStack(channels=16, size=16, layers=2))
    with pytest.raises(ValueError, match="not been measured"):
        probe.gmacs_per_s()
    probe.measure(iterations=3, warmup=1)
    assert len(probe.samples_ms) == 3
    report = probe.report(model_gmacs=2.0)
    assert report["gmacs_per_s"] == pytest.approx(probe.stack.gmacs / (np.median(probe.samples_ms) / 1000.0))
    assert report["floor_ms"] == pytest.approx(2.0 / report["gmacs_per_s"] * 1000.0)
    assert report["threads"] == 1 and "conv 3x3 16->16" in report["probe"]
