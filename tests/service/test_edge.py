"""The request edge: host names, origins, media types, malformed and hostile bodies, HEAD."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from conftest import tiny_config
from depthscope.service.app import create_app
from depthscope.service.edge import MAX_JSON_DEPTH, json_problem, same_origin, split_host
from depthscope.service.settings import Settings
from fastapi import FastAPI
from test_security import finished_run

pytestmark = pytest.mark.anyio
JSON = {"content-type": "application/json"}


@pytest.fixture
async def idle(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose runs are only stored, never trained."""
    app = create_app(Settings(data_dir=tmp_path, cors_origins=["https://lab.example"]))
    app.state.manager.shutdown()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as c:
        yield c
    app.state.lock.release()


# -- hosts: DNS rebinding ------------------------------------------------------------------------
def test_split_host_handles_ports_and_ipv6() -> None:
    assert split_host("Example.ORG:8000") == ("example.org", "8000")
    assert split_host("[::1]:8000") == ("::1", "8000")
    assert split_host("[::1]") == ("::1", "")
    assert split_host("localhost") == ("localhost", "")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.2", "", "[::2]"])
async def test_host_not_configured_is_400_on_every_path(idle: httpx.AsyncClient, host: str) -> None:
    """Regression: the Host header was not checked, so a DNS-rebound page reached the API."""
    for method, path in [("GET", "/api/runs"), ("GET", "/"), ("POST", "/api/runs")]:
        response = await idle.request(method, path, headers={"host": host}, json={})
        assert response.status_code == 400, (method, path)
        assert "DEPTHSCOPE_ALLOWED_HOSTS" in response.json()["detail"]


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:1234", "[::1]:8000", "LOCALHOST"])
async def test_loopback_hosts_are_served_by_default(idle: httpx.AsyncClient, host: str) -> None:
    assert (await idle.get("/api/health", headers={"host": host})).status_code == 200


async def test_allowed_hosts_setting_extends_the_names(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, allowed_hosts=["lab.example", "localhost"]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://lab.example") as client:
        assert (await client.get("/api/health")).status_code == 200
        assert (await client.get("/api/health", headers={"host": "x.example"})).status_code == 400
    app.state.lock.release()


# -- origins: cross-site requests -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("origin", "own"),
    [
        ("http://localhost:8000", True),
        ("http://LOCALHOST:8000/", True),
        ("https://localhost:8000", False),  # another scheme is another origin
        ("http://localhost:8001", False),
        ("http://localhost", False),
        ("null", False),
        ("http://localhost:99999", False),
    ],
)
def test_same_origin_compares_scheme_host_and_port(origin: str, own: bool) -> None:
    assert same_origin(origin, "localhost:8000", "http") is own


def test_same_origin_knows_default_ports() -> None:
    assert same_origin("http://localhost", "localhost:80", "http")
    assert same_origin("https://lab.example", "lab.example", "https")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
async def test_cross_site_simple_post_is_refused(
    idle: httpx.AsyncClient, content_type: str
) -> None:
    """Regression: a cross-site form or text/plain POST (no CORS preflight) started a run."""
    body = json.dumps(tiny_config(5))
    for origin in ("https://evil.example", "null"):
        headers = {"origin": origin, "content-type": content_type}
        response = await idle.post("/api/runs", content=body, headers=headers)
        assert response.status_code == 403, (origin, content_type)
        assert "origin" in response.json()["detail"]
    assert (await idle.get("/api/runs")).json() == []  # nothing was started


async def test_cross_site_cancel_and_delete_are_refused(idle: httpx.AsyncClient) -> None:
    run_id = (await idle.post("/api/runs", json=tiny_config(5))).json()["id"]
    evil = {"origin": "https://evil.example"}
    assert (await idle.post(f"/api/runs/{run_id}/cancel", headers=evil)).status_code == 403
    assert (await idle.delete(f"/api/runs/{run_id}", headers=evil)).status_code == 403
    assert (await idle.get(f"/api/runs/{run_id}")).json()["status"] == "queued"


async def test_own_and_configured_origins_may_post(idle: httpx.AsyncClient) -> None:
    for origin in ("http://localhost:8000", "https://lab.example"):
        response = await idle.post("/api/runs", json=tiny_config(5), headers={"origin": origin})
        assert response.status_code == 201, origin
    # Reads are not guarded by origin: CORS already keeps other pages from reading them.
    assert (await idle.get("/api/runs", headers={"origin": "https://e.example"})).status_code == 200


# -- media types --------------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/jsonx", "text/json"])
async def test_body_that_is_not_application_json_is_415(
    idle: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = await idle.post("/api/runs", content=b"{}", headers=headers)
    assert response.status_code == 415 and "application/json" in response.json()["detail"]


async def test_json_with_charset_and_empty_posts_are_accepted(idle: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json; charset=utf-8"}
    assert (await idle.post("/api/runs", content=b"{}", headers=headers)).status_code == 201
    run_id = (await idle.post("/api/runs")).json()["id"]  # no body at all: the defaults
    assert (await idle.post(f"/api/runs/{run_id}/cancel")).status_code == 200  # as the page does


# -- malformed and hostile bodies ---------------------------------------------------------------
HOSTILE_BODIES = [
    b'{"a": "\x80"}',  # not UTF-8
    b"\xff\xfe{}",
    b'{"model": ',  # not JSON
    b"{'model': {}}",
    b'{"model": ' + b"[" * 600 + b"]" * 600 + b"}",  # nested arrays inside a field
    b'{"model": {"depth": ' + b"[" * 1000 + b"]" * 1000 + b"}}",
    b"[" * 5000 + b"]" * 5000,
    b'{"model": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}",
    b'{"model": {"activation": "\\ud800"}}',  # lone surrogates in a value, a key, deep down
    b'{"\\udfff": 1}',
    b'{"model": {"depth": ["\\ud800x"]}}',
]


@pytest.mark.parametrize("body", HOSTILE_BODIES)
async def test_hostile_body_is_422_never_500_or_400(idle: httpx.AsyncClient, body: bytes) -> None:
    """Regression: invalid UTF-8 answered 400 (undocumented); arrays nested 500-1000 deep and
    lone surrogates answered 500 (RecursionError, UnicodeEncodeError in the error handler)."""
    response = await idle.post("/api/runs", content=body, headers=JSON)
    assert response.status_code == 422, response.text[:300]
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body"] and detail[0]["type"] == "json_invalid"


def test_json_problem_says_what_is_wrong() -> None:
    assert json_problem(b'{"model": {"depth": 3}}') is None
    assert "UTF-8" in str(json_problem(b'"\xc3"'))
    assert "surrogate" in str(json_problem(b'{"x": ["\\ud83d"]}'))
    assert json_problem(b'"\\ud83d\\ude00"') is None  # a proper pair is an emoji
    deep = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert json_problem(deep) is None
    assert "deeper" in str(json_problem(b"[" + deep + b"]"))


@pytest.mark.parametrize(
    "headers",
    [
        {"last-event-id": "\udc80".encode("utf-8", "surrogateescape").decode("latin-1")},
        {"last-event-id": "9" * 64},
        {"last-event-id": "-1--1"},
        {"authorization": "Bearer \xff\xfe"},
        {"cookie": "a=\xff"},
    ],
)
async def test_odd_headers_never_500(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    run_id = await finished_run(client)
    raw = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
    for path in (f"/api/runs/{run_id}/events", f"/api/runs/{run_id}", "/api/health"):
        response = await client.get(path, headers=raw)
        assert response.status_code < 500, (path, response.status_code)


@pytest.mark.parametrize("query", ["metric=%ED%A0%80", "metric=%FF", "max_points=%00", "a=%F0"])
async def test_odd_query_strings_never_500(idle: httpx.AsyncClient, query: str) -> None:
    run_id = (await idle.post("/api/runs", json=tiny_config(5))).json()["id"]
    response = await idle.get(f"/api/runs/{run_id}/series?{query}")
    assert response.status_code == 422, response.text


# -- HEAD -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/api/health", "/api/runs", "/app.js", "/api/schema"])
async def test_head_answers_like_get_without_a_body(client: httpx.AsyncClient, path: str) -> None:
    """Regression: HEAD on GET endpoints answered 405."""
    get, head = await client.get(path), await client.head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-security-policy"] == get.headers["content-security-policy"]


async def test_head_on_streams_ends_at_once(client: httpx.AsyncClient) -> None:
    run_id = await finished_run(client)
    for path in (f"/api/runs/{run_id}/events", f"/api/runs/{run_id}/export?format=csv"):
        head = await client.head(path)
        assert head.status_code == 200 and head.content == b"", path
    assert (await client.head("/api/runs/nope")).status_code == 404
