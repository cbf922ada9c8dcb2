"""Request models for tenants and accounts (SPEC §3.8, §3.11), shared with config bootstrapping.

Pydantic validates and, later, describes these in OpenAPI: one source of truth.
Unknown top-level fields are ignored (compatibility); unknown fields inside
``client_auth``, ``rate_limits`` and ``large_file_config`` are errors.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from proxy.api._body import MAX_INT64

TENANT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
NonNegative = Annotated[int, Field(ge=0, le=MAX_INT64)]
Positive = Annotated[int, Field(ge=1, le=MAX_INT64)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ClientAuth(Strict):
    method: Literal["none", "bearer", "basic"] = "none"
    # Checked even when absent, so a missing credential is reported under its own name.
    token: str | None = Field(default=None, validate_default=True)
    user: str | None = Field(default=None, validate_default=True)
    password: str | None = Field(default=None, validate_default=True)

    @field_validator("token", "user", "password")
    @classmethod
    def _required_by_method(cls, value: str | None, info: ValidationInfo) -> str | None:
        method = info.data.get("method")
        needed = {"bearer": ("token",), "basic": ("user", "password")}.get(method, ())
        missing = value is None or (info.field_name != "password" and not value)
        if info.field_name in needed and missing:
            raise ValueError(f"{info.field_name} is required for method '{method}'")
        return value


class RateLimits(Strict):
    hourly: NonNegative | None = None
    daily: NonNegative | None = None
    behavior: Literal["defer", "reject"] = "defer"


class LargeFileConfig(Strict):
    enabled: bool = False
    # Before storage_url: its check reads enabled and action (fields validate in order).
    action: Literal["warn", "reject", "rewrite"] = "warn"
    max_size_mb: Annotated[float, Field(gt=0)] = 10.0
    # Checked even when absent, so a missing one is reported under its own name (SPEC §9.7).
    storage_url: str | None = Field(default=None, validate_default=True)
    storage_options: dict[str, Any] | None = None
    public_base_url: str | None = None
    file_ttl_days: Positive = 30
    lifespan_after_download_days: Positive | None = None

    @field_validator("storage_url")
    @classmethod
    def _required_by_rewrite(cls, value: str | None, info: ValidationInfo) -> str | None:
        rewrites = info.data.get("enabled") is True and info.data.get("action") == "rewrite"
        if rewrites and not (value and value.strip()):
            raise PydanticCustomError("missing", "required for 'rewrite'")
        return value


def _http_url(value: str | None) -> str | None:
    if value is not None and not re.match(r"^https?://[^\s/]+", value):
        raise ValueError("must be an http:// or https:// URL")
    return value


class TenantFields(Lenient):
    """The updatable fields of a tenant (``PUT /tenant/{id}`` and the merge of ``POST /tenant``)."""

    name: str | None = None
    client_base_url: str | None = None
    client_sync_path: str | None = None
    client_attachment_path: str | None = None
    client_auth: ClientAuth | None = None
    rate_limits: RateLimits | None = None
    large_file_config: LargeFileConfig | None = None
    active: bool | None = None

    _url = field_validator("client_base_url")(_http_url)

    def stored_fields(self) -> dict[str, Any]:
        """The fields the body carried, as plain values for ``TenantStore.upsert``."""
        return {
            name: _plain(getattr(self, name))
            for name in self.model_fields_set
            if name in TENANT_FIELD_NAMES
        }


TENANT_FIELD_NAMES = frozenset(TenantFields.model_fields)


class TenantPayload(TenantFields):
    id: Annotated[str, Field(pattern=TENANT_ID_PATTERN)]
    api_key_expires_at: Annotated[int, Field(ge=0, le=MAX_INT64)] | None = None


class AccountPayload(Lenient):
    id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\s/]+$")]
    tenant_id: Annotated[str, Field(pattern=TENANT_ID_PATTERN)] | None = None
    host: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\s/]+$")]
    port: Annotated[int, Field(ge=1, le=65535)]
    user: str | None = None
    password: str | None = None
    use_tls: bool | None = None
    use_ssl: bool | None = None
    tls_verify: bool = True
    ttl: NonNegative = 300
    limit_per_minute: NonNegative | None = None
    limit_per_hour: NonNegative | None = None
    limit_per_day: NonNegative | None = None
    limit_behavior: Literal["defer", "reject", "error"] = "defer"
    batch_size: Positive | None = None
    is_pec_account: bool = False
    imap_host: str | None = None
    imap_port: Annotated[int, Field(ge=1, le=65535)] = 993
    imap_user: str | None = None
    imap_password: str | None = None
    imap_ssl: bool = True
    imap_folder: str = "INBOX"

    @field_validator("limit_behavior")
    @classmethod
    def _alias_error(cls, value: str) -> str:
        return "reject" if value == "error" else value

    @model_validator(mode="after")
    def _pec_needs_imap(self) -> AccountPayload:
        if self.is_pec_account and not self.imap_host:
            raise ValueError("imap_host is required when is_pec_account is true")
        return self

    def stored_fields(self) -> dict[str, Any]:
        """Every account field (a replacement is total: omitted fields take their defaults)."""
        return self.model_dump(exclude={"id", "tenant_id"})


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_none=True)
    return value
