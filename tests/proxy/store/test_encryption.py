"""Secrets at rest (SPEC §16), checked by reading the SQLite file itself.

Every test writes real secrets through the store (or the running proxy), then
SELECTs every row of every table with the ``sqlite3`` module and looks for them.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import sqlite3
from collections.abc import Iterator

import pytest

from proxy.config import ConfigError
from proxy.crypto import Cipher, DecryptionError
from proxy.server import ProxyServer
from proxy.store import Database, open_store
from proxy.store.large_files import LargeFileRecord
from proxy.store.records import MASK, UnusableSecret, is_unusable, map_payload
from proxy.store.rekey import reencrypt_secrets
from tests.fixtures.proxy import fast_settings, message, running_proxy
from tests.fixtures.smtp import SINK_PASSWORD, SINK_USER, start_sink
from tests.fixtures.stores import accepted
from tests.fixtures.waiting import wait_until

NOW = 1_767_225_600
KEY_A, KEY_B, KEY_C = bytes(range(32)), bytes(range(64, 96)), bytes(range(128, 160))
TEXT_A, TEXT_B, TEXT_C = (base64.b64encode(k).decode() for k in (KEY_A, KEY_B, KEY_C))
ENC_VALUE = re.compile(r"ENC:[A-Za-z0-9+/=]+")

SMTP_PW = "smtp-pw-7f3a9c"
IMAP_PW = "imap-pw-51be02"
TOKEN = "sync-token-c0ffee11"
BASIC_PW = "basic-pw-9911aa"
S3_KEY = "AKIAEXAMPLE4242"
S3_SECRET = "s3-secret-d00dfeed"
NESTED = "nested-opt-abad1dea"
LISTED = "listed-opt-feedface"
BOUNCE_PW = "bounce-pw-8badf00d"
ATT_TOKEN = "att-token-deadbeef"
ATT_PW = "att-pw-cafebabe"
FILE_SECRET = "file-secret-0ff1ce"  # a large-file record's copy of the storage options
SECRETS = (SMTP_PW, IMAP_PW, TOKEN, BASIC_PW, S3_KEY, S3_SECRET, NESTED, LISTED)
SECRETS += (BOUNCE_PW, ATT_TOKEN, ATT_PW, FILE_SECRET)


def _raw_rows(path: str, sql: str) -> list[tuple]:
    """Rows read with the bare driver, not through the product's store."""
    if path.startswith("postgresql://"):
        import psycopg2

        with contextlib.closing(psycopg2.connect(path)) as conn, conn.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def stored_rows(path: str) -> str:
    """Every row of every table, as text: what anyone with the database can read."""
    listing = (
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        if path.startswith("postgresql://")
        else "SELECT name FROM sqlite_master WHERE type='table'"
    )
    tables = [name for (name,) in _raw_rows(path, listing)]
    rows = (_raw_rows(path, f'SELECT * FROM "{table}"') for table in tables)  # noqa: S608
    return "\n".join(repr(row) for table_rows in rows for row in table_rows)


def assert_no_plaintext(path: str) -> str:
    text = stored_rows(path)
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"stored in plaintext: {leaked}"
    return text


def stored_value(path: str, sql: str) -> str:
    return _raw_rows(path, sql)[0][0]


@contextlib.contextmanager
def opened(path: str, cipher: Cipher | None = None) -> Iterator[Database]:
    store = open_store(path, cipher=cipher)
    try:
        yield store
    finally:
        store.close()


def attachments(token: str = ATT_TOKEN, password: str = ATT_PW) -> list[dict]:
    return [
        {"filename": "a.pdf", "storage_path": "doc-1", "fetch_mode": "endpoint",
         "auth": {"method": "bearer", "token": token}},
        {"filename": "b.pdf", "storage_path": "doc-2", "fetch_mode": "endpoint",
         "auth": {"method": "basic", "user": "fetcher", "password": password}},
    ]  # fmt: skip


def write_secrets(store: Database) -> None:
    store.tenants.upsert(
        "acme",
        {
            "client_auth": {"method": "bearer", "token": TOKEN},
            "large_file_config": {
                "enabled": True,
                "max_size_mb": 5.0,
                "storage_url": "s3://bucket/path",
                "storage_options": {
                    "key": S3_KEY,
                    "secret": S3_SECRET,
                    "client_kwargs": {"region_name": NESTED, "retries": 3},
                    "list": [LISTED],
                },
            },
        },
        NOW,
    )
    store.tenants.upsert(
        "basic", {"client_auth": {"method": "basic", "user": "u", "password": BASIC_PW}}, NOW
    )
    store.accounts.upsert(
        "acme",
        "main",
        {"host": "127.0.0.1", "port": 2525, "user": "mailer", "password": SMTP_PW}
        | {"imap_password": IMAP_PW},
        NOW,
    )
    store.settings.write_typed(
        {"bounce_imap_host": "imap.example", "bounce_imap_password": BOUNCE_PW}
    )
    store.messages.enqueue([accepted("m1", attachments=attachments())], NOW)
    store.large_files.add(
        LargeFileRecord(
            file_id="f-1",
            tenant_id="acme",
            message_pk=store.messages.get("acme", "m1").pk,
            content_md5="0" * 32,
            filename="big.bin",
            content_type="application/octet-stream",
            size_bytes=1,
            storage_url="s3://bucket/path",
            storage_options={"secret": FILE_SECRET, "anon": False},
            created_ts=NOW,
            expires_ts=NOW + 86400,
        )
    )


def assert_reads_plaintext(store: Database) -> None:
    account = store.accounts.get("acme", "main")
    assert (account.password, account.imap_password) == (SMTP_PW, IMAP_PW)
    assert not account.password_unusable
    tenant = store.tenants.get("acme")
    assert tenant.client_auth == {"method": "bearer", "token": TOKEN}
    assert tenant.large_file_config["storage_options"] == {
        "key": S3_KEY,
        "secret": S3_SECRET,
        "client_kwargs": {"region_name": NESTED, "retries": 3},
        "list": [LISTED],
    }
    assert tenant.large_file_config["storage_url"] == "s3://bucket/path"
    assert store.tenants.get("basic").client_auth["password"] == BASIC_PW
    assert store.settings.typed(["bounce_imap_password"])["bounce_imap_password"] == BOUNCE_PW
    assert store.settings.get("bounce_imap_password") == BOUNCE_PW
    assert store.large_files.get("f-1").storage_options == {"secret": FILE_SECRET, "anon": False}


def decrypted_payload(store: Database, message_id: str = "m1") -> dict:
    row = store.messages.get("acme", message_id)
    return map_payload(row.payload, store.codec.opener("test"))


def test_secrets_are_encrypted_on_write_and_read_back(db_url) -> None:
    path = db_url
    with opened(path, Cipher(KEY_A)) as store:
        write_secrets(store)
        text = assert_no_plaintext(path)
        assert_reads_plaintext(store)
        tenant = store.tenants.get("acme")
        (claimed,) = store.messages.claim_due(tenant, "main", me="me", now=NOW, lease_s=30, limit=5)
        sending = store.messages.begin_attempt(claimed.pk, tenant, me="me", now=NOW, lease_s=30)
    assert sending.payload["attachments"] == attachments()
    values = ENC_VALUE.findall(text)
    assert len(values) == len(SECRETS)
    assert {Cipher(KEY_A).decrypt(v) for v in values} == set(SECRETS)


def test_rewriting_the_same_values_keeps_the_stored_ciphertext(db_url) -> None:
    path = db_url
    with opened(path, Cipher(KEY_A)) as store:
        write_secrets(store)
        before = stored_rows(path)
        assert not store.accounts.upsert(
            "acme",
            "main",
            {"host": "127.0.0.1", "port": 2525, "user": "mailer", "password": SMTP_PW}
            | {"imap_password": IMAP_PW},
            NOW + 60,
        )
        store.tenants.upsert(
            "acme", {"client_auth": {"method": "bearer", "token": TOKEN}}, NOW + 60
        )
        assert (
            store.tenants.update(
                "basic", {"client_auth": store.tenants.get("basic").client_auth}, NOW + 60
            )
            == set()
        )
        assert stored_rows(path) == before  # no churn: bootstrap re-runs stay no-ops


def test_masked_secrets_keep_the_stored_values(db_url) -> None:
    path = db_url
    with opened(path, Cipher(KEY_A)) as store:
        write_secrets(store)
        store.accounts.upsert(
            "acme",
            "main",
            {"host": "10.0.0.1", "port": 25, "password": MASK, "imap_password": MASK},
            NOW,
        )
        store.tenants.update(
            "acme",
            {
                "client_auth": {"method": "bearer", "token": MASK},
                "large_file_config": store.tenants.get("acme").large_file_config
                | {"storage_options": {"key": MASK, "secret": "new-s3-secret-0451"}},
            },
            NOW,
        )
        account, tenant = store.accounts.get("acme", "main"), store.tenants.get("acme")
        assert (account.host, account.password, account.imap_password) == (
            "10.0.0.1",
            SMTP_PW,
            IMAP_PW,
        )
        assert tenant.client_auth["token"] == TOKEN
        assert tenant.large_file_config["storage_options"] == {
            "key": S3_KEY,
            "secret": "new-s3-secret-0451",
        }
        assert "new-s3-secret-0451" not in stored_rows(path)


def test_rotation_reencrypts_every_secret_under_the_new_key(db_url, caplog) -> None:
    path = db_url
    with opened(path, Cipher(KEY_A)) as store:
        write_secrets(store)
    with opened(path, Cipher(KEY_B, [KEY_A])) as store:
        assert_reads_plaintext(store)  # before the pass: the previous key still opens them
        with caplog.at_level(logging.INFO, logger="proxy.store.rekey"):
            assert reencrypt_secrets(store) == 6  # 2 tenants, 1 account, 1 setting, 1 message ...
        assert reencrypt_secrets(store) == 0  # ... and idempotent
        assert (
            "1 accounts, 2 tenants, 1 instance settings, 1 messages, 1 large files" in caplog.text
        )
    text = assert_no_plaintext(path)
    values = ENC_VALUE.findall(text)
    assert len(values) == len(SECRETS)
    assert {Cipher(KEY_B).decrypt(v) for v in values} == set(SECRETS)  # B alone opens them
    for value in values:
        with pytest.raises(DecryptionError):
            Cipher(KEY_A).decrypt(value)
    with opened(path, Cipher(KEY_B)) as store:
        assert_reads_plaintext(store)
        assert decrypted_payload(store)["attachments"] == attachments()


def test_plaintext_written_without_a_key_is_encrypted_at_the_next_start(db_url, caplog) -> None:
    path = db_url
    with opened(path) as store:
        write_secrets(store)
        with caplog.at_level(logging.WARNING, logger="proxy.store.rekey"):
            assert reencrypt_secrets(store) == 0
        assert "no encryption key configured" in caplog.text
        assert_reads_plaintext(store)
    assert all(secret in stored_rows(path) for secret in SECRETS)  # §16 rule 6: plaintext
    with opened(path, Cipher(KEY_A)) as store:
        assert reencrypt_secrets(store) == 6
        assert_reads_plaintext(store)
        assert decrypted_payload(store)["attachments"] == attachments()
    assert len(ENC_VALUE.findall(assert_no_plaintext(path))) == len(SECRETS)


def test_plaintext_is_encrypted_at_the_next_write(db_url) -> None:
    path = db_url
    with opened(path) as store:
        write_secrets(store)
    with opened(path, Cipher(KEY_A)) as store:
        store.accounts.upsert(
            "acme",
            "main",
            {"host": "127.0.0.1", "port": 2525, "user": "mailer", "password": SMTP_PW}
            | {"imap_password": IMAP_PW},
            NOW + 60,
        )
        store.tenants.update("acme", {"name": "ACME"}, NOW + 60)
        store.tenants.upsert("basic", {}, NOW + 60)
        store.settings.write_typed({"bounce_imap_password": BOUNCE_PW})
        assert store.accounts.get("acme", "main").updated_ts == NOW  # nothing else changed
        text = stored_rows(path)
        for secret in (SMTP_PW, IMAP_PW, TOKEN, BASIC_PW, S3_KEY, S3_SECRET, NESTED, BOUNCE_PW):
            assert secret not in text
        assert_reads_plaintext(store)


def test_a_value_no_key_opens_is_unusable_and_never_returned_raw(db_url, caplog) -> None:
    path = db_url
    with opened(path, Cipher(KEY_A)) as store:
        write_secrets(store)
    password_sql = "SELECT password FROM account WHERE id = 'main'"
    auth_sql = "SELECT client_auth FROM tenant WHERE id = 'acme'"
    before = (stored_value(path, password_sql), stored_value(path, auth_sql))
    with opened(path, Cipher(KEY_C)) as store, caplog.at_level(logging.ERROR):
        account = store.accounts.get("acme", "main")
        store.accounts.get("acme", "main")  # read again: logged once
        tenant = store.tenants.get("acme")
        bounce = store.settings.typed(["bounce_imap_password"])["bounce_imap_password"]
        payload = decrypted_payload(store)
        assert account.password_unusable
        for value in (
            account.password,
            account.imap_password,
            tenant.client_auth["token"],
            tenant.large_file_config["storage_options"]["client_kwargs"]["region_name"],
            bounce,
            payload["attachments"][0]["auth"]["token"],
        ):
            assert is_unusable(value)
            assert value == MASK  # what it shows, wherever it goes
            assert not ENC_VALUE.search(str(value))
        assert reencrypt_secrets(store) == 0  # left as they are: they cannot be re-encrypted
        store.accounts.upsert("acme", "main", {"host": "h", "port": 25, "password": MASK}, NOW)
        store.tenants.update("acme", {"name": "renamed"}, NOW)
        assert (stored_value(path, password_sql), stored_value(path, auth_sql)) == before
        store.accounts.upsert("acme", "main", {"host": "h", "port": 25, "password": "fresh"}, NOW)
        assert store.accounts.get("acme", "main").password == "fresh"
    errors = [r for r in caplog.records if "credential decryption failed" in r.getMessage()]
    assert any(getattr(r, "account_id", None) == "main" for r in errors)
    assert len([r for r in errors if "stored password of account acme/main" in r.getMessage()]) == 1
    with opened(path, Cipher(KEY_A)) as store:  # the right key still opens what was kept
        tenant = store.tenants.get("acme")
        assert (tenant.name, tenant.client_auth["token"]) == ("renamed", TOKEN)
        assert store.accounts.get("acme", "main").password_unusable  # "fresh" was sealed with C


def test_a_store_without_a_key_cannot_open_encrypted_values(db_url) -> None:
    path = db_url
    with opened(path, Cipher(KEY_A)) as store:
        write_secrets(store)
    with opened(path) as store:
        assert store.accounts.get("acme", "main").password_unusable
        assert isinstance(store.tenants.get("basic").client_auth["password"], UnusableSecret)


def test_a_bad_key_stops_start_up(tmp_path) -> None:
    short = base64.b64encode(b"k" * 16).decode()
    with pytest.raises(ConfigError, match="exactly 32 bytes"):
        ProxyServer(fast_settings(tmp_path, encryption_key=short)).start()
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY_B)
    conflicting = fast_settings(tmp_path, encryption_key=TEXT_A, encryption_key_file=str(key_file))
    with pytest.raises(ConfigError, match="different keys"):
        ProxyServer(conflicting).start()


# -- a running proxy against a real AUTH SMTP server ---------------------------------


def _account(api, sink) -> None:
    api.add_tenant("acme")
    api.add_account(
        "acme", "main", host=sink.host, port=sink.port, use_tls=False,
        user=SINK_USER, password=SINK_PASSWORD,
    )  # fmt: skip


def test_sending_authenticates_after_rotation(tmp_path) -> None:
    db_path = str(tmp_path / "proxy.db")
    with start_sink(auth=(SINK_USER, SINK_PASSWORD), auth_require_tls=False) as sink:
        with running_proxy(fast_settings(tmp_path, encryption_key=TEXT_A)) as (_server, api):
            _account(api, sink)
            api.add_messages(message("before"))
            api.wait_status("before", "sent")
        assert SINK_PASSWORD not in stored_rows(db_path)
        rotated = fast_settings(tmp_path, encryption_key=TEXT_B, encryption_previous_keys=(TEXT_A,))
        with running_proxy(rotated) as (_server, api):
            api.add_messages(message("rotated"))
            api.wait_status("rotated", "sent")
        (value,) = ENC_VALUE.findall(stored_rows(db_path))
        assert Cipher(KEY_B).decrypt(value) == SINK_PASSWORD
        with running_proxy(fast_settings(tmp_path, encryption_key=TEXT_B)) as (_server, api):
            api.add_messages(message("after"))
            api.wait_status("after", "sent")
        assert [m.login for m in sink.messages] == [SINK_USER] * 3


def test_an_undecryptable_password_is_a_temporary_failure(tmp_path) -> None:
    with start_sink(auth=(SINK_USER, SINK_PASSWORD), auth_require_tls=False) as sink:
        with running_proxy(fast_settings(tmp_path, encryption_key=TEXT_A)) as (_server, api):
            _account(api, sink)
        with running_proxy(fast_settings(tmp_path, encryption_key=TEXT_C)) as (_server, api):
            api.add_messages(message("locked"))
            api.wait_status("locked", "deferred")
            events = api.get("/messages/locked/events", params={"tenant_id": "acme"}).json()
            descriptions = [e.get("description") for e in events["events"]]
            assert "credential decryption failed" in descriptions
            (listed,) = api.get("/accounts", params={"tenant_id": "acme"}).json()["accounts"]
            assert listed["password_set"] is True
            assert "password" not in listed
        assert sink.connections_opened == 0  # never tried with a wrong password


def test_an_undecryptable_sync_token_fails_the_call_instead_of_sending_the_mask(
    tmp_path, tenant_app
) -> None:
    auth = {"method": "bearer", "token": TOKEN}
    with running_proxy(fast_settings(tmp_path, encryption_key=TEXT_A)) as (_server, api):
        key = api.add_tenant("acme", client_base_url=tenant_app.url, client_auth=auth)
        tenant_app.wait_for_calls(1)
    calls = len(tenant_app.calls)
    with running_proxy(fast_settings(tmp_path, encryption_key=TEXT_C)) as (_server, api):
        assert api.as_token(key).post("/commands/run-now").status_code == 200  # forces a call

        def failed() -> dict | None:
            (status,) = api.get("/tenants/sync-status").json()["tenants"]
            return status if status.get("last_error") else None

        status = wait_until(failed, what="the sync failure recorded")
        assert status["last_error"].startswith("credential decryption failed")
        assert len(tenant_app.calls) == calls  # nothing was sent with the mask
