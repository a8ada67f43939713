"""Tests of ``rkdsc models ...``."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from typer.testing import CliRunner

from rkdsc_core import registry
from rkdsc_core.cli import app

runner = CliRunner()
KEYS = {"name", "params", "macs_per_image", "input_shape", "num_tokens", "feature_dim"}


class _Plain(nn.Module):
    # A registered model that is not a Backbone: no num_tokens / feature_dim.
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x)  # type: ignore[no-any-return]

    def example_inputs(self, batch: int = 1) -> tuple[Tensor, ...]:
        return (torch.rand(batch, 6),)


def _broken(**kwargs: Any) -> nn.Module:
    raise ImportError("needs an optional package")


class TestModelsInfo:
    def test_json_lists_requested_models(self) -> None:
        result = runner.invoke(
            app,
            ["models", "info", "--json", "--name", "resnet18-cifar-w32", "--name", "clip-vit-tiny"],
        )
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)
        assert [r["name"] for r in rows] == ["resnet18-cifar-w32", "clip-vit-tiny"]
        assert all(set(r) >= KEYS for r in rows)

    def test_json_values_for_resnet(self) -> None:
        result = runner.invoke(app, ["models", "info", "--json", "--name", "resnet18-cifar-w32"])
        (row,) = json.loads(result.stdout)
        assert row["params"] == 2_797_610
        assert row["macs_per_image"] == pytest.approx(0.139e9, rel=0.01)
        assert row["input_shape"] == [1, 3, 32, 32]
        assert (row["num_tokens"], row["feature_dim"]) == (16, 256)

    def test_json_separates_clip_token_dim(self) -> None:
        result = runner.invoke(app, ["models", "info", "--json", "--name", "clip-vit-tiny"])
        (row,) = json.loads(result.stdout)
        assert (row["num_tokens"], row["feature_dim"], row["token_dim"]) == (17, 32, 64)

    def test_table_has_header_and_row(self) -> None:
        result = runner.invoke(app, ["models", "info", "--name", "clip-vit-tiny"])
        assert result.exit_code == 0, result.output
        header, row = result.stdout.strip().splitlines()
        assert header.split()[:3] == ["name", "params", "MACs/image"]
        assert row.split()[:2] == ["clip-vit-tiny", "116,042"]

    def test_default_lists_every_registered_model(self, monkeypatch: pytest.MonkeyPatch) -> None:
        names = ["resnet18-cifar-w32", "clip-vit-tiny"]
        monkeypatch.setattr("rkdsc_core.cli.models.list_models", lambda: names)
        result = runner.invoke(app, ["models", "info", "--json"])
        assert [r["name"] for r in json.loads(result.stdout)] == names

    def test_model_without_backbone_attributes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(registry._REGISTRY, "test-plain", lambda **kw: _Plain())
        result = runner.invoke(app, ["models", "info", "--json", "--name", "test-plain"])
        assert result.exit_code == 0, result.output
        (row,) = json.loads(result.stdout)
        assert row["params"] == 14
        assert row["macs_per_image"] == 12
        assert (row["num_tokens"], row["feature_dim"]) == (None, None)

    def test_unknown_name_fails(self) -> None:
        result = runner.invoke(app, ["models", "info", "--name", "no-such-model"])
        assert result.exit_code == 2
        assert "no-such-model" in result.stderr
        assert "resnet18-cifar" in result.stderr

    def test_broken_model_is_reported_and_others_listed(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(registry._REGISTRY, "test-broken", _broken)
        result = runner.invoke(
            app, ["models", "info", "--json", "--name", "test-broken", "--name", "clip-vit-tiny"]
        )
        assert result.exit_code == 1
        assert "test-broken" in result.stderr
        assert [r["name"] for r in json.loads(result.stdout)] == ["clip-vit-tiny"]

    def test_set_overrides_config_fields(self) -> None:
        # The shipped student's width and depth; genotype is not JSON, so read as a string.
        result = runner.invoke(
            app,
            [
                "models",
                "info",
                "--json",
                "--name",
                "darts-student",
                "--set",
                "C=16",
                "--set",
                "layers=5",
                "--set",
                "genotype=darts_v2",
            ],
        )
        assert result.exit_code == 0, result.output
        (row,) = json.loads(result.stdout)
        assert row["overrides"] == {"C": 16, "layers": 5, "genotype": "darts_v2"}
        assert row["params"] == 161_578
        default = runner.invoke(app, ["models", "info", "--json", "--name", "darts-student"])
        (plain,) = json.loads(default.stdout)
        assert "overrides" not in plain
        assert plain["params"] != row["params"]

    def test_set_unknown_field_is_reported(self) -> None:
        result = runner.invoke(
            app, ["models", "info", "--name", "darts-student", "--set", "no_such_field=1"]
        )
        assert result.exit_code == 1
        assert "no_such_field" in result.stderr

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--set", "C=40"], "needs --name"),
            (["--name", "darts-student", "--set", "C40"], "KEY=VALUE"),
            (["--name", "darts-student", "--set", "=3"], "KEY=VALUE"),
            (["--name", "darts-student", "--set", "C=4", "--set", "C=8"], "twice"),
        ],
    )
    def test_bad_set_fails_before_building(self, args: list[str], message: str) -> None:
        result = runner.invoke(app, ["models", "info", *args])
        assert result.exit_code == 2
        assert message in result.stderr
