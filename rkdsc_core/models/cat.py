"""The channel-aware transformer (CAT): feature tokens <-> a variable-length prefix of symbols.

Design (RKD-SC, Ding et al. 2025):

* **Encoder** (transmitter). Feature tokens ``[B, T, D]`` are projected to ``d_model`` and
  given positions; one SNR token (an MLP of ``snr_db / 20``) and one length token (a learned
  embedding of the requested length ``L``) condition the sequence; ``l_max /
  symbols_per_slot`` learned *slot queries* are appended. Pre-norm transformer blocks attend
  within one image only (attention never mixes the batch dimension). Slot ``s`` emits
  ``2 * symbols_per_slot`` reals, paired into complex symbols ``s * symbols_per_slot ...``,
  so symbols are ordered slot 0 first; training with random ``L`` per sample (nested-dropout
  style) pushes the most important content into the first slots.
* **Prefix mask and power.** All ``l_max`` symbols are always computed; positions ``>= L``
  are zeroed and the first ``L`` are scaled to unit average energy per complex symbol, per
  image (:func:`~rkdsc_core.channel.normalize_power`). Hence the first ``L`` symbols depend
  on ``L`` only through the length token and that scale: with ``length_conditioning=False``
  they are exactly a rescaled prefix of the ``l_max`` code.
* **Decoder** (receiver). Received symbols are regrouped into slots of ``symbols_per_slot``
  (``2 * symbols_per_slot`` reals plus a per-symbol "received" indicator), unreceived
  symbols are zeroed, slots with nothing received are replaced by a learned mask token;
  with slot positions, an SNR token and ``T`` learned output queries, transformer blocks
  produce feature tokens ``[B, T, D]`` for the student's ``forward_head``. Any mask works
  (prefixes, or erasures in the middle).

Symbol conventions are those of :mod:`rkdsc_core.channel.mapping` (``Es = 1`` per complex
symbol over the sent symbols; SNR is Es/N0 [dB]).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rkdsc_core._validate import check_complex, check_finite, check_snr_db
from rkdsc_core.channel.mapping import complex_to_real, normalize_power, real_to_complex
from rkdsc_core.registry import register_model

__all__ = [
    "CATCodec",
    "CATConfig",
    "CATDecoder",
    "CATEncoder",
    "cat_codec",
    "prefix_mask",
]


@dataclass(frozen=True)
class CATConfig:
    """Configuration of the CAT encoder/decoder (saved with checkpoints).

    Attributes:
        token_dim: ``D``, channels of each input/output feature token.
        num_tokens: ``T``, feature tokens per image.
        d_model: transformer width.
        enc_depth, dec_depth: transformer blocks in the encoder / decoder.
        heads: attention heads (must divide ``d_model``).
        mlp_ratio: hidden width of each block's MLP, as a multiple of ``d_model``.
        l_min, l_max: fewest / most complex symbols per image.
        lengths: the allowed symbol counts ``L`` (strictly increasing, within
            ``[l_min, l_max]``, containing ``l_max``).
        symbols_per_slot: complex symbols emitted / read per slot token (divides ``l_max``).
        dropout: dropout in attention and MLPs (training only).
        length_conditioning: give the encoder a learned embedding of ``L``; without it the
            first ``L`` symbols are exactly a rescaled prefix of the ``l_max`` code.
    """

    token_dim: int = 128
    num_tokens: int = 16
    d_model: int = 64
    enc_depth: int = 2
    dec_depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    l_min: int = 8
    l_max: int = 64
    lengths: tuple[int, ...] = (8, 16, 32, 64)
    symbols_per_slot: int = 4
    dropout: float = 0.0
    length_conditioning: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "lengths", tuple(self.lengths))
        for name in (
            "token_dim",
            "num_tokens",
            "d_model",
            "heads",
            "l_min",
            "l_max",
            "symbols_per_slot",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("enc_depth", "dec_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if self.d_model % self.heads:
            raise ValueError(f"heads={self.heads} must divide d_model={self.d_model}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if self.l_min > self.l_max:
            raise ValueError(f"l_min={self.l_min} must be <= l_max={self.l_max}")
        if self.l_max % self.symbols_per_slot:
            raise ValueError(
                f"symbols_per_slot={self.symbols_per_slot} must divide l_max={self.l_max}"
            )
        ls = self.lengths
        if (
            not ls
            or any(isinstance(v, bool) or not isinstance(v, int) for v in ls)
            or any(a >= b for a, b in itertools.pairwise(ls))
            or ls[0] < self.l_min
            or ls[-1] != self.l_max
        ):
            raise ValueError(
                f"lengths must be strictly increasing ints in [l_min={self.l_min}, "
                f"l_max={self.l_max}] ending with l_max, got {ls!r}"
            )

    @property
    def num_slots(self) -> int:
        """Slot tokens: ``l_max / symbols_per_slot``."""
        return self.l_max // self.symbols_per_slot

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (for checkpoints)."""
        d = asdict(self)
        d["lengths"] = list(self.lengths)
        return d


def prefix_mask(length: Tensor, l_max: int) -> Tensor:
    """Mask of the first ``L`` positions of each row.

    Inputs:
        length: ``[batch]`` integer, symbols sent per image.
    Outputs:
        ``[batch, l_max]`` bool, True at positions ``< length[b]``.
    """
    positions = torch.arange(l_max, device=length.device)
    return positions.unsqueeze(0) < length.unsqueeze(1)


class _Block(nn.Module):
    """Pre-norm transformer block over ``[batch, n, d]``; attention is per sample."""

    def __init__(self, d_model: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        hidden = max(1, round(mlp_ratio * d_model))
        self.mlp = nn.Sequential(
            nn.Linear(d_model, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, d_model),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).unbind(dim=2)
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(b, n, d)))
        out: Tensor = x + self.drop(self.mlp(self.norm2(x)))
        return out


class _Transformer(nn.Module):
    """``depth`` pre-norm blocks then a LayerNorm: ``[batch, n, d]`` -> ``[batch, n, d]``."""

    def __init__(self, cfg: CATConfig, depth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            _Block(cfg.d_model, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)  # type: ignore[no-any-return]


class _SNREmbedding(nn.Module):
    """SNR [dB] ``[batch]`` -> one conditioning token ``[batch, 1, d_model]`` (MLP of snr/20)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(1, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def forward(self, snr_db: Tensor) -> Tensor:
        first = cast(nn.Linear, self.mlp[0])
        x = (snr_db / 20.0).unsqueeze(-1).to(first.weight.dtype)  # the model's dtype
        return self.mlp(x).unsqueeze(1)  # type: ignore[no-any-return]


def _init_embedding(t: Tensor) -> None:
    nn.init.trunc_normal_(t, std=0.02)


def _snr_per_row(snr_db: Tensor | float, batch: int, device: torch.device) -> Tensor:
    return check_snr_db(snr_db, batch).to(device).expand(batch).contiguous()


class CATEncoder(nn.Module):
    """Transmitter half of CAT: feature tokens -> up to ``l_max`` complex symbols per image.

    See the module docstring for the design and the prefix property.

    Inputs (:meth:`encode` and :meth:`forward`):
        tokens: ``[batch, T, D]`` real float (float32 expected), finite.
        snr_db: Es/N0 [dB] in [-30, 60], scalar or ``[batch]`` (true or estimated SNR).
        length: symbols to send ``L``: an int, a ``[batch]`` integer tensor (one per image)
            or ``None`` (= ``l_max``); each must be one of ``config.lengths``.
    Outputs:
        :meth:`encode`: ``(symbols, mask)``, symbols ``[batch, l_max]`` complex64 with zeros
        at positions ``>= L`` and unit average energy per complex symbol over the first
        ``L``; mask ``[batch, l_max]`` bool, True where sent. :meth:`forward`: symbols only.
    """

    allowed_lengths: Tensor

    def __init__(self, config: CATConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else CATConfig()
        self.config = cfg
        d = cfg.d_model
        self.in_proj = nn.Linear(cfg.token_dim, d)
        self.token_pos = nn.Parameter(torch.zeros(1, cfg.num_tokens, d))
        self.slot_queries = nn.Parameter(torch.zeros(1, cfg.num_slots, d))
        self.snr_embed = _SNREmbedding(d)
        self.length_embed = nn.Embedding(len(cfg.lengths), d) if cfg.length_conditioning else None
        self.transformer = _Transformer(cfg, cfg.enc_depth)
        self.out_proj = nn.Linear(d, 2 * cfg.symbols_per_slot)
        self.register_buffer(
            "allowed_lengths", torch.tensor(cfg.lengths, dtype=torch.long), persistent=False
        )
        _init_embedding(self.token_pos)
        _init_embedding(self.slot_queries)
        if self.length_embed is not None:
            _init_embedding(self.length_embed.weight)

    def _check_tokens(self, tokens: Tensor) -> None:
        cfg = self.config
        if not isinstance(tokens, Tensor):
            raise TypeError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
        if tokens.is_complex() or not tokens.is_floating_point():
            raise TypeError(f"tokens must be real float32 features, got {tokens.dtype}")
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != (cfg.num_tokens, cfg.token_dim):
            raise ValueError(
                f"tokens must have shape [batch, T={cfg.num_tokens}, D={cfg.token_dim}], "
                f"got {tuple(tokens.shape)}"
            )
        check_finite("tokens", tokens)

    def _lengths(self, length: int | Tensor | None, batch: int, device: torch.device) -> Tensor:
        cfg = self.config
        allowed = f"one of {list(cfg.lengths)} (within [l_min={cfg.l_min}, l_max={cfg.l_max}])"
        if length is None:
            return torch.full((batch,), cfg.l_max, dtype=torch.long, device=device)
        if isinstance(length, Tensor):
            if length.is_floating_point() or length.is_complex() or length.dtype == torch.bool:
                raise TypeError(f"length must be an integer tensor, got {length.dtype}")
            if length.ndim > 1 or (length.ndim == 1 and length.shape[0] not in (1, batch)):
                raise ValueError(
                    f"length must be an int or a [batch]={batch} tensor, got shape "
                    f"{tuple(length.shape)}"
                )
            lengths = length.to(device=device, dtype=torch.long).reshape(-1).expand(batch)
        elif isinstance(length, int) and not isinstance(length, bool):
            lengths = torch.full((batch,), length, dtype=torch.long, device=device)
        else:
            raise TypeError(f"length must be an int, a [batch] tensor or None, got {length!r}")
        ok = (lengths.unsqueeze(1) == self.allowed_lengths.to(device)).any(dim=1)
        if not bool(ok.all()):
            bad = sorted({int(v) for v in lengths[~ok].tolist()})
            raise ValueError(f"length must be {allowed}; got {bad}")
        return lengths.contiguous()

    def encode(
        self, tokens: Tensor, snr_db: Tensor | float, length: int | Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Tokens -> ``(symbols [batch, l_max] complex64, mask [batch, l_max] bool)``."""
        cfg = self.config
        self._check_tokens(tokens)
        batch, device = tokens.shape[0], tokens.device
        snr = _snr_per_row(snr_db, batch, device)
        lengths = self._lengths(length, batch, device)

        x = self.in_proj(tokens.to(self.in_proj.weight.dtype)) + self.token_pos
        cond = [self.snr_embed(snr)]
        if self.length_embed is not None:
            index = (lengths.unsqueeze(1) == self.allowed_lengths).long().argmax(dim=1)
            cond.append(self.length_embed(index).unsqueeze(1))
        slots = self.slot_queries.expand(batch, -1, -1)
        h = self.transformer(torch.cat([*cond, x, slots], dim=1))
        reals = self.out_proj(h[:, -cfg.num_slots :])  # [batch, slots, 2 * symbols_per_slot]
        raw = real_to_complex(reals.flatten(1))  # [batch, l_max], slot 0 first
        mask = prefix_mask(lengths, cfg.l_max)
        return normalize_power(raw, mask), mask

    def forward(
        self, tokens: Tensor, snr_db: Tensor | float, length: int | Tensor | None = None
    ) -> Tensor:
        """Tokens ``[batch, T, D]`` -> symbols ``[batch, l_max]`` complex64 (see :meth:`encode`)."""
        return self.encode(tokens, snr_db, length)[0]


class CATDecoder(nn.Module):
    """Receiver half of CAT: received symbols (any subset) -> feature tokens.

    Inputs:
        received: ``[batch, l_max]`` complex64, finite (channel output, equalised if faded).
        mask: ``[batch, l_max]`` bool, True where a symbol was received; other positions
            are ignored (zeroed).
        snr_db: Es/N0 [dB] in [-30, 60], scalar or ``[batch]`` (true or estimated).
    Outputs:
        ``[batch, T, D]`` float32 feature tokens (input to the student's ``forward_head``).
    """

    def __init__(self, config: CATConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else CATConfig()
        self.config = cfg
        d, sps = cfg.d_model, cfg.symbols_per_slot
        self.in_proj = nn.Linear(3 * sps, d)  # re, im, received-flag per symbol
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.slot_pos = nn.Parameter(torch.zeros(1, cfg.num_slots, d))
        self.snr_embed = _SNREmbedding(d)
        self.out_queries = nn.Parameter(torch.zeros(1, cfg.num_tokens, d))
        self.transformer = _Transformer(cfg, cfg.dec_depth)
        self.out_proj = nn.Linear(d, cfg.token_dim)
        for t in (self.mask_token, self.slot_pos, self.out_queries):
            _init_embedding(t)

    def _check(self, received: Tensor, mask: Tensor) -> None:
        l_max = self.config.l_max
        check_complex("received", received, ndim=2)
        if received.dtype != torch.complex64:
            raise TypeError(f"received must be complex64, got {received.dtype}")
        if received.shape[1] != l_max:
            raise ValueError(
                f"received must have shape [batch, l_max={l_max}] (zero-pad unsent "
                f"positions and mark them in mask), got {tuple(received.shape)}"
            )
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(
                f"mask must be a bool tensor (True = received), got "
                f"{getattr(mask, 'dtype', type(mask).__name__)}"
            )
        if mask.shape != received.shape:
            raise ValueError(
                f"mask must have the shape of received {tuple(received.shape)}, "
                f"got {tuple(mask.shape)}"
            )

    def forward(self, received: Tensor, mask: Tensor, snr_db: Tensor | float) -> Tensor:
        cfg = self.config
        self._check(received, mask)
        batch, device = received.shape[0], received.device
        mask = mask.to(device)
        snr = _snr_per_row(snr_db, batch, device)
        sps = cfg.symbols_per_slot

        m = mask.to(torch.float32)
        reals = complex_to_real(received * m).view(batch, cfg.num_slots, 2 * sps)
        flags = m.view(batch, cfg.num_slots, sps)
        dtype = self.in_proj.weight.dtype
        x = self.in_proj(torch.cat([reals, flags], dim=-1).to(dtype))
        any_received = mask.view(batch, cfg.num_slots, sps).any(dim=-1, keepdim=True)
        x = torch.where(any_received, x, self.mask_token.to(x.dtype)) + self.slot_pos
        queries = self.out_queries.expand(batch, -1, -1)
        h = self.transformer(torch.cat([self.snr_embed(snr), x, queries], dim=1))
        out: Tensor = self.out_proj(h[:, -cfg.num_tokens :])
        return out.float()


class CATCodec(nn.Module):
    """CAT encoder + decoder, for building, checkpointing and complexity counting.

    :meth:`forward` runs encode -> decode with **no channel in between** (all ``L`` symbols
    received noiselessly); the real pipeline calls :attr:`encoder`, a channel model, then
    :attr:`decoder`.

    Inputs:
        tokens: ``[batch, T, D]`` float32; snr_db: Es/N0 [dB], scalar or ``[batch]``;
        length: as :meth:`CATEncoder.encode` (default ``l_max``).
    Outputs:
        ``[batch, T, D]`` float32 reconstructed feature tokens.
    """

    def __init__(self, config: CATConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else CATConfig()
        self.config = cfg
        self.encoder = CATEncoder(cfg)
        self.decoder = CATDecoder(cfg)

    def forward(
        self, tokens: Tensor, snr_db: Tensor | float, length: int | Tensor | None = None
    ) -> Tensor:
        symbols, mask = self.encoder.encode(tokens, snr_db, length)
        return self.decoder(symbols, mask, snr_db)  # type: ignore[no-any-return]

    def example_inputs(self, batch: int = 1) -> tuple[Tensor, Tensor]:
        """``(tokens [batch, T, D] float32 ~ N(0, 1), snr_db [batch] float32 = 10 dB)``."""
        cfg = self.config
        return (
            torch.randn(batch, cfg.num_tokens, cfg.token_dim),
            torch.full((batch,), 10.0),
        )


@register_model("cat-codec")
def cat_codec(**overrides: Any) -> CATCodec:
    """The CAT channel codec; ``overrides`` are :class:`CATConfig` fields."""
    return CATCodec(CATConfig(**overrides))
