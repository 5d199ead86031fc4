"""What operators load: the Grafana dashboard and the Prometheus alert rules over the farm's
metrics, and the configs that make every node serve them and log JSON. (The metrics
themselves, scraped from a running farm: tests/test_serve.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import ray
import yaml

from deployments.telemetry import METRICS, exported_names

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "configs/grafana-d2v.json"
ALERTS = REPO / "configs/prometheus-alerts.yaml"

# PromQL words that look like metric names but are not.
PROMQL_WORDS = {"sum", "rate", "increase", "max", "min", "avg", "by", "without", "and", "or", "unless", "on",
                "histogram_quantile", "le", "count", "vector", "ignoring", "group_left", "group_right"}


def ray_documented_names() -> set[str]:
    """Metric names in the Grafana panels that Ray 2.60 ships for its own and Serve's metrics:
    the names Ray documents as exported."""
    panels = Path(ray.__file__).parent / "dashboard/modules/metrics/dashboards"
    names = set()
    for f in panels.glob("*_panels.py"):
        names |= set(re.findall(r"\b(ray_[a-z0-9_]+)", f.read_text()))
    return names


KNOWN = exported_names() | ray_documented_names()


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers before a selector `{` or a
    range `[`, or standing alone, less functions, keywords and label names."""
    no_strings = re.sub(r'"[^"]*"', '""', expr)
    no_selectors = re.sub(r"\{[^}]*\}", "{}", no_strings)
    no_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", no_selectors)
    words = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", no_groupings))
    return {w for w in words if w not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdw]?", w)}


def balanced(expr: str) -> bool:
    depth = {"(": 0, "{": 0, "[": 0}
    closing = {")": "(", "}": "{", "]": "["}
    for ch in re.sub(r'"[^"]*"', '""', expr):
        if ch in depth:
            depth[ch] += 1
        elif ch in closing:
            depth[closing[ch]] -= 1
            if depth[closing[ch]] < 0:
                return False
    return not any(depth.values())


def test_metric_names_cover_the_issue_and_start_with_d2v():
    assert all(name.startswith("d2v_") for name in METRICS)
    kinds = {name: kind for name, (kind, _, _) in METRICS.items()}
    assert kinds["d2v_jobs"] == "counter" and set(METRICS["d2v_jobs"][1]) >= {"status", "backend", "effect"}
    assert kinds["d2v_stage_seconds"] == kinds["d2v_job_seconds"] == "histogram"
    assert kinds["d2v_jobs_queued"] == kinds["d2v_jobs_running"] == "gauge"
    assert kinds["d2v_gpu_seconds"] == kinds["d2v_cost"] == kinds["d2v_fidelity_verdicts"] == "counter"
    assert {"ray_d2v_jobs_total", "ray_d2v_stage_seconds_bucket", "ray_d2v_jobs_queued"} <= exported_names()


def test_the_name_check_catches_a_misspelt_metric():
    assert metric_names('sum(rate(ray_d2v_jobz_total{status="failed"}[5m])) by (status)') == {"ray_d2v_jobz_total"}
    assert not metric_names('sum(rate(ray_d2v_jobz_total{status="failed"}[5m]))') <= KNOWN
    assert metric_names("histogram_quantile(0.95, sum(rate(ray_d2v_stage_seconds_bucket[5m])) by (stage, le))") \
        == {"ray_d2v_stage_seconds_bucket"}
    assert {"ray_serve_http_request_latency_ms_bucket", "ray_resources"} <= KNOWN


def test_grafana_dashboard_is_valid_and_queries_only_existing_metrics():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    panels = dash["panels"]
    assert len(panels) >= 8 and len({p["id"] for p in panels}) == len(panels)
    exprs = []
    for p in panels:
        assert p["type"] in ("timeseries", "stat") and p["title"]
        assert set(p["gridPos"]) == {"h", "w", "x", "y"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert p["targets"], p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
        for t in p["targets"]:
            assert balanced(t["expr"]), t["expr"]
            names = metric_names(t["expr"])
            assert names and names <= KNOWN, (p["title"], names - KNOWN)
            exprs.append(t["expr"])
    used = {n for e in exprs for n in metric_names(e)}
    # What the issue asks the dashboard to show: throughput, stage latency percentiles, queue
    # depth, GPU share in use, cost per video, failures by reason, and Serve's own.
    assert {"ray_d2v_jobs_total", "ray_d2v_stage_seconds_bucket", "ray_d2v_jobs_queued", "ray_d2v_cost_total",
            "ray_d2v_job_failures_total", "ray_resources"} <= used
    assert any(n.startswith("ray_serve_") for n in used)
    assert any("histogram_quantile(0.95" in e and "ray_d2v_stage_seconds_bucket" in e for e in exprs)
    titles = " ".join(p["title"].lower() for p in panels)
    for words in ("throughput", "queue", "gpu share", "cost per video", "failures by reason"):
        assert words in titles


def test_alert_rules_parse_and_hold_the_plans_thresholds():
    rules = yaml.safe_load(ALERTS.read_text())
    assert set(rules) == {"groups"}
    alerts = {}
    for group in rules["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
            assert re.fullmatch(r"\d+[smhd]", rule["for"])
            assert isinstance(rule["labels"], dict) and rule["labels"]["severity"]
            assert rule["annotations"]["summary"]
            assert balanced(rule["expr"]), rule["expr"]
            names = metric_names(rule["expr"])
            assert names and names <= KNOWN, (rule["alert"], names - KNOWN)
            alerts[rule["alert"]] = " ".join(rule["expr"].split())
    assert "< 0.995" in alerts["D2VSuccessRateLow"] and "ray_d2v_jobs_total" in alerts["D2VSuccessRateLow"]
    assert "> 8" in alerts["D2VGenerationSlow"] and "ray_d2v_job_seconds_sum" in alerts["D2VGenerationSlow"]
    assert "ray_d2v_cost_total" in alerts["D2VCostPerHourHigh"] and "* 3600 >" in alerts["D2VCostPerHourHigh"]


@pytest.mark.parametrize("name", ["serve-local.yaml", "serve-gpu.yaml"])
def test_serve_configs_log_json(name):
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load((REPO / "deployments" / "configs" / name).read_text()))
    assert all(app.logging_config is not None and app.logging_config.encoding == "JSON"
               for app in config.applications)


def test_every_cluster_node_serves_metrics_on_the_fixed_port():
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    starts = [c for c in cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]
              if "ray start" in c]
    assert len(starts) == 2 and all("--metrics-export-port=8080" in c for c in starts)
    service = yaml.safe_load((REPO / "k8s/rayservice.yaml").read_text())["spec"]["rayClusterConfig"]
    groups = [service["headGroupSpec"], *service["workerGroupSpecs"]]
    assert all(g["rayStartParams"].get("metrics-export-port") == "8080" for g in groups)


def test_serve_refuses_a_metrics_port_in_use_in_one_line(capsys):
    import socket

    from d2v.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--metrics-port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"metrics port {port} is in use" in err
