"""``/openapi.json``: generated from the route table and the models the handlers
validate with (there is no hand-kept copy to drift)."""

from __future__ import annotations

import re
from typing import Any

from app.api.models import ERROR
from app.api.schema import Model

_STATUS_TEXT = {200: "OK", 202: "Accepted", 400: "Invalid input", 401: "Missing or wrong "
                "bearer token", 403: "Cross-origin request refused (Origin neither this "
                "sidecar nor in STOCKQ_API_CORS_ORIGINS), or a change sent with the "
                "read-only token", 404: "Not found",
                409: "Not possible in the current state", 413: "Request body too large",
                415: "Body not sent as Content-Type: application/json",
                502: "ClickHouse failed the statement",
                503: "Redis (or, for ClickHouse routes, ClickHouse) unavailable"}


def _ref(model: Model) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.name}"}


def document(routes: Any) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {ERROR.name: ERROR.json_schema()}
    seen: set[str] = set()
    for route in routes:
        op_id = route.handler.__name__
        if op_id in seen:  # a handler serving several routes, or a name taken already
            op_id = re.sub(r"\W+", "_", f"{route.method.lower()}{route.path}").strip("_")
        seen.add(op_id)
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": op_id,
            "tags": [route.tag],
            "responses": {},
        }
        if route.params:
            op["parameters"] = [
                {"name": p.name, "in": p.where, "required": p.where == "path" or p.required,
                 "schema": {"type": p.type}, **({"description": p.description}
                                                if p.description else {})}
                for p in route.params
            ]
        if route.request is not None:
            schemas[route.request.name] = route.request.json_schema()
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": _ref(route.request)}}}
        ok: dict[str, Any] = {"description": _STATUS_TEXT.get(route.status, "OK")}
        if route.content_type == "application/json":
            schema: dict[str, Any] = {"type": "object"}
            if route.response is not None:
                schemas[route.response.name] = route.response.json_schema()
                schema = _ref(route.response)
            ok["content"] = {"application/json": {"schema": schema}}
        else:
            ok["content"] = {route.content_type: {"schema": {"type": "string"}}}
        op["responses"][str(route.status)] = ok
        for status in route.errors:
            op["responses"][str(status)] = {
                "description": _STATUS_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": _ref(ERROR)}},
            }
        if route.path.startswith(("/api/v1", "/api/datamanage")):
            op["security"] = [{"bearer": []}]
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "stockq sidecar", "version": "1.0.0",
                 "description": "Submit, query, cancel and retry stockq tasks and executions. "
                                'Errors are {"error": {"code", "message"}}. When '
                                "STOCKQ_API_TOKEN is set, /api/v1 needs `Authorization: "
                                "Bearer <token>`. Changes (POST) take JSON bodies only and "
                                "are refused from another site's Origin."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
