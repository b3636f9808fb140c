"""``train benet --init``: BENet's backbone from HigherHRNet / HRNet ImageNet / timm checkpoints.

No public checkpoint can be downloaded here, so the fakes are built from our own backbone's keys
through an inverse renaming written independently of train/init_weights.py, with random
tensors, plus head keys of each layout that must end up unused.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import re
from pathlib import Path

import pytest
import torch

from emotion_perception.errors import FieldError
from emotion_perception.nets.factory import create_model
from emotion_perception.train import init_weights as IW

torch.set_num_threads(1)

# ours -> HRNet (official / HigherHRNet / timm share these names)
_INVERSE = (
    (re.compile(r"^stem\.([01])\.0\."), lambda m: f"conv{int(m[1]) + 1}."),
    (re.compile(r"^stem\.([01])\.1\."), lambda m: f"bn{int(m[1]) + 1}."),
    (re.compile(r"^layer1\.(\d+)\.shortcut\."), lambda m: f"layer1.{m[1]}.downsample."),
    (re.compile(r"^transitions\.(\d+)\."), lambda m: f"transition{int(m[1]) + 1}."),
    (re.compile(r"^stages\.(\d+)\.(\d+)\.branches\."), lambda m: f"stage{int(m[1]) + 2}.{m[2]}.branches."),
    (re.compile(r"^stages\.(\d+)\.(\d+)\.fuse\."), lambda m: f"stage{int(m[1]) + 2}.{m[2]}.fuse_layers."),
)

HEAD_KEYS = {
    "higherhrnet": {"final_layers.0.weight": (34, 32, 1, 1), "final_layers.0.bias": (34,),
                    "final_layers.1.weight": (17, 32, 1, 1),
                    "deconv_layers.0.0.0.weight": (66, 32, 4, 4), "deconv_layers.0.0.1.weight": (32,),
                    "deconv_layers.0.1.0.0.conv1.weight": (32, 32, 3, 3)},
    "hrnet-cls": {"incre_modules.0.0.conv1.weight": (32, 32, 1, 1),
                  "incre_modules.0.0.downsample.0.weight": (128, 32, 1, 1),
                  "downsamp_modules.0.0.weight": (256, 128, 3, 3), "downsamp_modules.0.0.bias": (256,),
                  "final_layer.0.weight": (2048, 1024, 1, 1), "final_layer.1.running_mean": (2048,),
                  "classifier.weight": (1000, 2048), "classifier.bias": (1000,)},
    "timm-features": {"incre_modules.0.0.conv1.weight": (32, 32, 1, 1),
                      "incre_modules.3.0.conv3.weight": (1024, 256, 1, 1)},
}
LAYOUTS = tuple(HEAD_KEYS)

# Keys checked value for value after loading (ours): stem, layer1 shortcut, transitions (a new
# branch), an upsampling fuse, a two-step downsampling fuse, a branch block, a BN buffer.
PROBES = (
    "backbone.stem.0.0.weight",
    "backbone.stem.1.1.running_var",
    "backbone.layer1.0.shortcut.0.weight",
    "backbone.transitions.0.0.0.weight",
    "backbone.transitions.2.3.0.1.bias",
    "backbone.stages.1.0.fuse.0.2.0.weight",
    "backbone.stages.2.0.fuse.3.1.1.0.weight",
    "backbone.stages.1.1.branches.2.2.conv2.weight",
    "backbone.stages.2.1.branches.3.0.bn1.running_mean",
)


def to_hrnet(key: str) -> str:
    name = key[len("backbone."):]
    for pattern, rename in _INVERSE:
        if pattern.match(name):
            return pattern.sub(rename, name, count=1)
    return name  # layer1 blocks keep their names


def _random_like(value: torch.Tensor, generator: torch.Generator, key: str = "") -> torch.Tensor:
    if not value.is_floating_point():
        return torch.full_like(value, 7)  # num_batches_tracked
    if key.endswith("running_var"):
        return 0.5 + torch.rand(value.shape, generator=generator)  # a variance: positive
    return 0.1 * torch.randn(value.shape, generator=generator)


def fake_checkpoint(model: torch.nn.Module, layout: str, seed: int = 0, w32: bool = False) -> dict[str, torch.Tensor]:
    """A state dict in ``layout`` holding our backbone's trunk (no attention) and head keys.

    ``w32``: shape it like the real HRNet-W32 checkpoints instead: one module in stage 2,
    four modules in stage 3, three in stage 4 (HigherHRNet's last one fuses into branch 0 only),
    four BasicBlocks per branch. Needs our 'paper' preset (2 modules per stage, 3 blocks).
    """
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.backbone.state_dict().items():
        if ".attention." in key:
            continue
        state[to_hrnet("backbone." + key)] = _random_like(value, generator, key)
    if w32:
        state = {k: v for k, v in state.items() if not k.startswith("stage2.1.")}
        extra = {}
        for key, value in state.items():
            block = re.match(r"^(stage\d\.\d+\.branches\.\d+\.)0\.(.+)$", key)
            if block:
                extra[f"{block[1]}3.{block[2]}"] = _random_like(value, generator, key)
        state.update(extra)
        extra = {}
        for key, value in state.items():
            for stage, source, copies in (("stage3", "0", ("2", "3")), ("stage4", "0", ("2",))):
                if key.startswith(f"{stage}.{source}."):
                    for module in copies:
                        new = f"{stage}.{module}." + key[len(f"{stage}.{source}."):]
                        last_hh = layout == "higherhrnet" and new.startswith("stage4.2.fuse_layers.") \
                            and not new.startswith("stage4.2.fuse_layers.0.")
                        if not last_hh:
                            extra[new] = _random_like(value, generator, key)
        state.update(extra)
    for key, shape in HEAD_KEYS[layout].items():
        state[key] = torch.randn(shape, generator=generator)
    return state


def _counted(model: torch.nn.Module) -> list[str]:
    return ["backbone." + k for k in model.backbone.state_dict()
            if ".attention." not in k and not k.endswith("num_batches_tracked")]


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def paper_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("benet", "paper")


@pytest.fixture()
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("benet", "tiny")


def test_mapping_covers_every_trunk_key_of_the_paper_preset(paper_model) -> None:
    keys = list(paper_model.state_dict())
    trunk = [k for k in keys if k.startswith("backbone.") and ".attention." not in k]
    for key in trunk:
        assert IW.hrnet_key_to_benet(to_hrnet(key)) == key, key
    # The fact sheet's examples land where expected.
    assert IW.hrnet_key_to_benet("conv1.weight") == "backbone.stem.0.0.weight"
    assert IW.hrnet_key_to_benet("bn2.running_mean") == "backbone.stem.1.1.running_mean"
    assert IW.hrnet_key_to_benet("layer1.0.downsample.1.bias") == "backbone.layer1.0.shortcut.1.bias"
    assert IW.hrnet_key_to_benet("transition1.1.0.0.weight") == "backbone.transitions.0.1.0.0.weight"
    assert IW.hrnet_key_to_benet("transition3.3.0.1.weight") == "backbone.transitions.2.3.0.1.weight"
    assert IW.hrnet_key_to_benet("stage4.1.fuse_layers.3.0.2.0.weight") == "backbone.stages.2.1.fuse.3.0.2.0.weight"
    assert IW.hrnet_key_to_benet("stage3.0.branches.2.1.bn2.weight") == "backbone.stages.1.0.branches.2.1.bn2.weight"
    for head in ("final_layers.0.weight", "deconv_layers.0.0.0.weight", "classifier.weight",
                 "incre_modules.0.0.conv1.weight", "final_layer.0.weight", "downsamp_modules.0.0.weight"):
        assert IW.hrnet_key_to_benet(head) is None
    # Ours only: attention modules (no checkpoint has them), excluded from the denominator.
    assert any(".attention." in k for k in keys)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_w32_checkpoints_fill_the_paper_backbone(paper_model, layout: str, tmp_path: Path, caplog) -> None:
    model = copy.deepcopy(paper_model)
    before = _state(model)
    fake = fake_checkpoint(model, layout, seed=1, w32=True)
    path = _save(fake, tmp_path / f"{layout}.pth")
    # An explicit logger with our own handler: other tests configure the package's loggers
    # (training runs turn propagation off), which caplog would then not see.
    import logging

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger(f"test_init_weights.{layout}")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        report = IW.load_backbone_init(model, path, logger=logger)
    finally:
        logger.removeHandler(handler)

    counted = _counted(model)
    stage2_second = [k for k in counted if k.startswith("backbone.stages.0.1.")]
    assert report.layout == layout
    assert report.total == len(counted)
    assert report.share >= 0.9
    # HRNet-W32 has one module in stage 2, the paper preset two: exactly that module stays as built.
    assert report.missing == len(stage2_second) and set(report.missing_keys) == set(stage2_second)
    assert report.matched == len(counted) - len(stage2_second)
    assert report.shape_mismatch == ()
    assert set(HEAD_KEYS[layout]) <= set(report.unexpected_keys)
    assert not any(k.startswith("stage2.1.") for k in report.unexpected_keys)
    extra_blocks = [k for k in report.unexpected_keys
                    if k not in HEAD_KEYS[layout] and not k.endswith("num_batches_tracked")]
    assert extra_blocks and all(re.match(r"^stage\d\.\d+\.branches\.\d+\.3\.", k) or
                                re.match(r"^stage(3\.[23]|4\.2)\.", k) for k in extra_blocks)
    assert report.unexpected == len(report.unexpected_keys)
    assert report.ours_only == sum(1 for k in model.backbone.state_dict() if ".attention." in k) > 0

    after = model.state_dict()
    for key in PROBES:
        torch.testing.assert_close(after[key], fake[to_hrnet(key)], rtol=0, atol=0, msg=key)
    for key, value in before.items():
        if not key.startswith("backbone.") or ".attention." in key or key.startswith("backbone.stages.0.1."):
            assert torch.equal(after[key], value), f"{key} changed"  # heads, attention, stage 2 module 1
    line = next(message for message in lines if message.startswith("init from"))
    assert line.startswith(f"init from {path} (layout {layout}): matched {report.matched} of {report.total} "
                           f"backbone tensors ({100 * report.share:.1f}%), missing {report.missing}, "
                           f"unexpected {report.unexpected}")
    print(report.summary())


def test_module_prefix_wrappers_and_own_checkpoints(tiny_model, tmp_path: Path) -> None:
    fake = fake_checkpoint(tiny_model, "higherhrnet", seed=2)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in fake.items()}, "epoch": 140}
    report = IW.load_backbone_init(tiny_model, _save(wrapped, tmp_path / "wrapped.pth"))
    assert (report.layout, report.matched, report.missing) == ("higherhrnet", report.total, 0)
    assert report.unexpected == len(HEAD_KEYS["higherhrnet"])
    torch.testing.assert_close(tiny_model.state_dict()["backbone.stem.0.0.weight"], fake["conv1.weight"],
                               rtol=0, atol=0)
    # A loaded dict under "model" works as well as a file.
    report = IW.load_backbone_init(tiny_model, {"model": fake_checkpoint(tiny_model, "hrnet-cls", seed=3)})
    assert (report.layout, report.source, report.missing) == ("hrnet-cls", "<state dict>", 0)

    # One of our own checkpoints (keys "backbone.*" under "model"): attention comes along.
    torch.manual_seed(5)
    other = create_model("benet", "tiny")
    report = IW.load_backbone_init(tiny_model, _save({"model": other.state_dict(), "model_name": "benet"},
                                                     tmp_path / "own.pt"))
    assert report.layout == "benet" and report.missing == 0 and report.ours_only_matched == report.ours_only
    assert report.unexpected > 0  # its heads
    for key, value in other.state_dict().items():
        if key.startswith("backbone."):
            assert torch.equal(tiny_model.state_dict()[key], value), key


def test_too_few_matches_are_refused_and_nothing_is_copied(tiny_model, tmp_path: Path) -> None:
    fake = fake_checkpoint(tiny_model, "higherhrnet", seed=4)
    trunk = [to_hrnet(k) for k in _counted(tiny_model)]
    for key in trunk[::5]:  # every 5th: 20 % of the counted tensors
        del fake[key]
    path = _save(fake, tmp_path / "partial.pth")
    before = _state(tiny_model)
    with pytest.raises(IW.InitMatchError) as raised:
        IW.load_backbone_init(tiny_model, path)
    message = str(raised.value)
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, FieldError)
    assert str(path) in message and "layout higherhrnet" in message and "90% needed" in message
    assert re.search(r"only \d+ of \d+ BENet backbone tensors matched \((7\d|80)\.\d%\)", message), message
    assert all(torch.equal(v, before[k]) for k, v in tiny_model.state_dict().items())
    # A lower bar accepts the same file.
    report = IW.load_backbone_init(tiny_model, path, min_match=0.75)
    assert report.missing == len(trunk[::5])


def test_shape_mismatch_is_reported_and_skipped(tiny_model, tmp_path: Path) -> None:
    fake = fake_checkpoint(tiny_model, "hrnet-cls", seed=6)
    fake["transition2.2.0.0.weight"] = torch.randn(3, 3, 3, 3)
    before = _state(tiny_model)
    report = IW.load_backbone_init(tiny_model, _save(fake, tmp_path / "odd.pth"))
    assert report.shape_mismatch == ("backbone.transitions.1.2.0.0.weight",)
    assert report.missing == 1 and report.matched == report.total - 1
    assert "shape mismatch 1" in report.summary()
    after = tiny_model.state_dict()
    assert torch.equal(after["backbone.transitions.1.2.0.0.weight"], before["backbone.transitions.1.2.0.0.weight"])
    assert torch.equal(after["backbone.stem.0.0.weight"], fake["conv1.weight"])


def test_wrong_network_width_is_refused(paper_model, tiny_model, tmp_path: Path) -> None:
    path = _save(fake_checkpoint(paper_model, "higherhrnet", w32=True), tmp_path / "w32.pth")
    with pytest.raises(IW.InitMatchError, match=r"layout higherhrnet: only 0 of \d+ .*\(0\.0%\).* shape mismatches"):
        IW.load_backbone_init(tiny_model, path)


def test_files_that_are_not_checkpoints(tiny_model, tmp_path: Path) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(FieldError, match=r"notes\.pth.*not a readable torch checkpoint"):
        IW.load_backbone_init(tiny_model, text)
    with pytest.raises(FieldError, match=r"expected a dict"):
        IW.load_backbone_init(tiny_model, _save([1, 2], tmp_path / "list.pth"))
    with pytest.raises(FieldError, match=r"no tensors found"):
        IW.load_backbone_init(tiny_model, _save({"epoch": 3, "model": {"lr": 0.1}}, tmp_path / "meta.pth"))
    with pytest.raises(IW.InitMatchError, match=r"layout unknown"):
        IW.load_backbone_init(tiny_model, _save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "fc.pth"))
    with pytest.raises(FileNotFoundError):
        IW.load_backbone_init(tiny_model, tmp_path / "absent.pth")


def test_report_is_frozen(tiny_model) -> None:
    report = IW.load_backbone_init(tiny_model, fake_checkpoint(tiny_model, "timm-features"))
    assert report.layout == "timm-features"
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.matched = 0  # type: ignore[misc]


def test_cli_option_reaches_the_recipe_and_cahfw_refuses(tmp_path: Path, capsys) -> None:
    from emotion_perception.train import benet as TB
    from emotion_perception.train import cli
    from emotion_perception.train.recipes import load_recipe

    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    config = str(repo / "config" / "train_benet_paper_512_adam_lr1e-3.yaml")
    assert cli.recipe_with_overrides(parser.parse_args(["benet", "--config", config]))["init"] == ""
    values = cli.recipe_with_overrides(parser.parse_args(["benet", "--config", config, "--init", "w.pth"]))
    assert TB.parse_recipe(values, config).init == "w.pth"
    assert TB.parse_recipe(load_recipe(config), config).init == ""

    args = parser.parse_args(["cahfw", "--init", "w.pth"])
    assert cli.main(args) == 2
    assert "--init applies to BENet" in capsys.readouterr().err


def test_training_starts_from_the_checkpoint(tiny_model, tmp_path: Path) -> None:
    from emotion_perception.data.synth.scenes import EMOTIC_SYNTH_PRESETS
    from emotion_perception.data.synth.writers import write_emotic_dataset
    from emotion_perception.train import benet as TB
    from emotion_perception.train.recipes import load_recipe

    root = tmp_path / "emotic"
    scenes = dataclasses.replace(EMOTIC_SYNTH_PRESETS["emotic"], width=96, height=64)
    write_emotic_dataset(root, 6, seed=3, config=scenes, workers=1, progress=False)
    init = _save(fake_checkpoint(tiny_model, "higherhrnet", seed=8), tmp_path / "pose.pth")
    repo = Path(__file__).resolve().parents[1]
    values = {**load_recipe(repo / "config" / "train_benet_paper_512_adam_lr1e-3.yaml"), "preset": "tiny",
              "data_root": str(root), "batch_size": 2, "workers": 0, "max_train_images": 2, "max_val_images": 2,
              "epochs": 1, "augmentation": "modes_only", "max_steps": 1, "init": str(init), "amp": False}
    run_dir = tmp_path / "run"
    TB.main(TB.parse_recipe(values, "test"), TB.RunOptions(run_dir=run_dir, device="cpu"))
    log = (run_dir / "train.log").read_text()
    assert f"init from {init} (layout higherhrnet): matched" in log
    saved = torch.load(run_dir / "final.pt", weights_only=True)
    assert saved["train_config"]["init"] == str(init)
