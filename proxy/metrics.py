"""The one Prometheus registry and every ``gmp_*`` metric (SPEC §13).

A ``Metrics`` object owns its own registry (no global state), so tests and
several in-process proxies never share counters. ``_created`` series are
disabled, as the contract requires.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()

L = ("tenant_id", "tenant_name", "account_id", "account_name")
DEFAULT_LABELS = ("default", "default", "default", "default")
SEND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BOUNCE_TYPES = ("hard", "soft")
# What proxy/bounce/pec.py recognises, plus the timeout proxy/store/bounces.py records.
PEC_EVENTS = ("pec_acceptance", "pec_relay", "pec_delivery", "pec_error", "pec_timeout")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sent = Counter("gmp_sent_total", "Messages accepted by the SMTP server", L, registry=r)
        self.errors = Counter("gmp_errors_total", "Messages that ended as error", L, registry=r)
        self.deferred = Counter(
            "gmp_deferred_total", "Deferrals (retry or rate limit)", L, registry=r
        )
        self.rate_limited = Counter("gmp_rate_limited_total", "Rate limit hits", L, registry=r)
        self.pending = Gauge("gmp_pending_messages", "Non-terminal messages", registry=r)
        self.send_duration = Histogram(
            "gmp_send_duration_seconds",
            "One SMTP transaction",
            ("tenant_id", "account_id"),
            buckets=SEND_BUCKETS,
            registry=r,
        )
        self.sync_failures = Counter(
            "gmp_sync_failures_total",
            "Failed or client-error sync calls",
            ("tenant_id", "tenant_name", "reason"),
            registry=r,
        )
        self.reported_events = Counter(
            "gmp_reported_events_total",
            "Events acknowledged by the tenant",
            ("tenant_id", "tenant_name", "event_type"),
            registry=r,
        )
        self.attachment_cache = Counter(
            "gmp_attachment_cache_requests_total",
            "Attachment cache lookups",
            ("tier", "result"),
            registry=r,
        )
        self.actor_restarts = Counter(
            "gmp_actor_restarts_total", "Crashed workers restarted", ("actor",), registry=r
        )
        self.bounces = Counter(
            "gmp_bounces_total", "Bounce events recorded", (*L, "bounce_type"), registry=r
        )
        self.bounces_unmatched = Counter(
            "gmp_bounces_unmatched_total",
            "Bounces matching no message, and unparseable mails",
            registry=r,
        )
        self.pec_events = Counter(
            "gmp_pec_events_total", "PEC events recorded", (*L, "pec_event"), registry=r
        )
        self._account_counters = (self.sent, self.errors, self.deferred, self.rate_limited)
        # "plus once for default/default/default/default" (SPEC §13): every L counter, PEC too.
        self.init_account(*DEFAULT_LABELS, is_pec=True)

    def init_account(
        self,
        tenant_id: str,
        tenant_name: str,
        account_id: str,
        account_name: str,
        *,
        is_pec: bool = False,
    ) -> None:
        """Create every per-account series at 0: dashboards see an account before it sends.

        Idempotent, so it also serves an account's replacement. ``gmp_pec_events_total``
        series exist only for PEC accounts (cardinality: five dead series for every other
        account); an account that stops being PEC loses them.
        """
        labels = (tenant_id, tenant_name or tenant_id, account_id, account_name or account_id)
        for counter in self._account_counters:
            counter.labels(*labels)
        for bounce_type in BOUNCE_TYPES:
            self.bounces.labels(*labels, bounce_type)
        if is_pec:
            for event in PEC_EVENTS:
                self.pec_events.labels(*labels, event)
        else:
            self.pec_events.remove_by_labels({"tenant_id": tenant_id, "account_id": account_id})

    def remove_account(self, tenant_id: str, tenant_name: str, account_id: str) -> None:
        """Drop every series of a deleted account (SPEC §13), the send histogram included.

        Series are matched by ids alone, so those recorded under an earlier tenant name
        go too; ``tenant_name`` is not needed for that.
        """
        ids = {"tenant_id": tenant_id, "account_id": account_id}
        for metric in (*self._account_counters, self.bounces, self.pec_events):
            metric.remove_by_labels(ids)
        self.send_duration.remove_by_labels(ids)

    def remove_tenant(self, tenant_id: str) -> None:
        """Drop a deleted tenant's per-tenant series (its accounts go by ``remove_account``)."""
        for metric in (self.sync_failures, self.reported_events):
            metric.remove_by_labels({"tenant_id": tenant_id})

    def rename_tenant(self, tenant_id: str, tenant_name: str) -> None:
        """Carry a tenant's series over to its new name, values included.

        ``tenant_name`` is part of every label set L (SPEC §13): without this a renamed
        tenant's accounts would show twice, the old series frozen beside the new. A send
        finishing during the rename may still count once under the old name.
        """
        named = (*self._account_counters, self.bounces, self.pec_events)
        for metric in (*named, self.sync_failures, self.reported_events):
            moved = [
                (sample.labels, sample.value)
                for family in metric.collect()
                for sample in family.samples
                if sample.name.endswith("_total")
                and sample.labels["tenant_id"] == tenant_id
                and sample.labels["tenant_name"] != tenant_name
            ]
            for labels, value in moved:
                metric.remove(*labels.values())
                metric.labels(**(labels | {"tenant_name": tenant_name})).inc(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
