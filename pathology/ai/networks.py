"""Built-in patch classifiers, written in plain torch (torchvision is not available here).

- `patchnet`: a small convolutional network (four conv–batch-norm–ReLU stages, global average
  pooling, a linear layer): fast to train on CPU, enough for stain textures.
- `resnet18`: the 18-layer residual network (basic blocks 2-2-2-2), for GPU training.

Every network takes N × 3 × S × S float input (normalised) and gives N × classes logits; each can
be turned into TorchScript (`scripted`) and registered like an uploaded model.

Fine-tuning (`fine_tuning`) starts from a registered TorchScript model instead: a classifier with
exactly the training's classes is trained as it is; a backbone, or a classifier of other classes,
gets a new linear head (`FineTuned`, itself scriptable) from its outputs to the training's classes.
"""

from __future__ import annotations

import torch
from torch import nn

from pathology.ai import ARCHITECTURES


def _stage(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class PatchNet(nn.Module):
    def __init__(self, classes: int, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            _stage(3, width),
            _stage(width, width * 2),
            _stage(width * 2, width * 4),
            _stage(width * 4, width * 8),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width * 8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        layers, inputs = [], 64
        for outputs, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(inputs, outputs, stride), BasicBlock(outputs, outputs)]
            inputs = outputs
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def build(architecture: str, classes: int) -> nn.Module:
    if architecture == "patchnet":
        return PatchNet(classes)
    if architecture == "resnet18":
        return ResNet18(classes)
    raise ValueError(f"Unknown architecture {architecture!r}; built in: {', '.join(ARCHITECTURES)}.")


def scripted(model: nn.Module) -> torch.jit.ScriptModule:
    """The network as TorchScript, in evaluation mode (how the registry keeps every model)."""
    return torch.jit.script(model.eval())


class FineTuned(nn.Module):
    """A scripted base model (a backbone's N × F features or a classifier's N × C scores) under a
    new linear head for the training's classes. With `frozen` only the head learns: the base's
    parameters take no gradient and the base stays in evaluation mode, so its batch-norm
    statistics and dropout stay as they were."""

    def __init__(self, base: nn.Module, inputs: int, classes: int, frozen: bool = False):
        super().__init__()
        self.base = base
        self.head = nn.Linear(inputs, classes)
        self.frozen = frozen
        for parameter in base.parameters():
            parameter.requires_grad_(not frozen)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.base.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.base(x), 1))


def fine_tuning(base: nn.Module, outputs: int, classes: int, head: bool, frozen: bool = False) -> nn.Module:
    """The network to fine-tune from `base` (a loaded TorchScript module giving `outputs` values per
    patch): the base itself when it already gives the training's classes (`head` false), else the
    base under a new head for `classes` classes."""
    if not head:
        for parameter in base.parameters():
            parameter.requires_grad_(True)  # a file saved with frozen parameters still learns here
        return base
    return FineTuned(base, outputs, classes, frozen)
