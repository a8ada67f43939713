"""Prometheus: scrape configs, recording rules, and the metric names every query depends on."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ._support import (
    APP_SERVICES,
    COMPOSE,
    METRICS_PORTS,
    PROMETHEUS_DIR,
    RECORDED,
    ROOT,
    RULES,
    all_expressions,
    load_yaml,
    promtool,
    raw_metric_names,
    render_local,
    rule_expressions,
    run,
)

METRICS_USED = (
    # transmitter
    "rkdsc_transmitter_frames_total",  # {fate}: predicted | lost | error
    "rkdsc_transmitter_images_total",
    "rkdsc_transmitter_symbols_total",
    "rkdsc_transmitter_symbols_per_frame_sum",  # histogram
    "rkdsc_transmitter_symbols_per_frame_count",
    "rkdsc_transmitter_encode_seconds_bucket",  # histogram
    "rkdsc_transmitter_end_to_end_seconds_bucket",  # histogram
    "rkdsc_transmitter_in_flight",
    "rkdsc_transmitter_config_version",
    "rkdsc_transmitter_snr_estimate_db",  # {link}
    "rkdsc_transmitter_policy_mode",  # {mode}: 1 for the active one
    "rkdsc_transmitter_grpc_calls_total",  # {method, code}
    # channel emulator
    "rkdsc_channel_frames_total",  # {fate}: forwarded | lost | error
    "rkdsc_channel_frames_expired_total",
    "rkdsc_channel_processing_seconds_bucket",  # histogram
    "rkdsc_channel_queue_depth",
    "rkdsc_channel_config_version",
    "rkdsc_channel_snr_db",
    "rkdsc_channel_grpc_calls_total",
    # receiver
    "rkdsc_receiver_predictions_total",  # {snr_db_bin, correct}: true | false | unknown
    "rkdsc_receiver_frames_total",  # {fate}
    "rkdsc_receiver_frames_expired_total",
    "rkdsc_receiver_decode_seconds_bucket",  # histogram
    "rkdsc_receiver_grpc_calls_total",
    # control plane
    "rkdsc_control_http_requests_total",  # {method, route, status}
)
"""EVERY metric name the deployment's queries read (rules.yml, the dashboard and its
annotations); reconcile with the services' metrics modules when they change."""

LABELS_USED = {
    "rkdsc_transmitter_frames_total": {"fate"},
    "rkdsc_channel_frames_total": {"fate"},
    "rkdsc_receiver_frames_total": {"fate"},
    "rkdsc_receiver_predictions_total": {"snr_db_bin", "correct"},
    "rkdsc_transmitter_snr_estimate_db": {"link"},
    "rkdsc_transmitter_policy_mode": {"mode"},
    "rkdsc_control_http_requests_total": {"method", "route", "status"},
    "rkdsc_transmitter_grpc_calls_total": {"method", "code"},
    "rkdsc_channel_grpc_calls_total": {"method", "code"},
    "rkdsc_receiver_grpc_calls_total": {"method", "code"},
}
"""The labels the queries group or filter by, per metric."""


def _exported(registry: Any) -> dict[str, set[str]]:
    """Sample names a registry exports (counter ``_total``, histogram ``_bucket/_sum/_count``)
    mapped to the metric's label names, whether or not a labelled child exists yet."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    out: dict[str, set[str]] = {}
    for collector in list(registry._collector_to_names):
        labels = set(getattr(collector, "_labelnames", ()))
        for family in collector.describe() or collector.collect():
            for suffix in suffixes.get(family.type, ("",)):
                out[family.name + suffix] = labels
    return out


def _service_metrics() -> dict[str, Callable[[Any], object]]:
    """Constructors of each service's metrics on a fresh registry (import errors skip)."""

    def transmitter(reg: Any) -> object:
        from services.transmitter.metrics import TransmitterMetrics

        return TransmitterMetrics(reg, lengths=(8, 16, 32, 64))

    def channel(reg: Any) -> object:
        from services.channel.metrics import ChannelMetrics

        return ChannelMetrics(reg)

    def receiver(reg: Any) -> object:
        from services.receiver.metrics import ReceiverMetrics

        return ReceiverMetrics(reg)

    def control(reg: Any) -> object:
        from services.control.metrics import ControlMetrics

        return ControlMetrics(reg)

    return {
        "transmitter": transmitter,
        "channel": channel,
        "receiver": receiver,
        "control": control,
    }


class TestMetricNames:
    def test_list_is_exactly_what_the_queries_read(self) -> None:
        used: set[str] = set()
        for _where, expr in all_expressions():
            used |= raw_metric_names(expr)
        assert used == set(METRICS_USED), (
            f"read but not listed: {sorted(used - set(METRICS_USED))}; "
            f"listed but not read: {sorted(set(METRICS_USED) - used)}"
        )

    @pytest.mark.parametrize("service", APP_SERVICES)
    def test_services_export_every_metric_used(self, service: str) -> None:
        prometheus_client = pytest.importorskip("prometheus_client")
        try:
            make = _service_metrics()[service]
            registry = prometheus_client.CollectorRegistry()
            make(registry)
            if service != "control":
                from services._grpc import CallMetricsInterceptor

                CallMetricsInterceptor(service, registry)
        except ImportError as err:
            pytest.skip(f"services.{service} metrics not importable yet: {err}")
        exported = _exported(registry)
        wanted = [m for m in METRICS_USED if m.startswith(f"rkdsc_{service}_")]
        missing = [m for m in wanted if m not in exported]
        assert not missing, f"{service} does not export {missing}; it exports {sorted(exported)}"
        for name in wanted:
            labels = LABELS_USED.get(name, set())
            assert labels <= exported[name], f"{name}: labels {sorted(exported[name])}"

    def test_recorded_names_used_are_defined(self) -> None:
        defined = {
            rule["record"] for group in load_yaml(RULES)["groups"] for rule in group["rules"]
        }
        used = set()
        for _where, expr in all_expressions():
            used |= set(RECORDED.findall(expr))
        assert used <= defined, f"undefined recording rules: {sorted(used - defined)}"
        unused = defined - used
        assert not unused, f"recording rules nothing reads: {sorted(unused)}"


class TestScrapeConfig:
    def test_jobs_scrape_the_compose_services_on_their_metrics_ports(self) -> None:
        config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
        compose = load_yaml(COMPOSE)["services"]
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        assert set(jobs) == set(APP_SERVICES)
        for name, job in jobs.items():
            targets = [t for s in job["static_configs"] for t in s["targets"]]
            assert targets == [f"{name}:{METRICS_PORTS[name]}"]
            assert job.get("metrics_path", "/metrics") == "/metrics"
            assert name in compose

    def test_scrape_interval_is_short(self) -> None:
        glob = load_yaml(PROMETHEUS_DIR / "prometheus.yml")["global"]
        assert glob["scrape_interval"] in {"1s", "2s", "5s"}
        assert glob["evaluation_interval"] == glob["scrape_interval"]

    def test_rule_file_is_loaded(self) -> None:
        config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
        assert config["rule_files"] == ["rules.yml"]

    def test_local_config_is_rendered_from_the_compose_one(self) -> None:
        mod = render_local()
        expected = mod.render_text(mod.render_local(mod.load_source()))
        assert (PROMETHEUS_DIR / "prometheus.local.yml").read_text() == expected, (
            "prometheus.local.yml is stale: run python deploy/prometheus/render_local.py"
        )

    def test_local_config_scrapes_loopback_at_the_documented_ports(self) -> None:
        local = load_yaml(PROMETHEUS_DIR / "prometheus.local.yml")
        compose = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
        assert local["rule_files"] == compose["rule_files"]
        assert local["global"] == compose["global"]
        for job in local["scrape_configs"]:
            targets = [t for s in job["static_configs"] for t in s["targets"]]
            assert targets == [f"127.0.0.1:{METRICS_PORTS[job['job_name']]}"]

    def test_documented_ports_are_the_settings_defaults(self) -> None:
        assert render_local().METRICS_PORTS == METRICS_PORTS
        for name in APP_SERVICES:
            try:
                settings = importlib.import_module(f"services.{name}.settings").Settings
            except ImportError as err:
                pytest.skip(f"services.{name}.settings not importable yet: {err}")
            field = "port" if name == "control" else "metrics_port"
            assert settings.model_fields[field].default == METRICS_PORTS[name], name

    def test_render_rejects_an_unknown_job(self) -> None:
        mod = render_local()
        with pytest.raises(ValueError, match="no port"):
            mod.render_local(mod.load_source(), {"transmitter": 1})

    def test_render_with_other_ports_and_interval(self) -> None:
        mod = render_local()
        ports = {"transmitter": 1, "channel": 2, "receiver": 3, "control": 4}
        doc = mod.render_local(mod.load_source(), ports, interval="1s", rule_files=[str(RULES)])
        assert doc["global"]["scrape_interval"] == "1s"
        assert doc["rule_files"] == [str(RULES)]
        targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in doc["scrape_configs"]}
        assert targets == {k: [f"127.0.0.1:{v}"] for k, v in ports.items()}


needs_promtool = pytest.mark.skipif(
    promtool() is None, reason="promtool not installed (apt-get install prometheus)"
)


@needs_promtool
class TestPromtool:
    @pytest.mark.parametrize("name", ["prometheus.yml", "prometheus.local.yml"])
    def test_check_config(self, name: str) -> None:
        result = run([str(promtool()), "check", "config", str(PROMETHEUS_DIR / name)])
        assert result.returncode == 0, result.stdout + result.stderr

    def test_check_rules(self) -> None:
        result = run([str(promtool()), "check", "rules", str(RULES)])
        assert result.returncode == 0, result.stdout + result.stderr

    def test_rules_compute_the_expected_values(self) -> None:
        tests = ROOT / "tests" / "deploy" / "promtool" / "rules_test.yml"
        result = run([str(promtool()), "test", "rules", str(tests)])
        assert result.returncode == 0, result.stdout + result.stderr

    def test_every_expression_parses(self, tmp_path: Path) -> None:
        """Each dashboard/annotation/rule expression as a recording rule: promtool parses it."""
        exprs = all_expressions()
        rules = [{"record": f"check:expr_{i}:x", "expr": e} for i, (_w, e) in enumerate(exprs)]
        path = tmp_path / "all.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "all", "rules": rules}]}))
        result = run([str(promtool()), "check", "rules", str(path)])
        assert result.returncode == 0, result.stdout + result.stderr


def test_rule_expressions_are_listed() -> None:
    assert len(rule_expressions()) == sum(len(g["rules"]) for g in load_yaml(RULES)["groups"])
