"""The memory format training uses: channels-last (NHWC) unless a CPU kernel gets it wrong.

Channels-last makes convolutions faster on CPUs and GPUs, so training converts models and
batches to it. One oneDNN kernel is wrong there: the CPU backward pass of a 1x1 convolution
with stride > 1 and fewer input channels than its channel block (8 with AVX2) computes wrong
weight gradients with several threads (relative error ~0.9 on the project's AVX2 machine)
and corrupts the heap with one (oneDNN issue #6035, in torch 2.13.0). Only tiny widths have
such layers (a ResNet of width 4 or 8, a DARTS student with C = 2); for them training stays
in the default (NCHW) format. The bound below is the AVX-512 block (16), to be safe on both.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

__all__ = ["training_memory_format"]

log = logging.getLogger(__name__)

_CPU_SAFE_CHANNELS = 16
"""1x1 strided convolutions with fewer input channels per group than this stay NCHW on CPU."""


def training_memory_format(model: nn.Module, device: torch.device | str) -> torch.memory_format:
    """``torch.channels_last``, or ``torch.contiguous_format`` on CPU for a model with a 1x1
    strided convolution of fewer than 16 input channels per group (see the module docstring)."""
    if torch.device(device).type != "cpu":
        return torch.channels_last
    for name, m in model.named_modules():
        if (
            isinstance(m, nn.Conv2d)
            and m.kernel_size == (1, 1)
            and m.stride != (1, 1)
            and m.in_channels // m.groups < _CPU_SAFE_CHANNELS
        ):
            log.info(
                "%s: %d-channel 1x1 strided convolution; training in NCHW, not channels-last "
                "(oneDNN computes its CPU weight gradient wrong in channels-last)",
                name,
                m.in_channels,
            )
            return torch.contiguous_format
    return torch.channels_last
