"""Settings of the receiver (``RKDSC_RECEIVER_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services._grpc import MaxConcurrentRpcs
from services._tls import TlsSettings

__all__ = ["Settings"]


class Settings(BaseSettings):
    """The receiver's settings; every field maps to ``RKDSC_RECEIVER_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="RKDSC_RECEIVER_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    host: str = Field(default="127.0.0.1", description="gRPC bind address.")
    port: int = Field(default=50053, ge=0, le=65535, description="gRPC port (0 = any free).")
    metrics_port: int = Field(default=9103, ge=0, le=65535, description="Prometheus /metrics.")
    weights_dir: Path | None = Field(
        default=None, description="Link weights folder; None = the shipped default weights."
    )
    knowledge: Literal["pilot", "perfect"] = Field(
        default="pilot",
        description="CSI the decoder uses: LS estimates from the pilots, or the channel's "
        "true gains and N0 (side information in ChannelState).",
    )
    device: str = Field(default="cpu", description="torch device for inference: cpu, cuda:0.")
    max_symbols: int = Field(
        default=4096, ge=1, description="Largest frame accepted, pilots + data (P + L)."
    )
    grace_seconds: float = Field(default=5.0, ge=0.0, description="Drain time on SIGTERM [s].")
    max_concurrent_rpcs: MaxConcurrentRpcs = None
    torch_threads: int | None = Field(
        default=None, ge=1, description="torch intra-op threads; None = torch's default."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    tls: TlsSettings = Field(
        default_factory=TlsSettings,
        description="TLS of the gRPC server (RKDSC_RECEIVER_TLS__CERT_FILE, ...); "
        "unset = plaintext.",
    )

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        try:
            torch.device(value)
        except RuntimeError as e:
            raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0': {e}") from e
        return value

    @field_validator("tls")
    @classmethod
    def _check_tls(cls, value: TlsSettings) -> TlsSettings:
        return value.for_server()
