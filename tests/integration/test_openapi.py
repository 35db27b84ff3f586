"""The API's OpenAPI document, generated from the request types, and the interactive API page."""

from __future__ import annotations

import re
from typing import Any

import httpx
import msgspec
import pytest

from hubbub.api.methods import ServerAPI
from hubbub.api.openapi import CHECKED_REQUIRED, openapi_document
from hubbub.app import create_app
from hubbub.node import Node
from tests.conftest import API_KEY, RunningServer, suite_settings

Doc = dict[str, Any]


def resolve(doc: Doc, schema: Doc) -> Doc:
    """``schema`` with a top-level ``$ref`` followed."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    resolved: Doc = doc["components"]["schemas"][ref.removeprefix("#/components/schemas/")]
    return resolved


def request_schema(doc: Doc, method: str) -> Doc:
    post = doc["paths"][f"/api/{method}"]["post"]
    return resolve(doc, post["requestBody"]["content"]["application/json"]["schema"])


def field_names(kind: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(kind)}


async def get_document(server: RunningServer) -> Doc:
    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.get("/api/openapi.json")
    assert response.status_code == 200
    doc: Doc = response.json()
    return doc


async def test_every_method_of_the_router_has_the_schema_of_its_request_type(
    server: RunningServer,
) -> None:
    doc = await get_document(server)
    # The methods a server of the same settings routes, with the types they decode.
    api: ServerAPI = create_app(node=Node(suite_settings())).state.api
    types = api.request_types
    assert {"publish", "batch", "notify", "chat_send", "chat_rooms"} <= set(types)
    assert set(doc["paths"]) == {f"/api/{name}" for name in types}
    for name, kind in types.items():
        post = doc["paths"][f"/api/{name}"]["post"]
        assert post["operationId"] == name and post["summary"]
        schema = request_schema(doc, name)
        assert schema["type"] == "object"
        assert set(schema["properties"]) == field_names(kind), name
        ok = post["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok, name
        # Fields without a default are required; so are those the method checks itself.
        required = {f.encode_name for f in msgspec.structs.fields(kind) if f.required}
        assert set(schema.get("required", [])) == required | set(CHECKED_REQUIRED.get(name, ()))


async def test_a_request_types_fields_appear_as_they_are_typed(server: RunningServer) -> None:
    doc = await get_document(server)
    publish = request_schema(doc, "publish")
    assert publish["required"] == ["channel"]
    props = publish["properties"]
    assert props["channel"]["type"] == "string"
    assert props["skip_history"] == {"type": "boolean", "default": False}
    assert props["tags"]["type"] == "object"
    assert props["tags"]["additionalProperties"] == {"type": "string"}
    assert "type" not in props["data"]  # any JSON value

    history = request_schema(doc, "history")
    since = history["properties"]["since"]
    assert since["nullable"] is True
    position = resolve(doc, since["allOf"][0])
    assert set(position["properties"]) == {"offset", "epoch"}
    assert position["properties"]["offset"]["minimum"] == 0

    # Two types named HistoryRequest (the API's and the chat's) stay two components.
    chat_history = request_schema(doc, "chat_history")
    assert set(chat_history["properties"]) == {"room", "limit", "before"}
    assert chat_history["required"] == ["room"]

    notify = request_schema(doc, "notify")
    assert notify["required"] == ["body"]
    assert notify["properties"]["users"] == {
        "type": "array",
        "items": {"type": "string"},
        "nullable": True,
    }
    # Results are described too.
    post = doc["paths"]["/api/chat_rooms"]["post"]
    result = post["responses"]["200"]["content"]["application/json"]["schema"]["oneOf"][0]
    page = resolve(doc, result["properties"]["result"])
    assert set(page["properties"]) == {"rooms", "next", "total"}


async def test_a_new_method_is_documented_by_its_type_alone() -> None:
    class EchoRequest(msgspec.Struct):
        """Say it back."""

        words: list[str]
        loud: bool = False

    async def echo(request: EchoRequest) -> dict[str, Any]:
        return {"words": request.words}

    api = ServerAPI(Node(suite_settings()))
    api.register("echo", EchoRequest, echo)
    doc = openapi_document("/api", api.request_types)
    schema = request_schema(doc, "echo")
    assert schema["properties"] == {
        "words": {"type": "array", "items": {"type": "string"}},
        "loud": {"type": "boolean", "default": False},
    }
    assert schema["required"] == ["words"]
    assert schema["description"] == "Say it back."


def test_a_required_field_that_is_not_in_the_type_stops_the_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(CHECKED_REQUIRED, "presence", ("channel", "chanel"))
    api = ServerAPI(Node(suite_settings()))
    with pytest.raises(ValueError, match="chanel"):
        openapi_document("/api", api.request_types)


async def test_fields_documented_as_required_are_required(server: RunningServer) -> None:
    sample: dict[str, Any] = {"channel": "news", "channels": ["news"], "user": "alice"}
    async with httpx.AsyncClient(base_url=server.http, headers={"X-API-Key": API_KEY}) as http:
        for method, fields in CHECKED_REQUIRED.items():
            for missing in fields:
                body = {f: sample[f] for f in fields if f != missing} | {"data": {"n": 1}}
                reply = (await http.post(f"/api/{method}", json=body)).json()
                assert reply["error"] == {
                    "code": 107,
                    "message": f"bad request: {missing} required",
                }


async def test_the_api_page_is_served_with_its_own_assets_when_enabled(
    start_server: Any,
) -> None:
    running = await start_server(suite_settings(http_api={"key": API_KEY, "docs": True}))
    async with httpx.AsyncClient(base_url=running.http) as http:
        page = await http.get("/api/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "//" not in re.sub(r'"data:[^"]*"', "", page.text)  # nothing from elsewhere
        linked = re.findall(r'(?:src|href|data-openapi)="(/[^"]*)"', page.text)
        assert {"/api/openapi.json", "/api/docs/assets/swagger-ui-bundle.js"} <= set(linked)
        for path in linked:
            asset = await http.get(path)
            assert asset.status_code == 200, path
            assert asset.content, path
        bundle = await http.get("/api/docs/assets/swagger-ui-bundle.js")
        assert "SwaggerUIBundle" in bundle.text


@pytest.mark.parametrize(
    ("overrides", "served"),
    [
        ({}, False),  # production: off unless enabled
        ({"development": True}, True),  # development: on unless disabled
        ({"development": True, "http_api": {"key": API_KEY, "docs": False}}, False),
        ({"http_api": {"key": "", "docs": True}}, False),  # no API, no API page
    ],
    ids=["production", "development", "development-disabled", "api-off"],
)
async def test_the_api_page_is_off_unless_enabled(
    start_server: Any, overrides: dict[str, Any], served: bool
) -> None:
    running = await start_server(suite_settings(**overrides))
    async with httpx.AsyncClient(base_url=running.http) as http:
        page = await http.get("/api/docs")
        asset = await http.get("/api/docs/assets/swagger-ui.css")
    assert page.status_code == (200 if served else 404)
    assert asset.status_code == (200 if served else 404)
