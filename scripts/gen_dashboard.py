"""Generate the Grafana dashboard of the rkdsc stack: deploy/grafana/dashboards/rkdsc.json.

The JSON is never edited by hand; change this script and rerun it (a test checks that the
committed file equals its output). Plain dicts, no Grafana SDK. Queries use the recording
rules of deploy/prometheus/rules.yml where one exists.

    python scripts/gen_dashboard.py            # rewrite the dashboard
    python scripts/gen_dashboard.py --check    # exit 1 if the committed file is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "DASHBOARD_PATH",
    "GRAFANA_MACROS",
    "build_dashboard",
    "dashboard_expressions",
    "main",
    "render",
]

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_PATH = ROOT / "deploy" / "grafana" / "dashboards" / "rkdsc.json"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
"""Every panel's data source: the dashboard's ``datasource`` variable (default: the
provisioned Prometheus, uid ``prometheus``)."""

GRAFANA_MACROS = {"$__range": "10m", "$__rate_interval": "1m", "$__interval": "2s"}
"""The Grafana macros the queries use, with a value that makes them plain PromQL (for checks
against a real Prometheus, which does not know them)."""

CONFIG_CHANGE_WINDOW = "10s"
"""Window of the config-change annotations; also their step, so each change shows once."""

_PRED = "rkdsc_receiver_predictions_total"

# The accuracy per 2 dB SNR bin over the dashboard's time range (an SNR sweep shows as the
# accuracy-vs-SNR curve). "or 0 * ..." keeps bins whose predictions were all wrong.
ACCURACY_VS_SNR = (
    f'(sum by (snr_db_bin) (increase({_PRED}{{correct="true"}}[$__range]))'
    f' or 0 * sum by (snr_db_bin) (increase({_PRED}{{correct="false"}}[$__range])))'
    f' / sum by (snr_db_bin) (increase({_PRED}{{correct!="unknown"}}[$__range]))'
)


def _target(expr: str, legend: str = "", ref: str = "A", **extra: Any) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "refId": ref,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not extra.get("instant", False),
        **extra,
    }


def _targets(*specs: tuple[str, str]) -> list[dict[str, Any]]:
    """Targets A, B, C, ... from ``(expr, legend)`` pairs."""
    return [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(specs)]


def _override_ref(ref: str, *props: tuple[str, Any]) -> dict[str, Any]:
    return {
        "matcher": {"id": "byFrameRefID", "options": ref},
        "properties": [{"id": k, "value": v} for k, v in props],
    }


def _override_name(name: str, color: str) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}],
    }


def _timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    unit: str,
    stack: bool = False,
    soft_min: float | None = None,
    soft_max: float | None = None,
    overrides: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "lineWidth": 2,
        "fillOpacity": 20 if stack else 0,
        "showPoints": "never",
        "spanNulls": True,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "axisPlacement": "auto",
    }
    if soft_min is not None:
        custom["axisSoftMin"] = soft_min
    if soft_max is not None:
        custom["axisSoftMax"] = soft_max
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {
            "defaults": {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"}},
            "overrides": overrides or [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
    }


def _stat(title: str, description: str, expr: str, *, unit: str, decimals: int) -> dict[str, Any]:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [_target(expr, title)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "decimals": decimals,
                "color": {"mode": "thresholds"},
                "thresholds": {"mode": "absolute", "steps": [{"color": "blue", "value": None}]},
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "value",
            "justifyMode": "auto",
            "orientation": "auto",
        },
    }


def _accuracy_vs_snr() -> dict[str, Any]:
    return {
        "type": "barchart",
        "title": "Accuracy vs SNR",
        "description": (
            "Top-1 accuracy of the labelled predictions per 2 dB bin of the channel's applied "
            "Es/N0, over the dashboard's time range: sweep the channel SNR (rkdsc demo) to "
            "draw the curve."
        ),
        "datasource": DATASOURCE,
        "targets": [_target(ACCURACY_VS_SNR, "{{snr_db_bin}}", instant=True, format="table")],
        # Sort the bins numerically ("-4" < "0" < "10"), then back to text for the x axis.
        "transformations": [
            {
                "id": "convertFieldType",
                "options": {
                    "fields": {},
                    "conversions": [{"targetField": "snr_db_bin", "destinationType": "number"}],
                },
            },
            {"id": "sortBy", "options": {"fields": {}, "sort": [{"field": "snr_db_bin"}]}},
            {
                "id": "convertFieldType",
                "options": {
                    "fields": {},
                    "conversions": [{"targetField": "snr_db_bin", "destinationType": "string"}],
                },
            },
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "renameByName": {"snr_db_bin": "SNR bin [dB]", "Value": "accuracy"},
                },
            },
        ],
        "fieldConfig": {
            "defaults": {
                "unit": "percentunit",
                "min": 0,
                "max": 1,
                "color": {"mode": "continuous-RdYlGr"},
                "custom": {"fillOpacity": 80, "lineWidth": 1, "gradientMode": "none"},
            },
            "overrides": [],
        },
        "options": {
            "xField": "SNR bin [dB]",
            "orientation": "vertical",
            "showValue": "auto",
            "barWidth": 0.9,
            "groupWidth": 0.7,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
            "tooltip": {"mode": "single", "sort": "none"},
            "xTickLabelRotation": 0,
        },
    }


def _panels() -> Iterator[tuple[int, int, dict[str, Any]]]:
    """``(width, height, panel)`` in reading order; :func:`_layout` places them."""
    yield (
        4,
        4,
        _stat(
            "Accuracy (1m)",
            "Labelled predictions that were right, last minute.",
            "sum(job:rkdsc_receiver_accuracy:ratio_rate1m)",
            unit="percentunit",
            decimals=1,
        ),
    )
    yield (
        4,
        4,
        _stat(
            "Channel SNR",
            "The channel emulator's configured Es/N0.",
            "max(rkdsc_channel_snr_db)",
            unit="dB",
            decimals=1,
        ),
    )
    yield (
        4,
        4,
        _stat(
            "Images / s",
            "Images taken in by the transmitters (Classify and runs), last minute.",
            "sum(job:rkdsc_transmitter_images:rate1m)",
            unit="short",
            decimals=1,
        ),
    )
    yield (
        4,
        4,
        _stat(
            "Symbols / image",
            "Mean L, complex data symbols per image sent, last minute.",
            "avg(job:rkdsc_transmitter_symbols_per_image:mean_rate1m)",
            unit="short",
            decimals=0,
        ),
    )
    yield (
        4,
        4,
        _stat(
            "In flight",
            "Frames being encoded or awaiting their result, all transmitters.",
            "sum(rkdsc_transmitter_in_flight)",
            unit="short",
            decimals=0,
        ),
    )
    yield (
        4,
        4,
        _stat(
            "Channel queue",
            "Frames the channel emulator has read and not yet answered.",
            "sum(rkdsc_channel_queue_depth)",
            unit="short",
            decimals=0,
        ),
    )

    yield 12, 9, _accuracy_vs_snr()
    yield (
        12,
        9,
        _timeseries(
            "Accuracy and channel SNR",
            "Accuracy over the last minute (left) with the channel's configured SNR (right).",
            _targets(
                ("sum(job:rkdsc_receiver_accuracy:ratio_rate1m)", "accuracy"),
                ("max(rkdsc_channel_snr_db)", "channel SNR"),
            ),
            unit="percentunit",
            soft_min=0,
            soft_max=1,
            overrides=[
                _override_ref(
                    "B",
                    ("unit", "dB"),
                    ("custom.axisPlacement", "right"),
                    ("custom.axisSoftMin", -10),
                    ("custom.axisSoftMax", 30),
                    ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
                )
            ],
        ),
    )

    yield (
        12,
        8,
        _timeseries(
            "Throughput",
            "Images per second taken in, and frames per second answered with a prediction "
            "(left); complex symbols per second sent (right).",
            _targets(
                ("sum(job:rkdsc_transmitter_images:rate1m)", "images/s"),
                (
                    "sum(service_fate:rkdsc_frames:rate1m"
                    '{service="transmitter", fate="predicted"})',
                    "predicted frames/s",
                ),
                ("sum(job:rkdsc_transmitter_symbols:rate1m)", "symbols/s"),
            ),
            unit="short",
            overrides=[
                _override_ref("C", ("custom.axisPlacement", "right"), ("unit", "short")),
            ],
        ),
    )
    yield (
        12,
        8,
        _timeseries(
            "Frame fates",
            "What became of each frame, per second, as the transmitters account for them: "
            "predicted (a result came back), lost (dropped by the channel), error.",
            _targets(
                (
                    'sum by (fate) (service_fate:rkdsc_frames:rate1m{service="transmitter"})',
                    "{{fate}}",
                ),
            ),
            unit="short",
            stack=True,
            overrides=[
                _override_name("predicted", "green"),
                _override_name("lost", "orange"),
                _override_name("error", "red"),
            ],
        ),
    )

    yield (
        12,
        8,
        _timeseries(
            "End-to-end latency",
            "Transmitter: from sending a frame to its result coming back, p50 and p99 over the "
            "last minute.",
            _targets(
                (
                    'max(job_stage:rkdsc_latency_seconds:p50_rate1m{stage="end_to_end"})',
                    "p50",
                ),
                (
                    'max(job_stage:rkdsc_latency_seconds:p99_rate1m{stage="end_to_end"})',
                    "p99",
                ),
            ),
            unit="s",
            soft_min=0,
        ),
    )
    yield (
        12,
        8,
        _timeseries(
            "Latency per stage",
            "p50 and p99 over the last minute: encode (transmitter: image decoding, student and "
            "CAT encoder), channel (emulator processing, added delay excluded), decode (receiver: "
            "CSI and inference).",
            _targets(
                (
                    "max by (stage) "
                    '(job_stage:rkdsc_latency_seconds:p50_rate1m{stage!="end_to_end"})',
                    "{{stage}} p50",
                ),
                (
                    "max by (stage) "
                    '(job_stage:rkdsc_latency_seconds:p99_rate1m{stage!="end_to_end"})',
                    "{{stage}} p99",
                ),
            ),
            unit="s",
            soft_min=0,
        ),
    )

    yield (
        12,
        8,
        _timeseries(
            "Symbols per image: fixed vs adaptive",
            "Mean L per image sent, per transmitter, labelled with its active length policy "
            "(fixed: always the configured L; adaptive: the smallest L reaching the target "
            "accuracy at the estimated SNR).",
            _targets(
                (
                    "instance_mode:rkdsc_transmitter_symbols_per_image:mean_rate1m",
                    "{{mode}} ({{instance}})",
                ),
                ("avg(job:rkdsc_transmitter_symbols_per_image:mean_rate1m)", "all transmitters"),
            ),
            unit="short",
            soft_min=0,
        ),
    )
    yield (
        12,
        8,
        _timeseries(
            "SNR: configured and estimated",
            "The channel's configured Es/N0 and, per link, the SNR the transmitter conditions "
            "its encoder on (EWMA of the receiver's pilot estimates).",
            _targets(
                ("max(rkdsc_channel_snr_db)", "channel (configured)"),
                ("avg by (link) (rkdsc_transmitter_snr_estimate_db)", "estimate, link {{link}}"),
            ),
            unit="dB",
        ),
    )

    yield (
        12,
        8,
        _timeseries(
            "Accuracy per SNR bin",
            "Accuracy over the last minute per 2 dB bin of the applied SNR.",
            _targets(("snr_db_bin:rkdsc_receiver_accuracy:ratio_rate1m", "{{snr_db_bin}} dB")),
            unit="percentunit",
            soft_min=0,
            soft_max=1,
        ),
    )
    yield (
        12,
        8,
        _timeseries(
            "Frame fates by service",
            "Frames per second by service and fate (the channel's forwarded = relayed from the "
            "receiver), and the frames a hop skipped because they had expired (part of its "
            "errors; a hop that falls behind).",
            _targets(
                ("service_fate:rkdsc_frames:rate1m", "{{service}} {{fate}}"),
                ("service:rkdsc_frames_expired:rate1m", "{{service}} expired, skipped"),
            ),
            unit="short",
        ),
    )

    yield (
        12,
        8,
        _timeseries(
            "Control plane requests",
            "REST requests per second by route template and status code.",
            _targets(
                (
                    "sum by (method, route, status) (rate(rkdsc_control_http_requests_total[1m]))",
                    "{{method}} {{route}} {{status}}",
                ),
            ),
            unit="reqps",
        ),
    )
    yield (
        12,
        8,
        _timeseries(
            "gRPC calls",
            "Finished gRPC calls per second by service, method and status code (streams count "
            "when they end).",
            _targets(
                (
                    "sum by (job, method, code) "
                    '(rate({__name__=~"rkdsc_(transmitter|channel|receiver)_grpc_calls_total"}[1m]))',
                    "{{job}} {{method}} {{code}}",
                ),
            ),
            unit="reqps",
        ),
    )


def _layout() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    x = y = row_height = 0
    for panel_id, (w, h, panel) in enumerate(_panels(), start=1):
        if x + w > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append({"id": panel_id, "gridPos": {"h": h, "w": w, "x": x, "y": y}, **panel})
        x, row_height = x + w, max(row_height, h)
    return panels


def _annotations() -> list[dict[str, Any]]:
    builtin = {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }
    changes = [
        ("Channel config", "rkdsc_channel_config_version", "orange", "channel config changed"),
        ("Length policy", "rkdsc_transmitter_config_version", "purple", "length policy changed"),
    ]
    return [builtin] + [
        {
            "name": name,
            "datasource": DATASOURCE,
            "enable": True,
            "hide": False,
            "iconColor": color,
            "expr": f"changes({metric}[{CONFIG_CHANGE_WINDOW}]) > 0",
            "step": CONFIG_CHANGE_WINDOW,
            "titleFormat": title,
            "textFormat": "{{instance}}",
            "tagKeys": "job",
            "useValueForTime": False,
        }
        for name, metric, color, title in changes
    ]


def build_dashboard() -> dict[str, Any]:
    """The dashboard as a JSON-ready mapping."""
    return {
        "uid": "rkdsc-link",
        "title": "RKD-SC link",
        "description": (
            "Semantic link transmitter -> channel emulator -> receiver: accuracy vs SNR, "
            "throughput, latency, symbols per image, frame fates. Generated by "
            "scripts/gen_dashboard.py."
        ),
        "tags": ["rkdsc"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "timepicker": {"refresh_intervals": ["2s", "5s", "10s", "30s", "1m", "5m"]},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": "prometheus"},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "includeAll": False,
                    "multi": False,
                    "options": [],
                }
            ]
        },
        "annotations": {"list": _annotations()},
        "links": [],
        "panels": _layout(),
    }


def render() -> str:
    """The dashboard file's text (stable: the same input gives the same bytes)."""
    return json.dumps(build_dashboard(), indent=2, ensure_ascii=False) + "\n"


def dashboard_expressions(dashboard: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """``(where, expr)`` for every PromQL query of the dashboard: panel targets, then
    annotations; Grafana macros are left in (see :data:`GRAFANA_MACROS`)."""
    dash = build_dashboard() if dashboard is None else dashboard
    out: list[tuple[str, str]] = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} target {target['refId']}", target["expr"]))
    for ann in dash["annotations"]["list"]:
        if "expr" in ann:
            out.append((f"annotation {ann['name']!r}", ann["expr"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    parser.add_argument("--out", type=Path, default=DASHBOARD_PATH, help="where to write")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not args.out.exists() or args.out.read_text() != text:
            sys.stderr.write(f"{args.out} is out of date: run python scripts/gen_dashboard.py\n")
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
