import dataclasses
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from rkdsc_core.cli import app
from rkdsc_core.cli._common import distributed, run_settings
from rkdsc_core.config import load_settings
from rkdsc_core.train.ddp import DistInfo


class TestLoadSettings:
    def test_rkdsc_data_dir_sets_the_data_source(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("RKDSC_DATA_DIR", str(tmp_path))
        assert load_settings().resolved_data().dir == tmp_path

    def test_an_unprefixed_data_dir_variable_is_not_read(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("RKDSC_DATA_DIR", raising=False)
        monkeypatch.delenv("RKDSC_DATA__DIR", raising=False)
        monkeypatch.setenv("DATA_DIR", "/some/other/tool")
        assert load_settings().resolved_data().dir is None

    def test_the_files_data_dir_beats_the_environments(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("RKDSC_DATA_DIR", "/from/env")
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"data_dir: {tmp_path}\n")
        assert load_settings(cfg).resolved_data().dir == tmp_path

    def test_nested_environment_variables(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("RKDSC_DATA__CACHE_DIR", str(tmp_path))
        assert load_settings().data.cache_dir == tmp_path

    def test_overrides_beat_the_environment_and_none_keeps_it(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("RKDSC_DATA_DIR", "/from/env")
        s = load_settings(overrides={"data.dir": tmp_path, "data.cache_dir": None})
        assert s.resolved_data().dir == tmp_path

    def test_config_file_loads_before_overrides(self, tmp_path: Path) -> None:
        cfg = tmp_path / "c.yaml"
        cfg.write_text("device: cuda\ndata:\n  cache_dir: /tmp/c\n")
        s = load_settings(cfg, overrides={"device": "cpu"})
        assert s.device == "cpu" and s.data.cache_dir == Path("/tmp/c")

    def test_compile_comes_from_the_environment_unless_an_option_is_given(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("RKDSC_COMPILE", raising=False)
        assert not load_settings().compile
        monkeypatch.setenv("RKDSC_COMPILE", "1")
        assert run_settings(None, None).compile
        assert not run_settings(None, None, compile_model=False).compile
        with distributed("cpu", compile_model=True) as info:
            assert info.compile and info == dataclasses.replace(DistInfo.single(), compile=True)

    def test_unknown_keys_fail_fast(self, tmp_path: Path) -> None:
        cfg = tmp_path / "c.json"
        cfg.write_text('{"dataa": {}}')
        with pytest.raises(ValidationError, match="dataa"):
            load_settings(cfg)


@pytest.mark.parametrize(
    "command",
    [
        ["train", "link"],
        ["train", "teacher"],
        ["train", "student"],
        ["train", "codec"],
        ["nas", "sweep"],
        ["nas", "evaluate"],
    ],
)
def test_every_training_command_takes_compile(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--compile" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["channel", "simulate", "--max-bits", "0"], "--max-bits"),
        (["channel", "simulate", "--min-errors", "0"], "--min-errors"),
        (["eval", "sweep", "--seed", "-1"], "--seed"),
        (["eval", "table", "--limit", "0"], "--limit"),
        (["eval", "clean", "x", "--limit", "0"], "--limit"),
        (["eval", "table", "--knowledge", "genie"], "--knowledge must be perfect, pilot or none"),
        (["train", "teacher", "--device", "gpu"], "'gpu' is not a torch device"),
    ],
)
def test_plausible_mistakes_get_one_clear_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app, [*args, *(["--out", str(tmp_path / "o")] if "teacher" in args else [])]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "o").exists()  # nothing left behind
