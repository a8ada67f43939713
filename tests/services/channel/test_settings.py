"""Channel emulator settings and impairment params: defaults, environment, validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.channel.settings import ChannelParams, Settings
from services.pb import services_pb2


class TestSettings:
    def test_defaults(self) -> None:
        s = Settings()
        assert (s.host, s.port, s.metrics_port) == ("127.0.0.1", 50052, 9102)
        assert s.receiver_target == "127.0.0.1:50053"
        assert s.channel_params() == ChannelParams()

    def test_reads_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("RKDSC_CHANNEL_SNR_DB", "10")
        monkeypatch.setenv("RKDSC_CHANNEL_MODEL", "rician")
        monkeypatch.setenv("RKDSC_CHANNEL_K_FACTOR", "2")
        params = Settings().channel_params()
        assert (params.model, params.snr_db, params.k_factor) == ("rician", 10.0, 2.0)

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("snr_db", 61.0),
            ("model", "rayleigh-ish"),
            ("fading", "slow"),
            ("erasure_prob", 1.0),
            ("frame_loss_prob", -0.1),
            ("k_factor", -1.0),
            ("delay_seconds", -0.5),
            ("queue_size", 0),
        ],
    )
    def test_invalid_value_names_the_field(self, field: str, value: object) -> None:
        with pytest.raises(ValidationError, match=field):
            Settings(**{field: value})

    def test_params_are_rounded_like_the_wire(self) -> None:
        params = Settings(erasure_prob=0.1).channel_params()
        assert params.erasure_prob == ChannelParams.from_proto(params.to_proto(1)).erasure_prob
        assert params.erasure_prob != 0.1  # float32 on the wire


class TestChannelParams:
    def test_round_trips_through_the_message(self) -> None:
        params = ChannelParams(model="rician", snr_db=-3.5, k_factor=4.0, seed=9)
        msg = params.to_proto(7)
        assert msg.version == 7
        assert ChannelParams.from_proto(msg) == params

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("model", ""),
            ("snr_db", -31.0),
            ("snr_db", float("nan")),
            ("fading", "block-ish"),
            ("k_factor", -0.5),
            ("erasure_prob", 1.5),
            ("frame_loss_prob", 1.0),
            ("delay_seconds", 61.0),
            ("seed", 2**63),
        ],
    )
    def test_invalid_message_is_rejected_naming_the_field(self, field: str, value: object) -> None:
        msg = ChannelParams().to_proto(1)
        setattr(msg, field, value)
        with pytest.raises(ValueError, match=field):
            ChannelParams.from_proto(msg)

    def test_empty_message_is_not_a_config(self) -> None:
        with pytest.raises(ValueError, match="model"):
            ChannelParams.from_proto(services_pb2.ChannelSettings())
