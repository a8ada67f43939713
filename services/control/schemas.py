"""Request and response bodies of the control plane's REST API (Create/Update/Public)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = [
    "ChannelConfig",
    "ChannelPublic",
    "ChannelUpdate",
    "FrameFates",
    "Readiness",
    "RunCreate",
    "RunPublic",
    "SnrBinPublic",
    "StatsPublic",
    "TransmitterPublic",
    "TransmitterUpdate",
]

ChannelModel = Literal["awgn", "rayleigh", "rician"]
Fading = Literal["block", "fast"]
LengthPolicyName = Literal["fixed", "adaptive"]


def _not_bool(value: Any) -> Any:
    """Refuse JSON ``true``/``false`` for a number (pydantic would read them as 1 and 0)."""
    if isinstance(value, bool):
        raise ValueError("a number is required, not a boolean")
    return value


NotBool = BeforeValidator(_not_bool)
"""On every numeric field of the API: ``{"snr_db": true}`` is an error, not 1 dB."""

SnrDb = Annotated[
    float,
    Field(ge=-30, le=60, allow_inf_nan=False, description="Es/N0 [dB], in [-30, 60]"),
    NotBool,
]
# The services hold these as float32: bounds that still hold after the rounding, so that a
# value this schema accepts is never refused (or made infinite) on the way.
_BELOW_ONE = 1.0 - 2.0**-24
"""The largest float32 below 1."""
_FLOAT32_SAFE = 1e30
"""A bound far inside float32's range (3.4e38)."""

Probability = Annotated[float, Field(ge=0, le=_BELOW_ONE, allow_inf_nan=False), NotBool]
KFactor = Annotated[
    float,
    Field(
        ge=0,
        le=_FLOAT32_SAFE,
        allow_inf_nan=False,
        description="Rician K factor (linear, >= 0)",
    ),
    NotBool,
]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1, description="noise seed, in [0, 2**63)"), NotBool]
Delay = Annotated[
    float,
    Field(
        ge=0,
        le=60,
        allow_inf_nan=False,
        description="added one-way delay [s], in [0, 60]; a frame whose deadline "
        "(RKDSC_TRANSMITTER_DEADLINE_SECONDS, 10 s by default) passes during the delay "
        "expires, so a delay at or above the deadline fails every frame",
    ),
    NotBool,
]
Length = Annotated[
    int,
    Field(ge=1, lt=2**32, description="L, complex symbols per image, for the fixed policy"),
    NotBool,
]
Accuracy = Annotated[
    float,
    Field(ge=0, le=1, allow_inf_nan=False, description="target accuracy in [0, 1]"),
    NotBool,
]
Confidence = Annotated[
    float,
    Field(
        ge=0.5,
        le=_BELOW_ONE,
        allow_inf_nan=False,
        description="one-sided confidence in [0.5, 1) that the adaptive policy's L reaches "
        "target_accuracy (0.5 = no margin)",
    ),
    NotBool,
]


class _NoNulls(BaseModel):
    """Partial updates: a field left out keeps its value; an explicit ``null`` is refused."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _refuse_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = sorted(k for k, v in data.items() if v is None)
            if nulls:
                raise ValueError(
                    f"{', '.join(nulls)}: null is not a value; leave the field out to keep it"
                )
        return data


class ChannelConfig(BaseModel):
    """A complete, valid channel configuration (what ChannelEmulator.SetSettings receives)."""

    model_config = ConfigDict(extra="forbid")

    model: ChannelModel = Field(description="awgn | rayleigh | rician")
    snr_db: SnrDb
    fading: Fading = Field(description="block (one gain per frame) | fast (per symbol)")
    k_factor: KFactor
    erasure_prob: Probability = Field(description="per-symbol erasure probability in [0, 1)")
    frame_loss_prob: Probability = Field(description="whole-frame loss probability in [0, 1)")
    seed: Seed
    delay_seconds: Delay


class ChannelPublic(BaseModel):
    """The channel emulator's settings as it reports them."""

    model: str = Field(description="awgn | rayleigh | rician")
    snr_db: float = Field(description="Es/N0 [dB]")
    fading: str = Field(description="block | fast")
    k_factor: float = Field(description="Rician K factor (linear)")
    erasure_prob: float = Field(description="per-symbol erasure probability")
    frame_loss_prob: float = Field(description="whole-frame loss probability")
    seed: int = Field(description="noise seed")
    delay_seconds: float = Field(description="added one-way delay [s]")
    version: int = Field(description="config version, bumped by the emulator on each change")


class ChannelUpdate(_NoNulls):
    """A partial channel update: the fields given replace the current ones."""

    model: ChannelModel | None = None
    snr_db: SnrDb | None = None
    fading: Fading | None = None
    k_factor: KFactor | None = None
    erasure_prob: Probability | None = Field(default=None, description="in [0, 1)")
    frame_loss_prob: Probability | None = Field(default=None, description="in [0, 1)")
    seed: Seed | None = None
    delay_seconds: Delay | None = None


class TransmitterPublic(BaseModel):
    """The transmitter's length policy."""

    length_policy: LengthPolicyName | Literal["unspecified"] = Field(
        description="fixed: always fixed_length; adaptive: smallest measured L reaching "
        "target_accuracy at the link's estimated SNR"
    )
    fixed_length: int = Field(description="L for the fixed policy")
    target_accuracy: float = Field(description="target accuracy for the adaptive policy")
    confidence: float = Field(
        description="one-sided confidence that the adaptive policy's L reaches target_accuracy, "
        "given the eval table's images (0.5 = no margin)"
    )
    version: int = Field(description="transmitter config version")


class TransmitterUpdate(_NoNulls):
    """A partial policy update: the fields given replace the current ones."""

    length_policy: LengthPolicyName | None = None
    fixed_length: Length | None = None
    target_accuracy: Accuracy | None = None
    confidence: Confidence | None = None


class RunCreate(BaseModel):
    """Stream a dataset split through the link."""

    model_config = ConfigDict(extra="forbid")

    split: Literal["train", "test"] = "test"
    num_images: Annotated[
        int,
        Field(ge=1, le=1_000_000, description="images: a fixed seeded sample of the split"),
        NotBool,
    ] = 100
    rate: Annotated[
        float,
        Field(
            ge=0, le=_FLOAT32_SAFE, allow_inf_nan=False, description="images per second (0 = max)"
        ),
        NotBool,
    ] = 0.0
    link_id: str = Field(
        default="",
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]*$",
        description='link to use ("" = the transmitter\'s default)',
    )


class SnrBinPublic(BaseModel):
    """Accuracy in one 2 dB SNR bin."""

    snr_db: float = Field(description="bin centre, Es/N0 [dB]")
    predicted: int
    correct: int
    accuracy: float


class FrameFates(BaseModel):
    """What became of the frames sent so far."""

    predicted: int
    lost: int
    error: int
    error_codes: dict[str, int] = Field(
        default_factory=dict,
        description="errors by cause, the gRPC status name each starts with (UNAVAILABLE, "
        "DEADLINE_EXCEEDED, INVALID_ARGUMENT, ...); adds up to error",
    )


class RunPublic(BaseModel):
    """A run's progress and results."""

    run_id: str
    state: str = Field(
        description="loading (the transmitter decodes the split) | running | done | failed"
    )
    done: bool = Field(description="the run has finished (done or failed)")
    total: int
    sent: int
    progress: float = Field(description="fraction of the images accounted for, in [0, 1]")
    fates: FrameFates
    correct: int
    accuracy: float = Field(description="correct / predicted")
    symbols_per_image: float
    mean_end_to_end_seconds: float | None = Field(
        description="mean transmitter-to-result latency of the predicted frames [s]"
    )
    per_snr: list[SnrBinPublic]
    error: str | None = Field(
        default=None,
        description="why a failed run failed; 'lost: ...' when the transmitter no longer "
        "knows the run (it restarted)",
    )


class Readiness(BaseModel):
    """Whether every gRPC service answers its health check with SERVING."""

    status: Literal["ready", "not ready"]
    services: dict[str, str] = Field(description="health status per service")
    not_ready: list[str]


class StatsPublic(BaseModel):
    """A summary of the link: settings, policy, runs and service health."""

    channel: ChannelPublic | None
    transmitter: TransmitterPublic | None
    runs: list[RunPublic] = Field(description="runs started through this control plane")
    services: dict[str, str] = Field(description="health status per service")
    errors: dict[str, str] = Field(description="what could not be read, by part")
