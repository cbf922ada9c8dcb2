"""Instance settings (SPEC §3.12): ``GET``/``PUT /instance``, ``POST /instance/reload-bounce``.

The values live in the instance settings table (``proxy.store.settings``),
shared by every instance. The bounce settings are seeded once from the
configuration (``[bounce]``/``GMP_BOUNCE_*``) when first read. The admin token
set here is stored only as its SHA-256 digest, and counts only when no token
is configured (``_auth.admin_digest``); neither it nor the IMAP password is
ever returned (``api_token_set``, ``bounce_imap_password_set``).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import falcon
from pydantic import BaseModel, ConfigDict, Field

from proxy.api import _auth
from proxy.api._body import omit_none, read_object, validate
from proxy.api._doc import ADMIN, operation
from proxy.api._errors import BadRequest
from proxy.api.deps import Deps
from proxy.api.tenants import Ok
from proxy.options import MAX_POLL_INTERVAL_S
from proxy.store.records import MASK
from proxy.store.settings import API_TOKEN_SHA256, INSTANCE_FIELDS

logger = logging.getLogger(__name__)

INSTANCE_ID = 1  # one settings record per deployment (the original's row id)
BOUNCE_WITHOUT_HOST = "Bounce enabled but imap_host not configured"
MIN_API_TOKEN_CHARS = 16

NoSpace = Annotated[str, Field(max_length=255, pattern=r"^\S*$")]
Folder = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\r\n]+$")]
Mailbox = Annotated[str, Field(max_length=320, pattern=r"^([^\s@<>]+@[^\s@<>]+)?$")]


class InstanceUpdate(BaseModel):
    """Every field optional; null = unchanged, "" clears an optional text field."""

    model_config = ConfigDict(extra="ignore")
    name: Annotated[str, Field(max_length=200, pattern=r"^[^\r\n]*$")] | None = None
    api_token: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    bounce_enabled: bool | None = None
    bounce_imap_host: NoSpace | None = None
    bounce_imap_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    bounce_imap_user: Annotated[str, Field(max_length=320)] | None = None
    bounce_imap_password: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None, description='"********" keeps the stored password'
    )
    bounce_imap_folder: Folder | None = None
    bounce_imap_ssl: bool | None = None
    bounce_poll_interval: Annotated[int, Field(ge=1, le=MAX_POLL_INTERVAL_S)] | None = None
    bounce_return_path: Mailbox | None = None
    bounce_processed_folder: Annotated[str, Field(max_length=255, pattern=r"^[^\r\n]*$")] | None = (
        None
    )


class InstanceInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ok: bool
    id: int
    name: str | None = None
    api_token_set: bool
    bounce_enabled: bool
    bounce_imap_host: str | None = None
    bounce_imap_port: int | None = None
    bounce_imap_user: str | None = None
    bounce_imap_password_set: bool
    bounce_imap_folder: str | None = None
    bounce_imap_ssl: bool | None = None
    bounce_poll_interval: int | None = None
    bounce_return_path: str | None = None
    bounce_processed_folder: str | None = None
    bounce_last_uid: int | None = None
    bounce_uidvalidity: int | None = None


def stored_changes(update: InstanceUpdate) -> dict[str, Any]:
    """The typed values to store: nulls and a masked password dropped, "" → None (delete)."""
    changes = update.model_dump(exclude_none=True, exclude={"api_token"})
    if changes.get("bounce_imap_password") == MASK:
        del changes["bounce_imap_password"]
    return {name: (None if value == "" else value) for name, value in changes.items()}


class Instance:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def _values(self) -> dict[str, Any]:
        settings = self.deps.store.settings
        settings.seed_bounce(self.deps.settings)
        return settings.typed(INSTANCE_FIELDS)

    @operation(
        summary="Read the instance settings",
        description="The admin token and the IMAP password are never returned.",
        access=ADMIN,
        tag="Instance",
        response=InstanceInfo,
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        values = self._values()
        password = values.pop("bounce_imap_password")
        resp.media = omit_none(
            {"ok": True, "id": INSTANCE_ID}
            | values
            | {
                "api_token_set": _auth.admin_digest(self.deps.settings, self.deps.store)
                is not None,
                "bounce_enabled": bool(values["bounce_enabled"]),
                "bounce_imap_password_set": password is not None,
            }
        )

    @operation(
        summary="Change instance settings",
        description="All fields optional (null = unchanged). A changed bounce setting takes "
        "effect after POST /instance/reload-bounce or the next poll. An api_token set here "
        "is the admin token only while none is configured (flag, environment, file).",
        access=ADMIN,
        tag="Instance",
        request=InstanceUpdate,
        response=Ok,
        errors=(413, 422),
    )
    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        update = validate(InstanceUpdate, read_object(req, self.deps.settings.max_request_mb))
        self._values()  # seed first, so a partial update is never overwritten by the seed
        changes: dict[str, Any] = stored_changes(update)
        if update.api_token is not None:
            changes[API_TOKEN_SHA256] = _auth.digest(update.api_token)
            if len(update.api_token) < MIN_API_TOKEN_CHARS:  # SPEC §3.12 sets no minimum
                logger.warning(
                    "the admin token set through PUT /instance is shorter than %d characters: "
                    "easy to guess",
                    MIN_API_TOKEN_CHARS,
                )
        self.deps.store.settings.write_typed(changes)
        resp.media = {"ok": True}

    @operation(
        summary="Restart the bounce poller with the stored settings",
        description="Stops the poller when bounce detection is disabled.",
        access=ADMIN,
        tag="Instance",
        response=Ok,
        errors=(400,),
    )
    def on_post_reload_bounce(self, req: falcon.Request, resp: falcon.Response) -> None:
        values = self._values()
        if values["bounce_enabled"] and not values["bounce_imap_host"]:
            raise BadRequest(BOUNCE_WITHOUT_HOST)
        self.deps.engine.reload_bounce()
        resp.media = {"ok": True}
