"""The CPU floor of a convolutional network, measured: ONNX Runtime's own rate on plain 3x3 convolutions.

A network of G GMACs cannot run faster on a CPU than G divided by the best multiply-accumulate
rate the runtime reaches on that CPU. A theoretical peak (cores x FMA units x vector width x
clock) overstates that rate: no convolution kernel reaches it, and turbo clocks and memory
bandwidth vary between machines. So the floor is measured instead, with the same runtime,
thread count and machine as the model: a stack of 3x3 convolutions + ReLU (what ONNX Runtime
runs fastest: its blocked NCHWc kernels, nothing else in the graph), timed side by side with the
model in one run (``bench model``). ``latency / floor`` then says how far a model is from what
this runtime could do with its MACs; everything that is not a convolution (attention pooling,
layout reorders, element-wise ops) shows up as the excess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ConvStack:
    """The probe: ``layers`` 3x3 convolutions (+ ReLU) of ``channels`` -> ``channels`` at ``size`` x ``size``.

    64 channels at 128x128: 4.8 GMACs, ~55 ms a run at 1 thread here. At 1 thread, 64 to 256
    channels at 32 to 128 pixels reach the same rate within 3 % (32 channels: 10 % less); with
    2 threads, small maps (64x64) split worse between the threads, hence 128x128.
    """

    channels: int = 64
    size: int = 128
    layers: int = 8

    @property
    def gmacs(self) -> float:
        return 9 * self.channels * self.channels * self.size * self.size * self.layers / 1e9

    def describe(self) -> str:
        return f"{self.layers} x (conv 3x3 {self.channels}->{self.channels} + ReLU) at {self.size}x{self.size}"


def conv_stack_model(stack: ConvStack, seed: int = 0) -> bytes:
    """The probe as a serialised ONNX model (input "x", float32 NCHW, batch 1)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, weights = [], []
    previous = "x"
    shape = [1, stack.channels, stack.size, stack.size]
    for index in range(stack.layers):
        # He-scaled weights keep activations of the order of the input through the stack.
        kernel = rng.standard_normal((stack.channels, stack.channels, 3, 3)) * np.sqrt(2.0 / (9 * stack.channels))
        weights += [numpy_helper.from_array(kernel.astype(np.float32), f"w{index}"),
                    numpy_helper.from_array(np.zeros(stack.channels, np.float32), f"b{index}")]
        nodes += [helper.make_node("Conv", [previous, f"w{index}", f"b{index}"], [f"conv{index}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"conv{index}"], [f"relu{index}"])]
        previous = f"relu{index}"
    graph = helper.make_graph(nodes, "conv_stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, shape)], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


class FloorProbe:
    """An ONNX Runtime CPU session of the probe, with the session options of the project's ONNX
    Runtime backend (``runtime.onnxruntime_backend.session_options``) at ``threads`` threads."""

    def __init__(self, threads: int, stack: ConvStack | None = None) -> None:
        import onnxruntime as ort

        from emotion_perception.runtime.onnxruntime_backend import session_options

        self.stack = stack or ConvStack()
        self.threads = threads
        self._session = ort.InferenceSession(conv_stack_model(self.stack), session_options(threads),
                                             providers=["CPUExecutionProvider"])
        shape = (1, self.stack.channels, self.stack.size, self.stack.size)
        self._feed = {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
        self.samples_ms: list[float] = []

    def run(self) -> None:
        self._session.run(None, self._feed)

    def measure(self, iterations: int, warmup: int) -> None:
        """Add ``iterations`` timed runs (after ``warmup`` untimed ones) to :attr:`samples_ms`."""
        from emotion_perception.bench.model_bench import time_calls

        self.samples_ms += time_calls(self.run, lambda: None, iterations, warmup)

    def gmacs_per_s(self) -> float:
        """The probe's rate from the median of its samples."""
        if not self.samples_ms:
            raise ValueError("the floor probe has not been measured")
        return self.stack.gmacs / (float(np.median(self.samples_ms)) / 1000.0)

    def report(self, model_gmacs: float) -> dict[str, Any]:
        """The floor of a model of ``model_gmacs`` GMACs (batch 1) at this probe's rate."""
        rate = self.gmacs_per_s()
        return {"gmacs_per_s": rate, "floor_ms": model_gmacs / rate * 1000.0, "model_gmacs": model_gmacs,
                "threads": self.threads, "probe": self.stack.describe(), "probe_runs": len(self.samples_ms),
                "probe_p50_ms": float(np.median(self.samples_ms))}
