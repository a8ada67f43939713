"""TLS and mutual TLS on the gRPC links: settings, `rkdsc certs`, handshakes, the full path."""

from __future__ import annotations

import asyncio
import ipaddress
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import typer
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from typer.testing import CliRunner

from rkdsc_core.link import LinkBundle
from services._grpc import server_options
from services._tls import TlsSettings, add_port, check_health, open_channel, tls_from_env
from services.certs import SERVER_NAMES, CertSet, write_certs
from services.channel.server import build_server as build_channel
from services.channel.settings import Settings as ChannelSettings
from services.cli import register
from services.control.clients import GrpcClients
from services.control.settings import Settings as ControlSettings
from services.pb import frame_pb2, services_pb2, services_pb2_grpc
from services.receiver.server import build_server as build_receiver
from services.receiver.settings import Settings as ReceiverSettings
from services.stack import Stack, StackPorts
from services.transmitter.server import build_server as build_transmitter
from services.transmitter.settings import Settings as TransmitterSettings

from .channel.helpers import symbol_frames
from .stack_support import unstarted_stack

RPC_TIMEOUT = 5.0
"""Bound on every RPC in these tests [s]."""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertSet:
    return write_certs(tmp_path_factory.mktemp("certs"), hosts=["tx.example.org", "10.1.2.3"])


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> CertSet:
    """A second set: its own CA, trusted by nothing in ``certs``."""
    return write_certs(tmp_path_factory.mktemp("other-certs"))


def server_tls(certs: CertSet, name: str = "receiver", *, mutual: bool = True) -> TlsSettings:
    cert, key = certs.servers[name]
    return TlsSettings(
        cert_file=cert, key_file=key, ca_file=certs.ca_file, require_client_auth=mutual
    )


def client_tls(certs: CertSet, *, ca: CertSet | None = None) -> TlsSettings:
    """The client certificate of ``certs``, trusting the CA of ``ca`` (default: ``certs``)."""
    cert, key = certs.client
    return TlsSettings(cert_file=cert, key_file=key, ca_file=(ca or certs).ca_file)


@asynccontextmanager
async def health_server(tls: TlsSettings) -> AsyncIterator[int]:
    """A gRPC server with only the health service (SERVING) on 127.0.0.1:0."""
    server = grpc.aio.server(options=server_options())
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = add_port(server, "127.0.0.1:0", tls)
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        yield port
    finally:
        await server.stop(0)


async def check(port: int, tls: TlsSettings | None) -> str:
    """Health.Check over a fresh channel: the status name (raises AioRpcError on failure)."""
    async with open_channel(f"127.0.0.1:{port}", tls) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=RPC_TIMEOUT
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def check_code(run_async: Any, server: TlsSettings, client: TlsSettings | None) -> str:
    """``SERVING`` or the name of the gRPC status code the check failed with."""

    async def main() -> str:
        async with health_server(server) as port:
            try:
                return await check(port, client)
            except grpc.aio.AioRpcError as err:
                return str(err.code().name)

    result: str = run_async(main())
    return result


class TestTlsSettings:
    def test_default_is_plaintext(self) -> None:
        tls = TlsSettings()
        assert not tls.enabled
        assert tls.describe() == "plaintext"

    def test_cert_and_key_turn_tls_on(self, certs: CertSet) -> None:
        assert server_tls(certs, mutual=False).describe() == "TLS"
        assert server_tls(certs).describe() == "mutual TLS"

    def test_cert_without_key_is_rejected(self, certs: CertSet) -> None:
        with pytest.raises(ValidationError, match="cert_file and key_file go together"):
            TlsSettings(cert_file=certs.servers["receiver"][0])

    def test_key_without_cert_is_rejected(self, certs: CertSet) -> None:
        with pytest.raises(ValidationError, match="cert_file and key_file go together"):
            TlsSettings(key_file=certs.servers["receiver"][1])

    def test_missing_file_is_named(self, tmp_path: Path) -> None:
        missing = tmp_path / "nope.crt"
        with pytest.raises(ValidationError, match=r"ca_file .*nope\.crt.* does not exist"):
            TlsSettings(ca_file=missing)

    def test_file_without_pem_is_rejected(self, tmp_path: Path, certs: CertSet) -> None:
        junk = tmp_path / "junk.crt"
        junk.write_text("not a certificate\n")
        with pytest.raises(ValidationError, match="holds no PEM certificate"):
            TlsSettings(ca_file=junk)
        with pytest.raises(ValidationError, match="holds no PEM private key"):
            TlsSettings(cert_file=certs.servers["receiver"][0], key_file=junk)

    def test_require_client_auth_needs_ca(self, certs: CertSet) -> None:
        cert, key = certs.servers["receiver"]
        with pytest.raises(ValidationError, match="require_client_auth needs"):
            TlsSettings(cert_file=cert, key_file=key, require_client_auth=True)

    def test_require_client_auth_needs_cert(self, certs: CertSet) -> None:
        with pytest.raises(ValidationError, match="require_client_auth needs"):
            TlsSettings(ca_file=certs.ca_file, require_client_auth=True)

    def test_server_name_needs_tls(self) -> None:
        with pytest.raises(ValidationError, match="server_name only applies with TLS"):
            TlsSettings(server_name="receiver")

    def test_unknown_field_is_rejected(self) -> None:
        with pytest.raises(ValidationError, match="extra"):
            TlsSettings(cert="x")  # type: ignore[call-arg]

    def test_service_needs_its_certificate(self, certs: CertSet) -> None:
        with pytest.raises(ValidationError, match="a service that serves needs cert_file"):
            ChannelSettings(tls=TlsSettings(ca_file=certs.ca_file))

    def test_control_plane_cannot_require_client_auth(self, certs: CertSet) -> None:
        with pytest.raises(ValidationError, match="require_client_auth is a server setting"):
            ControlSettings(tls=server_tls(certs))

    def test_control_plane_may_only_verify_servers(self, certs: CertSet) -> None:
        assert ControlSettings(tls=TlsSettings(ca_file=certs.ca_file)).tls.enabled

    def test_nested_environment_variables(
        self, certs: CertSet, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for key, value in certs.env("receiver").items():
            monkeypatch.setenv(key, value)
        expected = server_tls(certs)
        assert ReceiverSettings().tls == expected
        assert tls_from_env("RKDSC_RECEIVER_") == expected

    def test_nested_environment_error_names_the_field(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("RKDSC_TRANSMITTER_TLS__CA_FILE", str(tmp_path / "gone.pem"))
        with pytest.raises(ValidationError, match=r"tls\.ca_file"):
            TransmitterSettings()


class TestWriteCerts:
    def test_writes_every_file(self, certs: CertSet) -> None:
        names = sorted(p.name for p in certs.folder.iterdir())
        expected = ["ca.crt", "client.crt", "client.key"]
        for name in SERVER_NAMES:
            expected += [f"{name}.crt", f"{name}.key"]
        assert names == sorted(expected)

    def test_keys_are_private(self, certs: CertSet) -> None:
        keys = [key for _, key in certs.servers.values()] + [certs.client[1]]
        for key in keys:
            assert stat.S_IMODE(key.stat().st_mode) == 0o600, key

    def test_ca_key_is_not_kept(self, certs: CertSet) -> None:
        assert not (certs.folder / "ca.key").exists()

    @pytest.mark.parametrize("name", SERVER_NAMES)
    def test_server_certificate_names(self, certs: CertSet, name: str) -> None:
        cert = x509.load_pem_x509_certificate(certs.servers[name][0].read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(san.get_values_for_type(x509.DNSName)) == {name, "localhost", "tx.example.org"}
        assert set(san.get_values_for_type(x509.IPAddress)) == {
            ipaddress.ip_address("127.0.0.1"),
            ipaddress.ip_address("::1"),
            ipaddress.ip_address("10.1.2.3"),
        }

    def test_certificates_are_signed_by_the_ca(self, certs: CertSet) -> None:
        ca = x509.load_pem_x509_certificate(certs.ca_file.read_bytes())
        for cert_file in [c for c, _ in certs.servers.values()] + [certs.client[0]]:
            x509.load_pem_x509_certificate(cert_file.read_bytes()).verify_directly_issued_by(ca)

    def test_refuses_to_overwrite(self, certs: CertSet) -> None:
        with pytest.raises(FileExistsError, match="--force"):
            write_certs(certs.folder)

    def test_overwrites_when_asked(self, tmp_path: Path) -> None:
        first = write_certs(tmp_path).ca_file.read_bytes()
        assert write_certs(tmp_path, overwrite=True).ca_file.read_bytes() != first

    @pytest.mark.parametrize("days", [0, 3651])
    def test_days_out_of_range(self, tmp_path: Path, days: int) -> None:
        with pytest.raises(ValueError, match="--days"):
            write_certs(tmp_path, days=days)

    @pytest.mark.parametrize("host", ["bad host", "a/b", "-x.org", ""])
    def test_bad_host(self, tmp_path: Path, host: str) -> None:
        with pytest.raises(ValueError, match="--hosts"):
            write_certs(tmp_path, hosts=[host])

    def test_from_folder_names_missing_files(self, tmp_path: Path) -> None:
        write_certs(tmp_path)
        (tmp_path / "channel.key").unlink()
        with pytest.raises(FileNotFoundError, match=r"channel\.key.*rkdsc certs"):
            CertSet.from_folder(tmp_path)

    def test_env_of_the_control_plane_uses_the_client_certificate(self, certs: CertSet) -> None:
        env = certs.env("control")
        assert env["RKDSC_CONTROL_TLS__CERT_FILE"] == str(certs.client[0])
        assert "RKDSC_CONTROL_TLS__REQUIRE_CLIENT_AUTH" not in env

    def test_cli_command(self, tmp_path: Path) -> None:
        app = typer.Typer()
        register(app)
        out = tmp_path / "tls"
        result = CliRunner().invoke(
            app, ["certs", "--out", str(out), "--hosts", "a.example.org,10.0.0.9", "--days", "7"]
        )
        assert result.exit_code == 0, result.output
        assert CertSet.from_folder(out).folder == out.resolve()
        again = CliRunner().invoke(app, ["certs", "--out", str(out)])
        assert again.exit_code == 1
        assert "--force" in again.output


class TestHandshake:
    def test_tls_client_reaches_tls_server(self, certs: CertSet, run_async: Any) -> None:
        client = TlsSettings(ca_file=certs.ca_file)
        assert check_code(run_async, server_tls(certs, mutual=False), client) == "SERVING"

    def test_plaintext_client_is_refused_by_tls_server(
        self, certs: CertSet, run_async: Any
    ) -> None:
        assert check_code(run_async, server_tls(certs, mutual=False), None) == "UNAVAILABLE"

    def test_client_refuses_server_of_another_ca(
        self, certs: CertSet, other_certs: CertSet, run_async: Any
    ) -> None:
        client = TlsSettings(ca_file=certs.ca_file)
        server = server_tls(other_certs, mutual=False)
        assert check_code(run_async, server, client) == "UNAVAILABLE"

    def test_client_refuses_wrong_server_name(self, certs: CertSet, run_async: Any) -> None:
        client = TlsSettings(ca_file=certs.ca_file, server_name="not-in-the-cert")
        assert check_code(run_async, server_tls(certs, mutual=False), client) == "UNAVAILABLE"

    def test_server_name_override_matches_a_cert_name(self, certs: CertSet, run_async: Any) -> None:
        client = TlsSettings(ca_file=certs.ca_file, server_name="tx.example.org")
        assert check_code(run_async, server_tls(certs, mutual=False), client) == "SERVING"

    def test_mutual_tls_accepts_client_certificate(self, certs: CertSet, run_async: Any) -> None:
        assert check_code(run_async, server_tls(certs), client_tls(certs)) == "SERVING"

    def test_mutual_tls_refuses_client_without_certificate(
        self, certs: CertSet, run_async: Any
    ) -> None:
        client = TlsSettings(ca_file=certs.ca_file)
        assert check_code(run_async, server_tls(certs), client) == "UNAVAILABLE"

    def test_mutual_tls_refuses_client_of_another_ca(
        self, certs: CertSet, other_certs: CertSet, run_async: Any
    ) -> None:
        client = client_tls(other_certs, ca=certs)  # trusts the server, foreign cert
        assert check_code(run_async, server_tls(certs), client) == "UNAVAILABLE"

    def test_service_certificate_works_as_client_certificate(
        self, certs: CertSet, run_async: Any
    ) -> None:
        # A service dials its next hop with its own section (channel -> receiver).
        assert check_code(run_async, server_tls(certs), server_tls(certs, "channel")) == "SERVING"

    def test_blocking_health_check(self, certs: CertSet, run_async: Any) -> None:
        tls = server_tls(certs)

        async def main() -> tuple[bool, bool]:
            async with health_server(tls) as port:
                target = f"127.0.0.1:{port}"
                ok = await asyncio.to_thread(check_health, target, tls)
                bare = TlsSettings(ca_file=certs.ca_file)
                refused = await asyncio.to_thread(check_health, target, bare)
            return ok, refused

        assert run_async(main()) == (True, False)


def _image() -> services_pb2.ClassifyRequest:
    arr = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    raw = services_pb2.RawImage(height=32, width=32, channels=3, data=arr.tobytes())
    return services_pb2.ClassifyRequest(image_id="img-0", image=services_pb2.Image(raw=raw))


class TestFullPathOverMutualTls:
    def test_transmitter_channel_receiver_and_control(
        self, certs: CertSet, tiny_weights: Path, run_async: Any
    ) -> None:
        """Client -> transmitter -> channel -> receiver, every hop mutual TLS; the control
        plane's clients see every service SERVING."""

        async def main() -> tuple[frame_pb2.FrameResult, dict[str, str]]:
            common: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "grace_seconds": 1.0}
            rx = build_receiver(
                ReceiverSettings(
                    **common,
                    weights_dir=tiny_weights,
                    torch_threads=1,
                    tls=server_tls(certs, "receiver"),
                ),
                CollectorRegistry(),
            )
            await rx.start()
            emu = build_channel(
                ChannelSettings(
                    **common,
                    receiver_target=f"127.0.0.1:{rx.port}",
                    deadline_seconds=RPC_TIMEOUT,
                    tls=server_tls(certs, "channel"),
                ),
                CollectorRegistry(),
            )
            await emu.start()
            tx = build_transmitter(
                TransmitterSettings(
                    **common,
                    channel_target=f"127.0.0.1:{emu.port}",
                    weights_dir=tiny_weights,
                    torch_threads=1,
                    deadline_seconds=RPC_TIMEOUT,
                    tls=server_tls(certs, "transmitter"),
                ),
                CollectorRegistry(),
            )
            await tx.start()
            clients = GrpcClients.connect(
                ControlSettings(
                    transmitter_target=f"127.0.0.1:{tx.port}",
                    channel_target=f"127.0.0.1:{emu.port}",
                    receiver_target=f"127.0.0.1:{rx.port}",
                    deadline_seconds=RPC_TIMEOUT,
                    tls=client_tls(certs),
                )
            )
            try:
                async with open_channel(f"127.0.0.1:{tx.port}", client_tls(certs)) as channel:
                    stub_type: Any = services_pb2_grpc.TransmitterStub  # generated, untyped
                    stub = stub_type(channel)
                    results = [r async for r in stub.Classify(iter([_image()]), timeout=20.0)]
                status = {name: await h.check() for name, h in clients.health.items()}
            finally:
                await clients.close()
                await tx.stop()
                await emu.stop()
                await rx.stop()
            assert len(results) == 1
            return results[0], status

        result, status = run_async(main(), timeout=60.0)
        assert result.fate == frame_pb2.FRAME_FATE_PREDICTED, result.error
        assert status == dict.fromkeys(("transmitter", "channel", "receiver"), "SERVING")

    def test_channel_with_foreign_certificate_cannot_reach_receiver(
        self,
        certs: CertSet,
        other_certs: CertSet,
        tiny_link: LinkBundle,
        tiny_weights: Path,
        run_async: Any,
    ) -> None:
        """The emulator trusts the receiver, but its own cert is from another CA: the
        receiver refuses it, and the frame comes back as an error, not a prediction."""

        async def main() -> frame_pb2.FrameResult:
            common: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "grace_seconds": 1.0}
            rx = build_receiver(
                ReceiverSettings(
                    **common,
                    weights_dir=tiny_weights,
                    torch_threads=1,
                    tls=server_tls(certs, "receiver"),
                ),
                CollectorRegistry(),
            )
            await rx.start()
            cert, key = other_certs.servers["channel"]
            emu = build_channel(
                ChannelSettings(
                    **common,
                    receiver_target=f"127.0.0.1:{rx.port}",
                    deadline_seconds=2.0,
                    tls=TlsSettings(cert_file=cert, key_file=key, ca_file=certs.ca_file),
                ),
                CollectorRegistry(),
            )
            await emu.start()
            frame = symbol_frames(tiny_link, 1, length=16)[0].message
            try:
                to_emulator = TlsSettings(ca_file=other_certs.ca_file)  # it serves that cert
                async with open_channel(f"127.0.0.1:{emu.port}", to_emulator) as channel:
                    stub_type: Any = services_pb2_grpc.ChannelEmulatorStub  # generated, untyped
                    stub = stub_type(channel)
                    results = [r async for r in stub.Transmit(iter([frame]), timeout=15.0)]
            finally:
                await emu.stop()
                await rx.stop()
            assert len(results) == 1
            first: frame_pb2.FrameResult = results[0]
            return first

        result = run_async(main(), timeout=60.0)
        assert result.fate == frame_pb2.FRAME_FATE_ERROR
        assert "UNAVAILABLE" in result.error or "DEADLINE_EXCEEDED" in result.error


class TestStackWiring:
    def test_tls_dir_sets_every_service(self, certs: CertSet, tmp_path: Path) -> None:
        stack = unstarted_stack(tmp_path, tls=CertSet.from_folder(certs.folder))
        for name in ("transmitter", "channel", "receiver"):
            env = stack._child_env(name, {}, None, None)
            prefix = f"RKDSC_{name.upper()}_TLS__"
            assert env[prefix + "CERT_FILE"] == str(certs.servers[name][0].resolve())
            assert env[prefix + "CA_FILE"] == str(certs.ca_file.resolve())
            assert env[prefix + "REQUIRE_CLIENT_AUTH"] == "true"
        control = stack._child_env("control", {}, None, None)
        assert control["RKDSC_CONTROL_TLS__CERT_FILE"] == str(certs.client[0].resolve())
        assert "RKDSC_CONTROL_TLS__REQUIRE_CLIENT_AUTH" not in control
        assert stack.endpoints()[0][1].startswith("gRPC (mutual TLS)")

    def test_tls_dir_without_certificates_fails_before_starting(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="rkdsc certs"):
            Stack.start(ports=StackPorts.free(), run_dir=tmp_path / "run", tls_dir=tmp_path)
        assert not (tmp_path / "run").exists()
