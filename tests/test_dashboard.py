"""The Grafana dashboard and the Prometheus example query only metrics the proxy exports.

The exported names come from scraping a running proxy (real waitress, bearer token as
Prometheus sends it) after one message was sent, so histogram series exist.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.proxy import ADMIN_TOKEN, fast_settings, message, running_proxy

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "config" / "grafana" / "mail-proxy.json"
PROMETHEUS = ROOT / "config" / "prometheus.yml"
COMPOSE = ROOT / "config" / "docker-compose.yml"
METRIC = re.compile(r"\bgmp_[a-z0-9_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", ())  # collapsed rows keep their panels inside


def queries(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in panels(dashboard):
        for target in panel.get("targets", ()):
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            yield query["query"]


def queried_metrics(dashboard: dict[str, Any]) -> set[str]:
    return {name for expr in queries(dashboard) for name in METRIC.findall(expr)}


def exported(text: str) -> tuple[dict[str, str], set[str]]:
    """(declared name → type from ``# TYPE`` lines, names of the samples present)."""
    types = {}
    samples = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
        elif line and not line.startswith("#"):
            samples.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return types, samples


def family(name: str, types: dict[str, str]) -> str:
    """The declared metric a series name belongs to: ``x_bucket`` → ``x`` for histograms only."""
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and types.get(base) in ("histogram", "summary"):
            return base
    return name


@pytest.fixture(scope="module")
def scrape(tmp_path_factory) -> tuple[dict[str, str], set[str]]:
    from tests.fixtures.smtp import start_sink

    tmp_path = tmp_path_factory.mktemp("dashboard")
    with start_sink() as sink, running_proxy(fast_settings(tmp_path)) as (_, api):
        api.add_tenant("acme")
        api.add_account("acme", "main", host=sink.host, port=sink.port)
        assert api.add_messages(message("M-1")).status_code == 200
        api.wait_status("M-1", "sent")
        response = api.as_token(None).get(
            "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return exported(response.text)


def test_family_strips_suffixes_only_of_histograms():
    types = {"gmp_x_seconds": "histogram", "gmp_jobs_count": "gauge", "gmp_sent_total": "counter"}
    assert family("gmp_x_seconds_bucket", types) == "gmp_x_seconds"
    assert family("gmp_x_seconds_count", types) == "gmp_x_seconds"
    assert family("gmp_jobs_count", types) == "gmp_jobs_count"
    assert family("gmp_sent_total", types) == "gmp_sent_total"
    assert family("gmp_unknown_sum", types) == "gmp_unknown_sum"


def test_every_queried_metric_is_exported(scrape):
    types, samples = scrape
    queried = queried_metrics(load_dashboard())
    unknown = {name for name in queried if family(name, types) not in types}
    assert not unknown, f"the dashboard queries metrics the proxy does not export: {unknown}"
    for name in queried:
        if family(name, types) != name:  # a histogram series: it must really be there
            assert name in samples, name


def test_the_dashboard_covers_what_an_operator_watches():
    dashboard = load_dashboard()
    queried = queried_metrics(dashboard)
    for name in (
        "gmp_sent_total", "gmp_errors_total", "gmp_deferred_total", "gmp_pending_messages",
        "gmp_send_duration_seconds_bucket", "gmp_rate_limited_total", "gmp_sync_failures_total",
        "gmp_actor_restarts_total",
    ):  # fmt: skip
        assert name in queried, name
    exprs = list(queries(dashboard))
    assert any(
        "histogram_quantile(0.95" in e and "gmp_send_duration_seconds_bucket" in e for e in exprs
    )
    assert any("sum by (tenant_name)" in e and "gmp_sent_total" in e for e in exprs)


def test_the_dashboard_is_importable():
    dashboard = load_dashboard()
    assert dashboard["uid"] == "mail-proxy"
    assert isinstance(dashboard["schemaVersion"], int)
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "instance", "tenant"]
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs, panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]


def test_prometheus_example_scrapes_every_compose_instance_with_a_bearer_file():
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"
    assert job["authorization"]["credentials_file"].startswith("/")
    assert "credentials" not in job["authorization"]  # never the token inline
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    proxies = {name for name in services if name.startswith("proxy")}
    assert {target.split(":")[0] for target in targets} == proxies
    assert all(target.endswith(":8000") for target in targets)
