"""The RKD-SC link: student + CAT encoder at the transmitter, channel, CAT decoder + head at
the receiver. Training, evaluation and the services all call these same functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rkdsc_core.channel import (
    Channel,
    ChannelKnowledge,
    ChannelOutput,
    CSIEstimate,
    GeneratorLike,
    equalize,
    insert_pilots,
    pilot_sequence,
    receiver_csi,
)
from rkdsc_core.models.base import Backbone
from rkdsc_core.models.cat import CATCodec

__all__ = ["LinkOutput", "SemanticPipeline", "TxFrame"]


class TxFrame(NamedTuple):
    """What the transmitter puts on the air for a batch of images.

    Attributes:
        frame: ``[batch, P + l_max]`` complex64: the pilot block, then the data symbols
            (Es = 1 over the first ``L`` data symbols; zero beyond ``L``).
        mask: ``[batch, P + l_max]`` bool, True for the pilots and the first ``L`` data symbols.
        lengths: ``[batch]`` int64, ``L`` per image.
    """

    frame: Tensor
    mask: Tensor
    lengths: Tensor


@dataclass(frozen=True)
class LinkOutput:
    """One pass through the link (see :meth:`SemanticPipeline.forward`)."""

    logits: Tensor
    """``[batch, classes]`` receiver logits (meaningless where ``frame_lost``)."""
    tokens: Tensor
    """``[batch, T, D]`` decoded feature tokens (the robust-distillation target's input)."""
    channel: ChannelOutput
    csi: CSIEstimate
    tx: TxFrame


class SemanticPipeline(nn.Module):
    """Student encoder + CAT codec around a channel, with a known pilot block.

    Args:
        student: the semantic encoder and classifier head (any :class:`Backbone`).
        codec: the CAT encoder/decoder; its ``token_dim``/``num_tokens`` must match the student.
        num_pilots: ``P``, pilot symbols sent before the data for channel estimation.
    """

    pilots: Tensor

    def __init__(self, student: Backbone, codec: CATCodec, *, num_pilots: int = 8) -> None:
        super().__init__()
        cfg = codec.config
        if (student.num_tokens, student.token_dim) != (cfg.num_tokens, cfg.token_dim):
            raise ValueError(
                f"codec expects tokens [T={cfg.num_tokens}, D={cfg.token_dim}] but the student "
                f"makes [T={student.num_tokens}, D={student.token_dim}]"
            )
        self.student = student
        self.codec = codec
        self.num_pilots = num_pilots
        self.register_buffer("pilots", pilot_sequence(num_pilots), persistent=False)

    @property
    def lengths(self) -> tuple[int, ...]:
        """The allowed symbol counts ``L``."""
        return self.codec.config.lengths

    def transmit(
        self, images: Tensor, snr_db: Tensor | float, length: int | Tensor | None = None
    ) -> TxFrame:
        """Images ``[batch, 3, H, W]`` in [0, 1] -> pilots + ``L`` symbols per image.

        Args:
            snr_db: the SNR [dB] the transmitter assumes (conditions the CAT encoder).
            length: ``L`` for every image, ``[batch]`` per image, or ``None`` for ``l_max``.
        """
        return self.transmit_tokens(self.student.forward_tokens(images), snr_db, length)

    def transmit_tokens(
        self, tokens: Tensor, snr_db: Tensor | float, length: int | Tensor | None = None
    ) -> TxFrame:
        """Like :meth:`transmit`, from the student's feature tokens ``[batch, T, D]``."""
        symbols, mask = self.codec.encoder.encode(tokens, snr_db, length)
        frame = insert_pilots(symbols, self.pilots)
        pilot_mask = torch.ones(symbols.shape[0], self.num_pilots, dtype=torch.bool)
        full_mask = torch.cat([pilot_mask.to(mask.device), mask], dim=1)
        return TxFrame(frame, full_mask, mask.sum(dim=1))

    def receive(self, y: Tensor, received: Tensor, csi: CSIEstimate) -> tuple[Tensor, Tensor]:
        """Received frame -> (logits ``[batch, classes]``, tokens ``[batch, T, D]``).

        Inputs:
            y: ``[batch, P + l_max]`` complex64 received frame (pilots first).
            received: ``[batch, P + l_max]`` bool, True where a symbol arrived.
            csi: the receiver's channel estimate for the data part (``h`` ``[batch, l_max]``).
        The data symbols are MMSE-equalised with ``csi`` and decoded at ``csi.snr_db``.
        """
        p = self.num_pilots
        data, data_mask = y[:, p:], received[:, p:]
        x_hat = equalize(data, csi.h, csi.n0)
        tokens = self.codec.decoder(x_hat, data_mask, csi.snr_db)
        return self.student.forward_head(tokens), tokens

    def apply_channel(
        self,
        channel: Channel,
        tx: TxFrame,
        snr_db: Tensor | float,
        *,
        generator: GeneratorLike = None,
    ) -> ChannelOutput:
        """Send ``tx`` through ``channel``; the output covers the full ``P + l_max`` frame.

        If every image has the same ``L``, only the ``P + L`` sent symbols are impaired
        (the rest come back as not received, gain 1), exactly as the emulator does.
        """
        lengths = tx.lengths
        if lengths.numel() and bool((lengths == lengths[0]).all()):
            n = self.num_pilots + int(lengths[0])
            out = channel(tx.frame[:, :n], snr_db, mask=tx.mask[:, :n], generator=generator)
            pad = tx.frame.shape[1] - n
            return ChannelOutput(
                F.pad(out.y, (0, pad)),
                F.pad(out.h, (0, pad), value=1.0),
                out.n0,
                F.pad(out.received, (0, pad), value=False),
                out.frame_lost,
            )
        out = channel(tx.frame, snr_db, mask=tx.mask, generator=generator)
        assert isinstance(out, ChannelOutput)
        return out

    def estimate(self, knowledge: ChannelKnowledge | str, out: ChannelOutput) -> CSIEstimate:
        """The receiver's CSI for a whole-frame channel output (see :func:`receiver_csi`)."""
        k = ChannelKnowledge(knowledge)
        if k is ChannelKnowledge.PILOT:
            return receiver_csi(k, out, pilots=self.pilots)
        p = self.num_pilots
        data_out = ChannelOutput(
            out.y[:, p:], out.h[:, p:], out.n0, out.received[:, p:], out.frame_lost
        )
        return receiver_csi(k, data_out)

    def forward(
        self,
        images: Tensor,
        channel: Channel,
        snr_db: Tensor | float,
        *,
        length: int | Tensor | None = None,
        knowledge: ChannelKnowledge | str = ChannelKnowledge.PILOT,
        tx_snr_db: Tensor | float | None = None,
        generator: GeneratorLike = None,
    ) -> LinkOutput:
        """Images -> transmitter -> ``channel`` at ``snr_db`` -> receiver (differentiable).

        Args:
            tx_snr_db: the SNR the transmitter assumes; default ``snr_db`` (ideal feedback).
            generator: per-frame generators make each frame's impairment reproducible.

        With one ``L`` for the batch, only the ``P + L`` symbols sent cross the channel, as
        in the emulator, so a frame drawn from ``frame_generator(seed, link, seq)`` is
        impaired identically here and in the networked system.
        """
        tx = self.transmit(images, snr_db if tx_snr_db is None else tx_snr_db, length)
        out = self.apply_channel(channel, tx, snr_db, generator=generator)
        csi = self.estimate(knowledge, out)
        logits, tokens = self.receive(out.y, out.received, csi)
        return LinkOutput(logits, tokens, out, csi, tx)
