"""Offline checks of the operator views: the Grafana dashboard, its provisioning, the Prometheus
configuration and alert rules, and their services in docker-compose.yml.

The metric names the dashboard and the rules use are checked against what the services really
register (their /metrics), so a renamed metric fails here rather than as an empty panel.
`promtool` checks the rules when it is installed (Debian's `prometheus` package); without it the
rules' structure and every expression's brackets are checked in Python.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "mailer.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
COMPOSE = ROOT / "docker-compose.yml"

# What each source exposes. Services: names registered in code (checked below against the code).
SERVICE_METRICS = {
    "mailer_sender_messages_total",
    "mailer_account_bounce_rate",
    "mailer_account_complaint_rate",
    "mailer_account_brake_paused",
    "tracking_publish_batch_size_sum",
    "tracking_events_dropped_total",
    "tracking_buffered_events",
    "faststream_received_processed_messages_total",
    "faststream_received_processed_messages_exceptions_total",
    "faststream_received_messages_in_process",
}
# RabbitMQ's rabbitmq_prometheus plugin (/metrics/detailed, queue_coarse_metrics) and Prometheus itself.
EXTERNAL_METRICS = {
    "rabbitmq_detailed_queue_messages_ready",
    "rabbitmq_detailed_queue_messages_unacked",
    "up",
}
REQUIRED_ALERTS = {"AccountPaused", "SendQueueNotDraining", "DeadLetterQueueGrowing", "SendErrorRateHigh"}
_FUNCTIONS = {
    "sum", "max", "min", "avg", "rate", "delta", "vector", "by", "and", "or", "unless", "offset",
    "count", "increase", "humanizePercentage", "without", "on", "ignoring", "bool",
}  # fmt: skip


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _exprs() -> list[str]:
    exprs = [t["expr"] for p in _dashboard()["panels"] for t in p["targets"]]
    rules = yaml.safe_load(ALERTS.read_text())
    return exprs + [r["expr"] for g in rules["groups"] for r in g["rules"]]


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    without_grouping = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_ranges)
    names = set(re.findall(r"\b[a-zA-Z_][a-zA-Z0-9_]*\b", without_grouping))
    return {n for n in names if n not in _FUNCTIONS and not n.isdigit() and n != "m"}


def _balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in re.sub(r'"[^"]*"', '""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


class TestDashboard:
    def test_is_a_provisionable_dashboard(self) -> None:
        board = _dashboard()
        assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
        assert "id" not in board or board["id"] is None
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            assert panel["type"] in {"timeseries", "stat", "state-timeline", "table", "gauge"}
            assert panel["datasource"]["uid"] == "prometheus"
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
            assert panel["targets"], panel["title"]
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs))

    def test_shows_what_operators_asked_for(self) -> None:
        titles = " | ".join(p["title"].lower() for p in _dashboard()["panels"])
        for words in ("sent per account", "failed per account", "queue depth per account", "bounce rate",
                      "complaint rate", "paused", "tracking events", "consumer lag", "dead-letter"):  # fmt: skip
            assert words in titles, words

    def test_rates_are_drawn_against_their_thresholds(self) -> None:
        panels = {p["title"]: p for p in _dashboard()["panels"]}
        bounce = " ".join(t["expr"] for t in panels["Bounce rate per account vs thresholds"]["targets"])
        complaint = " ".join(t["expr"] for t in panels["Complaint rate per account vs thresholds"]["targets"])
        assert "vector(0.05)" in bounce and "vector(0.001)" in complaint

    def test_provisioning_points_at_the_dashboard_and_prometheus(self) -> None:
        datasource = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
        [source] = datasource["datasources"]
        assert (source["type"], source["uid"], source["url"]) == (
            "prometheus",
            "prometheus",
            "http://prometheus:9090",
        )
        provider = yaml.safe_load((PROVISIONING / "dashboards" / "mailer.yml").read_text())
        [files] = provider["providers"]
        assert files["type"] == "file" and files["options"]["path"] == "/var/lib/grafana/dashboards"


class TestExpressions:
    def test_every_expression_is_balanced(self) -> None:
        for expr in _exprs():
            assert _balanced(expr), expr

    def test_every_metric_exists(self) -> None:
        used = set().union(*(_metric_names(e) for e in _exprs()))
        assert used <= SERVICE_METRICS | EXTERNAL_METRICS, used - SERVICE_METRICS - EXTERNAL_METRICS

    @pytest.mark.parametrize(
        "name",
        sorted(
            n.removesuffix("_total").removesuffix("_sum")
            for n in SERVICE_METRICS
            if n.startswith(("mailer_", "tracking_"))
        ),
    )
    def test_service_metric_is_registered_in_code(self, name: str) -> None:
        sources = "\n".join(p.read_text() for p in (ROOT / "services").rglob("*.py"))
        assert f'"{name}"' in sources, name


class TestAlertRules:
    def test_structure(self) -> None:
        rules = yaml.safe_load(ALERTS.read_text())
        names = set()
        for group in rules["groups"]:
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
                assert rule["labels"]["severity"] in {"warning", "critical"}
                assert rule["annotations"]["summary"]
                if "for" in rule:
                    assert re.fullmatch(r"\d+[smh]", rule["for"])
                names.add(rule["alert"])
        assert names >= REQUIRED_ALERTS

    # promtool comes with `make test` (scripts/infra.sh).
    def test_promtool_accepts_rules_and_config(self, tmp_path: Path) -> None:
        subprocess.run(["promtool", "check", "rules", str(ALERTS)], check=True, capture_output=True)
        config = yaml.safe_load(PROMETHEUS.read_text())
        shutil.copy(ALERTS, tmp_path / "alerts.yml")
        config["rule_files"] = [str(tmp_path / "alerts.yml")]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        subprocess.run(
            ["promtool", "check", "config", str(tmp_path / "prometheus.yml")], check=True, capture_output=True
        )

    def test_prometheus_scrapes_every_service_and_rabbitmq(self) -> None:
        config = yaml.safe_load(PROMETHEUS.read_text())
        assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        targets = {t for c in jobs["mailer"]["static_configs"] for t in c["targets"]}
        assert targets == {f"{s}:8000" for s in ("campaign", "audience", "sender", "bounce", "tracking")}
        assert jobs["rabbitmq"]["static_configs"][0]["targets"] == ["rabbitmq:15692"]
        assert jobs["rabbitmq"]["metrics_path"] == "/metrics/detailed"


class TestCompose:
    def _services(self) -> dict[str, Any]:
        services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
        return services

    def _mounted(self, service: dict[str, Any]) -> dict[str, str]:
        mounts = {}
        for volume in service["volumes"]:
            source, target = volume.split(":")[:2]
            mounts[target] = source
        return mounts

    def test_prometheus_loads_the_config_and_rules(self) -> None:
        prometheus = self._services()["prometheus"]
        assert prometheus["image"].startswith("prom/prometheus:v")
        mounts = self._mounted(prometheus)
        assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
        assert mounts["/etc/prometheus/alerts.yml"] == "./deploy/prometheus/alerts.yml"
        for source in mounts.values():
            assert (ROOT / source).exists(), source

    def test_grafana_is_provisioned_with_the_dashboard(self) -> None:
        grafana = self._services()["grafana"]
        assert grafana["image"].startswith("grafana/grafana:")
        mounts = self._mounted(grafana)
        assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
        assert mounts["/var/lib/grafana/dashboards"] == "./deploy/grafana/dashboards"
        assert "prometheus" in grafana["depends_on"]

    def test_jaeger_takes_otlp_from_the_services(self) -> None:
        services = self._services()
        assert str(services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"]).lower() == "true"
        assert services["sender"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
