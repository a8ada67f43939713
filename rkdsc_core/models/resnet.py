"""CIFAR ResNet-18: 3x3 stem, no max-pool, four stages of two BasicBlocks (a CPU-sized teacher)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from rkdsc_core.models.base import CIFAR10_MEAN, CIFAR10_STD, Backbone, ImageNormalize
from rkdsc_core.registry import register_model

__all__ = [
    "BasicBlock",
    "ResNet18Cifar",
    "ResNetCifarConfig",
    "resnet18_cifar",
    "resnet18_cifar_w32",
]


_STAGE_BLOCKS = (2, 2, 2, 2)
_STAGE_STRIDES = (1, 2, 2, 2)


@dataclass(frozen=True)
class ResNetCifarConfig:
    """Structure of :class:`ResNet18Cifar`.

    Args:
        width: channels of the stem and first stage; stages have ``width * (1, 2, 4, 8)``.
            64 is the standard ResNet-18 (11.2M parameters), 32 a quarter of it (2.8M).
        num_classes: size of the classification head.
        image_size: input resolution [pixels]; other sizes are resized (bilinear) to it, so
            the final feature map is always ``image_size / 8`` square.
    """

    width: int = 64
    num_classes: int = 10
    image_size: int = 32

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ValueError(f"width must be a positive integer, got {self.width}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes}")
        if self.image_size < 8 or self.image_size % 8:
            raise ValueError(
                f"image_size must be a positive multiple of 8 (three stride-2 stages), "
                f"got {self.image_size}"
            )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN projection) shortcut.

    Inputs:
        x: ``[batch, in_ch, H, W]`` float32.
    Outputs:
        ``[batch, out_ch, H / stride, W / stride]`` float32.
    """

    def __init__(self, in_ch: int, out_ch: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18Cifar(Backbone):
    """ResNet-18 for 32x32 images (He et al. 2016, CIFAR variant without the 7x7 stem/max-pool).

    Tokens are the positions of the last feature map: ``T = (image_size / 8) ** 2`` (16 at
    32x32), ``D = feature_dim = 8 * width``; :meth:`pool` is their mean (global average pool).

    Inputs:
        images: ``[batch, 3, H, W]`` float32 in [0, 1] (resized to ``image_size`` if needed).
    Outputs:
        logits ``[batch, num_classes]`` float32.
    """

    def __init__(self, config: ResNetCifarConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else ResNetCifarConfig()
        self.config = cfg
        self.num_classes = cfg.num_classes
        self.feature_dim = 8 * cfg.width
        self.input_size = cfg.image_size
        self.num_tokens = (cfg.image_size // 8) ** 2

        self.normalize = ImageNormalize(CIFAR10_MEAN, CIFAR10_STD, size=cfg.image_size)
        self.stem = nn.Sequential(
            nn.Conv2d(3, cfg.width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(cfg.width),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        in_ch = cfg.width
        for i, (blocks, stride) in enumerate(zip(_STAGE_BLOCKS, _STAGE_STRIDES, strict=True)):
            out_ch = cfg.width * 2**i
            layers = [BasicBlock(in_ch, out_ch, stride=stride)]
            layers += [BasicBlock(out_ch, out_ch) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(self.feature_dim, cfg.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_tokens(self, images: Tensor) -> Tensor:
        """Images ``[batch, 3, H, W]`` in [0, 1] -> tokens ``[batch, T, 8 * width]`` float32."""
        x: Tensor = self.stages(self.stem(self.normalize(images)))
        return x.flatten(2).transpose(1, 2)


@register_model("resnet18-cifar")
def resnet18_cifar(**overrides: Any) -> ResNet18Cifar:
    """CIFAR ResNet-18, width 64 (11.2M parameters); ``overrides`` are config fields."""
    return ResNet18Cifar(dataclasses.replace(ResNetCifarConfig(), **overrides))


@register_model("resnet18-cifar-w32")
def resnet18_cifar_w32(**overrides: Any) -> ResNet18Cifar:
    """CIFAR ResNet-18 at half width (2.8M parameters): the former default CPU teacher."""
    return ResNet18Cifar(dataclasses.replace(ResNetCifarConfig(width=32), **overrides))
