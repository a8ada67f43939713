"""CLIP ViT image encoder (the paper's teacher) in open_clip's layout, with HF weight conversion."""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rkdsc_core.models.base import Backbone, ImageNormalize
from rkdsc_core.registry import register_model

__all__ = [
    "CHECKPOINT_FILENAMES",
    "CLIP_MEAN",
    "CLIP_STD",
    "ClipVisionBackbone",
    "ClipVisionConfig",
    "QuickGELU",
    "ResidualAttentionBlock",
    "VisionTransformer",
    "clip_vit_b32",
    "clip_vit_tiny",
    "hf_to_open_clip",
    "load_visual_state_dict",
    "open_clip_to_hf",
]

logger = logging.getLogger(__name__)

#: CLIP's image preprocessing statistics (RGB, images in [0, 1]).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Files looked for, in this order, when a checkpoint path is a directory.
CHECKPOINT_FILENAMES = (
    "model.safetensors",
    "pytorch_model.bin",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)

_HF_VISION = "vision_model."
_HF_LAYERS = "vision_model.encoder.layers."
_HF_PROJ = "visual_projection.weight"
_OC_BLOCKS = "transformer.resblocks."

# Per-block names: open_clip suffix <-> Hugging Face suffix (attention q/k/v handled apart).
_BLOCK_KEYS = {
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
# Top-level names (outside blocks and the projection).
_TOP_KEYS = {
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "class_embedding": "vision_model.embeddings.class_embedding",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight",  # sic: HF's spelling
    "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight",
    "ln_post.bias": "vision_model.post_layernorm.bias",
}


@dataclass(frozen=True)
class ClipVisionConfig:
    """Structure of the CLIP image tower (defaults: ViT-B/32, 87.8M parameters).

    Args:
        image_size: input resolution [pixels]; images are resized (bilinear) to it.
        patch_size: side of the square patches [pixels]; must divide ``image_size``.
        width: token (residual stream) dimension.
        layers: number of transformer blocks.
        heads: attention heads; must divide ``width``.
        output_dim: dimension of the projected class token (CLIP's joint embedding).
        mlp_ratio: MLP hidden size over ``width``.
        quick_gelu: ``x * sigmoid(1.702 x)`` as in the OpenAI weights (else exact GELU).
        num_classes: size of the new linear head on the projected class token.
    """

    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12
    output_dim: int = 512
    mlp_ratio: float = 4.0
    quick_gelu: bool = True
    num_classes: int = 10

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "width", "layers", "heads", "output_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"patch_size ({self.patch_size}) must divide image_size ({self.image_size})"
            )
        if self.width % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide width ({self.width})")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")

    @property
    def grid_size(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size


class QuickGELU(nn.Module):
    """OpenAI CLIP's GELU approximation ``x * sigmoid(1.702 x)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``.

    Inputs:
        x: ``[batch, T, width]`` float32.
    Outputs:
        ``[batch, T, width]`` float32.
    """

    def __init__(self, width: int, heads: int, *, mlp_ratio: float, quick_gelu: bool) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        act: nn.Module = QuickGELU() if quick_gelu else nn.GELU()
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, hidden)),
                    ("gelu", act),
                    ("c_proj", nn.Linear(hidden, width)),
                ]
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        out: Tensor = x + self.mlp(self.ln_2(x))
        return out


class Transformer(nn.Module):
    """A stack of :class:`ResidualAttentionBlock` (open_clip's ``transformer.resblocks``)."""

    def __init__(self, cfg: ClipVisionConfig) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(
                cfg.width, cfg.heads, mlp_ratio=cfg.mlp_ratio, quick_gelu=cfg.quick_gelu
            )
            for _ in range(cfg.layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class VisionTransformer(nn.Module):
    """CLIP's image tower with open_clip's parameter names (``visual.*`` without the prefix).

    Inputs:
        x: normalised images ``[batch, 3, image_size, image_size]`` float32.
    Outputs:
        tokens after ``ln_post``: ``[batch, 1 + grid**2, width]`` float32, class token first.
    """

    def __init__(self, cfg: ClipVisionConfig) -> None:
        super().__init__()
        self.config = cfg
        scale = cfg.width**-0.5
        self.conv1 = nn.Conv2d(
            3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False
        )
        self.class_embedding = nn.Parameter(scale * torch.randn(cfg.width))
        self.positional_embedding = nn.Parameter(
            scale * torch.randn(cfg.grid_size**2 + 1, cfg.width)
        )
        self.ln_pre = nn.LayerNorm(cfg.width)
        self.transformer = Transformer(cfg)
        self.ln_post = nn.LayerNorm(cfg.width)
        self.proj = nn.Parameter(scale * torch.randn(cfg.width, cfg.output_dim))

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)  # [batch, grid**2, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x)  # type: ignore[no-any-return]


class ClipVisionBackbone(Backbone):
    """CLIP ViT image encoder as a teacher: tokens, projected class token, new linear head.

    Dimensions: tokens are ``[batch, T, token_dim]`` with ``T = 1 + grid**2`` (50 for
    ViT-B/32) and ``token_dim = width`` (768); :meth:`pool` returns the class token projected
    by ``proj`` -- CLIP's image embedding -- of ``feature_dim = output_dim`` (512), which is
    the feature used for feature distillation. So here ``feature_dim != token_dim``.

    Args:
        config: the tower's structure.
        checkpoint: optional local weights (see :func:`load_visual_state_dict`); without one
            the tower is randomly initialised. The head is always new.
    Inputs:
        images: ``[batch, 3, H, W]`` float32 in [0, 1].
    Outputs:
        logits ``[batch, num_classes]`` float32.
    """

    def __init__(
        self, config: ClipVisionConfig | None = None, *, checkpoint: str | Path | None = None
    ) -> None:
        super().__init__()
        cfg = config if config is not None else ClipVisionConfig()
        self.config = cfg
        self.num_classes = cfg.num_classes
        self.feature_dim = cfg.output_dim
        self.num_tokens = cfg.grid_size**2 + 1
        self.input_size = cfg.image_size
        self.normalize = ImageNormalize(CLIP_MEAN, CLIP_STD, size=cfg.image_size)
        self.visual = VisionTransformer(cfg)
        self.head = nn.Linear(cfg.output_dim, cfg.num_classes)
        if checkpoint is not None:
            self.load_visual(checkpoint)

    def load_visual(self, checkpoint: str | Path) -> None:
        """Load the image tower from a local open_clip or Hugging Face checkpoint."""
        state = load_visual_state_dict(checkpoint)
        _check_state_dict(self.visual, state, source=str(checkpoint))
        self.visual.load_state_dict(state, strict=True)
        logger.info("loaded CLIP image tower from %s", checkpoint)

    @property
    def token_dim(self) -> int:
        """The transformer's width: the tokens are wider than the projected feature."""
        return self.config.width

    def forward_tokens(self, images: Tensor) -> Tensor:
        """Images ``[batch, 3, H, W]`` in [0, 1] -> tokens ``[batch, T, token_dim]`` float32."""
        return self.visual(self.normalize(images))  # type: ignore[no-any-return]

    def pool(self, tokens: Tensor) -> Tensor:
        """Tokens ``[batch, T, token_dim]`` -> projected class token ``[batch, output_dim]``."""
        return tokens[:, 0] @ self.visual.proj


def hf_to_open_clip(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face CLIP vision keys -> open_clip visual keys (without ``visual.``).

    Reads ``vision_model.*`` and ``visual_projection.weight`` (transposed into ``proj``);
    q/k/v projections are concatenated into ``attn.in_proj_{weight,bias}``. Other keys
    (text tower, ``logit_scale``, ``position_ids``) are ignored.
    """
    out: dict[str, Tensor] = {}
    for oc, hf in _TOP_KEYS.items():
        if hf in state:
            out[oc] = state[hf]
    if _HF_PROJ in state:
        out["proj"] = state[_HF_PROJ].t().contiguous()
    layers = sorted(
        {int(k[len(_HF_LAYERS) :].split(".", 1)[0]) for k in state if k.startswith(_HF_LAYERS)}
    )
    for i in layers:
        hf_pre, oc_pre = f"{_HF_LAYERS}{i}.", f"{_OC_BLOCKS}{i}."
        for oc, hf in _BLOCK_KEYS.items():
            if hf_pre + hf in state:
                out[oc_pre + oc] = state[hf_pre + hf]
        for kind in ("weight", "bias"):
            qkv = [f"{hf_pre}self_attn.{p}_proj.{kind}" for p in "qkv"]
            if all(k in state for k in qkv):
                out[f"{oc_pre}attn.in_proj_{kind}"] = torch.cat([state[k] for k in qkv], dim=0)
    return out


def open_clip_to_hf(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """open_clip visual keys (with or without ``visual.``) -> Hugging Face CLIP vision keys.

    The inverse of :func:`hf_to_open_clip`.
    """
    state = _visual_only(state)
    out: dict[str, Tensor] = {}
    for oc, hf in _TOP_KEYS.items():
        if oc in state:
            out[hf] = state[oc]
    if "proj" in state:
        out[_HF_PROJ] = state["proj"].t().contiguous()
    for key, value in state.items():
        if not key.startswith(_OC_BLOCKS):
            continue
        i, suffix = key[len(_OC_BLOCKS) :].split(".", 1)
        hf_pre = f"{_HF_LAYERS}{i}."
        if suffix in _BLOCK_KEYS:
            out[hf_pre + _BLOCK_KEYS[suffix]] = value
        elif suffix in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = suffix.rsplit("_", 1)[1]
            for p, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"{hf_pre}self_attn.{p}_proj.{kind}"] = chunk.contiguous()
    return out


def load_visual_state_dict(checkpoint: str | Path) -> dict[str, Tensor]:
    """Read a local CLIP checkpoint and return the image tower in open_clip layout.

    Args:
        checkpoint: a file (``.safetensors``, or ``.bin``/``.pt``/``.pth`` read with
            ``torch.load(weights_only=True)``) or a directory holding one of
            :data:`CHECKPOINT_FILENAMES`. Recognised layouts: open_clip (``visual.*`` keys of
            a full CLIP state dict, or an image tower's own keys) and Hugging Face
            (``vision_model.*`` + ``visual_projection.weight``, e.g.
            ``openai/clip-vit-base-patch32``).
    Outputs:
        ``{name: tensor}`` with :class:`VisionTransformer` parameter names.
    """
    state = _read_tensors(_resolve_checkpoint(Path(checkpoint)))
    if isinstance(state.get("state_dict"), Mapping):  # open_clip training checkpoints
        state = state["state_dict"]
    state = _strip_prefix(state, "module.")
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if any(k.startswith(_HF_VISION) for k in tensors):
        return hf_to_open_clip(tensors)
    if any(k.startswith("visual.") for k in tensors):
        return _visual_only(tensors)
    if "conv1.weight" in tensors:
        return tensors
    raise ValueError(
        f"{checkpoint} is neither an open_clip (visual.*) nor a Hugging Face (vision_model.*) "
        f"CLIP checkpoint; first keys: {', '.join(list(tensors)[:5])}"
    )


def _resolve_checkpoint(path: Path) -> Path:
    if path.is_dir():
        for name in CHECKPOINT_FILENAMES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(
            f"no CLIP weights in directory {path}; "
            f"expected one of {', '.join(CHECKPOINT_FILENAMES)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"CLIP checkpoint {path} does not exist")
    return path


def _read_tensors(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"cannot read {path} as a tensor-only state dict (torch.load weights_only=True): {e}. "
            "TorchScript archives (OpenAI's ViT-B-32.pt) are not supported; use the open_clip "
            "or Hugging Face release instead"
        ) from e
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return dict(state)


def _strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _visual_only(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    # The image tower's entries of a full open_clip state dict; a bare tower passes through.
    if any(k.startswith("visual.") for k in state):
        return {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    return dict(state)


def _check_state_dict(module: nn.Module, state: Mapping[str, Tensor], *, source: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"CLIP checkpoint {source} does not match the config: "
            f"{len(missing)} missing keys ({', '.join(missing[:5]) or '-'}), "
            f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:5]) or '-'})"
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise ValueError(
            f"CLIP checkpoint {source} has {len(wrong)} tensors of the wrong shape for the "
            f"config (checkpoint vs model): {'; '.join(wrong[:5])}"
        )


@register_model("clip-vit-b32")
def clip_vit_b32(*, checkpoint: str | Path | None = None, **overrides: Any) -> ClipVisionBackbone:
    """CLIP ViT-B/32 image encoder; randomly initialised (with a warning) without a checkpoint."""
    cfg = dataclasses.replace(ClipVisionConfig(), **overrides)
    if checkpoint is None:
        logger.warning(
            "clip-vit-b32 built without a checkpoint: random weights, not the CLIP teacher"
        )
    return ClipVisionBackbone(cfg, checkpoint=checkpoint)


@register_model("clip-vit-tiny")
def clip_vit_tiny(*, checkpoint: str | Path | None = None, **overrides: Any) -> ClipVisionBackbone:
    """A tiny CLIP-layout ViT (32 px, patch 8, width 64, 2 layers) for tests."""
    base = ClipVisionConfig(image_size=32, patch_size=8, width=64, layers=2, heads=2, output_dim=32)
    return ClipVisionBackbone(dataclasses.replace(base, **overrides), checkpoint=checkpoint)
