"""Settings of the control plane: environment prefix and fail-fast token checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.control import Settings


class TestSettings:
    def test_settings_read_the_control_prefix(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("RKDSC_CONTROL_PORT", "8123")
        monkeypatch.setenv("RKDSC_CONTROL_CHANNEL_TARGET", "127.0.0.1:6000")
        monkeypatch.setenv("RKDSC_CONTROL_TOKEN", "s3cret")
        s = Settings()
        assert s.port == 8123
        assert s.channel_target == "127.0.0.1:6000"
        assert s.token is not None and s.token.get_secret_value() == "s3cret"
        assert "s3cret" not in repr(s)

    @pytest.mark.parametrize("token", ["", " padded", "two words"])
    def test_unusable_token_fails_fast(self, token: str) -> None:
        with pytest.raises(ValidationError, match="RKDSC_CONTROL_TOKEN"):
            Settings(token=token)

    def test_nonpositive_deadline_fails_fast(self) -> None:
        with pytest.raises(ValidationError, match="deadline_seconds"):
            Settings(deadline_seconds=0)
