"""``GET /metrics`` over the real store (SPEC §13): the pending gauge and per-account series.

The pending gauge is counted when scraped, so it is exact right after an enqueue or a
delete with no ReporterActor running; account routes keep the per-account series in step.
"""

from __future__ import annotations

import pytest
from falcon import testing

from proxy.metrics import PEC_EVENTS, SEND_BUCKETS, Metrics
from proxy.store import Database, models
from tests.fixtures.metrics import PEC, PENDING, Series, of, pec_series, scrape, series
from tests.fixtures.stores import accepted, add_tenant_and_account
from tests.proxy.api.conftest import ADMIN, NOW, MakeClient


@pytest.fixture
def client(store: Database, make_client: MakeClient) -> testing.TestClient:
    add_tenant_and_account(store, "acme", "main", now=NOW - 100, name="ACME")
    add_tenant_and_account(store, "globex", "main", now=NOW - 100)
    return make_client()


def scraped(client: testing.TestClient) -> dict[Series, float]:
    result = client.simulate_get("/metrics", headers=ADMIN)
    assert result.status_code == 200, result.text
    return scrape(result.text)


def observe_sends(metrics: Metrics, *accounts: tuple[str, str]) -> None:
    for tenant_id, account_id in accounts:
        metrics.send_duration.labels(tenant_id, account_id).observe(0.3)


def histogram(samples: dict[Series, float], tenant_id: str, account_id: str) -> dict:
    return of(samples, "gmp_send_duration_seconds", tenant_id=tenant_id, account_id=account_id)


# -- gmp_pending_messages ----------------------------------------------------------------------


def test_pending_gauge_is_exact_after_enqueue_and_delete(client, store) -> None:
    assert scraped(client)[PENDING] == 0.0
    store.messages.enqueue([accepted("a1"), accepted("a2"), accepted("a3")], NOW)
    store.messages.enqueue([accepted("g1", tenant_id="globex")], NOW)
    assert scraped(client)[PENDING] == 4.0  # every tenant's

    store.messages.delete_many("acme", ["a1"])
    assert scraped(client)[PENDING] == 3.0
    models.Message.update(status="sent").where(models.Message.id == "a2").execute()
    assert scraped(client)[PENDING] == 2.0  # terminal messages are not pending


# -- series of deleted accounts and tenants ----------------------------------------------------


def test_deleting_an_account_removes_its_send_histogram(client, metrics) -> None:
    observe_sends(metrics, ("acme", "main"), ("globex", "main"))
    before = scraped(client)
    assert len(histogram(before, "acme", "main")) == len(SEND_BUCKETS) + 3  # +Inf, count, sum

    result = client.simulate_delete("/account/main", params={"tenant_id": "acme"}, headers=ADMIN)

    assert result.status_code == 200, result.text
    after = scraped(client)
    assert of(after, tenant_id="acme", account_id="main") == {}
    assert histogram(after, "globex", "main") == histogram(before, "globex", "main")
    count = series("gmp_send_duration_seconds_count", tenant_id="globex", account_id="main")
    assert after[count] == 1.0


def test_deleting_a_tenant_removes_the_send_histograms_of_its_accounts(
    client, store, metrics
) -> None:
    store.accounts.upsert("acme", "bulk", {"host": "127.0.0.1", "port": 25}, NOW)
    for account_id in ("main", "bulk"):
        metrics.init_account("acme", "ACME", account_id, account_id)
    observe_sends(metrics, ("acme", "main"), ("acme", "bulk"), ("globex", "main"))

    result = client.simulate_delete("/tenant/acme", headers=ADMIN)

    assert result.status_code == 200, result.text
    after = scraped(client)
    assert of(after, tenant_id="acme") == {}
    assert len(histogram(after, "globex", "main")) == len(SEND_BUCKETS) + 3


# -- gmp_pec_events_total ----------------------------------------------------------------------


def post_account(client: testing.TestClient, **fields) -> None:
    body = {"id": "pec", "tenant_id": "acme", "host": "127.0.0.1", "port": 25} | fields
    result = client.simulate_post("/account", json=body, headers=ADMIN)
    assert result.status_code == 200, result.text


def test_a_pec_account_gets_pec_series_at_zero_until_it_stops_being_pec(client) -> None:
    post_account(client, is_pec_account=True, imap_host="127.0.0.1")
    samples = scraped(client)
    assert of(samples, "gmp_pec_events_total", **PEC) == pec_series(PEC)
    assert len(pec_series(PEC)) == len(PEC_EVENTS)

    post_account(client)  # replaced by a plain account
    samples = scraped(client)
    assert of(samples, "gmp_pec_events_total", tenant_id="acme") == {}
    assert samples[series("gmp_sent_total", **PEC)] == 0.0


def test_a_plain_account_gets_no_pec_series(client) -> None:
    post_account(client)
    samples = scraped(client)
    assert of(samples, "gmp_pec_events_total", tenant_id="acme") == {}
    assert samples[series("gmp_bounces_total", **PEC, bounce_type="hard")] == 0.0


def test_deleting_a_pec_account_removes_its_pec_series(client) -> None:
    post_account(client, is_pec_account=True, imap_host="127.0.0.1")
    result = client.simulate_delete("/account/pec", params={"tenant_id": "acme"}, headers=ADMIN)
    assert result.status_code == 200, result.text
    assert of(scraped(client), account_id="pec") == {}


# -- a renamed tenant --------------------------------------------------------------------------


def test_renaming_a_tenant_moves_its_series_and_their_values(client, metrics) -> None:
    post_account(client, is_pec_account=True, imap_host="127.0.0.1")
    metrics.sent.labels(*PEC.values()).inc(2)
    metrics.pec_events.labels(*PEC.values(), "pec_delivery").inc()
    metrics.reported_events.labels("acme", "ACME", "sent").inc(2)
    metrics.sync_failures.labels("globex", "globex", "timeout").inc()
    before = scraped(client)

    result = client.simulate_put("/tenant/acme", json={"name": "ACME Inc"}, headers=ADMIN)
    assert result.status_code == 200, result.text

    after = scraped(client)
    assert of(after, tenant_name="ACME") == {}
    renamed = PEC | {"tenant_name": "ACME Inc"}
    assert after[series("gmp_sent_total", **renamed)] == 2.0
    assert after[series("gmp_pec_events_total", **renamed, pec_event="pec_delivery")] == 1.0
    assert (
        after[
            series(
                "gmp_reported_events_total",
                tenant_id="acme",
                tenant_name="ACME Inc",
                event_type="sent",
            )
        ]
        == 2.0
    )
    assert len(of(after, tenant_name="ACME Inc")) == len(of(before, tenant_name="ACME"))
    assert of(after, tenant_id="globex") == of(before, tenant_id="globex")

    # POST /tenant with a null name: the name returns to its default, the id.
    result = client.simulate_post("/tenant", json={"id": "acme", "name": None}, headers=ADMIN)
    assert result.status_code == 200, result.text
    after = scraped(client)
    assert of(after, tenant_id="acme", tenant_name="ACME Inc") == {}
    assert after[series("gmp_sent_total", **(PEC | {"tenant_name": "acme"}))] == 2.0
