"""Receiver channel knowledge: perfect, none, or least-squares estimates from a pilot block."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import NamedTuple

import torch
from torch import Tensor

from rkdsc_core._validate import SNR_DB_MAX, SNR_DB_MIN, check_complex
from rkdsc_core.channel.model import ChannelOutput

__all__ = [
    "CSIEstimate",
    "ChannelKnowledge",
    "equalize",
    "estimate_ls",
    "insert_pilots",
    "pilot_sequence",
    "receiver_csi",
    "split_pilots",
]


class ChannelKnowledge(StrEnum):
    """What the receiver knows about the channel."""

    PERFECT = "perfect"
    """The true gains ``h`` and noise power ``N0`` (side information from the channel)."""
    NONE = "none"
    """Nothing: ``h`` is taken as 1 and N0 is estimated blindly from the received power.

    The blind estimate assumes ``|h| = 1`` (AWGN): ``N0 = E|y|^2 - Es``. Under fading it
    cannot tell a fade from a quiet channel, so a deep fade reads as a high SNR (up to the
    60 dB cap); use ``pilot`` there. A frame with nothing received reads -30 dB.
    """
    PILOT = "pilot"
    """Least-squares ``h`` and ``N0`` from the known pilot block at the start of the frame."""


class CSIEstimate(NamedTuple):
    """The receiver's view of the channel.

    Attributes:
        h: ``[batch, n]`` complex64 gains for the data symbols.
        n0: ``[batch]`` float32 noise power per complex symbol.
        snr_db: ``[batch]`` float32 Es/N0 [dB], clamped to [-30, 60].
    """

    h: Tensor
    n0: Tensor
    snr_db: Tensor


def pilot_sequence(num_pilots: int, *, device: torch.device | str = "cpu") -> Tensor:
    """The known pilot block: a Zadoff-Chu sequence (root 1), unit modulus.

    Outputs:
        ``[num_pilots]`` complex64 with ``|p_k| = 1``.
    """
    if num_pilots < 2:
        raise ValueError(
            f"num_pilots must be >= 2 (h and N0 both need estimating), got {num_pilots}"
        )
    k = torch.arange(num_pilots, dtype=torch.float64, device=device)
    cf = num_pilots % 2
    phase = -math.pi * k * (k + cf) / num_pilots
    return torch.polar(torch.ones_like(phase), phase).to(torch.complex64)


def insert_pilots(x: Tensor, pilots: Tensor) -> Tensor:
    """Transmitter side: prepend the pilot block to each frame.

    Inputs: x ``[batch, n]`` complex64; pilots ``[P]`` complex64.
    Outputs: ``[batch, P + n]`` complex64.
    """
    return torch.cat([pilots.to(x).expand(x.shape[0], -1), x], dim=1)


def split_pilots(y: Tensor, num_pilots: int) -> tuple[Tensor, Tensor]:
    """Receiver side: ``[batch, P + n]`` -> (pilots ``[batch, P]``, data ``[batch, n]``)."""
    return y[:, :num_pilots], y[:, num_pilots:]


def estimate_ls(
    y_pilots: Tensor, pilots: Tensor, received: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Least-squares gain and noise power from the pilots that arrived (block fading model).

    Over the received pilots ``R``: ``h_hat = sum_R conj(p) y / sum_R |p|^2`` and
    ``N0_hat = sum_R |y - h_hat p|^2 / (|R| - 1)`` (unbiased: one complex parameter is
    fitted). A frame with fewer than two received pilots carries no estimate: it gets
    ``h_hat = 0`` and the noise power of the lowest SNR rkdsc accepts (-30 dB), so the
    receiver treats it as unusable instead of dividing by zero.

    Inputs:
        y_pilots: ``[batch, P]`` complex64 received pilots; pilots: ``[P]`` complex64.
        received: ``[batch, P]`` bool, True where a pilot arrived (``None``: all).
    Outputs:
        h_hat ``[batch]`` complex64, n0_hat ``[batch]`` float32.
    """
    check_complex("y_pilots", y_pilots, ndim=2)
    num = y_pilots.shape[1]
    if num != pilots.shape[0] or num < 2:
        raise ValueError(f"y_pilots has {num} pilots, expected {pilots.shape[0]} (>= 2)")
    p = pilots.to(y_pilots)
    w = torch.ones_like(y_pilots.real) if received is None else received.to(y_pilots.real)
    count = w.sum(dim=1)
    energy = (w * p.abs().square()).sum(dim=1)
    h_hat = (w * p.conj() * y_pilots).sum(dim=1) / energy.clamp_min(1e-12)
    resid = (y_pilots - h_hat.unsqueeze(1) * p).abs().square() * w
    n0_hat = resid.sum(dim=1) / (count - 1).clamp_min(1.0)
    usable = count >= 2
    n0_floor = torch.full_like(n0_hat, 10 ** (-SNR_DB_MIN / 10))
    return torch.where(usable, h_hat, torch.zeros_like(h_hat)), torch.where(
        usable, n0_hat, n0_floor
    )


def _to_snr_db(n0: Tensor, es: Tensor | float = 1.0) -> Tensor:
    snr = 10.0 * torch.log10(torch.as_tensor(es) / n0.clamp_min(1e-12))
    return snr.clamp(SNR_DB_MIN, SNR_DB_MAX)


def receiver_csi(
    knowledge: ChannelKnowledge | str,
    out: ChannelOutput,
    *,
    pilots: Tensor | None = None,
) -> CSIEstimate:
    """The receiver's channel estimate for the data part of a frame.

    Args:
        knowledge: see :class:`ChannelKnowledge`.
        out: the channel output. For ``pilot`` it covers the whole frame
            ``[batch, P + n]`` with the pilot block first (see :func:`insert_pilots`);
            otherwise only the data symbols ``[batch, n]``.
        pilots: ``[P]`` the known pilot block, required for ``pilot``.
    """
    k = ChannelKnowledge(knowledge)
    if k is ChannelKnowledge.PERFECT:
        return CSIEstimate(out.h, out.n0, _to_snr_db(out.n0))
    if k is ChannelKnowledge.NONE:
        rx = out.received.float()
        count = rx.sum(1)
        power = (out.y.abs().square() * rx).sum(1) / count.clamp_min(1.0)
        n0 = (power - 1.0).clamp_min(10 ** (-SNR_DB_MAX / 10))  # E|h x|^2 = Es = 1
        n0 = torch.where(count > 0, n0, torch.full_like(n0, 10 ** (-SNR_DB_MIN / 10)))
        h = torch.ones_like(out.y)
        return CSIEstimate(h, n0, _to_snr_db(n0))
    if pilots is None:
        raise ValueError("knowledge='pilot' needs the pilot block: pass pilots=pilot_sequence(P)")
    y_p, y_d = split_pilots(out.y, pilots.shape[0])
    h_hat, n0_hat = estimate_ls(y_p, pilots, out.received[:, : pilots.shape[0]])
    h = h_hat.unsqueeze(1).expand_as(y_d)
    return CSIEstimate(h, n0_hat, _to_snr_db(n0_hat))


def equalize(y: Tensor, h: Tensor, n0: Tensor | None = None) -> Tensor:
    """One-tap equaliser: zero-forcing ``y / h`` or, with ``n0``, MMSE ``conj(h) y / (|h|^2 + N0)``.

    Inputs: y, h ``[batch, n]`` complex64; n0 ``[batch]`` float32 or None.
    Outputs: ``[batch, n]`` complex64; 0 where ``|h| <= 1e-12`` (no estimate, e.g. every
    pilot erased), for both.
    """
    if n0 is None:
        known = h.abs() > 1e-12
        return torch.where(known, y / torch.where(known, h, torch.ones_like(h)), 0)
    return h.conj() * y / (h.abs().square() + n0.unsqueeze(1)).clamp_min(1e-12)
