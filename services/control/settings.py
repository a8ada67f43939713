"""Settings of the control plane: where it listens, the gRPC targets and TLS, the API token."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services._tls import TlsSettings

__all__ = ["Settings", "default_token_file", "get_settings"]

_ORIGIN = re.compile(r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?", re.ASCII)


DEFAULT_PORT = 8000
"""The control plane's HTTP port unless configured."""


def default_token_file(port: int | None = None) -> Path:
    """Where ``rkdsc up`` writes the generated API token and the control plane looks for it.

    ``$XDG_RUNTIME_DIR/rkdsc/control-token`` when that directory exists (per-user, tmpfs),
    else ``~/.cache/rkdsc/control-token``; for a control plane on another ``port`` than
    8000, ``control-token-<port>`` there, so that stacks side by side keep their own.
    """
    name = "control-token" if port in (None, DEFAULT_PORT) else f"control-token-{port}"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "rkdsc" / name
    return Path.home() / ".cache" / "rkdsc" / name


class Settings(BaseSettings):
    """The control plane's settings; every field is settable as ``RKDSC_CONTROL_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="RKDSC_CONTROL_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    host: str = Field(default="127.0.0.1", description="HTTP listen address.")
    port: int = Field(
        default=DEFAULT_PORT, ge=0, le=65535, description="HTTP port (REST and /metrics)."
    )
    transmitter_target: str = Field(
        default="127.0.0.1:50051", min_length=1, description="gRPC target of the transmitter."
    )
    channel_target: str = Field(
        default="127.0.0.1:50052", min_length=1, description="gRPC target of the channel emulator."
    )
    receiver_target: str = Field(
        default="127.0.0.1:50053",
        min_length=1,
        description="gRPC target of the receiver (health checks only).",
    )
    token: SecretStr | None = Field(
        default=None,
        description="Bearer token required by PUT/POST; when unset, read from token_file.",
    )
    token_file: Path | None = Field(
        # the port's own file, as `rkdsc up` writes it (control-token-<port> off port 8000)
        default_factory=lambda fields: default_token_file(fields.get("port")),
        description="File holding the bearer token (written by `rkdsc up`), read on each request; "
        "default: control-token (control-token-<port> for another port than 8000) in "
        "$XDG_RUNTIME_DIR/rkdsc or ~/.cache/rkdsc.",
    )
    deadline_seconds: float = Field(
        default=5.0, gt=0, le=300, description="Deadline of every gRPC call [s]."
    )
    state_file: Path | None = Field(
        default=None,
        description="SQLite file keeping the configuration set through the API, re-applied to "
        "a service that restarts (and after a control-plane restart); None = not kept.",
    )
    restore_seconds: float = Field(
        default=2.0, gt=0, le=3600, description="How often services are checked for restarts [s]."
    )
    max_runs: int = Field(
        default=100, ge=1, le=10_000, description="Runs remembered for /v1/stats (oldest dropped)."
    )
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest request body accepted [bytes]; larger ones get 413.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (CORS); in the environment a JSON "
        'list such as ["https://dash.example.org"]. Empty (the default) = no CORS at all.',
    )
    tls: TlsSettings = Field(
        default_factory=TlsSettings,
        description="TLS of the gRPC links to the services (RKDSC_CONTROL_TLS__CA_FILE, and "
        "CERT_FILE/KEY_FILE as the client certificate for mutual TLS); unset = plaintext.",
    )

    @field_validator("token")
    @classmethod
    def _token_is_usable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            raw = value.get_secret_value()
            if not raw or raw != raw.strip() or any(c.isspace() for c in raw):
                raise ValueError(
                    "RKDSC_CONTROL_TOKEN must be non-empty and hold no whitespace; unset it to "
                    "use the token file instead"
                )
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_explicit(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"cors_origins: {origin!r} is not an origin; list each one as "
                    "scheme://host[:port] without a path (no '*': the API takes a bearer token)"
                )
        return value

    @field_validator("tls")
    @classmethod
    def _check_tls(cls, value: TlsSettings) -> TlsSettings:
        return value.for_client()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings from the environment, built once at the entry point."""
    return Settings()
