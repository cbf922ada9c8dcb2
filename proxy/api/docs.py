"""``/openapi.json``, ``/docs`` (Swagger UI), ``/redoc`` and ``/docs/assets/{name}``: all Public.

The pages load only files the proxy serves itself (``proxy/api/static/``, vendored with
their licenses), so they work with no internet access (SPEC §2.2, §3.1 rule 8), and a
Content-Security-Policy lets the browser fetch nothing from anywhere else. The document
is built once, on first request, from THE route table (``proxy.app`` hands in how to list
its operations), so it always matches what the app serves and enforces.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
from collections.abc import Callable, Iterable
from importlib import resources

import falcon

from proxy.api._body import JSON_UTF8
from proxy.api._doc import PUBLIC, operation
from proxy.api._errors import NotFound
from proxy.api.deps import Deps
from proxy.api.openapi import TableRow, build_document

ASSET_PREFIX = "/docs/assets/"
ASSETS = {  # name under /docs/assets/ → (file under static/, media type)
    "swagger-ui-bundle.js": ("swagger-ui/swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": ("swagger-ui/swagger-ui.css", "text/css"),
    "swagger-init.js": ("swagger-init.js", "text/javascript"),
    "redoc.standalone.js": ("redoc/redoc.standalone.js", "text/javascript"),
}
# Served-time edits of vendored files, kept out of the files so an update stays a copy.
# ReDoc's sidebar credit loads its logo from the vendor's CDN; a data: URL fails to
# decode, and ReDoc then hides the image. A needle that no longer matches is an error.
PATCHES = {
    "redoc.standalone.js": ((b'src:"https://cdn.redoc.ly/redoc/logo-mini.svg"', b'src:"data:,"'),),
}
ASSET_CACHE = "public, max-age=86400"
PAGE_CACHE = "no-cache"  # revalidate: the document changes with the proxy's version
CSP = "; ".join(  # ReDoc runs its search in a blob: worker and both inject styles
    (
        "default-src 'none'",
        "script-src 'self'",
        "worker-src blob:",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
TITLE = "Mail Proxy API"

SWAGGER_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{TITLE} - Swagger UI</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{ASSET_PREFIX}swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSET_PREFIX}swagger-ui-bundle.js"></script>
<script src="{ASSET_PREFIX}swagger-init.js"></script>
</body>
</html>
"""

REDOC_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{TITLE} - ReDoc</title>
<link rel="icon" href="data:,">
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="{ASSET_PREFIX}redoc.standalone.js"></script>
</body>
</html>
"""


def proxy_version() -> str:
    try:
        return importlib.metadata.version("mail-proxy")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


@functools.cache
def asset_bytes(name: str) -> tuple[bytes, str, str]:
    """(content, media type, ETag) of a known asset; files are read once per process."""
    path, media = ASSETS[name]
    data = resources.files("proxy.api").joinpath("static", *path.split("/")).read_bytes()
    for needle, replacement in PATCHES.get(name, ()):
        if needle not in data:
            raise RuntimeError(f"{path} no longer contains {needle!r}; update PATCHES")
        data = data.replace(needle, replacement)
    return data, media, hashlib.sha256(data).hexdigest()[:32]


def _send(
    req: falcon.Request, resp: falcon.Response, data: bytes, *, media: str, etag: str, cache: str
) -> None:
    resp.cache_control = [cache]
    resp.etag = etag
    resp.set_header("X-Content-Type-Options", "nosniff")
    if any(tag in (etag, "*") for tag in req.if_none_match or ()):
        resp.status = falcon.HTTP_304
        return
    resp.content_type = media
    resp.data = data


class OpenApiDocument:
    """``GET /openapi.json``; ``list_operations`` yields THE table's (template, method, op)."""

    def __init__(self, deps: Deps, list_operations: Callable[[], Iterable[TableRow]]) -> None:
        self.deps = deps
        self._list_operations = list_operations
        self._cached: tuple[bytes, str] | None = None

    def document_bytes(self) -> tuple[bytes, str]:
        if self._cached is None:
            overrides = {("/metrics", "GET"): PUBLIC} if self.deps.settings.metrics_public else {}
            document = build_document(
                self._list_operations(),
                title=TITLE,
                version=proxy_version(),
                access_overrides=overrides,
            )
            data = json.dumps(document, ensure_ascii=False).encode("utf-8")
            self._cached = data, hashlib.sha256(data).hexdigest()[:32]
        return self._cached

    @operation(
        summary="OpenAPI 3.1 description of this API",
        access=PUBLIC,
        tag="Documentation",
        description="Generated from the route table and the models the handlers validate with.",
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        data, etag = self.document_bytes()
        _send(req, resp, data, media=JSON_UTF8, etag=etag, cache=PAGE_CACHE)


def _page(req: falcon.Request, resp: falcon.Response, html: str) -> None:
    data = html.encode("utf-8")
    resp.set_header("Content-Security-Policy", CSP)
    etag = hashlib.sha256(data).hexdigest()[:32]
    _send(req, resp, data, media=falcon.MEDIA_HTML, etag=etag, cache=PAGE_CACHE)


class SwaggerUi:
    """``GET /docs``: Swagger UI over ``/openapi.json``, its online validator turned off."""

    @operation(
        summary="Swagger UI documentation page",
        access=PUBLIC,
        tag="Documentation",
        response_media="text/html",
        description="Works offline: loads only /docs/assets/ and /openapi.json.",
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _page(req, resp, SWAGGER_PAGE)


class Redoc:
    """``GET /redoc``: ReDoc over ``/openapi.json``."""

    @operation(
        summary="ReDoc documentation page",
        access=PUBLIC,
        tag="Documentation",
        response_media="text/html",
        description="Works offline: loads only /docs/assets/ and /openapi.json.",
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _page(req, resp, REDOC_PAGE)


class DocsAsset:
    """``GET /docs/assets/{name}``: a fixed set of files; anything else is 404."""

    @operation(
        summary="Script or stylesheet of the documentation pages",
        access=PUBLIC,
        tag="Documentation",
        response_media="text/*",
        errors=(404,),
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        if name not in ASSETS:
            raise NotFound(f"Asset '{name}' not found")
        data, media, etag = asset_bytes(name)
        _send(req, resp, data, media=f"{media}; charset=utf-8", etag=etag, cache=ASSET_CACHE)
