"""The send path's attachment step: cache, checksum, large-file rules, memory (SPEC §9.2-9.7)."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from proxy.attachments import pipeline
from proxy.attachments.errors import AttachmentFailure
from proxy.metrics import Metrics
from proxy.smtp import mime
from proxy.store.records import MessageToSend
from tests.fixtures.files_http import start_file_server
from tests.fixtures.stores import add_tenant_and_account, make_settings

NOW = 1_767_225_600
MB = 1 << 20


@dataclass
class Ctx:
    store: Any
    settings: Any
    metrics: Metrics = field(default_factory=Metrics)
    stopping: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def ctx(store, tmp_path) -> Ctx:
    add_tenant_and_account(store)
    add_tenant_and_account(store, "other")
    settings = make_settings(
        http_allow_private_networks=True,
        attachment_allowed_dirs=(str(tmp_path),),
        attachment_memory_budget_mb=4,
        download_secret="s",
        cache_memory_max_mb=10,
    )
    return Ctx(store, settings)


@pytest.fixture
def server():
    with start_file_server() as running:
        yield running


def sending(*attachments: dict, tenant: str = "acme", pk: str = "pk-1", **payload) -> MessageToSend:
    body = {
        "id": "m1",
        "tenant_id": tenant,
        "account_id": "main",
        "from": "s@acme.example",
        "to": ["ann@example.org"],
        "subject": "Files",
        "body": "Hello",
        "attachments": list(attachments),
    } | payload
    return MessageToSend(pk, tenant, "m1", "main", body, attempt=1, retry_count=0)


def cache_lookups(ctx: Ctx, tier: str, result: str) -> float:
    value = ctx.metrics.registry.get_sample_value(
        "gmp_attachment_cache_requests_total", {"tier": tier, "result": result}
    )
    return value or 0.0


def test_a_message_without_attachments_costs_nothing(ctx) -> None:
    message = sending()
    message.payload.pop("attachments")
    with pipeline.prepare(ctx, message, now=NOW) as prepared:
        assert prepared.payload is message.payload
        assert prepared.take_contents() == []


def test_built_message_carries_the_fetched_bytes_and_mime_types(ctx, server, tmp_path) -> None:
    big = os.urandom(3 * MB)
    (tmp_path / "big.bin").write_bytes(big)
    server.files["/photo.png"] = b"\x89PNG small"
    message = sending(
        {
            "filename": "big_{MD5:00}.bin",
            "storage_path": str(tmp_path / "big.bin"),
            "fetch_mode": "filesystem",
        },
        {"filename": "photo.png", "storage_path": server.url + "/photo.png"},
        {
            "filename": "note.txt",
            "storage_path": base64.b64encode(b"note").decode(),
            "fetch_mode": "base64",
            "mime_type": "text/x-note",
        },
    )
    with pipeline.prepare(ctx, message, now=NOW) as prepared:
        built = prepared.complete(
            mime.build(
                prepared.payload, pk="pk-1", now_ts=NOW, attachments=prepared.take_contents()
            )
        )
        assert ctx.store is not None
        expected = mime.build(
            message.payload,
            pk="pk-1",
            now_ts=NOW,
            attachments=[
                mime.AttachmentContent("big.bin", "application/octet-stream", big),
                mime.AttachmentContent("photo.png", "image/png", b"\x89PNG small"),
                mime.AttachmentContent("note.txt", "text/x-note", b"note"),
            ],
        )
        assert built.data == expected.data
        assert pipeline.runtime_for(ctx).budget.used_bytes > 0
    assert pipeline.runtime_for(ctx).budget.used_bytes == 0


def test_a_known_md5_is_served_from_the_tenants_cache_only(ctx, server) -> None:
    data = b"cached content"
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    server.files["/c.txt"] = data
    item = {"filename": "c.txt", "storage_path": server.url + "/c.txt", "content_md5": md5}
    for _ in range(2):
        with pipeline.prepare(ctx, sending(item), now=NOW):
            pass
    assert len(server.seen()) == 1
    assert cache_lookups(ctx, "memory", "hit") == 1
    with pipeline.prepare(ctx, sending(item, tenant="other"), now=NOW):
        pass  # another tenant naming the same MD5 fetches it itself
    assert len(server.seen()) == 2


def test_a_marker_with_the_full_md5_hits_the_cache(ctx, server) -> None:
    data = b"marked"
    server.files["/m"] = data
    name = f"doc_{{MD5:{hashlib.md5(data, usedforsecurity=False).hexdigest()}}}.txt"
    for _ in range(2):
        with pipeline.prepare(
            ctx, sending({"filename": name, "storage_path": server.url + "/m"}), now=NOW
        ) as prepared:
            (content,) = prepared.take_contents()
            assert (content.filename, content.content) == ("doc.txt", data)
    assert len(server.seen()) == 1


def test_base64_content_is_never_cached(ctx) -> None:
    item = {
        "filename": "a",
        "storage_path": "aGk=",
        "fetch_mode": "base64",
        "content_md5": hashlib.md5(b"hi", usedforsecurity=False).hexdigest(),
    }
    with pipeline.prepare(ctx, sending(item), now=NOW):
        pass
    assert cache_lookups(ctx, "memory", "miss") + cache_lookups(ctx, "memory", "hit") == 0


def test_a_checksum_mismatch_is_permanent(ctx, server) -> None:
    server.files["/c"] = b"actual"
    item = {"filename": "c.txt", "storage_path": server.url + "/c", "content_md5": "0" * 32}
    with pytest.raises(AttachmentFailure) as caught:
        pipeline.prepare(ctx, sending(item), now=NOW)
    assert caught.value.permanent
    assert caught.value.text == "Attachment fetch failed for c.txt: checksum mismatch"


def test_a_permanent_failure_wins_and_nothing_stays_held(ctx, server, tmp_path) -> None:
    server.statuses["/busy"] = 503
    (tmp_path / "ok.bin").write_bytes(os.urandom(2 * MB))
    message = sending(
        {"filename": "busy.pdf", "storage_path": server.url + "/busy"},
        {"filename": "ok.bin", "storage_path": str(tmp_path / "ok.bin")},
        {"filename": "gone.pdf", "storage_path": str(tmp_path / "gone.pdf")},
    )
    with pytest.raises(AttachmentFailure) as caught:
        pipeline.prepare(ctx, message, now=NOW)
    assert caught.value.outcome.description == (
        "Attachment fetch failed for gone.pdf: file not found"
    )
    assert pipeline.runtime_for(ctx).budget.used_bytes == 0
    temporary = sending({"filename": "busy.pdf", "storage_path": server.url + "/busy"})
    with pytest.raises(AttachmentFailure) as caught:
        pipeline.prepare(ctx, temporary, now=NOW)
    assert caught.value.outcome.reason == "attachment"


def large_config(tmp_path, **extra) -> dict:
    return {
        "enabled": True,
        "max_size_mb": 0.01,
        "storage_url": f"file://{tmp_path}/store",
        "public_base_url": "https://mx.example",
    } | extra


def test_warn_sends_it_attached_and_records_a_warning(ctx, tmp_path) -> None:
    ctx.store.tenants.update("acme", {"large_file_config": large_config(tmp_path)}, NOW)
    item = {
        "filename": "big.bin",
        "storage_path": base64.b64encode(b"x" * 20_000).decode(),
        "fetch_mode": "base64",
    }
    with pipeline.prepare(ctx, sending(item), now=NOW) as prepared:
        assert len(prepared.take_contents()) == 1
    (event,) = [e for e in ctx.store.events.history("pk-1") if e.event_type == "warning"]
    assert event.metadata == {"filename": "big.bin", "size_bytes": 20_000}
    assert "big.bin" in event.description


def test_reject_fails_the_message_permanently_with_spec_wording(ctx, tmp_path) -> None:
    ctx.store.tenants.update(
        "acme", {"large_file_config": large_config(tmp_path, action="reject")}, NOW
    )
    item = {
        "filename": "big.bin",
        "storage_path": base64.b64encode(b"x" * 157_287).decode(),
        "fetch_mode": "base64",
    }
    with pytest.raises(AttachmentFailure) as caught:
        pipeline.prepare(ctx, sending(item), now=NOW)
    assert caught.value.permanent
    assert caught.value.text == "Attachment 'big.bin' (0.2 MB) exceeds limit (0.01 MB)"


def test_rewrite_replaces_the_attachment_with_a_link_in_the_body(ctx, tmp_path) -> None:
    ctx.store.tenants.update(
        "acme", {"large_file_config": large_config(tmp_path, action="rewrite")}, NOW
    )
    items = [
        {
            "filename": "big.bin",
            "storage_path": base64.b64encode(b"x" * 20_000).decode(),
            "fetch_mode": "base64",
        },
        {"filename": "small.txt", "storage_path": "aGk=", "fetch_mode": "base64"},
    ]
    with pipeline.prepare(ctx, sending(*items), now=NOW) as prepared:
        contents = prepared.take_contents()
        assert [c.filename for c in contents] == ["small.txt"]
        assert "- big.bin (0.0 MB): https://mx.example/download/" in prepared.payload["body"]
    assert len(os.listdir(tmp_path / "store")) == 1


def test_a_reservation_waits_for_the_budget_and_gives_up_at_shutdown(ctx, tmp_path) -> None:
    (tmp_path / "f.bin").write_bytes(os.urandom(2 * MB))
    budget = pipeline.runtime_for(ctx).budget
    budget.acquire(budget.total_bytes)  # another send holds everything
    ctx.stopping.set()
    with pytest.raises(AttachmentFailure) as caught:
        pipeline.prepare(
            ctx, sending({"filename": "f.bin", "storage_path": str(tmp_path / "f.bin")}), now=NOW
        )
    assert not caught.value.permanent
    budget.release(budget.total_bytes)
    assert budget.used_bytes == 0


def test_a_message_larger_than_the_budget_takes_all_of_it(ctx, tmp_path) -> None:
    (tmp_path / "f.bin").write_bytes(os.urandom(3 * MB))  # needs ~8 MB against a 4 MB budget
    budget = pipeline.runtime_for(ctx).budget
    item = {"filename": "f.bin", "storage_path": str(tmp_path / "f.bin")}
    with pipeline.prepare(ctx, sending(item), now=NOW):
        assert budget.used_bytes == budget.total_bytes
    assert budget.used_bytes == 0
