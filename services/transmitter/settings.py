"""The transmitter's settings: environment ``RKDSC_TRANSMITTER_*`` (``__`` for nested keys)."""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rkdsc_core.data import DATASETS
from services._grpc import MaxConcurrentRpcs
from services._tls import TlsSettings

__all__ = ["LINK_ID_PATTERN", "PolicySettings", "Settings", "get_settings"]

LINK_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""A link id: 1-64 characters, letters, digits, ``.``, ``_``, ``-`` (it labels metrics)."""


class PolicySettings(BaseModel):
    """The length policy the transmitter starts with (``SetPolicy`` changes it at run time)."""

    model_config = {"extra": "forbid", "frozen": True}

    mode: Literal["fixed", "adaptive"] = Field(
        default="fixed", description="fixed: always `fixed_length`; adaptive: from the eval table"
    )
    fixed_length: int | None = Field(
        default=None, description="L for fixed mode; None = l_max of the loaded codec"
    )
    target_accuracy: float = Field(
        default=0.9, ge=0.0, le=1.0, description="accuracy the adaptive mode aims for"
    )
    confidence: float = Field(
        default=0.95,
        ge=0.5,
        lt=1.0,
        description="adaptive mode: one-sided confidence that the chosen L reaches the target, "
        "from the eval table's image count (Wilson bound); 0.5 = the measured accuracy, no margin",
    )


class Settings(BaseSettings):
    """Everything ``python -m services.transmitter`` reads (``RKDSC_TRANSMITTER_<KEY>``)."""

    model_config = SettingsConfigDict(
        env_prefix="RKDSC_TRANSMITTER_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    host: str = Field(default="127.0.0.1", description="address the gRPC server binds")
    port: int = Field(default=50051, ge=0, le=65535, description="gRPC port (0 = any free)")
    metrics_port: int = Field(default=9101, ge=0, le=65535, description="/metrics HTTP port")
    channel_target: str = Field(
        default="127.0.0.1:50052", description="host:port of the channel emulator"
    )
    weights_dir: Path | None = Field(
        default=None, description="link weights folder; None = the shipped default weights"
    )
    link_id: str = Field(default="default", description="link used by Classify and by runs")
    max_links: int = Field(
        default=8,
        ge=1,
        le=256,
        description="most links open at once besides the default one; idle ones are closed "
        "to make room",
    )
    dataset: str = Field(default="cifar10", description="dataset streamed by StartRun")
    data_dir: Path | None = Field(
        default=None, description="dataset source; None = RKDSC_DATA_DIR / rkdsc settings"
    )
    cache_dir: Path | None = Field(
        default=None, description="decoded-dataset cache; None = rkdsc's data.cache_dir"
    )
    policy: PolicySettings = Field(default_factory=PolicySettings)
    assumed_snr_db: float = Field(
        default=10.0,
        ge=-30.0,
        le=60.0,
        description="SNR the encoder is conditioned on until receiver feedback arrives [dB]",
    )
    snr_smoothing: float = Field(
        default=0.2,
        gt=0.0,
        le=1.0,
        description="EWMA weight of each new receiver SNR estimate (1 = use the last one)",
    )
    channel_model_hint: str = Field(
        default="awgn",
        description="eval-table channel model the adaptive policy reads until a link's first "
        "result names the channel's model, and whenever the table has no row for that model",
    )
    max_in_flight: int = Field(
        default=32, ge=1, le=4096, description="frames per link awaiting results (back-pressure)"
    )
    max_image_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1, description="largest encoded or raw image accepted [bytes]"
    )
    max_image_side: int = Field(
        default=4096, ge=1, description="largest image width or height accepted [pixels]"
    )
    deadline_seconds: float = Field(
        default=10.0, gt=0.0, description="per-frame wait for its result [s]"
    )
    grace_seconds: float = Field(default=5.0, ge=0.0, description="shutdown drain time [s]")
    max_concurrent_rpcs: MaxConcurrentRpcs = None
    max_runs: int = Field(default=100, ge=1, description="finished runs kept for GetRun")
    max_active_runs: int = Field(default=4, ge=1, description="runs streaming at once")
    device: str = Field(default="cpu", description="torch device for the encoder")
    encode_workers: int = Field(
        default=1, ge=1, le=64, description="threads running the encoder (off the event loop)"
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="torch intra-op threads; None = torch's default"
    )
    tls: TlsSettings = Field(
        default_factory=TlsSettings,
        description="TLS of the gRPC server and of the link to the channel emulator "
        "(RKDSC_TRANSMITTER_TLS__CERT_FILE, ...); unset = plaintext",
    )

    @field_validator("link_id")
    @classmethod
    def _check_link_id(cls, v: str) -> str:
        if not LINK_ID_PATTERN.match(v):
            raise ValueError(
                f"link_id must be 1-64 characters of letters, digits, '.', '_', '-'; got {v!r}"
            )
        return v

    @field_validator("dataset")
    @classmethod
    def _check_dataset(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(sorted(DATASETS))}; got {v!r}")
        return v

    @field_validator("deadline_seconds", "grace_seconds")
    @classmethod
    def _check_finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"must be finite, got {v}")
        return v

    @field_validator("tls")
    @classmethod
    def _check_tls(cls, value: TlsSettings) -> TlsSettings:
        return value.for_server()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process' settings, read from the environment once (call at the entry point)."""
    return Settings()
