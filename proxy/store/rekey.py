"""Start-up pass over every stored secret: encrypt it with the current key (SPEC §16).

Run once by ``proxy.server`` after the store is opened and the config file applied.
With a key configured, plaintext values (written before there was a key) are
encrypted and values under a previous key are re-encrypted (rotation, rule 5), so
after one start with key B current and key A previous, B alone opens everything.
A value no key opens is left as it is and logged (it stays unusable until set
again). Without a key it only warns that secrets are stored in plaintext (rule 6).

Each row is rewritten only if its stored text is still what was read, so an
instance writing at the same time is never undone, and the pass is idempotent.
The message payload pass lives here rather than in ``messages.py`` (already the
largest query module); it reads pages of the rows whose payload has an
attachment ``auth`` object. Large-file records carry a copy of their tenant's
storage options (sealed by ``large_files.py``): they are resealed here too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from proxy.store import models
from proxy.store.records import SecretCodec, dumps, loads, map_payload, map_tree

if TYPE_CHECKING:
    from proxy.store import Database

logger = logging.getLogger(__name__)

M = models.Message
LF = models.LargeFile
PAGE = 500
_HAS_AUTH = '"auth":{'  # how ``records.dumps`` writes an attachment's auth object


def reencrypt_secrets(store: Database) -> int:
    """Bring every stored secret under the current key; returns the rows rewritten."""
    if not store.codec.cipher.enabled:
        logger.warning(
            "no encryption key configured: SMTP passwords and other credentials are stored "
            "in plaintext (set GMP_ENCRYPTION_KEY; `mail-proxy keygen` prints a new key)"
        )
        return 0
    counts = {
        "accounts": store.accounts.reseal_secrets(),
        "tenants": store.tenants.reseal_secrets(),
        "instance settings": store.settings.reseal_secrets(),
        "messages": reseal_message_payloads(store.codec),
        "large files": reseal_large_file_options(store.codec),
    }
    total = sum(counts.values())
    if total:
        logger.info(
            "encrypted stored credentials with the current key: %s",
            ", ".join(f"{n} {what}" for what, n in counts.items() if n),
        )
    return total


def reseal_message_payloads(codec: SecretCodec) -> int:
    """Re-encrypt attachment ``auth`` secrets inside stored payloads; the rows changed."""
    changed, after = 0, 0
    while True:
        page = list(
            M.select(M.seq, M.pk, M.payload)
            .where((M.seq > after) & M.payload.contains(_HAS_AUTH))
            .order_by(M.seq)
            .limit(PAGE)
        )
        if not page:
            return changed
        after = page[-1].seq
        for row in page:
            payload = loads(row.payload)
            resealed = map_payload(payload, codec.reseal)
            if resealed != payload:
                changed += (
                    M.update(payload=dumps(resealed))
                    .where((M.pk == row.pk) & (M.payload == row.payload))
                    .execute()
                )


def reseal_large_file_options(codec: SecretCodec) -> int:
    """Re-encrypt the storage options large-file records keep for the cleanup."""
    changed = 0
    for row in list(
        LF.select(LF.file_id, LF.storage_options).where(LF.storage_options.is_null(False))
    ):
        options = loads(row.storage_options)
        resealed = map_tree(options, codec.reseal)
        if resealed != options:
            changed += (
                LF.update(storage_options=dumps(resealed))
                .where((LF.file_id == row.file_id) & (LF.storage_options == row.storage_options))
                .execute()
            )
    return changed
