"""Tests for proxy.api.openapi, proxy.api.docs and proxy.api.message_schema (SPEC §3.1 rule 8).

Generic over THE route table: every routed operation is checked, so routes added
later are held to the same rules without editing this file.
"""

from __future__ import annotations

import configparser
import fnmatch
import re
from importlib import resources
from pathlib import Path

import pytest
from falcon.testing import TestClient
from openapi_spec_validator import OpenAPIV31SpecValidator
from pydantic import BaseModel

from proxy.api import attachment_fields, validation
from proxy.api._doc import ADMIN, AUTH, PUBLIC, Operation, Param
from proxy.api.deps import Deps
from proxy.api.docs import ASSETS, CSP
from proxy.api.message_schema import (
    AddMessagesRequest,
    Attachment,
    AttachmentAuth,
    MessagePayload,
    example_request,
)
from proxy.api.openapi import REF_TEMPLATE, build_document
from proxy.app import create_app, operations, routes
from proxy.metrics import Metrics
from proxy.store import Database
from tests.fixtures.engine import FakeEngine
from tests.fixtures.stores import make_settings

ADMIN_TOKEN = "admin-token"
ERROR_REF = {"$ref": "#/components/schemas/Error"}


@pytest.fixture
def client(store: Database) -> TestClient:
    return TestClient(create_app(make_settings(api_token=ADMIN_TOKEN), store, FakeEngine()))


@pytest.fixture
def document(client: TestClient) -> dict:
    response = client.simulate_get("/openapi.json")  # no token: the route is Public
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    return response.json


def table_operations(store: Database, **settings: object) -> list[tuple[str, str, Operation]]:
    deps = Deps(make_settings(**settings), store, FakeEngine(), Metrics())
    return list(operations(routes(deps)))


def doc_path(template: str) -> str:
    return re.sub(r"\{(\w+)[^}]*\}", r"{\1}", template)


# -- the document as a whole -----------------------------------------------------------


def test_document_passes_openapi_spec_validator(document: dict) -> None:
    assert document["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(document).validate()


def test_every_routed_operation_is_documented_with_its_access_level(
    document: dict, store: Database
) -> None:
    rows = table_operations(store, api_token=ADMIN_TOKEN)
    documented = {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert documented == {(doc_path(t), m) for t, m, _ in rows}
    for template, method, op in rows:
        entry = document["paths"][doc_path(template)][method.lower()]
        assert entry["x-access-level"] == op.access, (template, method)
        assert entry["summary"] == op.summary
        assert op.tag in entry["tags"]


def test_every_operation_states_summary_security_and_error_responses(document: dict) -> None:
    schemes = document["components"]["securitySchemes"]
    for path, item in document["paths"].items():
        for method, entry in item.items():
            where = f"{method.upper()} {path}"
            assert entry["summary"].strip(), where
            level = entry["x-access-level"]
            assert level in (PUBLIC, AUTH, ADMIN), where
            assert level.capitalize() in entry["description"], where
            if level == PUBLIC:
                assert entry["security"] == [], where
                continue
            assert {"apiToken": []} in entry["security"], where
            assert all(name in schemes for req in entry["security"] for name in req), where
            for status in ("401", "403"):
                error = entry["responses"][status]
                assert error["content"]["application/json"]["schema"] == ERROR_REF, where


def test_declared_error_statuses_reference_the_one_error_schema(
    document: dict, store: Database
) -> None:
    for template, method, op in table_operations(store, api_token=ADMIN_TOKEN):
        responses = document["paths"][doc_path(template)][method.lower()]["responses"]
        assert "200" in responses
        for status in op.errors:
            content = responses[str(status)]["content"]["application/json"]
            assert content["schema"] == ERROR_REF, (template, method, status)
        if op.request is not None:
            assert {"413", "422"} <= set(responses), (template, method)


def test_error_schema_matches_what_the_api_sends(client: TestClient, document: dict) -> None:
    schema = document["components"]["schemas"]["Error"]
    assert schema["required"] == ["ok", "error"]
    unauthorized = client.simulate_get("/tenants").json
    assert unauthorized["ok"] is False
    assert set(unauthorized) <= set(schema["properties"])
    invalid = client.simulate_post(
        "/tenant", headers={"X-API-Token": ADMIN_TOKEN}, body="not json"
    ).json
    assert invalid["detail"][0]["loc"] == ["body"]


def test_request_and_response_schemas_are_the_handlers_models(
    document: dict, store: Database
) -> None:
    components = document["components"]["schemas"]
    models: set[type[BaseModel]] = set()
    for template, method, op in table_operations(store, api_token=ADMIN_TOKEN):
        entry = document["paths"][doc_path(template)][method.lower()]
        if op.request is not None:
            models.add(op.request)
            body = entry["requestBody"]["content"]["application/json"]["schema"]
            assert body["$ref"].removeprefix("#/components/schemas/") in components
        if op.response is not None:
            content = entry["responses"]["200"]["content"][op.response_media]
            assert content["schema"]["$ref"].removeprefix("#/components/schemas/") in components
    for model in models:  # a model whose name another model shares gets a longer one
        if model.__name__ in components:
            own = model.model_json_schema(ref_template=REF_TEMPLATE)
            own.pop("$defs", None)
            assert components[model.__name__] == own, model.__name__


def test_path_and_query_parameters_come_from_the_route_and_its_params(document: dict) -> None:
    for path, item in document["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        for entry in item.values():
            params = entry.get("parameters", [])
            assert {p["name"] for p in params if p["in"] == "path"} == names, path
            assert all(p["required"] for p in params if p["in"] == "path")


def test_metrics_accepts_bearer_and_is_public_when_configured(store: Database) -> None:
    secured = TestClient(create_app(make_settings(api_token="t"), store, FakeEngine()))
    entry = secured.simulate_get("/openapi.json").json["paths"]["/metrics"]["get"]
    assert entry["security"] == [{"apiToken": []}, {"metricsBearer": []}]
    public = TestClient(
        create_app(make_settings(api_token="t", metrics_public=True), store, FakeEngine())
    )
    entry = public.simulate_get("/openapi.json").json["paths"]["/metrics"]["get"]
    assert entry["security"] == []
    assert "401" not in entry["responses"]
    assert public.simulate_get("/metrics").status_code == 200


def test_operation_without_models_is_documented_as_generic_json() -> None:
    op = Operation(
        summary="Do a thing",
        access=ADMIN,
        tag="Things",
        errors=(404, 409),
        query=(Param("limit", "integer"), Param("state", enum=("a", "b"))),
    )
    document = build_document([("/things/{thing_id:int}", "DELETE", op)], version="9")
    OpenAPIV31SpecValidator(document).validate()
    entry = document["paths"]["/things/{thing_id}"]["delete"]
    assert entry["responses"]["200"]["content"]["application/json"]["schema"] == {"type": "object"}
    assert set(entry["responses"]) == {"200", "401", "403", "404", "409", "422"}
    params = {p["name"]: p for p in entry["parameters"]}
    assert params["thing_id"]["schema"] == {"type": "integer"}
    assert params["state"]["schema"] == {"type": "string", "enum": ["a", "b"]}
    assert "requestBody" not in entry


# -- the add-messages models and the real validator ----------------------------------------


def test_spec_example_validates_against_the_models_and_parse_batch() -> None:
    body = example_request()
    request = AddMessagesRequest.model_validate(body)
    assert [m.id for m in request.messages] == ["WELCOME-77", "INV-2026-0042", "BAD-1"]
    assert request.messages[0].from_ == "ACME <hello@acme.example>"
    batch = validation.parse_batch(
        body,
        principal_tenant=None,
        instance_default_priority=2,
        tenant_exists=lambda tenant: tenant == "acme",
        account_exists=lambda tenant, account: (tenant, account) == ("acme", "main"),
    )
    assert [a.id for a in batch.accepted] == ["WELCOME-77", "INV-2026-0042"]
    assert [a.priority for a in batch.accepted] == [1, 3]
    assert [r.as_dict() for r in batch.rejected] == [
        {"id": "BAD-1", "field": "to", "reason": "invalid address in to: 'missing-domain@'"}
    ]


def test_message_model_documents_every_field_the_validator_reads() -> None:
    documented = {field.alias or name for name, field in MessagePayload.model_fields.items()}
    source = Path(validation.__file__).read_text()
    read = set(re.findall(r'fields(?:\.get\(|\[)"(\w+)"', source))
    read |= set(re.findall(r'_optional_header_text\(fields, "(\w+)"', source))
    read |= {"to", "cc", "bcc", "reply_to"}  # read in a loop over names
    assert read <= documented, read - documented


def test_attachment_model_matches_the_validators_strict_keys() -> None:
    assert set(Attachment.model_fields) == attachment_fields._ATTACHMENT_KEYS
    assert set(AttachmentAuth.model_fields) == attachment_fields._AUTH_KEYS
    modes = Attachment.model_json_schema()["properties"]["fetch_mode"]["anyOf"][0]["enum"]
    assert set(modes) == attachment_fields._FETCH_MODES


def test_add_messages_request_is_documented_with_the_spec_example(document: dict) -> None:
    schema = document["components"]["schemas"]["AddMessagesRequest"]
    assert schema["examples"] == [example_request()]
    payload = document["components"]["schemas"]["MessagePayload"]
    assert "from" in payload["properties"]
    assert "from_" not in payload["properties"]
    attachment = document["components"]["schemas"]["Attachment"]
    assert attachment["additionalProperties"] is False


# -- the pages and their assets --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_pages_load_only_local_assets(client: TestClient, path: str) -> None:
    response = client.simulate_get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == CSP
    assert "http:" not in CSP
    assert "https:" not in CSP
    urls = re.findall(r'(?:src|href|spec-url)="([^"]+)"', response.text)
    assert urls
    for url in urls:
        assert url in {"data:,", "/openapi.json"} or url.startswith("/docs/assets/"), url
        if url.startswith("/docs/assets/"):
            asset = client.simulate_get(url)
            assert asset.status_code == 200, url
            assert asset.headers["content-type"].startswith(("text/javascript", "text/css"))


def test_swagger_ui_online_validator_is_off(client: TestClient) -> None:
    script = client.simulate_get("/docs/assets/swagger-init.js").text
    assert "validatorUrl: null" in script
    assert 'url: "/openapi.json"' in script


def test_assets_are_cached_and_revalidated(client: TestClient) -> None:
    first = client.simulate_get("/docs/assets/swagger-ui.css")
    assert first.headers["cache-control"] == "public, max-age=86400"
    etag = first.headers["etag"]
    again = client.simulate_get("/docs/assets/swagger-ui.css", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    document = client.simulate_get("/openapi.json")
    assert document.headers["cache-control"] == "no-cache"
    unchanged = client.simulate_get(
        "/openapi.json", headers={"If-None-Match": document.headers["etag"]}
    )
    assert unchanged.status_code == 304


@pytest.mark.parametrize("name", ["nope.js", "..", "LICENSE", "swagger-ui-bundle.js.map"])
def test_unknown_asset_is_a_json_404(client: TestClient, name: str) -> None:
    response = client.simulate_get(f"/docs/assets/{name}")
    assert response.status_code == 404
    assert response.json == {
        "ok": False,
        "error": f"Asset '{name}' not found",
        "detail": f"Asset '{name}' not found",
    }


def test_every_vendored_asset_ships_with_its_license() -> None:
    static = resources.files("proxy.api").joinpath("static")
    for path, _ in ASSETS.values():
        assert static.joinpath(*path.split("/")).is_file(), path
        folder = path.rpartition("/")[0]
        if folder:  # vendored (ours, swagger-init.js, sits at the top)
            assert static.joinpath(folder, "LICENSE").is_file(), folder


def test_setup_cfg_packages_the_static_files() -> None:
    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parents[3] / "setup.cfg")
    patterns = config["options.package_data"]["proxy"].split()
    static = resources.files("proxy.api").joinpath("static")
    shipped = [  # every file under static/, as a path relative to the proxy package
        f"api/static/{entry.name}" if entry.is_file() else f"api/static/{entry.name}/{inner.name}"
        for entry in static.iterdir()
        for inner in ([entry] if entry.is_file() else entry.iterdir())
    ]
    assert len(shipped) > len(ASSETS)
    for path in shipped:
        assert any(
            fnmatch.fnmatch(path, p) and path.count("/") == p.count("/") for p in patterns
        ), path
