"""deploy/k8s: manifests agree among themselves, with compose and with the services' settings."""

from __future__ import annotations

import importlib
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from ._support import APP_SERVICES, COMPOSE, GRPC_PORTS, K8S, METRICS_PORTS, load_yaml, run

GRPC_SERVICES = tuple(GRPC_PORTS)
SCALED = {"transmitter", "receiver"}
"""Services with an HPA; the channel emulator (stateful config) and control plane are not."""


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    doc: dict[str, Any] = load_yaml(K8S / "kustomization.yaml")
    return doc


@pytest.fixture(scope="module")
def objects(kustomization: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of the kustomization's resources by ``(kind, name)``."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / resource).read_text()):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in out, f"duplicate {key}"
                out[key] = doc
    return out


@pytest.fixture(scope="module")
def settings_env() -> dict[str, str]:
    env = {}
    for line in (K8S / "settings.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value
    return env


def _container(objects: dict[tuple[str, str], dict[str, Any]], name: str) -> dict[str, Any]:
    (container,) = objects["Deployment", name]["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


class TestManifests:
    def test_every_manifest_is_a_resource(self, kustomization: dict[str, Any]) -> None:
        files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
        assert files == set(kustomization["resources"])

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_service_selects_the_deployment_pods(
        self, objects: dict[tuple[str, str], dict[str, Any]], name: str
    ) -> None:
        deployment = objects["Deployment", name]
        selector = deployment["spec"]["selector"]["matchLabels"]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
        service = objects["Service", name]
        assert service["spec"]["selector"].items() <= pod_labels.items()

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_container_ports_match_compose(
        self, objects: dict[tuple[str, str], dict[str, Any]], name: str
    ) -> None:
        compose = load_yaml(COMPOSE)["services"][name]
        compose_ports = {int(str(p).rsplit(":", 1)[-1]) for p in compose["ports"]}
        assert set(_ports(_container(objects, name)).values()) == compose_ports

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_service_ports_target_container_ports(
        self, objects: dict[tuple[str, str], dict[str, Any]], name: str
    ) -> None:
        ports = _ports(_container(objects, name))
        for port in objects["Service", name]["spec"]["ports"]:
            assert ports[port["targetPort"]] == port["port"], port

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_runs_its_module(
        self, objects: dict[tuple[str, str], dict[str, Any]], name: str
    ) -> None:
        assert _container(objects, name)["command"] == ["python", "-m", f"services.{name}"]

    @pytest.mark.parametrize("name", GRPC_SERVICES)
    def test_grpc_services_are_headless(
        self, objects: dict[tuple[str, str], dict[str, Any]], name: str
    ) -> None:
        assert objects["Service", name]["spec"]["clusterIP"] == "None"

    @pytest.mark.parametrize("name", GRPC_SERVICES)
    def test_grpc_probes_on_the_grpc_port(
        self, objects: dict[tuple[str, str], dict[str, Any]], name: str
    ) -> None:
        container = _container(objects, name)
        assert _ports(container)["grpc"] == GRPC_PORTS[name]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == GRPC_PORTS[name], probe

    def test_control_readiness_is_its_own_not_the_stacks(
        self, objects: dict[tuple[str, str], dict[str, Any]]
    ) -> None:
        """/readyz follows the gRPC services; as the readiness probe it would take
        svc/control off its endpoints whenever one restarts."""
        container = _container(objects, "control")
        assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert _ports(container)["http"] == METRICS_PORTS["control"]

    def test_control_probes_pass_with_every_grpc_service_down(
        self, objects: dict[tuple[str, str], dict[str, Any]], tmp_path: Path
    ) -> None:
        """With no gRPC service to reach, the probed paths answer 200 (the control pod stays
        ready, clients get the API's own answers) while /readyz is 503."""
        from fastapi.testclient import TestClient

        from services.control import Settings, create_app

        nowhere = [f"127.0.0.1:{_free_port()}" for _ in GRPC_SERVICES]
        settings = Settings(
            token="test-token",
            token_file=tmp_path / "absent-token",
            deadline_seconds=2.0,
            transmitter_target=nowhere[0],
            channel_target=nowhere[1],
            receiver_target=nowhere[2],
        )
        container = _container(objects, "control")
        with TestClient(create_app(settings)) as client:
            for probe in ("readinessProbe", "livenessProbe"):
                path = container[probe]["httpGet"]["path"]
                assert client.get(path).status_code == 200, (probe, path)
            assert client.get("/readyz").status_code == 503

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_resources_requested_and_limited(
        self, objects: dict[tuple[str, str], dict[str, Any]], name: str
    ) -> None:
        resources = _container(objects, name)["resources"]
        for kind in ("requests", "limits"):
            assert set(resources[kind]) == {"cpu", "memory"}, kind

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_scrape_annotations_name_the_metrics_port(
        self, objects: dict[tuple[str, str], dict[str, Any]], name: str
    ) -> None:
        notes = objects["Deployment", name]["spec"]["template"]["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true"
        assert int(notes["prometheus.io/port"]) == METRICS_PORTS[name]
        assert notes["prometheus.io/path"] == "/metrics"
        assert METRICS_PORTS[name] in _ports(_container(objects, name)).values()

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_settings_come_from_the_generated_configmap(
        self,
        objects: dict[tuple[str, str], dict[str, Any]],
        kustomization: dict[str, Any],
        name: str,
    ) -> None:
        (generator,) = kustomization["configMapGenerator"]
        refs = [e["configMapRef"]["name"] for e in _container(objects, name)["envFrom"]]
        assert refs == [generator["name"]]

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_runs_non_root_read_only(
        self, objects: dict[tuple[str, str], dict[str, Any]], name: str
    ) -> None:
        pod = objects["Deployment", name]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        ctx = _container(objects, name)["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False

    def test_control_token_from_a_secret(
        self, objects: dict[tuple[str, str], dict[str, Any]]
    ) -> None:
        env = {e["name"]: e for e in _container(objects, "control").get("env", [])}
        ref = env["RKDSC_CONTROL_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "rkdsc-control-token", "key": "token"}

    def test_hpa_on_cpu_for_transmitter_and_receiver(
        self, objects: dict[tuple[str, str], dict[str, Any]]
    ) -> None:
        hpas = {k[1]: v for k, v in objects.items() if k[0] == "HorizontalPodAutoscaler"}
        assert set(hpas) == SCALED
        for name, hpa in hpas.items():
            target = hpa["spec"]["scaleTargetRef"]
            assert (target["kind"], target["name"]) == ("Deployment", name)
            (metric,) = hpa["spec"]["metrics"]
            assert metric["resource"]["name"] == "cpu"
            assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
            # No replicas in the Deployment: each `kubectl apply` would reset the HPA's count.
            assert "replicas" not in objects["Deployment", name]["spec"]

    def test_channel_emulator_is_a_singleton(
        self, objects: dict[tuple[str, str], dict[str, Any]]
    ) -> None:
        spec = objects["Deployment", "channel"]["spec"]
        assert spec["replicas"] == 1
        assert spec["strategy"]["type"] == "Recreate"

    def test_dataset_volume_is_read_only(
        self, objects: dict[tuple[str, str], dict[str, Any]]
    ) -> None:
        pod = objects["Deployment", "transmitter"]["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in objects
        (mount,) = [
            m
            for m in _container(objects, "transmitter")["volumeMounts"]
            if m["name"] == volume["name"]
        ]
        assert mount["readOnly"] is True


class TestSettingsEnv:
    def test_hosts_and_ports(self, settings_env: dict[str, str]) -> None:
        for name in APP_SERVICES:
            prefix = f"RKDSC_{name.upper()}_"
            assert settings_env[prefix + "HOST"] == "0.0.0.0"
            port = GRPC_PORTS.get(name, METRICS_PORTS[name])
            assert int(settings_env[prefix + "PORT"]) == port
            if name in GRPC_PORTS:
                assert int(settings_env[prefix + "METRICS_PORT"]) == METRICS_PORTS[name]

    def test_targets_are_dns_names_of_services(
        self, settings_env: dict[str, str], objects: dict[tuple[str, str], dict[str, Any]]
    ) -> None:
        targets = {k: v for k, v in settings_env.items() if k.endswith("_TARGET")}
        assert len(targets) == 5
        for key, value in targets.items():
            assert value.startswith("dns:///"), key
            host, port = value.removeprefix("dns:///").rsplit(":", 1)
            service_ports = [p["port"] for p in objects["Service", host]["spec"]["ports"]]
            assert int(port) == GRPC_PORTS[host] and int(port) in service_ports, key

    def test_builds_every_services_settings(
        self, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """All four processes get the whole ConfigMap: each must accept it (extra="forbid")."""
        for key in [k for k in os.environ if k.startswith("RKDSC_")]:
            monkeypatch.delenv(key)
        for key, value in settings_env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("RKDSC_CONTROL_TOKEN", "test-token")
        for name in APP_SERVICES:
            try:
                module = importlib.import_module(f"services.{name}.settings")
            except ImportError as err:
                pytest.skip(f"services.{name}.settings not importable yet: {err}")
            settings = module.Settings()
            assert settings.host == "0.0.0.0", name
        from rkdsc_core.config import load_settings

        assert load_settings().resolved_data().dir == Path("/data")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
class TestKustomize:
    def test_renders(self) -> None:
        result = run(["kubectl", "kustomize", str(K8S)])
        assert result.returncode == 0, result.stderr
        docs = [d for d in yaml.safe_load_all(result.stdout) if d]
        kinds = sorted({d["kind"] for d in docs})
        assert kinds == [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Namespace",
            "PersistentVolumeClaim",
            "Service",
        ]
        (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
        name = config_map["metadata"]["name"]
        assert name.startswith("rkdsc-settings-")  # content hash: a change rolls the pods
        for d in docs:
            if d["kind"] != "Namespace":
                assert d["metadata"]["namespace"] == "rkdsc", d["metadata"]["name"]
            if d["kind"] == "Deployment":
                (container,) = d["spec"]["template"]["spec"]["containers"]
                assert container["envFrom"][0]["configMapRef"]["name"] == name
                assert container["image"].startswith("rkdsc")
