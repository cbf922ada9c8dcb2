"""``GET /download/{token}[/{filename}]`` (SPEC §9.8 rule 3): public, signed, expiring, streamed."""

from __future__ import annotations

import dataclasses
import os
import uuid

import pytest
from falcon import testing

from proxy.api.downloads import GONE, NOT_FOUND
from proxy.app import create_app
from proxy.attachments import links
from proxy.store.large_files import DAY_S, LargeFileRecord
from tests.fixtures.engine import FakeEngine
from tests.fixtures.stores import add_tenant_and_account, make_settings

NOW = 1_767_225_600
SECRET = "download-secret"


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(store, clock) -> testing.TestClient:
    add_tenant_and_account(store)
    settings = make_settings(api_token="admin-token", download_secret=SECRET)
    return testing.TestClient(create_app(settings, store, FakeEngine(), clock=clock))


def stored(store, tmp_path, *, data=b"file bytes", url=None, **fields) -> LargeFileRecord:
    file_id = str(uuid.uuid4())
    path = tmp_path / file_id / "report.pdf"
    path.parent.mkdir()
    path.write_bytes(data)
    record = LargeFileRecord(
        file_id=file_id,
        tenant_id="acme",
        message_pk="pk-1",
        content_md5="0" * 32,
        filename="rapport été.pdf",
        content_type="application/pdf",
        size_bytes=len(data),
        storage_url=url or f"file://{path}",
        storage_options=None,
        created_ts=NOW,
        expires_ts=NOW + DAY_S,
    )
    record = dataclasses.replace(record, **fields)
    store.large_files.add(record)
    return record


def link(record: LargeFileRecord, *, secret: str = SECRET, expires_ts: int | None = None) -> str:
    expires = record.expires_ts if expires_ts is None else expires_ts
    return "/download/" + links.token(secret.encode(), record.file_id, record.filename, expires)


def test_a_valid_link_streams_the_file_with_its_name_and_type(client, store, tmp_path) -> None:
    data = os.urandom(200_000)
    record = stored(store, tmp_path, data=data)
    response = client.simulate_get(link(record))  # no token header: the route is public
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == (
        "attachment; filename*=UTF-8''rapport%20%C3%A9t%C3%A9.pdf"
    )
    assert response.headers["content-length"] == str(len(data))
    after = store.large_files.get(record.file_id)
    assert (after.first_download_ts, after.download_count) == (NOW, 1)


def test_the_filename_segment_is_cosmetic_and_downloads_are_counted(
    client, store, tmp_path, clock
) -> None:
    record = stored(store, tmp_path)
    assert client.simulate_get(link(record) + "/anything.pdf").status_code == 200
    clock.now += 50
    assert client.simulate_get(link(record) + "/report.pdf").status_code == 200
    after = store.large_files.get(record.file_id)
    assert (after.first_download_ts, after.download_count) == (NOW, 2)


# Storage is a protocol fsspec does not know: touching it would be a 500, not a 404/410.
UNTOUCHABLE = "nostorage://bucket/never/opened"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda url: url[:-1] + ("0" if url[-1] != "0" else "1"),  # signature changed
        lambda url: url.replace("-", "_", 1),  # malformed
        lambda url: url + "x",
        lambda url: "/download/" + str(uuid.uuid4()) + url[len("/download/") + 36 :],  # unknown
        lambda url: "/download/nothing",
    ],
)
def test_bad_or_tampered_tokens_are_404_without_touching_storage(
    client, store, tmp_path, mangle
) -> None:
    record = stored(store, tmp_path, url=UNTOUCHABLE)
    response = client.simulate_get(mangle(link(record)))
    assert response.status_code == 404
    assert response.json == {"ok": False, "error": NOT_FOUND, "detail": NOT_FOUND}
    assert store.large_files.get(record.file_id).download_count == 0


def test_a_link_signed_with_another_secret_is_404(client, store, tmp_path) -> None:
    record = stored(store, tmp_path, url=UNTOUCHABLE)
    assert client.simulate_get(link(record, secret="other")).status_code == 404


def test_a_longer_expiry_in_the_token_breaks_the_signature(client, store, tmp_path) -> None:
    record = stored(store, tmp_path, url=UNTOUCHABLE)
    url = link(record)
    forged = url.replace(f"-{record.expires_ts}-", f"-{record.expires_ts + DAY_S}-")
    assert client.simulate_get(forged).status_code == 404


def test_an_expired_link_is_410_without_touching_storage(client, store, tmp_path, clock) -> None:
    record = stored(store, tmp_path, url=UNTOUCHABLE)
    clock.now = record.expires_ts
    response = client.simulate_get(link(record))
    assert response.status_code == 410
    assert response.json["error"] == GONE


def test_the_lifespan_after_the_first_download_ends_the_link(
    client, store, tmp_path, clock
) -> None:
    record = stored(store, tmp_path, lifespan_after_download_days=1, expires_ts=NOW + 30 * DAY_S)
    url = link(record)
    assert client.simulate_get(url).status_code == 200
    clock.now += DAY_S - 1
    assert client.simulate_get(url).status_code == 200
    clock.now += 1
    assert client.simulate_get(url).status_code == 410


def test_a_deleted_file_or_a_deleted_tenant_is_410(client, store, tmp_path) -> None:
    deleted = stored(store, tmp_path, url=UNTOUCHABLE)
    store.large_files.mark_deleted(deleted.file_id, NOW)
    assert client.simulate_get(link(deleted)).status_code == 410
    orphan = stored(store, tmp_path, url=UNTOUCHABLE)
    store.tenants.delete("acme")
    assert client.simulate_get(link(orphan)).status_code == 410


def test_a_file_missing_from_storage_is_410(client, store, tmp_path) -> None:
    record = stored(store, tmp_path, url=f"file://{tmp_path}/gone/report.pdf")
    assert client.simulate_get(link(record)).status_code == 410
    assert store.large_files.get(record.file_id).download_count == 0


def test_the_route_is_public_in_the_api_description(client) -> None:
    paths = client.simulate_get("/openapi.json").json["paths"]
    for path in ("/download/{token}", "/download/{token}/{filename}"):
        assert paths[path]["get"]["x-access-level"] == "public"
        assert set(paths[path]["get"]["responses"]) >= {"200", "404", "410"}
