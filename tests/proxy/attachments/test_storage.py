"""fsspec storage for large files, on file:// and on a real S3 server (moto, loopback)."""

from __future__ import annotations

import os
import time
from urllib.parse import parse_qs, urlsplit

import requests

from proxy.attachments import storage
from proxy.attachments.budget import Spool
from tests.fixtures.s3 import s3_server  # noqa: F401 (fixture)


def spool_of(data: bytes) -> Spool:
    spool = Spool(None, threshold_bytes=0)
    spool.write(data)
    return spool


def test_object_names_keep_readable_names_but_nothing_special() -> None:
    assert storage.object_name("rapport été (1).pdf") == "rapport été (1).pdf"
    assert storage.object_name("a?b#c%d.pdf") == "a_b_c_d.pdf"
    assert storage.file_url("s3://b/p/", "id", "x y.pdf") == "s3://b/p/id/x y.pdf"


def test_file_storage_round_trip(tmp_path) -> None:
    data = os.urandom(100_000)
    url = storage.file_url(f"file://{tmp_path}/files", "f-1", "a.bin")
    storage.upload(url, None, spool_of(data))
    with storage.open_for_reading(url, None) as handle:
        assert handle.read() == data
    assert storage.sign(url, None, 3600) is None  # local files cannot sign
    storage.delete(url, None)
    assert not (tmp_path / "files" / "f-1").exists()
    storage.delete(url, None)  # idempotent


def test_s3_upload_sign_read_and_delete(s3_server) -> None:  # noqa: F811
    data = os.urandom(300_000)
    options = s3_server.storage_options
    url = storage.file_url(f"s3://{s3_server.bucket}/mail", "f-2", "report.pdf")
    storage.upload(url, options, spool_of(data))
    assert s3_server.objects() == [f"{s3_server.bucket}/mail/f-2/report.pdf"]
    with storage.open_for_reading(url, options) as handle:
        assert handle.read() == data
    signed = storage.sign(url, options, 30 * 86400)  # capped to S3's 7 days
    assert signed is not None
    assert signed.expires_in_s == 7 * 86400  # what the mail then states
    query = parse_qs(urlsplit(signed.url).query)
    expires_in = int(query["Expires"][0]) - time.time()
    assert 7 * 86400 - 60 < expires_in <= 7 * 86400
    assert requests.get(signed.url, timeout=10).content == data
    assert storage.sign(url, options, 3600).expires_in_s == 3600  # shorter: as asked
    storage.delete(url, options)
    assert s3_server.objects() == []
