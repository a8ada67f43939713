"""Against a real Prometheus: every dashboard, annotation and recording-rule expression returns
data from a live local stack (``services.stack.Stack``, what ``rkdsc up`` runs).

Needs the ``prometheus`` binary (Debian: ``apt-get install prometheus``) and the services;
skips, saying which is missing, otherwise. Runs the four services with a tiny untrained link
and a 12-image dataset, Prometheus with a 1 s scrape and rule interval, drives a run and two
config changes through the control plane's REST API, then polls ``/api/v1/query`` (bounded)
until each expression has returned a non-empty result (``/api/v1/query``; for the few that
look back only seconds, ``/api/v1/query_range`` over the test's span).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ._support import ROOT, RULES, all_expressions, import_path, raw_metric_names, render_local

pytestmark = pytest.mark.slow

TOKEN = "live-test-token"
CLASSES = ("airplane", "bird", "cat")
IMAGES_PER_CLASS = 4
SCRAPE = "1s"
READY_TIMEOUT = 120.0
RUN_TIMEOUT = 90.0
QUERY_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def stack_module() -> ModuleType:
    try:
        return importlib.import_module("services.stack")
    except ImportError as err:
        pytest.skip(f"services.stack is not importable ({err}); the live check needs `rkdsc up`")


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("the prometheus binary is not installed (apt-get install prometheus)")
    return path


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny link: only the plumbing matters here, not the accuracy."""
    from rkdsc_core.data.specs import CIFAR10_CLASSES
    from rkdsc_core.link import SemanticPipeline, save_link
    from rkdsc_core.models import create_model

    torch.manual_seed(0)
    student = create_model("darts-student", C=4, layers=3, token_dim=16)
    codec = create_model("cat-codec", token_dim=16, d_model=32, heads=2)
    pipeline = SemanticPipeline(student, codec, num_pilots=4).eval()  # type: ignore[arg-type]
    folder = tmp_path_factory.mktemp("live-weights")
    save_link(
        folder,
        pipeline,
        student_name="darts-student",
        classes=CIFAR10_CLASSES,
        meta={"dataset": "cifar10"},
    )
    return folder


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CIFAR-10 image-folder tree: {train,test}/<class>/<n>.png, 32x32 RGB."""
    root = tmp_path_factory.mktemp("live-cifar-tree")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for n in range(IMAGES_PER_CLASS):
                arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / name / f"{n}.png")
    return root


@pytest.fixture(scope="module")
def stack(
    stack_module: ModuleType,
    tiny_weights: Path,
    image_folder: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    run_dir = tmp_path_factory.mktemp("live-stack")
    started = stack_module.Stack.start(
        ports=stack_module.StackPorts.free(),
        token=TOKEN,
        weights_dir=tiny_weights,
        data_dir=image_folder,
        run_dir=run_dir,
        env={
            "RKDSC_TRANSMITTER_TORCH_THREADS": "1",
            "RKDSC_RECEIVER_TORCH_THREADS": "1",
            "RKDSC_DATA__CACHE_DIR": str(run_dir / "cache"),
        },
        ready_timeout=READY_TIMEOUT,
        grace_seconds=5.0,
    )
    try:
        yield started
    finally:
        started.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prometheus(
    prometheus_binary: str, stack: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A Prometheus scraping the stack's actual ports every second; yields its base URL."""
    tmp = tmp_path_factory.mktemp("live-prometheus")
    mod = render_local()
    p = stack.ports
    ports = {
        "transmitter": p.transmitter_metrics,
        "channel": p.channel_metrics,
        "receiver": p.receiver_metrics,
        "control": p.control,
    }
    config = mod.render_local(
        mod.load_source(), ports, interval=SCRAPE, rule_files=[str(RULES.resolve())]
    )
    config_path = tmp / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = _free_port()
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            prometheus_binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-2000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "prometheus not ready after 30 s"
            time.sleep(0.25)
        _wait_scraped(url, set(ports))
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def _wait_scraped(url: str, jobs: set[str], timeout: float = 30.0) -> None:
    """Until every job has been scraped successfully (``up == 1``): the first scrape comes
    up to one interval after start, later on a loaded machine."""
    deadline = time.monotonic() + timeout
    up: set[str] = set()
    while True:
        with contextlib.suppress(httpx.HTTPError):
            body = httpx.get(f"{url}/api/v1/query", params={"query": "up == 1"}, timeout=2).json()
            up = {r["metric"]["job"] for r in body["data"]["result"]}
            if up >= jobs:
                return
        assert time.monotonic() < deadline, f"scraped after {timeout:g} s: {sorted(up)} of {jobs}"
        time.sleep(0.25)


def _other(value: float, choices: tuple[float, ...]) -> float:
    return next(c for c in choices if abs(c - value) > 1e-6)


def _drive(control_url: str) -> dict[str, Any]:
    """A channel change, a paced run to completion, then a channel and a policy change (the
    config-change annotations look back only a few seconds)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=control_url, headers=auth, timeout=10.0) as api:
        snr = api.get("/v1/channel").raise_for_status().json()["snr_db"]
        api.put("/v1/channel", json={"snr_db": _other(snr, (4.0, 10.0))}).raise_for_status()
        num = len(CLASSES) * IMAGES_PER_CLASS
        run = api.post("/v1/runs", json={"split": "test", "num_images": num, "rate": 8.0})
        run_id = run.raise_for_status().json()["run_id"]
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            status: dict[str, Any] = api.get(f"/v1/runs/{run_id}").raise_for_status().json()
            if status["done"]:
                break
            assert time.monotonic() < deadline, f"run not done after {RUN_TIMEOUT} s: {status}"
            time.sleep(0.5)
        assert status["state"] == "done", status
        snr = api.get("/v1/channel").raise_for_status().json()["snr_db"]
        api.put("/v1/channel", json={"snr_db": _other(snr, (0.0, 2.0))}).raise_for_status()
        target = api.get("/v1/transmitter").raise_for_status().json()["target_accuracy"]
        new_target = _other(target, (0.5, 0.6))
        api.put("/v1/transmitter", json={"target_accuracy": new_target}).raise_for_status()
        return status


def _has_data(prom: httpx.Client, where: str, expr: str, since: float) -> bool:
    """Whether ``expr`` returns a non-empty result now (``/api/v1/query``) or, for one that
    looks back only seconds (the config-change annotations), at any second since ``since``
    (``/api/v1/query_range``): a busy machine may poll past its window."""
    body = prom.get("/api/v1/query", params={"query": expr}).json()
    assert body["status"] == "success", (where, expr, body)
    if body["data"]["result"]:
        return True
    params = {"query": expr, "start": f"{since:.3f}", "end": f"{time.time():.3f}", "step": "1s"}
    body = prom.get("/api/v1/query_range", params=params).json()
    assert body["status"] == "success", (where, expr, body)
    return bool(body["data"]["result"])


@pytest.fixture(scope="module")
def driven(prometheus: str, stack: Any) -> float:
    """Drive the stack once (see :func:`_drive`); the Unix time the driving began."""
    since = time.time()
    status = _drive(stack.control_url)
    assert status["fates"]["predicted"] + status["fates"]["lost"] > 0, status
    return since


def test_every_expression_returns_data(prometheus: str, driven: float) -> None:
    since = driven
    pending = dict(all_expressions())  # where -> expr; removed once seen non-empty
    deadline = time.monotonic() + QUERY_TIMEOUT
    with httpx.Client(base_url=prometheus, timeout=10.0) as prom:
        while pending and time.monotonic() < deadline:
            for where, expr in list(pending.items()):
                if _has_data(prom, where, expr, since):
                    del pending[where]
            if pending:
                time.sleep(1.0)
        targets = prom.get("/api/v1/targets").json()["data"]["activeTargets"]
        read = sorted(set().union(*(raw_metric_names(e) for e in pending.values())))
        span = {"start": f"{since:.3f}", "end": f"{time.time():.3f}", "step": "1s"}
        recent = {
            name: [
                (r["metric"].get("job"), [v for _t, v in r["values"]])
                for r in prom.get("/api/v1/query_range", params={"query": name, **span}).json()[
                    "data"
                ]["result"]
            ]
            for name in read
        }
    health = {t["labels"]["job"]: (t["health"], t.get("lastError", "")) for t in targets}
    assert not pending, (
        f"no data after {QUERY_TIMEOUT:g} s for {len(pending)} expression(s):\n"
        + "\n".join(f"  {w}: {e}" for w, e in pending.items())
        + f"\nscrape targets: {health}\nwhat they read, per second since the start: {recent}"
    )


def test_plot_script_reads_the_live_prometheus(
    prometheus: str, driven: float, tmp_path: Path
) -> None:
    """scripts/plot_prometheus.py on the same data: its queries are valid on a real server."""
    plot = import_path(ROOT / "scripts" / "plot_prometheus.py")
    assert plot.main(["--url", prometheus, "--since", "3m", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "prometheus.json").read_text())
    assert data["accuracy_vs_snr"], "no accuracy-vs-SNR points after the run"
    assert data["latency"]["p50"] and data["latency"]["p99"]
    for name in ("accuracy_vs_snr.png", "accuracy_per_snr.png", "latency.png"):
        assert (tmp_path / name).stat().st_size > 0
