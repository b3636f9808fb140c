"""Training infrastructure: recipes, seeding, devices, checkpoints and resume, loaders, logging, DDP helpers."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import random
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from emotion_perception.devices import select_device
from emotion_perception.nets.factory import CheckpointError, write_checkpoint
from emotion_perception.serialization import jsonable
from emotion_perception.train.checkpoints import load_checkpoint, restore_training_state, save_checkpoint
from emotion_perception.train.data_loading import build_loader, set_loader_epoch
from emotion_perception.train.distributed import (
    Deadline,
    DistributedContext,
    cleanup_distributed,
    init_distributed,
    reduce_mean,
)
from emotion_perception.train.loop import NonFiniteLossError, check_finite, seed_everything, seed_step
from emotion_perception.train.precision import autocast_for, grad_scaler_for
from emotion_perception.train.recipes import ConfigError, dataclass_from_mapping, load_recipe
from emotion_perception.train.run_log import MetricLogger, ScalarWriter, close_run_logger, setup_run_logger


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
    values = load_recipe(tmp_path / "ablation.yaml")
    assert values == {"epochs": 10, "lr": "1e-3", "heads": "bu", "data": "d"}
    recipe = dataclass_from_mapping(_Recipe, values, tmp_path / "ablation.yaml")
    # YAML reads 1e-3 as a string and "bu" as a scalar: both are coerced to the field's type.
    assert recipe == _Recipe(epochs=10, lr=1e-3, heads=("bu",), data="d")

    (tmp_path / "typo.yaml").write_text("base: main.yaml\nepoch: 3\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: field 'epoch': unknown field"):
        dataclass_from_mapping(_Recipe, load_recipe(tmp_path / "typo.yaml"), tmp_path / "typo.yaml")
    with pytest.raises(ConfigError, match=r"field 'epochs'"):
        dataclass_from_mapping(_Recipe, {"epochs": 2.5}, "x.yaml")
    with pytest.raises(ConfigError, match=r"field 'amp'"):
        dataclass_from_mapping(_Recipe, {"amp": "yes"}, "x.yaml")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_recipe(tmp_path / "loop.yaml")


def test_seeding_reproduces_random_streams() -> None:
    def draws() -> tuple[torch.Tensor, np.ndarray, float]:
        # The legacy global numpy stream is what seed_everything must seed (third-party code draws from it).
        return torch.rand(3), np.random.rand(3), random.random()  # noqa: NPY002

    seed_everything(5)
    first = draws()
    seed_everything(5)
    second = draws()
    torch.testing.assert_close(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[2] == second[2]
    # Step seeds: a function of (seed, rank, step), distinct for each of them.
    streams = {}
    for key in [(5, 0, 0), (5, 0, 1), (5, 1, 0), (6, 0, 0)]:
        seed_step(*key)
        streams[key] = torch.rand(3)
    assert len({tuple(v.tolist()) for v in streams.values()}) == 4
    seed_step(5, 1, 0)
    assert torch.equal(torch.rand(3), streams[(5, 1, 0)])


def test_device_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert select_device("cpu") == torch.device("cpu")
    for bad in ("tpu", "CPU", "", "cuda:", "cuda:x", "cuda:-1", "cuda 0"):
        with pytest.raises(ValueError, match=r"auto, cpu, cuda or cuda:N"):
            select_device(bad)
    # A machine without CUDA (forced, so the test means the same on a GPU host).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    for wanted in ("cuda", "cuda:1"):
        with pytest.raises(RuntimeError, match=f"'{wanted}' requested but CUDA is not available"):
            select_device(wanted)
    # Two GPUs: auto and cuda take torchrun's local rank (wrapping), cuda:N that GPU, if it exists.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert select_device("auto") == torch.device("cuda", 0)
    assert select_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert select_device("cuda", local_rank=3) == torch.device("cuda", 1)
    assert select_device("cuda:1", local_rank=0) == torch.device("cuda", 1)
    with pytest.raises(RuntimeError, match=r"'cuda:2' requested but only 2 CUDA device"):
        select_device("cuda:2")
    monkeypatch.undo()
    ctx = init_distributed("cpu") if "RANK" not in os.environ else None
    if ctx is not None:
        assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed, ctx.device) == (0, 1, True, False,
                                                                                          torch.device("cpu"))


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
    scaler = grad_scaler_for(torch.device("cpu"))
    path = save_checkpoint(
        tmp_path / "ck.pt", model=model, model_name="toy", model_config={"width": 8}, optimizer=optimizer,
        scheduler=scheduler, scaler=scaler, epoch=3, step=7, epoch_progress={"steps": 1, "meters": {"loss": [2.0, 5]}},
        metrics={"val_loss": 0.5, "ap": np.float32(0.25)}, train_config=_Recipe(),
    )
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary file left beside it
    reference = _steps(model, optimizer, scheduler, data, 3)

    checkpoint = load_checkpoint(path)
    assert checkpoint["epoch"] == 3 and checkpoint["step"] == 7 and checkpoint["model_name"] == "toy"
    assert checkpoint["epoch_progress"] == {"steps": 1, "meters": {"loss": [2.0, 5]}}
    assert checkpoint["metrics"] == {"val_loss": 0.5, "ap": 0.25}
    assert checkpoint["train_config"]["heads"] == ["bu", "det"]
    resumed, resumed_optimizer, resumed_scheduler = fresh()
    epoch = restore_training_state(checkpoint, resumed, resumed_optimizer, resumed_scheduler, scaler, source=path)
    assert epoch == 3
    assert _steps(resumed, resumed_optimizer, resumed_scheduler, data, 3) == pytest.approx(reference, rel=0, abs=0)


def test_checkpoint_writes_are_atomic(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "runs" / "last.pt", {"model": {"w": torch.ones(2)}, "epoch": 1})
    assert torch.load(path, weights_only=True)["epoch"] == 1
    # A write that fails half-way (here: an unpicklable value) leaves the previous file whole.
    # A local lambda does not pickle: AttributeError up to Python 3.13, PicklingError from 3.14.
    with pytest.raises((AttributeError, pickle.PicklingError)):
        write_checkpoint(path, {"model": {"w": torch.zeros(2)}, "epoch": 2, "bad": lambda: None})
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"partial.pt: field 'model_name': missing"):
        load_checkpoint(tmp_path / "partial.pt")
    model = _tiny_model()
    save_checkpoint(tmp_path / "noopt.pt", model=model, model_name="toy", model_config={})
    optimizer = torch.optim.Adam(model.parameters())
    with pytest.raises(ConfigError, match="optimizer"):
        restore_training_state(load_checkpoint(tmp_path / "noopt.pt"), model, optimizer, source="noopt.pt")


def test_non_finite_loss_aborts() -> None:
    check_finite({"total": torch.tensor(1.0), "heatmap": 0.5}, step=1)
    with pytest.raises(NonFiniteLossError, match="'heatmap' is nan at step 7"):
        check_finite({"total": torch.tensor(1.0), "heatmap": torch.tensor(float("nan"))}, step=7)
    with pytest.raises(NonFiniteLossError, match="inf"):
        check_finite({"total": float("inf")}, step=0)


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
    ctx = DistributedContext(0, 0, 1, torch.device("cpu"))

    def order(epoch: int, seed: int = 4) -> tuple[list[int], int]:
        dataset = _EpochAware()
        loader = build_loader(dataset, 5, ctx=ctx, shuffle=True, collate_fn=list, seed=seed)
        set_loader_epoch(loader, epoch)
        return [i for batch in loader for i in batch], dataset.epoch

    first, told = order(0)
    assert sorted(first) == list(range(12)) and told == 0
    # A fresh loader (a resumed run) replays an epoch exactly; another epoch or seed reshuffles.
    assert order(0)[0] == first
    assert order(1)[0] != first and order(1)[1] == 1
    assert order(0, seed=5)[0] != first


def test_loader_resumes_inside_an_epoch() -> None:
    ctx = DistributedContext(0, 0, 1, torch.device("cpu"))
    loader = build_loader(_EpochAware(), 3, ctx=ctx, shuffle=True, collate_fn=list, seed=4, drop_last=True)
    set_loader_epoch(loader, 2)
    whole = list(loader)
    assert len(whole) == len(loader) == 4
    # Another loader, two batches already trained: the remaining batches of the same order.
    fresh = build_loader(_EpochAware(), 3, ctx=ctx, shuffle=True, collate_fn=list, seed=4, drop_last=True)
    set_loader_epoch(fresh, 2, skip_batches=2)
    assert list(fresh) == whole[2:] and len(fresh) == 2
    set_loader_epoch(fresh, 3)  # the next epoch is whole again
    assert len(list(fresh)) == 4


def test_mixed_precision_disabled_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert not grad_scaler_for(cpu).is_enabled()
    with autocast_for(cpu):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.float32


def test_metric_logger_averages_and_progress(tmp_path: Path) -> None:
    ctx = DistributedContext(0, 0, 1, torch.device("cpu"))
    logger = MetricLogger("train", ctx, window=2)
    seen = []
    for value in logger.log_every([1.0, 2.0, 6.0]):
        seen.append(value)
        logger.update(weight=value, loss=value)  # weighted by the value itself
    assert seen == [1.0, 2.0, 6.0]
    assert logger.averages()["loss"] == pytest.approx((1 + 4 + 36) / 9)
    assert logger.meters["loss"].smoothed == pytest.approx(4.0)  # median of the last window (2, 6)
    # An epoch cut after two values and continued by a new logger: the means of all three.
    first = MetricLogger("train", ctx)
    for value in (1.0, 2.0):
        first.update(weight=value, loss=value)
    continued = MetricLogger("train", ctx, start=first.totals())
    continued.update(weight=6.0, loss=6.0)
    assert continued.averages()["loss"] == pytest.approx((1 + 4 + 36) / 9)


def test_run_logger_scalars_and_json(tmp_path: Path) -> None:
    ctx = DistributedContext(0, 0, 1, torch.device("cpu"))
    logger = setup_run_logger(tmp_path, ctx)
    logger.info("epoch 1 done")
    close_run_logger(logger)
    assert "epoch 1 done" in (tmp_path / "train.log").read_text()

    writer = ScalarWriter(tmp_path, ctx)
    writer.add_scalars("train", {"loss": 2.0}, step=0)
    writer.add_scalars("train", {"loss": 1.0}, step=1)
    writer.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(0, 2.0), (1, 1.0)]

    silent = ScalarWriter(tmp_path / "rank1", DistributedContext(1, 1, 2, torch.device("cpu")))
    silent.add_scalars("train", {"loss": 1.0}, 0)
    silent.close()
    assert not (tmp_path / "rank1").exists()

    text = json.dumps(jsonable({"a": float("nan"), "b": np.float32(0.5), "c": (1, np.int64(2))}), allow_nan=False)
    assert json.loads(text) == {"a": None, "b": 0.5, "c": [1, 2]}


def test_deadline() -> None:
    ctx = DistributedContext(0, 0, 1, torch.device("cpu"))
    assert not Deadline(None).passed(ctx)
    assert not Deadline(10).passed(ctx)
    assert Deadline(1e-9).passed(ctx)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _continued_mean(meter: MetricLogger, ctx: DistributedContext) -> float:
    # An epoch resumed after these values: one more value of 100 on each rank.
    continued = MetricLogger("x", ctx, start=meter.totals())
    continued.update(v=100.0)
    return continued.averages()["v"]


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    dataset = torch.utils.data.TensorDataset(torch.arange(10, dtype=torch.float32))
    loader = build_loader(dataset, 2, ctx=ctx, shuffle=True, collate_fn=None, seed=3)
    set_loader_epoch(loader, 0)
    seen = [float(v) for (batch,) in loader for v in batch]
    meter = MetricLogger("x", ctx)
    for value in seen:
        meter.update(v=value)
    result = {
        "rank": ctx.rank,
        "seen": seen,
        "mean": reduce_mean(sum(seen) / len(seen), ctx, weight=len(seen)),
        "averages": meter.averages(),
        "continued": _continued_mean(meter, ctx),
        "deadline": Deadline(1e-9 if rank == 1 else None).passed(ctx),
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    cleanup_distributed(ctx)


def test_two_process_gloo_helpers(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # DistributedSampler: disjoint shards covering the dataset.
    assert sorted(results[0]["seen"] + results[1]["seen"]) == [float(i) for i in range(10)]
    assert not set(results[0]["seen"]) & set(results[1]["seen"])
    for result in results:
        assert result["mean"] == pytest.approx(4.5)
        assert result["averages"]["v"] == pytest.approx(4.5)
        assert result["continued"] == pytest.approx((45 + 2 * 100) / 12)  # the saved sums count once
        assert result["deadline"] is True  # rank 1's deadline stops both ranks
    assert math.isfinite(results[0]["mean"])


def test_bad_input_errors_share_one_base() -> None:
    from emotion_perception.data.records import AnnotationError
    from emotion_perception.errors import FieldError

    for error_type in (AnnotationError, CheckpointError, ConfigError):
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
