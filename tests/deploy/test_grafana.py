"""Grafana: the generated dashboard and the provisioning that loads it."""

from __future__ import annotations

import json
from typing import Any

from ._support import (
    COMPOSE,
    DASHBOARD,
    GRAFANA_DIR,
    all_expressions,
    gen_dashboard,
    load_yaml,
    volume_mounts,
)


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


class TestDashboard:
    def test_committed_json_is_the_generator_output(self) -> None:
        assert DASHBOARD.read_text() == gen_dashboard().render(), (
            "deploy/grafana/dashboards/rkdsc.json is stale or hand-edited: "
            "run python scripts/gen_dashboard.py"
        )

    def test_generator_check_mode(self) -> None:
        assert gen_dashboard().main(["--check"]) == 0

    def test_has_the_required_panels(self) -> None:
        titles = {p["title"] for p in _dashboard()["panels"]}
        for title in (
            "Accuracy vs SNR",
            "Accuracy and channel SNR",
            "Throughput",
            "End-to-end latency",
            "Latency per stage",
            "Symbols per image: fixed vs adaptive",
            "Frame fates",
        ):
            assert title in titles

    def test_snr_is_on_the_right_axis_of_the_accuracy_panel(self) -> None:
        panel = next(p for p in _dashboard()["panels"] if p["title"] == "Accuracy and channel SNR")
        assert [t["refId"] for t in panel["targets"]] == ["A", "B"]
        assert "rkdsc_channel_snr_db" in panel["targets"][1]["expr"]
        (override,) = panel["fieldConfig"]["overrides"]
        assert override["matcher"] == {"id": "byFrameRefID", "options": "B"}
        props = {p["id"]: p["value"] for p in override["properties"]}
        assert props["custom.axisPlacement"] == "right"

    def test_annotates_channel_config_changes(self) -> None:
        exprs = [a.get("expr", "") for a in _dashboard()["annotations"]["list"]]
        assert any(
            e.startswith("changes(rkdsc_channel_config_version[") and e.endswith("> 0")
            for e in exprs
        )

    def test_panel_ids_unique_and_grid_fits(self) -> None:
        panels = _dashboard()["panels"]
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids))
        for p in panels:
            pos = p["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, p["title"]

    def test_every_query_uses_the_datasource_variable(self) -> None:
        dash = _dashboard()
        assert dash["templating"]["list"][0]["name"] == "datasource"
        for p in dash["panels"]:
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}", p["title"]

    def test_expressions_have_no_macros_left_after_substitution(self) -> None:
        for where, expr in all_expressions():
            assert "$" not in expr, where


class TestProvisioning:
    def test_datasource_uid_is_the_dashboard_default(self) -> None:
        (source,) = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")[
            "datasources"
        ]
        variable = _dashboard()["templating"]["list"][0]
        assert source["uid"] == variable["current"]["value"]
        assert source["type"] == "prometheus"
        assert source["url"] == "http://prometheus:9090"

    def test_dashboard_provider_reads_the_mounted_folder(self) -> None:
        (provider,) = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "rkdsc.yml")[
            "providers"
        ]
        grafana = load_yaml(COMPOSE)["services"]["grafana"]
        mounts = volume_mounts(grafana)
        assert mounts[provider["options"]["path"]] == ("./deploy/grafana/dashboards", "ro")
        assert mounts["/etc/grafana/provisioning"] == ("./deploy/grafana/provisioning", "ro")
        home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        assert home == provider["options"]["path"] + "/" + DASHBOARD.name
