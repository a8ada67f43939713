"""docker-compose.yml: commands, ports, env wiring, health checks and start order."""

from __future__ import annotations

import contextlib
import http.server
import importlib
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import pytest

from ._support import (
    APP_SERVICES,
    COMPOSE,
    GRPC_PORTS,
    METRICS_PORTS,
    ROOT,
    load_yaml,
    run,
    volume_mounts,
)

DEPENDS = {
    "receiver": set(),
    "channel": {"receiver"},
    "transmitter": {"channel"},
    "control": {"receiver", "channel", "transmitter"},
}
"""Start order: receiver -> channel -> transmitter -> control, each waiting for health."""

TARGETS = {
    "RKDSC_TRANSMITTER_CHANNEL_TARGET": ("transmitter", "channel"),
    "RKDSC_CHANNEL_RECEIVER_TARGET": ("channel", "receiver"),
    "RKDSC_CONTROL_TRANSMITTER_TARGET": ("control", "transmitter"),
    "RKDSC_CONTROL_CHANNEL_TARGET": ("control", "channel"),
    "RKDSC_CONTROL_RECEIVER_TARGET": ("control", "receiver"),
}
"""Each client target variable: (the service that reads it, the service it points at)."""


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    doc: dict[str, Any] = load_yaml(COMPOSE)["services"]
    return doc


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _module(command: list[str]) -> str:
    """The module a compose command runs: ``python -m X`` or ``rkdsc serve X``."""
    if command[:2] == ["python", "-m"]:
        return command[2]
    if command[:2] == ["rkdsc", "serve"] or command[:1] == ["serve"]:
        return f"services.{command[-1]}"
    raise AssertionError(f"unexpected command {command}")


def _container_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}


def _settings_default(name: str, field: str) -> Any:
    try:
        module = importlib.import_module(f"services.{name}.settings")
    except ImportError as err:
        pytest.skip(f"services.{name}.settings not importable yet: {err}")
    return module.Settings.model_fields[field].default


class TestAppServices:
    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_runs_its_module(self, services: dict[str, Any], name: str) -> None:
        assert _module(services[name]["command"]) == f"services.{name}"

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_built_from_the_dockerfile(self, services: dict[str, Any], name: str) -> None:
        build = services[name]["build"]
        assert build["context"] == "." and build["dockerfile"] == "Dockerfile"

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_ports_are_the_documented_ones(self, services: dict[str, Any], name: str) -> None:
        env = _env(services[name])
        prefix = f"RKDSC_{name.upper()}_"
        if name == "control":
            assert int(env[prefix + "PORT"]) == METRICS_PORTS["control"]
            assert _container_ports(services[name]) == {METRICS_PORTS["control"]}
            return
        assert int(env[prefix + "PORT"]) == GRPC_PORTS[name]
        assert int(env[prefix + "METRICS_PORT"]) == METRICS_PORTS[name]
        assert _container_ports(services[name]) == {GRPC_PORTS[name], METRICS_PORTS[name]}

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_ports_and_module_are_what_rkdsc_up_starts(
        self, services: dict[str, Any], name: str
    ) -> None:
        from services.stack import StackPorts

        ports = StackPorts()  # rkdsc up's defaults
        if name == "control":
            assert _container_ports(services[name]) == {ports.control}
        else:
            grpc_port = getattr(ports, name)
            metrics_port = getattr(ports, f"{name}_metrics")
            assert _container_ports(services[name]) == {grpc_port, metrics_port}
        # rkdsc up launches `python -m services.<name>`, as compose does.
        assert _module(services[name]["command"]) == f"services.{name}"

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_ports_are_the_settings_defaults(self, name: str) -> None:
        if name == "control":
            assert _settings_default(name, "port") == METRICS_PORTS["control"]
        else:
            assert _settings_default(name, "port") == GRPC_PORTS[name]
            assert _settings_default(name, "metrics_port") == METRICS_PORTS[name]

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_listens_on_all_interfaces(self, services: dict[str, Any], name: str) -> None:
        assert _env(services[name])[f"RKDSC_{name.upper()}_HOST"] == "0.0.0.0"

    @pytest.mark.parametrize("variable", sorted(TARGETS))
    def test_targets_use_service_names(self, services: dict[str, Any], variable: str) -> None:
        client, server = TARGETS[variable]
        assert _env(services[client])[variable] == f"{server}:{GRPC_PORTS[server]}"

    @pytest.mark.parametrize("variable", sorted(TARGETS))
    def test_target_variables_are_settings_fields(self, variable: str) -> None:
        client, _server = TARGETS[variable]
        field = variable.removeprefix(f"RKDSC_{client.upper()}_").lower()
        _settings_default(client, field)  # KeyError if the field does not exist

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_env_names_are_settings_fields(self, services: dict[str, Any], name: str) -> None:
        prefix = f"RKDSC_{name.upper()}_"
        for variable in _env(services[name]):
            if variable.startswith(prefix):
                _settings_default(name, variable.removeprefix(prefix).lower().split("__")[0])

    def test_control_token_is_a_required_variable(self, services: dict[str, Any]) -> None:
        token = _env(services["control"])["RKDSC_CONTROL_TOKEN"]
        assert token.startswith("${RKDSC_TOKEN:?"), token

    def test_dataset_is_mounted_read_only(self, services: dict[str, Any]) -> None:
        tx = services["transmitter"]
        data_dir = _env(tx)["RKDSC_DATA_DIR"]
        source, mode = volume_mounts(tx)[data_dir]
        assert source.startswith("${RKDSC_DATA_DIR")
        assert mode == "ro"


class TestHealth:
    @pytest.mark.parametrize("name", [*APP_SERVICES, "prometheus", "grafana"])
    def test_every_service_has_a_healthcheck(self, services: dict[str, Any], name: str) -> None:
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD"
        assert check["interval"].endswith("s") and int(check["interval"][:-1]) <= 5

    @pytest.mark.parametrize("name", sorted(DEPENDS))
    def test_depends_on_healthy_upstreams(self, services: dict[str, Any], name: str) -> None:
        depends = services[name].get("depends_on", {})
        assert set(depends) == DEPENDS[name]
        assert all(d["condition"] == "service_healthy" for d in depends.values())

    def test_observability_waits_for_the_stack(self, services: dict[str, Any]) -> None:
        assert services["prometheus"]["depends_on"]["control"]["condition"] == "service_healthy"
        assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"

    @pytest.mark.parametrize("name", sorted(GRPC_PORTS))
    def test_grpc_healthcheck_asks_the_services_port(
        self, services: dict[str, Any], name: str
    ) -> None:
        script = services[name]["healthcheck"]["test"][-1]
        assert f"'127.0.0.1:{GRPC_PORTS[name]}'" in script
        assert "HealthStub" in script and "service=''" in script

    def test_grpc_healthcheck_passes_only_when_serving(self, services: dict[str, Any]) -> None:
        grpc = pytest.importorskip("grpc")
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        servicer = health.HealthServicer()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            test = services["receiver"]["healthcheck"]["test"]
            cmd = [sys.executable, *test[2:-1], test[-1].replace("50053", str(port))]
            servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            assert run(cmd, timeout=30).returncode == 0
            servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            assert run(cmd, timeout=30).returncode != 0
        finally:
            server.stop(0)

    def test_control_healthcheck_passes_only_when_ready(self, services: dict[str, Any]) -> None:
        test = services["control"]["healthcheck"]["test"]
        assert "/readyz" in test[-1]
        with _http_status_server() as (port, set_status):
            cmd = [sys.executable, *test[2:-1], test[-1].replace("8000", str(port))]
            set_status(200)
            assert run(cmd, timeout=30).returncode == 0
            set_status(503)
            assert run(cmd, timeout=30).returncode != 0


class TestObservability:
    def test_prometheus_mounts_the_committed_config(self, services: dict[str, Any]) -> None:
        prom = services["prometheus"]
        assert volume_mounts(prom)["/etc/prometheus"] == ("./deploy/prometheus", "ro")
        assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
        assert _container_ports(prom) == {9090}

    def test_grafana_allows_anonymous_viewers(self, services: dict[str, Any]) -> None:
        env = _env(services["grafana"])
        assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
        assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
        assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")

    def test_images_are_pinned(self, services: dict[str, Any]) -> None:
        for name in ("prometheus", "grafana"):
            image = services[name]["image"]
            assert ":" in image and not image.endswith(":latest"), image

    def test_published_ports_bind_loopback(self, services: dict[str, Any]) -> None:
        for name, service in services.items():
            for port in service.get("ports", []):
                assert str(port).startswith("127.0.0.1:"), (name, port)


def _compose_binary() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and run(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.mark.skipif(_compose_binary() is None, reason="docker-compose not installed")
class TestComposeConfig:
    def test_config_validates(self) -> None:
        env = {**os.environ, "RKDSC_TOKEN": "test-token", "GRAFANA_ADMIN_PASSWORD": "test"}
        cmd = [*(_compose_binary() or []), "-f", str(COMPOSE), "config", "-q"]
        result = run(cmd, env=env, cwd=ROOT)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_config_fails_without_the_token(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "RKDSC_TOKEN"}
        env["GRAFANA_ADMIN_PASSWORD"] = "test"
        cmd = [*(_compose_binary() or []), "-f", str(COMPOSE), "config", "-q"]
        result = run(cmd, env=env, cwd=ROOT)
        assert result.returncode != 0
        assert "RKDSC_TOKEN" in result.stdout + result.stderr


class _StatusHandler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(type(self).status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _http_status_server() -> Iterator[tuple[int, Callable[[int], None]]]:
    """An HTTP server on 127.0.0.1:0 answering every GET with a settable status."""
    handler: type[_StatusHandler] = type("Handler", (_StatusHandler,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def set_status(code: int) -> None:
        handler.status = code

    try:
        yield int(server.server_address[1]), set_status
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
