"""From pydantic JSON Schema to a Kubernetes structural OpenAPI v3 schema.

Kubernetes accepts only a subset of JSON Schema in a CRD (a "structural schema"): every node has a
``type``, no ``$ref``, no ``anyOf`` with ``null`` (``nullable: true`` instead), and
``exclusiveMinimum``/``exclusiveMaximum`` are booleans next to ``minimum``/``maximum``.
pydantic emits JSON Schema 2020-12, so this module rewrites it. It is pure: dictionaries in,
dictionaries out.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from pydantic import BaseModel

Schema = dict[str, Any]

_DROPPED_KEYS = frozenset({"title", "$defs", "additionalProperties"})

# Keys in reading order for people who open the generated YAML; anything else follows, sorted.
_KEY_ORDER = (
    "type",
    "description",
    "nullable",
    "default",
    "enum",
    "format",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "items",
    "properties",
    "additionalProperties",
)


def _ordered(node: Schema) -> Schema:
    rank = {key: i for i, key in enumerate(_KEY_ORDER)}
    return dict(sorted(node.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


class SchemaError(ValueError):
    """The pydantic schema uses a construct that has no structural equivalent."""


def _resolve(ref: str, defs: Schema) -> Schema:
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise SchemaError(f"unsupported $ref {ref!r}")
    return defs[ref[len(prefix) :]]  # type: ignore[no-any-return]


def _convert(node: Schema, defs: Schema) -> Schema:
    node = dict(node)
    nullable = False
    if "$ref" in node:
        # Keys next to $ref (the field's description, default) override the referenced model's.
        target = _resolve(node.pop("$ref"), defs)
        node = {**target, **node}
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o != {"type": "null"}]
        if len(options) != 1:
            raise SchemaError(f"anyOf with several non-null options has no structural form: {node}")
        nullable = True
        inner = options[0]
        if "$ref" in inner:
            inner = {
                **_resolve(inner["$ref"], defs),
                **{k: v for k, v in inner.items() if k != "$ref"},
            }
        # The field-level keys (description, default) win over the inner type's.
        node = {**inner, **node}
        if node.get("default", ...) is None:
            del node["default"]
    out: Schema = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            out["properties"] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out["items"] = _convert(value, defs)
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "description":
            out[key] = " ".join(str(value).split())
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = copy.deepcopy(value)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = _convert(extra, defs)
    if "type" not in out:
        if "enum" in out and all(isinstance(v, str) for v in out["enum"]):
            out["type"] = "string"
        else:
            raise SchemaError(f"schema node without a type: {node}")
    if nullable:
        out["nullable"] = True
    return _ordered(out)


def structural_schema(schema: Schema) -> Schema:
    """Rewrite a pydantic JSON schema (with ``$defs``) into a structural OpenAPI v3 schema:
    references inlined, ``anyOf [X, null]`` as ``X`` + ``nullable``, titles and
    ``additionalProperties: false`` dropped, exclusive bounds in OpenAPI v3.0 form."""
    return _convert(schema, schema.get("$defs", {}))


@cache
def _model_schema(model: type[BaseModel]) -> Schema:
    return structural_schema(model.model_json_schema(by_alias=True))


def model_schema(model: type[BaseModel]) -> Schema:
    """The structural schema of a pydantic model (a fresh copy; callers may mutate it)."""
    return copy.deepcopy(_model_schema(model))


def schema_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> Schema | None:
    """The structural schema of the value at ``loc`` (a pydantic error location) in ``model``,
    or ``None`` when the location is outside the schema (an unknown field, say)."""
    node: Schema | None = _model_schema(model)
    for part in loc:
        if node is None:
            return None
        if isinstance(part, int):
            node = node.get("items")
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node
