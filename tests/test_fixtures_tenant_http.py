"""The TenantApp test fixture: scripted replies, hangs, deadlines and clean stops."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests

from tests.fixtures.tenant_http import Reply, TenantApp, start_tenant_app


@pytest.fixture
def app() -> Iterator[TenantApp]:
    with start_tenant_app() as tenant_app:
        yield tenant_app


def post_in_background(
    url: str, json: dict, timeout_s: float = 10
) -> tuple[threading.Thread, dict]:
    """POST from another thread; the result dict gets "response" or "error"."""
    result: dict = {}

    def run() -> None:
        try:
            result["response"] = requests.post(url, json=json, timeout=timeout_s)
        except requests.RequestException as err:
            result["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_calls_are_recorded_with_path_headers_and_body(app):
    report = {"delivery_report": [{"tenant_id": "acme", "id": "M1", "event": "sent"}]}

    response = requests.post(
        f"{app.url}/mail-proxy/sync",
        json=report,
        headers={"Authorization": "Bearer t0k"},
        timeout=5,
    )

    assert response.status_code == 200
    assert response.json() == {"ok": True}
    [call] = app.wait_for_calls(1)
    assert call.path == "/mail-proxy/sync"
    assert call.headers["authorization"] == "Bearer t0k"
    assert call.headers["content-type"] == "application/json"
    assert call.body == report
    assert app.reported_items() == report["delivery_report"]


def test_scripted_replies_are_used_in_order_before_the_default(app):
    app.script(Reply(500, b"boom"), Reply(200, {"ok": True, "queued": 3}))
    app.reply_with(202, None)

    with requests.Session() as session:  # keep-alive across calls
        answers = [session.post(app.url, json={"delivery_report": []}, timeout=5) for _ in range(3)]

    assert [a.status_code for a in answers] == [500, 200, 202]
    assert [a.content for a in answers] == [b"boom", b'{"ok": true, "queued": 3}', b""]
    assert len(app.wait_for_calls(3)) == 3


def test_non_json_body_is_recorded_raw(app):
    requests.post(app.url, data=b"not json", timeout=5)

    [call] = app.wait_for_calls(1)
    assert call.body is None
    assert call.raw == b"not json"


def test_hung_call_is_recorded_and_answers_after_release(app):
    app.script(Reply(hang=True))
    thread, result = post_in_background(app.url, {"delivery_report": []})

    app.wait_for_calls(1)
    assert result == {}  # recorded, still waiting for its answer
    other = requests.post(app.url, json={"delivery_report": []}, timeout=5)
    assert other.status_code == 200  # a hung call does not block others

    app.release_hung()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert result["response"].status_code == 200


def test_client_timeout_on_a_hung_call_and_stop_does_not_block():
    threads_before = set(threading.enumerate())
    app = start_tenant_app()
    app.reply_with(200)
    app.script(Reply(hang=True), Reply(hang=True))
    with pytest.raises(requests.ReadTimeout):
        requests.post(app.url, json={"delivery_report": []}, timeout=(5, 0.2))
    thread, result = post_in_background(app.url, {"delivery_report": []})
    app.wait_for_calls(2)

    app.stop()
    app.stop()

    thread.join(timeout=10)
    assert result  # answered or disconnected, either way released
    assert set(threading.enumerate()) == threads_before


def test_delayed_reply_is_cut_short_by_stop():
    app = start_tenant_app()
    app.reply_with(200, delay_s=60)
    thread, result = post_in_background(app.url, {"delivery_report": []})
    app.wait_for_calls(1)

    app.stop()

    thread.join(timeout=10)
    assert not thread.is_alive()
    assert result


def test_wait_for_calls_reports_what_arrived_when_the_deadline_passes(app):
    requests.post(f"{app.url}/sync", json={"delivery_report": []}, timeout=5)

    with pytest.raises(AssertionError, match=r"at least 2 calls within 0\.05s, got 1: \['/sync'\]"):
        app.wait_for_calls(2, timeout_s=0.05)


def test_wait_for_items_returns_the_matching_items(app):
    for event in ("deferred", "sent", "sent"):
        requests.post(
            app.url,
            json={"delivery_report": [{"tenant_id": "acme", "id": "M1", "event": event}]},
            timeout=5,
        )

    sent = app.wait_for_items(lambda item: item["event"] == "sent", min_count=2)

    assert [item["event"] for item in sent] == ["sent", "sent"]
    with pytest.raises(AssertionError, match=r"expected at least 1 matching items within 0\.05s"):
        app.wait_for_items(lambda item: item["event"] == "bounce", timeout_s=0.05)
