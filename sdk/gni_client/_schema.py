"""A small JSON-schema validator for the subset the run spec's schema uses, speaking pydantic's language.

The service validates specs with pydantic; this module validates the same JSON schema (generated
from the service's models, shipped as ``_spec_schema.json``) without pydantic, and words each error
as pydantic does, so a bad field fails here with the same path and message as on the server.

Covered: ``type`` (integer, number, boolean, string, array, object, null) with pydantic's lax
coercions (``"3"`` is an integer, ``1`` a boolean), ``enum``/``const``, ``minimum``/``maximum`` and
their exclusive forms, ``minItems``/``maxItems``/``items``/``prefixItems``, ``properties``,
``required``, ``additionalProperties``, ``default``, ``$ref``, ``anyOf`` (with a ``null`` member
meaning optional) and ``oneOf`` over objects told apart by a constant field (the discriminator; a
value without it takes the first member, as the server's ``kind``/``name`` defaults do).

>>> schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}},
...           "additionalProperties": False}
>>> for error in SchemaValidator(schema).validate({"n": "0", "m": 1})[1]:
...     print(error)
{'loc': 'n', 'msg': 'Input should be greater than or equal to 1'}
{'loc': 'm', 'msg': 'Extra inputs are not permitted'}
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Json = Any
Loc = tuple[str | int, ...]
FieldRule = Callable[[Any], list[tuple[str, str]]]
"""A check beyond the schema: gets the coerced value, returns ``(relative path, message)`` pairs."""

BOOLEAN_FOR_NUMBER = "true/false is not a number"  # gni_engine.spec.Frozen's message, word for word
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_INT_TEXT = re.compile(r"^\s*[+-]?\d+(\.0*)?\s*$")


class _Invalid(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


@dataclass
class _Errors:
    items: list[tuple[Loc, str]] = field(default_factory=list)

    def add(self, loc: Loc, message: str) -> None:
        self.items.append((loc, message))


def format_loc(loc: Loc) -> str:
    """``("model", "hidden", 0)`` → ``model.hidden[0]``, as the server writes field paths."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int) and parts:
            parts[-1] = f"{parts[-1]}[{part}]"
        else:
            parts.append(str(part))
    return ".".join(parts) or "(root)"


def _number_text(bound: float) -> str:
    return str(int(bound)) if isinstance(bound, float) and bound.is_integer() else str(bound)


def _literal_text(values: list[Json]) -> str:
    quoted = [repr(v) if isinstance(v, str) else str(v) for v in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def coerce_integer(value: Json) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid("Input should be a finite number")
        if not value.is_integer():
            raise _Invalid("Input should be a valid integer, got a number with a fractional part")
        return int(value)
    if isinstance(value, str):
        if not _INT_TEXT.match(value):
            raise _Invalid("Input should be a valid integer, unable to parse string as an integer")
        return int(value.strip().split(".")[0])
    raise _Invalid("Input should be a valid integer")


def coerce_number(value: Json) -> float:
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise _Invalid("Input should be a valid number, unable to parse string as a number") from None
    raise _Invalid("Input should be a valid number")


def coerce_boolean(value: Json) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, str | int):
        raise _Invalid("Input should be a valid boolean, unable to interpret input")
    raise _Invalid("Input should be a valid boolean")


def coerce_string(value: Json) -> str:
    if isinstance(value, str):
        return value
    raise _Invalid("Input should be a valid string")


_SCALARS: dict[str, Callable[[Json], Any]] = {
    "integer": coerce_integer,
    "number": coerce_number,
    "boolean": coerce_boolean,
    "string": coerce_string,
}


def _bounds_error(schema: Mapping[str, Json], value: float) -> str | None:
    if "minimum" in schema and not value >= schema["minimum"]:
        return f"Input should be greater than or equal to {_number_text(schema['minimum'])}"
    if "exclusiveMinimum" in schema and not value > schema["exclusiveMinimum"]:
        return f"Input should be greater than {_number_text(schema['exclusiveMinimum'])}"
    if "maximum" in schema and not value <= schema["maximum"]:
        return f"Input should be less than or equal to {_number_text(schema['maximum'])}"
    if "exclusiveMaximum" in schema and not value < schema["exclusiveMaximum"]:
        return f"Input should be less than {_number_text(schema['exclusiveMaximum'])}"
    return None


def _type_name(schema: Mapping[str, Json]) -> str:
    """Pydantic's name for a union member, which it puts in the error path (``tuple[float, ...]``)."""
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        return "literal[" + ",".join(repr(v) for v in values) + "]"
    kind = schema.get("type")
    if kind == "array":
        return f"tuple[{_type_name(schema.get('items', {}))}, ...]"
    return {"integer": "int", "number": "float", "boolean": "bool", "string": "str", "null": "none"}.get(
        str(kind), "any"
    )


class SchemaValidator:
    """Validate values against one root schema with its ``$defs``, plus named extra rules.

    ``field_rules`` maps ``"Model.field"`` and ``model_rules`` maps ``"Model"`` (a ``$defs`` name or the
    root's title) to a :data:`FieldRule`, run like pydantic's field and model validators: a field's
    rule once the field is valid, a model's once all its fields are.
    """

    def __init__(
        self,
        schema: Mapping[str, Json],
        *,
        field_rules: Mapping[str, FieldRule] | None = None,
        model_rules: Mapping[str, FieldRule] | None = None,
    ) -> None:
        self.schema = schema
        self.defs: Mapping[str, Mapping[str, Json]] = schema.get("$defs", {})
        self.field_rules = dict(field_rules or {})
        self.model_rules = dict(model_rules or {})

    def validate(self, value: Json, *, prefix: Loc = ()) -> tuple[Json, list[dict[str, str]]]:
        """The coerced value (defaults filled in) and ``[{"loc", "msg"}]``, empty when valid."""
        errors = _Errors()
        coerced = self._value(
            self.schema, value, prefix, errors, str(self.schema.get("title", "")), in_model=False
        )
        return coerced, [{"loc": format_loc(loc), "msg": msg} for loc, msg in errors.items]

    # ------------------------------------------------------------------------------ dispatch
    def _resolve(self, schema: Mapping[str, Json]) -> tuple[Mapping[str, Json], str | None]:
        ref = schema.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            return self.defs[name], name
        return schema, None

    def _value(
        self, schema: Mapping[str, Json], value: Json, loc: Loc, errors: _Errors, name: str, *, in_model: bool
    ) -> Json:
        schema, ref_name = self._resolve(schema)
        if ref_name is not None:
            name, in_model = ref_name, True
        if "oneOf" in schema:
            return self._one_of(schema["oneOf"], value, loc, errors)
        if "anyOf" in schema:
            return self._any_of(schema["anyOf"], value, loc, errors, in_model=in_model)
        kind = schema.get("type")
        if kind == "object":
            return self._object(schema, value, loc, errors, name, in_model=in_model)
        if kind == "array":
            return self._array(schema, value, loc, errors, in_model=in_model)
        try:
            return self._scalar(schema, value)
        except _Invalid as problem:
            errors.add(loc, problem.message)
            return value

    def _scalar(self, schema: Mapping[str, Json], value: Json) -> Json:
        allowed = schema.get("enum", [schema["const"]] if "const" in schema else None)
        if allowed is not None:
            if isinstance(value, bool) or value not in allowed:
                raise _Invalid(f"Input should be {_literal_text(allowed)}")
            return value
        kind = schema.get("type")
        if kind == "null":
            if value is not None:
                raise _Invalid("Input should be None")
            return None
        coerce = _SCALARS.get(str(kind))
        if coerce is None:
            return value
        result = coerce(value)
        if isinstance(result, int | float) and not isinstance(result, bool):
            problem = _bounds_error(schema, result)
            if problem:
                raise _Invalid(problem)
        return result

    # ----------------------------------------------------------------------------- unions
    def _any_of(
        self, members: list[Mapping[str, Json]], value: Json, loc: Loc, errors: _Errors, *, in_model: bool
    ) -> Json:
        non_null = [m for m in members if m.get("type") != "null"]
        if len(non_null) < len(members):
            if value is None:
                return None
            if len(non_null) == 1:  # Optional[X]: pydantic reports X's errors at the field itself
                return self._value(non_null[0], value, loc, errors, "", in_model=in_model)
        collected = _Errors()
        for member in non_null:
            attempt = _Errors()
            result = self._value(member, value, (*loc, _type_name(member)), attempt, "", in_model=in_model)
            if not attempt.items:
                return result
            collected.items.extend(attempt.items)
        errors.items.extend(collected.items)
        return value

    def _one_of(self, members: list[Mapping[str, Json]], value: Json, loc: Loc, errors: _Errors) -> Json:
        resolved = [self._resolve(m) for m in members]
        tag = _discriminator(resolved)
        chosen = resolved[0]
        if isinstance(value, Mapping) and tag is not None and tag in value:
            found = value[tag]
            matches = [r for r in resolved if found in _tag_values(r[0], tag)]
            if not matches:
                expected = ", ".join(repr(v) for r in resolved for v in _tag_values(r[0], tag))
                errors.add(loc, f"Input tag '{found}' does not match any of the expected tags: {expected}")
                return value
            chosen = matches[0]
        schema, name = chosen
        return self._object(schema, value, loc, errors, name or "", in_model=True)

    # ---------------------------------------------------------------------------- objects
    def _object(
        self, schema: Mapping[str, Json], value: Json, loc: Loc, errors: _Errors, name: str, *, in_model: bool
    ) -> Json:
        if not isinstance(value, Mapping):
            title = schema.get("title")
            errors.add(
                loc,
                f"Input should be a valid dictionary or instance of {title}"
                if title
                else "Input should be a valid dictionary",
            )
            return value
        before = len(errors.items)
        properties: Mapping[str, Mapping[str, Json]] = schema.get("properties", {})
        required = set(schema.get("required", []))
        out: dict[str, Json] = {}
        for key, sub in properties.items():
            if key in value and self._boolean_for_number(sub, value[key]):
                errors.add((*loc, key), BOOLEAN_FOR_NUMBER)  # the server's check, before the field's own
                out[key] = value[key]
            elif key in value:
                field_before = len(errors.items)
                out[key] = self._value(sub, value[key], (*loc, key), errors, "", in_model=in_model)
                rule = self.field_rules.get(f"{name}.{key}")
                if rule is not None and len(errors.items) == field_before:
                    for where, message in rule(out[key]):
                        errors.add((*loc, key, *filter(None, where.split("."))), message)
            elif key in required:
                errors.add((*loc, key), "Field required")
            else:
                out[key] = self._default(sub)
        extra = schema.get("additionalProperties", True)
        for key in value:
            if key in properties:
                continue
            if extra is False:
                errors.add((*loc, key), "Extra inputs are not permitted")
            elif isinstance(extra, Mapping):
                out[key] = self._value(extra, value[key], (*loc, key), errors, "", in_model=in_model)
            else:
                out[key] = value[key]
        rule = self.model_rules.get(name)
        if rule is not None and len(errors.items) == before:
            for where, message in rule(out):
                errors.add((*loc, *filter(None, where.split("."))), message)
        return out

    def _boolean_for_number(self, schema: Mapping[str, Json], value: Json) -> bool:
        """true/false (or a list holding one) for a field whose type has numbers and no boolean."""
        items = value if isinstance(value, list | tuple) else (value,)
        if not any(isinstance(item, bool) for item in items):
            return False
        kinds = self._scalar_kinds(schema)
        return bool(kinds & {"integer", "number"}) and "boolean" not in kinds

    def _scalar_kinds(self, schema: Mapping[str, Json]) -> set[str]:
        """The scalar types a field's schema names, through unions and arrays, not nested models."""
        resolved, _ = self._resolve(schema)
        if resolved.get("type") == "object":
            return set()
        kinds = {str(resolved["type"])} if "type" in resolved else set()
        members = [*resolved.get("anyOf", []), *resolved.get("oneOf", []), *resolved.get("prefixItems", [])]
        if isinstance(resolved.get("items"), Mapping):
            members.append(resolved["items"])
        for member in members:
            kinds |= self._scalar_kinds(member)
        return kinds

    def _default(self, schema: Mapping[str, Json]) -> Json:
        if "default" in schema:
            return schema["default"]
        resolved, _ = self._resolve(schema)
        if "oneOf" in resolved:
            resolved, _ = self._resolve(resolved["oneOf"][0])
        if resolved.get("type") == "object":  # a nested model built by its default factory
            return {key: self._default(sub) for key, sub in resolved.get("properties", {}).items()}
        return None

    # ----------------------------------------------------------------------------- arrays
    def _array(
        self, schema: Mapping[str, Json], value: Json, loc: Loc, errors: _Errors, *, in_model: bool
    ) -> Json:
        word = "Tuple" if in_model else "List"
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, list | tuple | set | frozenset):
            errors.add(loc, f"Input should be a valid {word.lower()}")
            return value
        items = list(value)
        prefix: list[Mapping[str, Json]] = schema.get("prefixItems", [])
        low, high = schema.get("minItems"), schema.get("maxItems")
        if high is not None and len(items) > high:
            errors.add(
                loc,
                f"{word} should have at most {high} item{'s' if high != 1 else ''} after validation, "
                f"not {len(items)}",
            )
            return value
        out = []
        for i, item in enumerate(items):
            sub = prefix[i] if i < len(prefix) else schema.get("items", {})
            out.append(self._value(sub, item, (*loc, i), errors, "", in_model=in_model))
        for i in range(len(items), len(prefix)):
            errors.add((*loc, i), "Field required")
        if low is not None and len(items) < low and not prefix:
            errors.add(
                loc,
                f"{word} should have at least {low} item{'s' if low != 1 else ''} after validation, "
                f"not {len(items)}",
            )
        return out


def _tag_values(schema: Mapping[str, Json], tag: str) -> list[Json]:
    prop = schema.get("properties", {}).get(tag, {})
    if "const" in prop:
        return [prop["const"]]
    return list(prop.get("enum", []))


def _discriminator(members: list[tuple[Mapping[str, Json], str | None]]) -> str | None:
    """The property whose constants tell the members apart (``kind``, ``name``), if there is one."""
    if not members:
        return None
    candidates = set(members[0][0].get("properties", {}))
    for schema, _ in members:
        candidates &= {key for key in schema.get("properties", {}) if _tag_values(schema, key)}
    for key in sorted(candidates):
        values = [v for schema, _ in members for v in _tag_values(schema, key)]
        if len(values) == len({json.dumps(v) for v in values}):
            return str(key)
    return None
