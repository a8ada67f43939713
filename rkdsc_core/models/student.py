"""The DARTS student: a network built from a genotype that turns images into feature tokens."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from rkdsc_core.models.base import CIFAR10_MEAN, CIFAR10_STD, Backbone, ImageNormalize
from rkdsc_core.models.genotypes import (
    DEFAULT_GENOTYPE,
    Genotype,
    genotype_from_dict,
    genotype_to_dict,
    get_genotype,
)
from rkdsc_core.models.operations import OPS, FactorizedReduce, Identity, ReLUConvBN, drop_path
from rkdsc_core.registry import register_model

__all__ = [
    "Cell",
    "DartsStudent",
    "StudentConfig",
    "darts_student",
]


def _default_genotype() -> dict[str, Any]:
    return genotype_to_dict(DEFAULT_GENOTYPE)


@dataclass(frozen=True)
class StudentConfig:
    """Configuration of :class:`DartsStudent` (saved with its checkpoints).

    Attributes:
        genotype: the architecture, as :func:`~rkdsc_core.models.genotypes.genotype_to_dict`
            writes it (default DARTS_V2). Stored in that canonical JSON form.
        C: initial cell channels; doubled at each of the two reduction cells. The default
            12 keeps the DARTS_V2 student (~169k params) plus the default CAT encoder
            (~82k) under 10% of a 2.8M-param teacher; C=16 gives ~278k.
        layers: number of cells; reduction cells sit at ``layers // 3`` and ``2 * layers // 3``.
        stem_multiplier: the stem conv outputs ``stem_multiplier * C`` channels.
        num_classes: classifier outputs.
        token_dim: ``D``, channels of each output feature token.
        token_pool: average-pool factor applied to the last cell's map before it is
            flattened into tokens (``T = (input_size / 4 / token_pool) ** 2``).
        drop_path_prob: initial drop-path probability per cell edge during training
            (the model's mutable ``drop_path_prob`` attribute can be scheduled).
        input_size: images are resized to ``input_size x input_size`` pixels.
        mean, std: per-channel normalisation of the [0, 1] RGB input.
    """

    genotype: dict[str, Any] = field(default_factory=_default_genotype)
    C: int = 12
    layers: int = 8
    stem_multiplier: int = 3
    num_classes: int = 10
    token_dim: int = 128
    token_pool: int = 2
    drop_path_prob: float = 0.0
    input_size: int = 32
    mean: tuple[float, ...] = CIFAR10_MEAN
    std: tuple[float, ...] = CIFAR10_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "genotype", genotype_to_dict(genotype_from_dict(self.genotype)))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        for name in ("C", "stem_multiplier", "num_classes", "token_dim", "token_pool"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(self.layers, bool) or not isinstance(self.layers, int) or self.layers < 2:
            raise ValueError(
                f"layers must be an int >= 2 (two reduction cells), got {self.layers!r}"
            )
        if self.C % 2:
            raise ValueError(f"C must be even (FactorizedReduce halves channels), got {self.C}")
        if not 0.0 <= self.drop_path_prob < 1.0:
            raise ValueError(f"drop_path_prob must lie in [0, 1), got {self.drop_path_prob!r}")
        if self.input_size < 1 or self.input_size % (4 * self.token_pool):
            raise ValueError(
                f"input_size must be a positive multiple of 4 * token_pool = "
                f"{4 * self.token_pool} (two stride-2 reductions, then token pooling), "
                f"got {self.input_size}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 entries, std > 0; got {self.mean}, {self.std}")

    @property
    def num_tokens(self) -> int:
        """``T``, tokens per image: ``(input_size / 4 / token_pool) ** 2``."""
        return (self.input_size // (4 * self.token_pool)) ** 2

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (for checkpoints)."""
        return asdict(self)


class Cell(nn.Module):
    """A DARTS cell: two preprocessed inputs, ``len(edges) / 2`` summing nodes, a concat.

    Args:
        genotype: the architecture; ``reduction`` picks its reduce or normal cell.
        C_prev_prev, C_prev: channels of the two inputs (previous-previous, previous cell).
        C: channels of every intermediate node.
        reduction: this cell halves the resolution (edges from inputs stride 2).
        reduction_prev: the previous cell halved it, so input 0 is at twice the resolution
            of input 1 and is brought down with :class:`FactorizedReduce`.
    Inputs:
        s0: ``[batch, C_prev_prev, H0, W0]`` float32; s1: ``[batch, C_prev, H, W]`` float32
        (``H0 = 2H`` if ``reduction_prev`` else ``H``); drop_prob: drop-path probability.
    Outputs:
        ``[batch, multiplier * C, H', W']`` float32, ``H' = ceil(H / 2)`` for a reduction
        cell else ``H``; ``multiplier`` is the number of concatenated states.
    """

    def __init__(
        self,
        genotype: Genotype,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        *,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        edges, concat = (
            (genotype.reduce, genotype.reduce_concat)
            if reduction
            else (genotype.normal, genotype.normal_concat)
        )
        self.indices = tuple(index for _, index in edges)
        self.concat = tuple(concat)
        self.steps = len(edges) // 2
        self.multiplier = len(concat)
        self.ops = nn.ModuleList(
            OPS[name](C, 2 if reduction and index < 2 else 1, True) for name, index in edges
        )

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float = 0.0) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self.steps):
            h = [self._edge(k, states, drop_prob) for k in (2 * i, 2 * i + 1)]
            states.append(h[0] + h[1])
        return torch.cat([states[i] for i in self.concat], dim=1)

    def _edge(self, k: int, states: list[Tensor], drop_prob: float) -> Tensor:
        op = self.ops[k]
        h: Tensor = op(states[self.indices[k]])
        if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
            h = drop_path(h, drop_prob)
        return h


class DartsStudent(Backbone):
    """The tiny student: a DARTS network from a genotype, ending in feature tokens.

    Layout: stem (3x3 conv to ``stem_multiplier * C`` channels + BN) -> ``layers`` cells
    (reduction cells at 1/3 and 2/3 depth, channels doubled there) -> ReLU ->
    ``token_pool x token_pool`` average pool -> 1x1 conv to ``token_dim`` -> flatten to
    tokens (row-major over the pooled map). At the 32-px defaults the last cell's map is
    ``8x8x(4 * 4C)`` (4 concatenated nodes), pooled to ``4x4``: ``T = 16`` tokens of
    ``D = 128`` -- 4x fewer tokens for the channel codec to attend over than the raw 8x8 map,
    each token still covering a distinct 8x8-pixel region. The head is the base class'
    mean-pool -> LayerNorm -> Linear. Drop-path (training mode only) uses the attribute
    ``drop_path_prob``, initialised from the config; a training loop schedules it by
    assigning to it.

    Inputs:
        images: ``[batch, 3, H, W]`` float32 in [0, 1] (resized to ``input_size``).
    Outputs:
        :meth:`forward_tokens`: ``[batch, T, D]`` float32; :meth:`forward`: logits
        ``[batch, num_classes]`` float32.
    """

    def __init__(self, config: StudentConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else StudentConfig()
        self.config = cfg
        genotype = genotype_from_dict(cfg.genotype)
        self.num_classes = cfg.num_classes
        self.feature_dim = cfg.token_dim
        self.num_tokens = cfg.num_tokens
        self.input_size = cfg.input_size
        self.drop_path_prob = cfg.drop_path_prob

        self.normalize = ImageNormalize(cfg.mean, cfg.std, size=cfg.input_size)
        C_curr = cfg.stem_multiplier * cfg.C
        self.stem = nn.Sequential(
            nn.Conv2d(3, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr)
        )
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, cfg.C
        reductions = {cfg.layers // 3, 2 * cfg.layers // 3}
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(cfg.layers):
            reduction = i in reductions
            if reduction:
                C_curr *= 2
            cell = Cell(
                genotype,
                C_prev_prev,
                C_prev,
                C_curr,
                reduction=reduction,
                reduction_prev=reduction_prev,
            )
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
        self.to_tokens = nn.Sequential(
            nn.ReLU(),
            nn.AvgPool2d(cfg.token_pool) if cfg.token_pool > 1 else nn.Identity(),
            nn.Conv2d(C_prev, cfg.token_dim, 1),
        )
        self.head = nn.Sequential(
            nn.LayerNorm(cfg.token_dim), nn.Linear(cfg.token_dim, cfg.num_classes)
        )

    def forward_tokens(self, images: Tensor) -> Tensor:
        """Images ``[batch, 3, H, W]`` float32 in [0, 1] -> tokens ``[batch, T, D]`` float32."""
        x = self.stem(self.normalize(images))
        s0 = s1 = x
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
        tokens: Tensor = self.to_tokens(s1)
        return tokens.flatten(2).transpose(1, 2)


@register_model("darts-student")
def darts_student(**overrides: Any) -> DartsStudent:
    """The DARTS student; ``overrides`` are :class:`StudentConfig` fields.

    ``genotype`` may also be a :class:`Genotype` or a reference name (``"darts_v2"``).
    """
    genotype = overrides.get("genotype")
    if isinstance(genotype, str):
        overrides["genotype"] = genotype_to_dict(get_genotype(genotype))
    elif isinstance(genotype, Genotype):
        overrides["genotype"] = genotype_to_dict(genotype)
    return DartsStudent(StudentConfig(**overrides))
