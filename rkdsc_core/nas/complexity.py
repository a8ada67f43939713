"""Per-operation cost table and the supernet's expected complexity under softmax(alpha)."""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rkdsc_core.models.complexity import count_macs, count_parameters
from rkdsc_core.models.operations import OPS, PRIMITIVES
from rkdsc_core.nas.supernet import NODES, SearchNetwork

__all__ = ["COST_KINDS", "CostKind", "ExpectedCost", "cost_table", "op_cost"]

CostKind = Literal["params", "macs"]
COST_KINDS: tuple[CostKind, ...] = ("params", "macs")


def _check_kind(kind: str) -> None:
    if kind not in COST_KINDS:
        raise ValueError(f"cost kind must be one of {', '.join(COST_KINDS)}, got {kind!r}")


@functools.lru_cache(maxsize=4096)
def op_cost(
    name: str, C: int, resolution: int, *, stride: int = 1, kind: CostKind = "params"
) -> int:
    """Cost of one op as the derived network builds it (``OPS[name](C, stride, affine=True)``).

    Args:
        name: a primitive from :data:`PRIMITIVES`.
        C: channels in and out. resolution: input height = width [pixels]. stride: 1 or 2.
        kind: ``"params"`` (parameter elements, BatchNorm's affine pair included) or
            ``"macs"`` (multiply-accumulates per image, convolutions only; pools, skip and
            ``none`` cost 0 MACs, as :func:`~rkdsc_core.models.complexity.count_macs` counts).
    """
    _check_kind(kind)
    if name not in OPS:
        raise ValueError(f"unknown op {name!r}; known ops: {', '.join(PRIMITIVES)}")
    with torch.random.fork_rng(devices=[]):  # building an op must not move the global RNG
        op = OPS[name](C, stride, True)
    if kind == "params":
        return count_parameters(op)
    return count_macs(op, torch.zeros(1, C, resolution, resolution))


def cost_table(
    C: int,
    resolution: int,
    *,
    stride: int = 1,
    kind: CostKind = "params",
    normalize: bool = True,
) -> dict[str, float]:
    """``{primitive: cost}`` for every op at ``C`` channels and ``resolution`` pixels.

    With ``normalize`` the costs are divided by the largest one (``sep_conv_5x5``), so
    they lie in [0, 1]; otherwise they are raw counts (see :func:`op_cost`).
    """
    raw = {n: float(op_cost(n, C, resolution, stride=stride, kind=kind)) for n in PRIMITIVES}
    if not normalize:
        return raw
    top = max(raw.values()) or 1.0
    return {n: v / top for n, v in raw.items()}


class ExpectedCost(nn.Module):
    """Expected complexity of the network derived from a supernet, differentiable in alpha.

    For each cell kind, ``M[e, o]`` is the summed cost of op ``o`` on edge ``e`` over every
    cell of that kind (each at its own channels, resolution and edge stride, as in
    :attr:`SearchNetwork.cell_specs`). The expected cost is

        ``(sum(softmax(alpha_normal) * M_normal) + sum(softmax(alpha_reduce) * M_reduce)) / Z``

    with ``Z = sum over edges of max_o M[e, o]`` (every edge ``sep_conv_5x5``), so it lies in
    [0, 1]: the fraction of the most expensive cell stack. Stem, preprocessing and
    classifier are fixed and not counted. The edge weights (betas) do not enter.

    Inputs (forward): alphas_normal, alphas_reduce ``[num_edges, len(PRIMITIVES)]`` logits.
    Outputs: scalar float32.
    """

    normal: Tensor
    reduce: Tensor
    scale: Tensor

    def __init__(self, normal: Tensor, reduce: Tensor) -> None:
        super().__init__()
        if normal.shape != reduce.shape or normal.ndim != 2:
            raise ValueError(f"cost matrices must match: {normal.shape} vs {reduce.shape}")
        scale = normal.max(dim=1).values.sum() + reduce.max(dim=1).values.sum()
        self.register_buffer("normal", normal.float(), persistent=False)
        self.register_buffer("reduce", reduce.float(), persistent=False)
        self.register_buffer("scale", scale.float().clamp_min(1.0), persistent=False)

    @classmethod
    def for_network(cls, network: SearchNetwork, kind: CostKind = "params") -> ExpectedCost:
        """The cost matrices of ``network``'s cell layout, for ``kind`` ``params`` or ``macs``."""
        _check_kind(kind)
        mats = {k: torch.zeros(network.alphas_normal.shape) for k in ("normal", "reduce")}
        for spec in network.cell_specs:
            e = 0
            for i in range(NODES):
                for j in range(2 + i):
                    # In a reduction cell the input edges stride 2; node-to-node edges run
                    # at the halved resolution.
                    reduce = spec.kind == "reduce"
                    stride = 2 if reduce and j < 2 else 1
                    res = (spec.resolution + 1) // 2 if reduce and j >= 2 else spec.resolution
                    row = [op_cost(n, spec.C, res, stride=stride, kind=kind) for n in PRIMITIVES]
                    mats[spec.kind][e] += torch.tensor(row, dtype=torch.float32)
                    e += 1
        return cls(mats["normal"], mats["reduce"])

    def forward(self, alphas_normal: Tensor, alphas_reduce: Tensor) -> Tensor:
        total = (F.softmax(alphas_normal, dim=-1) * self.normal).sum() + (
            F.softmax(alphas_reduce, dim=-1) * self.reduce
        ).sum()
        return total / self.scale
