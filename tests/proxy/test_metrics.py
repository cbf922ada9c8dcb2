"""``Metrics`` (SPEC §13): which series exist per account, and what a deletion removes.

Assertions are on the scraped text, series by series, exactly as Prometheus reads it.
The last test runs a real proxy in test mode (no timers), as the black-box audit did.
"""

from __future__ import annotations

from pathlib import Path

from proxy.bounce import pec
from proxy.metrics import PEC_EVENTS, SEND_BUCKETS, Metrics
from tests.fixtures.metrics import (
    ACME,
    DEFAULT,
    PEC,
    PENDING,
    Series,
    of,
    pec_series,
    scrape,
    series,
)
from tests.fixtures.proxy import Api, fast_settings, message, running_proxy


def test_pec_events_cover_every_event_the_proxy_records() -> None:
    recognised = {event for event, _final in pec.RECEIPT_EVENTS.values()}
    assert set(PEC_EVENTS) == recognised | {"pec_timeout"}
    assert len(PEC_EVENTS) == len(set(PEC_EVENTS))


def test_a_pec_account_gets_every_pec_event_at_zero() -> None:
    metrics = Metrics()
    metrics.init_account("acme", "ACME", "pec", "pec", is_pec=True)
    assert of(scrape(metrics.render()), "gmp_pec_events_total", **PEC) == pec_series(PEC)


def test_a_plain_account_gets_no_pec_series_but_every_other_counter() -> None:
    metrics = Metrics()
    metrics.init_account("acme", "ACME", "main", "main")
    assert of(scrape(metrics.render()), **ACME) == {
        series("gmp_sent_total", **ACME): 0.0,
        series("gmp_errors_total", **ACME): 0.0,
        series("gmp_deferred_total", **ACME): 0.0,
        series("gmp_rate_limited_total", **ACME): 0.0,
        series("gmp_bounces_total", **ACME, bounce_type="hard"): 0.0,
        series("gmp_bounces_total", **ACME, bounce_type="soft"): 0.0,
    }


def test_the_default_label_set_has_every_l_counter_pec_included() -> None:
    samples = scrape(Metrics().render())
    assert of(samples, "gmp_pec_events_total") == pec_series(DEFAULT)
    assert len(of(samples, **DEFAULT)) == 4 + 2 + len(PEC_EVENTS)


def test_an_account_that_stops_being_pec_loses_its_pec_series() -> None:
    metrics = Metrics()
    metrics.init_account("acme", "ACME", "pec", "pec", is_pec=True)
    metrics.pec_events.labels("acme", "ACME", "pec", "pec", "pec_delivery").inc()
    metrics.init_account("acme", "ACME", "pec", "pec", is_pec=False)
    samples = scrape(metrics.render())
    assert of(samples, "gmp_pec_events_total", **PEC) == {}
    assert samples[series("gmp_sent_total", **PEC)] == 0.0
    metrics.init_account("acme", "ACME", "pec", "pec", is_pec=True)
    assert of(scrape(metrics.render()), "gmp_pec_events_total", **PEC) == pec_series(PEC)


def test_removing_an_account_removes_every_series_with_its_ids() -> None:
    metrics = Metrics()
    for tenant, name in (("acme", "ACME"), ("globex", "Globex")):
        for account in ("main", "pec"):
            metrics.init_account(tenant, name, account, account, is_pec=account == "pec")
            metrics.send_duration.labels(tenant, account).observe(0.2)
            metrics.sent.labels(tenant, name, account, account).inc()
    metrics.sent.labels("acme", "ACME before a rename", "pec", "pec").inc()
    before = scrape(metrics.render())
    acme_pec = of(before, tenant_id="acme", account_id="pec")
    histogram = of(acme_pec, "gmp_send_duration_seconds")
    assert len(histogram) == len(SEND_BUCKETS) + 1 + 2  # the buckets, +Inf, _count and _sum
    assert len(acme_pec) == len(histogram) + 1 + 4 + 2 + len(PEC_EVENTS)

    metrics.remove_account("acme", "ACME", "pec")

    after = scrape(metrics.render())
    assert set(before) - set(after) == set(acme_pec)
    assert set(after) <= set(before)
    assert after[series("gmp_sent_total", **ACME)] == 1.0
    assert after[series("gmp_send_duration_seconds_count", tenant_id="acme", account_id="main")]
    assert after[series("gmp_send_duration_seconds_count", tenant_id="globex", account_id="pec")]
    assert len(of(after, "gmp_pec_events_total", tenant_id="globex")) == len(PEC_EVENTS)


def test_removing_a_tenant_removes_its_sync_and_report_series_only() -> None:
    metrics = Metrics()
    for tenant in ("acme", "globex"):
        metrics.sync_failures.labels(tenant, tenant.upper(), "timeout").inc()
        metrics.reported_events.labels(tenant, tenant.upper(), "sent").inc(3)
    before = scrape(metrics.render())

    metrics.remove_tenant("acme")

    after = scrape(metrics.render())
    assert set(before) - set(after) == set(of(before, tenant_id="acme"))
    assert len(of(after, "gmp_sync_failures_total", tenant_id="globex")) == 1
    assert len(of(after, "gmp_reported_events_total", tenant_id="globex")) == 1


def test_removing_an_unknown_account_changes_nothing() -> None:
    metrics = Metrics()
    before = scrape(metrics.render())
    metrics.remove_account("nobody", "nobody", "none")
    assert scrape(metrics.render()) == before


# -- a running proxy in test mode ------------------------------------------------------------


def metrics_of(api: Api) -> dict[Series, float]:
    response = api.get("/metrics")
    assert response.status_code == 200, response.text
    return scrape(response.text)


def test_test_mode_proxy_keeps_gauge_and_series_exact(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, test_mode=True)
    with running_proxy(settings) as (_server, api):
        api.add_tenant("acme", name="ACME")
        api.add_account("acme", "main", host="127.0.0.1", port=25)
        pec_fields = {"is_pec_account": True, "imap_host": "127.0.0.1"}
        api.add_account("acme", "pec", host="127.0.0.1", port=25, **pec_fields)
        assert metrics_of(api)[PENDING] == 0.0

        accepted = api.add_messages(message("m1"), message("m2"), message("m3"))
        assert accepted.json()["queued"] == 3, accepted.text
        assert metrics_of(api)[PENDING] == 3.0  # no timer runs in test mode: counted at scrape

        deleted = api.post(
            "/commands/delete-messages", {"ids": ["m1"]}, params={"tenant_id": "acme"}
        )
        assert deleted.status_code == 200, deleted.text
        samples = metrics_of(api)
        assert samples[PENDING] == 2.0
        assert of(samples, "gmp_pec_events_total", **PEC) == pec_series(PEC)
        assert of(samples, "gmp_pec_events_total", **ACME) == {}

    with running_proxy(settings) as (_server, api):  # start-up initialises from the store
        samples = metrics_of(api)
        assert samples[PENDING] == 2.0
        assert of(samples, "gmp_pec_events_total", **PEC) == pec_series(PEC)
        assert of(samples, "gmp_pec_events_total", **ACME) == {}
        assert samples[series("gmp_sent_total", **ACME)] == 0.0

        assert api.request("DELETE", "/account/pec", params={"tenant_id": "acme"}).ok
        assert of(metrics_of(api), account_id="pec") == {}
