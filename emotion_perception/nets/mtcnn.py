"""The three networks of MTCNN (Zhang et al. 2016), shaped to load the published weights.

MTCNN ("Joint Face Detection and Alignment using Multi-task Cascaded Convolutional Networks")
is a cascade of three small CNNs: PNet proposes faces densely over an image pyramid, RNet
rejects most proposals on 24x24 crops, ONet scores the survivors on 48x48 crops and adds five
landmarks. The cascade logic (pyramid, NMS, crops) lives in
:mod:`emotion_perception.runtime.face_detection`; this module only holds the networks, so that
``nets`` stays free of image handling.

The weights are the original Caffe ones of the authors, as redistributed in the PyPI wheel
``facenet-pytorch`` 2.6.0 (``facenet_pytorch/data/{pnet,rnet,onet}.pt``). Attribute names follow
those state dicts so they load with ``strict=True``; :func:`convert_facenet_pytorch` packs the
three into this project's one-file checkpoint (format :data:`MTCNN_FORMAT`).

Conventions of the weights (they decide the code below):

* input: RGB, NCHW, float ``(x - 127.5) * 0.0078125``;
* max-pooling uses ``ceil_mode=True`` (Caffe rounds pooled sizes up);
* before a dense layer the (N, C, H, W) map is flattened in (N, W, H, C) order, because the
  Caffe models were trained on images transposed by MATLAB's column-major layout;
* box regressions are offsets (dx1, dy1, dx2, dy2) in units of the box width/height; ONet's
  landmarks are 5 x coordinates then 5 y coordinates, relative to the box.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

MTCNN_FORMAT = "emotion_perception.mtcnn/1"
# Checkpoint keys of the three networks, in cascade order.
NET_NAMES: tuple[str, ...] = ("pnet", "rnet", "onet")


def _flatten_caffe(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, W*H*C) in the order the Caffe-trained dense layers expect."""
    return x.permute(0, 3, 2, 1).contiguous().view(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal network: fully convolutional, 12x12 receptive field, output stride 2.

    Returns (face probability map (N, 2, h, w) softmaxed over dim 1, box regression (N, 4, h, w)).
    Any input of at least 12x12 works; each output cell looks at one 12x12 window.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return torch.softmax(self.conv4_1(x), dim=1), self.conv4_2(x)


class RNet(nn.Module):
    """Refinement network on 24x24 crops: (probabilities (N, 2), box regression (N, 4))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_caffe(x)))
        return torch.softmax(self.dense5_1(x), dim=1), self.dense5_2(x)


class ONet(nn.Module):
    """Output network on 48x48 crops: (probabilities (N, 2), boxes (N, 4), landmarks (N, 10))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_caffe(x)))
        return torch.softmax(self.dense6_1(x), dim=1), self.dense6_2(x), self.dense6_3(x)


_NET_CLASSES: dict[str, type[nn.Module]] = {"pnet": PNet, "rnet": RNet, "onet": ONet}


def _check_state_dict(name: str, module: nn.Module, state: object) -> dict[str, torch.Tensor]:
    """The state dict ``state`` if it matches ``module`` key for key and shape for shape.

    Raises ValueError naming the network and the first problem found.
    """
    if not isinstance(state, dict):
        raise ValueError(f"'{name}': expected a state dict, got {type(state).__name__}")
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"'{name}': missing keys {missing}, unexpected keys {unexpected}")
    for key, tensor in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"'{name}.{key}': expected a tensor, got {type(value).__name__}")
        if tuple(value.shape) != tuple(tensor.shape):
            raise ValueError(f"'{name}.{key}': expected shape {tuple(tensor.shape)}, got {tuple(value.shape)}")
    return state


def load_mtcnn_nets(state: dict) -> tuple[PNet, RNet, ONet]:
    """PNet, RNet, ONet (eval mode, CPU) from a checkpoint dict of format :data:`MTCNN_FORMAT`.

    Raises ValueError naming the field when ``state`` is not such a checkpoint.
    """
    if not isinstance(state, dict):
        raise ValueError(f"expected a dict checkpoint of format '{MTCNN_FORMAT}', got {type(state).__name__}")
    if state.get("format") != MTCNN_FORMAT:
        raise ValueError(f"'format': expected '{MTCNN_FORMAT}', got {state.get('format')!r}")
    nets = []
    for name in NET_NAMES:
        module = _NET_CLASSES[name]()
        module.load_state_dict(_check_state_dict(name, module, state.get(name)), strict=True)
        nets.append(module.eval())
    pnet, rnet, onet = nets
    return pnet, rnet, onet  # type: ignore[return-value]


def convert_facenet_pytorch(data_dir: Path) -> dict:
    """One-file MTCNN checkpoint from facenet-pytorch's ``data`` folder (pnet.pt, rnet.pt, onet.pt).

    The result holds plain float32 tensors only, so ``torch.load(..., weights_only=True)`` reads
    it back; save it with ``nets.factory.write_checkpoint``. Raises FileNotFoundError / ValueError
    naming the file.
    """
    data_dir = Path(data_dir)
    result: dict = {"format": MTCNN_FORMAT}
    for name in NET_NAMES:
        path = data_dir / f"{name}.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: not found (expected facenet-pytorch 2.6.0's facenet_pytorch/data/{name}.pt)"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many kinds for a bad file
            raise ValueError(f"{path}: not a readable torch state dict ({type(err).__name__}: {err})") from None
        try:
            checked = _check_state_dict(name, _NET_CLASSES[name](), state)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        result[name] = {key: value.detach().to(torch.float32).clone().contiguous() for key, value in checked.items()}
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m emotion_perception.nets.mtcnn DATA_DIR OUT``: write the one-file checkpoint."""
    doc = convert_facenet_pytorch.__doc__  # None under python -OO
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("data_dir", type=Path, help="facenet_pytorch/data folder of the facenet-pytorch wheel")
    parser.add_argument("out", type=Path, help="checkpoint to write (e.g. external_models/mtcnn.pt)")
    args = parser.parse_args(argv)
    try:
        checkpoint = convert_facenet_pytorch(args.data_dir)
    except (OSError, ValueError) as err:
        parser.exit(1, f"error: {err}\n")
    from emotion_perception.nets.factory import write_checkpoint

    write_checkpoint(args.out, checkpoint)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
