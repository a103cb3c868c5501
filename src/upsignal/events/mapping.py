"""Column mappings: how a CSV, Parquet or foreign JSON record becomes a Segment message.

A mapping file is YAML::

    fields:                       # Segment path -> source column
      userId: ORGANIZATION_ID
      context.groupId: ORGANIZATION_ID
      event: ACTIVITY_NAME
      timestamp: TIMESTAMP
      properties.converted: {column: CONVERTED, type: boolean}
    constants:                    # Segment path -> fixed value
      type: track

Empty cells (and NaN, which pandas writes for a missing number) are left out
of the message, so an optional column may be blank. A ``type`` converts the
cell: ``string``, ``number``, ``integer`` (3, 3.0 and "3", never 3.7),
``boolean`` or ``json`` (a JSON text cell, parsed). For foreign JSON records a
column may be a dotted path, ``user.id``, read from nested objects when the
record has no key of that name. ``.tsv`` files are read as tab-separated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from upsignal.errors import ImportFileError, InvalidEventError, shown_value
from upsignal.events.values import json_value, typed_value

ValueType = Literal["string", "number", "integer", "boolean", "json"]


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    column: str
    type: ValueType | None = None


class Mapping(BaseModel):
    """A source-to-Segment mapping; see the module docstring for the YAML shape."""

    model_config = ConfigDict(extra="forbid")

    fields: dict[str, str | ColumnSpec] = Field(default_factory=dict)
    constants: dict[str, Any] = Field(default_factory=dict)

    @field_validator("constants")
    @classmethod
    def _constants_as_json(cls, constants: dict[str, Any]) -> dict[str, Any]:
        # YAML parses 2024-03-01 as a date, and a Segment message needs ISO text.
        try:
            return {path: json_value(value) for path, value in constants.items()}
        except (ValueError, TypeError) as error:
            raise ValueError(f"a constant cannot be stored in an event: {error}") from None

    @model_validator(mode="after")
    def _check_nested_paths(self) -> Mapping:
        # A value set at "event" leaves no object to put "event.name" in.
        for path in [*self.fields, *self.constants]:
            parts = path.split(".")
            for end in range(1, len(parts)):
                parent = ".".join(parts[:end])
                if parent in self.fields or not isinstance(self.constants.get(parent, {}), dict):
                    raise ValueError(f"'{path}' is inside '{parent}', which is set to a value; map only one of them")
        return self

    def columns(self) -> list[str]:
        """Return the source columns the mapping reads, in mapping order, each once."""
        names = (spec if isinstance(spec, str) else spec.column for spec in self.fields.values())
        return list(dict.fromkeys(names))

    def check_columns(
        self, available: Iterable[str], source: str, has_column: Callable[[str], bool] | None = None
    ) -> None:
        """Raise ImportFileError naming each mapped column that ``source`` does not have.

        ``has_column`` overrides the plain name lookup, for sources whose nested
        values a dotted column can reach.
        """
        available = list(available)
        present = has_column or set(available).__contains__
        missing = [column for column in self.columns() if not present(column)]
        if not missing:
            return
        noun = "column" if len(missing) == 1 else "columns"
        names = ", ".join(repr(column) for column in missing)
        raise ImportFileError(
            f"mapping names {noun} {names}, which {source} does not have; its columns are:"
            f" {', '.join(available) or '(none)'}"
        )

    def apply(self, row: dict[str, Any]) -> dict[str, Any]:
        """Build a Segment-shaped record from one source row.

        Raises InvalidEventError naming the column whose value cannot be converted.
        """
        record: dict[str, Any] = {}
        for path, value in self.constants.items():
            _set_path(record, path, value)
        for path, spec in self.fields.items():
            column, value_type = (spec, None) if isinstance(spec, str) else (spec.column, spec.type)
            value = _read_column(row, column)
            if _is_empty(value):
                continue
            _set_path(record, path, _convert(value, value_type, column))
        return record


def _read_column(row: dict[str, Any], column: str) -> Any:
    """Return the row's value under ``column``, else under the dotted path it names."""
    if column in row or "." not in column:
        return row.get(column)
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _set_path(record: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        record = record.setdefault(part, {})
    record[leaf] = value


def _convert(value: Any, value_type: ValueType | None, column: str) -> Any:
    try:
        if value_type is None:
            return json_value(value)
        return typed_value(value, value_type)
    except (ValueError, TypeError, ArithmeticError) as error:
        value_text = shown_value(value)
        if value_type is None:
            message = (
                f"column '{column}': {value_text} cannot be stored in an event ({error});"
                " cast the column or give it a type"
            )
        else:
            message = f"column '{column}': {value_text} is not a valid {value_type}"
        raise InvalidEventError(message, field=column, value=value) from None


def load_mapping(path: str | Path) -> Mapping:
    """Read and validate a mapping YAML file."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImportFileError(f"mapping file not found: {path}") from None
    except yaml.YAMLError as error:
        raise ImportFileError(f"mapping file {path} is not valid YAML: {error}") from None
    try:
        return Mapping.model_validate(data or {})
    except pydantic.ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        problem = first["msg"].removeprefix("Value error, ")
        raise ImportFileError(f"mapping file {path}: " + (f"'{where}': {problem}" if where else problem)) from None
