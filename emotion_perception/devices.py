"""The torch device a training or evaluation command runs on, from its ``--device`` text.

Imports nothing of ours, so every layer may use it (``eval`` without importing ``train``).
The runtime backends keep their own rule (``runtime/model_files.py``), which also weighs which
backends are installed.
"""

from __future__ import annotations

import re

import torch

_CUDA_INDEX = re.compile(r"cuda:(\d+)")


def select_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when available, else the CPU; ``cpu``; ``cuda``; ``cuda:N``: GPU N.

    ``auto`` and ``cuda`` take GPU ``local_rank`` (modulo the GPU count): one GPU per torchrun
    process. ValueError for any other text, RuntimeError when CUDA or GPU N is not there.
    """
    match = _CUDA_INDEX.fullmatch(preference)
    if preference not in ("auto", "cpu", "cuda") and match is None:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {preference!r}")
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {preference!r} requested but CUDA is not available")
    count = torch.cuda.device_count()
    index = int(match.group(1)) if match else local_rank % count
    if index >= count:
        raise RuntimeError(f"device {preference!r} requested but only {count} CUDA device(s) are visible")
    return torch.device("cuda", index)
