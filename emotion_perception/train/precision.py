"""Mixed precision: float16 autocast and a GradScaler on CUDA, plain float32 elsewhere."""

from __future__ import annotations

import torch


def autocast_for(device: torch.device, enabled: bool = True) -> torch.autocast:
    """float16 autocast on CUDA; disabled on CPU (where it would slow training down)."""
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=enabled and device.type == "cuda")


def grad_scaler_for(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """A GradScaler active only with CUDA mixed precision (a pass-through elsewhere)."""
    return torch.amp.GradScaler("cuda", enabled=enabled and device.type == "cuda")
