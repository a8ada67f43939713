"""In-memory fakes of the gRPC clients the control plane uses (services.control.clients)."""

from __future__ import annotations

from typing import Any

import grpc

from services.control.clients import Clients, ServiceError
from services.pb import services_pb2


class FakeChannel:
    """ChannelEmulator.GetSettings/SetSettings on an in-memory ChannelSettings."""

    def __init__(self) -> None:
        self.settings = services_pb2.ChannelSettings(
            model="awgn",
            snr_db=10.0,
            fading="block",
            k_factor=0.0,
            erasure_prob=0.0,
            frame_loss_prob=0.0,
            seed=7,
            delay_seconds=0.0,
            version=1,
        )
        self.set_calls: list[Any] = []
        self.fail: ServiceError | None = None
        self.reject: str | None = None

    async def get_settings(self) -> Any:
        if self.fail is not None:
            raise self.fail
        return _copy(self.settings)

    async def set_settings(self, settings: Any) -> Any:
        if self.fail is not None:
            raise self.fail
        self.set_calls.append(_copy(settings))
        if self.reject is not None:
            raise ServiceError("channel", grpc.StatusCode.INVALID_ARGUMENT, self.reject)
        applied = _copy(settings)
        applied.version = self.settings.version + 1
        self.settings = applied
        return _copy(applied)


class FakeTransmitter:
    """Transmitter.GetPolicy/SetPolicy/StartRun/GetRun; runs finish when first read."""

    def __init__(self) -> None:
        self.policy = services_pb2.LengthPolicy(
            mode=services_pb2.LengthPolicy.MODE_FIXED,
            fixed_length=64,
            target_accuracy=0.8,
            version=3,
            confidence=0.95,
        )
        self.allowed_lengths = {16, 32, 64, 128}
        self.set_calls: list[Any] = []
        self.run_requests: list[Any] = []
        self.runs: dict[str, Any] = {}
        self.get_run_calls: list[str] = []
        self.fail: ServiceError | None = None

    def restart(self) -> None:
        """Forget every run, as a restarted transmitter does (GetRun: NOT_FOUND)."""
        self.runs.clear()

    async def get_policy(self) -> Any:
        if self.fail is not None:
            raise self.fail
        return _copy(self.policy)

    async def set_policy(self, policy: Any) -> Any:
        if self.fail is not None:
            raise self.fail
        self.set_calls.append(_copy(policy))
        if (
            policy.mode == services_pb2.LengthPolicy.MODE_FIXED
            and policy.fixed_length not in self.allowed_lengths
        ):
            raise ServiceError(
                "transmitter",
                grpc.StatusCode.INVALID_ARGUMENT,
                f"L={policy.fixed_length} is not a length the codec sends; "
                f"use one of {sorted(self.allowed_lengths)}",
            )
        applied = _copy(policy)
        applied.version = self.policy.version + 1
        if not policy.HasField("confidence"):  # unset keeps the current one
            applied.confidence = self.policy.confidence
        self.policy = applied
        return _copy(applied)

    async def start_run(self, request: Any) -> Any:
        if self.fail is not None:
            raise self.fail
        self.run_requests.append(_copy(request))
        run_id = f"run-{len(self.run_requests)}"
        status = services_pb2.RunStatus(run_id=run_id, state="running", total=request.num_images)
        self.runs[run_id] = status
        return _copy(status)

    async def get_run(self, run_id: str) -> Any:
        self.get_run_calls.append(run_id)
        if self.fail is not None:
            raise self.fail
        if run_id not in self.runs:
            raise ServiceError("transmitter", grpc.StatusCode.NOT_FOUND, f"no run {run_id}")
        status = self.runs[run_id]
        n = status.total
        status.state = "done"
        status.sent = n
        predicted, correct = max(n - 1, 0), max(n - 2, 0)
        accuracy = correct / predicted if predicted else 0.0
        status.predicted = predicted
        status.lost = n - predicted
        status.correct = correct
        status.accuracy = accuracy
        status.symbols_per_image = 64.0
        status.mean_end_to_end_seconds = 0.012
        del status.per_snr[:]
        status.per_snr.add(snr_db=10.0, predicted=predicted, correct=correct, accuracy=accuracy)
        return _copy(status)


class FakeHealth:
    """The standard health check; ``status`` is returned, or ``fail`` raised."""

    def __init__(self, status: str = "SERVING") -> None:
        self.status = status
        self.fail: ServiceError | None = None

    async def check(self) -> str:
        if self.fail is not None:
            raise self.fail
        return self.status


def fake_clients() -> Clients:
    return Clients(
        transmitter=FakeTransmitter(),
        channel=FakeChannel(),
        health={name: FakeHealth() for name in ("transmitter", "channel", "receiver")},
    )


def _copy(msg: Any) -> Any:
    out = type(msg)()
    out.CopyFrom(msg)
    return out
