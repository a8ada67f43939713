"""Settings of the control plane: environment prefix and fail-fast token checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.control import Settings
from services.control.settings import default_token_file
from services.stack import write_token_file


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


class TestTokenFile:
    def test_each_control_port_but_the_default_has_its_own_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
        assert default_token_file() == tmp_path / "rkdsc" / "control-token"
        assert default_token_file(8000) == default_token_file()
        assert default_token_file(18006) == tmp_path / "rkdsc" / "control-token-18006"

    def test_clients_read_the_token_of_the_stack_they_talk_to(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from services.cli import _api_token

        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
        monkeypatch.delenv("RKDSC_CONTROL_TOKEN", raising=False)
        write_token_file(default_token_file(18006), "second-stack")
        assert _api_token(None, 18006) == "second-stack"
        assert _api_token(None, 8000) is None  # the default stack's file is not touched
        assert _api_token("given", 18006) == "given"

    def test_a_control_plane_reads_the_file_of_its_own_port(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Started on its own (python -m services.control) on another port, the control plane
        reads the file `rkdsc up` wrote for that port; an explicit token_file wins."""
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
        monkeypatch.delenv("RKDSC_CONTROL_TOKEN_FILE", raising=False)
        assert Settings().token_file == default_token_file(8000)
        assert Settings(port=18006).token_file == default_token_file(18006)
        monkeypatch.setenv("RKDSC_CONTROL_PORT", "18007")
        assert Settings().token_file == tmp_path / "rkdsc" / "control-token-18007"
        assert Settings(token_file=tmp_path / "mine").token_file == tmp_path / "mine"
