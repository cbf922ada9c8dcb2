"""Attachments end to end: every fetch mode to a real SMTP server, refusals, large files (SPEC §9).

The proxy runs in-process with real waitress, a real aiosmtpd sink, real HTTP
servers for ``http_url``/``endpoint``, ``file://`` storage in a temp folder and
``s3://`` on a moto server. The memory test runs the proxy in a subprocess.
"""

from __future__ import annotations

import base64
import dataclasses
import email
import hashlib
import logging
import os
import re
import uuid
from email.message import Message
from pathlib import Path

import pytest
import requests

from proxy.attachments import large
from proxy.clock import now_ts
from proxy.store.large_files import DAY_S, LargeFileRecord
from tests.fixtures.files_http import start_file_server
from tests.fixtures.proxy import (
    ADMIN_TOKEN,
    ProxyProcess,
    fast_settings,
    free_port,
    message,
    running_proxy,
)
from tests.fixtures.s3 import s3_server  # noqa: F401 (fixture)
from tests.fixtures.smtp import start_sink
from tests.fixtures.waiting import wait_until

logger = logging.getLogger(__name__)

MB = 1 << 20
LINK = re.compile(r"- (?P<name>.+?) \((?P<size>[\d.]+) MB\): (?P<url>\S+)")


def attachments_of(data: bytes) -> dict[str, bytes]:
    parsed = email.message_from_bytes(data)
    found: dict[str, bytes] = {}
    for part in parsed.walk():
        if part.get_filename():
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            found[part.get_filename()] = payload
    return found


def text_of(data: bytes, subtype: str = "plain") -> str:
    for part in email.message_from_bytes(data).walk():
        if isinstance(part, Message) and part.get_content_type() == f"text/{subtype}":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    raise AssertionError(f"no text/{subtype} part")


def events(api, message_id: str) -> list[dict]:
    response = api.get(f"/messages/{message_id}/events", params={"tenant_id": "acme"})
    assert response.status_code == 200, response.text
    return response.json()["events"]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "files"
    folder.mkdir()
    return folder


@pytest.fixture
def settings(tmp_path: Path, files: Path):
    return fast_settings(
        tmp_path, http_allow_private_networks=True, attachment_allowed_dirs=(str(files),)
    )


def setup_tenant(api, sink, **tenant) -> None:
    api.add_tenant("acme", **tenant)
    api.add_account("acme", "main", host=sink.host, port=sink.port, use_tls=False)


# -- fetch modes ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["base64", "http_url", "filesystem", "endpoint"])
def test_each_fetch_mode_delivers_the_source_bytes(settings, files, mode: str) -> None:
    data = os.urandom(1_500_000)  # above the 1 MB spool threshold: streamed from disk
    with (
        start_sink() as sink,
        start_file_server() as web,
        running_proxy(settings) as (_server, api),
    ):
        setup_tenant(api, sink, client_base_url=web.url)
        web.files["/doc.pdf"] = data
        web.files["docs/doc.pdf"] = data
        (files / "doc.pdf").write_bytes(data)
        storage_path = {
            "base64": "base64:" + base64.b64encode(data).decode(),
            "http_url": web.url + "/doc.pdf",
            "filesystem": str(files / "doc.pdf"),
            "endpoint": "docs/doc.pdf",
        }[mode]
        api.add_messages(
            message("m1", attachments=[{"filename": "doc.pdf", "storage_path": storage_path}])
        )
        (received,) = sink.wait_for(1)
        assert attachments_of(received.data) == {"doc.pdf": data}
        assert api.wait_status("m1", "sent")["status"] == "sent"


@pytest.mark.parametrize(
    ("auth", "header"),
    [
        ({"method": "bearer", "token": "tenant-secret"}, "Bearer tenant-secret"),
        (
            {"method": "basic", "user": "mailer", "password": "pw"},
            "Basic " + base64.b64encode(b"mailer:pw").decode(),
        ),
    ],
)
def test_endpoint_mode_authenticates_with_the_tenant_credentials(settings, auth, header) -> None:
    with (
        start_sink() as sink,
        start_file_server(require_auth=header) as tenant_app,
        running_proxy(settings) as (_server, api),
    ):
        setup_tenant(api, sink, client_base_url=tenant_app.url, client_auth=auth)
        tenant_app.files["invoices/7"] = b"%PDF-1.7 invoice"
        api.add_messages(
            message("m1", attachments=[{"filename": "inv.pdf", "storage_path": "invoices/7"}])
        )
        (received,) = sink.wait_for(1)
        assert attachments_of(received.data) == {"inv.pdf": b"%PDF-1.7 invoice"}
        (call,) = [r for r in tenant_app.seen() if r.path == "/mail-proxy/attachments"]
        assert call.headers["authorization"] == header


# -- refusals and failure classes -------------------------------------------------------


def test_traversal_is_refused_at_enqueue_and_a_symlink_swapped_later_at_send(
    settings, files, tmp_path
) -> None:
    (tmp_path / "secret.txt").write_bytes(b"secret")
    with start_sink() as sink, running_proxy(settings) as (_server, api):
        setup_tenant(api, sink)
        traversal = str(files / ".." / "secret.txt")
        refused = api.add_messages(
            message("m1", attachments=[{"filename": "s.txt", "storage_path": traversal}])
        )
        assert refused.json()["rejected"] == [
            {
                "id": "m1",
                "field": "attachments[0].storage_path",
                "reason": "attachments[0].storage_path: path outside allowed directories",
            }
        ]
        # Enqueue stores the resolved path; a directory on it is swapped for a symlink later.
        (files / "sub").mkdir()
        (files / "sub" / "l.txt").write_bytes(b"fine")
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "l.txt").write_bytes(b"secret")
        assert api.post("/commands/suspend", params={"tenant_id": "acme"}).ok
        api.add_messages(
            message(
                "m2",
                attachments=[
                    {"filename": "l.txt", "storage_path": "sub/l.txt", "fetch_mode": "filesystem"}
                ],
            )
        )
        (files / "sub" / "l.txt").unlink()
        (files / "sub").rmdir()
        (files / "sub").symlink_to(tmp_path / "elsewhere")
        assert api.post("/commands/activate", params={"tenant_id": "acme"}).ok
        failed = api.wait_status("m2", "error")
        assert failed["error"] == (
            "Attachment fetch failed for l.txt: path outside allowed directories"
        )
        assert sink.messages == []


def test_ssrf_to_loopback_is_refused_by_default(tmp_path) -> None:
    with (
        start_sink() as sink,
        start_file_server() as web,
        running_proxy(fast_settings(tmp_path)) as (_server, api),
    ):
        setup_tenant(api, sink)
        web.files["/internal"] = b"internal data"
        api.add_messages(
            message(
                "m1", attachments=[{"filename": "x.bin", "storage_path": web.url + "/internal"}]
            )
        )
        failed = api.wait_status("m1", "error")
        assert failed["error"].startswith(
            "Attachment fetch failed for x.bin: address refused by the outbound policy"
        )
        assert web.seen() == []
        assert sink.messages == []


def test_a_temporary_fetch_failure_defers_with_reason_attachment(settings) -> None:
    with (
        start_sink() as sink,
        start_file_server() as web,
        running_proxy(settings) as (_server, api),
    ):
        setup_tenant(api, sink)
        web.statuses["/busy"] = 503
        api.add_messages(
            message("m1", attachments=[{"filename": "b.pdf", "storage_path": web.url + "/busy"}])
        )
        deferred = api.wait_status("m1", "deferred")
        assert deferred["retry_count"] == 1
        (event,) = [e for e in events(api, "m1") if e["event_type"] == "deferred"]
        assert event["description"] == "Attachment fetch failed for b.pdf: HTTP 503"
        assert event["metadata"]["reason"] == "attachment"


# -- large files ----------------------------------------------------------------------------


def large_file_config(storage_url: str, public_base_url: str, **extra) -> dict:
    return {
        "enabled": True,
        "max_size_mb": 0.5,
        "storage_url": storage_url,
        "public_base_url": public_base_url,
        "action": "rewrite",
    } | extra


def send_large(api, sink, data: bytes) -> dict[str, str]:
    api.add_messages(
        message(
            "big",
            html="<html><body><p>Report</p></body></html>",
            attachments=[
                {
                    "filename": "report.pdf",
                    "storage_path": "base64:" + base64.b64encode(data).decode(),
                },
                {"filename": "small.txt", "storage_path": "base64:aGk="},
            ],
        )
    )
    (received,) = sink.wait_for(1)
    assert attachments_of(received.data) == {"small.txt": b"hi"}  # no part added for the link
    assert 'href="' in text_of(received.data, "html")
    found = LINK.search(text_of(received.data))
    assert found is not None
    assert (found["name"], found["size"]) == ("report.pdf", f"{len(data) / MB:.1f}")
    return found.groupdict()


def test_rewrite_to_file_storage_serves_the_link_and_cleanup_removes_it(settings, tmp_path) -> None:
    data = os.urandom(MB)
    store_dir = tmp_path / "large"
    with start_sink() as sink, running_proxy(settings) as (server, api):
        config = large_file_config(f"file://{store_dir}", server.url)
        setup_tenant(api, sink, large_file_config=config)
        url = send_large(api, sink, data)["url"]
        assert url.startswith(server.url + "/download/")
        (file_id,) = os.listdir(store_dir)
        downloaded = requests.get(url, timeout=10)
        assert downloaded.status_code == 200
        assert downloaded.content == data
        assert (
            downloaded.headers["content-disposition"] == "attachment; filename*=UTF-8''report.pdf"
        )
        tampered = url.replace(file_id, file_id[:-1] + ("0" if file_id[-1] != "0" else "1"))
        assert requests.get(tampered, timeout=10).status_code == 404
        removed = large.cleanup(
            server.store.large_files, now=now_ts() + 31 * DAY_S, holder=server.instance_id
        )
        assert removed == 1
        assert os.listdir(store_dir) == []
        assert requests.get(url, timeout=10).status_code == 410


def test_rewrite_to_s3_uploads_the_object_and_the_link_downloads_it(settings, s3_server) -> None:  # noqa: F811
    data = os.urandom(MB + 12345)
    with start_sink() as sink, running_proxy(settings) as (server, api):
        config = large_file_config(
            f"s3://{s3_server.bucket}/mail",
            server.url,
            storage_options=s3_server.storage_options,
        )
        setup_tenant(api, sink, large_file_config=config)
        url = send_large(api, sink, data)["url"]
        (key,) = s3_server.objects()
        assert key.startswith(f"{s3_server.bucket}/mail/")
        assert key.endswith("/report.pdf")
        with s3_server.filesystem().open(key, "rb") as stored:
            assert stored.read() == data
        downloaded = requests.get(url, timeout=10)
        assert (downloaded.status_code, downloaded.content) == (200, data)
        removed = large.cleanup(
            server.store.large_files, now=now_ts() + 31 * DAY_S, holder=server.instance_id
        )
        assert removed == 1
        assert s3_server.objects() == []
        assert requests.get(url, timeout=10).status_code == 410


def test_reject_ends_the_message_as_error(settings) -> None:
    with start_sink() as sink, running_proxy(settings) as (server, api):
        config = large_file_config("file:///nowhere", server.url, action="reject")
        setup_tenant(api, sink, large_file_config=config)
        data = "base64:" + base64.b64encode(os.urandom(MB)).decode()
        api.add_messages(message("m1", attachments=[{"filename": "r.bin", "storage_path": data}]))
        failed = api.wait_status("m1", "error")
        assert failed["error"] == "Attachment 'r.bin' (1.0 MB) exceeds limit (0.5 MB)"
        assert sink.messages == []


def test_an_admin_run_now_in_test_mode_runs_the_large_file_cleanup(settings, tmp_path) -> None:
    stored = tmp_path / "large" / "f-1" / "old.pdf"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"old")
    test_mode = dataclasses.replace(settings, test_mode=True)
    with running_proxy(test_mode) as (server, api):
        api.add_tenant("acme")
        record = LargeFileRecord(
            file_id=str(uuid.uuid4()),
            tenant_id="acme",
            message_pk="pk-1",
            content_md5="0" * 32,
            filename="old.pdf",
            content_type="application/pdf",
            size_bytes=3,
            storage_url=f"file://{stored}",
            storage_options=None,
            created_ts=now_ts() - 31 * DAY_S,
            expires_ts=now_ts() - DAY_S,
        )
        server.store.large_files.add(record)
        assert api.post("/commands/run-now").status_code == 200
        wait_until(lambda: not stored.parent.exists(), what="the cleanup to delete the file")
        wait_until(
            lambda: server.store.large_files.get(record.file_id).deleted_ts is not None,
            what="the record to be marked deleted",
        )


# -- memory (a subprocess proxy, peak RSS from /proc) ------------------------------------------

ATTACHMENT_MB = 20
BUDGET_MB = 64
ACCOUNTS = 10


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def _reset_peak(pid: int) -> int:
    """Reset VmHWM to the current RSS (Linux clear_refs 5); return that RSS in bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status_kb(pid, "VmRSS") * 1024


def _peak_rise(pid: int, base: int) -> int:
    return _status_kb(pid, "VmHWM") * 1024 - base


def _memory_config(tmp_path: Path, port: int, files: Path) -> Path:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}
db_path = "{tmp_path / "proxy.db"}"

[delivery]
send_loop_interval = 0.05
claim_lease_seconds = 300
smtp_send_timeout = 60

[security]
api_token = "{ADMIN_TOKEN}"
filesystem_allowed_dirs = ["{files}"]
"""
    )
    return config


@pytest.mark.slow
@pytest.mark.sqlite_only  # a config file of its own: the backend is not what it measures
def test_large_attachments_stay_within_the_memory_budget(tmp_path, files) -> None:
    data = os.urandom(ATTACHMENT_MB * MB)
    (files / "big.bin").write_bytes(data)
    (files / "warm.bin").write_bytes(os.urandom(3 * MB // 2))
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    port = free_port()
    proxy = ProxyProcess(
        _memory_config(tmp_path, port, files),
        port,
        {"GMP_ATTACHMENT_MEMORY_BUDGET_MB": str(BUDGET_MB)},
        tmp_path / "proxy.log",
    )
    with start_sink() as sink:
        try:
            proxy.start()
            assert proxy.process is not None
            pid, api = proxy.process.pid, proxy.api
            api.add_tenant("acme")
            for index in range(ACCOUNTS):
                api.add_account("acme", f"a{index}", host=sink.host, port=sink.port, use_tls=False)

            def attached(name: str, account: str, path: str) -> dict:
                return message(
                    name,
                    account_id=account,
                    attachments=[{"filename": "big.bin", "storage_path": path}],
                )

            # Warm up every code path (fetch, spool, splice, SMTP) before measuring.
            api.add_messages(attached("warm", "a0", str(files / "warm.bin")))
            api.wait_status("warm", "sent", timeout_s=30)

            base = _reset_peak(pid)
            api.add_messages(attached("one", "a0", str(files / "big.bin")))
            api.wait_status("one", "sent", timeout_s=60)
            one = _peak_rise(pid, base)
            logger.info(
                "one %s MB attachment: peak RSS +%.1f MB (%.2fx)",
                ATTACHMENT_MB,
                one / MB,
                one / len(data),
            )

            base = _reset_peak(pid)
            ids = [f"ten-{i}" for i in range(ACCOUNTS)]
            api.add_messages(
                *[attached(m, f"a{i}", str(files / "big.bin")) for i, m in enumerate(ids)]
            )
            for message_id in ids:
                api.wait_status(message_id, "sent", timeout_s=120)
            ten = _peak_rise(pid, base)
            logger.info(
                "ten at once, budget %s MB: peak RSS +%.1f MB (bound %.1f MB)",
                BUDGET_MB,
                ten / MB,
                (BUDGET_MB * MB + one) / MB,
            )
            assert ten < BUDGET_MB * MB + one
        finally:
            proxy.stop()
        received = sink.wait_for(2 + ACCOUNTS, timeout_s=30)
        bodies = [attachments_of(r.data)["big.bin"] for r in received[1:]]
        assert [hashlib.md5(b, usedforsecurity=False).hexdigest() for b in bodies] == (
            [digest] * (1 + ACCOUNTS)
        )
    # DATA is streamed in chunks (proxy/smtp/data.py): one message costs a few copies at most.
    assert one < 5 * len(data), f"one attachment raised peak RSS {one / len(data):.1f}x"
