"""Large-file rules, download blocks, uploads with reuse, and the cleanup (SPEC §9.7, §9.8)."""

from __future__ import annotations

import os

import pytest

from proxy.attachments import large, links
from proxy.attachments.budget import Spool
from proxy.attachments.errors import AttachmentFailure
from proxy.store.large_files import DAY_S
from tests.fixtures.s3 import s3_server  # noqa: F401 (fixture)
from tests.fixtures.stores import add_tenant_and_account

NOW = 1_767_225_600
SECRET = b"k" * 32


def spool_of(data: bytes) -> Spool:
    spool = Spool(None)
    spool.write(data)
    return spool


def config(tmp_path, **extra) -> large.LargeFileConfig:
    raw = {
        "enabled": True,
        "max_size_mb": 0.001,
        "storage_url": f"file://{tmp_path}/store",
        "public_base_url": "https://mx.example",
        "action": "rewrite",
    } | extra
    found = large.LargeFileConfig.of(raw)
    assert found is not None
    return found


def upload(spool: Spool, pk: str = "pk-1", name: str = "big report.pdf") -> large.Upload:
    return large.Upload("acme", pk, name, "application/pdf", spool)


def rewrite(store, cfg, up, *, now=NOW, public_url=None) -> large.Link:
    return large.rewrite(
        up, cfg, files=store.large_files, secret=lambda: SECRET, public_url=public_url, now=now
    )


def test_configuration_applies_only_when_enabled() -> None:
    assert large.LargeFileConfig.of(None) is None
    assert large.LargeFileConfig.of({"enabled": False, "action": "reject"}) is None
    cfg = large.LargeFileConfig.of({"enabled": True, "max_size_mb": 1, "file_ttl_days": None})
    assert cfg is not None
    assert (cfg.action, cfg.file_ttl_days) == ("warn", 30)
    assert not cfg.triggers(1 << 20)
    assert cfg.triggers((1 << 20) + 1)


def test_the_plain_block_lists_each_file_and_the_expiry() -> None:
    link = large.Link("a.pdf", 3 * (1 << 20) // 2, "https://x/dl", NOW + 30 * DAY_S)
    assert large.plain_block("Hello", [link]) == (
        "Hello\n\nLarge attachments are available for download:\n"
        "- a.pdf (1.5 MB): https://x/dl\n"
        "Links expire on 2026-01-31 00:00 UTC.\n"
    )
    assert large.plain_block("Hi\n", [link]).startswith("Hi\n\nLarge")
    lifespan = large.Link("a.pdf", 10, "u", NOW, lifespan_after_download_days=2)
    assert "or 2 days after the first download." in large.plain_block("", [lifespan])


def test_the_html_block_goes_before_body_end_and_is_escaped() -> None:
    link = large.Link("<a>.pdf", 1 << 20, "https://x/dl?a=1&b=2", NOW)
    text = large.html_block("<html><body><p>Hi</p></BODY></html>", [link])
    assert text.startswith("<html><body><p>Hi</p><div class=")
    assert text.endswith("</div></BODY></html>")
    assert '<a href="https://x/dl?a=1&amp;b=2">&lt;a&gt;.pdf</a> (1.0 MB)' in text
    assert large.html_block("<p>no body tag</p>", [link]).startswith("<p>no body tag</p><div")


def test_every_body_part_gets_the_block_and_no_part_is_added() -> None:
    link = large.Link("a.pdf", 10, "https://x/dl", NOW)
    alternative = large.with_download_block({"body": "plain", "html": "<p>h</p>"}, [link])
    assert "- a.pdf (0.0 MB): https://x/dl" in alternative["body"]
    assert 'href="https://x/dl"' in alternative["html"]
    html_only = large.with_download_block({"body": "<p>h</p>", "content_type": "html"}, [link])
    assert 'href="https://x/dl"' in html_only["body"]
    assert "html" not in html_only
    assert large.with_download_block({"body": "b"}, []) == {"body": "b"}


def test_rewrite_uploads_to_file_storage_records_it_and_signs_a_proxy_link(store, tmp_path) -> None:
    add_tenant_and_account(store)
    data = os.urandom(5000)
    link = rewrite(store, config(tmp_path), upload(spool_of(data)))
    parsed = links.parse(link.url.split("/download/")[1].split("/")[0])
    assert parsed is not None
    assert link.url.endswith("/big%20report.pdf")
    assert links.is_authentic(SECRET, parsed, "big report.pdf")
    record = store.large_files.get(parsed.file_id)
    assert record is not None
    assert (record.size_bytes, record.expires_ts, record.tenant_id) == (
        5000,
        NOW + 30 * DAY_S,
        "acme",
    )
    stored = tmp_path / "store" / parsed.file_id / "big report.pdf"
    assert stored.read_bytes() == data


def test_an_s3_link_states_the_expiry_s3_granted_not_the_file_ttl(store, s3_server) -> None:  # noqa: F811
    """S3 signs for 7 days at most (SPEC §9.8 rule 2): the mail says so, though the file
    itself stays until its ``file_ttl_days``."""
    add_tenant_and_account(store)
    cfg = large.LargeFileConfig.of(
        {
            "enabled": True,
            "max_size_mb": 0.001,
            "storage_url": f"s3://{s3_server.bucket}/mail",
            "storage_options": s3_server.storage_options,
            "action": "rewrite",
            "file_ttl_days": 30,
        }
    )
    assert cfg is not None
    link = rewrite(store, cfg, upload(spool_of(os.urandom(3000))))
    assert "Expires=" in link.url
    assert link.expires_ts == NOW + 7 * DAY_S
    assert "Links expire on 2026-01-08 00:00 UTC." in large.plain_block("", [link])
    record = store.large_files.get(link.url.split("/mail/")[1].split("/")[0])
    assert record is not None
    assert record.expires_ts == NOW + 30 * DAY_S


def test_a_retry_reuses_the_upload_of_the_same_message_and_content(store, tmp_path) -> None:
    add_tenant_and_account(store)
    data = os.urandom(5000)
    first = rewrite(store, config(tmp_path), upload(spool_of(data)))
    again = rewrite(store, config(tmp_path), upload(spool_of(data)), now=NOW + 60)
    other = rewrite(store, config(tmp_path), upload(spool_of(data), pk="pk-2"))
    assert again.url == first.url
    assert other.url != first.url
    assert len(os.listdir(tmp_path / "store")) == 2


def test_without_public_base_url_file_storage_uses_the_instance_url(store, tmp_path) -> None:
    add_tenant_and_account(store)
    cfg = config(tmp_path, public_base_url=None)
    link = rewrite(store, cfg, upload(spool_of(b"x" * 2000)), public_url="https://proxy.example")
    assert link.url.startswith("https://proxy.example/download/")
    with pytest.raises(AttachmentFailure) as caught:
        rewrite(store, cfg, upload(spool_of(b"y" * 2000), pk="pk-3"))
    assert caught.value.permanent


def test_an_unreachable_storage_is_a_temporary_failure(store, tmp_path) -> None:
    add_tenant_and_account(store)
    (tmp_path / "file").write_bytes(b"")  # a file where the storage directory should be
    cfg = config(tmp_path, storage_url=f"file://{tmp_path}/file/store")
    with pytest.raises(AttachmentFailure) as caught:
        rewrite(store, cfg, upload(spool_of(b"x" * 2000)))
    assert not caught.value.permanent
    assert caught.value.text.startswith("Large file upload failed for big report.pdf")
    assert store.large_files.due_for_cleanup(NOW + 400 * DAY_S) == []


def uploaded(store, tmp_path, pk: str, **cfg) -> tuple[str, str]:
    link = rewrite(store, config(tmp_path, **cfg), upload(spool_of(os.urandom(3000)), pk=pk))
    file_id = link.url.split("/download/")[1][:36]
    return file_id, str(tmp_path / "store" / file_id)


def test_cleanup_deletes_files_past_their_ttl_once(store, tmp_path) -> None:
    add_tenant_and_account(store)
    file_id, folder = uploaded(store, tmp_path, "pk-1", file_ttl_days=1)
    _, kept = uploaded(store, tmp_path, "pk-2", file_ttl_days=2)
    assert large.cleanup(store.large_files, now=NOW + DAY_S - 1, holder="me") == 0
    assert large.cleanup(store.large_files, now=NOW + DAY_S, holder="me") == 1
    assert not os.path.exists(folder)
    assert os.path.exists(kept)
    assert store.large_files.get(file_id).deleted_ts == NOW + DAY_S
    assert large.cleanup(store.large_files, now=NOW + DAY_S + 5, holder="me") == 0


def test_cleanup_honours_the_lifespan_after_the_first_download(store, tmp_path) -> None:
    add_tenant_and_account(store)
    file_id, folder = uploaded(store, tmp_path, "pk-1", lifespan_after_download_days=2)
    _, never_downloaded = uploaded(store, tmp_path, "pk-2", lifespan_after_download_days=2)
    store.large_files.count_download(file_id, NOW + 100)
    store.large_files.count_download(file_id, NOW + 200)
    record = store.large_files.get(file_id)
    assert (record.first_download_ts, record.download_count) == (NOW + 100, 2)
    assert large.cleanup(store.large_files, now=NOW + 100 + 2 * DAY_S, holder="me") == 1
    assert not os.path.exists(folder)
    assert os.path.exists(never_downloaded)


def test_files_of_a_deleted_tenant_are_cleaned_up_from_their_records(store, tmp_path) -> None:
    add_tenant_and_account(store)
    file_id, folder = uploaded(store, tmp_path, "pk-1")
    store.tenants.delete("acme")
    assert store.large_files.get(file_id) is not None  # kept until the files are gone
    assert large.cleanup(store.large_files, now=NOW + 1, holder="me") == 1
    assert not os.path.exists(folder)


def test_a_file_already_gone_still_counts_as_deleted(store, tmp_path) -> None:
    add_tenant_and_account(store)
    file_id, folder = uploaded(store, tmp_path, "pk-1", file_ttl_days=1)
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    os.rmdir(folder)
    assert large.cleanup(store.large_files, now=NOW + DAY_S, holder="me") == 1
    assert store.large_files.get(file_id).deleted_ts is not None


def test_one_instance_at_a_time_runs_the_cleanup(store, tmp_path) -> None:
    add_tenant_and_account(store)
    uploaded(store, tmp_path, "pk-1", file_ttl_days=1)
    due = NOW + DAY_S
    assert large.cleanup(store.large_files, now=due - 1, holder="a") == 0  # takes the lease
    assert large.cleanup(store.large_files, now=due, holder="b") == 0
    assert large.cleanup(store.large_files, now=due, holder="a") == 1
    assert large.cleanup(store.large_files, now=due + large.CLEANUP_LEASE_S, holder="b") == 0


def test_a_stored_rewrite_without_storage_url_is_a_temporary_failure(store, tmp_path) -> None:
    """Refused on write now, but an older database may still hold one (SPEC §9.7 rule 3)."""
    add_tenant_and_account(store)
    cfg = config(tmp_path, storage_url=None)
    with pytest.raises(AttachmentFailure) as caught:
        rewrite(store, cfg, upload(spool_of(b"x" * 2000)))
    assert not caught.value.permanent
    assert caught.value.text == (
        "Large file upload failed for big report.pdf: no storage_url configured"
    )
    assert store.large_files.due_for_cleanup(NOW + 400 * DAY_S) == []


@pytest.mark.parametrize(
    ("raw", "public_url", "refused"),
    [
        (None, None, False),
        ({"enabled": False, "action": "rewrite", "storage_url": "file:///x"}, None, False),
        ({"enabled": True, "action": "warn", "storage_url": "file:///x"}, None, False),
        ({"enabled": True, "action": "rewrite", "storage_url": "file:///x"}, None, True),
        ({"enabled": True, "action": "rewrite", "storage_url": "file:///x"}, "https://p.x", False),
        (
            {"enabled": True, "action": "rewrite", "storage_url": "file:///x",
             "public_base_url": "https://f.x"},
            None,
            False,
        ),
        ({"enabled": True, "action": "rewrite", "storage_url": "S3://bucket/big"}, None, False),
        ({"enabled": True, "action": "rewrite", "storage_url": "gs://bucket/big"}, None, False),
        ({"enabled": True, "action": "rewrite", "storage_url": "az://box/big"}, None, False),
        ({"enabled": True, "action": "rewrite"}, None, True),
    ],
)  # fmt: skip
def test_a_rewrite_needs_somewhere_to_serve_links(raw, public_url, refused) -> None:
    """SPEC §9.8 rule 2, the one rule behind the API, the bootstrap and config check."""
    problem = large.link_base_problem(raw, public_url)
    assert (problem is not None) is refused
    if refused:
        assert problem.startswith("required for 'rewrite' on a storage that cannot sign links")
