"""Model complexity: parameter counts and multiply-accumulates (MACs) of one forward call."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_macs", "count_parameters"]


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of (distinct) parameter elements of ``model``; shared tensors count once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, *inputs: Any) -> int:
    """Multiply-accumulates of ``model(*inputs)``, for the whole batch.

    Counted at the aten level with :class:`torch.utils.flop_counter.FlopCounterMode`, so every
    model is measured the same way whatever modules it uses: convolutions (grouped and
    depthwise included), matmuls/linear layers, and attention (the QK^T and AV products of
    ``scaled_dot_product_attention`` and of ``nn.MultiheadAttention``, fused CPU kernels
    included). Element-wise work (activations, normalisation, bias adds, softmax) is not
    counted. MACs = FLOPs / 2. The call runs in eval mode under ``no_grad``; the training
    mode is restored afterwards. Divide by the batch size for MACs per image.
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    try:
        with torch.no_grad(), counter:
            model(*inputs)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def _sdpa_flops(
    query_shape: Sequence[int],
    key_shape: Sequence[int],
    value_shape: Sequence[int],
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    # query [..., Lq, Dqk], key [..., Lk, Dqk], value [..., Lk, Dv]: QK^T plus AV.
    batch = math.prod(query_shape[:-2])
    lq, dqk = query_shape[-2], query_shape[-1]
    lk, dv = key_shape[-2], value_shape[-1]
    return 2 * batch * lq * lk * (dqk + dv)


def _native_mha_flops(
    query_shape: Sequence[int],
    key_shape: Sequence[int],
    value_shape: Sequence[int],
    embed_dim: int,
    num_heads: int,
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    # nn.MultiheadAttention's fused inference path (batch_first [B, L, E] or unbatched [L, E]):
    # q/k/v in-projections, QK^T and AV over all heads, and the out-projection.
    batch = query_shape[0] if len(query_shape) == 3 else 1
    lq, lk, e = query_shape[-2], key_shape[-2], embed_dim
    macs = lq * e * e + 2 * lk * e * e + 2 * lq * lk * e + lq * e * e
    return 2 * batch * macs


def _extra_formulas() -> dict[Any, Callable[..., int]]:
    # Kernels torch's own flop registry misses on CPU (checked on torch 2.13).
    aten = torch.ops.aten
    formulas: dict[Any, Callable[..., int]] = {}
    for name in (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_fused_attention_overrideable",
    ):
        if hasattr(aten, name):
            formulas[getattr(aten, name)] = _sdpa_flops
    if hasattr(aten, "_native_multi_head_attention"):
        formulas[aten._native_multi_head_attention] = _native_mha_flops
    return formulas
