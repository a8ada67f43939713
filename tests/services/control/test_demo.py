"""The demo sweep (services.control.demo) through the control app on fake services."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.control.client import ControlClient, ControlError
from services.control.demo import DemoConfig, format_table, run_demo, write_outputs

from .conftest import TOKEN
from .fakes import FakeChannel, FakeTransmitter


@pytest.fixture
def control(client: TestClient) -> ControlClient:
    return ControlClient("http://testserver", TOKEN, http=client)


class TestDemo:
    def test_demo_runs_one_run_per_snr(
        self, control: ControlClient, channel: FakeChannel, transmitter: FakeTransmitter
    ) -> None:
        config = DemoConfig(snr_db=(-4.0, 8.0), images=11, channel="rayleigh", length=32)
        result = run_demo(control, config)
        assert [r.snr_db for r in result.rows] == [-4.0, 8.0]
        assert [c.snr_db for c in channel.set_calls] == [-4.0, 8.0]
        assert channel.settings.model == "rayleigh"
        assert transmitter.policy.fixed_length == 32
        # An unrecorded warm-up run after each SNR change, then the measured one.
        assert [r.num_images for r in transmitter.run_requests] == [64, 11, 64, 11]
        assert [r.run_id for r in result.rows] == ["run-2", "run-4"]
        row = result.rows[0]
        assert (row.accuracy, row.symbols_per_image, row.predicted, row.lost) == (0.9, 64.0, 10, 1)
        assert row.latency_ms == pytest.approx(12.0)

    def test_demo_without_warmup_runs_only_the_measured_runs(
        self, control: ControlClient, transmitter: FakeTransmitter
    ) -> None:
        run_demo(control, DemoConfig(snr_db=(0.0, 4.0), images=5, warmup_images=0))
        assert [r.num_images for r in transmitter.run_requests] == [5, 5]

    def test_a_run_that_predicts_nothing_has_no_accuracy(self, control: ControlClient) -> None:
        # The fake predicts all but one image: a 1-image run predicts none.
        with pytest.raises(ControlError, match="predicted no image"):
            run_demo(control, DemoConfig(snr_db=(0.0,), images=1, warmup_images=0))

    def test_a_channel_that_reports_another_snr_stops_the_demo(
        self, control: ControlClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real = control.update_channel
        monkeypatch.setattr(control, "update_channel", lambda **kw: real(**kw) | {"snr_db": 5.0})
        with pytest.raises(ControlError, match="reports 5 dB after setting 0 dB"):
            run_demo(control, DemoConfig(snr_db=(0.0,), images=3))

    def test_demo_sets_the_adaptive_policy_confidence(
        self, control: ControlClient, transmitter: FakeTransmitter
    ) -> None:
        config = DemoConfig(snr_db=(0.0,), images=2, policy="adaptive", confidence=0.5)
        result = run_demo(control, config)
        assert transmitter.policy.confidence == 0.5
        assert result.transmitter["confidence"] == 0.5

    @pytest.mark.parametrize("confidence", [0.3, 1.0])
    def test_demo_config_refuses_a_confidence_outside_its_range(self, confidence: float) -> None:
        with pytest.raises(ValueError, match="confidence"):
            DemoConfig(confidence=confidence)

    @pytest.mark.parametrize("snr_db", [100.0, -31.0])
    def test_demo_config_refuses_an_snr_the_channel_cannot_apply(self, snr_db: float) -> None:
        with pytest.raises(ValueError, match=r"outside the channel's \[-30, 60\] dB"):
            DemoConfig(snr_db=(0.0, snr_db))

    def test_demo_writes_csv_json_and_plot(self, control: ControlClient, tmp_path: Path) -> None:
        result = run_demo(control, DemoConfig(snr_db=(0.0, 10.0), images=5))
        paths = write_outputs(result, tmp_path / "out")
        with paths["csv"].open() as f:
            rows = list(csv.DictReader(f))
        assert [float(r["snr_db"]) for r in rows] == [0.0, 10.0]
        doc = json.loads(paths["json"].read_text())
        assert doc["config"]["images"] == 5 and len(doc["runs"]) == 2
        assert doc["command"].startswith("rkdsc") and doc["git_commit"]
        assert doc["machine"]["logical_cpus"] >= 1
        assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        table = format_table(result.rows).splitlines()
        assert table[0].split() == [
            "snr_db",
            "accuracy",
            "symbols/image",
            "latency",
            "ms",
            "lost",
            "errors",
        ]
        assert len(table) == 3

    def test_demo_with_a_wrong_token_fails_clearly(self, client: TestClient) -> None:
        control = ControlClient("http://testserver", "wrong", http=client)
        with pytest.raises(ControlError, match="401"):
            run_demo(control, DemoConfig(snr_db=(0.0,), images=2))

    def test_demo_refused_length_names_the_field(self, control: ControlClient) -> None:
        with pytest.raises(ControlError, match="fixed_length"):
            run_demo(control, DemoConfig(snr_db=(0.0,), images=2, length=7))
