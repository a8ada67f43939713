"""Settings of the channel emulator (``RKDSC_CHANNEL_*``) and its validated impairment params."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rkdsc_core._validate import check_snr_db
from rkdsc_core.channel import Channel, ChannelConfig, ChannelModel, FadingKind
from services._grpc import MaxConcurrentRpcs
from services._tls import TlsSettings
from services.pb import services_pb2

__all__ = ["MAX_DELAY_SECONDS", "MAX_SEED", "ChannelParams", "Settings"]

MAX_SEED = 2**63 - 1
"""Largest noise seed (``frame_generator`` hashes it as a signed 64-bit integer)."""
MAX_DELAY_SECONDS = 60.0
"""Largest added one-way delay [s]."""


@dataclass(frozen=True)
class ChannelParams:
    """One complete, validated set of impairments: a ``ChannelConfig`` plus SNR, seed, delay.

    Construction validates everything (``ValueError`` naming the field), so an instance is
    always applicable as a whole.

    Attributes:
        model: ``awgn``, ``rayleigh`` or ``rician``.
        snr_db: Es/N0 [dB] in [-30, 60].
        fading: ``block`` or ``fast``.
        k_factor: Rician K (linear, >= 0).
        erasure_prob: per-symbol erasure probability in [0, 1).
        frame_loss_prob: whole-frame loss probability in [0, 1).
        seed: noise seed in [0, 2**63); frame impairment = f(seed, link id, sequence).
        delay_seconds: added one-way delay [s] in [0, 60].
    """

    model: str = "awgn"
    snr_db: float = 20.0
    fading: str = "block"
    k_factor: float = 0.0
    erasure_prob: float = 0.0
    frame_loss_prob: float = 0.0
    seed: int = 0
    delay_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.config()  # model, fading, k_factor, erasure_prob, frame_loss_prob
        check_snr_db(self.snr_db)
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must lie in [0, 2**63 - 1], got {self.seed}")
        if not math.isfinite(self.delay_seconds) or not (
            0.0 <= self.delay_seconds <= MAX_DELAY_SECONDS
        ):
            raise ValueError(
                f"delay_seconds must lie in [0, {MAX_DELAY_SECONDS:g}] s, "
                f"got {self.delay_seconds!r}"
            )

    def config(self) -> ChannelConfig:
        """The structural part, validated by ``rkdsc_core.channel.ChannelConfig``."""
        return ChannelConfig(
            model=self.model,  # type: ignore[arg-type]  # checked by ChannelConfig
            fading=self.fading,  # type: ignore[arg-type]
            k_factor=self.k_factor,
            erasure_prob=self.erasure_prob,
            frame_loss_prob=self.frame_loss_prob,
        )

    def channel(self) -> Channel:
        """The channel module training uses, for these impairments."""
        return Channel(self.config())

    @classmethod
    def from_proto(cls, msg: services_pb2.ChannelSettings) -> ChannelParams:
        """Validate a ``ChannelSettings`` message as a whole (its ``version`` is ignored)."""
        return cls(
            model=msg.model,
            snr_db=float(msg.snr_db),
            fading=msg.fading,
            k_factor=float(msg.k_factor),
            erasure_prob=float(msg.erasure_prob),
            frame_loss_prob=float(msg.frame_loss_prob),
            seed=int(msg.seed),
            delay_seconds=float(msg.delay_seconds),
        )

    def to_proto(self, version: int) -> services_pb2.ChannelSettings:
        """These params as a ``ChannelSettings`` message of config ``version``."""
        return services_pb2.ChannelSettings(
            model=self.model,
            snr_db=self.snr_db,
            fading=self.fading,
            k_factor=self.k_factor,
            erasure_prob=self.erasure_prob,
            frame_loss_prob=self.frame_loss_prob,
            seed=self.seed,
            delay_seconds=self.delay_seconds,
            version=version,
        )


class Settings(BaseSettings):
    """The channel emulator's settings; every field maps to ``RKDSC_CHANNEL_<FIELD>``.

    The impairment fields are the initial channel (config version 1); ``SetSettings``
    replaces them at run time. One channel config serves every link.
    """

    model_config = SettingsConfigDict(
        env_prefix="RKDSC_CHANNEL_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    host: str = Field(default="127.0.0.1", description="gRPC bind address.")
    port: int = Field(default=50052, ge=0, le=65535, description="gRPC port (0 = any free).")
    metrics_port: int = Field(default=9102, ge=0, le=65535, description="Prometheus /metrics.")
    receiver_target: str = Field(
        default="127.0.0.1:50053", min_length=1, description="host:port of the receiver."
    )
    model: ChannelModel = Field(default="awgn", description="awgn | rayleigh | rician.")
    snr_db: float = Field(default=20.0, description="Es/N0 [dB] in [-30, 60].")
    fading: FadingKind = Field(default="block", description="block | fast.")
    k_factor: float = Field(default=0.0, ge=0.0, description="Rician K (linear).")
    erasure_prob: float = Field(default=0.0, ge=0.0, lt=1.0)
    frame_loss_prob: float = Field(default=0.0, ge=0.0, lt=1.0)
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Noise seed.")
    delay_seconds: float = Field(
        default=0.0, ge=0.0, le=MAX_DELAY_SECONDS, description="Added one-way delay [s]."
    )
    max_symbols: int = Field(
        default=4096, ge=1, description="Largest frame accepted, pilots + data (P + L)."
    )
    queue_size: int = Field(
        default=64, ge=1, description="Frames read but not yet answered, per stream (bounded)."
    )
    grace_seconds: float = Field(default=5.0, ge=0.0, description="Drain time on SIGTERM [s].")
    max_concurrent_rpcs: MaxConcurrentRpcs = None
    deadline_seconds: float = Field(
        default=8.0,
        gt=0.0,
        description=(
            "Longest wait for the receiver's answer to a frame [s]; keep it below the "
            "transmitter's deadline so the emulator's more precise error reaches the client."
        ),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    tls: TlsSettings = Field(
        default_factory=TlsSettings,
        description="TLS of the gRPC server and of the link to the receiver "
        "(RKDSC_CHANNEL_TLS__CERT_FILE, ...); unset = plaintext.",
    )

    @field_validator("snr_db")
    @classmethod
    def _check_snr_db(cls, value: float) -> float:
        check_snr_db(value)
        return value

    @field_validator("tls")
    @classmethod
    def _check_tls(cls, value: TlsSettings) -> TlsSettings:
        return value.for_server()

    @model_validator(mode="after")
    def _check_channel(self) -> Settings:
        self.channel_params()  # the core's checks (e.g. snr_db in [-30, 60])
        return self

    def channel_params(self) -> ChannelParams:
        """The initial impairments, rounded through the wire message (float32) like SetSettings."""
        msg = ChannelParams(
            model=self.model,
            snr_db=self.snr_db,
            fading=self.fading,
            k_factor=self.k_factor,
            erasure_prob=self.erasure_prob,
            frame_loss_prob=self.frame_loss_prob,
            seed=self.seed,
            delay_seconds=self.delay_seconds,
        ).to_proto(0)
        return ChannelParams.from_proto(msg)
