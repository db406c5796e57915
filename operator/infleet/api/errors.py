"""Plain-language field errors from pydantic validation errors.

pydantic's messages ("Input should be greater than 0") are written for programmers; the
people reading infleet's errors wrote YAML. This module turns each error into a camelCase field
path as written in the manifest (``spec.variants[1].profile``) and a short phrase saying what is
wrong (``must be > 0 and <= 1``), so ``infleet plan`` and the operator report the same text.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from infleet.api.base import PATTERN_PHRASES
from infleet.api.schema import Schema, schema_at

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class FieldProblem:
    """One problem at one field of an object."""

    path: str
    """Dotted camelCase path as written in YAML, with list indices: ``spec.variants[1].name``."""
    message: str
    """What is wrong, in plain words."""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def field_path(loc: tuple[int | str, ...]) -> str:
    """``('spec', 'variants', 1, 'name')`` -> ``spec.variants[1].name``; keys that are not
    identifiers (label keys such as ``node.kubernetes.io/instance-type``) are quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def describe_value(value: Any) -> str:
    """A short description of a YAML value for "got ..." in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    return _number(value)


def range_phrase(schema: Schema | None) -> str | None:
    """``must be > 0 and <= 1`` from a schema's bounds, or ``None`` without bounds."""
    if schema is None:
        return None
    parts: list[str] = []
    if "minimum" in schema:
        op = ">" if schema.get("exclusiveMinimum") else ">="
        parts.append(f"{op} {_number(schema['minimum'])}")
    if "maximum" in schema:
        op = "<" if schema.get("exclusiveMaximum") else "<="
        parts.append(f"{op} {_number(schema['maximum'])}")
    return "must be " + " and ".join(parts) if parts else None


def _known_fields(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    parent = schema_at(model, loc[:-1])
    return list(parent.get("properties", {})) if parent else []


def _unknown_field(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    name = str(loc[-1])
    known = _known_fields(model, loc)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"unknown field (did you mean {close[0]!r}?)"
    if known:
        return f"unknown field; known fields here: {', '.join(known)}"
    return "unknown field"


def _type_phrase(expected: str, value: Any) -> str:
    hint = ""
    if expected == "a string" and isinstance(value, bool | int | float):
        hint = " (quote it in YAML to make it a string)"
    return f"must be {expected}, got {describe_value(value)}{hint}"


_TYPE_NAMES: dict[str, str] = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "dict": "a mapping",
    "model": "a mapping",
    "model_attributes": "a mapping",
    "datetime": "an RFC 3339 date-time",
}


def _expected_type(error_type: str) -> str | None:
    if error_type == "int_from_float":
        return "an integer"
    base = error_type.rsplit("_", 1)[0] if error_type.endswith(("_type", "_parsing")) else None
    if base is None and error_type.startswith("datetime_"):
        base = "datetime"
    return _TYPE_NAMES.get(base) if base else None


def _message(model: type[BaseModel], error: ErrorDetails) -> str:
    kind = error["type"]
    loc = tuple(error["loc"])
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return _unknown_field(model, loc)
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        phrase = range_phrase(schema_at(model, loc))
        return f"{phrase}, got {describe_value(value)}" if phrase else error["msg"]
    if kind in ("enum", "literal_error"):
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"must be one of {', '.join(choices)}; got {describe_value(value)}"
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        noun = "entry" if ctx.get("field_type") == "Dictionary" else "item"
        return f"must have at least {n} {noun}{'' if n == 1 else 's'}"
    if kind == "too_long":
        n = ctx.get("max_length")
        return f"must have at most {n} items, got {ctx.get('actual_length')}"
    if kind == "string_too_short":
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"must be at least {n} characters long"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters long, got {len(str(value))}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        phrase = PATTERN_PHRASES.get(pattern, f"must match the pattern {pattern}")
        return f"{phrase}; got {describe_value(value)}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    expected = _expected_type(kind)
    if expected is not None:
        return _type_phrase(expected, value)
    msg = error["msg"]
    return msg[:1].lower() + msg[1:]


def describe_validation_error(exc: ValidationError, model: type[BaseModel]) -> list[FieldProblem]:
    """Every problem in ``exc`` (raised while validating ``model``), with plain messages."""
    return [
        FieldProblem(path=field_path(tuple(e["loc"])), message=_message(model, e))
        for e in exc.errors(include_url=False)
    ]
