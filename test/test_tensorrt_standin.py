"""The TensorRT paths without TensorRT or a GPU: a stand-in of the API surface our code calls.

The stand-in records what the code asks of TensorRT (builder flags set and cleared, the
optimisation profile, the GPU current during the build, what the engine file holds). What it
mimics is the public TensorRT 10.x / 11 Python API: ``BuilderFlag.FP16`` exists in 10.0-10.16
(deprecated from 10.12) and is gone in 11 (strongly typed networks only); ``TF32`` is on by
default in a builder config; ``execute_async_v3`` returns False when the enqueue fails.
"""

from __future__ import annotations

import enum
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from deploy_models import peaky_benet, save_checkpoint

from emotion_perception.cli import main as cli_main
from emotion_perception.export import tensorrt_build
from emotion_perception.export.engine_cache import default_profile
from emotion_perception.export.model_card import read_onnx_card
from emotion_perception.export.onnx_export import export_onnx


def fake_tensorrt(version: str = "10.3.0", parse_ok: bool = True) -> types.SimpleNamespace:
    """A ``tensorrt`` module stand-in; ``trt.built`` lists one record per engine build."""
    flags = ["TF32", "INT8"] + (["FP16"] if int(version.split(".")[0]) < 11 else [])
    builder_flag = enum.Enum("BuilderFlag", flags)
    trt = types.SimpleNamespace(__version__=version, BuilderFlag=builder_flag, built=[], gpu=[0])
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace()

    class Logger:
        VERBOSE, WARNING = "verbose", "warning"

        def __init__(self, severity: str) -> None:
            self.severity = severity

    class Network:
        def __init__(self) -> None:
            self.inputs: list[str] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, index: int) -> Any:
            return types.SimpleNamespace(name=self.inputs[index])

    class ParserError:
        def desc(self) -> str:
            return "Assertion failed: zero point of QuantizeLinear must be 0 (symmetric quantization)"

        def node(self) -> int:
            return 17

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network = network
            self.num_errors = 0 if parse_ok else 1

        def parse_from_file(self, path: str) -> bool:
            self.network.inputs = list(read_onnx_card(path).input_names)
            return parse_ok

        def get_error(self, index: int) -> ParserError:
            return ParserError()

    class TimingCache:
        def serialize(self) -> bytes:
            return b"timing"

    class Config:
        def __init__(self) -> None:
            self.flags = {builder_flag.TF32}  # TensorRT's default
            self.profiles: list[dict[str, tuple]] = []

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            self.workspace = size

        def set_flag(self, flag: Any) -> None:
            self.flags.add(flag)

        def clear_flag(self, flag: Any) -> None:
            self.flags.discard(flag)

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache()

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            return True

        def get_timing_cache(self) -> TimingCache:
            return TimingCache()

        def add_optimization_profile(self, profile: Any) -> None:
            self.profiles.append(profile.shapes)

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name: str, low: list[int], opt: list[int], high: list[int]) -> None:
            self.shapes[name] = (list(low), list(opt), list(high))

    class Builder:
        def __init__(self, logger: Logger) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            trt.built.append({"flags": {flag.name for flag in config.flags}, "profiles": config.profiles,
                              "gpu": trt.gpu[0]})
            return b"serialized engine"

    trt.Logger, trt.OnnxParser, trt.Builder = Logger, OnnxParser, Builder
    return trt


@pytest.fixture()
def gpu_standin(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """torch sees two CUDA GPUs; returns the one-item list holding the current device index."""
    current = [0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: current.__setitem__(0, int(index)))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: f"Stand-in GPU {index}")
    return current


@pytest.fixture(scope="module")
def benet_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return export_onnx(peaky_benet(), tmp_path_factory.mktemp("onnx") / "benet.onnx").onnx_path


def _install(monkeypatch: pytest.MonkeyPatch, trt: types.SimpleNamespace, gpu: list[int]) -> None:
    def build_on_current_gpu(*args: Any, **kwargs: Any) -> bytes:
        trt.gpu[0] = gpu[0]
        return real(*args, **kwargs)

    monkeypatch.setattr(tensorrt_build, "import_tensorrt", lambda: trt)
    real = trt.Builder.build_serialized_network
    monkeypatch.setattr(trt.Builder, "build_serialized_network",
                        lambda self, *a, **k: build_on_current_gpu(self, *a, **k))


def _profile(onnx_path: Path, max_batch: int = 2) -> dict[str, dict[str, list[int]]]:
    card = read_onnx_card(onnx_path)
    return default_profile(card.input_names, card.input_size, card.dynamic_size, card.stride, max_batch)


@pytest.mark.parametrize("version", ["10.0.1", "10.3.0", "10.16.0"])
def test_fp16_engines_build_on_tensorrt_10_from_an_fp32_graph(monkeypatch, gpu_standin, benet_onnx, tmp_path, version):
    trt = fake_tensorrt(version)
    _install(monkeypatch, trt, gpu_standin)
    tensorrt_build.build_engine(benet_onnx, tmp_path / "e.engine", "fp16", _profile(benet_onnx))
    assert trt.built[-1]["flags"] == {"FP16", "TF32"}
    tensorrt_build.build_engine(benet_onnx, tmp_path / "e8.engine", "int8", _profile(benet_onnx))
    assert trt.built[-1]["flags"] == {"FP16", "INT8", "TF32"}
    tensorrt_build.build_engine(benet_onnx, tmp_path / "e32.engine", "fp32", _profile(benet_onnx))
    assert trt.built[-1]["flags"] == {"TF32"}


def test_tensorrt_11_needs_an_fp16_graph_for_an_fp16_engine(monkeypatch, gpu_standin, benet_onnx, tmp_path):
    trt = fake_tensorrt("11.0.0")
    _install(monkeypatch, trt, gpu_standin)
    with pytest.raises(ValueError, match="strongly typed networks only.*--precision fp16"):
        tensorrt_build.build_engine(benet_onnx, tmp_path / "e.engine", "fp16", _profile(benet_onnx))
    fp16_graph = export_onnx(peaky_benet(), tmp_path / "benet16.onnx", precision="fp16").onnx_path
    tensorrt_build.build_engine(fp16_graph, tmp_path / "e.engine", "fp16", _profile(fp16_graph))
    assert "FP16" not in trt.built[-1]["flags"]


def test_tf32_can_be_turned_off_for_parity_checks(monkeypatch, gpu_standin, benet_onnx, tmp_path):
    trt = fake_tensorrt()
    _install(monkeypatch, trt, gpu_standin)
    tensorrt_build.build_engine(benet_onnx, tmp_path / "e.engine", "fp32", _profile(benet_onnx), allow_tf32=False)
    assert trt.built[-1]["flags"] == set()  # TensorRT's default TF32 is cleared, not merely not set


def test_strict_fp32_and_tf32_engines_are_cached_apart(monkeypatch, gpu_standin, benet_onnx, tmp_path):
    trt = fake_tensorrt()
    _install(monkeypatch, trt, gpu_standin)
    cache = tmp_path / "cache"
    default = tensorrt_build.ensure_engine(benet_onnx, cache, "fp32")
    strict = tensorrt_build.ensure_engine(benet_onnx, cache, "fp32", allow_tf32=False)
    assert default != strict and len(trt.built) == 2
    # each is a cache hit for its own setting, never a rebuild of the other
    assert tensorrt_build.ensure_engine(benet_onnx, cache, "fp32") == default
    assert tensorrt_build.ensure_engine(benet_onnx, cache, "fp32", allow_tf32=False) == strict
    assert len(trt.built) == 2


def test_the_engine_is_built_on_the_requested_gpu_and_written_whole(monkeypatch, gpu_standin, benet_onnx, tmp_path):
    trt = fake_tensorrt()
    _install(monkeypatch, trt, gpu_standin)
    cache = tmp_path / "cache"
    engine = tensorrt_build.ensure_engine(benet_onnx, cache, "fp16", max_batch=2, device_index=1)
    assert trt.built[-1]["gpu"] == 1 and gpu_standin[0] == 0  # built on GPU 1, the caller's GPU restored
    assert "Stand-in-GPU-1" in engine.name
    assert engine.read_bytes() == b"serialized engine"
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [engine.name, f"{engine.name}.json", "timing.trt10.3.0.9.0.cache"])  # no partial left beside it


def test_a_failed_build_leaves_no_engine(monkeypatch, gpu_standin, benet_onnx, tmp_path):
    trt = fake_tensorrt()
    _install(monkeypatch, trt, gpu_standin)
    monkeypatch.setattr(trt.Builder, "build_serialized_network", lambda self, network, config: None)
    with pytest.raises(tensorrt_build.TensorRTBuildError, match="engine build failed"):
        tensorrt_build.build_engine(benet_onnx, tmp_path / "e.engine", "fp32", _profile(benet_onnx))
    assert list(tmp_path.iterdir()) == []


def test_export_defaults_benet_engines_to_batch_2_and_passes_the_input_size(monkeypatch, gpu_standin, tmp_path):
    trt = fake_tensorrt()
    _install(monkeypatch, trt, gpu_standin)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(peaky_benet(), tmp_path / "benet.pt", "benet")
    out = tmp_path / "out" / "benet.engine"
    assert cli_main(["export", "--model", str(checkpoint), "--format", "tensorrt", "--precision", "fp16",
                     "--input-size", "96", "128", "--out", str(out)]) == 0
    (image_profile,) = [shapes for name, shapes in trt.built[-1]["profiles"][0].items() if name == "image"]
    _low, opt, high = image_profile
    assert opt == [1, 3, 96, 128]  # the export size is the profile's optimum
    assert high[0] == 2  # flip test runs the image and its mirror as one batch of 2


def test_an_unparseable_graph_is_one_line_from_export(monkeypatch, gpu_standin, benet_onnx, tmp_path, capsys):
    trt = fake_tensorrt(parse_ok=False)
    _install(monkeypatch, trt, gpu_standin)
    code = cli_main(["export", "--model", str(benet_onnx), "--format", "tensorrt", "--precision", "int8",
                     "--out", str(tmp_path / "b.engine")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "could not parse" in err and "node 17" in err and "symmetric" in err


class _Graph:
    """torch.cuda.CUDAGraph stand-in: records whether it was replayed."""

    def __init__(self) -> None:
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1


def test_a_failed_cuda_graph_capture_is_an_error_not_an_empty_graph(monkeypatch):
    import contextlib

    from emotion_perception.runtime.tensorrt_backend import TensorRTBackend

    answers = iter([True, False])  # the warm-up enqueue works, the captured one fails
    backend = TensorRTBackend.__new__(TensorRTBackend)
    backend._context = types.SimpleNamespace(execute_async_v3=lambda stream: next(answers))
    backend._stream = types.SimpleNamespace(cuda_stream=1)
    backend._graphs = {}
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _Graph)
    monkeypatch.setattr(torch.cuda, "graph", lambda graph, stream=None: contextlib.nullcontext())
    with pytest.raises(RuntimeError, match="CUDA graph capture"):
        backend._replay((("image", (1, 3, 64, 64)),))
    assert backend._graphs == {}  # nothing kept: the next call captures again

    answers = iter([True, True])
    backend._replay((("image", (1, 3, 64, 64)),))
    (graph,) = backend._graphs.values()
    assert graph.replays == 1


def test_int8_graphs_for_tensorrt_are_symmetric(tmp_path):
    import onnx
    from onnx import numpy_helper

    from emotion_perception.export.quantize import quantize_int8

    torch.manual_seed(0)
    fp32 = export_onnx(peaky_benet(), tmp_path / "benet.onnx").onnx_path
    int8, _ = quantize_int8(fp32, tmp_path / "benet_int8.onnx", calibration_count=2, target="tensorrt")
    graph = onnx.load(str(int8)).graph
    initialisers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    zero_points = [node.input[2] for node in graph.node
                   if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2]
    assert len(zero_points) > 20
    for name in zero_points:
        assert initialisers[name].dtype == np.int8 and not initialisers[name].any(), name
    # Biases stay float (the parser takes no int32 DequantizeLinear); weights are per channel.
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            assert initialisers[node.input[2]].dtype != np.int32
    per_channel = [node for node in graph.node if node.op_type == "DequantizeLinear"
                   and initialisers.get(node.input[1], np.zeros(1)).size > 1]
    assert per_channel
