"""Apply the config file's ``[[tenants]]`` and ``[[accounts]]`` at start (SPEC §15.5).

Create-or-update with the same validation as ``POST /tenant`` and
``POST /account``; entries the file does not name are never touched, and
applying the same file twice changes nothing (no new keys, no ``updated_at``
change). Every problem found stops start-up with one line naming the entry.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pydantic

from proxy.api._auth import digest
from proxy.api.schemas import AccountPayload, TenantPayload
from proxy.config import ConfigError, Settings
from proxy.store import Database

logger = logging.getLogger(__name__)

MIN_API_KEY_CHARS = 32


def _first_problem(exc: pydantic.ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in err["loc"]) or "entry"
    return f"{where}: {err['msg']}"


def _label(kind: str, index: int, entry: Mapping[str, Any]) -> str:
    ident = entry.get("id")
    return f"[[{kind}]] #{index}" + (f" (id={ident!r})" if isinstance(ident, str) else "")


def apply_config(settings: Settings, store: Database, now: int) -> tuple[int, int]:
    """Apply tenants, then accounts; returns how many of each were created."""
    source = settings.config_path or "config"
    tenants_created = 0
    for index, entry in enumerate(settings.tenants, start=1):
        fields = {k: v for k, v in entry.items() if k != "api_key"}
        try:
            payload = TenantPayload.model_validate(fields)
        except pydantic.ValidationError as exc:
            raise ConfigError(
                f"{_label('tenants', index, entry)} in {source}: {_first_problem(exc)}"
            ) from None
        if store.tenants.upsert(payload.id, payload.stored_fields(), now):
            tenants_created += 1
            logger.info(
                "tenant %s created from %s", payload.id, source, extra={"tenant_id": payload.id}
            )
        label = _label("tenants", index, entry)
        _provision_key(store, payload, entry.get("api_key"), label=label, source=source, now=now)
    accounts_created = 0
    for index, entry in enumerate(settings.accounts, start=1):
        label = _label("accounts", index, entry)
        try:
            account = AccountPayload.model_validate(dict(entry))
        except pydantic.ValidationError as exc:
            raise ConfigError(f"{label} in {source}: {_first_problem(exc)}") from None
        if not account.tenant_id:
            raise ConfigError(f"{label} in {source}: tenant_id: field required")
        if not store.tenants.exists(account.tenant_id):
            raise ConfigError(
                f"{label} in {source}: tenant_id: tenant {account.tenant_id!r} not found"
            )
        if store.accounts.upsert(account.tenant_id, account.id, account.stored_fields(), now):
            accounts_created += 1
            logger.info(
                "account %s created from %s",
                account.id,
                source,
                extra={"tenant_id": account.tenant_id, "account_id": account.id},
            )
    return tenants_created, accounts_created


def _provision_key(
    store: Database, payload: TenantPayload, api_key: object, *, label: str, source: str, now: int
) -> None:
    if api_key is None:
        return
    if not isinstance(api_key, str) or len(api_key) < MIN_API_KEY_CHARS:
        raise ConfigError(
            f"{label} in {source}: api_key: must be a string of at least "
            f"{MIN_API_KEY_CHARS} characters"
        )
    key_digest = digest(api_key)
    if not store.tenants.has_api_key_hash(payload.id, key_digest):
        store.tenants.set_api_key(payload.id, key_digest, payload.api_key_expires_at, now)
        logger.info(
            "api key provisioned for tenant %s", payload.id, extra={"tenant_id": payload.id}
        )
