"""SQL expressions that read values out of JSON columns, on SQLite and on PostgreSQL alike.

SQLite has ``json_extract``/``json_type``/``->``; PostgreSQL has ``jsonb_extract_path``/
``jsonb_typeof``. Each function here returns the same meaning on both: a number (NULL unless the
value is a JSON number), a string (NULL unless a JSON string), or the value's JSON text (for grouping
and for equality of lists). Keys are bound parameters, never spliced into the SQL.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
    String,
    Text,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB

from gni_service.field_paths import FieldPath
from gni_service.models import Run

_COLUMNS = {"spec": Run.spec, "coords": Run.coords, "summary": Run.summary}


def _sqlite_path_text(keys: tuple[str, ...]) -> str:
    return "$" + "".join(f'."{k}"' for k in keys)


def _sqlite_path(keys: tuple[str, ...]) -> ColumnElement[str]:
    return literal(_sqlite_path_text(keys), String)


def _pg_value(path: FieldPath) -> ColumnElement[Any]:
    return func.jsonb_extract_path(_COLUMNS[path.column], *(literal(k, Text) for k in path.keys))


def _pg_text(path: FieldPath) -> ColumnElement[str]:
    return func.jsonb_extract_path_text(_COLUMNS[path.column], *(literal(k, Text) for k in path.keys))


def json_number(path: FieldPath, dialect: str) -> ColumnElement[float]:
    """The value as a float where it is a JSON number, else NULL."""
    column = _COLUMNS[path.column]
    if dialect == "postgresql":
        is_number = func.jsonb_typeof(_pg_value(path)) == "number"
        return case((is_number, cast(_pg_text(path), Float)), else_=null())
    where = _sqlite_path(path.keys)
    is_number = func.json_type(column, where).in_(("integer", "real"))
    return case((is_number, type_coerce(func.json_extract(column, where), Float)), else_=null())


def json_string(path: FieldPath, dialect: str) -> ColumnElement[str]:
    """The value where it is a JSON string, else NULL."""
    column = _COLUMNS[path.column]
    if dialect == "postgresql":
        return case((func.jsonb_typeof(_pg_value(path)) == "string", _pg_text(path)), else_=null())
    where = _sqlite_path(path.keys)
    return case((func.json_type(column, where) == "text", func.json_extract(column, where)), else_=null())


def json_boolean(path: FieldPath, dialect: str) -> ColumnElement[bool]:
    """The value where it is a JSON boolean, else NULL."""
    column = _COLUMNS[path.column]
    if dialect == "postgresql":
        value = _pg_value(path)
        return case((func.jsonb_typeof(value) == "boolean", cast(_pg_text(path), Boolean)), else_=null())
    where = _sqlite_path(path.keys)
    kind = func.json_type(column, where)
    return case((kind == "true", literal(True)), (kind == "false", literal(False)), else_=null())


def json_text(path: FieldPath, dialect: str) -> ColumnElement[str]:
    """The value's JSON text (``0.1``, ``"gni"``, ``[1, 2]``): a key to group by, decoded with json.loads."""
    if dialect == "postgresql":
        return cast(_pg_value(path), Text)
    return type_coerce(_COLUMNS[path.column].op("->")(_sqlite_path(path.keys)), Text)


def json_equals(path: FieldPath, value: Any, dialect: str) -> ColumnElement[bool]:
    """``value`` equals the stored value, compared as JSON (numbers as numbers, lists element-wise)."""
    if isinstance(value, bool):
        return json_boolean(path, dialect) == value
    if isinstance(value, int | float):
        return json_number(path, dialect) == float(value)
    if isinstance(value, str):
        return json_string(path, dialect) == value
    if value is None:
        if dialect == "postgresql":
            return func.jsonb_typeof(_pg_value(path)) == "null"
        return func.json_type(_COLUMNS[path.column], _sqlite_path(path.keys)) == "null"
    document = json.dumps(value, separators=(",", ":"))
    if dialect == "postgresql":
        return _pg_value(path) == cast(literal(document, Text), JSONB)  # jsonb compares 2 and 2.0 equal
    return _sqlite_equals(_COLUMNS[path.column], _sqlite_path_text(path.keys), value)


def _sqlite_equals(column: Any, where: str, value: Any) -> ColumnElement[bool]:
    """JSON equality on SQLite with numbers compared as numbers, lists element by element.

    Comparing ``json()`` texts would not do: ``[2,5]`` and a stored ``[2.0,5.0]`` differ as text.
    """
    at = literal(where, String)
    kind = func.json_type(column, at)
    if isinstance(value, list):
        elements = [_sqlite_equals(column, f"{where}[{i}]", v) for i, v in enumerate(value)]
        return and_(kind == "array", func.json_array_length(column, at) == len(value), *elements)
    if isinstance(value, bool):
        return kind == ("true" if value else "false")
    if isinstance(value, int | float):
        number = type_coerce(func.json_extract(column, at), Float)
        return and_(kind.in_(("integer", "real")), number == float(value))
    if isinstance(value, str):
        return and_(kind == "text", func.json_extract(column, at) == value)
    if value is None:
        return kind == "null"
    document = json.dumps(value, separators=(",", ":"))  # an object: as JSON text
    return func.json(func.json_extract(column, at)) == func.json(literal(document, Text))
