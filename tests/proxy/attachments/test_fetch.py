"""Fetch modes against real local servers (SPEC §9.1, §9.2, §9.4, §9.6).

Loopback servers are reachable only with the private-network policy lifted;
without it they are refused, which is tested too. Host names resolve through
an injected resolver, never DNS.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from proxy.attachments.budget import Spool
from proxy.attachments.errors import FetchFailed
from proxy.attachments.fetch import FetchConfig, TenantHttp, fetch, tenant_http
from proxy.netpolicy import Policy
from proxy.store.records import UnusableSecret
from tests.fixtures.files_http import FileServer, start_file_server

OPEN = Policy(allow_private=True)
LOOPBACK_ONLY = Policy.from_settings(False, ["127.0.0.1/32"])
NO_TENANT = TenantHttp(None, None, None, None)


@pytest.fixture
def server() -> Iterator[FileServer]:
    with start_file_server() as running:
        yield running


def config(policy: Policy = OPEN, *, resolve=None, dirs=(), max_bytes=1 << 20, timeout_s=5.0):
    return FetchConfig(
        timeout_s=timeout_s,
        max_bytes=max_bytes,
        allowed_dirs=tuple(dirs),
        policy=policy,
        resolve=resolve or (lambda host: []),
    )


def fetched(attachment, cfg, tenant=NO_TENANT) -> bytes:
    spool = Spool(None)
    try:
        fetch(attachment, spool, config=cfg, tenant=tenant, name="f.bin")
        return spool.read_bytes()
    finally:
        spool.close()


def failure(attachment, cfg, tenant=NO_TENANT) -> FetchFailed:
    with pytest.raises(FetchFailed) as caught:
        fetched(attachment, cfg, tenant)
    return caught.value


def url_item(url: str, **extra) -> dict:
    return {"filename": "f.bin", "storage_path": url, "fetch_mode": "http_url"} | extra


# -- http_url ------------------------------------------------------------------------


def test_http_url_streams_the_file_when_private_networks_are_allowed(server) -> None:
    data = os.urandom(300_000)
    server.files["/a.bin"] = data
    assert fetched(url_item(server.url + "/a.bin"), config()) == data


def test_loopback_is_refused_by_default_and_nothing_is_requested(server) -> None:
    server.files["/a.bin"] = b"data"
    refused = failure(url_item(server.url + "/a.bin"), config(Policy()))
    assert refused.permanent
    assert refused.text.startswith("Attachment fetch failed for f.bin: address refused")
    assert server.seen() == []


@pytest.mark.parametrize("address", ["169.254.169.254", "10.0.0.1", "[::1]", "100.64.0.1"])
def test_metadata_private_and_cgnat_literals_are_refused(address: str) -> None:
    refused = failure(url_item(f"http://{address}/latest/meta-data"), config(Policy()))
    assert refused.permanent
    assert "outbound policy" in refused.cause


def test_a_name_resolving_to_a_private_address_is_refused(server) -> None:
    resolve = {"files.example": ["93.184.216.34", "127.0.0.1"]}.get
    cfg = config(Policy(), resolve=lambda host: resolve(host) or [])
    refused = failure(url_item(f"http://files.example:{server.port}/a.bin"), cfg)
    assert refused.permanent
    assert server.seen() == []


def test_the_connection_goes_to_the_checked_address_without_a_second_lookup(server) -> None:
    server.files["/a.bin"] = b"pinned"
    lookups: list[str] = []

    def resolve(host: str) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]  # "rebind.invalid" exists for nobody else

    cfg = config(LOOPBACK_ONLY, resolve=resolve)
    assert fetched(url_item(f"http://rebind.invalid:{server.port}/a.bin"), cfg) == b"pinned"
    assert lookups == ["rebind.invalid"]
    assert server.seen()[0].headers["host"] == f"rebind.invalid:{server.port}"


def test_every_redirect_hop_is_rechecked(server) -> None:
    server.redirects["/start"] = f"http://127.0.0.2:{server.port}/a.bin"
    refused = failure(url_item(server.url + "/start"), config(LOOPBACK_ONLY))
    assert refused.permanent
    assert "outbound policy" in refused.cause
    assert [r.path for r in server.seen()] == ["/start"]


def test_up_to_five_redirects_are_followed_and_a_sixth_fails(server) -> None:
    server.files["/end"] = b"end"
    for hop in range(5):
        server.redirects[f"/r{hop}"] = f"/r{hop + 1}" if hop < 4 else "/end"
    assert fetched(url_item(server.url + "/r0"), config()) == b"end"
    server.redirects["/r-1"] = "/r0"
    too_many = failure(url_item(server.url + "/r-1"), config())
    assert too_many.permanent
    assert "redirects" in too_many.cause


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(404, True), (403, True), (410, True), (429, False), (500, False), (503, False)],
)
def test_http_status_classes(server, status: int, permanent: bool) -> None:
    server.statuses["/x"] = status
    failed = failure(url_item(server.url + "/x"), config())
    assert failed.permanent is permanent
    assert failed.text == f"Attachment fetch failed for f.bin: HTTP {status}"


def test_the_size_limit_aborts_the_download(server) -> None:
    server.files["/big"] = b"x" * 5000
    failed = failure(url_item(server.url + "/big"), config(max_bytes=4096))
    assert failed.permanent
    assert "size limit exceeded" in failed.cause


def test_empty_content_is_permanent(server) -> None:
    server.files["/empty"] = b""
    failed = failure(url_item(server.url + "/empty"), config())
    assert (failed.permanent, failed.cause) == (True, "empty content")


def test_a_refused_connection_is_temporary() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    failed = failure(url_item(f"http://127.0.0.1:{port}/a"), config())
    assert not failed.permanent
    assert failed.cause.startswith("connection error")


def test_a_server_that_never_answers_times_out_temporarily() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        failed = failure(url_item(f"http://127.0.0.1:{port}/a"), config(timeout_s=0.3))
    finally:
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()
    assert (failed.permanent, failed.cause) == (False, "timeout")


def test_attachment_auth_goes_only_to_its_own_origin(server) -> None:
    with start_file_server() as other:
        other.files["/a.bin"] = b"elsewhere"
        server.redirects["/start"] = other.url + "/a.bin"
        auth = {"method": "bearer", "token": "att-token"}
        assert fetched(url_item(server.url + "/start", auth=auth), config()) == b"elsewhere"
        assert server.seen()[0].headers["authorization"] == "Bearer att-token"
        assert "authorization" not in other.seen()[0].headers


def test_tenant_client_auth_goes_only_to_the_client_base_url_origin(server) -> None:
    with start_file_server() as other:
        server.files["/a.bin"] = b"tenant file"
        other.files["/b.bin"] = b"foreign file"
        tenant = tenant_http(
            server.url,
            None,
            {"method": "bearer", "token": "tenant-t"},
            global_url=None,
            global_auth=None,
        )
        assert fetched(url_item(server.url + "/a.bin"), config(), tenant) == b"tenant file"
        assert fetched(url_item(other.url + "/b.bin"), config(), tenant) == b"foreign file"
        assert server.seen()[0].headers["authorization"] == "Bearer tenant-t"
        assert "authorization" not in other.seen()[0].headers


# -- endpoint ----------------------------------------------------------------------------


def endpoint_item(path: str, **extra) -> dict:
    return {"filename": "f.bin", "storage_path": path, "fetch_mode": "endpoint"} | extra


def test_endpoint_posts_the_storage_path_with_bearer_auth(server) -> None:
    server.files["docs/42"] = b"from the tenant"
    server.require_auth = "Bearer tenant-token"
    tenant = tenant_http(
        server.url,
        None,
        {"method": "bearer", "token": "tenant-token"},
        global_url=None,
        global_auth=None,
    )
    assert fetched(endpoint_item("docs/42"), config(), tenant) == b"from the tenant"
    (request,) = server.seen()
    assert (request.method, request.path) == ("POST", "/mail-proxy/attachments")
    assert request.body == b'{"storage_path": "docs/42"}'


def test_an_undecryptable_tenant_secret_fails_the_fetch_and_sends_nothing(server) -> None:
    server.files["docs/42"] = b"from the tenant"
    locked = UnusableSecret("ENC:sealed-under-a-lost-key")
    for auth in (
        {"method": "bearer", "token": locked},
        {"method": "basic", "user": "u", "password": locked},
    ):
        tenant = tenant_http(server.url, None, auth, global_url=None, global_auth=None)
        failed = failure(endpoint_item("docs/42"), config(), tenant)
        assert failed.cause == "credential decryption failed"
        assert not failed.permanent  # the key may come back: retried with backoff
    assert server.seen() == []


def test_endpoint_with_basic_auth_and_a_custom_path(server) -> None:
    server.files["k"] = b"basic"
    server.require_auth = "Basic " + base64.b64encode(b"u:p").decode()
    tenant = tenant_http(
        server.url + "/",
        "files",
        {"method": "basic", "user": "u", "password": "p"},
        global_url=None,
        global_auth=None,
    )
    assert fetched(endpoint_item("k"), config(), tenant) == b"basic"
    assert server.seen()[0].path == "/files"


def test_the_attachment_auth_overrides_the_tenant_auth_for_the_endpoint(server) -> None:
    server.files["k"] = b"own"
    server.require_auth = "Bearer own-token"
    tenant = tenant_http(
        server.url,
        None,
        {"method": "bearer", "token": "tenant-token"},
        global_url=None,
        global_auth=None,
    )
    item = endpoint_item("k", auth={"method": "bearer", "token": "own-token"})
    assert fetched(item, config(), tenant) == b"own"


def test_the_global_attachment_url_serves_tenants_without_a_base_url(server) -> None:
    server.files["k"] = b"global"
    tenant = tenant_http(
        None,
        None,
        None,
        global_url=server.url + "/att",
        global_auth={"method": "bearer", "token": "g"},
    )
    assert fetched(endpoint_item("k"), config(), tenant) == b"global"
    assert server.seen()[0].headers["authorization"] == "Bearer g"


def test_endpoint_without_any_target_fails_permanently() -> None:
    failed = failure(endpoint_item("k"), config())
    assert failed.permanent
    assert failed.cause == "no attachment endpoint configured"


# -- filesystem and base64 --------------------------------------------------------------


def test_filesystem_reads_a_confined_file(tmp_path) -> None:
    (tmp_path / "a.bin").write_bytes(b"on disk")
    item = {
        "filename": "a.bin",
        "storage_path": str(tmp_path / "a.bin"),
        "fetch_mode": "filesystem",
    }
    assert fetched(item, config(dirs=[tmp_path])) == b"on disk"


def test_filesystem_refusals_are_permanent(tmp_path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    os.symlink(outside / "secret", allowed / "link")  # swapped in after enqueue
    (allowed / "dir").mkdir()
    os.mkfifo(allowed / "fifo")
    cfg = config(dirs=[allowed])
    causes = {
        name: failure(
            {"filename": "f", "storage_path": str(allowed / name), "fetch_mode": "filesystem"}, cfg
        )
        for name in ("link", "missing", "dir", "fifo")
    }
    assert all(f.permanent for f in causes.values())
    assert causes["link"].cause == "path outside allowed directories"
    assert causes["missing"].cause == "file not found"
    assert causes["dir"].cause == "not a regular file"
    assert causes["fifo"].cause == "not a regular file"
    disabled = failure(
        {"filename": "f", "storage_path": "/etc/passwd", "fetch_mode": "filesystem"}, config()
    )
    assert disabled.cause == "filesystem attachments are disabled"


def test_base64_is_decoded_and_invalid_base64_is_permanent() -> None:
    item = {"filename": "f", "storage_path": "aGVsbG8", "fetch_mode": "base64"}
    assert fetched(item, config()) == b"hello"
    assert fetched({"filename": "f", "storage_path": "base64:aGVs bG8="}, config()) == b"hello"
    bad = failure({"filename": "f", "storage_path": "a$$$", "fetch_mode": "base64"}, config())
    assert (bad.permanent, bad.cause) == (True, "invalid base64")


def test_the_mode_is_inferred_when_absent(server, tmp_path) -> None:
    server.files["/a"] = b"web"
    (tmp_path / "f").write_bytes(b"disk")
    cfg = config(dirs=[tmp_path])
    assert fetched({"filename": "f", "storage_path": server.url + "/a"}, cfg) == b"web"
    assert fetched({"filename": "f", "storage_path": str(tmp_path / "f")}, cfg) == b"disk"
