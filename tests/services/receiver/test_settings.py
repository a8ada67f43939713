"""Receiver settings: defaults, environment, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.receiver.settings import Settings


class TestSettings:
    def test_defaults(self) -> None:
        s = Settings()
        assert (s.host, s.port, s.metrics_port) == ("127.0.0.1", 50053, 9103)
        assert (s.weights_dir, s.knowledge, s.device) == (None, "pilot", "cpu")

    def test_reads_the_environment(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("RKDSC_RECEIVER_KNOWLEDGE", "perfect")
        monkeypatch.setenv("RKDSC_RECEIVER_WEIGHTS_DIR", str(tmp_path))
        s = Settings()
        assert (s.knowledge, s.weights_dir) == ("perfect", tmp_path)

    @pytest.mark.parametrize(
        ("field", "value"),
        [("knowledge", "none"), ("device", "abacus"), ("port", -1), ("torch_threads", 0)],
    )
    def test_invalid_value_names_the_field(self, field: str, value: object) -> None:
        with pytest.raises(ValidationError, match=field):
            Settings(**{field: value})
