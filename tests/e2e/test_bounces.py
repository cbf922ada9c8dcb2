"""Bounces and PEC receipts end to end: proxy → SMTP sink, mail dropped into Dovecot, reports.

A message is sent through the proxy to the ``smtp_sink``; a bounce (or a PEC
receipt set) for the Message-ID it really carried is written into a Dovecot
maildir; the proxy's poller finds it over IMAP and the tenant application is
told once, with the contract's fields (SPEC §10.2, §11, §12).
"""

from __future__ import annotations

import email
import logging
import time
from pathlib import Path

import pytest

from actors.pec import PecActor
from actors.supervisor import ChildKinds
from proxy.bounce.disposition import IGNORED, PROCESSED, SEEN, UNMATCHED
from proxy.store import models
from tests.fixtures.proxy import fast_settings, free_port, message, running_proxy
from tests.fixtures.waiting import wait_until

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parents[1] / "proxy" / "bounce" / "fixtures"
DSN_ORIGINAL = b"<0b9e6f1c-5a4e-4a37-9a8e-2f0e6f5f5a10@acme.example>"
PEC_ORIGINAL = b"<5a5a5a5a-0000-4000-8000-000000000015@pec.acme.example>"


class FastPec(PecActor):
    poll_interval_s = 0.2


def _bounce_settings(tmp_path, user, **overrides):
    values = {
        "bounce_enabled": True,
        "bounce_imap_host": user.server.host,
        "bounce_imap_port": user.server.imap_port,
        "bounce_imap_user": user.name,
        "bounce_imap_password": user.password,
        "bounce_imap_ssl": False,
        "bounce_poll_interval": 1,
    }
    return fast_settings(tmp_path, **(values | overrides))


def _sent_message_id(sink, index: int = -1) -> bytes:
    return email.message_from_bytes(sink.wait_for(1)[index].data)["Message-ID"].encode()


def _dsn_for(message_id: bytes, client_id: bytes, name: str = "postfix_dsn_user_unknown.eml"):
    raw = (FIXTURES / name).read_bytes()
    return raw.replace(DSN_ORIGINAL, message_id).replace(b"INV-42", client_id)


def _metric(api, name: str) -> float:
    text = api.get("/metrics").text
    lines = [line for line in text.splitlines() if line.startswith(name)]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def _events(api, message_id: str, event_type: str) -> list[dict]:
    response = api.get(f"/messages/{message_id}/events", params={"tenant_id": "acme"})
    assert response.status_code == 200, response.text
    return [e for e in response.json()["events"] if e["event_type"] == event_type]


def _processed(user, count: int) -> dict[int, set[str]]:
    return wait_until(
        lambda: (f := user.flags()) and sum(PROCESSED in v for v in f.values()) >= count and f,
        timeout_s=15,
        what=f"{count} mail(s) flagged processed",
    )


def test_a_bounce_is_reported_once_and_shown_on_the_message(
    tmp_path, smtp_sink, tenant_app, imap_user
) -> None:
    settings = _bounce_settings(tmp_path, imap_user)
    with running_proxy(settings) as (_server, api):
        api.add_tenant("acme", client_base_url=tenant_app.url)
        api.add_account("acme", "main", host=smtp_sink.host, port=smtp_sink.port, use_tls=False)
        api.add_messages(message("INV-42"))
        api.wait_status("INV-42", "sent")
        before = time.time()
        imap_user.deliver(_dsn_for(_sent_message_id(smtp_sink), b"INV-42"))
        (item,) = tenant_app.wait_for_items(lambda i: i["event"] == "bounce", timeout_s=15)
        assert item["id"] == "INV-42"
        assert item["bounce_type"] == "hard"
        assert item["bounce_code"] == "5.1.1"
        assert item["bounce_smtp_code"] == "550"
        assert item["bounce_recipient"] == "ann@example.org"
        assert item["bounce_reason"].startswith("550 5.1.1 <ann@example.org>: Recipient address")
        assert before - 1 <= item["bounce_ts"] <= time.time()
        record = api.message("INV-42")
        assert record["status"] == "sent"
        assert (record["bounce_type"], record["bounce_code"]) == ("hard", "5.1.1")
        assert record["bounce_reason"] == item["bounce_reason"]
        assert record["bounce_ts"] == item["bounce_ts"]
        assert _processed(imap_user, 1) == {1: {SEEN, PROCESSED}}
        assert _metric(api, 'gmp_bounces_total{account_id="main"') == 1.0
        assert imap_user.password not in api.get("/instance").text
        assert api.get("/instance").json()["bounce_last_uid"] == 1
    # The same bounce seen again after a restart (redelivered as a new file, no flags).
    imap_user.deliver(_dsn_for(_sent_message_id(smtp_sink), b"INV-42"))
    with running_proxy(settings) as (_server, api):
        _processed(imap_user, 2)
        assert len(_events(api, "INV-42", "bounce")) == 1
        assert _metric(api, "gmp_bounces_total") == 0.0  # nothing new counted in this run
    assert len([i for i in tenant_app.reported_items() if i["event"] == "bounce"]) == 1


def test_unmatched_auto_replies_and_unparseable_mail_are_flagged_not_reported(
    tmp_path, tenant_app, imap_user
) -> None:
    for name in ("auto_reply_out_of_office.eml", "gmail_dsn.eml", "broken_dsn.eml"):
        imap_user.deliver((FIXTURES / name).read_bytes())
    with running_proxy(_bounce_settings(tmp_path, imap_user)) as (_server, api):
        api.add_tenant("acme", client_base_url=tenant_app.url)
        flags = _processed(imap_user, 3)
        assert flags == {
            1: {SEEN, PROCESSED, IGNORED},  # an out-of-office reply
            2: {SEEN, PROCESSED, UNMATCHED},  # a bounce for a message we never sent
            3: {PROCESSED, IGNORED},  # unparseable: left unread, in place
        }
        assert _metric(api, "gmp_bounces_unmatched_total") == 2.0
    assert not [i for i in tenant_app.reported_items() if i["event"] == "bounce"]


def test_bounce_mailbox_over_tls_moves_handled_mail(
    tmp_path, smtp_sink, imap_user, trusted_tls_ca
) -> None:
    settings = _bounce_settings(
        tmp_path,
        imap_user,
        bounce_imap_ssl=True,
        bounce_imap_port=imap_user.server.imaps_port,
        bounce_processed_folder="Processed",
    )
    with running_proxy(settings) as (_server, api):
        api.add_tenant("acme")
        api.add_account("acme", "main", host=smtp_sink.host, port=smtp_sink.port, use_tls=False)
        api.add_messages(message("INV-42"))
        api.wait_status("INV-42", "sent")
        imap_user.deliver(_dsn_for(_sent_message_id(smtp_sink), b"INV-42"))
        wait_until(lambda: api.message("INV-42").get("bounce_type") == "hard", timeout_s=15)
        wait_until(lambda: imap_user.flags("Processed") == {1: {SEEN, PROCESSED}}, timeout_s=5)
        assert imap_user.flags() == {}


def test_login_failures_are_logged_once_and_the_poller_recovers(
    tmp_path, smtp_sink, imap_user, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="actors.bounce")
    settings = _bounce_settings(tmp_path, imap_user, bounce_imap_password="wrong")
    with running_proxy(settings) as (_server, api):
        api.add_tenant("acme")
        api.add_account("acme", "main", host=smtp_sink.host, port=smtp_sink.port, use_tls=False)

        def failures() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "unavailable" in r.getMessage()]

        wait_until(lambda: len(failures()) >= 2, timeout_s=15, what="two failed polls")
        warnings = [r for r in failures() if r.levelno == logging.WARNING]
        assert len(warnings) == 1  # once per state change, not per attempt
        assert "wrong" not in caplog.text  # the password is never logged
        api.add_messages(message("m1"))  # sending is unaffected
        api.wait_status("m1", "sent")
        api.request("PUT", "/instance", json={"bounce_imap_password": imap_user.password})
        api.post("/commands/run-now")  # an admin run-now polls at once, backoff or not
        wait_until(
            lambda: any("reachable again" in r.getMessage() for r in caplog.records),
            timeout_s=20,
            what="recovery logged",
        )


def test_reload_bounce_stops_and_starts_the_poller(tmp_path, imap_user) -> None:
    import pykka

    from actors.bounce import BounceActor

    with running_proxy(fast_settings(tmp_path)) as (_server, api):
        assert not pykka.ActorRegistry.get_by_class(BounceActor)
        values = {
            "bounce_enabled": True,
            "bounce_imap_host": imap_user.server.host,
            "bounce_imap_port": imap_user.server.imap_port,
            "bounce_imap_user": imap_user.name,
            "bounce_imap_password": imap_user.password,
            "bounce_imap_ssl": False,
            "bounce_poll_interval": 1,
        }
        assert api.request("PUT", "/instance", json=values).status_code == 200
        assert api.post("/instance/reload-bounce").status_code == 200
        wait_until(lambda: pykka.ActorRegistry.get_by_class(BounceActor), what="poller started")
        imap_user.deliver((FIXTURES / "human_reply.eml").read_bytes())
        _processed(imap_user, 1)
        api.request("PUT", "/instance", json={"bounce_enabled": False})
        assert api.post("/instance/reload-bounce").status_code == 200
        wait_until(lambda: not pykka.ActorRegistry.get_by_class(BounceActor), what="stopped")


def test_test_mode_polls_only_on_an_admin_run_now(tmp_path, smtp_sink, imap_user) -> None:
    settings = _bounce_settings(tmp_path, imap_user, test_mode=True)
    with running_proxy(settings) as (_server, api):
        api.add_tenant("acme")
        api.add_account("acme", "main", host=smtp_sink.host, port=smtp_sink.port, use_tls=False)
        api.add_messages(message("INV-42"))
        api.post("/commands/run-now")
        api.wait_status("INV-42", "sent")
        wait_until(_bounce_poll_done, what="the poll of the first run-now")
        imap_user.deliver(_dsn_for(_sent_message_id(smtp_sink), b"INV-42"))
        assert imap_user.flags() == {1: set()}  # nobody polls by itself in test mode
        api.post("/commands/run-now")
        wait_until(lambda: _events(api, "INV-42", "bounce"), timeout_s=10, what="bounce event")


def _bounce_poll_done() -> bool:
    state = models.MailboxState.get_or_none(models.MailboxState.mailbox == "bounce")
    return state is not None and state.last_poll_ts is not None


# -- PEC -------------------------------------------------------------------------------------


def _pec_account(api, user, sink, **overrides) -> None:
    fields = {
        "host": sink.host,
        "port": sink.port,
        "use_tls": False,
        "is_pec_account": True,
        "imap_host": user.server.host,
        "imap_port": user.server.imap_port,
        "imap_user": user.name,
        "imap_password": user.password,
        "imap_ssl": False,
    }
    api.add_account("acme", "pec", **(fields | overrides))


def _receipt_for(name: str, message_id: bytes, client_id: bytes = b"PEC-15") -> bytes:
    raw = (FIXTURES / name).read_bytes()
    return raw.replace(PEC_ORIGINAL, message_id).replace(b"PEC-15", client_id)


def test_pec_receipts_become_pec_events_once(tmp_path, smtp_sink, tenant_app, imap_user) -> None:
    kinds = ChildKinds(pec=FastPec)
    with running_proxy(fast_settings(tmp_path), kinds=kinds) as (_server, api):
        api.add_tenant("acme", client_base_url=tenant_app.url)
        _pec_account(api, imap_user, smtp_sink)
        api.add_messages(message("PEC-15", account_id="pec"))
        assert api.wait_status("PEC-15", "sent")["is_pec"] is True
        sent_id = _sent_message_id(smtp_sink)
        for name in ("pec_accettazione.eml", "pec_presa_in_carico.eml"):
            imap_user.deliver(_receipt_for(name, sent_id))
        # The delivery receipt names a Message-ID we never stored: found by its client id.
        imap_user.deliver(_receipt_for("pec_avvenuta_consegna.eml", b"<unknown@x>"))
        imap_user.deliver(_receipt_for("pec_accettazione.eml", sent_id))  # a duplicate
        items = tenant_app.wait_for_items(
            lambda i: i["event"].startswith("pec_"), timeout_s=15, min_count=3
        )
        by_event = {i["event"]: i for i in items}
        assert sorted(by_event) == ["pec_acceptance", "pec_delivery", "pec_relay"]
        acceptance = by_event["pec_acceptance"]
        assert acceptance["pec_event"] == "pec_acceptance"
        assert acceptance["pec_receipt"] == "accettazione"
        assert acceptance["pec_ts"] == 1770022805  # the receipt's own time (daticert.xml)
        assert by_event["pec_delivery"]["pec_recipient"] == "cliente@pec.cliente.example"
        _processed(imap_user, 4)
        assert len(_events(api, "PEC-15", "pec_acceptance")) == 1
        record = api.message("PEC-15")
        assert record["status"] == "sent"
        assert record["pec_status"] in {"pec_acceptance", "pec_relay", "pec_delivery"}
        assert _metric(api, 'gmp_pec_events_total{account_id="pec"') == 3.0
    assert len([i for i in tenant_app.reported_items() if i["event"].startswith("pec_")]) == 3


def test_pec_error_receipt_carries_its_details(tmp_path, smtp_sink, tenant_app, imap_user) -> None:
    kinds = ChildKinds(pec=FastPec)
    with running_proxy(fast_settings(tmp_path), kinds=kinds) as (_server, api):
        api.add_tenant("acme", client_base_url=tenant_app.url)
        _pec_account(api, imap_user, smtp_sink)
        api.add_messages(message("PEC-15", account_id="pec"))
        api.wait_status("PEC-15", "sent")
        imap_user.deliver(_receipt_for("pec_errore_consegna.eml", _sent_message_id(smtp_sink)))
        (item,) = tenant_app.wait_for_items(lambda i: i["event"] == "pec_error", timeout_s=15)
        assert item["pec_receipt"] == "errore-consegna"
        assert item["pec_recipient"] == "errato@pec.cliente.example"
        assert item["pec_details"].startswith("5.1.1 - Utente sconosciuto")
        assert api.message("PEC-15")["pec_status"] == "pec_error"


def test_pec_timeout_after_a_successful_poll_past_the_deadline(
    tmp_path, smtp_sink, tenant_app, imap_user
) -> None:
    settings = fast_settings(tmp_path, pec_acceptance_timeout=1)
    with running_proxy(settings, kinds=ChildKinds(pec=FastPec)) as (server, api):
        api.add_tenant("acme", client_base_url=tenant_app.url)
        _pec_account(api, imap_user, smtp_sink)
        api.add_messages(message("PEC-1", account_id="pec"))
        sent = api.wait_status("PEC-1", "sent")
        (item,) = tenant_app.wait_for_items(lambda i: i["event"] == "pec_timeout", timeout_s=15)
        assert item["id"] == "PEC-1"
        assert item["pec_details"] == "no acceptance or error receipt within 1 s"
        assert item["pec_ts"] >= sent["sent_ts"] + 1
        state = models.MailboxState.get_by_id("pec:acme:pec")
        first = state.last_poll_ts
        wait_until(
            lambda: models.MailboxState.get_by_id("pec:acme:pec").last_poll_ts > first + 1,
            timeout_s=10,
            what="more successful polls",
        )
        assert len(_events(api, "PEC-1", "pec_timeout")) == 1
        assert server.store is not None


def test_no_pec_timeout_while_the_mailbox_is_unreachable(
    tmp_path, smtp_sink, imap_user, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="actors.bounce")
    settings = fast_settings(tmp_path, pec_acceptance_timeout=1)
    with running_proxy(settings, kinds=ChildKinds(pec=FastPec)) as (_server, api):
        api.add_tenant("acme")
        _pec_account(api, imap_user, smtp_sink, imap_port=free_port())
        api.add_messages(message("PEC-1", account_id="pec"))
        sent = api.wait_status("PEC-1", "sent")
        deadline = sent["sent_ts"] + 2

        def failed_after_deadline() -> bool:
            return any(
                "unavailable" in r.getMessage() and r.created > deadline for r in caplog.records
            )

        wait_until(failed_after_deadline, timeout_s=15, what="a failed poll after the deadline")
        assert _events(api, "PEC-1", "pec_timeout") == []
