"""The KDL-DARTS supernet: PC-DARTS mixed ops, search cells, and a network with arch logits."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rkdsc_core.models.base import CIFAR10_MEAN, CIFAR10_STD, ImageNormalize
from rkdsc_core.models.genotypes import Genotype, validate_genotype
from rkdsc_core.models.operations import OPS, PRIMITIVES, FactorizedReduce, ReLUConvBN

__all__ = [
    "NODES",
    "CellKind",
    "CellSpec",
    "MixedOp",
    "SearchCell",
    "SearchNetwork",
    "channel_shuffle",
    "derive_cell",
    "edge_softmax",
    "num_edges",
]

NODES = 4
"""Intermediate nodes per cell (the DARTS setting; the cell concatenates all of them)."""

CellKind = Literal["normal", "reduce"]


def num_edges(nodes: int = NODES) -> int:
    """Edges of a search cell: node ``i`` reads both cell inputs and nodes ``0..i-1``."""
    return sum(2 + i for i in range(nodes))


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave ``groups`` channel groups (ShuffleNet), so the next mixed op sees new channels.

    Inputs: ``[batch, C, H, W]`` with ``C % groups == 0``. Outputs: same shape.
    """
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def edge_softmax(betas: Tensor, nodes: int = NODES) -> Tensor:
    """PC-DARTS edge normalisation: a softmax over the incoming edges of each node.

    Inputs: ``betas`` ``[num_edges(nodes)]`` logits. Outputs: ``[num_edges(nodes)]``; the
    weights of node ``i``'s ``2 + i`` incoming edges sum to 1.
    """
    parts, start = [], 0
    for i in range(nodes):
        n = 2 + i
        parts.append(F.softmax(betas[start : start + n], dim=-1))
        start += n
    return torch.cat(parts)


class MixedOp(nn.Module):
    """One supernet edge: every primitive of :data:`PRIMITIVES` on a ``1/K`` channel slice.

    PC-DARTS partial channel connection (Xu et al., ICLR 2020): only the first
    ``C / partial_channels`` channels go through the candidate ops, weighted by
    ``softmax(alpha)``; the rest bypass them (max-pooled 2x2 when ``stride == 2``) and are
    concatenated back, then the channels are shuffled. ``partial_channels = 1`` is plain
    DARTS. The ops come from the shared :data:`~rkdsc_core.models.operations.OPS` table
    with ``affine=False``; as in DARTS, each pool is followed by ``BatchNorm2d(affine=False)``.

    Args:
        C: channels in and out.
        stride: 1 or 2.
        partial_channels: ``K``, with ``C % K == 0``.
    Inputs:
        x: ``[batch, C, H, W]`` float32; weights: ``[len(PRIMITIVES)]`` (rows of softmax(alpha)).
    Outputs:
        ``[batch, C, ceil(H/stride), ceil(W/stride)]`` float32.
    """

    def __init__(self, C: int, stride: int, *, partial_channels: int = 4) -> None:
        super().__init__()
        if partial_channels < 1 or C % partial_channels:
            raise ValueError(
                f"partial_channels must divide C: got C={C}, partial_channels={partial_channels}"
            )
        self.k = partial_channels
        self.c_part = C // partial_channels
        ops = []
        for name in PRIMITIVES:
            op = OPS[name](self.c_part, stride, False)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(self.c_part, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)
        self.bypass: nn.Module = (
            nn.MaxPool2d(2, 2, ceil_mode=True) if stride == 2 else nn.Identity()
        )

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        part = x[:, : self.c_part]
        out: Tensor = sum(w * op(part) for w, op in zip(weights, self.ops, strict=True))
        if self.k == 1:
            return out
        rest = self.bypass(x[:, self.c_part :])
        return channel_shuffle(torch.cat([out, rest], dim=1), self.k)


class SearchCell(nn.Module):
    """A DARTS search cell: two preprocessed inputs, :data:`NODES` nodes, all edges mixed.

    Node ``i`` is ``sum_j edge_w[e] * MixedOp_e(state_j, alpha_w[e])`` over its ``2 + i``
    inputs (edge ``e`` counting across nodes in order). The output concatenates the nodes.

    Args:
        C_prev_prev, C_prev: channels of the two inputs; C: channels of every node.
        reduction: edges from the cell inputs have stride 2.
        reduction_prev: input 0 is at twice input 1's resolution (FactorizedReduce).
        partial_channels: see :class:`MixedOp`.
    Inputs:
        s0 ``[batch, C_prev_prev, H0, W0]``, s1 ``[batch, C_prev, H, W]`` float32;
        op_weights ``[num_edges, len(PRIMITIVES)]``; edge_weights ``[num_edges]``.
    Outputs:
        ``[batch, NODES * C, H', W']`` float32 (``H' = ceil(H/2)`` if ``reduction``).
    """

    def __init__(
        self,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        *,
        reduction: bool,
        reduction_prev: bool,
        partial_channels: int = 4,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.ops = nn.ModuleList(
            MixedOp(C, 2 if reduction and j < 2 else 1, partial_channels=partial_channels)
            for i in range(NODES)
            for j in range(2 + i)
        )

    def forward(self, s0: Tensor, s1: Tensor, op_weights: Tensor, edge_weights: Tensor) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(NODES):
            node: Tensor = sum(
                edge_weights[offset + j] * self.ops[offset + j](h, op_weights[offset + j])
                for j, h in enumerate(states)
            )
            offset += len(states)
            states.append(node)
        return torch.cat(states[2:], dim=1)


class CellSpec(NamedTuple):
    """Where a cell sits: its kind, node channels ``C`` and input resolution [pixels]."""

    kind: CellKind
    C: int
    resolution: int


class SearchNetwork(nn.Module):
    """The supernet: stem -> ``layers`` search cells -> global pool -> linear classifier.

    Reduction cells sit at ``layers // 3`` and ``2 * layers // 3`` (channels doubled there),
    as in :class:`~rkdsc_core.models.student.DartsStudent`, so a derived genotype drops into
    the student unchanged. All normal cells share one set of architecture logits, all
    reduction cells another: ``alphas_*`` ``[num_edges, len(PRIMITIVES)]`` (op choice) and
    ``betas_*`` ``[num_edges]`` (PC-DARTS edge normalisation). They are ``nn.Parameter``s,
    returned by :meth:`arch_parameters`; :meth:`weights` returns everything else.

    Args:
        C: initial node channels. num_classes: classifier outputs. layers: cells (>= 3:
            with 2, both would be reduction cells).
        stem_multiplier: stem outputs ``stem_multiplier * C`` channels.
        partial_channels: PC-DARTS ``K`` (1 = every channel, as in DARTS; edge
            normalisation stays on); must divide ``C``.
        input_size: images are resized to ``input_size`` pixels square.
        generator: draws the initial architecture logits (``1e-3 * N(0, 1)``).
    Inputs:
        images ``[batch, 3, H, W]`` float32 in [0, 1].
    Outputs:
        :meth:`forward_features` ``[batch, feature_dim]`` (pooled last cell);
        :meth:`forward` logits ``[batch, num_classes]`` float32.
    """

    def __init__(
        self,
        C: int = 8,
        num_classes: int = 10,
        layers: int = 5,
        *,
        stem_multiplier: int = 3,
        partial_channels: int = 4,
        input_size: int = 32,
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if layers < 3:
            raise ValueError(
                f"layers must be >= 3 (two reduction cells and a normal one, else the normal "
                f"cell's architecture is never trained), got {layers}"
            )
        if C % 2 or C % partial_channels:
            raise ValueError(
                f"C must be even and divisible by partial_channels; got C={C}, "
                f"partial_channels={partial_channels}"
            )
        self.C = C
        self.layers = layers
        self.num_classes = num_classes
        self.input_size = input_size
        self.normalize = ImageNormalize(mean, std, size=input_size)
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(3, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr)
        )
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        reductions = {layers // 3, 2 * layers // 3}
        self.cells = nn.ModuleList()
        specs: list[CellSpec] = []
        reduction_prev, resolution = False, input_size
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                C_curr *= 2
            specs.append(CellSpec("reduce" if reduction else "normal", C_curr, resolution))
            self.cells.append(
                SearchCell(
                    C_prev_prev,
                    C_prev,
                    C_curr,
                    reduction=reduction,
                    reduction_prev=reduction_prev,
                    partial_channels=partial_channels,
                )
            )
            if reduction:
                resolution = (resolution + 1) // 2
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, NODES * C_curr
        self.cell_specs: tuple[CellSpec, ...] = tuple(specs)
        self.feature_dim = C_prev
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

        shape = (num_edges(), len(PRIMITIVES))
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(shape, generator=generator))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(shape, generator=generator))
        self.betas_normal = nn.Parameter(1e-3 * torch.randn(num_edges(), generator=generator))
        self.betas_reduce = nn.Parameter(1e-3 * torch.randn(num_edges(), generator=generator))

    def arch_parameters(self) -> list[nn.Parameter]:
        """Architecture logits: ``[alphas_normal, alphas_reduce, betas_normal, betas_reduce]``."""
        return [self.alphas_normal, self.alphas_reduce, self.betas_normal, self.betas_reduce]

    def weights(self) -> list[nn.Parameter]:
        """Every parameter that is not an architecture logit (the ops', stem's, classifier's)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def op_weights(self, kind: CellKind) -> Tensor:
        """``softmax(alpha)`` per edge: ``[num_edges, len(PRIMITIVES)]``, rows sum to 1."""
        alphas = self.alphas_reduce if kind == "reduce" else self.alphas_normal
        return F.softmax(alphas, dim=-1)

    def edge_weights(self, kind: CellKind) -> Tensor:
        """Per-node softmax of ``betas``: ``[num_edges]`` (see :func:`edge_softmax`)."""
        return edge_softmax(self.betas_reduce if kind == "reduce" else self.betas_normal)

    def forward_features(self, images: Tensor) -> Tensor:
        """Images ``[batch, 3, H, W]`` in [0, 1] -> pooled last-cell feature ``[batch, D]``."""
        weights = {k: (self.op_weights(k), self.edge_weights(k)) for k in ("normal", "reduce")}
        s0 = s1 = self.stem(self.normalize(images))
        for cell, spec in zip(self.cells, self.cell_specs, strict=True):
            w, e = weights[spec.kind]
            s0, s1 = s1, cell(s0, s1, w, e)
        pooled: Tensor = self.global_pool(s1)
        return pooled.flatten(1)

    def forward(self, images: Tensor) -> Tensor:
        """Images ``[batch, 3, H, W]`` in [0, 1] -> logits ``[batch, num_classes]``."""
        return self.classifier(self.forward_features(images))  # type: ignore[no-any-return]

    def genotype(self) -> Genotype:
        """The discrete architecture, derived the DARTS way (see :func:`derive_cell`)."""
        with torch.no_grad():
            normal = derive_cell(self.op_weights("normal"), self.edge_weights("normal"))
            reduce = derive_cell(self.op_weights("reduce"), self.edge_weights("reduce"))
        concat = tuple(range(2, 2 + NODES))
        return validate_genotype(
            Genotype(normal=normal, normal_concat=concat, reduce=reduce, reduce_concat=concat)
        )


def derive_cell(op_weights: Tensor, edge_weights: Tensor) -> tuple[tuple[str, int], ...]:
    """Keep each node's two strongest incoming edges, each with its strongest real op.

    An edge's strength is its largest op weight other than ``none``, times its PC-DARTS edge
    weight; the kept edge gets that op (DARTS, Liu et al. 2019, section 2.4). Edges are
    listed per node, strongest first.

    Inputs:
        op_weights ``[num_edges, len(PRIMITIVES)]`` (softmax(alpha)); edge_weights
        ``[num_edges]`` (the per-node softmax(beta) of edge normalisation, which the search
        applies at every K, so also without partial channels).
    Outputs:
        ``2 * NODES`` edges ``(op_name, input_state)``.
    """
    w = (op_weights.detach() * edge_weights.detach().unsqueeze(-1)).cpu().tolist()
    none = PRIMITIVES.index("none")
    gene: list[tuple[str, int]] = []
    start = 0
    for i in range(NODES):
        n = 2 + i
        rows = w[start : start + n]
        real = [k for k in range(len(PRIMITIVES)) if k != none]
        best = [max(real, key=r.__getitem__) for r in rows]
        strength = [rows[j][best[j]] for j in range(n)]
        for j in sorted(range(n), key=lambda j: -strength[j])[:2]:
            gene.append((PRIMITIVES[best[j]], j))
        start += n
    return tuple(gene)
