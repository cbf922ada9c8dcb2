"""``GET /download/{token}[/{filename}]``: large-file download links (SPEC §9.8 rule 3). Public.

The token is checked before storage is touched: a malformed or badly signed
token, or an unknown file, is 404; a link past its expiry or after-download
lifespan, or a file already deleted, is 410. Only then is the file opened and
streamed back with its type and name, and the download counted.
"""

from __future__ import annotations

from urllib.parse import quote

import falcon

from proxy.api._doc import PUBLIC, operation
from proxy.api._errors import ApiError, NotFound
from proxy.api.deps import Deps
from proxy.attachments import links, storage
from proxy.store.large_files import LargeFileRecord

NOT_FOUND = "Download link not found"
GONE = "Download link expired"
DESCRIPTION = (
    "Streams a large attachment moved to tenant storage (SPEC §9.8). 404 for a malformed "
    "or tampered token or an unknown file; 410 once the link expired (TTL or after-download "
    "lifespan) or the file was deleted. The filename segment is cosmetic."
)


class Gone(ApiError):
    status = 410


class Download:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._secret: bytes | None = None

    @operation(
        summary="Download a large attachment",
        access=PUBLIC,
        tag="Downloads",
        response_media="application/octet-stream",
        errors=(404, 410),
        description=DESCRIPTION,
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        self._serve(resp, token)

    @operation(
        summary="Download a large attachment (with its filename in the path)",
        access=PUBLIC,
        tag="Downloads",
        response_media="application/octet-stream",
        errors=(404, 410),
        description=DESCRIPTION,
    )
    def on_get_named(
        self, req: falcon.Request, resp: falcon.Response, token: str, filename: str
    ) -> None:
        self._serve(resp, token)

    def _serve(self, resp: falcon.Response, token: str) -> None:
        record = self._checked(token)
        try:
            stream = storage.open_for_reading(record.storage_url, record.storage_options)
        except FileNotFoundError:
            raise Gone(GONE) from None
        self.deps.store.large_files.count_download(record.file_id, self.deps.now())
        resp.content_type = record.content_type
        name = quote(record.filename, safe="")
        resp.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{name}")
        resp.set_stream(stream, record.size_bytes)

    def _checked(self, token: str) -> LargeFileRecord:
        parsed = links.parse(token)
        record = None if parsed is None else self.deps.store.large_files.get(parsed.file_id)
        if (
            parsed is None
            or record is None
            or not links.is_authentic(self._download_secret(), parsed, record.filename)
        ):
            raise NotFound(NOT_FOUND)
        now = self.deps.now()
        if now >= parsed.expires_ts or record.is_expired(now) or record.deleted_ts is not None:
            raise Gone(GONE)
        if not self.deps.store.tenants.exists(record.tenant_id):
            raise Gone(GONE)  # marked for deletion with its tenant (SPEC §3.11)
        return record

    def _download_secret(self) -> bytes:
        if self._secret is None:
            self._secret = links.download_secret(
                self.deps.settings.download_secret, self.deps.store.settings.set_default
            )
        return self._secret
