"""Secrets never leave (SPEC §2.1 rule 7, §16 rule 7): not in a log line, not in a response.

A scripted run against a running proxy sets every kind of secret the proxy keeps
(tenant sync token, SMTP and IMAP passwords, storage options, the bounce IMAP
password, an attachment token, the tenant API key), uses them (a real AUTH SMTP
server, a real tenant endpoint), reads everything back through the API, then
greps every log line (root logger at DEBUG, rendered as text and as JSON) and
every response for them.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterator

import pytest
import requests

from proxy.logs import NOISY_LOGGERS, PINNED_LOGGERS, JsonFormatter, TextFormatter, setup_logging
from tests.fixtures.proxy import ADMIN_TOKEN, Api, fast_settings, message, running_proxy
from tests.fixtures.smtp import SINK_PASSWORD, SINK_USER, start_sink
from tests.fixtures.tenant_http import TenantApp
from tests.fixtures.waiting import wait_until

KEY = base64.b64encode(bytes(range(7, 39))).decode()
SYNC_TOKEN = "sync-token-5ec2e7aa"
IMAP_PASSWORD = "imap-pw-0ddba11"
S3_KEY = "AKIA5ECRE7KEY"
S3_SECRET = "s3-secret-b16b00b5"
S3_SESSION = "s3-session-1ceb00da"
BOUNCE_PASSWORD = "bounce-pw-5ca1ab1e"
ATTACHMENT_TOKEN = "attachment-token-f005ba11"
QUERY_SECRET = "query-secret-0b5e55ed"
DOWNLOAD_SIG = "d0d0caca5ecre7519"
REJECTED_PASSWORD = "rejected-pw-bada55"
# What AUTH PLAIN puts on the wire: a debug line must not carry it either.
AUTH_PLAIN = base64.b64encode(f"\0{SINK_USER}\0{SINK_PASSWORD}".encode()).decode()
SECRETS = [
    SINK_PASSWORD,
    AUTH_PLAIN,
    SYNC_TOKEN,
    IMAP_PASSWORD,
    S3_KEY,
    S3_SECRET,
    S3_SESSION,
    BOUNCE_PASSWORD,
    ATTACHMENT_TOKEN,
    QUERY_SECRET,
    DOWNLOAD_SIG,
    REJECTED_PASSWORD,
    ADMIN_TOKEN,
    hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
]


class Capture(logging.Handler):
    """Every record, rendered by both formatters: what an operator's log would hold."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.text, self.json = TextFormatter(), JsonFormatter()
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.text.format(record))
        self.lines.append(self.json.format(record))


@pytest.fixture
def captured_logs() -> Iterator[Capture]:
    """The production set-up at DEBUG plus a capturing handler; all restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    levels = {name: logging.getLogger(name).level for name in (*NOISY_LOGGERS, *PINNED_LOGGERS)}
    setup_logging("DEBUG", "json")
    capture = Capture()
    root.addHandler(capture)
    try:
        yield capture
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _scripted_run(
    api: Api, sink_port: int, tenant_app: TenantApp
) -> tuple[list[requests.Response], list[str]]:
    """Set every secret, use them, read everything back: the responses, and the key's secrets."""
    responses: list[requests.Response] = []

    def call(method: str, path: str, body: object = None, **kwargs: object) -> dict:
        response = api.request(method, path, json=body, **kwargs)
        responses.append(response)
        assert response.status_code < 500, response.text
        return response.json() if response.content else {}

    created = call(
        "POST",
        "/tenant",
        {
            "id": "acme",
            "client_base_url": tenant_app.url,
            "client_auth": {"method": "bearer", "token": SYNC_TOKEN},
            "large_file_config": {
                "enabled": False,
                "storage_url": "s3://bucket/files",
                "public_base_url": "https://files.example",
                "storage_options": {
                    "key": S3_KEY,
                    "secret": S3_SECRET,
                    "client_kwargs": {"aws_session_token": S3_SESSION},
                },
            },
        },
    )
    api_key = created["api_key"]
    key_secrets = [api_key, hashlib.sha256(api_key.encode()).hexdigest()]
    responses.pop()  # the creation response is the one place the key is shown (§2.1 rule 3)
    call(
        "POST",
        "/account",
        {
            "id": "main",
            "tenant_id": "acme",
            "host": "127.0.0.1",
            "port": sink_port,
            "use_tls": False,
            "user": SINK_USER,
            "password": SINK_PASSWORD,
            "imap_password": IMAP_PASSWORD,
        },
    )
    rejected = call("POST", "/account", {"id": "bad", "tenant_id": "acme", "host": "h",
                                         "port": 0, "password": REJECTED_PASSWORD})  # fmt: skip
    assert rejected["ok"] is False
    call(
        "PUT",
        "/instance",
        {"bounce_imap_host": "imap.example", "bounce_imap_user": "bounces"}
        | {"bounce_imap_password": BOUNCE_PASSWORD},
    )
    attachment = {
        "filename": "invoice.pdf",
        "storage_path": "invoices/1",
        "fetch_mode": "endpoint",
        "auth": {"method": "bearer", "token": ATTACHMENT_TOKEN},
    }
    call("POST", "/commands/add-messages", {"messages": [message("plain-1")]})
    call(
        "POST", "/commands/add-messages", {"messages": [message("att-1", attachments=[attachment])]}
    )
    api.wait_status("plain-1", "sent")
    wait_until(
        lambda: api.message("att-1")["status"] not in ("pending", "sending"),
        what="the message with an attachment to be attempted",
    )
    wait_until(
        lambda: any(c.headers.get("authorization") == f"Bearer {SYNC_TOKEN}"
                    for c in tenant_app.calls),
        what="a sync call authenticated with the tenant token",
    )  # fmt: skip
    tenant_scoped = api.as_token(api_key)
    for path, params in [
        ("/tenants", {"active_only": "true", "probe": QUERY_SECRET}),
        ("/tenant/acme", {}),
        ("/accounts", {"tenant_id": "acme"}),
        ("/messages", {"tenant_id": "acme", "include_history": "true"}),
        ("/messages/att-1/events", {"tenant_id": "acme"}),
        ("/instance", {}),
        ("/command-log", {"limit": "1000"}),
        ("/command-log/export", {}),
        ("/tenants/sync-status", {}),
        ("/status", {}),
        (f"/download/f1-1767225600-{DOWNLOAD_SIG}/invoice.pdf", {}),
    ]:
        call("GET", path, params=params)
    responses.append(tenant_scoped.get("/tenant/acme"))
    responses.append(tenant_scoped.get("/accounts"))
    return responses, key_secrets


@pytest.mark.parametrize("encryption_key", [KEY, None], ids=["with-key", "without-key"])
def test_no_secret_in_any_log_line_or_response(
    tmp_path, tenant_app, captured_logs, encryption_key
) -> None:
    settings = fast_settings(tmp_path, encryption_key=encryption_key)
    with (
        start_sink(auth=(SINK_USER, SINK_PASSWORD), auth_require_tls=False) as sink,
        running_proxy(settings) as (_server, api),
    ):
        responses, key_secrets = _scripted_run(api, sink.port, tenant_app)
    assert sink.messages[0].login == SINK_USER  # the stored password was used...
    bodies = [f"{r.status_code} {dict(r.headers)} {r.text}" for r in responses]
    for secret in [*SECRETS, *key_secrets]:  # ... and is nowhere else
        assert not [b for b in bodies if secret in b], f"{secret!r} in a response"
        assert not [line for line in captured_logs.lines if secret in line], (
            f"{secret!r} in a log line"
        )
    # The run was logged (so the check above is not vacuous): DEBUG lines and access lines.
    assert any(r.levelno == logging.DEBUG for r in captured_logs.records)
    access = [r for r in captured_logs.records if r.name == "proxy.access"]
    assert {"GET /tenants", "POST /account", "PUT /instance"} <= {
        f"{r.method} {r.path}" for r in access
    }
    assert "/download/<redacted>/invoice.pdf" in {r.path for r in access}
    assert len(bodies) >= 15
