"""What preparing a message's attachments can fail with (SPEC §6.5, §9.4, §9.7).

Pure: no network, no storage. ``fetch.py`` translates ``requests``, OS and
fsspec exceptions into these at one boundary; the send path sees only this tree::

    AttachmentFailure(text, permanent)     the attempt fails; ``outcome`` is what is recorded
    ├── FetchFailed(filename, cause)       "Attachment fetch failed for <filename>: <cause>"
    │     permanent: HTTP 4xx but 429, empty content, invalid base64, file missing or not
    │       regular, path outside the allowed directories, address refused by the outbound
    │       policy, size limit exceeded, checksum mismatch
    │     temporary: timeouts, connection errors, HTTP 5xx and 429
    ├── LargeFileRejected(name, size, max)  large-file ``reject`` (permanent)
    ├── UploadFailed(filename, cause)       large-file upload to tenant storage (temporary)
    └── Interrupted(cause)                  shutdown while waiting for a slot (temporary)

A temporary failure becomes ``TempFailure(reason="attachment")``, so it is
retried with the message's normal backoff and its ``deferred`` event says why.
"""

from __future__ import annotations

from proxy.smtp.errors import PermFailure, TempFailure

MB = 1 << 20

PERMANENT, TEMPORARY = True, False


class AttachmentFailure(Exception):
    def __init__(self, text: str, *, permanent: bool) -> None:
        super().__init__(text)
        self.text = text
        self.permanent = permanent

    @property
    def outcome(self) -> TempFailure | PermFailure:
        """The attempt's outcome: permanent → error now, temporary → retried with backoff."""
        if self.permanent:
            return PermFailure(self.text)
        return TempFailure(self.text, reason="attachment")


class FetchFailed(AttachmentFailure):
    def __init__(self, filename: str, cause: str, *, permanent: bool) -> None:
        super().__init__(f"Attachment fetch failed for {filename}: {cause}", permanent=permanent)
        self.filename = filename
        self.cause = cause


class LargeFileRejected(AttachmentFailure):
    def __init__(self, name: str, size_bytes: int, max_size_mb: float) -> None:
        super().__init__(
            f"Attachment '{name}' ({size_bytes / MB:.1f} MB) exceeds limit ({max_size_mb:g} MB)",
            permanent=PERMANENT,
        )


class UploadFailed(AttachmentFailure):
    def __init__(self, filename: str, cause: str, *, permanent: bool = TEMPORARY) -> None:
        super().__init__(f"Large file upload failed for {filename}: {cause}", permanent=permanent)


class Interrupted(AttachmentFailure):
    def __init__(self, cause: str) -> None:
        super().__init__(f"Attachments not prepared: {cause}", permanent=TEMPORARY)


def worst(failures: list[AttachmentFailure]) -> AttachmentFailure:
    """The failure that decides the attempt: a permanent one wins (retrying cannot help)."""
    return next((f for f in failures if f.permanent), failures[0])
