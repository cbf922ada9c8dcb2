"""Obtain one attachment's bytes in its fetch mode (SPEC §9.1, §9.2, §9.4, §9.6).

The one boundary where ``requests`` and OS exceptions become ``FetchFailed``
(temporary or permanent, in §9.4's classes). Content is streamed into a
``Spool`` chunk by chunk under a total deadline and a size limit; nothing is
read whole into memory here.

* ``http_url``: GET, following at most 5 redirects by hand; every hop's host is
  resolved once, checked against the outbound-address policy and connected to
  at the checked address (``pinned``). The attachment's ``auth`` goes only to
  the URL's own origin; without it, the tenant's ``client_auth`` goes only to
  the origin of ``client_base_url``.
* ``endpoint``: POST ``{"storage_path": ...}`` to the tenant's attachment
  endpoint (or ``GMP_ATTACHMENT_BASE_URL`` with the global sync credentials).
* ``filesystem``: re-checked against the allowed directories at send time (a
  symlink may have changed since enqueue), then copied into the spool.
* ``base64``: decoded from the payload.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from proxy import netpolicy
from proxy.attachments import pinned, safety
from proxy.attachments.budget import CHUNK_BYTES, Spool
from proxy.attachments.errors import PERMANENT, TEMPORARY, FetchFailed
from proxy.store.records import DECRYPTION_FAILED, is_unusable

MAX_REDIRECTS = 5
DEFAULT_ATTACHMENT_PATH = "/mail-proxy/attachments"
MAX_CONNECT_TIMEOUT_S = 10.0
_WHITESPACE = re.compile(rb"\s+")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class FetchConfig:
    timeout_s: float
    max_bytes: int
    allowed_dirs: tuple[str, ...]
    policy: netpolicy.Policy
    resolve: netpolicy.Resolver = netpolicy.system_resolve


@dataclass(frozen=True, slots=True)
class TenantHttp:
    """Where a tenant's ``endpoint`` attachments come from, and whose credentials go where."""

    endpoint_url: str | None  # None: endpoint mode fails permanently
    endpoint_auth: Mapping[str, Any] | None
    client_base_url: str | None
    client_auth: Mapping[str, Any] | None


def tenant_http(
    client_base_url: str | None,
    client_attachment_path: str | None,
    client_auth: Mapping[str, Any] | None,
    *,
    global_url: str | None,
    global_auth: Mapping[str, Any] | None,
) -> TenantHttp:
    """The tenant's own endpoint, else ``GMP_ATTACHMENT_BASE_URL`` with the global credentials."""
    if client_base_url:
        path = client_attachment_path or DEFAULT_ATTACHMENT_PATH
        url = client_base_url.rstrip("/") + ("" if path.startswith("/") else "/") + path
        return TenantHttp(url, client_auth, client_base_url, client_auth)
    return TenantHttp(global_url or None, global_auth, None, None)


def infer_mode(storage_path: str) -> str:
    """SPEC §9.1's inference, first match wins (stored rows normally carry the mode)."""
    if storage_path.startswith("base64:"):
        return "base64"
    if storage_path.lower().startswith(("http://", "https://")):
        return "http_url"
    return "filesystem" if storage_path.startswith("/") else "endpoint"


def fetch(
    attachment: Mapping[str, Any],
    spool: Spool,
    *,
    config: FetchConfig,
    tenant: TenantHttp,
    name: str,
) -> None:
    """Fill ``spool`` with the attachment's content, or raise ``FetchFailed``.

    ``name`` is the cleaned filename the failure text names.
    """
    path = str(attachment["storage_path"])
    mode = attachment.get("fetch_mode") or infer_mode(path)
    auth = attachment.get("auth")
    match mode:
        case "base64":
            _decode(name, path, spool, config.max_bytes)
        case "filesystem":
            _read_file(name, path, spool, config)
        case "http_url":
            _http_get(name, path, spool, config=config, auth=auth, tenant=tenant)
        case "endpoint":
            _endpoint(name, path, spool, config=config, auth=auth, tenant=tenant)
        case _:
            raise FetchFailed(name, f"unknown fetch_mode {mode}", permanent=PERMANENT)
    if spool.size_bytes == 0:
        raise FetchFailed(name, "empty content", permanent=PERMANENT)


# -- base64 and filesystem -------------------------------------------------------


def _decode(name: str, text: str, spool: Spool, max_bytes: int) -> None:
    compact = _WHITESPACE.sub(b"", text.removeprefix("base64:").encode("ascii", "replace"))
    compact = compact.rstrip(b"=")
    try:
        data = base64.b64decode(compact + b"=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise FetchFailed(name, "invalid base64", permanent=PERMANENT) from None
    if len(data) > max_bytes:
        raise FetchFailed(name, _too_large(max_bytes), permanent=PERMANENT)
    for start in range(0, len(data), CHUNK_BYTES):
        spool.write(data[start : start + CHUNK_BYTES])


def _read_file(name: str, path: str, spool: Spool, config: FetchConfig) -> None:
    try:
        resolved = safety.confined_path(path, config.allowed_dirs)
    except safety.PathRefused as refused:
        raise FetchFailed(name, refused.reason, permanent=PERMANENT) from None
    deadline = time.monotonic() + config.timeout_s
    try:
        fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise FetchFailed(name, "file not found", permanent=PERMANENT) from None
    except OSError as exc:
        raise FetchFailed(name, f"cannot read file ({exc.strerror})", permanent=PERMANENT) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > config.max_bytes:
        os.close(fd)
        cause = "not a regular file" if not stat.S_ISREG(info.st_mode) else None
        raise FetchFailed(name, cause or _too_large(config.max_bytes), permanent=PERMANENT)
    with os.fdopen(fd, "rb") as handle:
        try:
            for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
                _take(name, chunk, spool, config.max_bytes, deadline)
        except OSError as exc:
            raise FetchFailed(name, f"read error ({exc.strerror})", permanent=TEMPORARY) from None


# -- HTTP ------------------------------------------------------------------------


def _http_get(
    name: str,
    url: str,
    spool: Spool,
    *,
    config: FetchConfig,
    auth: Mapping[str, Any] | None,
    tenant: TenantHttp,
) -> None:
    deadline = time.monotonic() + config.timeout_s
    first_origin = _origin(url)
    tenant_origin = _origin(tenant.client_base_url) if tenant.client_base_url else None
    for _hop in range(MAX_REDIRECTS + 1):
        address = _checked_address(name, url, config)
        here = _origin(url)
        if auth is not None:
            headers = auth_headers(name, auth) if here == first_origin else {}
        else:
            headers = auth_headers(name, tenant.client_auth) if here == tenant_origin else {}
        _check_deadline(name, deadline)
        with pinned.session_to(address) as session, _translated(name):
            response = session.get(
                url,
                headers=headers,
                stream=True,
                allow_redirects=False,
                timeout=_timeouts(deadline),
            )
            with response:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                _read_body(name, response, spool, config.max_bytes, deadline)
                return
    raise FetchFailed(name, f"more than {MAX_REDIRECTS} redirects", permanent=PERMANENT)


def _endpoint(
    name: str,
    storage_path: str,
    spool: Spool,
    *,
    config: FetchConfig,
    auth: Mapping[str, Any] | None,
    tenant: TenantHttp,
) -> None:
    if not tenant.endpoint_url:
        raise FetchFailed(name, "no attachment endpoint configured", permanent=PERMANENT)
    deadline = time.monotonic() + config.timeout_s
    headers = auth_headers(name, auth if auth is not None else tenant.endpoint_auth)
    _check_deadline(name, deadline)
    with requests.Session() as session, _translated(name):
        session.trust_env = False
        response = session.post(
            tenant.endpoint_url,
            json={"storage_path": storage_path},
            headers=headers,
            stream=True,
            allow_redirects=False,
            timeout=_timeouts(deadline),
        )
        with response:
            _read_body(name, response, spool, config.max_bytes, deadline)


@contextlib.contextmanager
def _translated(name: str) -> Iterator[None]:
    """Turn ``requests`` exceptions into temporary failures (SPEC §9.4)."""
    try:
        yield
    except requests.Timeout:
        raise FetchFailed(name, "timeout", permanent=TEMPORARY) from None
    except requests.RequestException as exc:
        raise FetchFailed(name, _connection_cause(exc), permanent=TEMPORARY) from None


def _check_deadline(name: str, deadline: float) -> None:
    if time.monotonic() >= deadline:
        raise FetchFailed(name, "timeout", permanent=TEMPORARY)


def _read_body(
    name: str, response: requests.Response, spool: Spool, max_bytes: int, deadline: float
) -> None:
    code = response.status_code
    if code == 429 or code >= 500:
        raise FetchFailed(name, f"HTTP {code}", permanent=TEMPORARY)
    if not 200 <= code < 300:
        raise FetchFailed(name, f"HTTP {code}", permanent=PERMANENT)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchFailed(name, _too_large(max_bytes), permanent=PERMANENT)
    for chunk in response.iter_content(CHUNK_BYTES):
        _take(name, chunk, spool, max_bytes, deadline)


def _take(name: str, chunk: bytes, spool: Spool, max_bytes: int, deadline: float) -> None:
    if spool.size_bytes + len(chunk) > max_bytes:
        raise FetchFailed(name, _too_large(max_bytes), permanent=PERMANENT)
    _check_deadline(name, deadline)
    spool.write(chunk)


def _checked_address(name: str, url: str, config: FetchConfig) -> str:
    """Resolve the URL's host once and return an address the policy allows."""
    try:
        parts = urlsplit(url)
        host, scheme = parts.hostname, parts.scheme.lower()
    except ValueError:
        host, scheme = None, ""
    if not host or scheme not in _DEFAULT_PORTS:
        raise FetchFailed(name, "invalid url", permanent=PERMANENT)
    literal = netpolicy.parse_address(host)
    addresses = [host] if literal is not None else list(config.resolve(host))
    if not addresses:
        raise FetchFailed(name, netpolicy.UNRESOLVABLE, permanent=TEMPORARY)
    refusal = netpolicy.host_refusal(host, config.policy, lambda _host: addresses)
    if refusal is not None:
        raise FetchFailed(
            name, f"address refused by the outbound policy ({refusal})", permanent=PERMANENT
        )
    return addresses[0]


def auth_headers(name: str, auth: Mapping[str, Any] | None) -> dict[str, str]:
    """The Authorization header for a ``client_auth``-shaped object (none → no header).

    A secret no configured key decrypts fails the fetch (temporarily: the key may be
    restored) instead of sending the mask in its place (SPEC §16).
    """
    method = (auth or {}).get("method")
    secrets = [(auth or {}).get(key) for key in ("token", "password")]
    if any(is_unusable(value) for value in secrets):
        raise FetchFailed(name, DECRYPTION_FAILED, permanent=TEMPORARY)
    if method == "bearer" and auth and auth.get("token"):
        return {"Authorization": f"Bearer {auth['token']}"}
    if method == "basic" and auth:
        pair = f"{auth.get('user', '')}:{auth.get('password', '')}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    return {}


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return None


def _timeouts(deadline: float) -> tuple[float, float]:
    left = max(0.05, deadline - time.monotonic())
    return min(left, MAX_CONNECT_TIMEOUT_S), left


def _too_large(max_bytes: int) -> str:
    return f"size limit exceeded ({max_bytes / (1 << 20):g} MB)"


def _connection_cause(exc: requests.RequestException) -> str:
    # The exception text may carry the URL (and a token in its query): name the kind only.
    return f"connection error ({type(exc).__name__})"
