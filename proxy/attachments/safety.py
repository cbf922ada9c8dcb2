"""Pure safety rules for attachments: filesystem confinement and filename cleaning.

SPEC §9.6 rule 1 (confinement), rule 3 (filenames are sanitised for headers) and
§9.3 rule 1 (the ``{MD5:<hex>}`` marker). No network and no database; the
filesystem is touched only by ``os.path.realpath`` (to see where ``..`` and
symlinks lead). Used at enqueue (``api/attachment_fields.py``) and again at send time,
because a symlink may have been changed in between.

The outbound-address policy (SSRF) is ``proxy.netpolicy``; ``fetch.py`` applies it.
"""

from __future__ import annotations

import os
import re

DISABLED = "filesystem attachments are disabled"
INVALID_PATH = "invalid path"
OUTSIDE = "path outside allowed directories"
FALLBACK_NAME = "attachment"

_MARKER = re.compile(r"\{MD5:([0-9a-fA-F]+)\}", re.IGNORECASE)
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029/\\]")
_UNDERSCORES = re.compile(r"_{2,}")


class PathRefused(ValueError):
    """A filesystem path that may not be read; ``reason`` is SPEC's wording."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def confined_path(path: str, allowed_dirs: tuple[str, ...] | list[str]) -> str:
    """Resolve ``path`` (``..``, symlinks) and return it if it lies in an allowed directory.

    A relative path resolves against the first directory; an empty list disables the
    mode. Raises ``PathRefused``. The file itself need not exist.
    """
    if not allowed_dirs:
        raise PathRefused(DISABLED)
    candidate = path if os.path.isabs(path) else os.path.join(allowed_dirs[0], path)
    try:
        resolved = os.path.realpath(candidate)
        roots = [os.path.realpath(root) for root in allowed_dirs]
    except (ValueError, OSError):  # a NUL byte, an unreadable component
        raise PathRefused(INVALID_PATH) from None
    if not any(os.path.commonpath([root, resolved]) == root for root in roots):
        raise PathRefused(OUTSIDE)
    return resolved


def md5_marker(filename: str) -> str | None:
    """The lower-case hex of a ``{MD5:<hex>}`` marker in the name, if there is one."""
    found = _MARKER.search(filename)
    return found.group(1).lower() if found else None


def clean_filename(filename: str) -> str:
    """The name written in the mail: marker removed (§9.3 rule 1), then made header-safe.

    With a marker, runs of ``_`` collapse, leading/trailing ``_`` go and ``_.``
    becomes ``.`` (``report_{MD5:abc}.pdf`` → ``report.pdf``). Control characters and
    path separators are always removed (§9.6 rule 3), and a name left empty, ``.`` or
    ``..`` becomes ``attachment``, so it is also safe as a storage path segment.
    """
    name = filename
    if _MARKER.search(name):
        name = _MARKER.sub("", name)
        name = _UNDERSCORES.sub("_", name).strip("_").replace("_.", ".")
    name = _UNSAFE.sub("", name).strip()
    return FALLBACK_NAME if name in {"", ".", ".."} else name
