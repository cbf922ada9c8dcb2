"""The command log (SPEC §3.13): ``GET /command-log``, ``/command-log/export``, ``POST …/purge``.

Entries are written by ``proxy.api.audit``; payloads are stored already masked.
"""

from __future__ import annotations

from typing import Annotated, Any

import falcon
from pydantic import BaseModel, ConfigDict, Field

from proxy.api._body import MAX_INT64, omit_none, query_int, read_object, validate
from proxy.api._doc import ADMIN, Param, operation
from proxy.api.accounts import named_param
from proxy.api.deps import Deps
from proxy.store.command_log import CommandFilter, CommandLogStore, CommandRecord

CLOSED = ConfigDict(extra="forbid")
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_EXPORT = 100_000

RANGE_QUERY = (
    Param("tenant_id", description="only this tenant's commands"),
    Param("since_ts", "integer", description="commands at or after this time"),
    Param("until_ts", "integer", description="commands at or before this time"),
)


class CommandEntry(BaseModel):
    model_config = CLOSED
    id: int
    command_ts: int
    endpoint: str
    tenant_id: str | None = None
    actor: str
    payload: dict[str, Any] | None = None
    response_status: int


class CommandPage(BaseModel):
    model_config = CLOSED
    ok: bool
    commands: list[CommandEntry]
    total: int


class ExportedCommand(BaseModel):
    model_config = CLOSED
    endpoint: str
    tenant_id: str | None = None
    payload: dict[str, Any] | None = None
    command_ts: int


class CommandExport(BaseModel):
    model_config = CLOSED
    ok: bool
    commands: list[ExportedCommand]


class PurgeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    before_ts: Annotated[int, Field(ge=0, le=MAX_INT64)]


class PurgeResult(BaseModel):
    model_config = CLOSED
    ok: bool
    removed: int


def _filter(req: falcon.Request, *, with_endpoint: bool = False) -> CommandFilter:
    return CommandFilter(
        tenant_id=named_param(req, "tenant_id"),
        since_ts=query_int(req, "since_ts"),
        until_ts=query_int(req, "until_ts"),
        endpoint_filter=req.get_param("endpoint_filter") if with_endpoint else None,
    )


def _entry(record: CommandRecord) -> dict[str, Any]:
    return omit_none(
        {
            "id": record.id,
            "command_ts": record.command_ts,
            "endpoint": record.endpoint,
            "tenant_id": record.tenant_id,
            "actor": record.actor,
            "payload": record.payload,
            "response_status": record.response_status,
        }
    )


class CommandLog:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._log = CommandLogStore(deps.store.db)

    @operation(
        summary="Query the command log",
        description="Newest first; endpoint_filter matches a part of the command name.",
        access=ADMIN,
        tag="Command log",
        response=CommandPage,
        errors=(422,),
        query=(
            *RANGE_QUERY,
            Param("endpoint_filter", description="substring of the command name"),
            Param("limit", "integer", description=f"1 to {MAX_LIMIT}, default {DEFAULT_LIMIT}"),
            Param("offset", "integer", description="entries to skip, default 0"),
        ),
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = query_int(req, "limit", minimum=1, maximum=MAX_LIMIT) or DEFAULT_LIMIT
        offset = query_int(req, "offset") or 0
        records, total = self._log.page(
            _filter(req, with_endpoint=True), limit=limit, offset=offset
        )
        resp.media = {"ok": True, "commands": [_entry(r) for r in records], "total": total}

    @operation(
        summary="Export the command log",
        description=f"Oldest first, at most {MAX_EXPORT} entries.",
        access=ADMIN,
        tag="Command log",
        response=CommandExport,
        errors=(422,),
        query=RANGE_QUERY,
    )
    def on_get_export(self, req: falcon.Request, resp: falcon.Response) -> None:
        records = self._log.export(_filter(req), limit=MAX_EXPORT)
        resp.media = {
            "ok": True,
            "commands": [
                omit_none(
                    {
                        "endpoint": r.endpoint,
                        "tenant_id": r.tenant_id,
                        "payload": r.payload,
                        "command_ts": r.command_ts,
                    }
                )
                for r in records
            ],
        }

    @operation(
        summary="Delete command log entries older than a time",
        access=ADMIN,
        tag="Command log",
        request=PurgeRequest,
        response=PurgeResult,
        errors=(413, 422),
    )
    def on_post_purge(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = validate(PurgeRequest, read_object(req, self.deps.settings.max_request_mb))
        resp.media = {"ok": True, "removed": self._log.purge(body.before_ts)}
