"""Digital baselines on the student's feature tokens: quantise, then an ideal code or uncoded QPSK.

Quantisation (:func:`quantize_tokens`): each image's ``T x D`` feature values are quantised
uniformly to ``b`` bits between that image's own min and max. The min and max travel as a
64-bit side-information header (two float32) that is counted in the payload and in the
channel uses but is assumed delivered error-free (a protected header). Payload per image:
``T * D * b + 64`` bits.

Baselines (accuracy = the student head on the dequantised tokens, where delivered):

* ``digital-ideal``: a capacity-achieving code in ``L`` channel uses (no pilots; genie
  CSI). An image is delivered error-free iff ``payload <= L * log2(1 + SNR_eff)``, with
  ``SNR_eff = SNR`` on AWGN and ``|h|^2 * SNR`` on block Rayleigh, ``h`` being the same
  per-image gain the semantic link sees (drawn from ``frame_generator(seed, "eval", i)``);
  otherwise the image is lost and counts as wrong (the digital cliff).
* ``digital-qpsk``: uncoded Gray QPSK carrying every payload bit, so it needs
  ``P + ceil(T * D * b / 2) + 32`` channel uses (pilot block, data, header): many more than
  the semantic link's ``P + L``. The data bits go through :func:`modulate`, the same
  :class:`Channel` (per-image generator), the receiver's CSI (``perfect`` or ``pilot``),
  MMSE :func:`equalize` and :func:`demodulate`; bit errors land where they fall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from rkdsc_core.channel import (
    Channel,
    ChannelConfig,
    demodulate,
    equalize,
    frame_generators,
    insert_pilots,
    modulate,
)
from rkdsc_core.link.pipeline import SemanticPipeline

__all__ = [
    "SIDE_INFO_BITS",
    "dequantize_tokens",
    "ideal_code_correct",
    "payload_bits",
    "qpsk_channel_uses",
    "quantize_tokens",
    "uncoded_qpsk_correct",
]

SIDE_INFO_BITS = 64
"""Per-image header: min and max of the feature values as two float32."""


def payload_bits(num_values: int, bits: int) -> int:
    """Bits per image: ``num_values * bits`` plus the min/max header."""
    return num_values * bits + SIDE_INFO_BITS


def qpsk_channel_uses(num_values: int, bits: int, num_pilots: int) -> int:
    """Complex symbols per image for uncoded QPSK: pilots + data + the 64-bit header."""
    return num_pilots + math.ceil(num_values * bits / 2) + SIDE_INFO_BITS // 2


def quantize_tokens(tokens: Tensor, bits: int) -> tuple[Tensor, Tensor, Tensor]:
    """Uniform ``bits``-bit quantisation per image between its min and max.

    Inputs: tokens ``[batch, T, D]``. Outputs: (codes ``[batch, T*D]`` int64 in
    ``[0, 2^bits - 1]``, lo ``[batch]``, hi ``[batch]``).
    """
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in [1, 16], got {bits}")
    flat = tokens.reshape(tokens.shape[0], -1).float()
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    step = ((hi - lo) / (2**bits - 1)).clamp_min(1e-12)
    codes = torch.round((flat - lo.unsqueeze(1)) / step.unsqueeze(1)).clamp(0, 2**bits - 1)
    return codes.long(), lo, hi


def dequantize_tokens(
    codes: Tensor, lo: Tensor, hi: Tensor, bits: int, shape: Sequence[int]
) -> Tensor:
    """Inverse of :func:`quantize_tokens`: ``[batch, T*D]`` codes -> ``[batch, *shape]``."""
    step = (hi - lo) / (2**bits - 1)
    values = lo.unsqueeze(1) + codes.float() * step.unsqueeze(1)
    out: Tensor = values.reshape(codes.shape[0], *shape)
    return out


def _codes_to_bits(codes: Tensor, bits: int) -> Tensor:
    """``[batch, n]`` codes -> ``[batch, n * bits]`` bool, most significant bit first."""
    shifts = torch.arange(bits - 1, -1, -1, device=codes.device)
    out: Tensor = ((codes.unsqueeze(-1) >> shifts) & 1).bool().reshape(codes.shape[0], -1)
    return out


def _bits_to_codes(b: Tensor, bits: int) -> Tensor:
    weights = 2 ** torch.arange(bits - 1, -1, -1, device=b.device)
    return (b.reshape(b.shape[0], -1, bits).long() * weights).sum(-1)


@torch.no_grad()
def _effective_snr(model: str, snr_db: float, seqs: Sequence[int], seed: int) -> Tensor:
    """Per-image SNR (linear): ``|h|^2 * SNR`` with ``h`` from the image's frame generator."""
    gens = frame_generators(seed, "eval", seqs)
    channel = Channel(ChannelConfig(model=model))  # type: ignore[arg-type]
    x = torch.ones(len(seqs), 1, dtype=torch.complex64)
    out = channel(x, snr_db, generator=gens)
    snr: Tensor = out.h[:, 0].abs().square() * 10 ** (snr_db / 10)
    return snr


@torch.no_grad()
def ideal_code_correct(
    pipeline: SemanticPipeline,
    tokens: Tensor,
    labels: Tensor,
    *,
    model: str,
    snr_db: float,
    length: int,
    bits: int,
    seqs: Sequence[int],
    seed: int,
) -> int:
    """Images decoded correctly by the ideal-code baseline (see the module docstring)."""
    codes, lo, hi = quantize_tokens(tokens, bits)
    feats = dequantize_tokens(codes, lo, hi, bits, tokens.shape[1:])
    right = pipeline.student.forward_head(feats).argmax(1) == labels
    capacity = length * torch.log2(1.0 + _effective_snr(model, snr_db, seqs, seed))
    delivered = payload_bits(codes.shape[1], bits) <= capacity
    return int((right & delivered).sum())


@torch.no_grad()
def uncoded_qpsk_correct(
    pipeline: SemanticPipeline,
    tokens: Tensor,
    labels: Tensor,
    *,
    model: str,
    knowledge: str,
    snr_db: float,
    bits: int,
    seqs: Sequence[int],
    seed: int,
) -> int:
    """Images decoded correctly by the uncoded-QPSK baseline (see the module docstring)."""
    codes, lo, hi = quantize_tokens(tokens, bits)
    tx_bits = _codes_to_bits(codes, bits)
    n = tx_bits.shape[1]
    if n % 2:
        tx_bits = torch.cat([tx_bits, torch.zeros_like(tx_bits[:, :1])], dim=1)
    frame = insert_pilots(modulate(tx_bits, "qpsk"), pipeline.pilots)
    channel = Channel(ChannelConfig(model=model))  # type: ignore[arg-type]
    out = channel(frame, snr_db, generator=frame_generators(seed, "eval", seqs))
    csi = pipeline.estimate(knowledge, out)
    p = pipeline.num_pilots
    rx_bits = demodulate(equalize(out.y[:, p:], csi.h, csi.n0), "qpsk")[:, :n]
    feats = dequantize_tokens(_bits_to_codes(rx_bits, bits), lo, hi, bits, tokens.shape[1:])
    return int((pipeline.student.forward_head(feats).argmax(1) == labels).sum())
