"""Request and response models: one declaration gives both the validation the handlers
run and the JSON Schema the OpenAPI document publishes, so the two cannot drift.

Validation here is structural (types, required fields, ranges, sizes); meaning (real
calendar dates, known plugins) is checked by :mod:`app.submission` and raises the same
:class:`InvalidInput`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from app.errors import InvalidInput

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    types: tuple[str, ...]  # JSON types accepted (several: e.g. priority "string" | "integer")
    required: bool = False
    description: str = ""
    items: str | None = None  # JSON type of array items
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_items: int | None = None
    max_length: int | None = None
    nullable: bool = False
    min_length: int | None = None
    min_items: int | None = None
    pattern: str | None = None  # a regular expression a string must match (re.search)

    def check(self, value: Any) -> None:
        if value is None and self.nullable:
            return
        if not any(_is_type(value, t) for t in self.types):
            raise InvalidInput(f"{self.name} must be {' or '.join(self.types)}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                raise InvalidInput(f"{self.name} must be at least {self.minimum:g}")
            if self.maximum is not None and value > self.maximum:
                raise InvalidInput(f"{self.name} must be at most {self.maximum:g}")
        if isinstance(value, str):
            self._check_text(value)
        if isinstance(value, list):
            self._check_list(value)

    def _check_text(self, value: str) -> None:
        if self.enum is not None and value not in self.enum:
            raise InvalidInput(f"{self.name} must be one of {', '.join(map(str, self.enum))}")
        if self.max_length is not None and len(value) > self.max_length:
            raise InvalidInput(f"{self.name} is longer than {self.max_length} characters")
        if self.min_length is not None and len(value) < self.min_length:
            raise InvalidInput(f"{self.name} is shorter than {self.min_length} characters")
        if self.pattern is not None and not re.search(self.pattern, value):
            raise InvalidInput(f"{self.name} must match {self.pattern}")

    def _check_list(self, value: list[Any]) -> None:
        if self.max_items is not None and len(value) > self.max_items:
            raise InvalidInput(f"{self.name} has more than {self.max_items} items")
        if self.min_items is not None and len(value) < self.min_items:
            raise InvalidInput(f"{self.name} has fewer than {self.min_items} items")
        if self.items and not all(_is_type(v, self.items) for v in value):
            raise InvalidInput(f"{self.name} must be a list of {self.items}s")

    def _typed(self, t: str) -> dict[str, Any]:
        """The JSON Schema of one of the accepted types, with its limits."""
        s: dict[str, Any] = {"type": t}
        if t == "array" and self.items:
            s["items"] = {"type": self.items}
            if self.max_items is not None:
                s["maxItems"] = self.max_items
            if self.min_items is not None:
                s["minItems"] = self.min_items
        if t in ("integer", "number"):
            if self.minimum is not None:
                s["minimum"] = self.minimum
            if self.maximum is not None:
                s["maximum"] = self.maximum
        if t == "string":
            if self.enum is not None:
                s["enum"] = [e for e in self.enum if isinstance(e, str)]
            for key, value in (("maxLength", self.max_length), ("minLength", self.min_length),
                               ("pattern", self.pattern)):
                if value is not None:
                    s[key] = value
        return s

    def json_schema(self) -> dict[str, Any]:
        schemas = [self._typed(t) for t in self.types]
        out: dict[str, Any] = schemas[0] if len(schemas) == 1 else {"oneOf": schemas}
        if self.nullable:  # OpenAPI 3.0 has no "null" type: nullable on each typed schema
            for s in out.get("oneOf", [out]):
                s["nullable"] = True
        if self.description:
            out["description"] = self.description
        return out


def _is_type(value: Any, t: str) -> bool:
    if t in ("integer", "number") and isinstance(value, bool):
        return False
    if t == "integer" and isinstance(value, float):  # JSON 1.0 is not an integer here
        return False
    return isinstance(value, _PY_TYPES[t])


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    fields: tuple[Field, ...]
    description: str = ""
    extra: bool = False  # accept unknown properties
    example: dict[str, Any] = field(default_factory=dict)

    def validate(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise InvalidInput(f"the request body must be a JSON object ({self.name})")
        known = {f.name for f in self.fields}
        unknown = sorted(set(body) - known)
        if unknown and not self.extra:
            raise InvalidInput(f"unknown field(s): {', '.join(unknown)}; "
                               f"allowed: {', '.join(sorted(known))}")
        for f in self.fields:
            if f.name not in body:
                if f.required:
                    raise InvalidInput(f"{f.name} is required")
                continue
            f.check(body[f.name])
        return dict(body)

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {f.name: f.json_schema() for f in self.fields},
            "additionalProperties": self.extra,
        }
        required = [f.name for f in self.fields if f.required]
        if required:
            schema["required"] = required
        if self.description:
            schema["description"] = self.description
        if self.example:
            schema["example"] = self.example
        return schema
