"""The composite wireless channel: fading, noise, symbol erasure and frame loss in one step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from rkdsc_core._validate import check_complex
from rkdsc_core.channel.awgn import complex_noise
from rkdsc_core.channel.fading import FadingKind, rician_gains
from rkdsc_core.channel.mapping import snr_db_to_n0
from rkdsc_core.channel.rng import GeneratorLike, draw

__all__ = ["CHANNEL_MODELS", "Channel", "ChannelConfig", "ChannelModel", "ChannelOutput"]

ChannelModel = Literal["awgn", "rayleigh", "rician"]
CHANNEL_MODELS: tuple[ChannelModel, ...] = ("awgn", "rayleigh", "rician")


@dataclass(frozen=True)
class ChannelConfig:
    """Structure of a channel; the SNR is a per-call argument, so one instance serves all SNRs.

    Attributes:
        model: ``awgn``, ``rayleigh`` or ``rician``.
        fading: ``block`` (one gain per frame) or ``fast`` (one per symbol); ignored for AWGN.
        k_factor: Rician K (linear, >= 0); only used by ``rician``.
        erasure_prob: probability that each symbol is erased (received as 0, flagged).
        frame_loss_prob: probability that a whole frame is lost.
    """

    model: ChannelModel = "awgn"
    fading: FadingKind = "block"
    k_factor: float = 0.0
    erasure_prob: float = 0.0
    frame_loss_prob: float = 0.0

    def __post_init__(self) -> None:
        if self.model not in CHANNEL_MODELS:
            raise ValueError(f"model must be one of {CHANNEL_MODELS}, got {self.model!r}")
        if self.fading not in ("block", "fast"):
            raise ValueError(f"fading must be 'block' or 'fast', got {self.fading!r}")
        if not math.isfinite(self.k_factor) or self.k_factor < 0:
            raise ValueError(f"k_factor must be a finite K >= 0 (linear), got {self.k_factor!r}")
        for name in ("erasure_prob", "frame_loss_prob"):
            p = getattr(self, name)
            if not math.isfinite(p) or not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {p!r}")


class ChannelOutput(NamedTuple):
    """What a channel use returns (``batch`` frames of ``n`` complex symbols).

    Attributes:
        y: ``[batch, n]`` complex64 received symbols (0 where not received).
        h: ``[batch, n]`` complex64 true gains (1 for AWGN): perfect CSI.
        n0: ``[batch]`` float32 true noise power per complex symbol.
        received: ``[batch, n]`` bool, True where a sent symbol arrived (not erased, frame kept).
        frame_lost: ``[batch]`` bool, True where the whole frame was lost.
    """

    y: Tensor
    h: Tensor
    n0: Tensor
    received: Tensor
    frame_lost: Tensor


class Channel(nn.Module):
    """``y = h * x + n`` with erasures and frame loss; differentiable in ``x``.

    Every frame's draws come in a fixed order from its generator (gains, noise,
    erasures, frame loss), so with per-frame generators from
    :func:`~rkdsc_core.channel.rng.frame_generator` the impairment of a frame depends only
    on (seed, link id, sequence number). The emulator calls the same module under
    ``torch.no_grad()``.
    """

    def __init__(self, config: ChannelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ChannelConfig()

    def forward(
        self,
        x: Tensor,
        snr_db: Tensor | float,
        *,
        mask: Tensor | None = None,
        generator: GeneratorLike = None,
    ) -> ChannelOutput:
        """Inputs:
        x: ``[batch, n]`` complex64, unit average energy over the sent symbols.
        snr_db: Es/N0 [dB] in [-30, 60], scalar or ``[batch]``.
        mask: ``[batch, n]`` bool, True where a symbol is sent (``None``: all).
        generator: one for the batch, one per frame, or ``None``.
        """
        check_complex("x", x, ndim=2)
        batch = x.shape[0]
        if mask is not None and (mask.shape != x.shape or mask.dtype != torch.bool):
            raise ValueError(
                f"mask must be bool of shape {tuple(x.shape)}, got {mask.dtype} {tuple(mask.shape)}"
            )
        n0 = snr_db_to_n0(snr_db, batch).to(x.device).expand(batch).contiguous()
        if not isinstance(generator, torch.Generator | None) and len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for {batch} frames")
        # With one generator per frame, each draws its frame's row of every draw below
        # (rkdsc_core.channel.rng.draw), so a frame's impairment does not depend on its batch.
        h, noise, kept, frame_lost = self._impair(x.shape, generator, x.device)
        noise = noise * torch.sqrt(n0).unsqueeze(1)
        received = kept if mask is None else kept & mask
        y = (h * x + noise) * received
        return ChannelOutput(y, h, n0, received, frame_lost)

    def _impair(
        self, shape: torch.Size | tuple[int, int], g: GeneratorLike, device: torch.device
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Draw (gains, unit-power noise, kept-symbol flags, frame lost) for ``shape`` frames."""
        batch, n = shape
        c = self.config
        if c.model == "awgn":
            h = torch.ones(batch, n, dtype=torch.complex64, device=device)
        else:
            k = c.k_factor if c.model == "rician" else 0.0
            h = rician_gains(batch, n, c.fading, k, g, device=device)
        noise = complex_noise((batch, n), 1.0, g, device=device)  # a float: no GPU sync
        kept = torch.ones(batch, n, dtype=torch.bool, device=device)
        if c.erasure_prob:
            kept &= draw(torch.rand, (batch, n), g, device=device) >= c.erasure_prob
        lost = torch.zeros(batch, dtype=torch.bool, device=device)
        if c.frame_loss_prob:
            lost = draw(torch.rand, (batch,), g, device=device) < c.frame_loss_prob
            kept &= ~lost.unsqueeze(1)
        return h, noise, kept, lost
