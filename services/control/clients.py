"""The control plane's gRPC clients: thin async wrappers with deadlines and typed errors.

The routes talk to these protocols only, so tests inject simple async fakes. Every call has
the settings' deadline; a failed call raises :class:`ServiceError` with the gRPC status.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services._tls import open_channel
from services.control.settings import Settings
from services.pb import services_pb2, services_pb2_grpc

__all__ = [
    "SERVICE_NAMES",
    "ChannelAPI",
    "Clients",
    "GrpcClients",
    "HealthAPI",
    "ServiceError",
    "TransmitterAPI",
]

log = logging.getLogger(__name__)

SERVICE_NAMES = ("transmitter", "channel", "receiver")
"""The gRPC services the control plane watches, in pipeline order."""


class ServiceError(Exception):
    """A gRPC call to one of the services failed.

    Attributes:
        service: ``transmitter``, ``channel`` or ``receiver``.
        code: the gRPC status code.
        message: the status details.
        target: the address that was called.
    """

    def __init__(self, service: str, code: grpc.StatusCode, message: str, target: str = "") -> None:
        super().__init__(f"{service}: {code.name}: {message}")
        self.service = service
        self.code = code
        self.message = message
        self.target = target


class TransmitterAPI(Protocol):
    """The transmitter calls the control plane makes (messages of ``services_pb2``)."""

    async def get_policy(self) -> Any: ...
    async def set_policy(self, policy: Any) -> Any: ...
    async def start_run(self, request: Any) -> Any: ...
    async def get_run(self, run_id: str) -> Any: ...


class ChannelAPI(Protocol):
    """The channel-emulator calls the control plane makes."""

    async def get_settings(self) -> Any: ...
    async def set_settings(self, settings: Any) -> Any: ...


class HealthAPI(Protocol):
    """The standard gRPC health check of one server."""

    async def check(self) -> str:
        """The overall serving status name (``SERVING``, ``NOT_SERVING``, ...)."""
        ...


@dataclass
class Clients:
    """The clients the routes use; ``health`` is keyed by :data:`SERVICE_NAMES`."""

    transmitter: TransmitterAPI
    channel: ChannelAPI
    health: dict[str, HealthAPI]
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        """Close the underlying channels (no-op for injected fakes)."""
        for close in self.closers:
            await close()
        self.closers.clear()


class _Caller:
    """Runs unary calls on one target with a deadline, mapping RPC errors to ServiceError."""

    def __init__(self, service: str, target: str, deadline_seconds: float) -> None:
        self.service = service
        self.target = target
        self.deadline = deadline_seconds

    async def __call__(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self.deadline)
        except grpc.aio.AioRpcError as err:
            code = err.code()
            details = err.details() or ""
            log.debug("%s %s failed: %s %s", self.service, self.target, code, details)
            raise ServiceError(self.service, code, details, self.target) from err


class _Transmitter:
    def __init__(self, channel: Any, call: _Caller) -> None:
        stub: Any = services_pb2_grpc.TransmitterStub  # generated, untyped
        self._stub = stub(channel)
        self._call = call

    async def get_policy(self) -> Any:
        return await self._call(self._stub.GetPolicy, services_pb2.GetPolicyRequest())

    async def set_policy(self, policy: Any) -> Any:
        return await self._call(self._stub.SetPolicy, policy)

    async def start_run(self, request: Any) -> Any:
        return await self._call(self._stub.StartRun, request)

    async def get_run(self, run_id: str) -> Any:
        return await self._call(self._stub.GetRun, services_pb2.GetRunRequest(run_id=run_id))


class _Channel:
    def __init__(self, channel: Any, call: _Caller) -> None:
        stub: Any = services_pb2_grpc.ChannelEmulatorStub  # generated, untyped
        self._stub = stub(channel)
        self._call = call

    async def get_settings(self) -> Any:
        return await self._call(self._stub.GetSettings, services_pb2.GetChannelRequest())

    async def set_settings(self, settings: Any) -> Any:
        return await self._call(self._stub.SetSettings, settings)


class _Health:
    def __init__(self, channel: Any, call: _Caller) -> None:
        self._stub = health_pb2_grpc.HealthStub(channel)
        self._call = call

    async def check(self) -> str:
        reply = await self._call(self._stub.Check, health_pb2.HealthCheckRequest(service=""))
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


class GrpcClients:
    """Builds :class:`Clients` on ``grpc.aio`` channels (call inside the serving event loop)."""

    @staticmethod
    def connect(settings: Settings) -> Clients:
        targets = {
            "transmitter": settings.transmitter_target,
            "channel": settings.channel_target,
            "receiver": settings.receiver_target,
        }
        channels = {name: open_channel(target, settings.tls) for name, target in targets.items()}
        callers = {
            name: _Caller(name, targets[name], settings.deadline_seconds) for name in targets
        }
        return Clients(
            transmitter=_Transmitter(channels["transmitter"], callers["transmitter"]),
            channel=_Channel(channels["channel"], callers["channel"]),
            health={name: _Health(channels[name], callers[name]) for name in SERVICE_NAMES},
            closers=[ch.close for ch in channels.values()],
        )
