"""Optional TLS and mutual TLS on the gRPC links: settings, server ports, client channels.

Every service has a ``tls`` section (``RKDSC_<SERVICE>_TLS__<FIELD>``). All fields unset means
plaintext. A service serves with its ``cert_file``/``key_file`` and dials its next hop with the
same section: ``ca_file`` verifies the peer, and ``cert_file``/``key_file`` are presented as
the client certificate (so certificates made by ``rkdsc certs`` carry both the server and the
client usage). ``require_client_auth`` makes a server refuse clients without a certificate
signed by ``ca_file`` (mutual TLS).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services._grpc import channel_options

__all__ = ["TlsSettings", "add_port", "check_health", "open_channel", "tls_from_env"]

log = logging.getLogger(__name__)

_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"
_KEY_MARKER = b"PRIVATE KEY-----"


class TlsSettings(BaseModel):
    """TLS of one service's gRPC links; all ``None``/off (the default) = plaintext.

    Attributes:
        cert_file: PEM certificate (chain) the service presents: as a server, and as a client
            when its peer requires client certificates. Goes with ``key_file``.
        key_file: PEM private key of ``cert_file``.
        ca_file: PEM CA bundle that verifies peers: the servers this service dials and, with
            ``require_client_auth``, its clients. ``None`` = the system's roots for servers.
        require_client_auth: refuse clients without a certificate signed by ``ca_file``
            (mutual TLS); needs ``cert_file``, ``key_file`` and ``ca_file``.
        server_name: host name expected in the dialled server's certificate when the target's
            host is not one of its names (gRPC's ``ssl_target_name_override``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_file: Path | None = Field(default=None, description="PEM certificate (chain).")
    key_file: Path | None = Field(default=None, description="PEM private key of cert_file.")
    ca_file: Path | None = Field(default=None, description="PEM CA bundle that verifies peers.")
    require_client_auth: bool = Field(
        default=False, description="Serve mutual TLS: clients need a cert signed by ca_file."
    )
    server_name: str | None = Field(
        default=None, min_length=1, description="Name expected in the dialled server's cert."
    )

    @field_validator("cert_file", "key_file", "ca_file")
    @classmethod
    def _check_pem_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        name = info.field_name
        if not value.is_file():
            raise ValueError(f"{name} {str(value)!r} does not exist or is not a file")
        try:
            data = value.read_bytes()
        except OSError as err:
            raise ValueError(f"{name} {str(value)!r} is not readable: {err.strerror}") from None
        marker = _KEY_MARKER if name == "key_file" else _CERT_MARKER
        if marker not in data:
            kind = "private key" if name == "key_file" else "certificate"
            raise ValueError(
                f"{name} {str(value)!r} holds no PEM {kind} (expected a '{marker.decode()}' "
                "block; `rkdsc certs --out DIR` writes a working set)"
            )
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(
                "cert_file and key_file go together: set both (to serve or present a "
                "certificate) or neither"
            )
        if self.require_client_auth and (self.ca_file is None or self.cert_file is None):
            raise ValueError(
                "require_client_auth needs cert_file and key_file (the server's certificate) "
                "and ca_file (the CA that signs the client certificates)"
            )
        if self.server_name is not None and not self.enabled:
            raise ValueError("server_name only applies with TLS: set ca_file or cert_file too")
        return self

    @property
    def enabled(self) -> bool:
        """Whether the links use TLS (any of ``cert_file``, ``ca_file`` set)."""
        return self.cert_file is not None or self.ca_file is not None

    def for_server(self) -> TlsSettings:
        """``self``, checked for a service that serves: TLS on needs its certificate.

        Raises:
            ValueError: ``ca_file`` without ``cert_file``/``key_file``.
        """
        if self.enabled and self.cert_file is None:
            raise ValueError(
                "a service that serves needs cert_file and key_file when TLS is on (ca_file "
                "alone only configures a client); set both, or unset ca_file for plaintext"
            )
        return self

    def for_client(self) -> TlsSettings:
        """``self``, checked for a process that only dials (the control plane).

        Raises:
            ValueError: ``require_client_auth`` set (it is a server's setting).
        """
        if self.require_client_auth:
            raise ValueError(
                "require_client_auth is a server setting; a client only dials (set it on the "
                "services it dials instead)"
            )
        return self

    def server_credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials from the files (read now).

        Raises:
            ValueError: TLS is off, or no ``cert_file``.
        """
        if self.cert_file is None or self.key_file is None:
            raise ValueError("server credentials need cert_file and key_file")
        root = self.ca_file.read_bytes() if self.require_client_auth and self.ca_file else None
        return grpc.ssl_server_credentials(
            [(self.key_file.read_bytes(), self.cert_file.read_bytes())],
            root_certificates=root,
            require_client_auth=self.require_client_auth,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials from the files (read now): ``ca_file`` as the roots
        (system roots when unset), ``cert_file``/``key_file`` as the client certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes() if self.ca_file else None,
            private_key=self.key_file.read_bytes() if self.key_file else None,
            certificate_chain=self.cert_file.read_bytes() if self.cert_file else None,
        )

    def describe(self) -> str:
        """``plaintext``, ``TLS`` or ``mutual TLS`` (for logs)."""
        if not self.enabled:
            return "plaintext"
        return "mutual TLS" if self.require_client_auth else "TLS"


def add_port(server: grpc.aio.Server, address: str, tls: TlsSettings) -> int:
    """Bind ``address`` (``host:port``; port 0 = any free) with TLS when ``tls.enabled``.

    Returns:
        The bound port.
    """
    if tls.enabled:
        port = int(server.add_secure_port(address, tls.for_server().server_credentials()))
    else:
        port = int(server.add_insecure_port(address))
    log.info("gRPC on %s (port %d): %s", address, port, tls.describe())
    return port


def open_channel(
    target: str,
    tls: TlsSettings | None,
    *,
    options: Sequence[tuple[str, Any]] | None = None,
) -> grpc.aio.Channel:
    """A ``grpc.aio`` channel to ``target``: TLS when ``tls`` is enabled, else plaintext.

    Args:
        target: ``host:port`` or any gRPC target (``dns:///...``).
        tls: the caller's TLS section; ``None`` = plaintext.
        options: channel options; ``None`` = :func:`services._grpc.channel_options`.
    """
    opts = list(channel_options() if options is None else options)
    if tls is None or not tls.enabled:
        return grpc.aio.insecure_channel(target, options=opts)
    if tls.server_name is not None:
        opts.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(target, tls.channel_credentials(), options=opts)


def check_health(target: str, tls: TlsSettings | None, *, timeout: float = 2.0) -> bool:
    """Whether the gRPC server at ``target`` reports SERVING (a blocking health check).

    For container health checks: ``tls`` is the service's own section (see
    :func:`tls_from_env`), so with mutual TLS it presents the service's own certificate.
    """
    opts = list(channel_options())
    if tls is not None and tls.enabled:
        if tls.server_name is not None:
            opts.append(("grpc.ssl_target_name_override", tls.server_name))
        channel = grpc.secure_channel(target, tls.channel_credentials(), options=opts)
    else:
        channel = grpc.insecure_channel(target, options=opts)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def tls_from_env(env_prefix: str) -> TlsSettings:
    """Only the ``tls`` section of a service's settings, from ``<env_prefix>TLS__<FIELD>``.

    Cheap (the services' full settings may import torch); e.g.
    ``tls_from_env("RKDSC_RECEIVER_")``.
    """

    class _Env(BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix=env_prefix, env_nested_delimiter="__", extra="ignore"
        )
        tls: TlsSettings = Field(default_factory=TlsSettings)

    return _Env().tls
