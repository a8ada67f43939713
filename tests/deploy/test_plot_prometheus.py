"""scripts/plot_prometheus.py against a fake Prometheus HTTP API on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest

from ._support import ROOT, import_path


@pytest.fixture(scope="module")
def plot() -> ModuleType:
    return import_path(ROOT / "scripts" / "plot_prometheus.py")


def _answer(path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    expr = params["query"]
    if path == "/api/v1/query":
        assert "increase(" in expr and "$" not in expr, expr
        return [
            {"metric": {"snr_db_bin": b}, "value": [0, v]}
            for b, v in (("10", "0.9"), ("-4", "0.3"), ("0", "0.5"), ("nan", "NaN"))
        ]
    start, step = float(params["start"]), float(params["step"].rstrip("s"))
    times = [start + i * step for i in range(5)]
    if expr.startswith("snr_db_bin:"):
        return [
            {"metric": {"snr_db_bin": b}, "values": [[t, "0.5"] for t in times]}
            for b in ("0", "10")
        ]
    return [
        {"metric": {"stage": s}, "values": [[t, "0.01"] for t in times]}
        for s in ("encode", "channel", "decode", "end_to_end")
    ]


class _FakePrometheus(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        params = dict(urllib.parse.parse_qsl(url.query))
        type(self).seen.append((url.path, params))
        body = json.dumps(
            {"status": "success", "data": {"resultType": "x", "result": _answer(url.path, params)}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_prometheus() -> Iterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    handler: type[_FakePrometheus] = type("Handler", (_FakePrometheus,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class TestPlotPrometheus:
    def test_writes_the_figures_and_data(
        self,
        plot: ModuleType,
        fake_prometheus: tuple[str, list[tuple[str, dict[str, str]]]],
        tmp_path: Path,
    ) -> None:
        url, seen = fake_prometheus
        out = tmp_path / "figs"
        argv = ["--url", url, "--start", "1000", "--end", "1600", "--step", "60s"]
        assert plot.main([*argv, "--out", str(out)]) == 0
        for name in ("accuracy_vs_snr.png", "accuracy_per_snr.png", "latency.png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        data = json.loads((out / "prometheus.json").read_text())
        assert set(data["latency"]) == {"p50", "p99"}
        instant = [p for path, p in seen if path == "/api/v1/query"]
        assert [p["time"] for p in instant] == ["1600.000"]
        assert "[600s]" in instant[0]["query"]  # $__range = the plotted range
        ranged = {p["query"] for path, p in seen if path == "/api/v1/query_range"}
        assert ranged == {plot.ACCURACY_PER_SNR, *plot.LATENCY.values()}

    @pytest.mark.parametrize(
        ("text", "seconds"), [("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("1d", 86400.0)]
    )
    def test_parse_duration(self, plot: ModuleType, text: str, seconds: float) -> None:
        assert plot.parse_duration(text) == seconds

    def test_parse_time_accepts_unix_and_rfc3339(self, plot: ModuleType) -> None:
        assert plot.parse_time("1700000000") == 1700000000.0
        assert plot.parse_time("1970-01-01T00:01:00Z") == 60.0

    def test_bad_duration_names_the_format(self, plot: ModuleType) -> None:
        with pytest.raises(ValueError, match="30s, 15m"):
            plot.parse_duration("soon")
