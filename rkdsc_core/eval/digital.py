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
* ``digital-pca``: separate source and channel coding done well, so that the bits fit. A
  transform code (:class:`PcaCode`, fit on training-split tokens) keeps the first ``k``
  principal components of the ``T * D`` token vector, each quantised to ``b`` bits, with no
  header. The transmitter knows the average SNR, not the fade, and adapts its rate:
  ``k = floor(L * log2(1 + g * SNR) / b)`` with ``g`` the ``PCA_OUTAGE`` (10%) quantile of
  the channel's ``|h|^2`` (:func:`outage_gain`: 1 on AWGN, 0.1047 on block Rayleigh, a
  seeded estimate of the exact ``-ln 0.9 = 0.1054``), the rate a 10% outage target
  allows. The same capacity test as ``digital-ideal`` then decides delivery, so a deeper
  fade is an outage (about 10% of the images). ``L`` channel uses, genie CSI, no pilots.
  It is the bound a digital system could approach with ideal codes; at a few dozen channel
  uses real codes fall well short of capacity.
* ``digital-pca-qpsk``: the same transform code sent uncoded in exactly the semantic link's
  ``P + L`` channel uses: the first ``k = floor(2 L / b)`` coefficients (at most ``K``), ``b``
  bits each, as Gray QPSK in ``L`` symbols after the link's pilot block, through the same
  :class:`Channel` with the same per-image generator (so the same noise and gain as the
  link at that ``L``), the receiver's CSI, MMSE :func:`equalize` and :func:`demodulate`; bit
  errors land where they fall. The uncoded baseline at the semantic link's channel uses.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

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
    "PCA_OUTAGE",
    "SIDE_INFO_BITS",
    "PcaCode",
    "dequantize_tokens",
    "ideal_code_correct",
    "outage_gain",
    "payload_bits",
    "pca_ideal_correct",
    "pca_qpsk_correct",
    "qpsk_channel_uses",
    "quantize_tokens",
    "uncoded_qpsk_correct",
]

SIDE_INFO_BITS = 64
"""Per-image header: min and max of the feature values as two float32."""

PCA_OUTAGE = 0.1
"""``digital-pca`` on Rayleigh: the outage probability its rate is chosen for."""


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


#: The channel models the evaluation measures (block fading). Rician is left out: the
#: evaluation takes no K factor, and at ``ChannelConfig``'s default K = 0 it is Rayleigh.
EVAL_CHANNELS = ("awgn", "rayleigh")


def eval_channel(model: str) -> Channel:
    """The :class:`Channel` that the evaluation measures ``model`` on.

    Raises:
        ValueError: ``model`` is not one of :data:`EVAL_CHANNELS`.
    """
    if model not in EVAL_CHANNELS:
        raise ValueError(
            f"the evaluation measures channels {', '.join(EVAL_CHANNELS)}, not {model!r}"
            + (" (it takes no K factor)" if model == "rician" else "")
        )
    return Channel(ChannelConfig(model=model))  # type: ignore[arg-type]


def _bits_to_codes(b: Tensor, bits: int) -> Tensor:
    weights = 2 ** torch.arange(bits - 1, -1, -1, device=b.device)
    return (b.reshape(b.shape[0], -1, bits).long() * weights).sum(-1)


@torch.no_grad()
def _effective_snr(
    model: str, snr_db: float, seqs: Sequence[int], seed: int, device: torch.device
) -> Tensor:
    """Per-image SNR (linear) ``[len(seqs)]`` on ``device``: ``|h|^2 * SNR`` with ``h`` from
    the image's frame generator."""
    gens = frame_generators(seed, "eval", seqs)
    channel = eval_channel(model)
    x = torch.ones(len(seqs), 1, dtype=torch.complex64, device=device)
    out = channel(x, snr_db, generator=gens)
    snr: Tensor = out.h[:, 0].abs().square() * 10 ** (snr_db / 10)
    return snr


@functools.cache
@torch.no_grad()
def outage_gain(model: str, outage: float, draws: int = 200_000) -> float:
    """The ``outage`` quantile of the channel's power gain ``|h|^2`` (1.0 on AWGN).

    Estimated from ``draws`` frames of :class:`Channel` (seeded, so always the same value):
    on Rayleigh 0.1047 at a 10% outage, where the exact quantile is ``-ln 0.9 = 0.1054``.
    """
    if not 0.0 < outage < 1.0:
        raise ValueError(f"outage must be in (0, 1), got {outage}")
    channel = eval_channel(model)
    x = torch.ones(draws, 1, dtype=torch.complex64)
    h = channel(x, 40.0, generator=torch.Generator().manual_seed(0)).h[:, 0]
    return float(torch.quantile(h.abs().square().double(), outage))


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
    capacity = length * torch.log2(1.0 + _effective_snr(model, snr_db, seqs, seed, labels.device))
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
    symbols = math.ceil(tx_bits.shape[1] / 2)
    rx_bits = _uncoded_qpsk(pipeline, tx_bits, symbols, model, knowledge, snr_db, seqs, seed)
    feats = dequantize_tokens(_bits_to_codes(rx_bits, bits), lo, hi, bits, tokens.shape[1:])
    return int((pipeline.student.forward_head(feats).argmax(1) == labels).sum())


def _uncoded_qpsk(
    pipeline: SemanticPipeline,
    tx_bits: Tensor,
    symbols: int,
    model: str,
    knowledge: str,
    snr_db: float,
    seqs: Sequence[int],
    seed: int,
) -> Tensor:
    """``tx_bits`` ``[B, n]`` (``n <= 2 * symbols``, zero-padded) as Gray QPSK in ``symbols``
    symbols after the link's pilot block, through the channel with the image's generator,
    the receiver's CSI, MMSE equalisation and demodulation: ``[B, n]`` received bits."""
    n = tx_bits.shape[1]
    if n > 2 * symbols:
        raise ValueError(f"{n} bits do not fit in {symbols} QPSK symbols")
    padded = torch.cat([tx_bits, tx_bits.new_zeros(tx_bits.shape[0], 2 * symbols - n)], dim=1)
    frame = insert_pilots(modulate(padded, "qpsk"), pipeline.pilots)
    channel = eval_channel(model)
    out = channel(frame, snr_db, generator=frame_generators(seed, "eval", seqs))
    csi = pipeline.estimate(knowledge, out)
    p = pipeline.num_pilots
    rx: Tensor = demodulate(equalize(out.y[:, p:], csi.h, csi.n0), "qpsk")[:, :n]
    return rx


@dataclass(frozen=True)
class PcaCode:
    """A transform code for feature tokens: PCA, then a ``bits``-bit uniform quantiser.

    Attributes:
        mean: ``[F]`` float32, the training tokens' mean (``F = T * D``).
        basis: ``[K, F]`` float32, orthonormal rows: the principal directions, strongest
            first.
        scale: ``[K]`` float32 > 0, the standard deviation of each coefficient on the
            training tokens.
        token_shape: ``(T, D)``.
        bits: bits per coefficient; each coefficient ``c / scale`` is clipped to
            ``[-clip, clip]`` and quantised to ``2^bits`` levels (mid-rise: the level
            centres, so no level sits exactly at 0).
        clip: the quantiser's range in standard deviations.
    """

    mean: Tensor
    basis: Tensor
    scale: Tensor
    token_shape: tuple[int, int]
    bits: int
    clip: float = 3.0

    @classmethod
    def fit(
        cls, tokens: Tensor, *, bits: int = 4, max_components: int = 512, clip: float = 3.0
    ) -> PcaCode:
        """Fit on ``tokens`` ``[N, T, D]`` (a training split's clean student tokens).

        Keeps at most ``min(max_components, N - 1, T * D)`` components, dropping those
        whose standard deviation is under 1e-5 of the first's (float32 round-off). Fitted
        on the CPU in float64; the code's tensors lie on ``tokens``' device.
        """
        if not 1 <= bits <= 16:
            raise ValueError(f"bits must be in [1, 16], got {bits}")
        if tokens.ndim != 3 or tokens.shape[0] < 2:
            raise ValueError(f"tokens must be [N >= 2, T, D], got {tuple(tokens.shape)}")
        flat = tokens.reshape(tokens.shape[0], -1).cpu().double()  # MPS has no float64
        mean = flat.mean(0)
        _, sv, vh = torch.linalg.svd(flat - mean, full_matrices=False)
        scale = sv / math.sqrt(flat.shape[0] - 1)
        keep = int(min(max_components, int((scale > 1e-5 * scale[0]).sum())))
        return cls(
            mean=mean.float().to(tokens.device),
            basis=vh[:keep].float().contiguous().to(tokens.device),
            scale=scale[:keep].float().to(tokens.device),
            token_shape=(int(tokens.shape[1]), int(tokens.shape[2])),
            bits=bits,
            clip=clip,
        )

    @property
    def max_components(self) -> int:
        """``K``: the most coefficients this code can send."""
        return int(self.basis.shape[0])

    def components_for(self, capacity_bits: float) -> int:
        """The most components whose ``k * bits`` fit in ``capacity_bits`` (at most ``K``)."""
        return max(0, min(self.max_components, int(capacity_bits // self.bits)))

    def encode(self, tokens: Tensor, k: int) -> Tensor:
        """Tokens ``[B, T, D]`` -> codes ``[B, k]`` int64 in ``[0, 2^bits - 1]``."""
        coeffs = (tokens.reshape(tokens.shape[0], -1).float() - self.mean) @ self.basis[:k].T
        levels = 2**self.bits
        z = (coeffs / self.scale[:k]).clamp(-self.clip, self.clip)
        codes = torch.floor((z + self.clip) / (2 * self.clip) * levels).clamp(0, levels - 1)
        return codes.long()

    def decode(self, codes: Tensor) -> Tensor:
        """Codes ``[B, k]`` -> tokens ``[B, T, D]`` (the missing components are the mean)."""
        k = codes.shape[1]
        z = (codes.float() + 0.5) / 2**self.bits * (2 * self.clip) - self.clip
        flat = self.mean + (z * self.scale[:k]) @ self.basis[:k]
        out: Tensor = flat.reshape(codes.shape[0], *self.token_shape)
        return out


@torch.no_grad()
def pca_ideal_correct(
    pipeline: SemanticPipeline,
    code: PcaCode,
    tokens: Tensor,
    labels: Tensor,
    *,
    model: str,
    snr_db: float,
    length: int,
    seqs: Sequence[int],
    seed: int,
) -> int:
    """Images decoded correctly by the transform-coded baseline (see the module docstring).

    With no component fitting the rate nothing is sent and every image is lost.
    """
    gain = outage_gain(model, PCA_OUTAGE)
    k = code.components_for(length * math.log2(1.0 + gain * 10 ** (snr_db / 10)))
    if k == 0:
        return 0
    feats = code.decode(code.encode(tokens, k))
    right = pipeline.student.forward_head(feats).argmax(1) == labels
    capacity = length * torch.log2(1.0 + _effective_snr(model, snr_db, seqs, seed, labels.device))
    delivered = k * code.bits <= capacity
    return int((right & delivered).sum())


@torch.no_grad()
def pca_qpsk_correct(
    pipeline: SemanticPipeline,
    code: PcaCode,
    tokens: Tensor,
    labels: Tensor,
    *,
    model: str,
    knowledge: str,
    snr_db: float,
    length: int,
    seqs: Sequence[int],
    seed: int,
) -> int:
    """Images decoded correctly by the transform code sent uncoded in ``P + length``
    channel uses (see the module docstring); with ``2 * length < bits`` nothing fits and
    every image is lost."""
    k = code.components_for(2 * length)
    if k == 0:
        return 0
    tx_bits = _codes_to_bits(code.encode(tokens, k), code.bits)
    rx_bits = _uncoded_qpsk(pipeline, tx_bits, length, model, knowledge, snr_db, seqs, seed)
    feats = code.decode(_bits_to_codes(rx_bits, code.bits))
    return int((pipeline.student.forward_head(feats).argmax(1) == labels).sum())
