"""Conversions between the protobuf messages and the REST schemas."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from services.control.schemas import (
    ChannelConfig,
    ChannelPublic,
    FrameFates,
    RunPublic,
    SnrBinPublic,
    TransmitterPublic,
)
from services.pb import services_pb2

__all__ = [
    "channel_public",
    "channel_settings_message",
    "f32",
    "policy_message",
    "run_public",
    "transmitter_public",
]

_DONE_STATES = frozenset({"done", "failed"})


def f32(value: float) -> float:
    """A proto ``float`` (float32) as a short decimal: 0.1, not 0.10000000149."""
    return float(f"{value:.7g}")


def channel_public(msg: Any) -> ChannelPublic:
    """ChannelSettings -> ChannelPublic (as reported; ChannelConfig holds the constraints)."""
    return ChannelPublic(
        model=msg.model,
        snr_db=f32(msg.snr_db),
        fading=msg.fading,
        k_factor=f32(msg.k_factor),
        erasure_prob=f32(msg.erasure_prob),
        frame_loss_prob=f32(msg.frame_loss_prob),
        seed=int(msg.seed),
        delay_seconds=f32(msg.delay_seconds),
        version=int(msg.version),
    )


def channel_settings_message(config: ChannelConfig) -> Any:
    """ChannelConfig -> ChannelSettings (version is set by the emulator)."""
    return services_pb2.ChannelSettings(
        model=config.model,
        snr_db=config.snr_db,
        fading=config.fading,
        k_factor=config.k_factor,
        erasure_prob=config.erasure_prob,
        frame_loss_prob=config.frame_loss_prob,
        seed=config.seed,
        delay_seconds=config.delay_seconds,
    )


_MODES = {"fixed": "MODE_FIXED", "adaptive": "MODE_ADAPTIVE"}
_NAMES: dict[str, Literal["fixed", "adaptive"]] = {
    "MODE_FIXED": "fixed",
    "MODE_ADAPTIVE": "adaptive",
}


def transmitter_public(msg: Any) -> TransmitterPublic:
    """LengthPolicy -> TransmitterPublic."""
    mode = str(services_pb2.LengthPolicy.Mode.Name(msg.mode))
    return TransmitterPublic(
        length_policy=_NAMES.get(mode, "unspecified"),
        fixed_length=int(msg.fixed_length),
        target_accuracy=f32(msg.target_accuracy),
        confidence=f32(msg.confidence),
        version=int(msg.version),
    )


def policy_message(body: Mapping[str, Any]) -> Any:
    """A policy as the REST API spells it -> LengthPolicy (no ``confidence``: keep the
    transmitter's)."""
    return services_pb2.LengthPolicy(
        mode=services_pb2.LengthPolicy.Mode.Value(_MODES[body["length_policy"]]),
        fixed_length=body["fixed_length"],
        target_accuracy=body["target_accuracy"],
        confidence=body.get("confidence"),
    )


def run_public(msg: Any) -> RunPublic:
    """RunStatus -> RunPublic (adds done, progress and the frame fates)."""
    total = int(msg.total)
    accounted = int(msg.predicted) + int(msg.lost) + int(msg.errors)
    done = msg.state in _DONE_STATES
    progress = min(1.0, accounted / total) if total > 0 else float(done)
    latency = float(getattr(msg, "mean_end_to_end_seconds", 0.0))
    return RunPublic(
        run_id=msg.run_id,
        state=msg.state,
        done=done,
        total=total,
        sent=int(msg.sent),
        progress=progress,
        fates=FrameFates(
            predicted=int(msg.predicted),
            lost=int(msg.lost),
            error=int(msg.errors),
            error_codes={str(k): int(v) for k, v in msg.errors_by_code.items()},
        ),
        correct=int(msg.correct),
        accuracy=float(msg.accuracy),
        symbols_per_image=float(msg.symbols_per_image),
        mean_end_to_end_seconds=latency if latency > 0 else None,
        per_snr=[
            SnrBinPublic(
                snr_db=f32(b.snr_db),
                predicted=int(b.predicted),
                correct=int(b.correct),
                accuracy=float(b.accuracy),
            )
            for b in msg.per_snr
        ],
        error=msg.error or None,
    )
