"""`emotion-perception ship`: the command behind the model cards' "shipped with" lines."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from emotion_perception.cli import main
from emotion_perception.nets.factory import create_model, label_thresholds_of, load_model_from_checkpoint, trained_on_of


def _training_checkpoint(path: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("benet", "tiny")
    torch.save({"model": model.state_dict(), "model_name": "benet", "config": dataclasses.asdict(model.config),
                "optimizer": {"state": {}, "param_groups": []}, "epoch": 3}, path)
    return model


def test_ship_writes_the_inference_part_with_its_provenance(tmp_path: Path, capsys) -> None:
    model = _training_checkpoint(tmp_path / "best.pt")
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(json.dumps({"label_thresholds": {"Peace": 0.25, "Anger": 0.5}}))
    out = tmp_path / "models" / "mine.pt"
    assert main(["ship", "--model", str(tmp_path / "best.pt"), "--out", str(out), "--trained-on", "synthetic",
                 "--label-thresholds", str(thresholds), "--note", "test run"]) == 0
    printed = capsys.readouterr().out
    # The line names the file's real digest (what a model card records).
    assert hashlib.sha256(out.read_bytes()).hexdigest()[:16] in printed and "epoch 3" in printed
    saved = torch.load(out, weights_only=True)
    assert "optimizer" not in saved and saved["provenance"] == {"source": str(tmp_path / "best.pt"), "note": "test run"}
    assert trained_on_of(saved) == "synthetic" and label_thresholds_of(saved) == {"Peace": 0.25, "Anger": 0.5}
    loaded, _ = load_model_from_checkpoint(out)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_ship_refuses_bad_inputs_in_one_line(tmp_path: Path, capsys) -> None:
    assert main(["ship", "--model", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x.pt")]) == 2
    _training_checkpoint(tmp_path / "best.pt")
    (tmp_path / "folder").mkdir()
    assert main(["ship", "--model", str(tmp_path / "best.pt"), "--out", str(tmp_path / "folder")]) == 2
    (tmp_path / "wrong.json").write_text(json.dumps({"thresholds": {}}))
    assert main(["ship", "--model", str(tmp_path / "best.pt"), "--out", str(tmp_path / "x.pt"),
                 "--label-thresholds", str(tmp_path / "wrong.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "Traceback" not in err and err.count("emotion-perception ship: ") == 3
    assert not (tmp_path / "x.pt").exists()
