"""Tenant large-file storage through fsspec (SPEC §9.7 rule 3, §9.8): the one module that calls it.

``file://``, ``s3://`` (s3fs), ``gs://`` (gcsfs) and ``az://`` (adlfs) all go
through the same calls; the extra backends are optional packages. A file lives
at ``{storage_url}/{file_id}/{object name}``: the ``file_id`` directory belongs
to that one file, so deleting it is deleting the file. The object name is the
cleaned filename with characters URL parsers treat specially replaced by ``_``
(the real name is kept in the record and sent in ``Content-Disposition``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import IO, Any, NamedTuple

import fsspec

from proxy.attachments.budget import Spool

S3_MAX_SIGN_S = 7 * 86400  # S3 presigned URLs live at most 7 days
_UNSAFE_OBJECT_CHARS = re.compile(r"[^\w. ()+,=@-]")


def object_name(filename: str) -> str:
    return _UNSAFE_OBJECT_CHARS.sub("_", filename) or "attachment"


def file_url(storage_url: str, file_id: str, filename: str) -> str:
    return f"{storage_url.rstrip('/')}/{file_id}/{object_name(filename)}"


def _fs(url: str, options: Mapping[str, Any] | None) -> tuple[Any, str]:
    fs, path = fsspec.core.url_to_fs(url, **dict(options or {}))
    return fs, path


def upload(url: str, options: Mapping[str, Any] | None, spool: Spool) -> None:
    """Write the spool's content to ``url`` (a ``file_url``), streaming it."""
    fs, path = _fs(url, options)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as out:
        for chunk in spool.chunks():
            out.write(chunk)


class Signed(NamedTuple):
    url: str
    expires_in_s: int  # what the backend granted: at most what was asked (S3: 7 days)


def sign(url: str, options: Mapping[str, Any] | None, expires_in_s: int) -> Signed | None:
    """The backend's own signed URL, or None for a backend that cannot sign (``file://``)."""
    fs, path = _fs(url, options)
    granted = min(expires_in_s, S3_MAX_SIGN_S) if "s3" in _protocols(fs) else expires_in_s
    try:
        return Signed(str(fs.sign(path, expiration=granted)), granted)
    except NotImplementedError:
        return None


def open_for_reading(url: str, options: Mapping[str, Any] | None) -> IO[bytes]:
    """An open binary file; FileNotFoundError when the object is gone."""
    fs, path = _fs(url, options)
    return fs.open(path, "rb")  # type: ignore[no-any-return]


def delete(url: str, options: Mapping[str, Any] | None) -> None:
    """Delete the file and its ``file_id`` directory; an already missing file is fine."""
    fs, path = _fs(url, options)
    directory = path.rsplit("/", 1)[0]
    try:
        fs.rm(directory, recursive=True)
    except FileNotFoundError:
        return


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
