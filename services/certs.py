"""A private CA and certificates for TLS / mutual TLS between the services (``rkdsc certs``).

:func:`write_certs` writes, into one folder::

    ca.crt                          the CA every service trusts (its key is not kept)
    <service>.crt, <service>.key    transmitter, channel, receiver: server + client usage
    client.crt, client.key          the control plane's (and tools') client certificate

Keys are ECDSA P-256, written with mode 0600. Server certificates name ``localhost``,
``127.0.0.1``, ``::1``, the service's compose/Kubernetes name and any extra ``hosts``.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DEFAULT_HOSTS", "SERVER_NAMES", "CertSet", "write_certs"]

SERVER_NAMES = ("transmitter", "channel", "receiver")
"""The services that serve gRPC; each gets a certificate named after it (its compose name)."""

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
"""Names every server certificate carries, besides the service's own name."""

CLIENT_NAME = "client"
"""File stem and common name of the client certificate (the control plane, tools)."""

_MAX_DAYS = 3650
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")


@dataclass(frozen=True)
class CertSet:
    """The files :func:`write_certs` wrote.

    Attributes:
        folder: where they are.
        ca_file: the CA certificate.
        servers: per service, ``(cert_file, key_file)``.
        client: ``(cert_file, key_file)`` of the client certificate.
    """

    folder: Path
    ca_file: Path
    servers: dict[str, tuple[Path, Path]]
    client: tuple[Path, Path]

    @classmethod
    def from_folder(cls, folder: Path) -> CertSet:
        """The set :func:`write_certs` wrote to ``folder`` (absolute paths).

        Raises:
            FileNotFoundError: a file is missing (naming them all).
        """
        folder = Path(folder).resolve()
        missing = [p.name for p in _files(folder) if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{folder} lacks {', '.join(missing)}; write a set with "
                f"`rkdsc certs --out {folder}`"
            )
        servers = {n: (folder / f"{n}.crt", folder / f"{n}.key") for n in SERVER_NAMES}
        client = (folder / f"{CLIENT_NAME}.crt", folder / f"{CLIENT_NAME}.key")
        return cls(folder, folder / "ca.crt", servers, client)

    def env(self, service: str, *, mutual: bool = True) -> dict[str, str]:
        """The ``RKDSC_<SERVICE>_TLS__*`` variables for ``service`` (or ``control``)."""
        cert, key = self.client if service == "control" else self.servers[service]
        prefix = f"RKDSC_{service.upper()}_TLS__"
        env = {
            prefix + "CERT_FILE": str(cert),
            prefix + "KEY_FILE": str(key),
            prefix + "CA_FILE": str(self.ca_file),
        }
        if mutual and service != "control":
            env[prefix + "REQUIRE_CLIENT_AUTH"] = "true"
        return env


def _files(folder: Path) -> list[Path]:
    names = ["ca.crt"]
    for stem in (*SERVER_NAMES, CLIENT_NAME):
        names += [f"{stem}.crt", f"{stem}.key"]
    return [folder / n for n in names]


def _san(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _check_host(host: str) -> str:
    """``host`` if it is an IP address or a DNS name (``*.`` wildcard allowed)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _DNS_NAME.fullmatch(host) or len(host) > 253:
            raise ValueError(
                f"--hosts: {host!r} is not a host name or IP address "
                "(e.g. tx.example.org, 10.0.0.5)"
            ) from None
    return host


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the start."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # whatever the umask


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_certs(
    out: Path,
    *,
    hosts: Sequence[str] = (),
    days: int = 365,
    overwrite: bool = False,
) -> CertSet:
    """Make a CA and sign a certificate per service and a client certificate; write them.

    Args:
        out: the folder (created, mode 0700, if missing).
        hosts: extra DNS names / IP addresses every server certificate carries.
        days: validity of every certificate [days], 1 to 3650.
        overwrite: replace existing files; else refuse if any is present.

    Raises:
        ValueError: bad ``days`` or ``hosts``.
        FileExistsError: a file is present and ``overwrite`` is false.
    """
    if not 1 <= days <= _MAX_DAYS:
        raise ValueError(f"--days must lie in [1, {_MAX_DAYS}], got {days}")
    extra = [_check_host(h) for h in hosts]
    out = Path(out)
    present = [p for p in _files(out) if p.exists()]
    if present and not overwrite:
        raise FileExistsError(
            f"{out} already holds {', '.join(p.name for p in present)}; pass --force to replace "
            "them (every service then needs the new files)"
        )
    out.mkdir(mode=0o700, parents=True, exist_ok=True)

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rkdsc local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, names: Sequence[str] | None) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if names is not None:
            usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if names is not None:
            builder = builder.add_extension(_san(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    ca_file = out / "ca.crt"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    servers: dict[str, tuple[Path, Path]] = {}
    for name in SERVER_NAMES:
        cert_pem, key_pem = leaf(f"rkdsc {name}", [name, *DEFAULT_HOSTS, *extra])
        servers[name] = (out / f"{name}.crt", out / f"{name}.key")
        servers[name][0].write_bytes(cert_pem)
        _write_private(servers[name][1], key_pem)
    cert_pem, key_pem = leaf(f"rkdsc {CLIENT_NAME}", None)
    client = (out / f"{CLIENT_NAME}.crt", out / f"{CLIENT_NAME}.key")
    client[0].write_bytes(cert_pem)
    _write_private(client[1], key_pem)
    return CertSet(out, ca_file, servers, client)
