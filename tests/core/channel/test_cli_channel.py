import json

from typer.testing import CliRunner

from rkdsc_core.cli import app

runner = CliRunner()


class TestSimulateCommand:
    def test_json_lists_ber_beside_theory(self) -> None:
        result = runner.invoke(
            app,
            [
                "channel",
                "simulate",
                "--channel",
                "rayleigh",
                "--modulation",
                "qpsk",
                "--snr-db",
                "0",
                "--snr-db",
                "10",
                "--json",
            ],
        )
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)
        assert [r["snr_db"] for r in rows] == [0.0, 10.0]
        for r in rows:
            assert {"snr_db", "ber", "ber_theory"} <= r.keys()
            assert abs(r["ber"] - r["ber_theory"]) / r["ber_theory"] < 0.1

    def test_table_output(self) -> None:
        result = runner.invoke(app, ["channel", "simulate", "--snr-db", "4"])
        assert result.exit_code == 0
        assert "ber_theory" in result.stdout and "4.0" in result.stdout

    def test_unknown_channel_is_a_clear_error(self) -> None:
        result = runner.invoke(app, ["channel", "simulate", "--channel", "nakagami"])
        assert result.exit_code == 2
        assert "--channel must be one of" in result.stderr

    def test_snr_out_of_range_is_a_clear_error(self) -> None:
        result = runner.invoke(app, ["channel", "simulate", "--snr-db", "99"])
        assert result.exit_code == 2
        assert "[-30, 60]" in result.stderr


def test_help_keeps_the_units_in_brackets() -> None:
    result = CliRunner().invoke(app, ["channel", "simulate", "--help"])
    assert result.exit_code == 0
    assert "Es/N0 [dB]" in " ".join(result.output.split())
