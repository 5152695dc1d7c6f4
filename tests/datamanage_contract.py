"""The contract of stock_datasource's data-management API, read at test time from the
real snapshot (``../shared/thirdparty``, unmodified): its frontend client
(``frontend/src/api/datamanage.ts``: the TypeScript types the frontend reads and every
call it makes), its FastAPI router (``modules/datamanage/router.py``: methods, paths,
response models, query limits) and its pydantic schemas (``schemas.py``: fields,
defaults, limits).  Nothing is copied: a change of the snapshot changes what the tests
expect, so a drift fails them.

:func:`check_ts` and :func:`check_model` compare a JSON answer with a TypeScript
interface and a pydantic model: every field present (optional ones may be absent or
null), of the right JSON type, string-literal unions and enums respected, nested
interfaces and models checked in turn.
"""

from __future__ import annotations

import ast
import re
import tarfile
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from tests.sds_env import SNAPSHOT, SNAPSHOT_NAME

FRONTEND = f"{SNAPSHOT_NAME}/frontend/src/api/datamanage.ts"
MODULE = f"{SNAPSHOT_NAME}/src/stock_datasource/modules/datamanage"
PREFIX = "/api/datamanage"


@cache
def snapshot_text(member: str) -> str:
    with tarfile.open(SNAPSHOT) as tar:
        found = tar.extractfile(member)
        assert found is not None, member
        return found.read().decode("utf-8")


# ------------------------------------------------------------------ TypeScript
@dataclass(frozen=True)
class TsField:
    name: str
    type: str
    optional: bool


@dataclass(frozen=True)
class ApiCall:
    method: str  # the client's function name
    verb: str  # GET | POST | PUT | DELETE
    path: str  # with {param} for template parts, no query string
    returns: str  # the Promise<...> type
    params: str  # the function's parameter list as written


@dataclass
class Frontend:
    interfaces: dict[str, dict[str, TsField]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    calls: list[ApiCall] = field(default_factory=list)


_INTERFACE = re.compile(r"export interface (\w+)(?: extends (\w+))? \{\n(.*?)\n\}", re.S)
_ALIAS = re.compile(r"export type (\w+) = (.+)")
_FIELD = re.compile(r"^\s*(\w+)(\?)?:\s*(.+?)\s*(?://.*)?$")
_METHOD = re.compile(r"^  (\w+)\(([^)]*)\): Promise<(.+)> \{$", re.M)
_REQUEST = re.compile(r"request\.(get|post|put|delete)\(")
_PATH = re.compile(r"[`'](/api/datamanage[^`'?$]*(?:\$\{\w+\}[^`'?$]*)*)")


@cache
def frontend() -> Frontend:
    text = snapshot_text(FRONTEND)
    out = Frontend()
    for name, base, body in _INTERFACE.findall(text):
        fields = dict(out.interfaces.get(base, {})) if base else {}
        for line in body.splitlines():
            m = _FIELD.match(line)
            if m and not line.strip().startswith("//"):
                fields[m.group(1)] = TsField(m.group(1), m.group(3), bool(m.group(2)))
        out.interfaces[name] = fields
    for name, value in _ALIAS.findall(text):
        out.aliases[name] = value.strip()
    client = text[text.index("export const datamanageApi"):]
    starts = list(_METHOD.finditer(client))
    for i, m in enumerate(starts):
        body = client[m.end():starts[i + 1].start() if i + 1 < len(starts) else len(client)]
        verb, path = _REQUEST.search(body), _PATH.search(body)
        assert verb and path, m.group(1)
        # ${params} right after a name is a query string ("?category=..."), not a part
        template = re.sub(r"(?<=[\w-])\$\{\w+\}$", "", path.group(1))
        template = re.sub(r"\$\{\w+\}", "{param}", template)
        out.calls.append(ApiCall(m.group(1), verb.group(1).upper(), template, m.group(3),
                                 m.group(2)))
    return out


def check_ts(value: Any, ts_type: str, where: str = "answer") -> None:
    """``value`` is what the frontend's type ``ts_type`` says."""
    fe = frontend()
    ts_type = ts_type.strip()
    if ts_type in ("any", "void", "Blob"):
        return
    if ts_type in fe.aliases:
        check_ts(value, fe.aliases[ts_type], where)
    elif ts_type.endswith("[]"):
        assert isinstance(value, list), f"{where}: {value!r} is not a list ({ts_type})"
        for i, item in enumerate(value):
            check_ts(item, ts_type[:-2], f"{where}[{i}]")
    elif ts_type.startswith("Record<"):
        assert isinstance(value, dict), f"{where}: {value!r} is not an object ({ts_type})"
    elif ts_type.startswith("{"):
        _check_inline(value, ts_type, where)
    elif "|" in ts_type:
        _check_union(value, ts_type, where)
    elif ts_type in _PRIMITIVES:
        assert _PRIMITIVES[ts_type](value), f"{where}: {value!r} is not a {ts_type}"
    elif ts_type in fe.interfaces:
        assert isinstance(value, dict), f"{where}: {value!r} is not a {ts_type} object"
        for name, spec in fe.interfaces[ts_type].items():
            if name not in value or value[name] is None:
                assert spec.optional, f"{where}.{name}: required by {ts_type}, missing or null"
                continue
            check_ts(value[name], spec.type, f"{where}.{name}")
    else:
        raise AssertionError(f"{where}: unknown TypeScript type {ts_type!r}")


_PRIMITIVES = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _check_inline(value: Any, ts_type: str, where: str) -> None:
    assert isinstance(value, dict), f"{where}: {value!r} is not an object"
    for part in ts_type.strip("{} ").split(";"):
        if part.strip():
            name, _, kind = part.partition(":")
            assert name.strip() in value, f"{where}: no {name.strip()!r}"
            check_ts(value[name.strip()], kind, f"{where}.{name.strip()}")


def _check_union(value: Any, ts_type: str, where: str) -> None:
    options = [part.strip() for part in ts_type.split("|")]
    if all(o.startswith("'") for o in options):
        assert value in [o.strip("'") for o in options], \
            f"{where}: {value!r} is not one of {ts_type}"
        return
    errors = []
    for option in options:
        try:
            check_ts(value, option, where)
            return
        except AssertionError as exc:
            errors.append(str(exc))
    raise AssertionError("; ".join(errors))


# ------------------------------------------------------------------ pydantic
@dataclass(frozen=True)
class PyField:
    name: str
    annotation: str
    required: bool
    default: Any
    limits: dict[str, Any]  # ge, le, min_length, max_length, pattern


@cache
def schemas() -> dict[str, dict[str, PyField]]:
    """Model name -> fields (inherited ones too), of schemas.py."""
    tree = ast.parse(snapshot_text(f"{MODULE}/schemas.py"))
    models: dict[str, dict[str, PyField]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name in _enum_table():
            continue
        bases = [ast.unparse(b) for b in node.bases]
        fields = dict(models.get(bases[0], {})) if bases and bases[0] in models else {}
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                fields[stmt.target.id] = _py_field(stmt)
        models[node.name] = fields
    return models


@cache
def _enum_table() -> dict[str, list[tuple[str, str]]]:
    """Enum name -> (member, value) of schemas.py."""
    tree = ast.parse(snapshot_text(f"{MODULE}/schemas.py"))
    out: dict[str, list[tuple[str, str]]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any("Enum" in ast.unparse(b) for b in node.bases):
            out[node.name] = [(s.targets[0].id, ast.literal_eval(s.value)) for s in node.body
                              if isinstance(s, ast.Assign) and isinstance(s.targets[0],
                                                                          ast.Name)]
    return out


def _py_field(stmt: ast.AnnAssign) -> PyField:
    assert isinstance(stmt.target, ast.Name)
    name, annotation = stmt.target.id, ast.unparse(stmt.annotation)
    value, limits = stmt.value, {}
    if value is None:
        return PyField(name, annotation, True, None, {})
    if isinstance(value, ast.Call) and ast.unparse(value.func) == "Field":
        default: Any = ...
        if value.args:
            default = _literal(value.args[0])
        for kw in value.keywords:
            if kw.arg == "default":
                default = _literal(kw.value)
            elif kw.arg == "default_factory":
                default = {"list": [], "dict": {}}.get(ast.unparse(kw.value))
            elif kw.arg in ("ge", "le", "min_length", "max_length", "pattern"):
                limits[kw.arg] = ast.literal_eval(kw.value)
        return PyField(name, annotation, default is ..., None if default is ... else default,
                       limits)
    return PyField(name, annotation, False, _literal(value), {})


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and node.value is Ellipsis:
        return ...
    if isinstance(node, ast.Attribute):  # TaskType.INCREMENTAL: its value
        return dict(_enum_table().get(ast.unparse(node.value), [])).get(node.attr)
    return ast.literal_eval(node)


def enum_values(annotation: str) -> list[str] | None:
    """The values of the enum an annotation names (``TaskType | None`` too)."""
    for part in annotation.split("|"):
        members = _enum_table().get(part.strip())
        if members:
            return [v for _, v in members]
    return None


def check_model(value: Any, annotation: str, where: str = "answer") -> None:
    """``value`` is what the pydantic annotation ``annotation`` serialises to."""
    models = schemas()
    annotation = annotation.strip()
    if annotation.endswith("| None"):
        if value is None:
            return
        annotation = annotation[:-len("| None")].strip()
    if annotation == "Any":
        return
    if annotation.startswith("list["):
        assert isinstance(value, list), f"{where}: {value!r} is not a list ({annotation})"
        for i, item in enumerate(value):
            check_model(item, annotation[5:-1], f"{where}[{i}]")
        return
    if annotation.startswith("dict["):
        assert isinstance(value, dict), f"{where}: {value!r} is not an object ({annotation})"
        return
    simple = {"str": str, "int": int, "bool": bool}
    if annotation in simple:
        assert isinstance(value, simple[annotation]) and (
            annotation == "bool" or not isinstance(value, bool)), \
            f"{where}: {value!r} is not {annotation}"
    elif annotation == "float":
        assert isinstance(value, int | float) and not isinstance(value, bool), \
            f"{where}: {value!r} is not a number"
    elif annotation == "datetime":
        assert isinstance(value, str), f"{where}: {value!r} is not a date-time string"
        datetime.fromisoformat(value)  # what pydantic writes, and a browser reads
    elif enum_values(annotation):
        assert value in (enum_values(annotation) or []), \
            f"{where}: {value!r} not in {annotation}"
    elif annotation in models:
        assert isinstance(value, dict), f"{where}: {value!r} is not a {annotation} object"
        for name, spec in models[annotation].items():
            assert name in value, f"{where}: no {name!r} ({annotation})"
            check_model(value[name], spec.annotation, f"{where}.{name}")
    else:
        raise AssertionError(f"{where}: unknown annotation {annotation!r}")


# ------------------------------------------------------------------ the router
@dataclass(frozen=True)
class RouterRoute:
    verb: str
    path: str  # with {name} parameters, as FastAPI writes them
    response_model: str | None
    query: dict[str, dict[str, Any]]  # name -> default, ge, le
    body: str | None  # the request model's name


@cache
def router() -> list[RouterRoute]:
    tree = ast.parse(snapshot_text(f"{MODULE}/router.py"))
    out = []
    for node in tree.body:
        if not isinstance(node, ast.AsyncFunctionDef):
            continue
        for deco in node.decorator_list:
            if not (isinstance(deco, ast.Call) and ast.unparse(deco.func).startswith("router.")):
                continue
            verb = ast.unparse(deco.func).split(".")[1].upper()
            path = ast.literal_eval(deco.args[0])
            response = next((ast.unparse(k.value) for k in deco.keywords
                             if k.arg == "response_model"), None)
            query: dict[str, dict[str, Any]] = {}
            body = None
            args = node.args.args
            defaults = [None] * (len(args) - len(node.args.defaults)) + node.args.defaults
            for arg, default in zip(args, defaults, strict=True):
                text = ast.unparse(default) if default is not None else ""
                if text.startswith("Query("):
                    call = default
                    assert isinstance(call, ast.Call)
                    limits = {k.arg: ast.literal_eval(k.value) for k in call.keywords
                              if k.arg in ("ge", "le", "default")}
                    if call.args:
                        limits["default"] = ast.literal_eval(call.args[0])
                    query[arg.arg] = limits
                elif arg.annotation is not None and ast.unparse(arg.annotation) in \
                        schemas() and arg.arg == "request":
                    body = ast.unparse(arg.annotation)
                elif arg.arg not in ("current_user",) and f"{{{arg.arg}}}" not in path \
                        and default is not None and text == "None":
                    query[arg.arg] = {"default": None}
            out.append(RouterRoute(verb, path, response, query, body))
    return out


def route_of(verb: str, template: str) -> RouterRoute | None:
    """The router's route for a frontend call (``{param}`` matches any parameter)."""
    pattern = re.sub(r"\\\{param\\\}", r"\\{\\w+\\}", re.escape(template))
    for route in router():
        if route.verb == verb and re.fullmatch(pattern, PREFIX + route.path):
            return route
    return None


def snapshot_file(member: str) -> Path:
    """A file of the snapshot (for messages)."""
    return Path(SNAPSHOT) / member
