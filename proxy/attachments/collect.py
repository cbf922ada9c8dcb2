"""Per-process attachment state and the fetching of one message's attachments (SPEC §9.1-9.3).

``Runtime`` holds what all sends share: the tiered cache, the memory budget and
the fetch slots (``GMP_ATTACHMENT_CONCURRENCY``). There is one per running
proxy, found through its store (``runtime_for``), so in-process test proxies
never share a budget. ``fetch_all`` fetches a message's attachments in parallel
threads, through the tenant's cache, into spools.

Large buffers and glibc: a send holds buffers of tens of MB (the built message,
the SMTP client's copies) in whichever account thread runs it. glibc raises its
mmap threshold to the size of every mmapped block freed, so later buffers of
that size come from the thread's own heap arena and stay there after they are
freed: N accounts sending large attachments would keep N times the memory.
``Runtime`` fixes the threshold (``mallopt(M_MMAP_THRESHOLD, 1 MB)``) once per
process, so large buffers are always mmapped and returned to the system when
freed; the memory budget then bounds what is really held.
"""

from __future__ import annotations

import ctypes
import functools
import mimetypes
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.attachments import safety
from proxy.attachments.budget import MemoryBudget, Spool
from proxy.attachments.cache import CacheConfig, TieredCache, cache_key
from proxy.attachments.errors import PERMANENT, AttachmentFailure, FetchFailed, Interrupted, worst
from proxy.attachments.fetch import FetchConfig, TenantHttp, fetch, infer_mode, tenant_http
from proxy.attachments.links import download_secret
from proxy.netpolicy import Policy
from proxy.store.records import TenantRecord

MB, KB = 1 << 20, 1 << 10
SLOT_WAIT_S = 0.25
SHUTTING_DOWN = "shutting down"
DEFAULT_MIME_TYPE = "application/octet-stream"
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD_BYTES = 1 << 20


@dataclass(slots=True)
class Fetched:
    name: str  # cleaned
    mime_type: str
    spool: Spool


class Runtime:
    """Per-process attachment state: the cache, the memory budget and the fetch slots."""

    def __init__(self, settings: Any, store: Any, metrics: Any) -> None:
        self.settings = settings
        self.store = store
        self.budget = MemoryBudget(settings.attachment_memory_budget_mb * MB)
        counter = getattr(metrics, "attachment_cache", None)
        self.cache = TieredCache(
            CacheConfig(
                memory_max_bytes=settings.cache_memory_max_mb * MB,
                memory_ttl_s=settings.cache_memory_ttl_seconds,
                threshold_bytes=settings.cache_disk_threshold_kb * KB,
                disk_dir=settings.cache_disk_dir,
                disk_max_bytes=settings.cache_disk_max_mb * MB,
                disk_ttl_s=settings.cache_disk_ttl_seconds,
            ),
            on_lookup=(lambda t, r: counter.labels(t, r).inc()) if counter else lambda t, r: None,
        )
        self.fetch_config = FetchConfig(
            timeout_s=settings.attachment_timeout,
            max_bytes=settings.attachment_max_mb * MB,
            allowed_dirs=tuple(settings.attachment_allowed_dirs),
            policy=Policy.from_settings(
                settings.http_allow_private_networks, settings.http_allowed_networks
            ),
        )
        self.slots = threading.BoundedSemaphore(max(1, settings.attachment_concurrency))
        self._secret: bytes | None = None
        _mmap_large_buffers()

    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = download_secret(
                self.settings.download_secret, self.store.settings.set_default
            )
        return self._secret


@functools.cache
def _mmap_large_buffers() -> bool:
    """Fix glibc's mmap threshold (see the module docstring); False where there is no glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


_RUNTIMES: weakref.WeakKeyDictionary[Any, Runtime] = weakref.WeakKeyDictionary()
_RUNTIMES_LOCK = threading.Lock()


def runtime_for(ctx: Any) -> Runtime:
    """The process's runtime for this store (one per running proxy, made on first use)."""
    with _RUNTIMES_LOCK:
        runtime = _RUNTIMES.get(ctx.store)
        if runtime is None:
            runtime = _RUNTIMES[ctx.store] = Runtime(ctx.settings, ctx.store, ctx.metrics)
        return runtime


def http_of(tenant: TenantRecord | None, settings: Any) -> TenantHttp:
    global_auth = None
    if settings.client_sync_token:
        global_auth = {"method": "bearer", "token": settings.client_sync_token}
    elif settings.client_sync_user:
        global_auth = {
            "method": "basic",
            "user": settings.client_sync_user,
            "password": settings.client_sync_password or "",
        }
    return tenant_http(
        tenant.client_base_url if tenant else None,
        tenant.client_attachment_path if tenant else None,
        tenant.client_auth if tenant else None,
        global_url=settings.attachment_base_url,
        global_auth=global_auth,
    )


def fetch_all(
    runtime: Runtime,
    items: Sequence[Mapping[str, Any]],
    tenant_id: str,
    http: TenantHttp,
    cancelled: Callable[[], bool],
) -> list[Fetched]:
    """Every attachment, fetched in parallel threads (the slots bound the concurrency)."""
    results: list[Fetched | BaseException | None] = [None] * len(items)

    def run(index: int) -> None:
        try:
            results[index] = _fetch_one(runtime, items[index], tenant_id, http, cancelled)
        except BaseException as exc:  # noqa: BLE001 (handed to the caller's thread below)
            results[index] = exc

    threads = [
        threading.Thread(target=run, args=(i,), name=f"attachment-fetch-{i}", daemon=True)
        for i in range(1, len(items))
    ]
    for thread in threads:
        thread.start()
    run(0)  # the caller's thread fetches one itself
    for thread in threads:
        thread.join()
    fetched = [r for r in results if isinstance(r, Fetched)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        for item in fetched:
            item.spool.close()
        failures = [e for e in errors if isinstance(e, AttachmentFailure)]
        if len(failures) < len(errors):
            raise next(e for e in errors if not isinstance(e, AttachmentFailure))
        raise worst(failures)
    return fetched


def _fetch_one(
    runtime: Runtime,
    item: Mapping[str, Any],
    tenant_id: str,
    http: TenantHttp,
    cancelled: Callable[[], bool],
) -> Fetched:
    raw_name = str(item.get("filename") or "")
    name = safety.clean_filename(raw_name)
    mime_type = item.get("mime_type") or mimetypes.guess_type(name)[0] or DEFAULT_MIME_TYPE
    mode = item.get("fetch_mode") or infer_mode(str(item.get("storage_path", "")))
    given_md5 = (item.get("content_md5") or "").lower() or None
    cacheable = mode != "base64"
    wanted = given_md5 or safety.md5_marker(raw_name)
    if cacheable and wanted:
        hit = runtime.cache.get(cache_key(tenant_id, wanted))
        if hit is not None and (given_md5 is None or hit.md5 == given_md5):
            return Fetched(name, mime_type, hit)
        if hit is not None:
            hit.close()
    spool = Spool(runtime.budget)
    try:
        _with_slot(
            runtime.slots,
            cancelled,
            lambda: fetch(item, spool, config=runtime.fetch_config, tenant=http, name=name),
        )
        _check_md5(name, spool, given_md5)
    except BaseException:
        spool.close()
        raise
    if cacheable:
        runtime.cache.put(cache_key(tenant_id, spool.md5), spool)
    return Fetched(name, mime_type, spool)


def _with_slot(
    slots: threading.BoundedSemaphore, cancelled: Callable[[], bool], work: Callable[[], None]
) -> None:
    while not slots.acquire(timeout=SLOT_WAIT_S):
        if cancelled():
            raise Interrupted(SHUTTING_DOWN)
    try:
        work()
    finally:
        slots.release()


def _check_md5(name: str, spool: Spool, given_md5: str | None) -> None:
    if given_md5 is not None and spool.md5 != given_md5:
        raise FetchFailed(name, "checksum mismatch", permanent=PERMANENT)
