"""AES-256-GCM values, key loading and the cipher chosen from settings (SPEC §16)."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from proxy.config import ConfigError
from proxy.crypto import (
    NONCE_BYTES,
    PREFIX,
    TAG_BYTES,
    Cipher,
    DecryptionError,
    NullCipher,
    cipher_from_settings,
    generate_key,
    is_encrypted,
    key_from_file,
    key_from_text,
)
from tests.fixtures.stores import make_settings

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
TEXT_A = base64.b64encode(KEY_A).decode()
TEXT_B = base64.b64encode(KEY_B).decode()


def test_value_is_prefix_and_base64_of_nonce_ciphertext_and_tag():
    value = Cipher(KEY_A).encrypt("pässword")
    assert value.startswith(PREFIX)
    raw = base64.b64decode(value[len(PREFIX) :])
    assert len(raw) == NONCE_BYTES + len("pässword".encode()) + TAG_BYTES
    # Any AES-GCM implementation opens it with the key alone: the format is the contract.
    plain = AESGCM(KEY_A).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], None)
    assert plain.decode() == "pässword"


def test_each_value_gets_a_fresh_nonce():
    cipher = Cipher(KEY_A)
    values = {cipher.encrypt("same") for _ in range(50)}
    assert len(values) == 50
    nonces = {base64.b64decode(v[len(PREFIX) :])[:NONCE_BYTES] for v in values}
    assert len(nonces) == 50


def test_round_trip_and_plaintext_passes_through():
    cipher = Cipher(KEY_A)
    assert cipher.decrypt(cipher.encrypt("s3cret")) == "s3cret"
    assert cipher.decrypt(cipher.encrypt("")) == ""
    assert cipher.decrypt("legacy plaintext") == "legacy plaintext"
    assert is_encrypted(cipher.encrypt("x"))
    assert not is_encrypted("x")
    assert not is_encrypted(None)


def test_previous_keys_still_decrypt_but_are_not_current():
    old = Cipher(KEY_A).encrypt("s3cret")
    rotated = Cipher(KEY_B, [KEY_A])
    assert rotated.decrypt(old) == "s3cret"
    assert not rotated.is_current(old)
    assert rotated.is_current(rotated.encrypt("s3cret"))
    assert not rotated.is_current("plaintext")


@pytest.mark.parametrize(
    "value",
    [
        Cipher(KEY_A).encrypt("s3cret"),  # another key
        PREFIX + "not base64!",
        PREFIX + base64.b64encode(b"short").decode(),
        PREFIX + base64.b64encode(os.urandom(40)).decode(),  # right shape, bad tag
    ],
)
def test_value_no_key_opens_raises(value):
    with pytest.raises(DecryptionError):
        Cipher(KEY_B).decrypt(value)
    assert not Cipher(KEY_B).is_current(value)


def test_tampered_value_is_refused():
    value = Cipher(KEY_A).encrypt("s3cret")
    raw = bytearray(base64.b64decode(value[len(PREFIX) :]))
    raw[NONCE_BYTES] ^= 1
    with pytest.raises(DecryptionError):
        Cipher(KEY_A).decrypt(PREFIX + base64.b64encode(bytes(raw)).decode())


def test_null_cipher_stores_plaintext_and_cannot_open_encrypted_values():
    null = NullCipher()
    assert not null.enabled
    assert null.encrypt("s3cret") == "s3cret"
    assert null.decrypt("s3cret") == "s3cret"
    with pytest.raises(DecryptionError):
        null.decrypt(Cipher(KEY_A).encrypt("s3cret"))


def test_keys_must_be_32_bytes():
    with pytest.raises(ValueError, match="32"):
        Cipher(b"short")


@pytest.mark.parametrize(
    "text",
    [
        TEXT_A,
        TEXT_A.rstrip("="),
        base64.urlsafe_b64encode(KEY_A).decode(),
        f"  {TEXT_A}\n",
    ],
)
def test_key_text_in_base64_forms(text):
    assert key_from_text(text, "src") == KEY_A


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (base64.b64encode(b"x" * 16).decode(), "exactly 32 bytes"),
        (base64.b64encode(b"x" * 33).decode(), "exactly 32 bytes"),
        ("not base64 at all!", "not valid base64"),
        ("clé", "not valid base64"),
    ],
)
def test_bad_key_text_names_the_source_not_the_key(text, reason):
    with pytest.raises(ConfigError, match=reason) as caught:
        key_from_text(text, "security.encryption_key (GMP_ENCRYPTION_KEY)")
    assert "GMP_ENCRYPTION_KEY" in str(caught.value)
    assert text.strip() not in str(caught.value)


def test_key_file_holds_raw_bytes_or_base64_text(tmp_path):
    raw = tmp_path / "raw.key"
    raw.write_bytes(KEY_A)
    text = tmp_path / "text.key"
    text.write_text(TEXT_A + "\n")
    assert key_from_file(str(raw)) == KEY_A
    assert key_from_file(str(text)) == KEY_A


def test_bad_key_files(tmp_path):
    short = tmp_path / "short.key"
    short.write_bytes(b"\xff" * 20)
    with pytest.raises(ConfigError, match="32 raw bytes"):
        key_from_file(str(short))
    with pytest.raises(ConfigError, match="cannot read"):
        key_from_file(str(tmp_path / "missing.key"))


def test_generated_keys_are_random_base64_of_32_bytes():
    first, second = generate_key(), generate_key()
    assert first != second
    assert len(base64.b64decode(first)) == 32


def test_cipher_from_settings(tmp_path):
    assert isinstance(cipher_from_settings(make_settings()), NullCipher)
    cipher = cipher_from_settings(make_settings(encryption_key=TEXT_B))
    assert cipher.enabled
    assert cipher.decrypt(Cipher(KEY_B).encrypt("x")) == "x"
    rotated = cipher_from_settings(
        make_settings(encryption_key=TEXT_B, encryption_previous_keys=(TEXT_A,))
    )
    assert rotated.decrypt(Cipher(KEY_A).encrypt("x")) == "x"
    same = tmp_path / "same.key"
    same.write_bytes(KEY_B)
    both = cipher_from_settings(make_settings(encryption_key=TEXT_B, encryption_key_file=str(same)))
    assert both.decrypt(Cipher(KEY_B).encrypt("x")) == "x"
    only_file = cipher_from_settings(make_settings(encryption_key_file=str(same)))
    assert only_file.decrypt(Cipher(KEY_B).encrypt("x")) == "x"


def test_settings_with_conflicting_or_bad_keys_stop_start_up(tmp_path):
    other = tmp_path / "other.key"
    other.write_bytes(KEY_A)
    with pytest.raises(ConfigError, match="different keys"):
        cipher_from_settings(make_settings(encryption_key=TEXT_B, encryption_key_file=str(other)))
    with pytest.raises(ConfigError, match="exactly 32 bytes"):
        cipher_from_settings(make_settings(encryption_key=base64.b64encode(b"k" * 24).decode()))
    with pytest.raises(ConfigError, match=r"previous_keys.*item 2"):
        cipher_from_settings(
            make_settings(encryption_key=TEXT_B, encryption_previous_keys=(TEXT_A, "bad"))
        )
    with pytest.raises(ConfigError, match="no current key"):
        cipher_from_settings(make_settings(encryption_previous_keys=(TEXT_A,)))


def test_environment_variables_reach_the_cipher():
    from proxy.config import load_settings

    settings = load_settings(
        env={"MAIL_PROXY_ENCRYPTION_KEY": TEXT_B, "GMP_ENCRYPTION_PREVIOUS_KEYS": TEXT_A}
    )
    cipher = cipher_from_settings(settings)
    assert cipher.decrypt(Cipher(KEY_A).encrypt("old")) == "old"
    assert Cipher(KEY_B).decrypt(cipher.encrypt("new")) == "new"
