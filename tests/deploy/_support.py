"""Shared helpers of the deployment tests: paths, YAML loading, the scripts, the PromQL list."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "k8s"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "rkdsc.json"

APP_SERVICES = ("transmitter", "channel", "receiver", "control")
"""The four rkdsc processes, as named in compose, Kubernetes and Prometheus jobs."""

GRPC_PORTS = {"transmitter": 50051, "channel": 50052, "receiver": 50053}
"""The documented gRPC ports (docs/services.md)."""

METRICS_PORTS = {"transmitter": 9101, "channel": 9102, "receiver": 9103, "control": 8000}
"""The documented metrics ports; the control plane serves /metrics on its HTTP port."""

RECORDED = re.compile(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b")
"""A recording rule's output name, ``level:metric:operations``."""

RAW_METRIC = re.compile(r"(?<![\w:])rkdsc_[a-z0-9_]+(?![\w:(])")
"""A raw metric name in PromQL (``rkdsc_...``, not part of a recorded ``a:b:c`` name)."""

NAME_REGEX = re.compile(r'__name__=~"(rkdsc_[a-z0-9_]*)\(([a-z0-9_|]+)\)([a-z0-9_]*)"')
"""A ``{__name__=~"rkdsc_(a|b)_suffix"}`` selector: one alternation group, expanded."""


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@cache
def import_path(path: Path) -> ModuleType:
    """Import a script that is not in a package (``scripts/``, ``deploy/``) by its path."""
    name = "_rkdsc_deploy_" + re.sub(r"\W", "_", str(path.relative_to(ROOT)))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gen_dashboard() -> ModuleType:
    return import_path(ROOT / "scripts" / "gen_dashboard.py")


def render_local() -> ModuleType:
    return import_path(PROMETHEUS_DIR / "render_local.py")


def rule_expressions() -> list[tuple[str, str]]:
    """``(where, expr)`` of every recording rule in rules.yml."""
    out = []
    for group in load_yaml(RULES)["groups"]:
        for rule in group["rules"]:
            stage = rule.get("labels", {}).get("stage") or rule.get("labels", {}).get("service")
            where = f"rule {rule['record']}" + (f" ({stage})" if stage else "")
            out.append((where, " ".join(rule["expr"].split())))
    return out


def all_expressions() -> list[tuple[str, str]]:
    """Every PromQL expression of the deployment: dashboard targets, dashboard annotations,
    then recording rules; Grafana macros replaced by fixed durations, so a plain Prometheus
    evaluates each one."""
    dash = gen_dashboard()
    out = []
    for where, expr in [*dash.dashboard_expressions(), *rule_expressions()]:
        for macro, value in dash.GRAFANA_MACROS.items():
            expr = expr.replace(macro, value)
        out.append((where, expr))
    return out


def raw_metric_names(expr: str) -> set[str]:
    """The ``rkdsc_*`` metric names an expression reads (recorded names excluded)."""
    names = set(RAW_METRIC.findall(NAME_REGEX.sub("", expr)))
    for prefix, alternatives, suffix in NAME_REGEX.findall(expr):
        names.update(f"{prefix}{alt}{suffix}" for alt in alternatives.split("|"))
    return names


def promtool() -> str | None:
    return shutil.which("promtool")


def run(cmd: list[str], timeout: float = 60.0, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)


def volume_mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """A compose service's short-syntax volumes: ``{target: (source, mode)}``."""
    out = {}
    for spec in map(str, service.get("volumes", [])):
        # The source may be an interpolation with a colon in it: ${VAR:-default}.
        cut = spec.index("}") + 1 if spec.startswith("${") else spec.index(":")
        source, (target, *mode) = spec[:cut], spec[cut:].lstrip(":").split(":")
        out[target] = (source, mode[0] if mode else "rw")
    return out
