"""Signed download links (SPEC §9.8 rules 1 and 3)."""

from __future__ import annotations

import hashlib
import hmac
import uuid

from proxy.attachments import links

SECRET = b"s3cret"
FILE_ID = str(uuid.UUID(int=7))


def test_the_signature_is_the_first_32_hex_chars_of_the_hmac() -> None:
    expected = hmac.new(SECRET, f"{FILE_ID}:a b.pdf:1700000000".encode(), hashlib.sha256)
    assert links.signature(SECRET, FILE_ID, "a b.pdf", 1_700_000_000) == expected.hexdigest()[:32]


def test_a_url_carries_token_and_quoted_filename() -> None:
    url = links.url("https://mx.example/", SECRET, FILE_ID, "a b/ü.pdf", 1_700_000_000)
    sig = links.signature(SECRET, FILE_ID, "a b/ü.pdf", 1_700_000_000)
    assert url == (f"https://mx.example/download/{FILE_ID}-1700000000-{sig}/a%20b%2F%C3%BC.pdf")


def test_a_token_parses_back_and_verifies() -> None:
    token = links.token(SECRET, FILE_ID, "a.pdf", 1_700_000_000)
    parsed = links.parse(token)
    assert parsed is not None
    assert (parsed.file_id, parsed.expires_ts) == (FILE_ID, 1_700_000_000)
    assert links.is_authentic(SECRET, parsed, "a.pdf")


def test_tampering_with_any_part_fails_verification() -> None:
    token = links.token(SECRET, FILE_ID, "a.pdf", 1_700_000_000)
    parsed = links.parse(token)
    assert parsed is not None
    assert not links.is_authentic(SECRET, parsed, "b.pdf")
    assert not links.is_authentic(b"other", parsed, "a.pdf")
    later = links.parse(token.replace("-1700000000-", "-1800000000-"))
    assert later is not None
    assert not links.is_authentic(SECRET, later, "a.pdf")
    flipped = token[:-1] + ("0" if token[-1] != "0" else "1")
    parsed_flipped = links.parse(flipped)
    assert parsed_flipped is not None
    assert not links.is_authentic(SECRET, parsed_flipped, "a.pdf")


def test_malformed_tokens_do_not_parse() -> None:
    for text in ["", "abc", f"{FILE_ID}-123", f"{FILE_ID}-x-{'0' * 32}", f"{FILE_ID}-1-{'0' * 31}"]:
        assert links.parse(text) is None


def test_the_configured_secret_wins_else_one_is_stored_once() -> None:
    stored: dict[str, str] = {}

    def set_default(key: str, value: str) -> str:
        return stored.setdefault(key, value)

    assert links.download_secret("configured", set_default) == b"configured"
    assert stored == {}
    first = links.download_secret(None, set_default)
    second = links.download_secret(None, set_default)
    assert first == second
    assert stored[links.SECRET_SETTING].encode() == first
    assert len(first) >= 32
