"""A Markdown reference of the HTTP API, generated from the OpenAPI document.

    .venv/bin/python -m app.api.reference > docs/api-reference.md

The document is the one ``GET /openapi.json`` serves (:func:`app.api.openapi.document`
over :data:`app.api.routes.ROUTES` and :data:`app.api.compat.ROUTES`), so the
reference describes exactly the routes and models the handlers validate with;
``tests/test_reference.py`` fails when the committed file differs from what this module
prints.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

COMMAND = ".venv/bin/python -m app.api.reference > docs/api-reference.md"
_REF_PREFIX = "#/components/schemas/"


def _cell(text: str) -> str:
    """``text`` made safe for one cell of a Markdown table."""
    return " ".join(text.split()).replace("|", "\\|")


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _anchor(name: str) -> str:
    return f"schema-{name.lower()}"


def _schema_link(ref: str) -> str:
    name = ref.removeprefix(_REF_PREFIX)
    return f"[`{name}`](#{_anchor(name)})"


def _variants(schema: dict[str, Any]) -> list[dict[str, Any]]:
    variants: list[dict[str, Any]] = schema.get("oneOf", [schema])
    return variants


def _type(schema: dict[str, Any]) -> str:
    """``string``, ``array of string``, ``string or integer``, a schema link, …"""
    names: list[str] = []
    for variant in _variants(schema):
        if "$ref" in variant:
            names.append(_schema_link(variant["$ref"]))
            continue
        name = str(variant.get("type", "any"))
        if name == "array" and isinstance(variant.get("items"), dict):
            name = f"array of {_type(variant['items'])}"
        names.append(name)
    if any(variant.get("nullable") for variant in _variants(schema)):
        names.append("null")
    return " or ".join(names)


def _constraints(schema: dict[str, Any]) -> str:
    """The limits a field's schema states (enum, range, sizes), in words."""
    out: list[str] = []
    for variant in _variants(schema):
        if "enum" in variant:
            out.append("one of " + ", ".join(f"`{v}`" for v in variant["enum"]))
        if "minimum" in variant:
            out.append(f"min {_number(variant['minimum'])}")
        if "maximum" in variant:
            out.append(f"max {_number(variant['maximum'])}")
        if "minLength" in variant:
            out.append(f"at least {_number(variant['minLength'])} characters")
        if "maxLength" in variant:
            out.append(f"at most {_number(variant['maxLength'])} characters")
        if "pattern" in variant:
            out.append(f"matches `{variant['pattern']}`")
        if "minItems" in variant:
            out.append(f"at least {_number(variant['minItems'])} items")
        if "maxItems" in variant:
            out.append(f"at most {_number(variant['maxItems'])} items")
    return "; ".join(out)


def _fields_table(schema: dict[str, Any]) -> list[str]:
    properties: dict[str, Any] = schema.get("properties", {})
    if not properties:
        return ["No declared fields."]
    required = set(schema.get("required", []))
    lines = ["| field | type | required | constraints | description |",
             "|---|---|---|---|---|"]
    for name, prop in properties.items():
        lines.append(f"| `{name}` | {_cell(_type(prop))} | {'yes' if name in required else 'no'}"
                     f" | {_cell(_constraints(prop))} | {_cell(prop.get('description', ''))} |")
    return lines


def _parameters(op: dict[str, Any]) -> list[str]:
    params: list[dict[str, Any]] = op.get("parameters", [])
    if not params:
        return []
    lines = ["**Parameters**", "", "| name | in | type | required | description |",
             "|---|---|---|---|---|"]
    for p in params:
        lines.append(f"| `{p['name']}` | {p['in']} | {_cell(_type(p.get('schema', {})))} | "
                     f"{'yes' if p.get('required') else 'no'} | "
                     f"{_cell(p.get('description', ''))} |")
    return [*lines, ""]


def _request_body(op: dict[str, Any], schemas: dict[str, Any]) -> list[str]:
    body: dict[str, Any] | None = op.get("requestBody")
    if body is None:
        return []
    lines: list[str] = []
    for media, content in body.get("content", {}).items():
        schema: dict[str, Any] = content.get("schema", {})
        required = "required" if body.get("required") else "optional"
        lines += [f"**Request body** (`{media}`, {required}): {_type(schema)}", ""]
        ref = schema.get("$ref", "")
        target = schemas.get(ref.removeprefix(_REF_PREFIX), schema) if ref else schema
        if target.get("additionalProperties") is False:
            lines += ["Unknown fields are rejected (400).", ""]
        lines += [*_fields_table(target), ""]
    return lines


def _responses(op: dict[str, Any]) -> list[str]:
    lines = ["**Responses**", "", "| status | meaning | body |", "|---|---|---|"]
    responses: dict[str, Any] = op.get("responses", {})
    for status in sorted(responses, key=int):
        response = responses[status]
        bodies = [f"`{media}`: {_type(content.get('schema', {}))}"
                  for media, content in response.get("content", {}).items()]
        lines.append(f"| {status} | {_cell(response.get('description', ''))} | "
                     f"{_cell(', '.join(bodies))} |")
    return [*lines, ""]


def _operation(path: str, method: str, op: dict[str, Any], schemas: dict[str, Any],
               ) -> list[str]:
    auth = ", ".join(f"`{name}`" for requirement in op.get("security", [])
                     for name in requirement) or "none"
    return [
        f"### `{method.upper()} {path}`",
        "",
        op.get("summary", ""),
        "",
        f"Operation `{op.get('operationId', '')}` · auth: {auth}",
        "",
        *_parameters(op),
        *_request_body(op, schemas),
        *_responses(op),
    ]


def _operations_by_tag(doc: dict[str, Any]) -> dict[str, list[tuple[str, str, Any]]]:
    groups: dict[str, list[tuple[str, str, Any]]] = {}
    for path, methods in doc.get("paths", {}).items():
        for method, op in methods.items():
            tag = (op.get("tags") or ["other"])[0]
            groups.setdefault(tag, []).append((path, method, op))
    return groups


def _schema_section(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f'<a id="{_anchor(name)}"></a>', "", f"### `{name}`", ""]
    if schema.get("description"):
        lines += [schema["description"], ""]
    extra = "allowed" if schema.get("additionalProperties") else "not allowed"
    lines += [f"Other properties: {extra}.", "", *_fields_table(schema), ""]
    if schema.get("example"):
        lines += ["Example:", "", "```json",
                  json.dumps(schema["example"], indent=2, ensure_ascii=False), "```", ""]
    return lines


def _header(doc: dict[str, Any]) -> list[str]:
    info: dict[str, Any] = doc.get("info", {})
    schemes: dict[str, Any] = doc.get("components", {}).get("securitySchemes", {})
    lines = [
        f"<!-- Generated by `{COMMAND}` from the OpenAPI document; do not edit by hand "
        "(tests/test_reference.py checks it is current). -->",
        "# HTTP API reference",
        "",
        f"Generated by `{COMMAND}` from the OpenAPI {doc.get('openapi', '')} document that "
        "the sidecar serves at `GET /openapi.json` (app/api/openapi.py, built from the "
        "route table app/api/routes.py and the models the handlers validate with). "
        "[api.md](api.md) explains the conventions, health and metrics.",
        "",
        f"**{info.get('title', '')}** {info.get('version', '')}: {info.get('description', '')}",
        "",
    ]
    for name, scheme in schemes.items():
        lines += [f"Security scheme `{name}`: {scheme.get('type', '')} "
                  f"{scheme.get('scheme', '')}; operations marked `auth: {name}` need it.", ""]
    return lines


def render(doc: dict[str, Any]) -> str:
    """The whole Markdown reference of the OpenAPI document ``doc``."""
    schemas: dict[str, Any] = doc.get("components", {}).get("schemas", {})
    groups = _operations_by_tag(doc)
    lines = _header(doc)
    lines += ["## All routes", "", "| method | path | summary |", "|---|---|---|"]
    for ops in groups.values():
        lines += [f"| {method.upper()} | `{path}` | {_cell(op.get('summary', ''))} |"
                  for path, method, op in ops]
    lines.append("")
    for tag, ops in groups.items():
        lines += [f"## {tag.capitalize()}", ""]
        for path, method, op in ops:
            lines += _operation(path, method, op, schemas)
    lines += ["## Schemas", ""]
    for name, schema in schemas.items():
        lines += _schema_section(name, schema)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def main() -> None:
    from app.api.compat import ROUTES as DATAMANAGE
    from app.api.openapi import document
    from app.api.routes import ROUTES

    out = sys.stdout
    if isinstance(out, io.TextIOWrapper):
        out.reconfigure(encoding="utf-8", newline="\n")
    out.write(render(document((*ROUTES, *DATAMANAGE))))


if __name__ == "__main__":
    main()
