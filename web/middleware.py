"""The client port's middlewares, outermost first: latency per route, bearer tokens (`web.auth`), aiohttp's own
errors as JSON, and no query parameter the document does not list for the operation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web as aiohttp_web

from payments_app.runtime.metrics import HTTP_SECONDS
from payments_app.service.app import app

OPENAPI_PATH = Path(__file__).with_name("openapi.json")


@aiohttp_web.middleware
async def json_errors(request: aiohttp_web.Request, handler: Any) -> aiohttp_web.StreamResponse:
    """aiohttp's own answers (unknown path, wrong method) as JSON errors like ours."""
    try:
        return await handler(request)
    except aiohttp_web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        body = orjson.dumps({"error": code, "detail": f"{request.method} {request.path}: {exc.reason}"})
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None  # a 405 names what is allowed
        return aiohttp_web.Response(status=exc.status, body=body, content_type="application/json", headers=allow)


app.web.web_app.middlewares.append(json_errors)


@aiohttp_web.middleware
async def timed(request: aiohttp_web.Request, handler: Any) -> aiohttp_web.StreamResponse:
    """Every client request's latency, by route (its pattern, so ids do not become labels) and status."""
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except aiohttp_web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        HTTP_SECONDS.labels(request.method, route, str(status)).observe(time.monotonic() - started)


app.web.web_app.middlewares.insert(0, timed)


def documented_query_parameters() -> dict[tuple[str, str], frozenset[str]]:
    """Each operation's query parameters, as web/openapi.json documents them."""
    paths = orjson.loads(OPENAPI_PATH.read_bytes())["paths"]
    return {
        (method.upper(), path): frozenset(p["name"] for p in operation.get("parameters", ()) if p["in"] == "query")
        for path, operations in paths.items()
        for method, operation in operations.items()
    }


QUERY_PARAMETERS = documented_query_parameters()


@aiohttp_web.middleware
async def known_query_only(request: aiohttp_web.Request, handler: Any) -> aiohttp_web.StreamResponse:
    """A query parameter the route does not take is refused (400), not ignored: `?wiat=5` is a client's bug."""
    resource = request.match_info.route.resource
    allowed = QUERY_PARAMETERS.get((request.method, resource.canonical)) if resource is not None else None
    if allowed is not None:
        unknown = sorted(set(request.query) - allowed)
        if unknown:
            detail = f"unknown query parameter(s) {', '.join(repr(name) for name in unknown)}"
            body = orjson.dumps({"error": "malformed_request", "detail": detail})
            return aiohttp_web.Response(status=400, body=body, content_type="application/json")
    return await handler(request)


app.web.web_app.middlewares.append(known_query_only)
