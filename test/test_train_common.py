"""Training infrastructure: recipes, seeding, checkpoints and resume, logging, DDP helpers."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from emotion_perception.nets.factory import CheckpointError
from emotion_perception.train import common as C


@dataclasses.dataclass(frozen=True)
class _Recipe:
    epochs: int = 250
    lr: float = 1e-3
    heads: tuple[str, ...] = ("bu", "det")
    amp: bool = True
    data: str = ""


def test_recipe_base_chain_and_validation(tmp_path: Path) -> None:
    (tmp_path / "main.yaml").write_text("epochs: 250\nlr: 1e-3\nheads: [bu, det, pc]\ndata: d\n")
    (tmp_path / "ablation.yaml").write_text("base: main.yaml\nheads: bu\nepochs: 10\n")
    values = C.load_recipe(tmp_path / "ablation.yaml")
    assert values == {"epochs": 10, "lr": "1e-3", "heads": "bu", "data": "d"}
    recipe = C.dataclass_from_mapping(_Recipe, values, tmp_path / "ablation.yaml")
    # YAML reads 1e-3 as a string and "bu" as a scalar: both are coerced to the field's type.
    assert recipe == _Recipe(epochs=10, lr=1e-3, heads=("bu",), data="d")

    (tmp_path / "typo.yaml").write_text("base: main.yaml\nepoch: 3\n")
    with pytest.raises(C.ConfigError, match=r"typo.yaml: field 'epoch': unknown field"):
        C.dataclass_from_mapping(_Recipe, C.load_recipe(tmp_path / "typo.yaml"), tmp_path / "typo.yaml")
    with pytest.raises(C.ConfigError, match=r"field 'epochs'"):
        C.dataclass_from_mapping(_Recipe, {"epochs": 2.5}, "x.yaml")
    with pytest.raises(C.ConfigError, match=r"field 'amp'"):
        C.dataclass_from_mapping(_Recipe, {"amp": "yes"}, "x.yaml")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(C.ConfigError, match="circular"):
        C.load_recipe(tmp_path / "loop.yaml")


def test_seeding_reproduces_random_streams() -> None:
    C.seed_everything(5)
    first = (torch.rand(3), np.random.rand(3))
    C.seed_everything(5)
    second = (torch.rand(3), np.random.rand(3))
    torch.testing.assert_close(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    C.seed_everything(5, rank=1)
    assert not torch.equal(torch.rand(3), first[0])


def test_device_selection() -> None:
    assert C.select_device("cpu") == torch.device("cpu")
    assert C.select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device"):
        C.select_device("tpu")
    ctx = C.init_distributed("cpu") if "RANK" not in os.environ else None
    if ctx is not None:
        assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)


def _tiny_model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))


def _steps(model, optimizer, scheduler, data, n):
    losses = []
    for i in range(n):
        x, y = data[i % len(data)]
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def test_checkpoint_round_trip_and_resume_continue_identically(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = [(torch.randn(5, 4), torch.randn(5, 1)) for _ in range(4)]

    def fresh():
        torch.manual_seed(1)
        model = _tiny_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        return model, optimizer, scheduler

    model, optimizer, scheduler = fresh()
    _steps(model, optimizer, scheduler, data, 3)
    scaler = C.grad_scaler_for(torch.device("cpu"))
    path = C.save_checkpoint(
        tmp_path / "ck.pt", model=model, model_name="toy", model_config={"width": 8}, optimizer=optimizer,
        scheduler=scheduler, scaler=scaler, epoch=3, metrics={"val_loss": 0.5, "ap": np.float32(0.25)},
        train_config=_Recipe(),
    )
    assert not (tmp_path / "ck.pt.tmp").exists()
    reference = _steps(model, optimizer, scheduler, data, 3)

    checkpoint = C.load_checkpoint(path)
    assert checkpoint["epoch"] == 3 and checkpoint["model_name"] == "toy"
    assert checkpoint["metrics"] == {"val_loss": 0.5, "ap": 0.25}
    assert checkpoint["train_config"]["heads"] == ["bu", "det"]
    resumed, resumed_optimizer, resumed_scheduler = fresh()
    epoch = C.restore_training_state(checkpoint, resumed, resumed_optimizer, resumed_scheduler, scaler, source=path)
    assert epoch == 3
    assert _steps(resumed, resumed_optimizer, resumed_scheduler, data, 3) == pytest.approx(reference, rel=0, abs=0)


def test_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        C.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        C.load_checkpoint(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"partial.pt: field 'model_name': missing"):
        C.load_checkpoint(tmp_path / "partial.pt")
    model = _tiny_model()
    C.save_checkpoint(tmp_path / "noopt.pt", model=model, model_name="toy", model_config={})
    optimizer = torch.optim.Adam(model.parameters())
    with pytest.raises(C.ConfigError, match="optimizer"):
        C.restore_training_state(C.load_checkpoint(tmp_path / "noopt.pt"), model, optimizer, source="noopt.pt")


def test_non_finite_loss_aborts() -> None:
    C.check_finite({"total": torch.tensor(1.0), "heatmap": 0.5}, step=1)
    with pytest.raises(C.NonFiniteLossError, match="'heatmap' is nan at step 7"):
        C.check_finite({"total": torch.tensor(1.0), "heatmap": torch.tensor(float("nan"))}, step=7)
    with pytest.raises(C.NonFiniteLossError, match="inf"):
        C.check_finite({"total": float("inf")}, step=0)


class _EpochAware(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.epoch = -1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> int:
        return index


def test_loader_order_is_a_function_of_seed_and_epoch() -> None:
    ctx = C.DistributedContext(0, 0, 1, torch.device("cpu"))

    def order(epoch: int, seed: int = 4) -> tuple[list[int], int]:
        dataset = _EpochAware()
        loader = C.build_loader(dataset, 5, ctx=ctx, shuffle=True, collate_fn=list, seed=seed)
        C.set_loader_epoch(loader, epoch)
        return [i for batch in loader for i in batch], dataset.epoch

    first, told = order(0)
    assert sorted(first) == list(range(12)) and told == 0
    # A fresh loader (a resumed run) replays an epoch exactly; another epoch or seed reshuffles.
    assert order(0)[0] == first
    assert order(1)[0] != first and order(1)[1] == 1
    assert order(0, seed=5)[0] != first


def test_mixed_precision_disabled_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert not C.grad_scaler_for(cpu).is_enabled()
    with C.autocast_for(cpu):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.float32


def test_metric_logger_averages_and_progress(tmp_path: Path) -> None:
    ctx = C.DistributedContext(0, 0, 1, torch.device("cpu"))
    logger = C.MetricLogger("train", ctx, window=2)
    seen = []
    for value in logger.log_every([1.0, 2.0, 6.0]):
        seen.append(value)
        logger.update(weight=value, loss=value)  # weighted by the value itself
    assert seen == [1.0, 2.0, 6.0]
    assert logger.averages()["loss"] == pytest.approx((1 + 4 + 36) / 9)
    assert logger.meters["loss"].smoothed == pytest.approx(4.0)  # median of the last window (2, 6)


def test_run_logger_scalars_and_json(tmp_path: Path) -> None:
    ctx = C.DistributedContext(0, 0, 1, torch.device("cpu"))
    logger = C.setup_run_logger(tmp_path, ctx)
    logger.info("epoch 1 done")
    C.close_run_logger(logger)
    assert "epoch 1 done" in (tmp_path / "train.log").read_text()

    writer = C.ScalarWriter(tmp_path, ctx)
    writer.add_scalars("train", {"loss": 2.0}, step=0)
    writer.add_scalars("train", {"loss": 1.0}, step=1)
    writer.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(0, 2.0), (1, 1.0)]

    silent = C.ScalarWriter(tmp_path / "rank1", C.DistributedContext(1, 1, 2, torch.device("cpu")))
    silent.add_scalars("train", {"loss": 1.0}, 0)
    silent.close()
    assert not (tmp_path / "rank1").exists()

    text = json.dumps(C.jsonable({"a": float("nan"), "b": np.float32(0.5), "c": (1, np.int64(2))}), allow_nan=False)
    assert json.loads(text) == {"a": None, "b": 0.5, "c": [1, 2]}


def test_deadline() -> None:
    ctx = C.DistributedContext(0, 0, 1, torch.device("cpu"))
    assert not C.Deadline(None).passed(ctx)
    assert not C.Deadline(10).passed(ctx)
    assert C.Deadline(1e-9).passed(ctx)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    ctx = C.init_distributed("cpu")
    dataset = torch.utils.data.TensorDataset(torch.arange(10, dtype=torch.float32))
    loader = C.build_loader(dataset, 2, ctx=ctx, shuffle=True, collate_fn=None, seed=3)
    C.set_loader_epoch(loader, 0)
    seen = [float(v) for (batch,) in loader for v in batch]
    meter = C.MetricLogger("x", ctx)
    for value in seen:
        meter.update(v=value)
    result = {
        "rank": ctx.rank,
        "seen": seen,
        "mean": C.reduce_mean(sum(seen) / len(seen), ctx, weight=len(seen)),
        "averages": meter.averages(),
        "deadline": C.Deadline(1e-9 if rank == 1 else None).passed(ctx),
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    C.cleanup_distributed(ctx)


def test_two_process_gloo_helpers(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # DistributedSampler: disjoint shards covering the dataset.
    assert sorted(results[0]["seen"] + results[1]["seen"]) == [float(i) for i in range(10)]
    assert not set(results[0]["seen"]) & set(results[1]["seen"])
    for result in results:
        assert result["mean"] == pytest.approx(4.5)
        assert result["averages"]["v"] == pytest.approx(4.5)
        assert result["deadline"] is True  # rank 1's deadline stops both ranks
    assert math.isfinite(results[0]["mean"])


def test_bad_input_errors_share_one_base() -> None:
    from emotion_perception.data.records import AnnotationError
    from emotion_perception.errors import FieldError

    for error_type in (AnnotationError, CheckpointError, C.ConfigError):
        err = error_type("recipe.yaml", "lr", "must be > 0")
        assert isinstance(err, FieldError) and isinstance(err, ValueError)
        assert str(err) == "recipe.yaml: field 'lr': must be > 0"
        assert (err.file, err.field_name, err.problem) == ("recipe.yaml", "lr", "must be > 0")


def test_ship_keeps_weights_and_says_what_they_were_trained_on(tmp_path):
    import torch

    from emotion_perception.nets.factory import create_model, load_model_from_checkpoint, trained_on_of
    from emotion_perception.train.ship import ship_checkpoint

    model = create_model("benet", "tiny")
    source = tmp_path / "best.pt"
    torch.save({"model": model.state_dict(), "model_name": "benet",
                "config": __import__("dataclasses").asdict(model.config), "optimizer": {"state": {}}, "epoch": 3},
               source)
    shipped = ship_checkpoint(source, tmp_path / "demo.pt", trained_on="synthetic")
    saved = torch.load(tmp_path / "demo.pt", weights_only=True)
    assert "optimizer" not in saved and trained_on_of(saved) == "synthetic" and len(shipped["sha256"]) == 64
    loaded, _ = load_model_from_checkpoint(tmp_path / "demo.pt")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
