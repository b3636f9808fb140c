"""ONNX export (parity with PyTorch, dynamic shapes, decoding in the graph, model card, INT8),
TensorRT engine cache logic and clear errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from deploy_models import peaky_benet, save_checkpoint, tiny_cahfw

from emotion_perception.cli import main as cli_main
from emotion_perception.data.categories import CAER_CATEGORIES, EMOTIC_CATEGORIES
from emotion_perception.export.engine_cache import (
    EngineKey,
    decide,
    default_profile,
    engine_file_name,
    engine_path,
    parse_engine_file_name,
    slug,
    stale_reasons,
    validate_profile,
)
from emotion_perception.export.model_card import (
    CARD_KEY,
    ModelCardError,
    card_from_dict,
    read_onnx_card,
    read_sidecar,
)
from emotion_perception.export.onnx_export import (
    compare_outputs,
    export_onnx,
    match_decoded_rows,
    run_onnx_cpu,
    run_torch_graph,
)
from emotion_perception.nets.decode import DecodeConfig, decode

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def benet_model():
    return peaky_benet()


@pytest.fixture(scope="module")
def maps_export(benet_model, tmp_path_factory):
    return export_onnx(benet_model, tmp_path_factory.mktemp("maps") / "benet.onnx")


@pytest.fixture(scope="module")
def decode_export(benet_model, tmp_path_factory):
    config = DecodeConfig(top_k=10, threshold=0.2)
    return export_onnx(benet_model, tmp_path_factory.mktemp("decode") / "benet_decode.onnx", with_decode=True,
                       decode_config=config)


@pytest.fixture(scope="module")
def cahfw_export(tmp_path_factory):
    return export_onnx(tiny_cahfw(), tmp_path_factory.mktemp("cahfw") / "cahfw.onnx")


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (2, 3, 96, 128), (1, 3, 128, 64)])
def test_benet_maps_match_pytorch_at_dynamic_shapes(benet_model, maps_export, shape):
    image = torch.from_numpy(np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32))
    with torch.inference_mode():
        reference = benet_model(image)  # the network itself, not the export wrapper
    outputs = run_onnx_cpu(maps_export.onnx_path, ["image"], [image.numpy()])
    assert set(outputs) == set(reference)
    for name, value in reference.items():
        assert outputs[name].shape == tuple(value.shape)
        assert _max_abs(outputs[name], value.numpy()) < 1e-4, name


def _channel_reductions(model: onnx.ModelProto, op_type: str = "ReduceMean") -> list[str]:
    """Names of ``op_type`` nodes that reduce over the channel axis (axes as attribute or input)."""
    constants = {t.name: onnx.numpy_helper.to_array(t).tolist() for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t).tolist()
    found = []
    for node in model.graph.node:
        if node.op_type != op_type:
            continue
        axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
        if axes is None and len(node.input) > 1:
            axes = constants.get(node.input[1])
        if axes is not None and 1 in np.atleast_1d(axes):
            found.append(node.name)
    return found


def test_export_computes_the_spatial_channel_mean_as_a_convolution(benet_model, maps_export):
    # Why: a channel-axis ReduceMean runs outside ONNX Runtime's blocked conv layout (docs/BENCHMARKS.md).
    model = onnx.load(str(maps_export.onnx_path))
    assert _channel_reductions(model) == []
    blocks = [m for m in benet_model.modules() if type(m).__name__ == "AttentionBlock"]
    mean_convs = [n for n in model.graph.node if n.op_type == "Conv" and "/spatial/" in n.name]
    # one channel mean (as a conv) per channel max: every spatial attention the graph keeps
    # (blocks of training-only heads are pruned from the inference graph)
    assert 0 < len(mean_convs) == len(_channel_reductions(model, "ReduceMax")) <= len(blocks)
    assert maps_export.card.source["graph_rewrites"] == ["spatial_attention_mean_as_conv"]
    # the model itself is not rewritten, and the card says which exporter made the graph
    assert all(type(b.spatial).__name__ == "SpatialAttention" for b in blocks)
    assert maps_export.card.source["export_revision"] >= 2


def test_export_without_rewrites_keeps_the_trained_form(benet_model, maps_export, tmp_path):
    plain = export_onnx(benet_model, tmp_path / "plain.onnx", graph_rewrites=False)
    model = onnx.load(str(plain.onnx_path))
    assert len(_channel_reductions(model)) == len(_channel_reductions(model, "ReduceMax")) > 0
    assert plain.card.source["graph_rewrites"] == []
    image = np.random.default_rng(3).standard_normal((1, 3, 64, 96)).astype(np.float32)
    rewritten = run_onnx_cpu(maps_export.onnx_path, ["image"], [image])
    for name, value in run_onnx_cpu(plain.onnx_path, ["image"], [image]).items():
        assert _max_abs(rewritten[name], value) < 1e-4, name


def test_export_without_onnxslim_is_unsimplified_and_says_so(benet_model, maps_export, tmp_path, monkeypatch, caplog):
    import sys

    assert maps_export.card.source["simplified"] is True
    monkeypatch.setitem(sys.modules, "onnxslim", None)  # import onnxslim -> ImportError
    with caplog.at_level("WARNING"):
        plain = export_onnx(benet_model, tmp_path / "unsimplified.onnx")
    assert plain.card.source["simplified"] is False and "onnxslim is not importable" in caplog.text
    image = np.random.default_rng(5).standard_normal((1, 3, 64, 64)).astype(np.float32)
    simplified = run_onnx_cpu(maps_export.onnx_path, ["image"], [image])
    for name, value in run_onnx_cpu(plain.onnx_path, ["image"], [image]).items():
        assert _max_abs(simplified[name], value) < 1e-4, name


def test_onnx_graph_declares_dynamic_batch_height_width(maps_export):
    model = onnx.load(str(maps_export.onnx_path))
    (image,) = [i for i in model.graph.input if i.name == "image"]
    dims = image.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    assert model.opset_import[0].version >= 17
    assert [o.name for o in model.graph.output] == list(maps_export.card.output_names)


@pytest.mark.parametrize("batch", [1, 3])
def test_cahfw_logits_match_pytorch(cahfw_export, batch):
    net = cahfw_export.graph.module.net
    rng = np.random.default_rng(batch)
    face, context = (rng.standard_normal((batch, 3, 32, 32)).astype(np.float32) for _ in range(2))
    with torch.inference_mode():
        reference = net(torch.from_numpy(face), torch.from_numpy(context)).numpy()
    outputs = run_onnx_cpu(cahfw_export.onnx_path, ["face", "context"], [face, context])
    assert outputs["logits"].shape == (batch, len(CAER_CATEGORIES))
    assert _max_abs(outputs["logits"], reference) < 1e-4


@pytest.mark.parametrize("shape", [(2, 3, 64, 96), (1, 3, 128, 128)])
def test_decoding_in_graph_matches_pytorch_decoding(benet_model, decode_export, shape):
    rng = np.random.default_rng(shape[2])
    image = rng.standard_normal(shape).astype(np.float32)
    letterbox = np.tile(np.float32([[0.5, 3.0, 7.0]]), (shape[0], 1))
    with torch.inference_mode():
        maps = benet_model(torch.from_numpy(image))
        reference = decode(maps, torch.from_numpy(letterbox), DecodeConfig(top_k=10, threshold=0.2))
    outputs = run_onnx_cpu(decode_export.onnx_path, ["image", "letterbox"], [image, letterbox])
    for name in ("boxes", "scores", "emotions", "vad", "valid"):
        assert outputs[name].shape == tuple(reference[name].shape), name
    np.testing.assert_allclose(outputs["scores"], reference["scores"].numpy(), atol=1e-5)
    matches = match_decoded_rows(reference["boxes"].numpy(), outputs["boxes"])
    assert len(matches) == shape[0] * 10  # every person found at the same peak
    for b, r, c in matches:
        np.testing.assert_allclose(outputs["boxes"][b, c], reference["boxes"][b, r].numpy(), rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(outputs["emotions"][b, c], reference["emotions"][b, r].numpy(), atol=1e-5)
        np.testing.assert_allclose(outputs["vad"][b, c], reference["vad"][b, r].numpy(), atol=1e-5)
        assert outputs["valid"][b, c] == bool(reference["valid"][b, r])
    np.testing.assert_array_equal(outputs["valid"], outputs["scores"] >= 0.2)  # the threshold is in the graph


def test_parity_report_flags_real_differences(decode_export):
    # The comparison the export command prints must not hide a wrong graph.
    graph = decode_export.graph
    inputs = [x.numpy() for x in graph.example_inputs]
    reference = run_torch_graph(graph, inputs)
    assert all(row.max_abs_diff < 1e-4 for row in compare_outputs(reference, reference, "same"))
    broken = dict(reference)
    broken["emotions"] = reference["emotions"] + 0.01
    rows = {row.output: row for row in compare_outputs(reference, broken, "broken")}
    assert rows["emotions"].max_abs_diff == pytest.approx(0.01, rel=1e-3)
    moved = dict(reference)
    moved["boxes"] = reference["boxes"] + 5.0  # every peak moved: nothing matches
    rows = {row.output: row for row in compare_outputs(reference, moved, "moved")}
    assert rows["boxes"].compared.startswith("0/")


# --------------------------------------------------------------------------- model card


def test_model_card_is_embedded_and_written_beside(maps_export, decode_export, cahfw_export):
    card = read_onnx_card(maps_export.onnx_path)
    assert card == read_sidecar(maps_export.onnx_path) == maps_export.card
    assert card.model_name == "benet" and card.preset == "tiny"
    assert card.categories == EMOTIC_CATEGORIES and card.stride == 32 and card.dynamic_size
    assert card.has_vad and not card.with_decode and card.precision == "fp32"
    assert card.normalisation.mean == (0.485, 0.456, 0.406) and card.normalisation.colour_order == "RGB"
    metadata = {p.key: p.value for p in onnx.load(str(maps_export.onnx_path)).metadata_props}
    assert metadata["model_name"] == "benet" and metadata["with_decode"] == "false" and CARD_KEY in metadata

    decoded = read_onnx_card(decode_export.onnx_path)
    assert decoded.with_decode and decoded.decode["top_k"] == 10 and decoded.output_names[0] == "boxes"
    cahfw = read_onnx_card(cahfw_export.onnx_path)
    assert cahfw.model_name == "cahfw" and cahfw.categories == CAER_CATEGORIES
    assert cahfw.input_names == ("face", "context") and not cahfw.dynamic_size and cahfw.input_size == (32, 32)


def test_model_card_errors_name_the_file(tmp_path, maps_export):
    bare = onnx.load(str(maps_export.onnx_path))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ModelCardError, match="bare.onnx.*not exported by"):
        read_onnx_card(tmp_path / "bare.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01 definitely not protobuf \xff" * 10)
    with pytest.raises(ModelCardError, match="junk.onnx"):
        read_onnx_card(tmp_path / "junk.onnx")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        read_onnx_card(tmp_path / "missing.onnx")
    values = maps_export.card.to_dict()
    values["format_version"] = 99
    with pytest.raises(ModelCardError, match="format_version"):
        card_from_dict(values, "x.json")


def test_fp16_export_runs_and_stays_close(benet_model, tmp_path):
    result = export_onnx(benet_model, tmp_path / "half.onnx", precision="fp16", simplify_graph=False)
    assert read_onnx_card(result.onnx_path).precision == "fp16"
    image = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.inference_mode():
        reference = benet_model(torch.from_numpy(image))
    outputs = run_onnx_cpu(result.onnx_path, ["image"], [image])
    assert outputs["heatmap_2"].dtype == np.float32  # float32 I/O around a float16 graph
    probabilities = 1 / (1 + np.exp(-outputs["emotions_2"]))
    expected = torch.sigmoid(reference["emotions_2"]).numpy()
    assert _max_abs(probabilities, expected) < 0.02
    assert all(p.dtype == torch.float32 for p in benet_model.parameters())  # the caller's model is untouched


def test_export_rejects_bad_options(benet_model, tmp_path):
    with pytest.raises(ValueError, match="opset"):
        export_onnx(benet_model, tmp_path / "a.onnx", opset=13)
    with pytest.raises(ValueError, match="multiples of 32"):
        export_onnx(benet_model, tmp_path / "b.onnx", input_size=(100, 64))
    with pytest.raises(ValueError, match="BENet only"):
        export_onnx(tiny_cahfw(), tmp_path / "c.onnx", with_decode=True)
    with pytest.raises(ValueError, match="int8 is a quantisation step"):
        export_onnx(benet_model, tmp_path / "d.onnx", precision="int8")


# --------------------------------------------------------------------------- INT8


def test_int8_quantisation_keeps_decoding_float_and_outputs_close(tmp_path):
    from emotion_perception.export.grid_scenes import scene_inputs
    from emotion_perception.export.quantize import quantize_int8

    model = peaky_benet()
    fp32 = export_onnx(model, tmp_path / "fp32.onnx", with_decode=True, decode_config=DecodeConfig(top_k=5))
    int8_path, card = quantize_int8(fp32.onnx_path, tmp_path / "int8.onnx", calibration_count=4)
    assert card.precision == "int8" and read_onnx_card(int8_path).precision == "int8"
    graph = onnx.load(str(int8_path)).graph
    producers = {out: node for node in graph.node for out in node.output}
    assert sum(node.op_type == "QuantizeLinear" for node in graph.node) > 10
    # Decoding consumes float maps: no DequantizeLinear feeds the top-k or the box arithmetic.
    for node in graph.node:
        if node.op_type == "TopK":
            assert producers[node.input[0]].op_type != "DequantizeLinear"
    feed = scene_inputs(card, 1, seed=5)[0]
    reference = run_onnx_cpu(fp32.onnx_path, ["image", "letterbox"], [feed["image"], feed["letterbox"]])
    quantised = run_onnx_cpu(int8_path, ["image", "letterbox"], [feed["image"], feed["letterbox"]])
    np.testing.assert_allclose(np.sort(quantised["scores"]), np.sort(reference["scores"]), atol=0.05)


def test_int8_needs_an_fp32_model(benet_model, tmp_path):
    from emotion_perception.export.quantize import quantize_int8

    half = export_onnx(benet_model, tmp_path / "half.onnx", precision="fp16", simplify_graph=False)
    with pytest.raises(ValueError, match="needs an fp32 export"):
        quantize_int8(half.onnx_path, tmp_path / "int8.onnx", calibration_count=1)


# --------------------------------------------------------------------------- engine cache


def _key(**changes) -> EngineKey:
    values = {"onnx_sha256": "ab" * 32, "tensorrt_version": "10.3.0", "gpu_name": "NVIDIA H100 80GB HBM3",
                  "compute_capability": "9.0", "precision": "fp16",
                  "profile": {"image": {"min": [1, 3, 64, 64], "opt": [1, 3, 512, 512], "max": [2, 3, 512, 512]}}}
    values.update(changes)
    return EngineKey(**values)


def test_engine_file_name_records_version_gpu_and_precision(tmp_path):
    name = engine_file_name("benet_paper", "10.3.0", "NVIDIA H100 80GB HBM3", "fp16")
    assert name == "benet_paper.trt10.3.0.NVIDIA-H100-80GB-HBM3.fp16.engine"
    assert parse_engine_file_name(name) == {"stem": "benet_paper", "tensorrt_version": "10.3.0",
                                            "gpu_name": "NVIDIA-H100-80GB-HBM3", "precision": "fp16"}
    assert parse_engine_file_name("model.onnx") is None
    assert slug("Orin (nvgpu)/x") == "Orin-nvgpu-x"
    # Different machines or precisions never share a file.
    paths = {engine_path(tmp_path, "m", _key()), engine_path(tmp_path, "m", _key(tensorrt_version="10.4.0")),
             engine_path(tmp_path, "m", _key(gpu_name="Orin")), engine_path(tmp_path, "m", _key(precision="fp32")),
             engine_path(tmp_path, "m", _key(tf32=False))}
    assert len(paths) == 5


def test_matching_engine_is_loaded_and_stale_ones_rebuilt(tmp_path):
    wanted = _key()
    recorded = wanted.to_dict()
    assert decide(tmp_path / "e.engine", True, recorded, wanted).action == "load"
    assert decide(tmp_path / "e.engine", False, recorded, wanted).action == "build"
    assert decide(tmp_path / "e.engine", True, None, wanted).reasons == ("no build record beside the engine",)
    for field, value, reason in [
        ("onnx_sha256", "cd" * 32, "ONNX graph changed"),
        ("tensorrt_version", "8.6.1", "tensorrt_version"),
        ("gpu_name", "NVIDIA GeForce RTX 3060", "gpu_name"),
        ("compute_capability", "8.6", "compute_capability"),
        ("precision", "fp32", "precision"),
        ("tf32", False, "tf32"),
    ]:
        decision = decide(tmp_path / "e.engine", True, {**recorded, field: value}, wanted)
        assert decision.action == "build" and any(reason in r for r in decision.reasons), field


def test_records_older_than_the_tf32_field_count_as_tf32_engines(tmp_path):
    recorded = _key().to_dict()
    del recorded["tf32"]
    assert decide(tmp_path / "e.engine", True, recorded, _key()).action == "load"
    strict = decide(tmp_path / "e.engine", True, recorded, _key(tf32=False))
    assert strict.action == "build" and strict.reasons == ("tf32 True != wanted False",)


def test_engine_profile_must_cover_the_wanted_shapes():
    wanted = _key()
    larger = {"image": {"min": [1, 3, 32, 32], "opt": [1, 3, 512, 512], "max": [4, 3, 1024, 1024]}}
    assert stale_reasons({**wanted.to_dict(), "profile": larger}, wanted) == []
    smaller = {"image": {"min": [1, 3, 64, 64], "opt": [1, 3, 256, 256], "max": [1, 3, 256, 256]}}
    assert "does not cover" in stale_reasons({**wanted.to_dict(), "profile": smaller}, wanted)[0]
    assert "no profile" in stale_reasons({**wanted.to_dict(), "profile": {}}, wanted)[0]


def test_default_profiles_are_valid_and_bounded():
    benet = default_profile(("image", "letterbox"), (512, 384), dynamic_size=True, stride=32, max_batch=2)
    validate_profile(benet)
    assert benet["image"] == {"min": [1, 3, 64, 64], "opt": [1, 3, 512, 384], "max": [2, 3, 512, 512]}
    assert benet["letterbox"]["max"] == [2, 3]
    cahfw = default_profile(("face", "context"), (224, 224), dynamic_size=False, stride=224, max_batch=16)
    validate_profile(cahfw)
    assert cahfw["face"]["max"] == [16, 3, 224, 224]
    with pytest.raises(ValueError, match="min <= opt <= max"):
        validate_profile({"image": {"min": [1, 3, 64, 64], "opt": [1, 3, 32, 32], "max": [1, 3, 64, 64]}})


# --------------------------------------------------------------------------- TensorRT and the CLI


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_missing_tensorrt_gives_one_clear_error(tmp_path, capsys):
    from emotion_perception.export.tensorrt_build import TensorRTUnavailableError, import_tensorrt

    with pytest.raises(TensorRTUnavailableError, match="TensorRT is not installed"):
        import_tensorrt()
    checkpoint = save_checkpoint(peaky_benet(), tmp_path / "benet.pt", "benet")
    code = cli_main(["export", "--model", str(checkpoint), "--format", "tensorrt", "--out", str(tmp_path / "b.engine")])
    assert code == 2
    assert "TensorRT is not installed" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.engine"))


@pytest.mark.skipif(not (HAS_TENSORRT and torch.cuda.is_available()), reason="needs tensorrt and a CUDA GPU")
def test_tensorrt_engine_matches_onnxruntime(maps_export, tmp_path):
    from emotion_perception.export.tensorrt_build import ensure_engine, read_engine_record
    from emotion_perception.runtime.tensorrt_backend import TensorRTBackend

    # TF32 off: TensorRT's default TF32 rounds conv inputs to 10 mantissa bits, up to 7e-3 off an
    # fp32 reference on this model; the parity check is of the graph, not of TF32.
    engine = ensure_engine(maps_export.onnx_path, tmp_path, "fp32", max_batch=2, allow_tf32=False)
    assert ensure_engine(maps_export.onnx_path, tmp_path, "fp32", max_batch=2, allow_tf32=False) == engine  # cache hit
    card, _key = read_engine_record(engine)
    backend = TensorRTBackend(engine, card, "cuda:0")
    image = np.random.default_rng(0).standard_normal((2, 3, 64, 96)).astype(np.float32)
    reference = run_onnx_cpu(maps_export.onnx_path, ["image"], [image])
    outputs = backend.infer({"image": torch.from_numpy(image).cuda()})
    for name, value in reference.items():
        assert _max_abs(outputs[name].cpu().numpy(), value) < 1e-3, name


def test_export_cli_writes_onnx_and_card_and_passes_parity(tmp_path, capsys):
    checkpoint = save_checkpoint(peaky_benet(), tmp_path / "benet.pt", "benet")
    out = tmp_path / "out" / "benet.onnx"
    code = cli_main(["export", "--model", str(checkpoint), "--out", str(out), "--with-decode", "--max-people", "8",
                     "--input-size", "64", "96"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "parity: ONNX Runtime (CPU) vs PyTorch fp32" in printed and "EXCEEDS" not in printed
    card = json.loads(Path(f"{out}.json").read_text())
    assert card["with_decode"] and card["decode"]["top_k"] == 8 and card["input_size"] == [64, 96]
    assert card["source"]["checkpoint_sha256"] and read_onnx_card(out).model_name == "benet"


def test_export_cli_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["export", "--model", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "none.pt: checkpoint file not found" in capsys.readouterr().err
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    assert cli_main(["export", "--model", str(tmp_path / "corrupt.pt"), "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "corrupt.pt" in err and "not a readable torch checkpoint" in err and "Traceback" not in err


@pytest.mark.parametrize("target, says", [("file/benet.onnx", "cannot create its folder"),
                                           ("folder", "is a folder")])
def test_export_cli_unwritable_outputs_are_one_line(tmp_path, capsys, target, says):
    checkpoint = save_checkpoint(peaky_benet(), tmp_path / "benet.pt", "benet")
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    assert cli_main(["export", "--model", str(checkpoint), "--out", str(tmp_path / target), "--no-parity"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err
