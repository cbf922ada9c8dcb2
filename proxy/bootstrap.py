"""Apply the config file's ``[[tenants]]`` and ``[[accounts]]`` at start (SPEC §15.5).

Create-or-update with the same validation as ``POST /tenant`` and
``POST /account``; entries the file does not name are never touched, and
applying the same file twice changes nothing (no new keys, no ``updated_at``
change). Every entry is checked before anything is written: one bad entry
stops start-up with nothing applied, and ``check_entries`` (which ``mail-proxy
config check`` runs too, without a database) lists every problem, one line
each, naming the entry, the key and the file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from proxy.api._auth import digest
from proxy.api.schemas import AccountPayload, TenantPayload
from proxy.attachments import large
from proxy.config import ConfigError, Settings
from proxy.store import Database

logger = logging.getLogger(__name__)

MIN_API_KEY_CHARS = 32


@dataclass(frozen=True, slots=True)
class TenantEntry:
    payload: TenantPayload
    api_key: str | None


@dataclass(frozen=True, slots=True)
class Entries:
    """The file's entries, validated: what ``apply_config`` writes."""

    tenants: tuple[TenantEntry, ...]
    accounts: tuple[AccountPayload, ...]


def check_entries(
    settings: Settings, tenant_exists: Callable[[str], bool] | None = None
) -> Entries:
    """Validate every entry as the API would; ``ConfigError`` lists every problem found.

    An account's tenant must be one of the file's ``[[tenants]]`` or, when
    ``tenant_exists`` is given (the database, at start-up), an existing tenant.
    """
    source = settings.config_path or "config"
    problems: list[str] = []
    tenants: list[TenantEntry] = []
    for index, entry in enumerate(settings.tenants, start=1):
        tenant, found = _check_tenant(entry, settings.public_url)
        problems += [f"{_label('tenants', index, entry)} in {source}: {p}" for p in found]
        if tenant is not None:
            tenants.append(tenant)
    in_file = {e["id"] for e in settings.tenants if isinstance(e.get("id"), str)}
    accounts: list[AccountPayload] = []
    for index, entry in enumerate(settings.accounts, start=1):
        account, found = _check_account(entry, in_file, tenant_exists)
        problems += [f"{_label('accounts', index, entry)} in {source}: {p}" for p in found]
        if account is not None:
            accounts.append(account)
    if problems:
        raise ConfigError(*problems)
    return Entries(tuple(tenants), tuple(accounts))


def apply_config(settings: Settings, store: Database, now: int) -> tuple[int, int]:
    """Check every entry, then apply tenants and accounts; returns how many of each were created."""
    entries = check_entries(settings, store.tenants.exists)
    source = settings.config_path or "config"
    tenants_created = 0
    for tenant in entries.tenants:
        payload = tenant.payload
        if store.tenants.upsert(payload.id, payload.stored_fields(), now):
            tenants_created += 1
            logger.info(
                "tenant %s created from %s", payload.id, source, extra={"tenant_id": payload.id}
            )
        if tenant.api_key is not None:
            _provision_key(store, payload, tenant.api_key, now)
    accounts_created = 0
    for account in entries.accounts:
        tenant_id = account.tenant_id or ""  # check_entries refused an account without one
        if store.accounts.upsert(tenant_id, account.id, account.stored_fields(), now):
            accounts_created += 1
            logger.info(
                "account %s created from %s",
                account.id,
                source,
                extra={"tenant_id": tenant_id, "account_id": account.id},
            )
    return tenants_created, accounts_created


def _check_tenant(
    entry: Mapping[str, Any], public_url: str | None
) -> tuple[TenantEntry | None, list[str]]:
    """``POST /tenant``'s checks (the model, then §9.8 rule 2) plus the file-only ``api_key``."""
    problems: list[str] = []
    api_key = entry.get("api_key")
    if api_key is not None and (not isinstance(api_key, str) or len(api_key) < MIN_API_KEY_CHARS):
        problems.append(f"api_key: must be a string of at least {MIN_API_KEY_CHARS} characters")
    try:
        payload = TenantPayload.model_validate({k: v for k, v in entry.items() if k != "api_key"})
    except pydantic.ValidationError as exc:
        return None, _problems(exc) + problems
    reason = large.link_base_problem(payload.stored_fields().get("large_file_config"), public_url)
    if reason is not None:
        problems.append(f"large_file_config.public_base_url: {reason}")
    if problems:
        return None, problems
    return TenantEntry(payload, api_key), []


def _check_account(
    entry: Mapping[str, Any],
    in_file: set[str],
    tenant_exists: Callable[[str], bool] | None,
) -> tuple[AccountPayload | None, list[str]]:
    try:
        account = AccountPayload.model_validate(dict(entry))
    except pydantic.ValidationError as exc:
        return None, _problems(exc)
    tenant_id = account.tenant_id
    if not tenant_id:
        return None, ["tenant_id: field required"]
    if tenant_id in in_file or (tenant_exists is not None and tenant_exists(tenant_id)):
        return account, []
    if tenant_exists is None:
        return None, [
            f"tenant_id: tenant {tenant_id!r} is not one of the file's [[tenants]] "
            "(config check does not read the database)"
        ]
    return None, [f"tenant_id: tenant {tenant_id!r} not found"]


def _problems(exc: pydantic.ValidationError) -> list[str]:
    """One ``key: reason`` per pydantic error, the key dotted as in the file."""
    found = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in err["loc"]) or "entry"
        found.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return found


def _label(kind: str, index: int, entry: Mapping[str, Any]) -> str:
    ident = entry.get("id")
    return f"[[{kind}]] #{index}" + (f" (id={ident!r})" if isinstance(ident, str) else "")


def _provision_key(store: Database, payload: TenantPayload, api_key: str, now: int) -> None:
    key_digest = digest(api_key)
    if not store.tenants.has_api_key_hash(payload.id, key_digest):
        store.tenants.set_api_key(payload.id, key_digest, payload.api_key_expires_at, now)
        logger.info(
            "api key provisioned for tenant %s", payload.id, extra={"tenant_id": payload.id}
        )
